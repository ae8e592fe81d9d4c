"""Where the backbone runs. An engine turns image paths into embedded batches, in order:

    engine.connect()                     before the cache is touched: a missing cluster fails early
    engine.results(paths, indices, batch_size, views, max_pixels)
        yields (indices int [B], features float32 [B, D], errors [B] str, {view: float32 [B, D]})
        for the fixed windows [k*B, (k+1)*B) of `paths`, each computed whole on one device

`LocalEngine` runs on this machine's devices; `embed.ray_engine.RayEngine` on a Ray cluster. The
runner (`embed.runner`) knows only this interface; `embed.placement` builds an engine.
"""

from collections import deque
from concurrent.futures import ThreadPoolExecutor

from embed.defaults import MAX_PIXELS
from embed.pipeline import ImageBatches, mirrored


def embed_views(backbone, images, views=()):
    """(features, {view: features}) of a batch of images [B, S, S, C]: the "flip" view runs the
    backbone on the batch mirrored left-right (the same batch, so the same batch composition)."""
    return backbone.extract(images), {view: backbone.extract(mirrored(images)) for view in views}


def batch_result(batch, features, views=None):
    """(indices, features, errors, views) as numpy and str from one pipeline batch and its backbone
    outputs."""
    errors = [e.decode("utf-8", "replace") for e in batch["error"].numpy()]
    return batch["index"].numpy(), features.numpy(), errors, {v: f.numpy() for v, f in (views or {}).items()}


class LocalEngine:
    """This machine: backbones holds one copy of the same model per device; batch k runs on
    backbones[k % len], up to one batch per device at once, so the features do not depend on the
    number of devices. threads: the decode pipeline's (`embed.pipeline.ImageBatches`)."""

    def __init__(self, backbones, threads=None):
        self.backbones, self.threads = list(backbones), threads

    def connect(self):
        pass

    def results(self, paths, indices, batch_size, views=(), max_pixels=MAX_PIXELS):
        batches = ImageBatches(paths, indices, self.backbones[0].preprocessing, batch_size, self.threads,
                               max_pixels)
        try:
            if len(self.backbones) == 1:
                for batch in batches:
                    yield batch_result(batch, *embed_views(self.backbones[0], batch["image"], views))
                return
            in_flight = deque()
            with ThreadPoolExecutor(max_workers=len(self.backbones)) as pool:
                for k, batch in enumerate(batches):
                    backbone = self.backbones[k % len(self.backbones)]
                    in_flight.append((batch, pool.submit(embed_views, backbone, batch["image"], views)))
                    if len(in_flight) == len(self.backbones):
                        batch, features = in_flight.popleft()
                        yield batch_result(batch, *features.result())
                while in_flight:
                    batch, features = in_flight.popleft()
                    yield batch_result(batch, *features.result())
        finally:
            batches.close()  # stop the input pipeline now, even on an error
