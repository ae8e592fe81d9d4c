"""Mirrored views: `embed --views flip` stores each image's mirrored features beside the originals,
with the same resume, shard and merge guarantees; heads use them as mean, concat or augment, and
predict/export apply the same views."""

import json
import signal

import h5py
import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner
from PIL import Image

import cli
from cache.reader import load_split
from harness.faults import N_IMAGES, embed_args, rows_done, start_embed, wait_until
from heads.run.evaluate import evaluate_run
from heads.run.fit import train_heads
from heads.run.rundir import Run
from heads.run.task import TaskSpec
from heads.serve.export import export_run
from heads.serve.predict import predict_images

pytestmark = pytest.mark.slow
DATASETS = ("features", "features_flip", "image_id", "partition", "labels", "status", "error")


def invoke(*args):
    return CliRunner().invoke(cli.main, [str(a) for a in args])


def snapshot(path):
    with h5py.File(path, "r") as f:
        return {name: f[name][:] for name in DATASETS}


def same(a, b):
    """Datasets that differ in any bit between two snapshots (same machine: the same computation)."""
    return [n for n in DATASETS if a[n].tobytes() != b[n].tobytes() if a[n].dtype != object] + \
        [n for n in DATASETS if a[n].dtype == object and not np.array_equal(a[n], b[n])]


@pytest.fixture(scope="module")
def views_cache(fault_setup, tmp_path_factory):
    """An uninterrupted `embed --views flip` of the fault-injection dataset (200 images, batch 4), run in
    this process (the kill test's killed run is the other process that matters)."""
    out = tmp_path_factory.mktemp("views") / "reference.h5"
    result = invoke(*embed_args(fault_setup, out), "--views", "flip")
    assert result.exit_code == 0, result.output
    return out


def test_flip_view_is_stored_beside_unchanged_originals(views_cache, fault_setup):
    data = snapshot(views_cache)
    assert data["features"].tobytes() == fault_setup.reference["features"].tobytes()  # orig view unchanged
    assert not np.allclose(data["features"], data["features_flip"])  # these faces are not symmetric
    with h5py.File(views_cache, "r") as f:
        assert json.loads(f.attrs["views"]) == ["flip"]
    info = invoke("info", views_cache)
    assert info.exit_code == 0 and "views: orig, flip" in info.output


def test_flip_view_of_a_symmetric_image_equals_its_original_view(tmp_path, fault_setup):
    rng = np.random.default_rng(0)
    (tmp_path / "img").mkdir()
    rows = []
    for i in range(6):
        half = rng.integers(0, 255, (64, 32, 3), dtype=np.uint8)
        image = np.concatenate([half, half[:, ::-1]], axis=1) if i < 3 else rng.integers(0, 255, (64, 64, 3), np.uint8)
        Image.fromarray(image).save(tmp_path / "img" / f"{i}.png")  # PNG: no lossy compression
        rows.append(f"{i}.png,{i % 2},{[0, 0, 1, 1, 2, 2][i]}")
    (tmp_path / "labels.csv").write_text("image_id,Male,partition\n" + "\n".join(rows) + "\n")
    result = invoke("embed", "--labels", tmp_path / "labels.csv", "--images", tmp_path / "img", "--out",
                    tmp_path / "c.h5", "--model", fault_setup.model, "--value-range", "0,1", "--image-size", "32",
                    "--views", "flip", "--dtype", "float32")
    assert result.exit_code == 0, result.output
    with h5py.File(tmp_path / "c.h5", "r") as f:
        orig, flip = f["features"][:], f["features_flip"][:]
    np.testing.assert_allclose(flip[:3], orig[:3], rtol=1e-5, atol=1e-6)  # symmetric: same view
    assert not np.allclose(flip[3:], orig[3:], rtol=1e-3)  # asymmetric: a different view


