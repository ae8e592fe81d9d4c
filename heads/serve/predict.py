"""`predict` images with a run: every backbone its caches record, in the run's views, then the run's
transform and head. The backbones and views are rebuilt here for `export` too."""

import numpy as np

from cache.errors import UserError
from heads.run.rundir import Run
from heads.run.task import needs_flip, view_features


def run_backbones(run, trust_model):
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


def run_view_features(run, backbone, images):
    """The backbone's features of a batch in the view the run was trained and evaluated on: its
    features, or the stored layers the run trained on (its inputs), flattened side by side as
    `cache.reader.load_split` reads them."""
    import tensorflow as tf

    from embed.pipeline import mirrored

    def features(batch):
        if not run.inputs:
            return backbone.extract(batch)
        _, layers = backbone.extract_all(batch)
        by_name = {layer["name"]: x for layer, x in zip(backbone.layers, layers)}
        if len(run.inputs) == 1:
            return by_name[run.inputs[0]]  # a vector, or a spatial map as stored
        return tf.concat([by_name[name] for name in run.inputs], axis=1)  # vectors side by side

    flip = features(mirrored(images)) if needs_flip(run.views, run.eval_view) else None
    return view_features(run.views, run.eval_view, features(images), flip, concat=lambda parts: tf.concat(parts, axis=1))


def predict_images(run_dir, images, *, batch_size=32, trust_model=False):
    """[{"image", "ok", "error", "attributes": {A: {"probability", "decision"}}}] per image, in order.
    An image that cannot be read is reported with its error; the others are still predicted."""
    from embed.pipeline import ImageBatches

    run = Run(run_dir)
    transform, head = run.load(trust_model)
    backbones = run_backbones(run, trust_model)
    paths = [str(i) for i in images]
    features, errors = [], [""] * len(paths)
    for backbone in backbones:  # a fused run decodes each image once per backbone's preprocessing
        blocks = []
        for batch in ImageBatches(paths, np.arange(len(paths)), backbone.preprocessing, batch_size):
            blocks.append(run_view_features(run, backbone, batch["image"]).numpy())
            for index, error in zip(batch["index"].numpy(), batch["error"].numpy()):
                errors[index] = errors[index] or error.decode("utf-8", "replace")
        features.append(np.concatenate(blocks))
    probabilities = head.predict_proba(transform.transform(np.concatenate(features, axis=1)))
    results = []
    for path, error, p in zip(paths, errors, probabilities):
        entry = {"image": path, "ok": not error, "error": error or None, "attributes": None}
        if not error:
            entry["attributes"] = {a: {"probability": float(p[j]), "decision": int(p[j] >= t)}
                                   for j, (a, t) in enumerate(zip(run.attributes, run.thresholds))}
        results.append(entry)
    return results
