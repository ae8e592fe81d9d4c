"""The commands a user runs: embed, info, make-sample; exit statuses and one-line errors."""

import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

import cli
from cache import layout
from embed.sample import CELEBA_ATTRIBUTES
from tests.conftest import ROOT, copy_dataset

NAMES = list(CELEBA_ATTRIBUTES)


def invoke(*args):
    return CliRunner().invoke(cli.main, [str(a) for a in args], catch_exceptions=False)


def embed_probe(data_dir, out, *extra):
    """Embed with the PixelProbe SavedModel (features: min, max, mean R, G, B of the input pixels)."""
    return invoke("embed", "--data-dir", data_dir, "--out", out, "--batch-size", 8, *extra)


def test_help_answers_without_importing_tensorflow():
    code = ("import sys; from click.testing import CliRunner; import cli; "
            "r = CliRunner().invoke(cli.main, ['embed', '--help']); "
            "assert r.exit_code == 0 and '--model' in r.output, r.output; "
            "assert 'tensorflow' not in sys.modules; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "ok", out.stderr


def test_default_model_receives_pixels_in_unit_range(sample_dir, probe_saved_model, tmp_path, monkeypatch):
    """The default TF-Hub EfficientNetV2 path (hub.load of the default handle, here the probe): pixels in
    [0, 1], really spanning it, and the labels are visible in what the backbone sees."""
    import tensorflow_hub as hub
    real_load = hub.load
    monkeypatch.setattr(hub, "load", lambda handle: real_load(str(probe_saved_model)))
    out = tmp_path / "c.h5"
    result = embed_probe(sample_dir, out)
    assert result.exit_code == 0, result.output
    assert "input 224x224 rgb, values in [0, 1]" in result.output
    assert "done: 40 ok, 0 failed" in result.output
    with h5py.File(out, "r") as f:
        features = f["features"][:].astype(np.float32)
        labels = f["labels"][:]
        assert json.loads(f.attrs["preprocessing"])["value_range"] == [0.0, 1.0]
        assert json.loads(f.attrs["backbone"])["model"] == cli.DEFAULT_MODEL
    assert features[:, 0].min() >= 0 and features[:, 1].max() <= 1 and features[:, 1].max() > 0.9
    male = labels[:, NAMES.index("Male")] == 1
    assert (features[male, 4] > features[male, 2]).all() and (features[~male, 4] < features[~male, 2]).all()


def test_h5_model_cut_at_layer_grayscale_minus_one_to_one(sample_dir, grayscale_h5_model, tmp_path):
    out = tmp_path / "c.h5"
    result = invoke("embed", "--data-dir", sample_dir, "--out", out, "--model", grayscale_h5_model,
                    "--layer", "embedding", "--value-range", "-1,1")
    assert result.exit_code == 0, result.output
    summary = json.loads(invoke("info", out, "--json").output)
    assert summary["shape"] == [40, 8]
    assert summary["preprocessing"] == {"image_size": 64, "color": "grayscale", "value_range": [-1.0, 1.0],
                                        "resize": "bilinear", "antialias": False}
    assert summary["backbone"]["layer"] == "embedding" and len(summary["backbone"]["sha256"]) == 64


def test_resume_with_other_settings_is_refused_naming_the_setting(sample_dir, probe_saved_model, tmp_path):
    out = tmp_path / "c.h5"
    assert embed_probe(sample_dir, out, "--model", probe_saved_model, "--image-size", 32).exit_code == 0
    result = embed_probe(sample_dir, out, "--model", probe_saved_model, "--image-size", 24)
    assert result.exit_code == 1
    assert f"{out} was made with --image-size 32 \u2260 24 (preprocessing.image_size); repeat the original settings" \
        in result.output.splitlines()[-1]
    assert "--overwrite" in result.output and "Traceback" not in result.output
    result = embed_probe(sample_dir, out, "--model", probe_saved_model, "--image-size", 32, "--dtype", "float32")
    assert "made with --dtype float16 \u2260 float32 (feature_dtype)" in result.output
    again = embed_probe(sample_dir, out, "--model", probe_saved_model, "--image-size", 32)
    assert again.exit_code == 0 and "already complete; nothing to embed" in again.output
    assert "done: 0 ok, 0 failed" in again.output  # nothing recomputed
    fresh = embed_probe(sample_dir, out, "--model", probe_saved_model, "--image-size", 24, "--overwrite")
    assert fresh.exit_code == 0 and "done: 40 ok" in fresh.output


def test_changed_labels_resume_with_a_note_and_other_images_refuse(sample_dir, probe_saved_model, tmp_path):
    """Resume compares what the features depend on: the ids and settings, not the labels."""
    data = copy_dataset(sample_dir, tmp_path / "d")
    out = tmp_path / "c.h5"
    assert embed_probe(data, out, "--model", probe_saved_model, "--image-size", 16).exit_code == 0
    labels_before = h5py.File(out, "r")["labels"][:]
    (data / "list_attr_celeba.txt").unlink()  # now the CSV is used; flip one label in it
    text = (data / "list_attr_celeba.csv").read_text().replace("000001.jpg,-1", "000001.jpg,1", 1)
    (data / "list_attr_celeba.csv").write_text(text)
    result = embed_probe(data, out, "--model", probe_saved_model, "--image-size", 16)
    assert result.exit_code == 0 and "the labels or partition differ from those it was made with" in result.output
    assert "already complete" in result.output
    np.testing.assert_array_equal(h5py.File(out, "r")["labels"][:], labels_before)  # the cache keeps its own
    lines = (data / "list_attr_celeba.csv").read_text().splitlines()
    (data / "list_attr_celeba.csv").write_text("\n".join(lines[:1] + lines[2:]) + "\n")  # one image fewer
    result = embed_probe(data, out, "--model", probe_saved_model, "--image-size", 16)
    assert result.exit_code == 1 and "holds other images than this command lists" in result.output, result.output


def test_damaged_images_are_recorded_and_set_the_exit_status(sample_dir, probe_saved_model, tmp_path):
    data = copy_dataset(sample_dir, tmp_path / "d")
    images = data / "img_align_celeba"
    good = (images / "000002.jpg").read_bytes()
    (images / "000002.jpg").write_bytes(good[:200])
    (images / "000005.jpg").write_bytes(b"")
    (images / "000009.jpg").unlink()
    out = tmp_path / "c.h5"
    result = embed_probe(data, out, "--model", probe_saved_model, "--image-size", 16)
    assert result.exit_code == cli.EXIT_FAILED_ROWS, result.output
    assert "1 labelled id has no image file" in result.output
    assert "failed: 000002.jpg: cannot decode image" in result.output
    assert "failed: 000009.jpg: missing file" in result.output
    assert "done: 37 ok, 3 failed" in result.output and "--allow-failures" in result.output
    summary = json.loads(invoke("info", out, "--json").output)
    assert summary["rows"] == {"ok": 37, "failed": 3, "not_done": 0}
    assert [f["image_id"] for f in summary["failures"]] == ["000002.jpg", "000005.jpg", "000009.jpg"]
    with h5py.File(out, "r") as f:
        status = f["status"][:]
        assert status[[1, 4, 8]].tolist() == [layout.STATUS_FAILED] * 3
        assert np.isnan(f["features"][1]).all() and np.isfinite(f["features"][0]).all()
    accepted = embed_probe(data, out, "--model", probe_saved_model, "--image-size", 16, "--allow-failures")
    assert accepted.exit_code == 0


@pytest.mark.parametrize("content, message", [
    ("2\nA B\n1.jpg 1 -1\n2.jpg 1 2\n", "list_attr_celeba.txt:4: column 'B' has '2'"),
    ("3\nA B\n1.jpg 1 -1\n2.jpg 1 1\n", "list_attr_celeba.txt:1: the count line says 3 rows but the file has 2"),
    ("2\nA B\n1.jpg 1 -1\n1.jpg 1 1\n", "duplicate image id"),
])
def test_malformed_label_file_is_one_line_error(tmp_path, content, message):
    (tmp_path / "img_align_celeba").mkdir()
    (tmp_path / "list_attr_celeba.txt").write_text(content)
    result = invoke("embed", "--data-dir", tmp_path, "--out", tmp_path / "c.h5", "--official-split")
    assert result.exit_code == 1
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "c.h5").exists()


