"""audit: planted label flips and duplicates found on generated data, what --exclude of the flagged train rows and --mask-labels of the flagged labels do to val and test accuracy, the audit at CelebA size (time, near-duplicate search, IVF recall, peak memory), and what it finds in the real sample."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from bench.common import HEAD_ATTRIBUTES, ROOT, SAMPLE, group, row

MODELS = Path(os.environ.get("CELEBA_MODELS", ROOT.parent / "shared" / "models"))
PLANTED = {"n": 6000, "noise": 0.1, "copies": 60}


def _embed(data, cache, spec):
    from embed.dataset import open_dataset
    from embed.placement import build
    from embed.runner import EmbedSpec, embed
    backbone, engine = build(spec)
    embed(open_dataset(data), backbone, cache, EmbedSpec(batch_size=64), engine=engine)


def _pixel_spec(work):
    from embed.backbones import BackboneSpec
    from harness.caches import pixel_backbone
    return BackboneSpec(str(pixel_backbone(work / "pixels.keras")), layer="embedding", image_size=64,
                        value_range=(0.0, 1.0))


def _pairs(audit_dir):
    pairs = pd.read_csv(audit_dir / "duplicates.csv", dtype={"image_id": str, "duplicate_id": str},
                        keep_default_na=False)
    return {frozenset(p) for p in zip(pairs.image_id, pairs.duplicate_id)}


def _planted_truth(data):
    copies = pd.read_csv(data / "planted_duplicates.csv", dtype=str)
    return copies, {frozenset(p) for p in zip(copies.image_id, copies.source_id)}


def bench_planted(work):
    """make-sample --label-noise 0.1 --duplicates 60 on 6,000 images, the pixel backbone, audit with
    its defaults: precision and recall of the flagged rows per attribute, duplicate pairs found; then
    train-heads with and without --exclude label_issues.csv, scored against the true val/test labels."""
    import h5py

    from cache.reader import open_cache
    from embed.sample import CELEBA_ATTRIBUTES, make_sample
    from heads.audit.run import AuditSpec, run_audit
    from heads.run.fit import train_heads
    from heads.run.task import TaskSpec

    data, cache = work / "planted", work / "planted.h5"
    truth = make_sample(data, n=PLANTED["n"], label_noise=PLANTED["noise"], duplicates=PLANTED["copies"])
    _embed(data, cache, _pixel_spec(work))
    began = time.perf_counter()
    summary = run_audit(TaskSpec(caches=[cache], attributes=HEAD_ATTRIBUTES), AuditSpec(), work / "planted-audit")
    audit_s = time.perf_counter() - began
    flips = pd.read_csv(data / "planted_label_flips.csv", dtype={"image_id": str})
    issues = pd.read_csv(work / "planted-audit" / "label_issues.csv", dtype={"image_id": str})
    copies, planted_pairs = _planted_truth(data)
    source = dict(zip(copies.image_id, copies.source_id))
    rows = []
    for name in HEAD_ATTRIBUTES:
        planted = set(flips[flips.attribute == name].image_id)
        planted |= {c for c, s in source.items() if s in planted}  # a copy carries its source's given label
        flagged = set(issues[issues.attribute == name].image_id)
        precision, recall = len(flagged & planted) / max(1, len(flagged)), len(flagged & planted) / len(planted)
        rows.append(row(f"audit: planted flips found, {name} (precision / recall)", f"{precision:.3f} / {recall:.3f}",
                        "", "P >= 0.8 at R >= 0.6", precision >= 0.8 and recall >= 0.6,
                        note=f"{len(flagged)} flagged, {len(planted)} planted; cleanlab's noise estimate "
                             f"{100 * summary['labels'][name]['noise_rate']:.1f} % (planted 10 %)"))
    found = _pairs(work / "planted-audit")
    rows.append(row("audit: planted duplicate pairs found / false pairs", f"{len(found & planted_pairs)} / "
                    f"{len(found - planted_pairs)}", "", f"{len(planted_pairs)} / 0",
                    found == planted_pairs, note=f"half re-encoded crops; exact search; audit {audit_s:.1f} s in all "
                                                 f"on {PLANTED['n'] + PLANTED['copies']} rows"))
    # The same cache with val and test labels set to the truth: accuracy then measures the heads,
    # not the noise in the split scoring them. Train keeps its noisy labels.
    clean = work / "planted-true-eval.h5"
    clean.write_bytes(cache.read_bytes())
    with open_cache(clean) as f:
        names = list(f.attribute_names)
    order = [names.index(a) for a in CELEBA_ATTRIBUTES]
    position = {f"{i + 1:06d}.jpg": i for i in range(PLANTED["n"])}
    with h5py.File(clean, "r+") as f:
        ids = [i.decode() for i in f["image_id"][:]]
        partition, labels = f["partition"][:], f["labels"][:]
        for r, image_id in enumerate(ids):
            if partition[r] != 0:
                labels[r, order] = truth[position[source.get(image_id, image_id)]]
        f["labels"][...] = labels
    accuracy, kept = {}, {}
    seeds = (0, 1, 2)
    issues_file = work / "planted-audit" / "label_issues.csv"
    variants = {"all train labels": {}, "--exclude label_issues.csv": {"exclude": issues_file},
                "--mask-labels label_issues.csv": {"mask_labels": issues_file}}
    for k, (name, option) in enumerate(variants.items()):
        runs = [train_heads(TaskSpec(clean, HEAD_ATTRIBUTES, **option), work / f"flagged-{k}-{seed}", seed=seed)
                for seed in seeds]
        accuracy[name] = {split: [float(np.mean([m["attributes"][a][split]["accuracy"] for a in HEAD_ATTRIBUTES]))
                                  for m in runs] for split in ("val", "test")}
        config = json.loads((work / f"flagged-{k}-0" / "config.json").read_text())
        rows_in = config["rows"]["train"] + ((config.get("excluded_unlabelled_rows") or {}).get("train") or 0)
        kept[name] = rows_in * len(HEAD_ATTRIBUTES) - sum((config.get("masked") or {"masked": {}})["masked"].values())
    for split in ("val", "test"):
        rows.append(row(f"audit: train-heads {split} accuracy against true labels: all train labels / --exclude "
                        "flagged rows / --mask-labels flagged labels",
                        " / ".join(f"{100 * np.mean(accuracy[name][split]):.2f}" for name in variants), "%",
                        note=f"mean of Male, Smiling, Young and of seeds {', '.join(map(str, seeds))}; per seed: "
                             + "; ".join(f"{name.split()[0]} " + ", ".join(f"{100 * v:.2f}" for v in accuracy[name][split])
                                         for name in variants) + "; default head, epochs auto"))
    rows.append(row("audit: train labels kept: all / --exclude / --mask-labels",
                    " / ".join(f"{kept[name]:,}" for name in variants), "labels",
                    note=f"{len(HEAD_ATTRIBUTES)} attributes; --exclude drops a row flagged for any attribute for all "
                         "of them, --mask-labels only the flagged label (a row masked for all three leaves)"))
    return rows


def bench_scale(work, quick):
    """A clustered CelebA-size cache (202,599 x 1280 float16; 1,000 near-copies), audited in a fresh
    process: seconds, the near-duplicate search, IVF recall, planted copies found, peak memory; and
    exact search for 8,192 rows, extrapolated to all rows."""
    from bench.synthetic import CELEBA_SPLITS, clustered, write_synthetic_cache
    from heads.audit.duplicates import Centred, exact_neighbours

    splits = (16_000, 2_000, 2_000) if quick else CELEBA_SPLITS
    copies = 100 if quick else 1000
    features, labels, copied = clustered(sum(splits), 1280, copies)
    cache = work / "scale.h5"
    write_synthetic_cache(cache, splits=splits, features=features, labels=labels)
    size_mb = features.nbytes / 2 ** 20
    queries = np.arange(min(8192, len(features)))
    began = time.perf_counter()
    exact_neighbours(Centred(features), 6, queries)
    exact_s = (time.perf_counter() - began) * len(features) / len(queries)
    del features
    search = "exact" if quick else "ivf"
    done = subprocess.run([sys.executable, "-m", "bench.audit_peak", str(cache), str(work / "scale-audit"), search],
                          cwd=ROOT, capture_output=True, text=True, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    seconds, d = result["seconds"], result["duplicates"]
    total = sum(seconds.values())
    found = _pairs(work / "scale-audit")
    planted = {frozenset((f"{a + 1:06d}.jpg", f"{b + 1:06d}.jpg")) for a, b in copied}
    ratio = (result["peak_mb"] - result["before_mb"]) / size_mb
    n = sum(splits)
    label = f"{n:,} x 1280 float16"
    rows = [row(f"audit: 3 attributes, {label} (5-fold mlp:128, epochs auto, + near-duplicates)", round(total, 1),
                "s", "<= 120 s" if not quick else None, (total <= 120) if not quick else None,
                note=f"load {seconds['load']:.1f}, folds {seconds['folds']:.1f}, cleanlab {seconds['labels']:.1f}, "
                     f"near-duplicates {seconds['duplicates']:.1f} s"),
            row(f"audit: near-duplicate search, {label} ({d['search']}: {d.get('index', 'exact')})",
                round(seconds["duplicates"], 1), "s", "<= 60 s" if not quick else None,
                (seconds["duplicates"] <= 60) if not quick else None,
                note="with the exact search of the recall sample" if d["search"] == "ivf" else ""),
            row(f"audit: exact all-pairs search, {label} (extrapolated from 8,192 rows)", round(exact_s, 1), "s",
                note="faiss.knn over blocks; why the IVF index above 20,000 rows"),
            row(f"audit: planted near-copies found / false pairs, {label}", f"{len(found & planted)} / "
                f"{len(found - planted)}", "", f"{len(planted)} / 0", found == planted),
            row(f"audit: peak memory over the features' size, {label}", round(ratio, 2), "x",
                "< 2x" if not quick else None, (ratio < 2) if not quick else None,
                note=f"{result['peak_mb'] - result['before_mb']} MB above the process with its libraries loaded, "
                     f"features {size_mb:.0f} MB")]
    if d["search"] == "ivf":
        rows.insert(2, row(f"audit: IVF recall@1 against exact search ({d['probes']} probes)",
                           round(100 * d["recall_at_1"], 1), "%", note=f"{d['recall_queries']} sampled rows"))
    return rows


def bench_real(work):
    """The real sample with 40 planted copies: label issues flagged per attribute with the gender
    CNN's features (add_4 pooled), and near-duplicates with those features and with the pixel
    backbone (the other pairs it finds are the sample's own duplicates)."""
    from embed.backbones import BackboneSpec
    from harness.caches import real_sample_with_copies
    from heads.audit.run import AuditSpec, run_audit
    from heads.run.task import TaskSpec

    data = real_sample_with_copies(SAMPLE, work / "real", 40)
    _, planted = _planted_truth(data)
    rows = []
    for name, spec in (("gender CNN add_4", BackboneSpec(str(MODELS / "gender_mini_XCEPTION.hdf5"), layer="add_4",
                                                        image_size=64, color="grayscale", value_range=(-1.0, 1.0))),
                       ("pixel backbone", _pixel_spec(work))):
        cache = work / f"real-{name.split()[0]}.h5"
        _embed(data, cache, spec)
        out = work / f"real-audit-{name.split()[0]}"
        summary = run_audit(TaskSpec(caches=[cache], attributes=HEAD_ATTRIBUTES), AuditSpec(), out)
        if name.startswith("gender"):
            flagged = ", ".join(f"{a} {s['flagged']} ({100 * s['flagged_rate']:.1f} %, AUC "
                                f"{s['out_of_fold']['roc_auc']:.2f})" for a, s in summary["labels"].items())
            rows.append(row("audit: real sample, flagged label issues (gender CNN add_4)", flagged, "",
                            note=f"{summary['rows']} rows (1,987 real + 40 copies), 5-fold mlp:128"))
        found = _pairs(out)
        rows.append(row(f"audit: real sample, planted copies found / other pairs ({name})",
                        f"{len(found & planted)} / {len(found - planted)}", "",
                        note="the other pairs: candidates for the sample's own duplicates (look at the page)"))
    return rows


@group("audit", order=13)
def run(ctx):
    work = ctx.workdir / "audit"
    work.mkdir(parents=True, exist_ok=True)
    return bench_planted(work) + bench_scale(work, ctx.quick) + bench_real(work)
