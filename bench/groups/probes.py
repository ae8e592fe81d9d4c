"""probes: logreg-cv, knn-cosine's val x train scoring and the 13-rate linear grid on the CelebA-size planted cache."""

import time

from bench.common import HEAD_ATTRIBUTES, group, row


def bench_probes(features, labels, splits):
    """The probe protocols on the CelebA-size cache: logreg-cv for 3 attributes, knn-cosine's
    scoring of every val row against every train row, the 13-rate linear grid."""
    from embed.sample import CELEBA_ATTRIBUTES
    from heads.kinds.base import Data
    from heads.kinds.probes import KnnCosine, LinearGrid, LogRegCV
    from heads.scaling import l2_normalised
    names = list(CELEBA_ATTRIBUTES)
    n_train, n_val = splits[0], splits[1]
    cols = [names.index(a) for a in HEAD_ATTRIBUTES]
    train_x, train_y = features[:n_train], labels[:n_train][:, cols]
    val_x, val_y = features[n_train:n_train + n_val], labels[n_train:n_train + n_val][:, cols]
    train, val = Data(train_x, train_y, tuple(HEAD_ATTRIBUTES)), Data(val_x, val_y, tuple(HEAD_ATTRIBUTES))
    rows = []
    began = time.perf_counter()
    logreg = LogRegCV().fit(train, val)
    seconds = time.perf_counter() - began
    best = {a: max(curve.values()) for a, curve in logreg.selection_["val_accuracy_by_C"].items()}
    tried = len(next(iter(logreg.selection_["val_accuracy_by_C"].values())))
    rows.append(row("probes: logreg-cv, 3 attrs", round(seconds, 1), "s", "<= 120 s", seconds <= 120,
                    note=f"{tried} values of C per attribute; chosen C "
                         + ", ".join(f"{a} {c:g} (val {100 * best[a]:.2f} %)" for a, c in logreg.selection_["C"].items())))
    knn = KnnCosine()
    knn._index(l2_normalised(train_x), train_y)
    queries = l2_normalised(val_x)
    began = time.perf_counter()
    shares = knn._neighbours.vote_shares(queries)
    seconds = time.perf_counter() - began
    accuracy = ", ".join(f"k={k} {100 * ((shares[i] >= 0.5) == (val_y > 0.5)).mean():.2f} %" for i, k in enumerate(knn.ks))
    rows.append(row("probes: knn-cosine, scoring all val rows against all train rows", round(seconds, 1), "s",
                    "<= 60 s", seconds <= 60,
                    note=f"{len(val_x):,} x {len(train_x):,} similarities, top 200, 4 values of k; mean val accuracy {accuracy}"))
    began = time.perf_counter()
    grid = LinearGrid().fit(train, val)
    seconds = time.perf_counter() - began
    rows.append(row("probes: linear-grid, 13 learning rates in one pass (3 attrs)", round(seconds, 1), "s",
                    note=f"best lr {grid.selection_['lr']:g}: mean val {100 * max(grid.selection_['val_accuracy_by_lr'].values()):.2f} %"))
    return rows


@group("probes", order=5)
def run(ctx):
    features, labels = ctx.planted
    return bench_probes(features, labels, ctx.size["splits"])
