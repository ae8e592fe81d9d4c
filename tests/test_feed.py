"""Feeding the backbone: the graph-mode fast path gives the per-file path's pixels bitwise (same
machine), oversized images are refused from their header before decoding (bounded memory), progress
goes to logs, failed rows can be retried, and bad usage exits 2."""

import json
import os
import shutil
import struct
import subprocess
import sys
import zlib

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import cli
from embed.backbones import Preprocessing
from embed.pipeline import ImageBatches, per_file_batches
from harness.trials import counts
from tests.conftest import ROOT, copy_dataset
from tests.test_pipeline import make_images

PREP = Preprocessing(image_size=224, color="rgb", value_range=(0.0, 1.0))


def invoke(*args):
    return CliRunner().invoke(cli.main, [str(a) for a in args])


def collect(batches):
    out = {"index": [], "image": [], "error": []}
    for batch in batches:
        for key in out:
            out[key].append(batch[key].numpy())
    return {key: np.concatenate(values) for key, values in out.items()}


@pytest.mark.trials
def test_fast_path_equals_the_per_file_path_on_the_real_images(celeba_sample):
    """All 1,987 real images in `make reliability`, the first 400 in `make test` (harness.trials)."""
    folder = celeba_sample / "img_align_celeba"
    paths = sorted(str(folder / name) for name in os.listdir(folder))
    assert len(paths) == 1987
    paths = paths[:counts()["real_images"]]
    batches = ImageBatches(paths, np.arange(len(paths)), PREP, 64)
    fast = collect(batches)
    slow = collect(per_file_batches(paths, np.arange(len(paths)), PREP, 64))
    assert batches.windows_redone == 0  # every real file decoded in graph mode
    assert (fast["error"] == b"").all() and (slow["error"] == b"").all()
    np.testing.assert_array_equal(fast["index"], slow["index"])
    assert fast["image"].tobytes() == slow["image"].tobytes()  # bitwise: the same kernels, same machine


def test_damaged_files_keep_their_reasons_and_good_neighbours_their_pixels(tmp_path):
    expected = make_images(tmp_path)
    paths = [str(tmp_path / name) for name in expected] + [str(tmp_path / "good.jpg")] * 6
    prep = Preprocessing(image_size=16, color="rgb", value_range=(0.0, 1.0))
    batches = ImageBatches(paths, np.arange(len(paths)), prep, 4)
    fast = collect(batches)
    slow = collect(per_file_batches(paths, np.arange(len(paths)), prep, 4))
    assert fast["error"].tolist() == slow["error"].tolist()
    assert fast["image"].tobytes() == slow["image"].tobytes()
    assert 0 < batches.windows_redone < len(paths) // 4 + 1  # the last window (good files) stayed fast
    for name, error in zip(expected, fast["error"]):
        assert (expected[name] or "") in error.decode() and bool(error) == bool(expected[name]), name


def test_a_large_image_among_small_ones_is_resized_from_uint8_in_the_per_file_path(tmp_path):
    rng = np.random.default_rng(3)
    for i in range(7):
        Image.fromarray(rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)).save(tmp_path / f"{i}.jpg")
    Image.fromarray(rng.integers(0, 256, (400, 300, 3), dtype=np.uint8)).save(tmp_path / "5.jpg")  # 120,000 pixels
    paths = [str(tmp_path / f"{i}.jpg") for i in range(7)]
    prep = Preprocessing(image_size=32, color="rgb", value_range=(0.0, 1.0))  # float resize up to 4 * 32^2 pixels
    batches = ImageBatches(paths, np.arange(7), prep, 2)
    fast = collect(batches)
    assert batches.float_resize and batches.windows_redone == 1  # only the large image's window
    assert (fast["error"] == b"").all()
    assert fast["image"].tobytes() == collect(per_file_batches(paths, np.arange(7), prep, 2))["image"].tobytes()


