"""Per-attribute metrics from `sklearn.metrics`, and threshold tuning on the validation split.

The metrics record for one attribute on one split (the `M` of metrics.json):
    {"accuracy", "balanced_accuracy", "f1", "roc_auc", "majority_accuracy", "threshold", "n"}
majority_accuracy is the accuracy of always predicting the train split's majority class.
roc_auc is null when the split holds only one class.
"""

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
