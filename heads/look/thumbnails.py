"""Small pictures of the images behind a cache's rows, for the projector's sprite and the report.

The image folder is the one the cache records (`sources.images`, where `embed` read the files), or
one the user names because the images moved. Thumbnails are the image's central square, resized.
"""

import os
from pathlib import Path

import numpy as np

from cache.errors import UserError
from cache.reader import open_cache


def image_folder(cache, override=None):
    """(folder or None, why not): the folder a cache's image ids are relative to."""
    if override:
        if not os.path.isdir(override):
            raise UserError(f"--images {override}: not a folder")
        return Path(override), None
    with open_cache(cache) as f:
        recorded = (f.settings["sources"] or {}).get("images")
    if not recorded:
        return None, f"{cache} records no image folder; pass --images DIR"
    if not os.path.isdir(recorded):
        return None, f"the image folder {recorded} recorded in {cache} is not there (moved?); pass --images DIR"
    return Path(recorded), None


def thumbnail(path, size):
    """uint8 [size, size, 3]: the central square of the image file at `path`, resized; or None if
    the file cannot be read or decoded."""
    import tensorflow as tf
    try:
        image = tf.io.decode_image(Path(path).read_bytes(), channels=3, expand_animations=False)
    except (OSError, tf.errors.OpError):
        return None
    height, width = int(image.shape[0]), int(image.shape[1])
    side = min(height, width)
    square = image[(height - side) // 2:(height - side) // 2 + side, (width - side) // 2:(width - side) // 2 + side]
    resized = tf.image.resize(tf.cast(square, tf.float32), [size, size], antialias=True)
    return np.clip(np.round(resized.numpy()), 0, 255).astype(np.uint8)


def png(image):
    """PNG bytes of a uint8 [H, W, 3] image."""
    import tensorflow as tf
    return tf.io.encode_png(image).numpy()
