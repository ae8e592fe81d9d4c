"""`predict` images with a run (backbone from the run's cache record + the trained head), and
`export` a Keras-head run as one TensorFlow SavedModel for serving.

Exported signatures (both return {attribute: probability float32 [B]}):
  serving_default / from_bytes: images  string [B]  raw JPEG or PNG file contents
  from_pixels:                  pixels  float32 [B, S, S, C], already preprocessed (value range)
"""

from pathlib import Path

import numpy as np

from cache.errors import UserError
from heads import report


def _run_backbone(config, trust_model):
    from embed.backbones import load_recorded_backbone
    backbone = load_recorded_backbone(config["cache"]["backbone"], config["cache"]["preprocessing"],
                                      trust_model=trust_model)
    if backbone.feature_dim != config["cache"]["feature_dim"]:
        raise UserError(f"backbone gives {backbone.feature_dim}-d features, the run was trained on "
                        f"{config['cache']['feature_dim']}-d")
    return backbone


def predict_images(run_dir, images, *, batch_size=32, trust_model=False):
    """[{"image", "ok", "error", "attributes": {A: {"probability", "decision"}}}] per image, in order.
    An image that cannot be read is reported with its error; the others are still predicted."""
    from embed.pipeline import image_batches
    from heads.evaluate import run_probabilities

    config = report.read_json(Path(run_dir) / "config.json")
    backbone = _run_backbone(config, trust_model)
    attributes, thresholds = config["attributes"], config["thresholds"]
    results = []
    for batch in image_batches([str(i) for i in images], np.arange(len(images)), backbone.preprocessing, batch_size):
        features = backbone.extract(batch["image"]).numpy()
        errors = [e.decode("utf-8", "replace") for e in batch["error"].numpy()]
        probabilities = run_probabilities(run_dir, config, features)
        for index, error, p in zip(batch["index"].numpy(), errors, probabilities):
            entry = {"image": str(images[index]), "ok": not error, "error": error or None, "attributes": None}
            if not error:
                entry["attributes"] = {a: {"probability": float(p[j]), "decision": int(p[j] >= thresholds[a])}
                                       for j, a in enumerate(attributes)}
            results.append(entry)
    return results


def export_run(run_dir, out_dir, *, trust_model=False):
    """Write a SavedModel mapping image bytes (or preprocessed pixels) to attribute probabilities."""
    import keras
    import tensorflow as tf
    from embed.pipeline import preprocess
    from heads.train import MODEL_FILE

    config = report.read_json(Path(run_dir) / "config.json")
    if config["kind"] != "keras_head":
        raise UserError(f"{run_dir}: export supports Keras-head runs; this is a {config['kind']} baseline "
                        "(scikit-learn estimators, not a TensorFlow graph)")
    backbone = _run_backbone(config, trust_model)
    head = keras.saving.load_model(Path(run_dir) / MODEL_FILE, compile=False)
    prep, attributes = backbone.preprocessing, config["attributes"]
    size, channels = prep.image_size, prep.channels

    class AttributeModel(tf.Module):
        def __init__(self):
            super().__init__(name="celeba_heads")
            self.backbone = backbone.module
            self.head = head
            self.attributes = tf.constant(attributes)
            self.thresholds = tf.constant([config["thresholds"][a] for a in attributes], tf.float32)

        @tf.function(input_signature=[tf.TensorSpec([None, size, size, channels], tf.float32, name="pixels")])
        def from_pixels(self, pixels):
            out = self.head(backbone.extract(pixels), training=False)
            return {a: out[a][:, 0] for a in attributes}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="images")])
        def from_bytes(self, images):
            def one(data):
                image = tf.io.decode_image(data, channels=channels, expand_animations=False)
                image.set_shape([None, None, channels])
                return preprocess(image, prep)
            pixels = tf.map_fn(one, images, fn_output_signature=tf.TensorSpec([size, size, channels], tf.float32))
            return self.from_pixels(pixels)

    module = AttributeModel()
    tf.saved_model.save(module, str(out_dir), signatures={"serving_default": module.from_bytes,
                                                          "from_bytes": module.from_bytes,
                                                          "from_pixels": module.from_pixels})
    return out_dir