def test_info_on_bad_files(tmp_path):
    (tmp_path / "x.h5").write_bytes(b"not hdf5")
    result = invoke("info", tmp_path / "x.h5")
    assert result.exit_code == 1 and result.output.startswith("Error:") and "Traceback" not in result.output


def test_make_sample_writes_both_formats(tmp_path):
    result = invoke("make-sample", "--out", tmp_path / "s", "--n", 12, "--seed", 3)
    assert result.exit_code == 0, result.output
    names = sorted(os.listdir(tmp_path / "s"))
    assert names == ["img_align_celeba", "list_attr_celeba.csv", "list_attr_celeba.txt",
                     "list_eval_partition.csv", "list_eval_partition.txt"]
    assert len(os.listdir(tmp_path / "s" / "img_align_celeba")) == 12
    assert (tmp_path / "s" / "list_attr_celeba.txt").read_bytes().startswith(b"12\r\n5_o_Clock_Shadow ")


def test_make_sample_same_seed_same_files_although_written_on_every_core(tmp_path):
    from embed.sample import make_sample

    def files(folder):
        return {name: (folder / "img_align_celeba" / name).read_bytes()
                for name in sorted(os.listdir(folder / "img_align_celeba"))}
    spurious = ("Blond_Hair", "Male", 0.9)
    make_sample(tmp_path / "a", n=150, seed=7, spurious=spurious)  # more images than are in flight at once
    make_sample(tmp_path / "b", n=150, seed=7, spurious=spurious)
    make_sample(tmp_path / "c", n=150, seed=8, spurious=spurious)
    a, b, c = files(tmp_path / "a"), files(tmp_path / "b"), files(tmp_path / "c")
    assert len(a) == 150 and a == b
    assert sum(a[name] != c[name] for name in a) == 150


