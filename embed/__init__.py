"""The embedding pass: labelled images -> frozen backbone -> HDF5 feature cache.

Stages, one module each: `labels` (parse files) -> `dataset` (list samples) -> `pipeline`
(tf.data decode/resize) -> `backbones` (frozen extractor) -> `runner` (write the cache).
"""

from cache.exports import lazy_exports

# The Python API (writing a cache): documented in docs/reference/api.md, tested in tests/test_api.py.
PUBLIC = {
    "embed_images": "embed.api",
    "BackboneSpec": "embed.backbones",
    "EmbedSpec": "embed.runner",
    "Placement": "embed.placement",
    "EmbedSummary": "embed.runner",
    "align_record": "embed.faces",
    "make_sample": "embed.sample",
    "make_scenes": "embed.scenes",
}
__all__ = list(PUBLIC)
__getattr__, __dir__ = lazy_exports(__name__, PUBLIC)