def test_views_cache_resumes_after_kill_9_bitwise(views_cache, fault_setup, tmp_path):
    out = tmp_path / "c.h5"
    proc = start_embed(fault_setup, out, "--views", "flip")
    wait_until(lambda: rows_done(out) >= N_IMAGES // 3, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    at_kill = rows_done(out)
    assert 0 < at_kill < N_IMAGES, "the kill did not land mid-run"
    resumed = invoke(*embed_args(fault_setup, out), "--views", "flip")  # the killed run was the process to test
    assert resumed.exit_code == 0 and f"resumed at row {at_kill}" in resumed.output, resumed.output
    assert not same(snapshot(out), snapshot(views_cache))
    refused = invoke(*embed_args(fault_setup, out))  # without --views
    assert refused.exit_code == 1 and "views" in refused.stderr


def test_views_shards_merge_bitwise(views_cache, fault_setup, tmp_path):
    shards = []
    for index in range(2):
        shards.append(tmp_path / f"s{index}.h5")
        result = invoke(*embed_args(fault_setup, shards[-1]), "--views", "flip", "--shard", f"{index}/2")
        assert result.exit_code == 0, result.output
    assert invoke("merge", *shards, "--out", tmp_path / "m.h5").exit_code == 0
    assert not same(snapshot(tmp_path / "m.h5"), snapshot(views_cache))
    plain = tmp_path / "plain.h5"
    assert invoke(*embed_args(fault_setup, plain), "--shard", "1/2").exit_code == 0
    result = invoke("merge", shards[0], plain, "--out", tmp_path / "bad.h5")
    assert result.exit_code == 1 and "views differs" in result.output


@pytest.mark.parametrize("views, eval_view", [("mean", "orig"), ("concat", "orig"), ("augment", "orig"),
                                              ("augment", "mean")])
def test_heads_use_views_and_predict_applies_them(views_cache, fault_setup, tmp_path, views, eval_view):
    metrics = train_heads(TaskSpec(views_cache, "Male,Young", features="standardize", views=views, eval_view=eval_view), tmp_path / "run", epochs=3, plots=False)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (config["views"], config["eval_view"]) == (views, eval_view)
    width = 512 if views == "concat" else 256
    assert Run(tmp_path / "run").load()[1].n_features_in_ == width
    again = evaluate_run(tmp_path / "run", "test")
    assert again["attributes"]["Male"]["test"]["accuracy"] == pytest.approx(metrics["attributes"]["Male"]["test"]["accuracy"])
    test = load_split(views_cache, "test", ["Male", "Young"], views=("orig", "flip"))
    orig, flip = test.features
    expected = {"mean": (orig + flip) / 2, "concat": np.concatenate([orig, flip], 1)}.get(
        views if views != "augment" else eval_view, orig if eval_view == "orig" else (orig + flip) / 2)
    images = [fault_setup.data / "img_align_celeba" / i for i in test.image_ids[:3]]
    predicted = np.array([[r["attributes"][a]["probability"] for a in ("Male", "Young")]
                          for r in predict_images(tmp_path / "run", images)])
    # the cache stores float16 (embed's default), predict computes float32 features: equal to 1e-3
    np.testing.assert_allclose(predicted, Run(tmp_path / "run").probabilities(expected[:3]), atol=1e-3)
    if views == "concat":
        export_run(tmp_path / "run", tmp_path / "export")
        loaded = tf.saved_model.load(str(tmp_path / "export"))
        out = loaded.signatures["serving_default"](images=tf.constant([p.read_bytes() for p in images]))
        np.testing.assert_allclose(np.stack([out["Male"], out["Young"]], 1), predicted, atol=1e-4)


def test_views_without_a_flip_view_are_refused(fault_setup, tmp_path):
    result = invoke("train-heads", fault_setup.reference_path, "--out", tmp_path / "r", "--views", "mean")
    assert result.exit_code == 1 and "holds no flip view (embed with --views flip)" in result.stderr


def test_views_augment_is_scored_on_the_mean_of_both_views_by_default(views_cache, tmp_path):
    """Training on both views and scoring their mean (test-time augmentation) is the default."""
    default = train_heads(TaskSpec(views_cache, "Male,Young", views="augment"), tmp_path / "default", epochs=2, plots=False)
    mean = train_heads(TaskSpec(views_cache, "Male,Young", views="augment", eval_view="mean"), tmp_path / "mean",
                       epochs=2, plots=False)
    assert json.loads((tmp_path / "default" / "config.json").read_text())["eval_view"] == "mean"
    assert default["attributes"] == mean["attributes"]
