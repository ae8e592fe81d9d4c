"""tf.data pipeline: image files -> fixed windows of preprocessed pixels, the row index travelling along.

Each batch is {"index": int64 [B], "image": float32 [B, S, S, C] in the value range, "error":
string [B]} for the rows [k*B, (k+1)*B) of the input, in order. A file that cannot be read or
decoded (missing, unreadable, truncated, not an image, more than max_pixels) yields a zero image
and a non-empty "error"; the pipeline never drops or reorders a row.

Fast path: a window is read, size-checked, decoded and resized in graph mode (no Python per image,
so it scales with cores). Sizes come from the file header before decoding (JPEG and PNG in the
graph); a window holding a file the graph cannot vouch for (unreadable, undecodable, too large,
another format) raises inside the graph, and that window alone is redone by the per-file path:
each file read and checked in Python (GIF and BMP headers too), decoded eagerly by the same
TensorFlow kernel and resized by the same graph, so its pixels are the fast path's (tested
bitwise on the real sample, same machine) and each failure keeps its own reason.
"""

import os
import re
import struct

import numpy as np
import tensorflow as tf

from embed.defaults import MAX_PIXELS

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


def header_size(data):
    """(width, height) from a JPEG, PNG, GIF or BMP file's header, or None (unknown format)."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        return struct.unpack(">II", data[16:24])
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        return struct.unpack("<HH", data[6:10])
    if data[:2] == b"BM" and len(data) >= 26:
        width, height = struct.unpack("<ii", data[18:26])
        return abs(width), abs(height)
    if data[:2] == b"\xff\xd8":
        try:
            height, width, _ = tf.image.extract_jpeg_shape(data).numpy()
            return int(width), int(height)
        except tf.errors.OpError:
            return None
    return None


def _too_large(size, max_pixels):
    width, height = size
    return (f"image is {width}x{height} = {width * height / 1e6:.1f} M pixels, more than --max-pixels "
            f"{max_pixels} (raise it to embed such images)")


def _read_and_decode(path, channels, max_pixels):
    """The per-file path, eager: (uint8 [H, W, C] image, "") or (uint8 [1, 1, C] zeros, error text)."""
    try:
        with open(path.numpy(), "rb") as f:
            data = f.read()
        size = header_size(data)
        if size is not None and size[0] * size[1] > max_pixels:
            return tf.zeros([1, 1, channels], tf.uint8), _too_large(size, max_pixels)
        image = tf.io.decode_image(data, channels=channels, expand_animations=False, dtype=tf.uint8)
        return image, ""
    except (OSError, tf.errors.OpError) as exc:
        return tf.zeros([1, 1, channels], tf.uint8), _error_text(exc)


def preprocess(image, preprocessing):
    """uint8 [H, W, C] -> float32 [S, S, C]: resize (bilinear, optional antialias) straight from
    uint8 (no float copy of a large image; the same values as resizing its float32 cast), then map
    0..255 linearly onto preprocessing.value_range."""
    size = preprocessing.image_size
    resized = tf.image.resize(image, [size, size], method=preprocessing.resize, antialias=preprocessing.antialias)
    resized = tf.clip_by_value(resized, 0.0, 255.0)
    lo, hi = preprocessing.value_range
    return resized * ((hi - lo) / 255.0) + lo


def mirrored(images):
    """A batch of images [B, S, S, C] mirrored left-right (the `flip` view). Resizing commutes with
    the mirror (the sampling grid is symmetric), so this equals preprocessing the mirrored files."""
    return tf.reverse(images, axis=[2])


def _graph_pixel_count(data):
    """Pixels of a JPEG or PNG from its header, in graph mode; any other format raises (the window
    then goes to the per-file path, which reads more headers). One cond, not a case: per image,
    control flow costs as much as the header check itself."""
    def jpeg():
        shape = tf.cast(tf.image.extract_jpeg_shape(data), tf.int64)
        return shape[0] * shape[1]

    def png():
        check = tf.debugging.Assert(tf.equal(tf.strings.substr(data, 0, 8), b"\x89PNG\r\n\x1a\n"),
                                    ["not a JPEG or PNG: checked by the per-file path"])
        with tf.control_dependencies([check]):
            dims = tf.cast(tf.io.decode_raw(tf.strings.substr(data, 16, 8), tf.uint8), tf.int64)
        width = dims[0] * 2**24 + dims[1] * 2**16 + dims[2] * 2**8 + dims[3]
        height = dims[4] * 2**24 + dims[5] * 2**16 + dims[6] * 2**8 + dims[7]
        return width * height

    return tf.cond(tf.equal(tf.strings.substr(data, 0, 2), b"\xff\xd8"), jpeg, png)


def _threading(threads):
    # Fixed parallelism, autotuning off: with autotuning on, ending an iterator sometimes took
    # 2-3 s (its tuning thread), a quarter of the time of a 256-image embed (bench/RESULTS.md).
    options = tf.data.Options()
    options.autotune.enabled = False
    options.threading.private_threadpool_size = threads
    return options


def _fast_windows(paths, indices, preprocessing, batch_size, threads, max_pixels):
    """Windows decoded in graph mode; a window with any bad file raises at its place in the order."""
    size, channels = preprocessing.image_size, preprocessing.channels

    def one(path):
        data = tf.io.read_file(path)
        check = tf.debugging.assert_less_equal(_graph_pixel_count(data), tf.constant(max_pixels, tf.int64))
        with tf.control_dependencies([check]):
            image = tf.io.decode_image(data, channels=channels, expand_animations=False, dtype=tf.uint8)
        image.set_shape([None, None, channels])
        return preprocess(image, preprocessing)

    def window(element):
        images = tf.map_fn(one, element["path"], fn_output_signature=tf.TensorSpec([size, size, channels], tf.float32))
        return {"index": element["index"], "image": images, "error": tf.fill(tf.shape(element["index"]), "")}

    return (tf.data.Dataset.from_tensor_slices({"path": tf.constant(list(paths), tf.string),
                                                "index": np.asarray(indices, np.int64)})
            .batch(batch_size)
            # one window more than threads in flight: a thread that finishes its window finds the
            # next one queued (measured: 0.96 -> 1.0 of the graph-only pipeline on 2 cores)
            .map(window, num_parallel_calls=threads + 1, deterministic=True)
            .prefetch(2)
            .with_options(_threading(threads)))


def per_file_batches(paths, indices, preprocessing, batch_size, threads=None, max_pixels=MAX_PIXELS):
    """The per-file path: each file read, checked and decoded eagerly in Python (so each failure
    gets its own reason), then resized in graph mode. Same batches and pixels as `image_batches`."""
    channels = preprocessing.channels
    threads = threads or os.cpu_count() or 2

    def load(element):
        image, error = tf.py_function(lambda p: _read_and_decode(p, channels, max_pixels), [element["path"]],
                                      [tf.uint8, tf.string])
        image.set_shape([None, None, channels])
        error.set_shape([])
        return {"index": element["index"], "image": preprocess(image, preprocessing), "error": error}

    elements = tf.data.Dataset.from_tensor_slices(
        {"path": tf.constant(list(paths), tf.string), "index": np.asarray(indices, np.int64)})
    return (elements.map(load, num_parallel_calls=threads, deterministic=True)
            .batch(batch_size)
            .prefetch(2)
            .with_options(_threading(threads)))


class ImageBatches:
    """Batches of {"index": int64 [B], "image": float32 [B, S, S, C], "error": string [B]} in input
    order, decoded by the fast path, a failing window redone by the per-file path (module
    docstring). An iterable; `close()` stops the pipeline. threads: decode parallelism (default:
    the cores); max_pixels: larger images become failed rows, checked before decoding."""

    def __init__(self, paths, indices, preprocessing, batch_size, threads=None, max_pixels=MAX_PIXELS):
        self.paths, self.indices = list(paths), np.asarray(indices, np.int64)
        self.preprocessing, self.batch_size = preprocessing, batch_size
        self.threads, self.max_pixels = threads or os.cpu_count() or 2, max_pixels
        self.windows_redone = 0
        self._iterator = None

    def __iter__(self):
        self._iterator = iter(_fast_windows(self.paths, self.indices, self.preprocessing, self.batch_size,
                                            self.threads, self.max_pixels))
        for start in range(0, len(self.paths), self.batch_size):
            try:
                yield next(self._iterator)
            except tf.errors.OpError:  # a file in this window failed: redo the window file by file
                self.windows_redone += 1
                stop = start + self.batch_size
                (batch,) = per_file_batches(self.paths[start:stop], self.indices[start:stop], self.preprocessing,
                                            self.batch_size, self.threads, self.max_pixels)
                yield batch
        self.close()

    def close(self):
        self._iterator = None
