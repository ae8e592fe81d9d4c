"""A run's pictures, beside its files: loss and accuracy per epoch, accuracy against the majority
class, and the reliability diagram of its probabilities; and the audit's nearest-neighbour
similarity histogram."""

from pathlib import Path

import numpy as np

from cache.layout import UNKNOWN_LABEL


def _save(fig, out):
    """Lay the figure out tightly and write it as a PNG (100 dpi) to `out` (a path or a binary file);
    figures here are made outside pyplot, so nothing stays open and no backend is chosen. The layout is computed once: tight_layout leaves a placeholder layout engine behind,
    which makes savefig draw the whole figure an extra time; dropping it leaves the pixels unchanged
    and saves a third of the picture's time."""
    fig.tight_layout()
    fig.set_layout_engine(None)
    fig.savefig(out, dpi=100, format="png")


def history_figures(history, attributes, best_epoch=None):
    """(loss figure, accuracy figure) of a run's history (history.csv's rows as dicts): train and
    val curves per epoch (the reference notebook's plots), a dotted line at best_epoch when it is
    not the last (the epoch whose weights the head keeps). The caller saves or shows them: they
    are plain `matplotlib.figure.Figure`s, outside pyplot's list of open figures."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    epochs = [h["epoch"] for h in history]
    loss = Figure(figsize=(6, 4))
    ax = loss.subplots()
    ax.plot(epochs, [h["loss"] for h in history], "o-", label="train")
    if "val_loss" in history[0]:
        ax.plot(epochs, [h["val_loss"] for h in history], "o--", label="val")
    marked = best_epoch is not None and best_epoch != epochs[-1]
    if marked:
        ax.axvline(best_epoch, color="0.5", linestyle=":", label=f"best epoch {best_epoch} (kept)")
    ax.set(xlabel="epoch", ylabel="loss", title="Loss")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend()
    accuracy = Figure(figsize=(7, 4.5))
    ax = accuracy.subplots()
    for i, name in enumerate(attributes):
        color = f"C{i % 10}"
        ax.plot(epochs, [h[f"{name}_accuracy"] for h in history], "o-", color=color, label=f"{name} train")
        if f"val_{name}_accuracy" in history[0]:
            ax.plot(epochs, [h[f"val_{name}_accuracy"] for h in history], "o--", color=color, label=f"{name} val")
    if marked:
        ax.axvline(best_epoch, color="0.5", linestyle=":")
    ax.set(xlabel="epoch", ylabel="accuracy", title="Accuracy per attribute")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if len(attributes) <= 6:
        ax.legend(fontsize=8)
    return loss, accuracy


def plot_history(history, attributes, out_dir, best_epoch=None):
    """loss.png and accuracy.png in out_dir: `history_figures`, saved."""
    loss, accuracy = history_figures(history, attributes, best_epoch)
    _save(loss, Path(out_dir) / "loss.png")
    _save(accuracy, Path(out_dir) / "accuracy.png")


def plot_accuracy_vs_majority(metrics, out_dir):
    """accuracy_vs_majority.png: val and test accuracy per attribute against the majority class."""
    from matplotlib.figure import Figure
    import numpy as np

    names = list(metrics["attributes"])
    values = {key: [np.nan if metrics["attributes"][a][split][m] is None else metrics["attributes"][a][split][m]
                    for a in names]  # None: no labelled row on that split
              for key, split, m in (("val", "val", "accuracy"), ("test", "test", "accuracy"),
                                    ("majority (test)", "test", "majority_accuracy"))}
    x = np.arange(len(names))
    fig = Figure(figsize=(max(6, 0.45 * len(names) + 2), 4.5))
    ax = fig.subplots()
    for i, (label, series) in enumerate(values.items()):
        ax.bar(x + (i - 1) * 0.27, series, width=0.27, label=label, color=["C0", "C1", "0.7"][i])
    ax.set_xticks(x, names, rotation=90 if len(names) > 6 else 0, fontsize=8)
    ax.set(ylabel="accuracy", ylim=(0, 1.12), title="Accuracy vs the majority-class baseline")
    ax.legend(fontsize=8, loc="upper center", ncol=3)
    _save(fig, Path(out_dir) / "accuracy_vs_majority.png")


def plot_reliability(labels, probabilities, attributes, out_dir):
    """reliability.png: per split (labels and probabilities {split: [n, k]}), the positive rate
    against the mean probability in each filled bin of `heads.metrics.calibration_bins`, one line per
    attribute (over its labelled rows), the diagonal for a calibrated head, and each attribute's ECE
    in the legend (<= 6)."""
    from matplotlib.figure import Figure

    from heads.metrics import CALIBRATION_BINS, calibration_bins, expected_calibration_error

    fig = Figure(figsize=(5 * len(probabilities), 4.8))
    axes = fig.subplots(1, len(probabilities), squeeze=False)
    for ax, (split, p) in zip(axes[0], probabilities.items()):
        ax.plot([0, 1], [0, 1], color="0.6", linestyle=":", label="calibrated")
        for j, name in enumerate(attributes):
            known = labels[split][:, j] != UNKNOWN_LABEL  # a label overlay's unknown labels are not scored
            if not known.any():
                continue
            rows, mean_p, rate = calibration_bins(labels[split][known, j], p[known, j])
            filled = rows > 0
            ece = expected_calibration_error(labels[split][known, j], p[known, j])
            ax.plot(mean_p[filled], rate[filled], "o-", markersize=3, color=f"C{j % 10}",
                    label=f"{name} (ECE {ece:.3f})")
        ax.set(xlabel="mean predicted probability", ylabel="fraction positive", xlim=(0, 1), ylim=(0, 1),
               title=f"Reliability on {split} ({CALIBRATION_BINS} bins)")
        if len(attributes) <= 6:
            ax.legend(fontsize=8, loc="upper left")
    _save(fig, Path(out_dir) / "reliability.png")


def plot_nearest_similarity(histogram, threshold, out_path):
    """The distribution of each row's nearest-neighbour cosine (summary.json's
    duplicates.nearest_similarity: edges [b + 1], counts [b]) on a log count axis, with the pair
    threshold as a dashed line; written as a PNG to out_path."""
    from matplotlib.figure import Figure

    edges, counts = np.asarray(histogram["edges"]), np.asarray(histogram["counts"])
    fig = Figure(figsize=(7, 3.6))
    ax = fig.subplots()
    ax.stairs(counts, edges, fill=True, color="C0", alpha=0.7)
    ax.axvline(threshold, color="C3", linestyle="--", label=f"--dup-threshold {threshold:g}")
    filled = np.flatnonzero(counts)
    low = edges[filled[0]] if len(filled) else -1.0
    ax.set(xlabel="cosine similarity to the nearest other row (centred features)", ylabel="rows",
           yscale="log", xlim=(max(-1.0, low - 0.05), 1.0), title="Nearest-neighbour similarity")
    ax.legend(fontsize=8, loc="upper left")
    _save(fig, out_path)
