"""Resolving --model into a frozen extractor with the right preprocessing (offline, no real weights)."""

import numpy as np
import pytest
import tensorflow as tf

from cache.errors import UserError
from embed import backbones
from embed.backbones import DEFAULT_MODEL, BackboneSpec, load_backbone, parse_value_range
from embed.pipeline import preprocess


def test_default_handle_resolves_to_224_rgb_in_unit_range(probe_saved_model, monkeypatch):
    """The default TF-Hub EfficientNetV2-B0 gets 224x224 RGB in [0, 1] (the reference fed 0..255)."""
    import tensorflow_hub as hub
    real_load = hub.load
    monkeypatch.setattr(hub, "load", lambda handle: real_load(str(probe_saved_model)))
    backbone = load_backbone(BackboneSpec(DEFAULT_MODEL))
    prep = backbone.preprocessing
    assert (prep.image_size, prep.color, prep.value_range) == (224, "rgb", (0.0, 1.0))
    assert backbone.spec["kind"] == "hub" and backbone.feature_dim == 5


@pytest.mark.parametrize("handle, size", [
    ("https://tfhub.dev/google/imagenet/efficientnet_v2_imagenet21k_ft1k_s/feature_vector/2", 384),
    ("https://www.kaggle.com/models/google/efficientnet-v2/TensorFlow2/imagenet21k-ft1k-b3-feature-vector/2", 300),
])
def test_other_efficientnet_v2_handles_know_their_size(probe_saved_model, monkeypatch, handle, size):
    import tensorflow_hub as hub
    real_load = hub.load
    monkeypatch.setattr(hub, "load", lambda h: real_load(str(probe_saved_model)))
    assert load_backbone(BackboneSpec(handle)).preprocessing.image_size == size


def test_download_failure_says_how_to_fetch_once(monkeypatch):
    import tensorflow_hub as hub

    def offline(handle):
        raise OSError("Temporary failure in name resolution")
    monkeypatch.setattr(hub, "load", offline)
    with pytest.raises(UserError) as err:
        load_backbone(BackboneSpec(DEFAULT_MODEL))
    message = str(err.value)
    assert "Temporary failure" in message and "hub.resolve" in message and "--model FOLDER" in message
    assert "\n" not in message


def test_local_saved_model_with_variable_size_needs_image_size(probe_saved_model):
    with pytest.raises(UserError, match="pass --image-size"):
        load_backbone(BackboneSpec(str(probe_saved_model)))
    backbone = load_backbone(BackboneSpec(str(probe_saved_model), image_size=32))
    assert backbone.spec["kind"] == "saved_model" and len(backbone.spec["sha256"]) == 64
    assert backbone.preprocessing.value_range == (0.0, 1.0)


def test_keras_file_cut_at_named_layer_grayscale(grayscale_h5_model):
    import keras
    backbone = load_backbone(BackboneSpec(str(grayscale_h5_model), layer="embedding", value_range=(-1.0, 1.0)))
    prep = backbone.preprocessing
    assert (prep.image_size, prep.color, prep.value_range) == (64, "grayscale", (-1.0, 1.0))
    assert backbone.feature_dim == 8 and backbone.spec["layer"] == "embedding"
    pixels = tf.constant(np.random.default_rng(0).integers(0, 256, (2, 64, 64, 1)), tf.uint8)
    images = tf.stack([preprocess(p, prep) for p in pixels])
    assert float(tf.reduce_min(images)) >= -1 and float(tf.reduce_max(images)) <= 1
    model = keras.models.load_model(grayscale_h5_model, compile=False)
    expected = keras.Model(model.inputs, model.get_layer("embedding").output)(images).numpy()
    np.testing.assert_allclose(backbone.extract(images).numpy(), expected, rtol=1e-6)


def test_keras_file_default_layer_is_the_one_before_the_classifier(grayscale_h5_model):
    backbone = load_backbone(BackboneSpec(str(grayscale_h5_model), value_range=(0.0, 1.0)))
    assert backbone.spec["layer"] == "embedding" and backbone.feature_dim == 8


