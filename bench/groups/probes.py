"""probes: logreg-cv, knn-cosine's val x train scoring and the 13-rate linear grid on the CelebA-size planted cache."""

import time

from bench.common import HEAD_ATTRIBUTES, group, machine_name, matmul_limit, row


def bench_probes(features, labels, splits):
    """The probe protocols on the CelebA-size cache: logreg-cv for 3 attributes, knn-cosine's
    scoring of every val row against every train row, the 13-rate linear grid."""
    from embed.sample import CELEBA_ATTRIBUTES
    from heads.defaults import REFERENCE_EPOCHS
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
    rows.append(row("probes: logreg-cv, 3 attrs", round(seconds, 1), "s",
                    note=f"{tried} values of C per attribute; chosen C "
                         + ", ".join(f"{a} {c:g} (val {100 * best[a]:.2f} %)" for a, c in logreg.selection_["C"].items())
                         + f"; on {machine_name()}"))
    knn = KnnCosine()
    knn._index(l2_normalised(train_x), train_y)
    queries = l2_normalised(val_x)
    block = knn.block_rows
    limit = matmul_limit(block, train_x.shape[1], len(train_x), rounds=2, min_seconds=2.0)
    began = time.perf_counter()
    timed = knn._neighbours.choose_matmul(queries)  # as fit does: both products timed on 64 queries
    shares = knn._neighbours.vote_shares(queries)
    seconds = time.perf_counter() - began
    accuracy = ", ".join(f"k={k} {100 * ((shares[i] >= 0.5) == (val_y > 0.5)).mean():.2f} %" for i, k in enumerate(knn.ks))
    flops = 2.0 * len(val_x) * len(train_x) * train_x.shape[1]
    achieved = flops / seconds / 1e9
    ratio = achieved / max(limit.values())
    rows.append(row("probes: knn-cosine, scoring all val rows against all train rows", round(seconds, 1), "s",
                    note=f"{len(val_x):,} x {len(train_x):,} similarities, top 200, 4 values of k; mean val accuracy "
                         f"{accuracy}; on {machine_name()}"))
    rows.append(row("probes: knn-cosine similarities, FLOP/s / the machine's matmul limit", round(ratio, 3), "ratio",
                    ">= 0.8", ratio >= 0.8,
                    note=f"{flops / 1e12:.2f} TFLOP in {seconds:.1f} s (top-k, votes and the matmul choice included) = "
                         f"{achieved:.0f} GFLOP/s on {knn._neighbours.matmul}'s matmul (timed on 64 queries: "
                         + ", ".join(f"{k} {v:.3f} s" for k, v in timed.items()) + f"); limit at [{block} x "
                         f"{train_x.shape[1]}] @ [{train_x.shape[1]} x {len(train_x):,}]: numpy {limit['numpy']:.0f}, "
                         f"TensorFlow {limit['tensorflow']:.0f} GFLOP/s"))
    began = time.perf_counter()
    grid = LinearGrid(epochs=REFERENCE_EPOCHS).fit(train, val)
    seconds = time.perf_counter() - began
    rows.append(row("probes: linear-grid, 13 learning rates in one pass, 3 epochs (3 attrs)", round(seconds, 1), "s",
                    note=f"best lr {grid.selection_['lr']:g}: mean val {100 * max(grid.selection_['val_accuracy_by_lr'].values()):.2f} %"))
    fixed_seconds = seconds
    began = time.perf_counter()
    grid = LinearGrid().fit(train, val)  # the default: epochs auto, each rate stopping on its own
    seconds = time.perf_counter() - began
    epochs = grid.selection_["epochs_by_lr"]
    rows.append(row("probes: linear-grid with epochs auto (the default), 3 attrs", round(seconds, 1), "s",
                    note=f"{seconds / fixed_seconds:.1f}x the 3-epoch grid; epochs per rate "
                         + ", ".join(f"{lr} {n}" for lr, n in epochs.items())
                         + f" (cap {grid.max_epochs}); best lr {grid.selection_['lr']:g}: mean val "
                         f"{100 * max(grid.selection_['val_accuracy_by_lr'].values()):.2f} %; on {machine_name()}"))
    return rows


@group("probes", order=5)
def run(ctx):
    features, labels = ctx.planted
    return bench_probes(features, labels, ctx.size["splits"])
