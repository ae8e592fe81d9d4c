"""How a run looks: the table printed for it and its plots (the files: `heads.rundir`)."""

from pathlib import Path

TABLE_METRICS = ("accuracy", "balanced_accuracy", "f1", "roc_auc", "majority_accuracy")
SHORT = {"accuracy": "acc", "balanced_accuracy": "bal_acc", "f1": "f1", "roc_auc": "auc",
         "majority_accuracy": "majority", "threshold": "thr"}


def format_table(metrics, title=None):
    """Rows = attributes, columns = val and test x metric; percentages, AUC as 0..1."""
    width = 9
    group = len(TABLE_METRICS) * width
    lines = [title] if title else []
    lines.append(f"{'':<22}" + "".join(f"  {split:-^{group - 2}}" for split in ("val", "test")))
    lines.append(f"{'attribute':<22}" + "".join(f"{SHORT[m]:>{width}}" for _ in range(2) for m in TABLE_METRICS))
    for name, by_split in metrics["attributes"].items():
        cells = []
        for split in ("val", "test"):
            for m in TABLE_METRICS:
                value = by_split[split][m]
                cells.append(f"{'-':>{width}}" if value is None else
                             f"{value:>{width}.3f}" if m == "roc_auc" else f"{100 * value:>{width}.1f}")
        lines.append(f"{name:<22}" + "".join(cells))
    lines.append("(accuracy, balanced accuracy, F1 and majority-class accuracy in %; AUC 0..1)")
    return "\n".join(lines)


def format_groups(metrics, split):
    """Per-group table of a metrics dict with a "groups" section: one line per group, then the worst
    and the mean group accuracy per attribute."""
    section = metrics["groups"]
    lines = [f"per group on {split} (groups by {', '.join(section['by'])}):"]
    for name, by_split in section["attributes"].items():
        result = by_split[split]
        for group in result["groups"]:
            keys = [k for k in group if k not in ("n", "accuracy", "positive_rate")]
            label = ", ".join(f"{k}={group[k]}" for k in keys)
            accuracy = "-" if group["accuracy"] is None else f"{100 * group['accuracy']:.1f}%"
            lines.append(f"  {label:<40} n {group['n']:>7}  accuracy {accuracy:>7}")
        worst, mean = result["worst_group_accuracy"], result["mean_group_accuracy"]
        lines.append(f"  {name}: worst-group accuracy {'-' if worst is None else f'{100 * worst:.1f}%'}, "
                     f"mean over groups {'-' if mean is None else f'{100 * mean:.1f}%'}")
    return "\n".join(lines)


def plot_history(history, attributes, out_dir):
    """loss.png and accuracy.png: train and val curves per epoch (the reference notebook's plots)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    epochs = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(epochs, [h["loss"] for h in history], "o-", label="train")
    if "val_loss" in history[0]:
        ax.plot(epochs, [h["val_loss"] for h in history], "o--", label="val")
    ax.set(xlabel="epoch", ylabel="loss", title="Loss")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend()
    fig.tight_layout()
    fig.savefig(Path(out_dir) / "loss.png", dpi=100)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, name in enumerate(attributes):
        color = f"C{i % 10}"
        ax.plot(epochs, [h[f"{name}_accuracy"] for h in history], "o-", color=color, label=f"{name} train")
        if f"val_{name}_accuracy" in history[0]:
            ax.plot(epochs, [h[f"val_{name}_accuracy"] for h in history], "o--", color=color, label=f"{name} val")
    ax.set(xlabel="epoch", ylabel="accuracy", title="Accuracy per attribute")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if len(attributes) <= 6:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(Path(out_dir) / "accuracy.png", dpi=100)
    plt.close(fig)


def plot_accuracy_vs_majority(metrics, out_dir):
    """accuracy_vs_majority.png: val and test accuracy per attribute against the majority class."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = list(metrics["attributes"])
    values = {key: [metrics["attributes"][a][split][m] for a in names]
              for key, split, m in (("val", "val", "accuracy"), ("test", "test", "accuracy"),
                                    ("majority (test)", "test", "majority_accuracy"))}
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(names) + 2), 4.5))
    for i, (label, series) in enumerate(values.items()):
        ax.bar(x + (i - 1) * 0.27, series, width=0.27, label=label, color=["C0", "C1", "0.7"][i])
    ax.set_xticks(x, names, rotation=90 if len(names) > 6 else 0, fontsize=8)
    ax.set(ylabel="accuracy", ylim=(0, 1.12), title="Accuracy vs the majority-class baseline")
    ax.legend(fontsize=8, loc="upper center", ncol=3)
    fig.tight_layout()
    fig.savefig(Path(out_dir) / "accuracy_vs_majority.png", dpi=100)
    plt.close(fig)
