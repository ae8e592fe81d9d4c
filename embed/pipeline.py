"""tf.data pipeline: image files -> fixed windows of preprocessed pixels, the row index travelling along.

Each batch is {"index": int64 [B], "image": float32 [B, S, S, C] in the value range, "error":
string [B]} for the rows [k*B, (k+1)*B) of the input, in order. A file that cannot be read or
decoded (missing, unreadable, truncated, not an image, more than max_pixels) yields a zero image
and a non-empty "error"; the pipeline never drops or reorders a row.

Fast path: files are read, size-checked, decoded and resized in graph mode (no Python per image,
so it scales with cores) and batched into the fixed windows. Sizes come from the file header
before decoding (in the graph, the header kind of the dataset's first file: JPEG or PNG). When the
first file is small (at most FLOAT_RESIZE_FACTOR times the output's pixels, as CelebA's are), the
fast path resizes float32 copies (12 % less time per CelebA image than resizing uint8, the same
values) and takes only files that small. A window holding a file the graph cannot vouch for
(unreadable, undecodable, too large, of another kind) raises in place of that window, and that
window alone is redone by the per-file path: each file read and checked in Python (GIF and BMP
headers too), decoded eagerly by the same TensorFlow kernel and resized from uint8, so its pixels
are the fast path's (tested bitwise on the real sample, same machine) and each failure keeps its
own reason.
"""

import os
import re
import struct

import numpy as np
import tensorflow as tf

from embed.defaults import MAX_PIXELS

# The fast path resizes float32 copies of images up to this many times the output's pixels: for
# them the copy costs less than it saves; for larger images it costs more (and memory).
FLOAT_RESIZE_FACTOR = 4
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


JPEG_MAGIC, PNG_MAGIC = b"\xff\xd8", b"\x89PNG\r\n\x1a\n"


def decode_any(data, channels):
    """uint8 [H, W, channels] from a JPEG, PNG, GIF (its first frame), BMP or WebP file in any colour
    mode (grayscale, RGB, RGBA, palette, CMYK); graph or eager. RGB and the formats libjpeg and
    libpng decode to one channel themselves (JPEG but CMYK, PNG) are decoded directly; the others
    are decoded as RGB and made grayscale by the ITU-R 601 weights (tf.image.rgb_to_grayscale,
    rounded), as their decoders give no single channel."""
    if channels == 3:
        return tf.io.decode_image(data, channels=3, expand_animations=False, dtype=tf.uint8)

    def direct():
        return tf.io.decode_image(data, channels=1, expand_animations=False, dtype=tf.uint8)

    def through_rgb():
        rgb = tf.io.decode_image(data, channels=3, expand_animations=False, dtype=tf.uint8)
        rgb.set_shape([None, None, 3])
        return tf.image.rgb_to_grayscale(rgb)

    magic = tf.strings.substr(data, 0, 8)
    is_jpeg = tf.equal(tf.strings.substr(magic, 0, 2), JPEG_MAGIC)
    cmyk = tf.cond(is_jpeg, lambda: tf.equal(tf.image.extract_jpeg_shape(data)[2], 4), lambda: tf.constant(False))
    one_channel = tf.logical_or(tf.logical_and(is_jpeg, tf.logical_not(cmyk)), tf.equal(magic, PNG_MAGIC))
    image = tf.cond(one_channel, direct, through_rgb)
    image.set_shape([None, None, 1])
    return image


def header_size(data):
    """(width, height) from a JPEG, PNG, GIF, BMP or WebP file's header, or None (unknown format)."""
    if data[:8] == PNG_MAGIC and len(data) >= 24:
        return struct.unpack(">II", data[16:24])
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        return struct.unpack("<HH", data[6:10])
    if data[:2] == b"BM" and len(data) >= 26:
        width, height = struct.unpack("<ii", data[18:26])
        return abs(width), abs(height)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP" and len(data) >= 30:
        return _webp_size(data)
    if data[:2] == JPEG_MAGIC:
        try:
            height, width, _ = tf.image.extract_jpeg_shape(data).numpy()
            return int(width), int(height)
        except tf.errors.OpError:
            return None
    return None