def test_a_model_file_loaded_again_is_reused_until_its_bytes_change(grayscale_h5_model, tmp_path, caplog):
    """Same file, spec and device: the same weights and traced extractor, the record a copy of its own,
    the default layer's line logged on every load; another spec, or the file rewritten (same path),
    loads afresh."""
    import logging
    import shutil

    import keras
    path = tmp_path / "gray.h5"
    shutil.copy(grayscale_h5_model, path)
    spec = BackboneSpec(str(path), value_range=(0.0, 1.0))
    with caplog.at_level(logging.INFO, logger="embed.backbones"):
        first, again = load_backbone(spec), load_backbone(spec)
    assert again.extract_all is first.extract_all and again.module is first.module
    assert caplog.text.count("without --layer: features from embedding (the layer before the last)") == 2
    again.spec["layer"] = "changed by a caller"
    assert load_backbone(spec).spec["layer"] == "embedding"
    assert load_backbone(BackboneSpec(str(path), layer="conv", value_range=(0.0, 1.0))).extract_all is not first.extract_all
    model = keras.saving.load_model(path, compile=False)
    model.get_layer("embedding").set_weights([w + 1 for w in model.get_layer("embedding").get_weights()])
    model.save(path)
    rewritten = load_backbone(spec)
    assert rewritten.extract_all is not first.extract_all and rewritten.spec["sha256"] != first.spec["sha256"]
    images = tf.random.uniform([2, 64, 64, 1], seed=1)
    assert not np.allclose(rewritten.extract(images), first.extract(images))


def test_keras_file_4d_layer_is_average_pooled(grayscale_h5_model):
    backbone = load_backbone(BackboneSpec(str(grayscale_h5_model), layer="conv", value_range=(0.0, 1.0)))
    assert backbone.feature_dim == 4


def test_keras_file_needs_value_range(grayscale_h5_model):
    with pytest.raises(UserError, match="pass --value-range"):
        load_backbone(BackboneSpec(str(grayscale_h5_model)))


def test_keras_file_unknown_layer(grayscale_h5_model):
    with pytest.raises(UserError, match=r"--layer nope: no such layer .*embedding"):
        load_backbone(BackboneSpec(str(grayscale_h5_model), layer="nope", value_range=(0.0, 1.0)))


def test_lambda_layer_refused_in_safe_mode(tmp_path):
    import keras
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Lambda(lambda t: t * 2.0, name="double")(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(x))
    path = tmp_path / "lambda.keras"
    model.save(path)
    with pytest.raises(UserError, match="cannot load"):
        load_backbone(BackboneSpec(str(path), value_range=(0.0, 1.0)))
    assert load_backbone(BackboneSpec(str(path), value_range=(0.0, 1.0), trust_model=True)).feature_dim == 3


@pytest.mark.parametrize("kwargs, message", [
    ({"model": "keras:NoSuchNet"}, "unknown; supported"),
    ({"model": "model.onnx"}, "not a TF-Hub handle"),
    ({"model": "keras:EfficientNetV2B0", "weights": "/no/such/file.h5"}, "not 'imagenet', 'none' or an existing"),
    ({"model": DEFAULT_MODEL, "weights": "none"}, "--weights applies to keras"),
    ({"model": DEFAULT_MODEL, "layer": "x"}, "--layer applies to Keras model files"),
    ({"model": DEFAULT_MODEL, "mixed_precision": True}, "--mixed-precision applies to keras:<Name>"),
])
def test_bad_model_options(kwargs, message):
    with pytest.raises(UserError, match=message):
        load_backbone(BackboneSpec(**kwargs))


def test_color_mismatch_is_reported(grayscale_h5_model):
    with pytest.raises(UserError, match="does not accept 64x64x3"):
        load_backbone(BackboneSpec(str(grayscale_h5_model), color="rgb", value_range=(0.0, 1.0)))


