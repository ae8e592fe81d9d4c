"""Out-of-fold probabilities: K-fold cross-fitting of a head kind, so no row is scored by a model
that saw its label.

The audited rows are split into K folds, stratified on the attribute whose rarer class is rarest
(so its few rows spread over the folds). For each fold, a fresh head of the kind is fitted on the
other folds: the feature transform is fitted on them, and a share of them (inner_val, seeded) is
held back as the head's val data (for --epochs auto, or a kind that chooses a setting on val). The
held-out fold's labels are never read until its rows are scored.
"""

import logging
from dataclasses import dataclass

import numpy as np

from cache.errors import UserError
from cache.reader import aligned_empty
from heads.defaults import AUDIT
from heads.kinds import head_class
from heads.kinds.base import Data
from heads.run.transforms import Transform

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Rows:
    """The audited rows: features [n, D], labels uint8 0/1 [n, k] for attributes, image_ids and
    split names ("train", "val", "test") per row."""
    features: np.ndarray
    labels: np.ndarray
    attributes: tuple
    image_ids: list
    splits: np.ndarray

    def __len__(self):
        return len(self.labels)


def check_folds(rows, folds):
    """Refuse an attribute with fewer rows of one class than folds (one line naming it)."""
    for j, name in enumerate(rows.attributes):
        counts = np.bincount(rows.labels[:, j].astype(int), minlength=2)
        if counts.min() < folds:
            rare = int(np.argmin(counts))
            raise UserError(f"attribute {name} has {counts[rare]} row(s) of class {rare} in the audited splits; "
                            f"{folds}-fold cross-fitting needs at least {folds} (use fewer --folds, or leave {name} "
                            "out of --attrs)")


def fold_of(rows, folds, seed):
    """int [n]: each row's fold, stratified on the attribute whose rarer class is rarest."""
    from sklearn.model_selection import StratifiedKFold

    rarest = int(np.argmin(np.minimum(rows.labels.sum(axis=0), len(rows) - rows.labels.sum(axis=0))))
    assignment = np.empty(len(rows), np.int64)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for k, (_, held) in enumerate(splitter.split(np.zeros(len(rows)), rows.labels[:, rarest])):
        assignment[held] = k
    return assignment


def out_of_fold(rows, kind, settings, folds, features="raw", inner_val=AUDIT["inner_val"], seed=0):
    """(probabilities float32 [n, k], fold int [n]): each row scored by the head fitted without its
    fold. kind, settings: a registered head kind and its settings; features: the transform spec
    (fitted per fold on the fold's training rows)."""
    check_folds(rows, folds)
    fold = fold_of(rows, folds, seed)
    rng = np.random.default_rng(seed)
    probabilities = np.zeros(rows.labels.shape, np.float32)
    cls = head_class(kind)
    # One buffer for every fold's training rows, 64-byte aligned so the Keras trainer views it
    # without a copy: the folds hold the rows, this buffer and one fold's val and held-out rows.
    # (np.take buffers its output unless mode is clip or wrap; the indices are in range.)
    most = len(rows) - np.bincount(fold).min()
    buffer = aligned_empty((int(np.ceil(most * (1 - inner_val))) + 1, *rows.features.shape[1:]), rows.features.dtype)
    for k in range(folds):
        held, fitted = np.flatnonzero(fold == k), np.flatnonzero(fold != k)
        inner = np.zeros(len(fitted), bool)
        inner[rng.choice(len(fitted), max(1, int(round(inner_val * len(fitted)))), replace=False)] = True
        train_rows, val_rows = fitted[~inner], fitted[inner]
        for j, name in enumerate(rows.attributes):
            if rows.labels[train_rows, j].min() == rows.labels[train_rows, j].max():
                raise UserError(f"attribute {name}: fold {k + 1}'s training rows hold one class only; use fewer "
                                "--folds or leave it out of --attrs")
        train_features = np.take(rows.features, train_rows, axis=0, out=buffer[:len(train_rows)], mode="clip")
        transform = Transform(features).fit(train_features)
        head = cls.from_settings(dict(settings))
        head.fit(Data(transform.transform(train_features), rows.labels[train_rows], rows.attributes),
                 Data(transform.transform(rows.features[val_rows]), rows.labels[val_rows], rows.attributes))
        probabilities[held] = head.predict_proba(transform.transform(rows.features[held]))
        log.info("fold %d of %d: fitted on %d rows (%d held back as val), scored %d", k + 1, folds, len(train_rows),
                 len(val_rows), len(held))
    return probabilities, fold
