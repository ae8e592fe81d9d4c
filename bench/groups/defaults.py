"""defaults: train-heads with no options against logistic regression and the reference notebook's 3 epochs, on the real sample embedded by the shared gender CNN (real features of real faces)."""

import os
from pathlib import Path

from bench.common import HEAD_ATTRIBUTES, ROOT, SAMPLE, group, row

MODELS = Path(os.environ.get("CELEBA_MODELS", ROOT.parent / "shared" / "models"))


def bench_defaults(workdir):
    from embed.backbones import BackboneSpec
    from embed.dataset import open_dataset
    from embed.placement import build
    from embed.runner import EmbedSpec, embed
    from heads.run.fit import run_kinds, train_heads
    from heads.run.task import TaskSpec

    work = Path(workdir) / "defaults"
    work.mkdir(parents=True, exist_ok=True)
    backbone, engine = build(BackboneSpec(str(MODELS / "gender_mini_XCEPTION.hdf5"), layer="add_4", image_size=64,
                                          color="grayscale", value_range=(-1.0, 1.0)))
    cache = work / "gender.h5"
    embed(open_dataset(SAMPLE), backbone, cache, EmbedSpec(batch_size=64), engine=engine)
    task = TaskSpec(cache, HEAD_ATTRIBUTES)
    runs = {"train-heads (no options: epochs auto)": train_heads(task, work / "auto"),
            "train-heads --epochs 3 (the reference recipe)": train_heads(task, work / "three", epochs=3),
            "logreg (baselines defaults)": run_kinds(task, work / "base", ["logreg"])["logreg"]}
    test = {name: {a: m["attributes"][a]["test"]["accuracy"] for a in HEAD_ATTRIBUTES} for name, m in runs.items()}
    majority = {a: runs["logreg (baselines defaults)"]["attributes"][a]["test"]["majority_accuracy"]
                for a in HEAD_ATTRIBUTES}
    rows = []
    for name, accuracy in test.items():
        epochs = runs[name]["run"].get("epochs")
        note = ", ".join(f"{a} {100 * v:.1f}" for a, v in accuracy.items())
        note += f" (majority {', '.join(f'{100 * v:.1f}' for v in majority.values())})"
        if epochs:
            note += f"; trained {epochs['trained']} epochs, kept epoch {epochs['best']}"
        rows.append(row(f"defaults: {name}, Male test accuracy", round(100 * accuracy["Male"], 1), "%", note=note))
    gap = 100 * (test["logreg (baselines defaults)"]["Male"] - test["train-heads (no options: epochs auto)"]["Male"])
    rows.append(row("defaults: logreg minus train-heads with no options, Male test accuracy", round(gap, 1), "pt",
                    "<= 1 pt", gap <= 1, note="one run each on the real sample's 1,987 images, the gender CNN's "
                                              "add_4 pooled (128-d)"))
    return rows


@group("defaults", order=6)
def run(ctx):
    return bench_defaults(ctx.workdir)