def test_embed_creates_the_folder_of_out(sample_dir, probe_saved_model, tmp_path):
    out = tmp_path / "new" / "deeper" / "c.h5"
    result = embed_probe(sample_dir, out, "--model", probe_saved_model, "--image-size", 16)
    assert result.exit_code == 0 and out.is_file(), result.output


def test_usage_errors_exit_2_before_tensorflow_starts(cache, tmp_path):
    """Unknown attributes, grid values, head kinds and refused outputs are judged without TensorFlow
    (which takes 8-11 s to start): checked in a fresh interpreter that never imports it."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    cases = [
        (["train-heads", cache, "--out", tmp_path / "r", "--attrs", "Smilling"], 2, "did you mean Smiling?"),
        (["baselines", cache, "--out", tmp_path / "b", "--groups", "Mael"], 2, "did you mean Male?"),
        (["sweep", cache, "--out", tmp_path / "s", "--grid", "dropout=1.5"], 2, "dropout"),
        (["sweep", cache, "--out", tmp_path / "s", "--grid", "lr=0"], 2, "lr"),
        (["audit", cache, "--out", tmp_path / "a", "--kind", "nope"], 2, "unknown head kind 'nope'"),
        (["audit", cache, "--out", tmp_path / "a", "--attrs", "Yung"], 2, "did you mean Young?"),
        (["train-heads", cache, "--out", run], 1, "not empty (config.json); pass --overwrite"),
    ]
    code = ("import json, sys; from click.testing import CliRunner; import cli\n"
            "for args, status, message in json.loads(sys.argv[1]):\n"
            "    r = CliRunner().invoke(cli.main, args)\n"
            "    assert r.exit_code == status and message in r.output, (args, r.output)\n"
            "    assert r.output.startswith('Error: ') and r.output.count('\\n') == 1, r.output\n"
            "assert 'tensorflow' not in sys.modules; print('ok')")
    cases = json.dumps([[[str(a) for a in args], status, message] for args, status, message in cases])
    out = subprocess.run([sys.executable, "-c", code, cases], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "ok", out.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
