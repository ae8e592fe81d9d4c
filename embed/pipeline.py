"""tf.data pipeline: image files -> batches of preprocessed pixels, the row index travelling along.

Each element is {"index": int64, "image": float32 [S, S, C] in the value range, "error": string}.
A file that cannot be read or decoded (missing, unreadable, truncated, not an image) yields a
zero image and a non-empty "error"; the pipeline never drops or reorders an element.
"""

import os
import re

import numpy as np
import tensorflow as tf

_TF_NOISE = re.compile(r"\{\{[^}]*\}\}\s*|\s*\[Op:\w+\].*$")


def _error_text(exc):
    if isinstance(exc, FileNotFoundError):
        return "missing file"
    if isinstance(exc, IsADirectoryError):
        return "is a directory, not an image"
    if isinstance(exc, OSError):
        return f"cannot read: {exc.strerror or exc}"
    message = _TF_NOISE.sub("", str(exc).splitlines()[0] if str(exc) else type(exc).__name__).strip()
    return f"cannot decode image: {message}"


def _read_and_decode(path, channels):
    """Eager, per file: (uint8 [H, W, C] image, "" ) or (uint8 [1, 1, C] zeros, error text)."""
    try:
        with open(path.numpy(), "rb") as f:
            data = f.read()
        image = tf.io.decode_image(data, channels=channels, expand_animations=False, dtype=tf.uint8)
        return image, ""
    except (OSError, tf.errors.OpError) as exc:
        return tf.zeros([1, 1, channels], tf.uint8), _error_text(exc)


def preprocess(image, preprocessing):
    """uint8 [H, W, C] -> float32 [S, S, C]: resize (bilinear, optional antialias) on 0..255, then
    map 0..255 linearly onto preprocessing.value_range."""
    size = preprocessing.image_size
    resized = tf.image.resize(tf.cast(image, tf.float32), [size, size], method=preprocessing.resize,
                              antialias=preprocessing.antialias)
    resized = tf.clip_by_value(resized, 0.0, 255.0)
    lo, hi = preprocessing.value_range
    return resized * ((hi - lo) / 255.0) + lo


def mirrored(images):
    """A batch of images [B, S, S, C] mirrored left-right (the `flip` view). Resizing commutes with
    the mirror (the sampling grid is symmetric), so this equals preprocessing the mirrored files."""
    return tf.reverse(images, axis=[2])


def image_batches(paths, indices, preprocessing, batch_size):
    """Batches of {"index": int64 [B], "image": float32 [B, S, S, C], "error": string [B]} in input order."""
    channels = preprocessing.channels

    def load(element):
        image, error = tf.py_function(lambda p: _read_and_decode(p, channels), [element["path"]],
                                      [tf.uint8, tf.string])
        image.set_shape([None, None, channels])
        error.set_shape([])
        return {"index": element["index"], "image": preprocess(image, preprocessing), "error": error}

    elements = tf.data.Dataset.from_tensor_slices(
        {"path": tf.constant(list(paths), tf.string), "index": np.asarray(indices, np.int64)})
    # Fixed parallelism, autotuning off: with autotuning on, ending an iterator sometimes took
    # 2-3 s (its tuning thread), a quarter of the time of a 256-image embed (bench/RESULTS.md).
    options = tf.data.Options()
    options.autotune.enabled = False
    return (elements.map(load, num_parallel_calls=os.cpu_count() or 2, deterministic=True)
            .batch(batch_size)
            .prefetch(2)
            .with_options(options))
