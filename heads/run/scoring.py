"""Score a fitted head on a task's splits: thresholds chosen on val, then the metrics.json sections.

Thresholds are 0.5, or with tune_threshold the per-attribute value that maximises val accuracy:
they are fixed before a test row is read. `score` gives metrics.json's "attributes" and (with
groups) "groups" sections; `evaluate` re-scores a saved run with the same functions.
"""

import numpy as np

from cache.errors import UserError
from cache.layout import UNKNOWN_LABEL
from heads.kinds.base import option_name
from heads.metrics import attribute_metrics, group_metrics, majority_classes, tune_threshold

DIVERGING_SETTINGS = ("lr", "tail_lr", "l2", "C")  # the settings named when a fit's probabilities are not finite


def confident_errors(labels, probabilities, threshold, n):
    """(rows of every error, the n most confident of them) for one attribute: labels uint8 [m]
    (UNKNOWN_LABEL rows are never errors), probabilities [m]; an error's confidence is
    |p - threshold|, ties in row order."""
    wrong = np.flatnonzero(((probabilities >= threshold) != (labels == 1)) & (labels != UNKNOWN_LABEL))
    return wrong, wrong[np.argsort(-np.abs(probabilities[wrong] - threshold), kind="stable")][:n]


def choose_thresholds(val_labels, val_probabilities, tune):
    """0.5 per attribute, or with tune the value maximising val accuracy (test is never read)."""
    if not tune:
        return [0.5] * val_labels.shape[1]
    return [tune_threshold(val_labels[:, j], val_probabilities[:, j]) for j in range(val_labels.shape[1])]


def split_metrics(task, probabilities, thresholds, majority=None):
    """metrics.json's "attributes" part from {split: probabilities [n, k]}: {A: {split: M}}.
    majority: the train split's majority class per attribute (default: from task.train's labels;
    `evaluate` gives the one the run recorded, which --exclude may have changed)."""
    majority = majority_classes(task.train.labels) if majority is None else majority
    return {name: {split: attribute_metrics(task.split(split).labels[:, j], p[:, j], thresholds[j], majority[j])
                   for split, p in probabilities.items()}
            for j, name in enumerate(task.attributes)}


def split_group_metrics(task, probabilities, thresholds):
    """metrics.json's "groups" section (None without task.groups): {"by": [group attributes],
    "attributes": {A: {split: heads.metrics.group_metrics(...)}}} from {split: probabilities [n, k]}."""
    if not task.groups:
        return None
    return {"by": list(task.groups),
            "attributes": {name: {split: group_metrics(name, task.split(split).labels[:, j], p[:, j], thresholds[j],
                                                       task.groups, task.group_labels[split])
                                  for split, p in probabilities.items()}
                           for j, name in enumerate(task.attributes)}}


def score(task, head, transform, val_features=None):
    """(thresholds, metrics, probabilities) of a fitted head on val and test, where metrics =
    {"attributes": ... [, "groups": ...]} and probabilities = {"val", "test": float [n, k]}. val_features: the val split already transformed, if the caller has it; the
    head's val_proba_ (its val probabilities from fitting) is used when it has them."""
    val_p = head.val_proba_
    if val_p is None:
        val_p = head.predict_proba(transform.transform(task.val.features) if val_features is None else val_features)
    thresholds = choose_thresholds(task.val.labels, val_p, task.spec.tune_threshold)
    probabilities = {"val": val_p, "test": head.predict_proba(transform.transform(task.test.features))}
    for split, p in probabilities.items():
        if not np.isfinite(p).all():
            settings = {k: v for k, v in {**head.get_params(), **(head.selection_ or {})}.items()
                        if k in DIVERGING_SETTINGS and isinstance(v, (int, float))
                        and (k != "tail_lr" or getattr(head, "head", None) == "tail")}
            raise UserError(f"{head.kind}: its {split} probabilities hold NaN or inf, so the fit diverged ("
                            + ", ".join(f"{option_name(k)} {v:g}" for k, v in settings.items())
                            + "): lower the rate or penalty, or use --features standardize")
    metrics = {"attributes": split_metrics(task, probabilities, thresholds)}
    groups = split_group_metrics(task, probabilities, thresholds)
    if groups:
        metrics["groups"] = groups
    return thresholds, metrics, probabilities
