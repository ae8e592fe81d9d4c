"""`export` a run whose head is a TensorFlow graph as one SavedModel for serving: the backbone(s) its
caches record, its views, transform and head, image bytes in, probabilities out.

Exported signatures (each returns {attribute: probability float32 [B], attribute_decision: int32 [B],
1 where the probability reaches the run's threshold for it: 0.5, or the one tuned on val}):
  serving_default / from_bytes: images  string [B]  raw JPEG or PNG file contents
  from_pixels:                  pixels  float32 [B, S, S, C], already preprocessed (value range);
                                runs on one backbone only (not for fused runs)

A run on a cache of aligned faces (`embed --align`) exports from_pixels only, as serving_default:
the face detector (MTCNN's proposal and NMS stages are NumPy code) does not run inside a graph, so
a client finds and aligns each face (`embed.faces`: a detector, `align`, `aligned_pixels`) and
sends the aligned, preprocessed pixels; `predict --faces` does exactly that.
"""

from cache.errors import UserError
from heads.run.rundir import Run
from heads.serve.predict import run_backbones, run_view_features


def export_run(run_dir, out_dir, *, trust_model=False):
    """Write a SavedModel mapping image bytes (or preprocessed pixels) to attribute probabilities."""
    import tensorflow as tf

    from embed.pipeline import decode_any, preprocess

    run = Run(run_dir)
    transform, head = run.load(trust_model)
    model = head.export_model()
    backbones = run_backbones(run, trust_model)
    attributes = run.attributes

    def probabilities(features):
        out = model(transform.transform_tf(tf.concat(features, axis=1)), training=False)
        result = {a: tf.reshape(out[a], [-1]) for a in attributes}
        result.update({f"{a}_decision": tf.cast(result[a] >= threshold, tf.int32)
                       for a, threshold in zip(attributes, run.thresholds)})
        return result

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
                    image = decode_any(data, prep.channels)
                    image.set_shape([None, None, prep.channels])
                    return preprocess(image, prep)
                spec = tf.TensorSpec([prep.image_size, prep.image_size, prep.channels], tf.float32)
                features.append(run_view_features(run, backbone, tf.map_fn(one, images, fn_output_signature=spec)))
            return probabilities(features)

    module = AttributeModel()
    aligned = bool(backbones[0].preprocessing.align)
    if aligned and len(backbones) > 1:
        raise UserError("export: a fused run on caches of aligned faces has no signature to serve (from_pixels "
                        "takes one backbone's pixels, and faces cannot be found inside the graph)")
    signatures = {} if aligned else {"serving_default": module.from_bytes, "from_bytes": module.from_bytes}
    if len(backbones) == 1:
        prep = backbones[0].preprocessing
        module.from_pixels = tf.function(
            lambda pixels: probabilities([run_view_features(run, backbones[0], pixels)]),
            input_signature=[tf.TensorSpec([None, prep.image_size, prep.image_size, prep.channels], tf.float32,
                                           name="pixels")])
        signatures["from_pixels"] = module.from_pixels
        if aligned:
            signatures["serving_default"] = module.from_pixels
    tf.saved_model.save(module, str(out_dir), signatures=signatures)
    return out_dir
