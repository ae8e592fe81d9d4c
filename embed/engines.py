"""Where the backbone runs. An engine turns image paths into embedded batches, in order:

    engine.connect()                     before the cache is touched: a missing cluster fails early
    engine.results(paths, indices, batch_size, views, max_pixels)
        yields (indices int [B], outputs {dataset: float32 [B, ...]}, errors [B] str) for the fixed
        windows [k*B, (k+1)*B) of `paths`, each computed whole on one device; outputs holds
        "features" and every other dataset the cache stores (`cache.layout.extra_datasets`: the
        views' features, the backbone's stored layers in each view)

`LocalEngine` runs on this machine's devices; `embed.ray_engine.RayEngine` on a Ray cluster. The
runner (`embed.runner`) knows only this interface; `embed.placement` builds an engine.
"""

from collections import deque
from concurrent.futures import ThreadPoolExecutor

from cache.layout import stored_dataset
from embed.defaults import MAX_PIXELS
import numpy as np

from embed.faces import image_batches
from embed.pipeline import mirrored


def embed_outputs(backbone, images, views=()):
    """{dataset: tensor [B, ...]} of a batch of images [B, S, S, C]: the features and the stored
    layers, for the batch and for each extra view (the "flip" view runs the backbone on the batch
    mirrored left-right: the same batch, so the same batch composition)."""
    outputs = {}
    for view, batch in [("orig", images), *((v, mirrored(images)) for v in views)]:
        features, layers = backbone.extract_all(batch)
        outputs[stored_dataset(view)] = features
        outputs.update({stored_dataset(view, layer["name"]): x for layer, x in zip(backbone.layers, layers)})
    return outputs


def batch_result(batch, outputs):
    """(indices, outputs, errors) as numpy and str from one pipeline batch and its backbone outputs;
    outputs also hold what the batch source computed for the cache (a face's box and landmarks:
    `embed.faces.FaceBatches`' "stored")."""
    errors = [e.decode("utf-8", "replace") for e in batch["error"].numpy()]
    stored = {name: np.asarray(x) for name, x in batch.get("stored", {}).items()}
    return batch["index"].numpy(), {**{name: x.numpy() for name, x in outputs.items()}, **stored}, errors


class LocalEngine:
    """This machine: backbones holds one copy of the same model per device; batch k runs on
    backbones[k % len], up to one batch per device at once, so the features do not depend on the
    number of devices. threads: the decode pipeline's (`embed.faces.image_batches`: whole images,
    or aligned faces)."""

    def __init__(self, backbones, threads=None):
        self.backbones, self.threads = list(backbones), threads

    def connect(self):
        pass

    def results(self, paths, indices, batch_size, views=(), max_pixels=MAX_PIXELS):
        batches = image_batches(paths, indices, self.backbones[0].preprocessing, batch_size, self.threads,
                                max_pixels)
        try:
            if len(self.backbones) == 1:
                for batch in batches:
                    yield batch_result(batch, embed_outputs(self.backbones[0], batch["image"], views))
                return
            in_flight = deque()
            with ThreadPoolExecutor(max_workers=len(self.backbones)) as pool:
                for k, batch in enumerate(batches):
                    backbone = self.backbones[k % len(self.backbones)]
                    in_flight.append((batch, pool.submit(embed_outputs, backbone, batch["image"], views)))
                    if len(in_flight) == len(self.backbones):
                        batch, outputs = in_flight.popleft()
                        yield batch_result(batch, outputs.result())
                while in_flight:
                    batch, outputs = in_flight.popleft()
                    yield batch_result(batch, outputs.result())
        finally:
            batches.close()  # stop the input pipeline now, even on an error
