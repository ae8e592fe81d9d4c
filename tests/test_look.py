"""Let people look: TensorBoard event files for runs and sweeps, the Embedding Projector export, and
the HTML report, checked for content and rendered in a real headless Chromium."""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

import cli
from cache.reader import load_split
from embed.backbones import BackboneSpec, load_backbone
from embed.dataset import load_dataset, locate
from embed.runner import EmbedSpec, embed
from heads.look.page import build_report
from heads.run.fit import run_kinds, train_heads
from heads.run.task import TaskSpec
from tests.conftest import copy_dataset

CHROMIUM = Path("/usr/bin/chromium")


def invoke(*args):
    return CliRunner().invoke(cli.main, [str(a) for a in args])


@pytest.fixture(scope="module")
def looked(sample_dir, probe_saved_model, tmp_path_factory):
    """A cache of the 40 generated images (a copy, so a test may move or damage its images), a
    Keras-head run (4 epochs) and a majority run on it."""
    root = tmp_path_factory.mktemp("look")
    data = copy_dataset(sample_dir, root / "data")
    backbone = load_backbone(BackboneSpec(str(probe_saved_model), image_size=32))
    labels, partition, images = locate(data)
    embed(load_dataset(labels, images, partition), backbone, root / "cache.h5", EmbedSpec(batch_size=16, feature_dtype="float32"))
    train_heads(TaskSpec(root / "cache.h5", "Male,Smiling,Young", features="standardize"), root / "head", epochs=4)
    run_kinds(TaskSpec(root / "cache.h5", "Male,Smiling,Young"), root / "base", ["majority"])
    return root


def scalars(folder):
    """{tag: [(step, value)]} as TensorBoard's event reader sees them (tf.summary writes scalars as
    tensor summaries)."""
    accumulator = EventAccumulator(str(folder))
    accumulator.Reload()
    return {tag: [(e.step, float(tf.make_ndarray(e.tensor_proto))) for e in accumulator.Tensors(tag)]
            for tag in accumulator.Tags()["tensors"]}


