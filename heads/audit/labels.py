"""Likely label errors from out-of-fold probabilities, per attribute, with cleanlab.

Per attribute (a binary task), over its labelled rows (a label overlay may leave some unknown;
they are neither flagged nor counted): `cleanlab.filter.find_label_issues` (prune by noise rate) flags the
rows, `cleanlab.rank.get_label_quality_scores` (self-confidence: the out-of-fold probability of
the given label) ranks them, and 1 - trace of `cleanlab.count.estimate_joint` is cleanlab's
estimate of the share of rows whose given label is wrong.
"""

import numpy as np
import pandas as pd

from cache.layout import UNKNOWN_LABEL
from heads.metrics import attribute_metrics

ISSUE_COLUMNS = ("image_id", "split", "attribute", "given_label", "probability", "quality", "rank")


def _binary(p):
    p = np.clip(np.asarray(p, np.float64), 0.0, 1.0)
    return np.stack([1.0 - p, p], axis=1)


def label_issues(rows, probabilities):
    """(issues, summary). issues: DataFrame of ISSUE_COLUMNS, one row per flagged (row, attribute),
    by attribute then rank (1: the least likely given label); probability is the out-of-fold
    P(attribute = 1); quality in [0, 1]. summary: {attribute: {"rows", "positives", "flagged",
    "flagged_rate", "noise_rate", "flagged_by_split": {split: n}, "out_of_fold": the
    heads.metrics metrics of the out-of-fold probabilities at 0.5 against the given labels}}."""
    from cleanlab.count import estimate_joint
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    frames, summary = [], {}
    for j, name in enumerate(rows.attributes):
        known = np.flatnonzero(rows.labels[:, j] != UNKNOWN_LABEL)
        given, p = rows.labels[known, j].astype(int), probabilities[known, j]
        pred = _binary(p)
        flagged = find_label_issues(given, pred, filter_by="prune_by_noise_rate")
        quality = get_label_quality_scores(given, pred)
        joint = estimate_joint(given, pred)
        where = np.flatnonzero(flagged)
        where = where[np.argsort(quality[where], kind="stable")]
        splits = rows.splits[known]
        frames.append(pd.DataFrame({
            "image_id": [rows.image_ids[i] for i in known[where]], "split": splits[where], "attribute": name,
            "given_label": given[where], "probability": p[where].astype(float),
            "quality": quality[where], "rank": np.arange(1, len(where) + 1)}))
        summary[name] = {"rows": int(len(given)), "positives": int(given.sum()), "flagged": int(len(where)),
                         "flagged_rate": float(len(where) / len(given)), "noise_rate": float(1.0 - np.trace(joint)),
                         "flagged_by_split": {s: int((splits[where] == s).sum()) for s in ("train", "val", "test")},
                         "out_of_fold": attribute_metrics(given, p, 0.5, int(given.mean() >= 0.5))}
    issues = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=ISSUE_COLUMNS)
    return issues[list(ISSUE_COLUMNS)], summary
