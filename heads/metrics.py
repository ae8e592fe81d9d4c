"""The one table of metrics, their computation from `sklearn.metrics`, and threshold tuning on val.

METRICS lists every per-attribute metric of one split (the `M` of metrics.json), in order:
    {"accuracy", "balanced_accuracy", "f1", "roc_auc", "ece", "brier", "majority_accuracy", "threshold", "n"}
GROUP_METRICS the two summaries of the per-group section (`group_metrics`). Terminal tables,
TensorBoard, the HTML page, `evaluate` and `compare` all read these tables.
majority_accuracy is the accuracy of always predicting the train split's majority class. Labels
may be unknown (UNKNOWN_LABEL, from a label overlay): each attribute is scored on its labelled rows
only, and "n" counts them (an attribute with no labelled row on a split has n 0 and null metrics).
balanced_accuracy and roc_auc are null when the split holds only one class. ece and brier judge the
probabilities, not the decisions (lower is better): ece is the expected calibration error of the
positive class over CALIBRATION_BINS equal-width bins (`calibration_bins`, the binning of
`sklearn.calibration.calibration_curve`), brier `sklearn.metrics.brier_score_loss`.
"""

import importlib
import itertools
from dataclasses import dataclass

import numpy as np

from cache.layout import UNKNOWN_LABEL


def _sk():
    """sklearn.metrics, imported when a metric is first computed (the table itself is cheap to import)."""
    return importlib.import_module("sklearn.metrics")


@dataclass(frozen=True)
class Scored:
    """One attribute on one split, as the metric functions see it: y_true 0/1 int [n], probability
    [n], the decision threshold, predicted = probability >= threshold, the train split's majority
    class, and whether both classes occur."""
    y_true: np.ndarray
    probability: np.ndarray
    threshold: float
    train_majority: int

    @property
    def predicted(self):
        return (self.probability >= self.threshold).astype(int)

    @property
    def both_classes(self):
        return len(np.unique(self.y_true)) == 2


@dataclass(frozen=True)
class Metric:
    """name: the key in metrics.json; compute(Scored) -> the value (None where undefined); label,
    short: for pages and narrow tables; form: "percent" (a rate shown as %), "score" (0..1), or
    "value"; higher_is_better: True, False (ece, brier), or None for what is not a score (threshold,
    n); score: a quality of the head's decisions or probabilities (what TensorBoard plots); table:
    shown in the training commands' terminal table (the scores but brier, and the majority baseline)."""
    name: str
    compute: object
    label: str
    short: str
    form: str
    higher_is_better: object
    score: bool
    table: bool = True

    def format(self, value):
        if value is None:
            return "-"
        if self.form == "percent":
            return f"{100 * value:.1f}"
        if self.form == "score":
            return f"{value:.3f}"
        return f"{value:g}"


CALIBRATION_BINS = 15


