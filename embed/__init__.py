"""The embedding pass: labelled images -> frozen backbone -> HDF5 feature cache.

Stages, one module each: `labels` (parse files) -> `dataset` (list samples) -> `pipeline`
(tf.data decode/resize) -> `backbones` (frozen extractor) -> `runner` (write the cache).
"""