def png_bomb(path, side):
    """A valid PNG of side x side black pixels: a few MB on disk (side^2 / 75 bytes), side^2 * 3 bytes decoded."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    compressor = zlib.compressobj(1)  # 0.6 s for 12,000 a side (level 9: 2 s, the same zeros)
    row = b"\0" * (1 + 3 * side)
    body = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", body) + chunk(b"IEND", b""))


@pytest.mark.slow
def test_oversized_images_are_failed_rows_and_memory_stays_bounded(sample_dir, probe_saved_model, tmp_path):
    """In a fresh interpreter, as users run it: the oversized images are failed rows, the peak memory
    stays bounded, and TensorFlow starts only after the checks, inside the silenced start-up: its absl
    and oneDNN lines (the fast path's failed pixel-limit assertion included) never reach the terminal,
    only the tool's own notes and warnings do."""
    data = copy_dataset(sample_dir, tmp_path / "data")
    images = data / "img_align_celeba"
    png_bomb(images / "000003.jpg", 12000)  # 144 M pixels, 432 MB decoded (1.7 GB as float32)
    shutil.copy(images / "000003.jpg", images / "000007.jpg")
    (images / "000009.jpg").write_bytes(b"GIF89a" + struct.pack("<HH", 60000, 60000) + b"\0" * 20)
    script = (f"import resource, subprocess, sys; p = subprocess.run([sys.executable, {str(ROOT / 'cli.py')!r}, "
              f"'embed', '--data-dir', {str(data)!r}, '--out', {str(tmp_path / 'c.h5')!r}, '--model', "
              f"{str(probe_saved_model)!r}, '--image-size', '32', '--batch-size', '8', '--allow-failures']); "
              "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, p.returncode)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    peak_kb, code = map(int, done.stdout.split()[-2:])
    assert code == 0, done.stderr
    assert [line for line in done.stderr.splitlines() if not line.startswith(("note: ", "WARNING: --"))] == [], \
        done.stderr
    assert peak_kb < 1_500_000, f"peak RSS {peak_kb / 1e6:.2f} GB"  # TensorFlow itself takes about 0.6 GB
    with h5py.File(tmp_path / "c.h5", "r") as f:
        errors = {f["image_id"][i].decode(): f["error"][i].decode() for i in np.flatnonzero(f["status"][:] == 2)}
    assert set(errors) == {"000003.jpg", "000007.jpg", "000009.jpg"}
    assert errors["000003.jpg"] == ("image is 12000x12000 = 144.0 M pixels, more than --max-pixels 89478485 "
                                    "(raise it to embed such images)")
    assert "60000x60000" in errors["000009.jpg"]
    (images / "000007.jpg").unlink()  # one 144 M pixel decode shows it (a missing image is a failed row)
    result = invoke("embed", "--data-dir", data, "--out", tmp_path / "d.h5", "--model", probe_saved_model,
                    "--image-size", 32, "--max-pixels", 10**9, "--allow-failures")
    assert result.exit_code == 0 and "000003.jpg" not in result.output  # decodable when allowed


def test_progress_lines_when_stderr_is_not_a_terminal(sample_dir, probe_saved_model, tmp_path):
    result = invoke("embed", "--data-dir", sample_dir, "--out", tmp_path / "c.h5", "--model", probe_saved_model,
                    "--image-size", 32, "--batch-size", 4, "--log-every", "0.000001")
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("embedding: ")]
    assert len(lines) >= 5 and "/40 rows (" in lines[-1] and "images/s, ETA " in lines[-1]


def test_retry_failed_reembeds_only_failed_rows(sample_dir, probe_saved_model, tmp_path):
    reference = tmp_path / "ref.h5"
    args = ["--model", probe_saved_model, "--image-size", 32, "--batch-size", 4, "--dtype", "float32"]
    assert invoke("embed", "--data-dir", sample_dir, "--out", reference, *args).exit_code == 0
    data = copy_dataset(sample_dir, tmp_path / "data")
    good = (data / "img_align_celeba" / "000006.jpg").read_bytes()
    (data / "img_align_celeba" / "000006.jpg").write_bytes(good[:100])  # truncated
    (data / "img_align_celeba" / "000021.jpg").unlink()
    out = tmp_path / "c.h5"
    assert invoke("embed", "--data-dir", data, "--out", out, *args).exit_code == 3
    with h5py.File(out, "r") as f:
        before = f["features"][:]
    (data / "img_align_celeba" / "000006.jpg").write_bytes(good)  # fixed; 000021.jpg still missing
    result = invoke("embed", "--data-dir", data, "--out", out, *args, "--retry-failed")
    assert result.exit_code == 3 and "retried 2 failed rows: 1 now ok, 1 still failed" in result.output
    # the lines agree with each other: no "nothing to embed", and the done line counts the retried rows
    assert f"{out}: every row had been embedded before; only its failed rows were tried again" in result.output
    assert "nothing to embed" not in result.output and "failed: 000021.jpg" in result.output
    assert "done: 1 ok, 1 failed (2 of the rows retried) in" in result.output, result.output
    info = json.loads(invoke("info", out, "--json").output)
    assert info["rows"] == {"ok": 39, "failed": 1, "not_done": 0}
    assert [f["image_id"] for f in info["failures"]] == ["000021.jpg"]
    with h5py.File(out, "r") as f, h5py.File(reference, "r") as g:
        after, expected = f["features"][:], g["features"][:]
        status = f["status"][:]
    ok_before = np.flatnonzero(status == 1)
    untouched = [r for r in ok_before if r != 5]
    assert after[untouched].tobytes() == before[untouched].tobytes()  # ok rows left as they were
    assert after[5].tobytes() == expected[5].tobytes()  # computed in its whole window, as a plain run does


@pytest.mark.parametrize("args, message", [
    (["--value-range", "1"], "expected LO,HI"),
    (["--shard", "5/2"], "expected I/N with 0 <= I < N"),
    (["--ray-address", "h:1"], "apply to --engine ray only"),
    (["--color", "red"], "'red' is not one of"),
    (["--retry-failed", "--overwrite"], "cannot be combined with --overwrite"),
])
def test_bad_usage_exits_2(sample_dir, tmp_path, args, message):
    result = invoke("embed", "--data-dir", sample_dir, "--out", tmp_path / "c.h5", *args)
    assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "c.h5").exists()