def _webp_size(data):
    """(width, height) of a WebP file (its VP8X, VP8L or VP8 chunk), or None."""
    chunk = data[12:16]
    if chunk == b"VP8X":
        return (int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1)
    if chunk == b"VP8L" and data[20:21] == b"\x2f":
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":
        return (int.from_bytes(data[26:28], "little") & 0x3FFF, int.from_bytes(data[28:30], "little") & 0x3FFF)
    return None


def _too_large(size, max_pixels):
    width, height = size
    return (f"image is {width}x{height} = {width * height / 1e6:.1f} M pixels, more than --max-pixels "
            f"{max_pixels} (raise it to embed such images)")


def decode_file_bytes(data, channels, max_pixels):
    """An image file's bytes, eager: (uint8 [H, W, C] image, "") or (uint8 [1, 1, C] zeros, error
    text). The size is checked from the header before decoding (`decode_any`)."""
    try:
        size = header_size(data)
        if size is not None and size[0] * size[1] > max_pixels:
            return tf.zeros([1, 1, channels], tf.uint8), _too_large(size, max_pixels)
        return decode_any(data, channels), ""
    except tf.errors.OpError as exc:
        return tf.zeros([1, 1, channels], tf.uint8), _error_text(exc)


def _read_and_decode(path, channels, max_pixels):
    """The per-file path, eager: (uint8 [H, W, C] image, "") or (uint8 [1, 1, C] zeros, error text)."""
    try:
        with open(path.numpy(), "rb") as f:
            data = f.read()
    except OSError as exc:
        return tf.zeros([1, 1, channels], tf.uint8), _error_text(exc)
    return decode_file_bytes(data, channels, max_pixels)


def preprocess(image, preprocessing):
    """uint8 [H, W, C] 0..255, or its float32 cast -> float32 [S, S, C]: resize (bilinear, optional
    antialias), then map 0..255 linearly onto preprocessing.value_range. Both input types give the
    same values (tested): uint8 needs no float copy of a large image, float32 resizes faster.
    Plain bilinear interpolation stays within its inputs' range, so only the others are clipped."""
    size = preprocessing.image_size
    resized = tf.image.resize(image, [size, size], method=preprocessing.resize, antialias=preprocessing.antialias)
    if preprocessing.resize != "bilinear" or preprocessing.antialias:  # these can overshoot 0..255
        resized = tf.clip_by_value(resized, 0.0, 255.0)
    lo, hi = preprocessing.value_range
    scaled = resized * ((hi - lo) / 255.0)
    return scaled + lo if lo else scaled  # adding 0.0 would change nothing but cost a pass


def mirrored(images):
    """A batch of images [B, S, S, C] mirrored left-right (the `flip` view). Resizing commutes with
    the mirror (the sampling grid is symmetric), so this equals preprocessing the mirrored files."""
    return tf.reverse(images, axis=[2])


def _graph_pixel_count(data, kind, channels):
    """Pixels of a `kind` ("jpeg" or "png") file from its header, in graph mode; a file of another
    kind raises (before libjpeg sees it, which would print a line), and its window goes to the
    per-file path (which reads every kind), as does a CMYK JPEG for a grayscale backbone (libjpeg
    gives no single channel of it: `decode_any`). One kind per pipeline, with no control flow: a
    cond per image costs 6-10 % of the pipeline's speed."""
    if kind == "jpeg":
        check = tf.debugging.Assert(tf.equal(tf.strings.substr(data, 0, 2), JPEG_MAGIC), ["not a JPEG"])
        with tf.control_dependencies([check]):
            shape = tf.cast(tf.image.extract_jpeg_shape(data), tf.int64)
        if channels == 1:
            cmyk = tf.debugging.Assert(tf.not_equal(shape[2], 4), ["a CMYK JPEG for a grayscale backbone"])
            with tf.control_dependencies([cmyk]):
                shape = tf.identity(shape)
        return shape[0] * shape[1]
    check = tf.debugging.Assert(tf.equal(tf.strings.substr(data, 0, 8), PNG_MAGIC), ["not a PNG"])
    with tf.control_dependencies([check]):
        dims = tf.cast(tf.io.decode_raw(tf.strings.substr(data, 16, 8), tf.uint8), tf.int64)
    return ((dims[0] * 2**24 + dims[1] * 2**16 + dims[2] * 2**8 + dims[3])
            * (dims[4] * 2**24 + dims[5] * 2**16 + dims[6] * 2**8 + dims[7]))


