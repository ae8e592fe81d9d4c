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

What a client needs besides the graph is written into the SavedModel's `assets.extra/` (TensorFlow's
place for files the graph does not read; it travels with the folder), as CLIENT_FILE:
  {"format": "celeba-heads savedmodel", "version": 1, "signatures": {name: input}, **client_record(run)}
client_record: {"attributes": [...] (output order), "thresholds": {attribute: t},
  "inputs": [per backbone, in feature order: {"image_size", "channels", "color", "value_range",
             "resize", "antialias"}] (what from_pixels takes: resized to S x S, 0..255 mapped onto
             value_range),
  "alignment": the run's preprocessing["align"] (detector and its settings: min_face, min_score,
               thresholds, scale_factor; the face rule; the five-point template in the 178 x 218
               frame; the landmark fit: its name, "points" [M][5] (each fitted point a mix of the
               five landmarks, the same mix of the template its target) and "weights" [M]; the
               edge fill) or null,
  "run": {"path", "head", "kind"}, "backbones": the caches' backbone records}
"""

import json
from pathlib import Path

from cache.errors import UserError
from heads.run.rundir import Run
from heads.serve.predict import run_alignment, run_backbones, run_view_features

CLIENT_FILE = Path("assets.extra") / "celeba_heads.json"


def client_record(run):
    """What a client of an exported run needs besides the graph (module docstring)."""
    def described(prep):
        return {"image_size": prep["image_size"], "channels": 1 if prep["color"] == "grayscale" else 3,
                "color": prep["color"], "value_range": prep["value_range"], "resize": prep["resize"],
                "antialias": prep["antialias"]}
    return {"attributes": list(run.attributes), "thresholds": dict(zip(run.attributes, run.thresholds)),
            "inputs": [described(c["preprocessing"]) for c in run.caches], "alignment": run_alignment(run),
            "run": {"path": str(run.path), "head": run.head_name, "kind": run.kind},
            "backbones": [c.get("backbone") for c in run.caches]}


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
    inputs = {"from_bytes": "images string [B]: image files", "from_pixels": "pixels float32 [B, S, S, C]: "
              + ("aligned faces, " if aligned else "") + "preprocessed as inputs[0] says"}
    client = {"format": "celeba-heads savedmodel", "version": 1,
              "signatures": {name: inputs["from_pixels" if aligned or name == "from_pixels" else "from_bytes"]
                             for name in signatures}, **client_record(run)}
    (Path(out_dir) / CLIENT_FILE).parent.mkdir(parents=True, exist_ok=True)
    (Path(out_dir) / CLIENT_FILE).write_text(json.dumps(client, indent=2) + "\n")
    return out_dir
