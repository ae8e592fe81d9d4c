"""Deep Feature Reweighting (Kirichenko, Izmailov & Wilson, 2022) as a head kind: retrain only a
logistic regression on cached features, on group-balanced data, for each target attribute.

Groups are every combination of the target's value and the group attributes' values (`--groups`).
For one target:
  1. C is chosen by worst-group accuracy: val is split in two seeded halves; for each C of the
     grid, an L1 logistic regression (liblinear, as the paper's code) is fitted on a group-balanced
     subset (every group downsampled to the smallest) of the fitting data (the first half of val
     for dfr_on="val", train for "train") and scored on the second half of val (worst over the
     groups it has rows of).
  2. With that C, `refits` fresh group-balanced subsets of the fitting data (all of val, or train)
     are fitted and their coefficients averaged: 20 on val and 10 on train, as in the paper.
Features are standardized with the mean and std of the fitting data. The run stores the scaler and
the averaged coefficients (dfr.npz); no pickle.
"""

from pathlib import Path

import numpy as np

from cache.errors import UserError
from heads.registry import Head, register

DFR_FILE = "dfr.npz"
C_GRID = (1.0, 0.7, 0.3, 0.1, 0.07, 0.03, 0.01)  # the paper's grid
REFITS = {"val": 20, "train": 10}


def group_ids(target, group_labels):
    """int [n]: the index of each row's group among the 2^(1+g) combinations (target bit first)."""
    bits = np.concatenate([np.asarray(target).reshape(-1, 1), np.asarray(group_labels).reshape(len(target), -1)], 1)
    return (bits.astype(np.int64) * (1 << np.arange(bits.shape[1] - 1, -1, -1))).sum(axis=1)


def balanced_subset(ids, rng):
    """Row indices: every group present downsampled to the smallest group's size."""
    groups = [np.flatnonzero(ids == g) for g in np.unique(ids)]
    smallest = min(len(g) for g in groups)
    return np.sort(np.concatenate([rng.choice(g, smallest, replace=False) for g in groups]))


def worst_group_accuracy(y, predicted, ids):
    """The lowest accuracy over the groups that have rows."""
    return min(float((predicted[ids == g] == y[ids == g]).mean()) for g in np.unique(ids))


@register("dfr")
class DFR(Head):
    files = (DFR_FILE,)
    needs_groups = True

    def __init__(self, dfr_on="val", C_grid=C_GRID, refits=None, seed=0):
        self.dfr_on = dfr_on
        self.C_grid = C_grid
        self.refits = refits
        self.seed = seed

    def _fit_one(self, X, y, C, rng_subset):
        from sklearn.linear_model import LogisticRegression
        model = LogisticRegression(l1_ratio=1.0, C=C, solver="liblinear", random_state=self.seed)  # L1
        return model.fit(X[rng_subset], y[rng_subset])

    def fit(self, X, Y, attributes, X_val=None, Y_val=None, on_epoch=None, group_labels=None,
            group_labels_val=None, group_names=()):
        if self.dfr_on not in REFITS:
            raise UserError(f"--dfr-on {self.dfr_on!r}: use val or train")
        if group_labels is None or not len(group_names):
            raise UserError("dfr reweights by group: give --groups (e.g. --groups Male)")
        if X_val is None or len(X_val) < 8:
            raise UserError("dfr needs val rows (it chooses C on them)")
        rng = np.random.default_rng(self.seed)
        X, X_val = np.asarray(X, np.float32), np.asarray(X_val, np.float32)
        G, G_val = np.asarray(group_labels), np.asarray(group_labels_val)
        order = rng.permutation(len(X_val))
        tune, held_out = np.sort(order[:len(order) // 2]), np.sort(order[len(order) // 2:])
        # (features, labels, group labels) to choose C on, and to fit the final model on
        final = (X_val, Y_val, G_val) if self.dfr_on == "val" else (X, Y, G)
        tuning = (X_val[tune], Y_val[tune], G_val[tune]) if self.dfr_on == "val" else final
        self.mean_ = final[0].mean(axis=0, dtype=np.float64).astype(np.float32)
        self.scale_ = np.maximum(final[0].std(axis=0, dtype=np.float64), 1e-7).astype(np.float32)
        standardize = lambda x: (x - self.mean_) / self.scale_  # noqa: E731
        final_x, tuning_x, held_out_x = standardize(final[0]), standardize(tuning[0]), standardize(X_val[held_out])
        refits = self.refits or REFITS[self.dfr_on]
        coefficients, intercepts, chosen, curves = [], [], {}, {}
        for j, name in enumerate(attributes):
            others = [k for k, g in enumerate(group_names) if g != name]
            ids = {what: group_ids(y[:, j], g[:, others]) for what, (_, y, g) in
                   (("final", final), ("tuning", tuning), ("held_out", (None, Y_val[held_out], G_val[held_out])))}
            for what, where in (("tuning", "the rows C is tuned on"), ("final", f"the {self.dfr_on} split")):
                if len(np.unique(ids[what])) < 2 ** (1 + len(others)):
                    raise UserError(f"dfr for {name}: some group has no rows in {where}, so it cannot balance the "
                                    "groups (try --dfr-on train, or fewer group attributes)")
            curve = {}
            for C in self.C_grid:
                model = self._fit_one(tuning_x, tuning[1][:, j], C, balanced_subset(ids["tuning"], rng))
                curve[C] = worst_group_accuracy(Y_val[held_out, j], model.predict(held_out_x), ids["held_out"])
            best = max(self.C_grid, key=lambda c: curve[c])  # ties: the first in the grid
            fits = [self._fit_one(final_x, final[1][:, j], best, balanced_subset(ids["final"], rng))
                    for _ in range(refits)]
            coefficients.append(np.mean([m.coef_[0] for m in fits], axis=0))
            intercepts.append(np.mean([m.intercept_[0] for m in fits]))
            chosen[name], curves[name] = best, {f"{c:g}": a for c, a in curve.items()}
        self.coef_, self.intercept_ = np.array(coefficients, np.float64), np.array(intercepts, np.float64)
        self.attributes_, self.n_features_in_ = list(attributes), X.shape[1]
        self.selection_ = {"C": chosen, "held_out_worst_group_accuracy_by_C": curves, "dfr_on": self.dfr_on,
                           "refits": refits, "groups_by": list(group_names)}
        return self

    def predict_proba(self, X):
        X = np.asarray(X, np.float32)
        self.check_width(X)
        logits = ((X - self.mean_) / self.scale_) @ self.coef_.T + self.intercept_
        return (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)

    def save(self, directory):
        np.savez(Path(directory) / DFR_FILE, mean=self.mean_, scale=self.scale_, coef=self.coef_,
                 intercept=self.intercept_)

    @classmethod
    def load(cls, directory, settings, attributes, trust_model=False):
        head = cls.from_settings(settings)
        path = Path(directory) / DFR_FILE
        try:
            with np.load(path, allow_pickle=False) as data:
                head.mean_, head.scale_, head.coef_, head.intercept_ = (data[k] for k in ("mean", "scale", "coef",
                                                                                          "intercept"))
        except (OSError, ValueError, KeyError) as exc:
            raise UserError(f"{path}: cannot read the DFR model ({exc})") from None
        head.attributes_, head.n_features_in_ = list(attributes), head.coef_.shape[1]
        return head
