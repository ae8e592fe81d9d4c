"""Per-attribute metrics from `sklearn.metrics`, and threshold tuning on the validation split.

The metrics record for one attribute on one split (the `M` of metrics.json):
    {"accuracy", "balanced_accuracy", "f1", "roc_auc", "majority_accuracy", "threshold", "n"}
majority_accuracy is the accuracy of always predicting the train split's majority class.
roc_auc is null when the split holds only one class.
"""

import itertools

import numpy as np
from sklearn import metrics as skm

METRIC_NAMES = ("accuracy", "balanced_accuracy", "f1", "roc_auc", "majority_accuracy", "threshold", "n")


def attribute_metrics(y_true, probability, threshold, train_majority):
    """Metrics for one attribute: y_true 0/1 [n], probability [n] in [0, 1], decision p >= threshold."""
    y_true = np.asarray(y_true).astype(int)
    predicted = (np.asarray(probability) >= threshold).astype(int)
    both_classes = len(np.unique(y_true)) == 2
    return {
        "accuracy": float(skm.accuracy_score(y_true, predicted)),
        "balanced_accuracy": float(skm.balanced_accuracy_score(y_true, predicted)) if both_classes else None,
        "f1": float(skm.f1_score(y_true, predicted, zero_division=0)),
        "roc_auc": float(skm.roc_auc_score(y_true, probability)) if both_classes else None,
        "majority_accuracy": float(skm.accuracy_score(y_true, np.full_like(y_true, train_majority))),
        "threshold": float(threshold),
        "n": int(len(y_true)),
    }


def tune_threshold(y_true, probability):
    """The decision threshold that maximises accuracy on (validation) data; ties -> closest to 0.5."""
    y_true = np.asarray(y_true).astype(int)
    probability = np.asarray(probability, np.float64)
    candidates = np.unique(np.concatenate([probability, [0.5]]))
    order = np.argsort(probability)
    p_sorted, y_sorted = probability[order], y_true[order]
    # predicting positive for p >= t: correct = positives at or above t + negatives below t
    positives_below = np.concatenate([[0], np.cumsum(y_sorted)])
    below = np.searchsorted(p_sorted, candidates, side="left")
    correct = (y_true.sum() - positives_below[below]) + (below - positives_below[below])
    best = np.flatnonzero(correct == correct.max())
    return float(candidates[best[np.argmin(np.abs(candidates[best] - 0.5))]])


def group_metrics(target, y_true, probability, threshold, group_names, group_labels):
    """Per-group accuracy for one target attribute on one split.

    Groups are every combination of the target's value and the group attributes' values (a group
    attribute equal to the target is skipped), in order (0, 0), (0, 1), ... Returns
    {"groups": [{<target>: v, <group attr>: v, ..., "n", "accuracy", "positive_rate"}],
     "worst_group_accuracy", "mean_group_accuracy"}; an empty group has n 0 and null metrics and
    is left out of the worst and the mean (null when every group is empty).
    y_true 0/1 [n], probability [n], group_labels 0/1 [n, g] for group_names.
    """
    y_true = np.asarray(y_true).astype(int)
    predicted = (np.asarray(probability) >= threshold).astype(int)
    columns = [(name, np.asarray(group_labels)[:, j].astype(int)) for j, name in enumerate(group_names)
               if name != target]
    keys = [(target, y_true)] + columns
    groups = []
    for values in itertools.product((0, 1), repeat=len(keys)):
        member = np.all([column == v for (_, column), v in zip(keys, values)], axis=0)
        n = int(member.sum())
        entry = {name: v for (name, _), v in zip(keys, values)}
        entry.update(n=n, accuracy=float(skm.accuracy_score(y_true[member], predicted[member])) if n else None,
                     positive_rate=float(predicted[member].mean()) if n else None)
        groups.append(entry)
    filled = [g["accuracy"] for g in groups if g["n"]]
    return {"groups": groups, "worst_group_accuracy": float(min(filled)) if filled else None,
            "mean_group_accuracy": float(np.mean(filled)) if filled else None}
