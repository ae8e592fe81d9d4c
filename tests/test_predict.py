"""predict (backbone recorded in the cache + head) and export (one SavedModel) agree with each other
and with the cache; unreadable images are reported while the others are predicted."""

import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner

import cli
from cache.reader import load_split
from embed.backbones import BackboneSpec, load_backbone
from embed.dataset import load_dataset, locate
from embed.runner import EmbedSpec, embed
from heads.run.fit import run_kinds, train_heads
from heads.run.rundir import Run
from heads.run.task import TaskSpec
from heads.serve.export import export_run
from heads.serve.predict import predict_images

BACKBONES = {
    "hub_saved_model": lambda probe, h5: dict(model=str(probe), image_size=32),
    "keras_h5_grayscale": lambda probe, h5: dict(model=str(h5), layer="embedding", value_range=(-1.0, 1.0)),
}


@pytest.fixture(scope="module", params=list(BACKBONES))
def run(request, sample_dir, probe_saved_model, grayscale_h5_model, tmp_path_factory):
    root = tmp_path_factory.mktemp(request.param)
    backbone = load_backbone(BackboneSpec(**BACKBONES[request.param](probe_saved_model, grayscale_h5_model)))
    labels, partition, images = locate(sample_dir)
    dataset = load_dataset(labels, images, partition)
    embed(dataset, backbone, root / "cache.h5", EmbedSpec(batch_size=16, feature_dtype="float32"))
    train_heads(TaskSpec(root / "cache.h5", "Male,Smiling,Young", features="standardize"), root / "run", epochs=2, plots=False)
    return root


def test_predict_matches_the_head_on_cached_features(run, sample_dir):
    test = load_split(run / "cache.h5", "test", ["Male", "Smiling", "Young"])
    images = [sample_dir / "img_align_celeba" / i for i in test.image_ids[:3]]
    results = predict_images(run / "run", images)
    expected = Run(run / "run").probabilities(test.features[:3])  # the stored transform, then the head
    got = np.array([[r["attributes"][a]["probability"] for a in ("Male", "Smiling", "Young")] for r in results])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert all(r["ok"] and r["error"] is None for r in results)
    assert results[0]["attributes"]["Male"]["decision"] == int(got[0, 0] >= 0.5)


