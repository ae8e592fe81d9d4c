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
Each target is fitted on the rows whose target and group labels are known (a label overlay may
leave some unknown). Features are standardized with the mean and std of the fitting data. The run stores the scaler and
the averaged coefficients (dfr.npz); no pickle.
"""

from pathlib import Path

import numpy as np

from cache.errors import UserError
from heads.defaults import DFR as DEFAULTS
from heads.kinds.base import Head, labelled, register
from heads.scaling import standardization

DFR_FILE = "dfr.npz"


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

    def __init__(self, dfr_on=DEFAULTS["dfr_on"], C_grid=DEFAULTS["C_grid"], refits=None, seed=DEFAULTS["seed"]):
        self.dfr_on = dfr_on
        self.C_grid = C_grid
        self.refits = refits
        self.seed = seed

    def _fit_one(self, X, y, C, rng_subset):
        from sklearn.linear_model import LogisticRegression
        model = LogisticRegression(l1_ratio=1.0, C=C, solver="liblinear", random_state=self.seed)  # L1
        return model.fit(X[rng_subset], y[rng_subset])

    def fit(self, train, val=None, on_epoch=None):
        if self.dfr_on not in DEFAULTS["refits"]:
            raise UserError(f"--dfr-on {self.dfr_on!r}: use val or train")
        if not train.group_names:
            raise UserError("dfr reweights by group: give --groups (e.g. --groups Male)")
        if val is None or len(val) < 8:
            raise UserError("dfr needs val rows (it chooses C on them)")
        rng = np.random.default_rng(self.seed)
        attributes, group_names = train.attributes, train.group_names
        X, Y, X_val, Y_val = (np.asarray(train.features, np.float32), train.labels, np.asarray(val.features, np.float32),
                              val.labels)
        G, G_val = np.asarray(train.group_labels), np.asarray(val.group_labels)
        order = rng.permutation(len(X_val))
        tune, held_out = np.sort(order[:len(order) // 2]), np.sort(order[len(order) // 2:])
        # (features, labels, group labels) to choose C on, and to fit the final model on
        final = (X_val, Y_val, G_val) if self.dfr_on == "val" else (X, Y, G)
        tuning = (X_val[tune], Y_val[tune], G_val[tune]) if self.dfr_on == "val" else final
        self.mean_, self.scale_ = standardization(final[0])
        standardize = lambda x: (x - self.mean_) / self.scale_  # noqa: E731
        final_x, tuning_x, held_out_x = standardize(final[0]), standardize(tuning[0]), standardize(X_val[held_out])
        refits = self.refits or DEFAULTS["refits"][self.dfr_on]
        coefficients, intercepts, chosen, curves = [], [], {}, {}
        for j, name in enumerate(attributes):
            others = [k for k, g in enumerate(group_names) if g != name]
            # per split: (features, target labels, group ids) on the rows whose target and groups are labelled
            rows = {}
            for what, (x, y, g) in (("final", (final_x, final[1], final[2])), ("tuning", (tuning_x, tuning[1], tuning[2])),
                                    ("held_out", (held_out_x, Y_val[held_out], G_val[held_out]))):
                known = labelled(y[:, j]) & labelled(g[:, others]).all(axis=1)
                rows[what] = (x[known], y[known, j], group_ids(y[known, j], g[known][:, others]))
            for what, where in (("tuning", "the rows C is tuned on"), ("final", f"the {self.dfr_on} split")):
                if len(np.unique(rows[what][2])) < 2 ** (1 + len(others)):
                    raise UserError(f"dfr for {name}: some group has no rows in {where}, so it cannot balance the "
                                    "groups (try --dfr-on train, or fewer group attributes)")
            curve = {}
            for C in self.C_grid:
                model = self._fit_one(rows["tuning"][0], rows["tuning"][1], C, balanced_subset(rows["tuning"][2], rng))
                curve[C] = worst_group_accuracy(rows["held_out"][1], model.predict(rows["held_out"][0]), rows["held_out"][2])
            best = max(self.C_grid, key=lambda c: curve[c])  # ties: the first in the grid
            fits = [self._fit_one(rows["final"][0], rows["final"][1], best, balanced_subset(rows["final"][2], rng))
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
        head = cls.from_record(settings)
        path = Path(directory) / DFR_FILE
        try:
            with np.load(path, allow_pickle=False) as data:
                head.mean_, head.scale_, head.coef_, head.intercept_ = (data[k] for k in ("mean", "scale", "coef",
                                                                                          "intercept"))
        except (OSError, ValueError, KeyError) as exc:
            raise UserError(f"{path}: cannot read the DFR model ({exc})") from None
        head.attributes_, head.n_features_in_ = list(attributes), head.coef_.shape[1]
        return head
