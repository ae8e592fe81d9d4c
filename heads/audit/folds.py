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

from cache.layout import UNKNOWN_LABEL

from cache.errors import UserError
from cache.units import counted
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
        counts = np.bincount(rows.labels[:, j].astype(int), minlength=UNKNOWN_LABEL + 1)[:2]  # labelled rows
        if counts.min() < folds:
            rare = int(np.argmin(counts))
            raise UserError(f"attribute {name} has {counted(int(counts[rare]), 'row')} of class {rare} in the audited splits; "
                            f"{folds}-fold cross-fitting needs at least {folds} (use fewer --folds, or leave {name} "
                            "out of --attrs)")


def fold_of(rows, folds, seed):
    """int [n]: each row's fold, stratified on the attribute whose rarer class is rarest (an
    unknown label is a third stratum, so each attribute's labelled rows spread over the folds too)."""
    from sklearn.model_selection import StratifiedKFold

    positives, negatives = (rows.labels == 1).sum(axis=0), (rows.labels == 0).sum(axis=0)
    rarest = int(np.argmin(np.minimum(positives, negatives)))
    assignment = np.empty(len(rows), np.int64)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for k, (_, held) in enumerate(splitter.split(np.zeros(len(rows)), rows.labels[:, rarest])):
        assignment[held] = k
    return assignment


class _Arrangement:
    """Rows of `features` rearranged in place by swapping whole rows, so that any split of them into
    train | val | held-out is three contiguous views (no copy of the rows: the Keras trainer views a
    64-byte-aligned prefix through DLPack). position[p] is the original index of the row now at p;
    restore() undoes every swap, leaving `features` as it was."""

    def __init__(self, features):
        self.features = features
        self.position = np.arange(len(features))
        self.swaps = []

    def _swap(self, a, b):
        for start in range(0, len(a), SWAP_BLOCK):
            i, j = a[start:start + SWAP_BLOCK], b[start:start + SWAP_BLOCK]
            self.features[i], self.features[j] = self.features[j], self.features[i]
            self.position[i], self.position[j] = self.position[j], self.position[i]
        self.swaps.append((a, b))

    def to_end(self, chosen, within=0):
        """Move the rows whose original index is in `chosen` (bool [n]) among positions within..n to
        the end of the array."""
        n = len(self.position)
        selected = chosen[self.position]
        count = int(selected[within:].sum())
        front = np.flatnonzero(selected[within:n - count]) + within
        back = np.flatnonzero(~selected[n - count:]) + (n - count)
        self._swap(front, back)

    def restore(self):
        for a, b in reversed(self.swaps):
            for start in range(0, len(a), SWAP_BLOCK):
                i, j = a[start:start + SWAP_BLOCK], b[start:start + SWAP_BLOCK]
                self.features[i], self.features[j] = self.features[j], self.features[i]
                self.position[i], self.position[j] = self.position[j], self.position[i]
        self.swaps = []


SWAP_BLOCK = 8192  # rows swapped at a time: the swap's temporary copies stay small


def out_of_fold(rows, kind, settings, folds, features="raw", inner_val=AUDIT["inner_val"], seed=0):
    """(probabilities float32 [n, k], fold int [n]): each row scored by the head fitted without its
    fold. kind, settings: a registered head kind and its settings; features: the transform spec
    (fitted per fold on the fold's training rows). While it runs, rows.features is rearranged in
    place (`_Arrangement`: each fold's training, val and held-out rows are views, not copies); it
    is as it was when this returns, or raises."""
    check_folds(rows, folds)
    fold = fold_of(rows, folds, seed)
    rng = np.random.default_rng(seed)
    probabilities = np.zeros(rows.labels.shape, np.float32)
    cls = head_class(kind)
    n = len(rows)
    arranged = _Arrangement(rows.features)
    try:
        for k in range(folds):
            fitted = np.flatnonzero(fold != k)
            inner = np.zeros(n, bool)
            inner[rng.choice(fitted, max(1, int(round(inner_val * len(fitted)))), replace=False)] = True
            held = fold == k
            arranged.to_end(held | inner)  # [train | val, held]
            arranged.to_end(held, within=n - int((held | inner).sum()))  # [train | val | held]
            n_train, n_held = n - int((held | inner).sum()), int(held.sum())
            train_rows, val_rows = arranged.position[:n_train], arranged.position[n_train:n - n_held]
            held_rows = arranged.position[n - n_held:]
            for j, name in enumerate(rows.attributes):
                fitted_labels = rows.labels[train_rows, j]
                fitted_labels = fitted_labels[fitted_labels != UNKNOWN_LABEL]
                if not len(fitted_labels) or fitted_labels.min() == fitted_labels.max():
                    raise UserError(f"attribute {name}: fold {k + 1}'s training rows hold one class only; use "
                                    "fewer --folds or leave it out of --attrs")
            train_features = rows.features[:n_train]
            transform = Transform(features).fit(train_features)
            head = cls.from_settings(dict(settings))
            head.fit(Data(transform.transform(train_features), rows.labels[train_rows], rows.attributes),
                     Data(transform.transform(rows.features[n_train:n - n_held]), rows.labels[val_rows],
                          rows.attributes))
            probabilities[held_rows] = head.predict_proba(transform.transform(rows.features[n - n_held:]))
            log.info("fold %d of %d: fitted on %d rows (%d held back as val), scored %d", k + 1, folds, n_train,
                     len(val_rows), n_held)
    finally:
        arranged.restore()
    return probabilities, fold