def test_xla_gives_the_same_features(probe_saved_model):
    images = tf.random.uniform([2, 32, 32, 3], seed=2)
    plain = load_backbone(BackboneSpec(str(probe_saved_model), image_size=32)).extract(images).numpy()
    compiled = load_backbone(BackboneSpec(str(probe_saved_model), image_size=32, xla=True)).extract(images).numpy()
    np.testing.assert_allclose(plain, compiled, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("text, expected", [("0,1", (0.0, 1.0)), ("-1,1", (-1.0, 1.0)), ("0,255", (0.0, 255.0))])
def test_parse_value_range(text, expected):
    assert parse_value_range(text) == expected


@pytest.mark.parametrize("text", ["1", "a,b", "1,0", "0,1,2"])
def test_parse_value_range_errors(text):
    with pytest.raises(UserError, match="--value-range"):
        parse_value_range(text)


def test_keras_applications_table_names_exist():
    import keras
    for name in backbones.KERAS_APPLICATIONS:
        assert hasattr(keras.applications, name), name


def test_mixed_precision_keras_application_stays_close_and_restores_policy():
    import keras
    images = tf.random.uniform([2, 32, 32, 3], 0, 255, seed=3)
    keras.utils.set_random_seed(0)
    full = load_backbone(BackboneSpec("keras:MobileNetV3Small", weights="none", image_size=32))  # builds in a
    keras.utils.set_random_seed(0)  # third of EfficientNetV2B0's time; the policy path is the same for every keras: model
    mixed = load_backbone(BackboneSpec("keras:MobileNetV3Small", weights="none", image_size=32, mixed_precision=True))
    assert keras.mixed_precision.global_policy().name == "float32"
    assert mixed.spec["mixed_precision"] and not full.spec["mixed_precision"]
    a, b = full.extract(images).numpy(), mixed.extract(images).numpy()
    assert b.dtype == np.float32
    np.testing.assert_allclose(a, b, rtol=0.05, atol=0.05)


def test_a_fully_convolutional_classifier_gives_features_not_class_scores(face_cnns, sample_dir, tmp_path):
    """Without --layer, the shared gender CNN's features are add_4 (what feeds its 1x1 classifier
    convolution), not the 2 class scores; a cache of class scores refuses --head tail, naming the
    layer to embed with."""
    import json

    from click.testing import CliRunner

    import cli
    model = face_cnns / "gender_mini_XCEPTION.hdf5"
    common = ["--data-dir", str(sample_dir), "--model", str(model), "--value-range", "-1,1", "--batch-size", "8"]
    run = CliRunner().invoke(cli.main, ["embed", *common, "--out", str(tmp_path / "a.h5")])
    assert run.exit_code == 0, run.output
    assert "without --layer: features from add_4 (4x4x128, the layer feeding the classifier conv2d_7, which maps " \
           "its 128 channels to 2 class scores)" in run.output
    info = json.loads(CliRunner().invoke(cli.main, ["info", str(tmp_path / "a.h5"), "--json"]).output)
    assert info["shape"] == [40, 128] and info["backbone"]["layer"] == "add_4"
    scores = tmp_path / "scores.h5"  # what a cache embedded before this change held: the pooled class scores
    run = CliRunner().invoke(cli.main, ["embed", *common, "--out", str(scores), "--layer", "global_average_pooling2d_1",
                                        "--layers", "add_3:none"])
    assert run.exit_code == 0, run.output
    refused = CliRunner().invoke(cli.main, ["train-heads", str(scores), "--out", str(tmp_path / "r"), "--input", "add_3",
                                            "--head", "tail", "--epochs", "1"])
    assert refused.exit_code == 2 and "more than 8x narrower than add_3 (64 channels): class scores, not features" \
        in refused.output and "embed with --layer add_4 (4x4x128)" in refused.output, refused.output
    assert not (tmp_path / "r").exists()