def test_unreadable_image_is_reported_and_others_still_predicted(run, sample_dir, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff not really a jpeg")
    images = [sample_dir / "img_align_celeba" / "000001.jpg", broken, tmp_path / "absent.jpg",
              sample_dir / "img_align_celeba" / "000002.jpg"]
    results = predict_images(run / "run", images)
    assert [r["ok"] for r in results] == [True, False, False, True]
    assert "cannot decode image" in results[1]["error"] and results[2]["error"] == "missing file"
    cli_result = CliRunner().invoke(cli.main, ["predict", "--run", str(run / "run")] + [str(i) for i in images])
    assert cli_result.exit_code == cli.EXIT_FAILED_ROWS
    assert "broken.jpg  failed: cannot decode image" in cli_result.output
    assert "000002.jpg  Male" in cli_result.output


def test_exported_savedmodel_agrees_with_predict(run, sample_dir):
    images = [sample_dir / "img_align_celeba" / f"{i:06d}.jpg" for i in (3, 4, 5)]
    expected = predict_images(run / "run", images)
    export_run(run / "run", run / "export")
    loaded = tf.saved_model.load(str(run / "export"))
    out = loaded.signatures["serving_default"](images=tf.constant([p.read_bytes() for p in images]))
    for j, r in enumerate(expected):
        for a, v in r["attributes"].items():
            assert float(out[a][j]) == pytest.approx(v["probability"], abs=1e-5)
    assert set(loaded.signatures) == {"serving_default", "from_bytes", "from_pixels"}


def test_export_refuses_baseline_runs(run, tmp_path):
    run_kinds(TaskSpec(run / "cache.h5", "Male"), tmp_path / "base", ["logreg"], plots=False)
    result = CliRunner().invoke(cli.main, ["export", "--run", str(tmp_path / "base" / "logreg"),
                                           "--out", str(tmp_path / "x")])
    assert result.exit_code == 1 and "export needs a head with a TensorFlow graph" in result.output


def test_predict_with_a_baseline_run(run, sample_dir, tmp_path):
    run_kinds(TaskSpec(run / "cache.h5", "Male"), tmp_path / "base", ["logreg"], plots=False)
    results = predict_images(tmp_path / "base" / "logreg", [sample_dir / "img_align_celeba" / "000001.jpg"])
    assert 0 <= results[0]["attributes"]["Male"]["probability"] <= 1


def _formats(source, folder):
    """The image at `source` written in every format and colour mode the README's input table lists."""
    from PIL import Image
    folder.mkdir()
    image = Image.open(source).convert("RGB")
    files = {"png": folder / "a.png", "bmp": folder / "a.bmp", "webp": folder / "a.webp",
             "rgba": folder / "rgba.png", "palette": folder / "palette.png", "gray": folder / "gray.png",
             "gif": folder / "a.gif", "cmyk": folder / "cmyk.jpg", "jpeg": folder / "a.jpg"}
    image.save(files["png"])
    image.save(files["bmp"])
    image.save(files["webp"], lossless=True)
    image.convert("RGBA").save(files["rgba"])
    image.convert("P").save(files["palette"])
    image.convert("L").save(files["gray"])
    image.save(files["gif"])
    image.convert("CMYK").save(files["cmyk"], quality=95)
    image.save(files["jpeg"], quality=95)
    return files


def test_every_listed_format_and_colour_mode_predicts_with_either_backbone_colour(run, sample_dir, tmp_path):
    files = _formats(sample_dir / "img_align_celeba" / "000001.jpg", tmp_path / "formats")
    results = predict_images(run / "run", list(files.values()))
    assert all(r["ok"] for r in results), [r["error"] for r in results if not r["ok"]]
    got = {name: np.array([v["probability"] for v in r["attributes"].values()]) for name, r in zip(files, results)}
    grayscale = Run(run / "run").caches[0]["preprocessing"]["color"] == "grayscale"
    for name in ("bmp", "webp", "rgba"):  # the same pixels as the PNG (a grey level may round the other way)
        np.testing.assert_allclose(got[name], got["png"], atol=0.03 if grayscale else 1e-6)
    for name in ("cmyk", "jpeg", "palette", "gif"):  # lossy: close
        np.testing.assert_allclose(got[name], got["png"], atol=0.25)


def test_predict_prints_no_decoder_lines(run, sample_dir, tmp_path, capfd):
    """libjpeg prints to stderr itself (file descriptor 2, from C) when asked to read a PNG or a
    CMYK JPEG as one channel; the pipeline never asks it, so the terminal holds only the
    predictions. capfd reads descriptor 2 itself, where such lines land, in this process."""
    files = _formats(sample_dir / "img_align_celeba" / "000001.jpg", tmp_path / "formats")
    order = [files["jpeg"], files["png"], files["cmyk"], files["bmp"], files["gif"], files["webp"]]
    capfd.readouterr()
    result = CliRunner().invoke(cli.main, ["predict", "--run", str(run / "run"), *map(str, order)])
    assert result.exit_code == 0, result.output
    assert result.stderr == "" and capfd.readouterr().err == ""
    assert [line.split()[0] for line in result.stdout.splitlines() if line.strip()][:len(order)] == list(map(str, order))


def test_a_tiny_image_gets_a_note_beside_its_prediction(run, tmp_path):
    from PIL import Image
    Image.new("RGB", (1, 1), (128, 90, 60)).save(tmp_path / "dot.png")
    Image.new("RGB", (40, 40), (128, 90, 60)).save(tmp_path / "patch.png")
    result = CliRunner().invoke(cli.main, ["predict", "--run", str(run / "run"), str(tmp_path / "dot.png"),
                                           str(tmp_path / "patch.png")])
    assert result.exit_code == 0, result.output
    assert f"WARNING: {tmp_path / 'dot.png'}: 1x1 pixels, under 16 a side: too few to show a face" in result.stderr
    assert "patch.png:" not in result.stderr
    assert [r["note"] is None for r in predict_images(run / "run", [tmp_path / "dot.png", tmp_path / "patch.png"])] \
        == [False, True]


def test_tuned_thresholds_are_shown_by_predict_and_exported_as_decisions(run, sample_dir, tmp_path):
    from heads.look.tables import predictions
    train_heads(TaskSpec(run / "cache.h5", "Male,Smiling,Young", features="standardize", tune_threshold=True),
                tmp_path / "tuned", epochs=2, plots=False)
    thresholds = Run(tmp_path / "tuned").thresholds
    assert any(t != 0.5 for t in thresholds)
    images = [sample_dir / "img_align_celeba" / f"{i:06d}.jpg" for i in (3, 4, 5)]
    results = predict_images(tmp_path / "tuned", images)
    line = predictions(results)[0]
    for (name, value), threshold in zip(results[0]["attributes"].items(), thresholds):
        assert value["threshold"] == pytest.approx(threshold) and value["decision"] == int(value["probability"] >= threshold)
        shown = f"{name} {value['probability']:.3f} ({value['decision']}" + (
            f", threshold {threshold:.3f})" if threshold != 0.5 else ")")
        assert shown in line
    export_run(tmp_path / "tuned", tmp_path / "export")
    out = tf.saved_model.load(str(tmp_path / "export")).signatures["serving_default"](
        images=tf.constant([p.read_bytes() for p in images]))
    for name in ("Male", "Smiling", "Young"):
        assert out[f"{name}_decision"].numpy().tolist() == [r["attributes"][name]["decision"] for r in results]


def test_many_attributes_get_a_line_each():
    from heads.look.tables import predictions
    attributes = {f"Attribute_{k}": {"probability": 0.25 * (k % 4), "decision": int(k % 4 >= 2), "threshold": 0.5}
                  for k in range(40)}
    lines = predictions([{"image": "a.jpg", "ok": True, "error": None, "attributes": attributes, "note": None}])
    assert lines[0] == "a.jpg" and len(lines) == 41 and max(map(len, lines)) < 60
    assert lines[3] == "  Attribute_2            0.500 (1)"
