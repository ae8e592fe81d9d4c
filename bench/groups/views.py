"""views: mirrored views, every head kind and ERM vs DFR worst-group accuracy on the real sample (a fixed pixel backbone), and --views augment's cost at CelebA size."""

import json
import time
from pathlib import Path

import numpy as np

from bench.common import HEAD_ATTRIBUTES, SAMPLE, group, row


def bench_views(workdir, features, labels, splits, quick):
    """Mirrored views and groups on the real sample (a fixed pixel backbone embedded with --views
    flip): logreg and the reference head on orig / mean / augment for Male, Smiling, Young, and ERM
    vs DFR worst-group accuracy for Blond_Hair x Male over seeds; plus the time --views augment costs
    the reference head on the CelebA-size synthetic cache (twice the training rows)."""
    from embed.backbones import BackboneSpec, load_backbone
    from embed.dataset import load_dataset
    from embed.runner import EmbedSpec, embed
    from harness.caches import pixel_backbone
    from heads.defaults import REFERENCE_EPOCHS
    from heads.kinds.base import Data
    from heads.kinds.keras_head import KerasHead
    from heads.kinds.trainer import aligned
    from heads.run.fit import run_kinds, train_heads
    from heads.run.task import TaskSpec

    work = Path(workdir)
    backbone = load_backbone(BackboneSpec(str(pixel_backbone(work / "pixels.keras")), layer="embedding",
                                          value_range=(0.0, 1.0)))
    dataset = load_dataset(SAMPLE / "list_attr_celeba.txt", SAMPLE / "img_align_celeba", SAMPLE / "list_eval_partition.txt")
    cache = work / "sample-views.h5"
    began = time.perf_counter()
    embed(dataset, backbone, cache, EmbedSpec(batch_size=64, views=("flip",), feature_dtype="float32"))
    embed_s = time.perf_counter() - began
    seeds = (0,) if quick else (0, 1, 2)
    rows = [row("views: real sample embedded with --views flip (pixel backbone, 768-d)", round(embed_s, 1), "s",
                note=f"{len(dataset.image_ids)} real images; the backbone runs twice per image")]
    for views in ("orig", "mean", "augment"):
        logreg = run_kinds(TaskSpec(cache, HEAD_ATTRIBUTES, views=views), work / f"lr-{views}", ["logreg"])["logreg"]
        heads = [train_heads(TaskSpec(cache, HEAD_ATTRIBUTES, features="standardize", views=views),
                             work / f"h-{views}-{seed}", seed=seed, epochs=10) for seed in seeds]
        for name, results in (("logreg", [logreg]), ("reference head (10 epochs)", heads)):
            accuracy = {a: [r["attributes"][a]["test"]["accuracy"] for r in results] for a in HEAD_ATTRIBUTES}
            mean = np.mean([np.mean(v) for v in accuracy.values()])
            spread = "" if len(results) == 1 else f"; min-max over {len(results)} seeds " + ", ".join(
                f"{a} {100 * min(v):.1f}-{100 * max(v):.1f}" for a, v in accuracy.items())
            rows.append(row(f"views: {name}, --views {views}, test accuracy (mean of 3 attrs)", round(100 * mean, 2), "%",
                            note=", ".join(f"{a} {100 * np.mean(v):.1f}" for a, v in accuracy.items()) + spread))
    standardized = TaskSpec(cache, HEAD_ATTRIBUTES, features="standardize")
    kinds = run_kinds(standardized, work / "kinds", ["majority", "logreg-cv", "knn-cosine", "linear-grid"])
    kinds.update({spec: train_heads(standardized, work / f"spec-{spec}", head=spec, epochs=10)
                  for spec in ("linear", "mlp:512,128")})
    for kind, metrics in kinds.items():
        accuracy = {a: metrics["attributes"][a]["test"]["accuracy"] for a in HEAD_ATTRIBUTES}
        chosen = metrics["run"].get("selection") or {}
        rows.append(row(f"kinds: {kind} on the real sample, test accuracy (mean of 3 attrs)",
                        round(100 * float(np.mean(list(accuracy.values()))), 2), "%",
                        note=", ".join(f"{a} {100 * v:.1f}" for a, v in accuracy.items())
                             + (f"; chose {json.dumps({k: v for k, v in chosen.items() if not k.startswith('val_')})}"
                                if chosen else "")))
    # The sample's val split has no blond men, so DFR for Blond_Hair fits on train (5 blond men);
    # Smiling x Male has every group in every split, so there DFR runs as in the paper, on val.
    for target, dfr_on in (("Blond_Hair", "train"), ("Smiling", "val")):
        worst = {"logreg": [], "dfr": []}
        for seed in (0,) if quick else range(5):
            runs = run_kinds(TaskSpec(cache, target, groups="Male", features="standardize"),
                             work / f"dfr-{target}-{seed}", ["logreg", "dfr"], seed=seed, dfr_on=dfr_on)
            for kind in worst:
                worst[kind].append(runs[kind]["groups"]["attributes"][target]["test"])
        sizes = ", ".join(f"{target}={g[target]}/Male={g['Male']}: {g['n']}" for g in worst["logreg"][0]["groups"])
        for kind, results in worst.items():
            values = [r["worst_group_accuracy"] for r in results]
            label = f"dfr (--dfr-on {dfr_on})" if kind == "dfr" else "logreg (ERM)"
            rows.append(row(f"groups: {target} x Male, {label}, test worst-group accuracy",
                            round(100 * float(np.mean(values)), 1), "%",
                            note=f"{len(values)} seeds: {', '.join(f'{100 * v:.1f}' for v in values)}; mean over groups "
                                 f"{100 * np.mean([r['mean_group_accuracy'] for r in results]):.1f} %; test n per group "
                                 f"{sizes}"))
    from embed.sample import CELEBA_ATTRIBUTES
    names = list(CELEBA_ATTRIBUTES)
    cols = [names.index(a) for a in HEAD_ATTRIBUTES]
    n_train = splits[0]
    train_x = features[:n_train]
    flipped = aligned(np.concatenate([train_x, train_x + 0.01 * np.float32(1)]))  # stands for the flip view
    y = labels[:n_train][:, cols]
    began = time.perf_counter()
    KerasHead(epochs=REFERENCE_EPOCHS).fit(Data(aligned(train_x), y, tuple(HEAD_ATTRIBUTES)))
    orig_s = time.perf_counter() - began
    began = time.perf_counter()
    KerasHead(epochs=REFERENCE_EPOCHS).fit(Data(flipped, np.concatenate([y, y]), tuple(HEAD_ATTRIBUTES)))
    augment_s = time.perf_counter() - began
    rows.append(row("views: reference head, --views augment (both views as training rows)", round(augment_s, 2), "s",
                    note=f"{2 * n_train:,} training rows; --views orig {orig_s:.2f} s on {n_train:,}"))
    return rows


@group("views", order=8)
def run(ctx):
    features, labels = ctx.planted
    return bench_views(ctx.workdir, features, labels, ctx.size["splits"], ctx.quick)