def sniff(paths):
    """(kind, pixels) of the first readable file among the first eight: kind "png" for a PNG, else
    "jpeg" (the header kind the fast path checks); pixels from its header, None if unknown."""
    for path in paths[:8]:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError:
            continue
        size = header_size(data)
        return ("png" if data[:8] == PNG_MAGIC else "jpeg"), (size[0] * size[1] if size else None)
    return "jpeg", None


def float_resize_limit(preprocessing):
    """The most pixels an image may have for the fast path to resize a float32 copy of it."""
    return FLOAT_RESIZE_FACTOR * preprocessing.image_size ** 2


def _threading(threads):
    # Fixed parallelism, autotuning off: with autotuning on, ending an iterator sometimes took
    # 2-3 s (its tuning thread), a quarter of the time of a 256-image embed (bench/RESULTS.md).
    options = tf.data.Options()
    options.autotune.enabled = False
    options.threading.private_threadpool_size = threads
    return options


def _fast_batches(paths, indices, preprocessing, batch_size, threads, max_pixels, kind="jpeg", float_resize=False):
    """Files decoded in graph mode, one element each, batched into the fixed windows. A bad file
    raises in place of its window: map and batch are fused (tf.data's map_and_batch), which
    consumes a failing window whole, so the next batch is the next window (ImageBatches checks).
    float_resize: resize float32 copies, and take only files of at most FLOAT_RESIZE_FACTOR times
    the output's pixels (larger ones raise, and their windows resize from uint8 in the per-file path)."""
    channels = preprocessing.channels
    if float_resize:
        max_pixels = min(max_pixels, float_resize_limit(preprocessing))

    def one(element):
        data = tf.io.read_file(element["path"])
        # Assert with string data only: tf.debugging.Assert guards any other data (assert_less_equal's
        # int64 values) with a cond per image, which cost 6-10 % of the pipeline (bench/RESULTS.md).
        check = tf.debugging.Assert(_graph_pixel_count(data, kind, channels) <= max_pixels,
                                    ["over the fast path's pixel limit"])
        with tf.control_dependencies([check]):
            image = tf.io.decode_image(data, channels=channels, expand_animations=False, dtype=tf.uint8)
        image.set_shape([None, None, channels])
        if float_resize:
            image = tf.cast(image, tf.float32)
        return {"index": element["index"], "image": preprocess(image, preprocessing)}

    options = _threading(threads)
    options.experimental_optimization.map_and_batch_fusion = True  # the default; the window semantics rely on it
    return (tf.data.Dataset.from_tensor_slices({"path": tf.constant(list(paths), tf.string),
                                                "index": np.asarray(indices, np.int64)})
            .map(one, num_parallel_calls=threads, deterministic=True)
            .batch(batch_size)
            .prefetch(2)
            .with_options(options))


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
        self.kind, pixels = sniff(self.paths)
        self.float_resize = pixels is not None and pixels <= float_resize_limit(preprocessing)
        self.windows_redone = 0
        self._iterator = None

    def __iter__(self):
        start = 0
        self._iterator = iter(self._fast(start))
        while start < len(self.paths):
            stop = min(start + self.batch_size, len(self.paths))
            try:
                batch = next(self._iterator)
                if not np.array_equal(batch["index"].numpy(), self.indices[start:stop]):
                    # windows out of step (map and batch not fused): restart the fast path here
                    self._iterator = iter(self._fast(start))
                    continue
                batch["error"] = tf.fill([stop - start], "")  # every file of a fast window decoded
            except tf.errors.OpError:  # a file in this window failed: redo the window file by file
                self.windows_redone += 1
                (batch,) = per_file_batches(self.paths[start:stop], self.indices[start:stop], self.preprocessing,
                                            self.batch_size, self.threads, self.max_pixels)
            yield batch
            start = stop
        self.close()

    def _fast(self, start):
        return _fast_batches(self.paths[start:], self.indices[start:], self.preprocessing, self.batch_size,
                             self.threads, self.max_pixels, self.kind, self.float_resize)

    def close(self):
        self._iterator = None
