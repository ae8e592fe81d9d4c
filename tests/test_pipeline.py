"""The tf.data pipeline: every file yields an element in order; damaged files carry their reason."""

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from embed.backbones import Preprocessing
from embed.pipeline import ImageBatches, preprocess

UNIT_RGB = Preprocessing(image_size=16, color="rgb", value_range=(0.0, 1.0))


def make_images(folder):
    """{name: expected error substring, or None if it must decode}."""
    folder.mkdir(exist_ok=True)
    rgb = np.random.default_rng(0).integers(0, 256, (40, 30, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(folder / "good.jpg", quality=95)
    Image.fromarray(rgb).save(folder / "png_named.jpg", format="PNG")
    Image.fromarray(rgb[..., 0]).save(folder / "gray.jpg")
    Image.new("CMYK", (30, 40), (0, 255, 255, 0)).save(folder / "cmyk.jpg")
    Image.new("RGB", (1, 1), (255, 255, 255)).save(folder / "tiny.png")
    good = (folder / "good.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(good[: len(good) // 3])
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "noise.jpg").write_bytes(np.random.default_rng(1).bytes(500))
    (folder / "folder.jpg").mkdir()
    return {"good.jpg": None, "png_named.jpg": None, "gray.jpg": None, "cmyk.jpg": None, "tiny.png": None,
            "truncated.jpg": "cannot decode image", "empty.jpg": "cannot decode image",
            "noise.jpg": "cannot decode image", "folder.jpg": "is a directory", "absent.jpg": "missing file"}


def run(paths, prep=UNIT_RGB, batch_size=4):
    out = {"index": [], "image": [], "error": []}
    for batch in ImageBatches([str(p) for p in paths], np.arange(len(paths)) + 100, prep, batch_size):
        for key in out:
            out[key].extend(batch[key].numpy())
    return out


def test_every_file_yields_one_element_in_order_with_its_reason(tmp_path):
    expected = make_images(tmp_path)
    names = list(expected)
    out = run([tmp_path / n for n in names])
    assert out["index"] == list(range(100, 100 + len(names)))
    for name, error, image in zip(names, out["error"], out["image"]):
        message = error.decode()
        if expected[name] is None:
            assert message == "", (name, message)
            assert image.shape == (16, 16, 3) and 0 <= image.min() and image.max() <= 1
        else:
            assert expected[name] in message, (name, message)
            assert "{{" not in message and "[Op:" not in message


def test_unreadable_file_is_recorded(tmp_path, monkeypatch):
    """Permission denied, simulated in the per-file path (CI runs as root, who reads any file); the
    missing file sends its window there."""
    import embed.pipeline
    make_images(tmp_path)

    def denied(path, mode="r"):
        raise PermissionError(13, "Permission denied", path)
    monkeypatch.setattr(embed.pipeline, "open", denied, raising=False)
    out = run([tmp_path / "good.jpg", tmp_path / "absent.jpg"])
    assert out["error"][0].decode() == "cannot read: Permission denied"


def test_cmyk_and_grayscale_decode_to_the_right_colours(tmp_path):
    make_images(tmp_path)
    out = run([tmp_path / "cmyk.jpg", tmp_path / "gray.jpg"])
    cmyk, gray = out["image"]
    assert cmyk[..., 0].mean() > 0.9 and cmyk[..., 1:].mean() < 0.1  # (0, 255, 255, 0) CMYK is red
    np.testing.assert_allclose(gray[..., 0], gray[..., 1])


def test_huge_image_is_resized(tmp_path):
    Image.new("RGB", (4000, 4000), (0, 128, 255)).save(tmp_path / "huge.jpg")
    image = run([tmp_path / "huge.jpg"])["image"][0]
    np.testing.assert_allclose(image.mean(axis=(0, 1)), [0, 128 / 255, 1], atol=0.01)


@pytest.mark.parametrize("value_range", [(0.0, 1.0), (-1.0, 1.0), (0.0, 255.0)])
def test_value_range_maps_0_255_linearly(value_range):
    prep = Preprocessing(image_size=2, color="rgb", value_range=value_range)
    pixels = tf.constant([[[0, 0, 0], [255, 255, 255]], [[51, 51, 51], [255, 0, 255]]], tf.uint8)
    out = preprocess(pixels, prep).numpy()
    lo, hi = value_range
    np.testing.assert_allclose(out, lo + pixels.numpy() / 255 * (hi - lo), rtol=1e-6, atol=1e-5)
    assert out.min() == lo and out.max() == hi


def test_grayscale_preprocessing_gives_one_channel(tmp_path):
    make_images(tmp_path)
    prep = Preprocessing(image_size=8, color="grayscale", value_range=(-1.0, 1.0))
    image = run([tmp_path / "good.jpg"], prep)["image"][0]
    assert image.shape == (8, 8, 1) and -1 <= image.min() and image.max() <= 1


def test_antialias_changes_downscaling_only_when_asked(tmp_path):
    stripes = np.zeros((64, 64, 3), np.uint8)
    stripes[(np.arange(64) // 8) % 2 == 0] = 255  # 8 white rows, 8 black rows, ...
    Image.fromarray(stripes).save(tmp_path / "stripes.png")
    plain = run([tmp_path / "stripes.png"], Preprocessing(8, "rgb", (0.0, 1.0)))["image"][0]
    smooth = run([tmp_path / "stripes.png"], Preprocessing(8, "rgb", (0.0, 1.0), antialias=True))["image"][0]
    assert np.abs(plain - 0.5).max() == pytest.approx(0.5)  # plain bilinear samples single stripes
    assert np.abs(smooth - 0.5).max() < 0.4  # antialiasing averages neighbouring stripes


@settings(max_examples=60, deadline=None)
@given(height=st.integers(1, 70), width=st.integers(1, 70), size=st.integers(1, 48),
       method=st.sampled_from([("bilinear", False), ("bilinear", True), ("bicubic", False), ("area", False)]),
       value_range=st.sampled_from([(0.0, 1.0), (-1.0, 1.0), (0.0, 255.0)]), seed=st.integers(0, 2**16))
def test_preprocess_gives_the_same_values_from_uint8_or_float32_and_never_leaves_the_range(
        height, width, size, method, value_range, seed):
    """The fast path resizes float32 copies of small images, the per-file path uint8 (same machine,
    so bitwise); plain bilinear skips the clip because it cannot overshoot: the clipped formula
    gives the same bits."""
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    pixels[0, 0], pixels[-1, -1] = 0, 255  # both ends of the range in every image
    prep = Preprocessing(size, "rgb", value_range, resize=method[0], antialias=method[1])
    from_uint8 = preprocess(tf.constant(pixels), prep).numpy()
    from_float = preprocess(tf.constant(pixels.astype(np.float32)), prep).numpy()
    assert from_uint8.tobytes() == from_float.tobytes()
    lo, hi = value_range
    assert lo <= from_uint8.min() and from_uint8.max() <= hi
    resized = tf.image.resize(pixels, [size, size], method=method[0], antialias=method[1])
    clipped = (tf.clip_by_value(resized, 0.0, 255.0) * ((hi - lo) / 255.0) + lo).numpy()
    assert from_uint8.tobytes() == clipped.tobytes()