def _values(folder):
    """Every summary value in the event files of `folder`, tensor-valued scalars decoded."""
    found = []
    for path in sorted(Path(folder).glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            found.extend(event.summary.value)
    return found


def test_every_head_run_writes_tensorboard_events(looked):
    metrics = json.loads((looked / "head" / "metrics.json").read_text())
    history = (looked / "head" / "history.csv").read_text().splitlines()
    values = {v.tag: v for v in _values(looked / "head" / "tb")}
    for tag in ("train/loss", "val/loss", "train/Male_accuracy", "val/Young_accuracy", "final/test_mean_accuracy",
                "final/val_Male_accuracy", "final/test_Smiling_roc_auc"):
        assert tag in values, tag
    read = scalars(looked / "head" / "tb")
    assert [step for step, _ in read["train/loss"]] == [1, 2, 3, 4] and len(history) == 5
    assert read["final/test_Male_accuracy"][0][1] == pytest.approx(metrics["attributes"]["Male"]["test"]["accuracy"])
    mean = np.mean([metrics["attributes"][a]["test"]["accuracy"] for a in ("Male", "Smiling", "Young")])
    assert read["final/test_mean_accuracy"][0][1] == pytest.approx(mean)


def test_sweep_writes_the_hparams_experiment_and_sessions(looked, tmp_path):
    result = invoke("sweep", looked / "cache.h5", "--out", tmp_path / "s", "--grid", "head=linear,mlp:8",
                    "--grid", "lr=1e-3,1e-2", "--attrs", "Male", "--no-plots")
    assert result.exit_code == 0, result.output
    experiment = [v for v in _values(tmp_path / "s") if v.metadata.plugin_data.plugin_name == "hparams"]
    data = plugin_data_pb2.HParamsPluginData.FromString(experiment[0].metadata.plugin_data.content)
    assert {h.name for h in data.experiment.hparam_infos} == {"head", "lr"}
    assert "final/val_mean_accuracy" in {m.name.tag for m in data.experiment.metric_infos}
    from heads.run.sweep import variant_name
    session = [v for v in _values(tmp_path / "s" / variant_name({"head": "mlp:8", "lr": 0.01}) / "tb")
               if v.metadata.plugin_data.plugin_name == "hparams"]
    start = plugin_data_pb2.HParamsPluginData.FromString(session[0].metadata.plugin_data.content).session_start_info
    assert start.hparams["head"].string_value == "mlp:8" and start.hparams["lr"].number_value == pytest.approx(0.01)


def test_projector_export(looked, tmp_path):
    result = invoke("projector", looked / "cache.h5", "--out", tmp_path / "p", "--n", "10", "--split", "all",
                    "--attrs", "Male,Young")
    assert result.exit_code == 0 and "10 rows" in result.output and "sprite 256x256" in result.output, result.output
    out = tmp_path / "p"
    tensor = tf.train.load_checkpoint(str(out)).get_tensor("embedding/.ATTRIBUTES/VARIABLE_VALUE")
    lines = (out / "metadata.tsv").read_text().splitlines()
    assert lines[0] == "id\tsplit\tMale\tYoung" and len(lines) == 11 and tensor.shape == (10, 5)
    ids = [line.split("\t")[0] for line in lines[1:]]
    splits = {name: load_split(looked / "cache.h5", name, ["Male", "Young"]) for name in ("train", "val", "test")}
    for row, line in zip(tensor, lines[1:]):
        image_id, split, male, young = line.split("\t")
        part = splits[split]
        i = part.image_ids.index(image_id)
        np.testing.assert_array_equal(row, part.features[i])
        assert [int(male), int(young)] == part.labels[i].tolist()
    sprite = tf.io.decode_png((out / "sprite.png").read_bytes())
    assert sprite.shape == (256, 256, 3) and len(set(ids)) == 10
    config = (out / "projector_config.pbtxt").read_text()
    assert 'metadata_path: "metadata.tsv"' in config and 'image_path: "sprite.png"' in config
    result = invoke("projector", looked / "cache.h5", "--out", tmp_path / "p", "--n", "5")
    assert result.exit_code == 1 and "not empty (checkpoint, " in result.stderr


def test_projector_without_images_says_why(looked, tmp_path):
    moved = tmp_path / "moved"
    shutil.copytree(looked / "data", moved)
    images = moved / "img_align_celeba"
    for path in sorted(images.iterdir())[:5]:
        path.unlink()
    result = invoke("projector", looked / "cache.h5", "--out", tmp_path / "p1", "--images", images, "--split", "all",
                    "--n", "40")
    assert result.exit_code == 0 and "5 of 40 images could not be read" in result.stderr
    shutil.move(looked / "data", tmp_path / "away")
    try:
        result = invoke("projector", looked / "cache.h5", "--out", tmp_path / "p2", "--n", "5")
        assert result.exit_code == 0 and "no sprite" in result.output
        assert "is not there (moved?); pass --images DIR" in result.stderr
        assert not (tmp_path / "p2" / "sprite.png").exists()
        build_report([looked / "head"], tmp_path / "r.html")
        assert "No gallery:" in (tmp_path / "r.html").read_text()
    finally:
        shutil.move(tmp_path / "away", looked / "data")


def test_report_content_and_bad_input(looked, tmp_path):
    result = invoke("report", looked / "head", looked / "base", "--out", tmp_path / "r.html", "--errors", "3")
    assert result.exit_code == 0 and "2 runs" in result.output
    page = (tmp_path / "r.html").read_text()
    assert page.count('<table class="sortable" id="leaderboard">') == 1 and "http" not in page.replace(
        'lang="en"', "")
    thumbs = re.findall(r'<div class="thumb (t\d+)"', page)
    assert page.count("<figure>") == len(thumbs) > 0
    assert all(page.count(f".{t}{{background-image:url(data:image/png;base64,") == 1 for t in set(thumbs))
    assert len(set(thumbs)) < len(thumbs)  # two runs' galleries share images, whose data the page holds once
    assert "<th>head</th>" in page and 'data-value="mlp:' in page  # the leaderboard names the head spec
    result = invoke("report", tmp_path, "--out", tmp_path / "x.html")
    assert result.exit_code == 1 and "not a run directory" in result.stderr and not (tmp_path / "x.html").exists()


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (make browser installs it)")
def test_report_renders_in_headless_chromium(looked, tmp_path):
    from playwright.sync_api import sync_playwright

    build_report([looked / "head", looked / "base"], tmp_path / "r.html", n_errors=3)
    metrics = json.loads((looked / "head" / "metrics.json").read_text())
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        page = browser.new_page()
        errors = []
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto((tmp_path / "r.html").as_uri())
        page.wait_for_load_state("load")
        rows = page.eval_on_selector_all("#leaderboard tbody tr", "rows => rows.map(r => Array.from(r.cells, c => c.textContent))")
        widths = page.eval_on_selector_all("img", "images => images.map(i => i.complete ? i.naturalWidth : 0)")
        thumbs = page.eval_on_selector_all(".thumb", "divs => divs.map(d => [d.offsetWidth, "
                                                     "getComputedStyle(d).backgroundImage.slice(0, 26)])")
        head_row = next(r for r in rows if r[0].endswith("head"))
        page.click("#leaderboard th:nth-child(10)")  # mean val: sorts, descending first
        sorted_rows = page.eval_on_selector_all("#leaderboard tbody tr", "rows => rows.map(r => r.cells[9].dataset.value)")
        browser.close()
    assert len(rows) == 2 and head_row[2] == f"{100 * metrics['attributes']['Male']['val']['accuracy']:.2f}"
    assert len(widths) >= 4 and all(w > 0 for w in widths), widths
    assert len(thumbs) >= 1 and all(t == [96, 'url("data:image/png;base64'] for t in thumbs), thumbs
    assert [float(v) for v in sorted_rows] == sorted((float(v) for v in sorted_rows), reverse=True)
    assert errors == []
