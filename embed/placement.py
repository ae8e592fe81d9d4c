"""Where the backbone runs, and the one builder of backbone + devices + engine.

A `Placement` says where (this machine's devices, or a Ray cluster); `build` loads the backbone a
BackboneSpec names (one copy per device) and the engine (`embed.engines`) that runs it. The
command line, the benchmarks and the tests all wire an embedding pass through `build`.
"""

from dataclasses import dataclass

from cache.errors import UsageError, UserError
from cache.units import counted

ENGINES = ("local", "ray")


@dataclass(frozen=True)
class Placement:
    """Where the backbone runs. devices: "all" or how many of this machine's devices (GPUs, else its
    CPU) for the local engine; engine: "local" or "ray"; ray_address: the cluster to join (None:
    start a local one); ray_actors: backbone actors (None: one per GPU, else one per 2 CPUs);
    threads: decode threads of the local engine (None: the cores)."""
    devices: str = "1"
    engine: str = "local"
    ray_address: str = None
    ray_actors: int = None
    threads: int = None

    def __post_init__(self):
        if self.engine not in ENGINES:
            raise UsageError(f"--engine {self.engine!r}: use {' or '.join(ENGINES)}")
        if self.engine != "ray" and (self.ray_address or self.ray_actors):
            raise UsageError("--ray-address and --ray-actors apply to --engine ray only")
        if self.engine == "ray" and str(self.devices) != "1":
            raise UsageError("--devices applies to --engine local; Ray places one actor per GPU itself")


def resolve_devices(devices):
    """--devices "all" or "N" -> TensorFlow device names: GPUs if there are any, else the CPU (its
    logical devices, where a process configured several)."""
    import tensorflow as tf
    gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
    available = gpus or [d.name for d in tf.config.list_logical_devices("CPU")]  # one CPU, unless configured
    if devices == "all":
        return available
    if not devices.isdigit() or int(devices) < 1:
        raise UserError(f"--devices {devices!r}: expected all or a number of devices")
    if int(devices) > len(available):
        what = counted(len(gpus), "GPU") if gpus else "no GPU (one device: the CPU)"
        raise UserError(f"--devices {devices}: this machine has {what}")
    return available[:int(devices)]


def build(backbone_spec, placement=Placement()):
    """(backbone, engine): the backbone a BackboneSpec names (on the first device) and the engine
    that runs it as the Placement says (locally: one copy per device). TensorFlow is imported here,
    not with this module, so a Placement is made before the command line starts TensorFlow."""
    from embed.backbones import load_backbone
    from embed.engines import LocalEngine
    if placement.engine == "ray":
        from embed.ray_engine import RayEngine  # imports Ray's client lazily, on connect
        backbone = load_backbone(backbone_spec)
        return backbone, RayEngine(backbone, placement.ray_address, placement.ray_actors, backbone_spec.trust_model)
    backbones = [load_backbone(backbone_spec, device) for device in resolve_devices(str(placement.devices))]
    return backbones[0], LocalEngine(backbones, threads=placement.threads)


