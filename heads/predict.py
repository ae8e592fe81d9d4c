"""`predict` images with a run (every backbone its caches record, in the run's views, + the run's
transform and head), and `export` a run whose head is a TensorFlow graph as one SavedModel for serving.

Exported signatures (both return {attribute: probability float32 [B]}):
  serving_default / from_bytes: images  string [B]  raw JPEG or PNG file contents
  from_pixels:                  pixels  float32 [B, S, S, C], already preprocessed (value range);
                                runs on one backbone only (not for fused runs)
"""

import numpy as np

from cache.errors import UserError
from heads.data import needs_flip, view_features
from heads.rundir import Run


def _run_backbones(run, trust_model):
    """One backbone per cache the run was trained on, each checked against its feature width."""
    from embed.backbones import load_recorded_backbone
    backbones = []
    for record in run.caches:
        backbone = load_recorded_backbone(record["backbone"], record["preprocessing"], trust_model=trust_model)
        if backbone.feature_dim != record["feature_dim"]:
            raise UserError(f"backbone {record['backbone'].get('model')} gives {backbone.feature_dim}-d features, "
                            f"the run was trained on {record['feature_dim']}-d")
        backbones.append(backbone)
    return backbones


def _view_features(run, backbone, images):
    """The backbone's features of a batch in the view the run was trained and evaluated on."""
    import tensorflow as tf

    from embed.pipeline import mirrored
    flip = backbone.extract(mirrored(images)) if needs_flip(run.views, run.eval_view) else None
    return view_features(run.views, run.eval_view, backbone.extract(images), flip,
                         concat=lambda parts: tf.concat(parts, axis=1))


def predict_images(run_dir, images, *, batch_size=32, trust_model=False):
    """[{"image", "ok", "error", "attributes": {A: {"probability", "decision"}}}] per image, in order.
    An image that cannot be read is reported with its error; the others are still predicted."""
    from embed.pipeline import ImageBatches

    run = Run(run_dir)
    transform, head = run.load(trust_model)
    backbones = _run_backbones(run, trust_model)
    paths = [str(i) for i in images]
    features, errors = [], [""] * len(paths)
    for backbone in backbones:  # a fused run decodes each image once per backbone's preprocessing
        blocks = []
        for batch in ImageBatches(paths, np.arange(len(paths)), backbone.preprocessing, batch_size):
            blocks.append(_view_features(run, backbone, batch["image"]).numpy())
            for index, error in zip(batch["index"].numpy(), batch["error"].numpy()):
                errors[index] = errors[index] or error.decode("utf-8", "replace")
        features.append(np.concatenate(blocks) if blocks else np.zeros((0, backbone.feature_dim), np.float32))
    probabilities = head.predict_proba(transform.transform(np.concatenate(features, axis=1)))
    results = []
    for path, error, p in zip(paths, errors, probabilities):
        entry = {"image": path, "ok": not error, "error": error or None, "attributes": None}
        if not error:
            entry["attributes"] = {a: {"probability": float(p[j]), "decision": int(p[j] >= t)}
                                   for j, (a, t) in enumerate(zip(run.attributes, run.thresholds))}
        results.append(entry)
    return results


def export_run(run_dir, out_dir, *, trust_model=False):
    """Write a SavedModel mapping image bytes (or preprocessed pixels) to attribute probabilities."""
    import tensorflow as tf
    from embed.pipeline import preprocess

    run = Run(run_dir)
    transform, head = run.load(trust_model)
    model = head.export_model()
    backbones = _run_backbones(run, trust_model)
    attributes = run.attributes

    def probabilities(features):
        out = model(transform.transform_tf(tf.concat(features, axis=1)), training=False)
        return {a: tf.reshape(out[a], [-1]) for a in attributes}

    class AttributeModel(tf.Module):
        def __init__(self):
            super().__init__(name="celeba_heads")
            self.backbones = [b.module for b in backbones]
            self.head = model
            self.attributes = tf.constant(attributes)
            self.thresholds = tf.constant(run.thresholds, tf.float32)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="images")])
        def from_bytes(self, images):
            features = []
            for backbone in backbones:
                prep = backbone.preprocessing

                def one(data, prep=prep):
                    image = tf.io.decode_image(data, channels=prep.channels, expand_animations=False)
                    image.set_shape([None, None, prep.channels])
                    return preprocess(image, prep)
                spec = tf.TensorSpec([prep.image_size, prep.image_size, prep.channels], tf.float32)
                features.append(_view_features(run, backbone, tf.map_fn(one, images, fn_output_signature=spec)))
            return probabilities(features)

    module = AttributeModel()
    signatures = {"serving_default": module.from_bytes, "from_bytes": module.from_bytes}
    if len(backbones) == 1:
        prep = backbones[0].preprocessing
        module.from_pixels = tf.function(
            lambda pixels: probabilities([_view_features(run, backbones[0], pixels)]),
            input_signature=[tf.TensorSpec([None, prep.image_size, prep.image_size, prep.channels], tf.float32,
                                           name="pixels")])
        signatures["from_pixels"] = module.from_pixels
    tf.saved_model.save(module, str(out_dir), signatures=signatures)
    return out_dir