def calibration_bins(y_true, probability, bins=CALIBRATION_BINS):
    """(rows, mean probability, positive rate) per equal-width bin of [0, 1], each float [bins] (rows
    int); an empty bin has nan means. Bin i holds edges[i] < p <= edges[i + 1] (the first from 0):
    the binning of sklearn.calibration.calibration_curve(strategy="uniform")."""
    y_true, probability = np.asarray(y_true, np.float64), np.asarray(probability, np.float64)
    ids = np.searchsorted(np.linspace(0.0, 1.0, bins + 1)[1:-1], probability)
    rows = np.bincount(ids, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (rows, np.bincount(ids, weights=probability, minlength=bins) / rows,
                np.bincount(ids, weights=y_true, minlength=bins) / rows)


def expected_calibration_error(y_true, probability, bins=CALIBRATION_BINS):
    """sum over bins of (rows / n) * |positive rate - mean probability|, in [0, 1]."""
    rows, mean_p, rate = calibration_bins(y_true, probability, bins)
    filled = rows > 0
    return float(np.sum(rows[filled] / rows.sum() * np.abs(rate[filled] - mean_p[filled])))


def _if_both_classes(function):
    return lambda s: float(function(s)) if s.both_classes else None


METRICS = (
    Metric("accuracy", lambda s: float(_sk().accuracy_score(s.y_true, s.predicted)),
           "accuracy", "acc", "percent", True, True),
    Metric("balanced_accuracy", _if_both_classes(lambda s: _sk().balanced_accuracy_score(s.y_true, s.predicted)),
           "balanced accuracy", "bal_acc", "percent", True, True),
    Metric("f1", lambda s: float(_sk().f1_score(s.y_true, s.predicted, zero_division=0)),
           "F1", "f1", "percent", True, True),
    Metric("roc_auc", _if_both_classes(lambda s: _sk().roc_auc_score(s.y_true, s.probability)),
           "ROC AUC", "auc", "score", True, True),
    Metric("ece", lambda s: expected_calibration_error(s.y_true, s.probability),
           f"expected calibration error ({CALIBRATION_BINS} bins)", "ece", "score", False, True),
    Metric("brier", lambda s: float(_sk().brier_score_loss(s.y_true, s.probability, pos_label=1)),
           "Brier score", "brier", "score", False, True, table=False),
    Metric("majority_accuracy", lambda s: float(_sk().accuracy_score(s.y_true, np.full_like(s.y_true, s.train_majority))),
           "majority-class accuracy", "majority", "percent", True, False),
    Metric("threshold", lambda s: float(s.threshold), "threshold", "thr", "value", None, False),
    Metric("n", lambda s: int(len(s.y_true)), "rows", "n", "value", None, False),
)
# computed by `group_metrics`, per target attribute and split
GROUP_METRICS = (
    Metric("worst_group_accuracy", None, "worst-group accuracy", "worst", "percent", True, True),
    Metric("mean_group_accuracy", None, "mean accuracy over groups", "mean_groups", "percent", True, True),
)
BY_NAME = {m.name: m for m in METRICS + GROUP_METRICS}
METRIC_NAMES = tuple(m.name for m in METRICS)
SCORES = tuple(m.name for m in METRICS if m.score)


def attribute_metrics(y_true, probability, threshold, train_majority):
    """Every metric of METRICS for one attribute: y_true 0/1 [n] (UNKNOWN_LABEL rows are left out),
    probability [n] in [0, 1], decision p >= threshold; train_majority: the train split's majority
    class (0 or 1)."""
    y_true, probability = np.asarray(y_true), np.asarray(probability)
    known = y_true != UNKNOWN_LABEL
    if not known.any():
        return {m.name: {"threshold": float(threshold), "n": 0}.get(m.name) for m in METRICS}
    scored = Scored(y_true[known].astype(int), probability[known], threshold, train_majority)
    return {m.name: m.compute(scored) for m in METRICS}


def majority_classes(train_labels):
    """The train split's majority class per attribute over its labelled rows, int [k] from labels
    0/1 [n, k] (UNKNOWN_LABEL left out; an attribute with none labelled: 0)."""
    labels = np.asarray(train_labels)
    known = labels != UNKNOWN_LABEL
    positives = np.where(known, labels, 0).sum(axis=0)
    return (positives >= 0.5 * np.maximum(known.sum(axis=0), 1)).astype(int) * (known.sum(axis=0) > 0)


def tune_threshold(y_true, probability):
    """The decision threshold that maximises accuracy on (validation) data, over its labelled rows;
    ties -> closest to 0.5 (no labelled row: 0.5)."""
    y_true, probability = np.asarray(y_true), np.asarray(probability, np.float64)
    known = y_true != UNKNOWN_LABEL
    y_true, probability = y_true[known].astype(int), probability[known]
    if not len(y_true):
        return 0.5
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
    y_true 0/1 [n], probability [n], group_labels 0/1 [n, g] for group_names; a row whose target or
    group attribute is unknown (UNKNOWN_LABEL) leaves the table.
    """
    y_true, group_labels = np.asarray(y_true), np.asarray(group_labels).reshape(len(y_true), -1)
    others = [j for j, name in enumerate(group_names) if name != target]
    known = (y_true != UNKNOWN_LABEL) & np.all(group_labels[:, others] != UNKNOWN_LABEL, axis=1)
    y_true, group_labels = y_true[known].astype(int), group_labels[known]
    predicted = (np.asarray(probability)[known] >= threshold).astype(int)
    columns = [(group_names[j], group_labels[:, j].astype(int)) for j in others]
    keys = [(target, y_true)] + columns
    groups = []
    for values in itertools.product((0, 1), repeat=len(keys)):
        member = np.all([column == v for (_, column), v in zip(keys, values)], axis=0)
        n = int(member.sum())
        entry = {name: v for (name, _), v in zip(keys, values)}
        entry.update(n=n, accuracy=float(_sk().accuracy_score(y_true[member], predicted[member])) if n else None,
                     positive_rate=float(predicted[member].mean()) if n else None)
        groups.append(entry)
    filled = [g["accuracy"] for g in groups if g["n"]]
    return {"groups": groups, "worst_group_accuracy": float(min(filled)) if filled else None,
            "mean_group_accuracy": float(np.mean(filled)) if filled else None}
