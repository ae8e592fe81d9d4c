"""ray: Ray's overhead on one machine, the same embed on the local engine and on a local Ray instance."""

import time
from pathlib import Path

from bench.common import group, row


def bench_ray(workdir, size):
    """Ray's overhead on one machine: the same embed, local engine vs a local Ray instance."""
    import ray

    from bench.groups.embed import sample_and_backbone
    from embed.placement import Placement
    from embed.runner import EmbedSpec, embed

    ids, dataset, backbone, local_engine = sample_and_backbone(workdir, size)
    _, _, _, ray_engine = sample_and_backbone(workdir, size, Placement(engine="ray"))

    def rate(engine):
        began = time.perf_counter()
        embed(dataset, backbone, Path(workdir) / f"{engine}.h5", EmbedSpec(batch_size=size["embed_batch"], overwrite=True),
              engine=ray_engine if engine == "ray" else local_engine)
        return len(ids) / (time.perf_counter() - began)

    rate("local")  # warm: the first embed in a process pays tf.data start-up
    local = rate("local")
    began = time.perf_counter()
    cold = rate("ray")  # starts the local Ray instance and its actor (TensorFlow import, model build)
    cold_seconds = time.perf_counter() - began
    warm = rate("ray")  # instance running; a new actor pool still loads the model
    ray.shutdown()
    note = (f"{len(ids)} real JPEGs at {size['image_size']}px, batch {size['embed_batch']}, "
            f"1 actor on 2 CPUs; first call {cold_seconds:.0f} s incl. starting Ray")
    return [row("ray: local engine", round(local, 1), "images/s"),
            row("ray: Ray engine, instance already running", round(warm, 1), "images/s",
                note=f"{warm / local:.2f} of local: {len(ids) / warm - len(ids) / local:.1f} s more, the actor's "
                     "start-up (TensorFlow import, model build) paid once per embed call"),
            row("ray: Ray engine, cold (starts Ray)", round(cold, 1), "images/s", note=note)]


@group("ray", order=11)
def run(ctx):
    return bench_ray(ctx.workdir, ctx.size)