def test_runner_and_engines_import_no_cycle():
    """The runner knows no engine; the Ray engine builds on the engine module, not on the runner."""
    code = "import sys, embed.ray_engine; assert 'embed.runner' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0
    source = (ROOT / "embed" / "runner.py").read_text()
    assert "ray_engine" not in source and "import ray" not in source


def test_windows_stay_aligned_even_if_map_and_batch_are_not_fused(tmp_path, monkeypatch):
    """Unfused, a failing file shifts the following batches; ImageBatches sees it by the indices
    and restarts the fast path at the next window, so rows still land in their windows."""
    import tensorflow as tf

    import embed.pipeline
    expected = make_images(tmp_path)
    paths = [str(tmp_path / name) for name in expected] + [str(tmp_path / "good.jpg")] * 7
    prep = Preprocessing(image_size=16, color="rgb", value_range=(0.0, 1.0))
    fused = collect(ImageBatches(paths, np.arange(len(paths)), prep, 4))
    original = embed.pipeline._fast_batches

    def unfused(*args):
        options = tf.data.Options()
        options.experimental_optimization.map_and_batch_fusion = False
        return original(*args).with_options(options)
    starts, raw = [], iter(unfused(paths, np.arange(len(paths)), prep, 4, 2, 10**8))
    while True:
        try:
            starts.append(int(next(raw)["index"][0]))
        except StopIteration:
            break
        except tf.errors.OpError:
            pass
    assert any(start % 4 for start in starts), starts  # unfused, the batches do shift
    monkeypatch.setattr(embed.pipeline, "_fast_batches", unfused)
    out = collect(ImageBatches(paths, np.arange(len(paths)), prep, 4))
    np.testing.assert_array_equal(out["index"], np.arange(len(paths)))
    assert out["error"].tolist() == fused["error"].tolist() and out["image"].tobytes() == fused["image"].tobytes()
