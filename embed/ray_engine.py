"""`embed --engine ray`: the embedding pass as a Ray Data job.

The rows still to embed are cut into the same fixed batches the local engine uses, one Ray Data row
per batch. A pool of actors (`map_batches` with a callable class: one model load per actor,
`num_gpus=1` each when the cluster has GPUs) decodes each batch with the local pipeline's own
TensorFlow ops and runs the backbone on it whole, so every feature is bitwise what the local engine
computes. Results stream back in order to the driver, whose single writer appends them to the cache
exactly as in a local run; resume, failed images and the cache layout are therefore unchanged.
Every node needs celeba-heads installed and the images and model at the same paths.
"""

import logging
import os

import numpy as np

from cache.errors import UserError

INSTALL_HINT = "--engine ray needs Ray Data: pip install 'celeba-heads[ray]' (or pip install 'ray[data]')"
OUTPUT = "out:"  # the column prefix of a stored dataset's values (features, views, layers) in a Ray row


class EmbedBatches:
    """Ray actor: load the recorded backbone once, then embed one batch of image paths per call."""

    def __init__(self, spec, preprocessing, trust_model, views=(), max_pixels=None):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        from embed.backbones import load_recorded_backbone
        self.backbone = load_recorded_backbone(spec, preprocessing, trust_model=trust_model)
        self.views, self.max_pixels = tuple(views), max_pixels

    def __call__(self, batch):
        """batch: {"first": [1] int, "paths": [1] list of paths} -> one row per image."""
        from embed.engines import batch_result, embed_outputs
        from embed.faces import image_batches

        paths = [str(p) for p in batch["paths"][0]]
        first = int(batch["first"][0])
        indices = np.arange(first, first + len(paths))
        (element,) = image_batches(paths, indices, self.backbone.preprocessing, len(paths),
                                   max_pixels=self.max_pixels)
        index, outputs, errors = batch_result(element, embed_outputs(self.backbone, element["image"], self.views))
        return {"index": index, "error": np.array(errors, dtype=object),
                **{f"{OUTPUT}{name}": values for name, values in outputs.items()}}


def connect(address):
    """Import Ray and join the cluster at `address` (None: start a local one); returns the module."""
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")  # no C++ core-worker notes on stderr
    os.environ.setdefault("RAY_DATA_LOG_LEVEL", "ERROR")  # no per-execution INFO lines on stderr
    try:
        import ray
    except ImportError:
        raise UserError(INSTALL_HINT) from None
    for name in ("ray", "ray.data"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if not ray.is_initialized():
        env = {"env_vars": {"TF_CPP_MIN_LOG_LEVEL": "3"}}
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False,
                     logging_level=logging.ERROR, runtime_env=env)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise UserError(f"--ray-address {address}: cannot connect ({str(exc).splitlines()[0][:200]})") from None
    return ray


class RayEngine:
    """The engine interface (`embed.engines`) on a Ray cluster: `address` (None: a local instance),
    `actors` backbone actors (default: one per GPU, else one per 2 CPUs), each loading the model as
    `backbone.spec` records it (trust_model: as `BackboneSpec.trust_model`)."""

    def __init__(self, backbone, address=None, actors=None, trust_model=False):
        self.backbone, self.address, self.actors, self.trust_model = backbone, address, actors, trust_model

    def connect(self):
        connect(self.address)

    def results(self, paths, indices, batch_size, views=(), max_pixels=None):
        return ray_results(paths, indices, self.backbone, batch_size, actors=self.actors,
                           trust_model=self.trust_model, views=views, max_pixels=max_pixels)


def ray_results(paths, indices, backbone, batch_size, *, actors=None, trust_model=False, views=(), max_pixels=None):
    """Like `embed.engines.LocalEngine.results`, on the Ray cluster `connect` joined: yields (indices,
    outputs, errors) in order, in the same batches (indices[0] + k*batch_size ...)."""
    import ray
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    context.enable_progress_bars = False
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    cpus = int(resources.get("CPU", 1))
    actors = actors or gpus or max(1, cpus // 2)
    # Ray limits an actor's OpenMP threads (oneDNN's) to its num_cpus; on CPUs give each its share.
    cpus_per_actor = 1 if gpus else max(1, cpus // actors)
    first = int(indices[0])
    items = [{"first": first + i, "paths": paths[i:i + batch_size]} for i in range(0, len(paths), batch_size)]
    embedded = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
        EmbedBatches, batch_size=1, compute=ray.data.ActorPoolStrategy(size=actors), num_gpus=1 if gpus else 0,
        num_cpus=cpus_per_actor,
        fn_constructor_kwargs={"spec": backbone.spec, "preprocessing": backbone.preprocessing.to_dict(),
                               "trust_model": trust_model, "views": list(views), "max_pixels": max_pixels})
    for batch in embedded.iter_batches(batch_size=batch_size, batch_format="numpy", prefetch_batches=2):
        outputs = {name.removeprefix(OUTPUT): np.array(values, np.float32) for name, values in batch.items()
                   if name.startswith(OUTPUT)}
        yield batch["index"], outputs, [str(e) for e in batch["error"]]
