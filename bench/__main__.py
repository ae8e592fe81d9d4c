"""Run the benchmarks, print a table, and rewrite bench/RESULTS.md.

Figures are ratios or times measured inside one run (this machine is shared and noisy). `--quick`
shrinks every size so the suite's smoke test runs in seconds; its numbers mean nothing.
"""

import dataclasses
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import click
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = Path(os.environ.get("CELEBA_SAMPLE", ROOT.parent / "shared" / "celeba-sample"))
HEAD_ATTRIBUTES = ["Male", "Smiling", "Young"]

GROUPS = ("embed", "feed", "heads", "baselines", "probes", "views", "cache", "sweep", "ray", "rehearsal")
FULL = {"images": 512, "image_size": 224, "embed_batch": 64, "rounds": 7, "splits": (162_770, 19_867, 19_962),
        "seeds": (0, 1, 2), "feed_images": 1987}
QUICK = {"images": 24, "image_size": 64, "embed_batch": 8, "rounds": 1, "splits": (3_000, 600, 600), "seeds": (0,),
         "feed_images": 128}


def row(name, value, unit, target=None, passed=None, note=""):
    return {"name": name, "value": value, "unit": unit, "target": target or "", "passed": passed, "note": note}


def _sample_and_backbone(workdir, size):
    """(ids, Dataset, Backbone): the first size["images"] real sample JPEGs, labelled train, and a
    random-weight EfficientNetV2B0 at size["image_size"]."""
    from embed.backbones import load_backbone
    from embed.dataset import load_dataset

    ids = sorted(os.listdir(SAMPLE / "img_align_celeba"))[:size["images"]]
    labels = Path(workdir) / "labels.csv"
    labels.write_text("image_id,Male,partition\n" + "".join(f"{i},1,0\n" for i in ids))
    dataset = load_dataset(labels, SAMPLE / "img_align_celeba")
    backbone = load_backbone("keras:EfficientNetV2B0", weights="none", image_size=size["image_size"])
    return ids, dataset, backbone


def bench_embed(workdir, size):
    """Embed pipeline efficiency: end-to-end embed images/s / bare backbone images/s (same batches)."""
    from embed.pipeline import ImageBatches
    from embed.runner import embed

    ids, dataset, backbone = _sample_and_backbone(workdir, size)
    batches = [b["image"] for b in ImageBatches(dataset.paths, np.arange(len(ids)), backbone.preprocessing,
                                                 size["embed_batch"])]
    backbone.extract(batches[0])

    def bare():
        began = time.perf_counter()
        for images in batches:
            backbone.extract(images).numpy()
        return len(ids) / (time.perf_counter() - began)

    in_backbone = []  # seconds per end-to-end call spent inside the backbone

    def timed_extract(images):
        began = time.perf_counter()
        features = backbone.extract(images)
        features.numpy()  # wait for the result
        in_backbone[-1] += time.perf_counter() - began
        return features

    def end_to_end():
        in_backbone.append(0.0)
        began = time.perf_counter()
        embed(dataset, dataclasses.replace(backbone, extract=timed_extract), Path(workdir) / "embed.h5",
              batch_size=size["embed_batch"], overwrite=True, show_progress=False)
        seconds = time.perf_counter() - began
        in_backbone[-1] /= seconds
        return len(ids) / seconds

    cold = end_to_end()  # the process's first embed: tf.data and thread start-up included
    # Paired rounds, each a bare pass then an end-to-end pass over the same images: the ratio of a
    # pair cancels the machine's slow drifts, and the median of the pairs ignores a burst of noise.
    rounds = [(bare(), end_to_end()) for _ in range(size["rounds"])]
    bare_rate, pipeline = (float(np.median([r[k] for r in rounds])) for k in (0, 1))
    ratio = float(np.median([e / b for b, e in rounds]))
    spread = ", ".join(f"{b:.1f}/{e:.1f}" for b, e in rounds)
    return [row("embed: bare backbone (EfficientNetV2B0, random weights)", round(bare_rate, 1), "images/s",
                note=f"{len(ids)} real CelebA JPEGs 178x218 -> {size['image_size']}px, batch {size['embed_batch']}; "
                     f"median of {size['rounds']} paired rounds (bare/end-to-end: {spread})"),
            row("embed: end to end (decode, resize, backbone, HDF5)", round(pipeline, 1), "images/s",
                note=f"first call in the process, with start-up: {cold:.1f} images/s"),
            row("embed: pipeline efficiency", round(ratio, 3), "ratio", ">= 0.97", ratio >= 0.97,
                note="median of the rounds' end-to-end / bare ratios"),
            row("embed: share of end-to-end time inside the backbone", round(float(np.median(in_backbone[1:])), 3),
                "ratio", note="median over the rounds; the rest is decoding the first batch, opening the "
                              "cache and the writes. Measured within each call, so immune to drift between calls")]


def _graph_only(paths, preprocessing, batch_size, threads, float_resize=False):
    """The limit: a plain graph-mode tf.data map (read, decode, resize) with the same parallelism,
    autotuning off, and no error handling (a bad file would stop it). float_resize: resize a
    float32 copy, as our fast path does for small images (the same kernels as ours)."""
    import tensorflow as tf

    from embed.pipeline import preprocess

    def load(path):
        image = tf.io.decode_image(tf.io.read_file(path), channels=preprocessing.channels, expand_animations=False)
        image.set_shape([None, None, preprocessing.channels])
        return preprocess(tf.cast(image, tf.float32) if float_resize else image, preprocessing)
    options = tf.data.Options()
    options.autotune.enabled = False
    options.threading.private_threadpool_size = threads
    return (tf.data.Dataset.from_tensor_slices(paths).map(load, num_parallel_calls=threads, deterministic=True)
            .batch(batch_size).prefetch(2).with_options(options))


def bench_feed(size):
    """The input pipeline alone (no backbone): ours vs the graph-only limit on the real sample's
    JPEGs, at 1 thread and at all cores, paired rounds in alternating order."""
    from embed.backbones import Preprocessing
    from embed.pipeline import ImageBatches

    folder = SAMPLE / "img_align_celeba"
    paths = sorted(str(folder / name) for name in os.listdir(folder))[:size["feed_images"]]
    prep = Preprocessing(image_size=224, color="rgb", value_range=(0.0, 1.0))
    cores = os.cpu_count() or 2

    def rate(make):
        began = time.perf_counter()
        count = sum(int(b["image"].shape[0]) if isinstance(b, dict) else int(b.shape[0]) for b in make())
        return count / (time.perf_counter() - began)

    rows, per_core = [], None
    for threads in (1, cores):
        makers = {"ours": lambda: ImageBatches(paths, np.arange(len(paths)), prep, 64, threads=threads),
                  "graph": lambda: _graph_only(paths, prep, 64, threads),
                  "same kernels": lambda: _graph_only(paths, prep, 64, threads, float_resize=True)}
        for make in makers.values():
            rate(make)  # warm: file cache, tf.data start-up, traces
        rounds = []  # {variant: images/s}, the variants' order reversed every other round
        for i in range(size["rounds"]):
            order = list(makers) if i % 2 == 0 else list(reversed(makers))
            rounds.append({name: rate(makers[name]) for name in order})
        median = {name: float(np.median([r[name] for r in rounds])) for name in makers}
        ratios = {name: [r["ours"] / r[name] for r in rounds] for name in ("graph", "same kernels")}
        ratio = float(np.median(ratios["graph"]))
        per_core = per_core or median["ours"]
        label = "1 thread" if threads == 1 else f"all {threads} cores"
        rows += [row(f"feed: ours, {label}", round(median["ours"]), "images/s",
                     note=f"{len(paths)} real CelebA JPEGs 178x218 -> 224 px, batch 64, no backbone; median of "
                          f"{len(rounds)} rounds, variants in alternating order"),
                 row(f"feed: graph-only tf.data map, {label}", round(median["graph"]), "images/s",
                     note="read_file -> decode_image -> resize (from uint8, as a plain map does), same "
                          "parallelism, no error handling"),
                 row(f"feed: ours / graph-only, {label}", round(ratio, 3), "ratio", ">= 0.9", ratio >= 0.9,
                     note="median of the rounds' ratios: " + ", ".join(f"{v:.2f}" for v in ratios["graph"])),
                 row(f"feed: ours / graph-only with ours' float32 resize, {label}",
                     round(float(np.median(ratios["same kernels"])), 3), "ratio",
                     note="the same kernels without the header check and window bookkeeping: what the "
                          "guarantees cost; rounds: " + ", ".join(f"{v:.2f}" for v in ratios["same kernels"]))]
    needed = int(np.ceil(8000 / per_core))
    rows.append(row("feed: cores to feed 8,000 images/s (a GPU running EfficientNet-B0)", needed, "cores",
                    note=f"at the measured {per_core:.0f} images/s per core (1 thread, 224 px); assumes linear scaling"))
    return rows


def bench_rehearsal(workdir, quick):
    """A full-size pass: make-sample with 202,599 images, embedded with a tiny backbone (32 px
    conv), watched from outside: images/s over the first and last 10 % of rows, the process's
    memory at 10 % and 90 % of the rows and at its peak, the file's size against the layout's
    prediction, and `info` and `load_split` at full size."""
    import h5py

    from bench.reliability import prepare_model, rows_done
    from cache.reader import load_split
    from embed.sample import make_sample

    n = 4000 if quick else 202_599
    work = Path(workdir)
    began = time.perf_counter()
    make_sample(work / "full", n=n, seed=0)
    sample_s = time.perf_counter() - began
    os.sync()  # the sample's ~2 GB of new files would otherwise be written back during the embed
    model = prepare_model(work / "tiny.keras")
    out = work / "full.h5"
    command = [sys.executable, str(ROOT / "cli.py"), "embed", "--data-dir", str(work / "full"), "--out", str(out),
               "--model", str(model), "--value-range", "0,1", "--image-size", "32", "--batch-size", "256"]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    trace, peak_kb = [], 0  # (seconds, rows done, RSS kB)
    started = time.perf_counter()
    while proc.poll() is None:
        status = Path(f"/proc/{proc.pid}/status")
        try:
            fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
            rss, peak_kb = int(fields["VmRSS"].split()[0]), max(peak_kb, int(fields["VmHWM"].split()[0]))
        except (OSError, KeyError, ValueError):
            rss = 0
        trace.append((time.perf_counter() - started, max(rows_done(out), 0), rss))
        time.sleep(0.1)
    stderr = proc.communicate()[1]
    if proc.returncode != 0:
        raise RuntimeError(f"rehearsal embed failed: {stderr[-500:]}")
    exited = time.perf_counter() - started
    if trace[-1][1] < n:  # the process exited before a poll saw the last rows saved
        trace.append((exited, n, trace[-1][2]))
    times, done = np.array([t for t, _, _ in trace]), np.array([r for _, r, _ in trace])

    def reached(rows):
        """When rows_done first reached `rows`: interpolated between the two polls around it. (Not
        np.interp over the whole trace: rows_done stays at n while the process exits, and a flat
        stretch made the last 10 % look a quarter slower than it ran.)"""
        k = int(np.argmax(done >= rows))
        if k == 0 or done[k] == done[k - 1]:
            return float(times[k])
        return float(times[k - 1] + (rows - done[k - 1]) / (done[k] - done[k - 1]) * (times[k] - times[k - 1]))

    # start-up (imports, model, cache creation) is not pace: count from the first batch seen saved
    first_rows, first_write = int(done[done > 0][0]), float(times[done > 0][0])

    def rate_between(lo, hi):
        """Rows per second between the moments rows_done reached lo * n and hi * n."""
        r0 = max(lo * n, first_rows)
        t0 = first_write if r0 == first_rows else reached(r0)
        t1 = reached(hi * n)
        return (hi * n - r0) / (t1 - t0) if t1 > t0 else float("nan")

    def rss_at(fraction):
        return next((m for _, r, m in trace if r >= fraction * n and m), 0) / 1e6

    deciles = [rate_between(k / 10, (k + 1) / 10) for k in range(10)]
    first, last = deciles[0], deciles[-1]
    size_bytes = out.stat().st_size
    with h5py.File(out, "r") as f:
        dim = f["features"].shape[1]
    predicted = n * (dim * 2 + 256) + n * (40 + 1 + 1) + sum(len(i) + 16 for i in os.listdir(work / "full" / "img_align_celeba"))
    began = time.perf_counter()
    info = subprocess.run([sys.executable, str(ROOT / "cli.py"), "info", str(out)], capture_output=True)
    info_s = time.perf_counter() - began
    began = time.perf_counter()
    load_split(out, "train", dtype=None)
    load_s = time.perf_counter() - began
    return [row(f"rehearsal: make-sample --n {n:,}", round(sample_s, 1), "s", "<= 300 s", sample_s <= 300,
                note=f"{n / sample_s:.0f} images/s"),
            row("rehearsal: embed images/s, first 10 % of rows", round(first) if np.isfinite(first) else "n/a", "images/s",
                note="tiny conv backbone at 32 px, batch 256: the input pipeline's pace"),
            row("rehearsal: embed images/s, last 10 % of rows", round(last) if np.isfinite(last) else "n/a", "images/s",
                note=f"last / first = {last / first:.2f}; every tenth of the rows: "
                     + ", ".join(f"{r:.0f}" for r in deciles) + f"; the process exited {exited - reached(n):.1f} s after "
                     f"the last row was saved (not counted as pace)"),
            row("rehearsal: embed memory at 10 % / 90 % of rows, peak", round(rss_at(0.9), 2), "GB RSS at 90 %",
                note=f"{rss_at(0.1):.2f} GB at 10 %, peak {peak_kb / 1e6:.2f} GB"),
            row("rehearsal: cache file size / layout's prediction", round(size_bytes / predicted, 3), "ratio",
                note=f"{size_bytes / 1e6:.0f} MB on disk; predicted {predicted / 1e6:.0f} MB (features float16 "
                     "+ 256-byte error texts + ids, labels, partition, status)"),
            row(f"rehearsal: `cli.py info` at {n:,} rows", round(info_s, 2), "s", "<= 1 s",
                info_s <= 1 and info.returncode == 0, note="whole command incl. Python start-up"),
            row(f"rehearsal: load_split(train) at {n:,} rows", round(load_s, 2), "s",
                note="stored dtype, non-finite check included")]


def bench_ray(workdir, size):
    """Ray's overhead on one machine: the same embed, local engine vs a local Ray instance."""
    import ray

    from embed.ray_engine import RayEngine
    from embed.runner import embed

    ids, dataset, backbone = _sample_and_backbone(workdir, size)

    def rate(engine):
        began = time.perf_counter()
        embed(dataset, backbone, Path(workdir) / f"{engine}.h5", batch_size=size["embed_batch"], overwrite=True,
              show_progress=False, engine=RayEngine(backbone) if engine == "ray" else None)
        return len(ids) / (time.perf_counter() - began)

    rate("local")  # warm: the first embed in a process pays tf.data start-up
    local = rate("local")
    began = time.perf_counter()
    cold = rate("ray")  # starts the local Ray instance and its actor (TensorFlow import, model build)
    cold_seconds = time.perf_counter() - began
    warm = rate("ray")  # instance running; a new actor pool still loads the model
    ray.shutdown()
    note = (f"{len(ids)} real JPEGs at {size['image_size']}px, batch {size['embed_batch']}, "
            f"1 actor on 2 CPUs; first call {cold_seconds:.0f} s incl. starting Ray")
    return [row("ray: local engine", round(local, 1), "images/s"),
            row("ray: Ray engine, instance already running", round(warm, 1), "images/s",
                note=f"{warm / local:.2f} of local: {len(ids) / warm - len(ids) / local:.1f} s more, the actor's "
                     "start-up (TensorFlow import, model build) paid once per embed call"),
            row("ray: Ray engine, cold (starts Ray)", round(cold, 1), "images/s", note=note)]


def _naive_fit(train, val, attributes, head="mlp:128", seed=0):
    """A plain keras Model.fit of the same model (the reference notebook's way), timed."""
    import keras

    from heads.architectures import parse_head
    from heads.defaults import KERAS
    keras.utils.set_random_seed(seed)
    model = parse_head(head).build(train[0].shape[1], attributes, KERAS["dropout"], KERAS["l2"])
    model.compile(optimizer=keras.optimizers.Adam(KERAS["lr"]), loss={a: "binary_crossentropy" for a in attributes},
                  metrics={a: ["accuracy"] for a in attributes})
    began = time.perf_counter()
    history = model.fit(train[0], {a: train[1][:, j] for j, a in enumerate(attributes)}, batch_size=KERAS["batch_size"],
                        epochs=KERAS["epochs"], verbose=0,
                        validation_data=(val[0], {a: val[1][:, j] for j, a in enumerate(attributes)}))
    seconds = time.perf_counter() - began
    return seconds, {a: history.history[f"val_{a}_accuracy"][-1] for a in attributes}


def _ours(train, val, attributes, head="mlp:128", seed=0):
    from heads.keras_head import KerasHead
    began = time.perf_counter()
    fitted = KerasHead(head=head, seed=seed).fit(train[0], train[1], attributes, val[0], val[1])
    seconds = time.perf_counter() - began
    return seconds, {a: fitted.history_[-1][f"val_{a}_accuracy"] for a in attributes}


def bench_heads(features, labels, splits, seeds):
    """The reference head against a naive model.fit over `seeds` (paired, alternating order), then
    the linear and the two-layer head, and all 40 attributes."""
    import keras

    from embed.sample import CELEBA_ATTRIBUTES
    from heads.keras_head import aligned
    keras.ops.zeros(1)  # both fits are timed with TensorFlow and Keras imported and started (about 5 s here)
    names = list(CELEBA_ATTRIBUTES)
    n_train, n_val = splits[0], splits[1]
    cols = [names.index(a) for a in HEAD_ATTRIBUTES]
    train_x, val_x = aligned(features[:n_train]), aligned(features[n_train:n_train + n_val])  # as load_split returns them
    train = (train_x, labels[:n_train][:, cols])
    val = (val_x, labels[n_train:n_train + n_val][:, cols])
    ours, naive = [], []
    for i, seed in enumerate(seeds):
        pair = [(ours, _ours), (naive, _naive_fit)]
        for results, fit in pair if i % 2 == 0 else pair[::-1]:
            results.append(fit(train, val, HEAD_ATTRIBUTES, seed=seed))
    ours_s, naive_s = (float(np.median([r[0] for r in results])) for results in (ours, naive))
    # one-sided: how much worse ours is than naive, mean over seeds, worst attribute
    worse = {a: 100 * float(np.mean([n[1][a] - o[1][a] for o, n in zip(ours, naive)])) for a in HEAD_ATTRIBUTES}
    accs = ", ".join(f"{a} {100 * np.mean([o[1][a] for o in ours]):.2f}/{100 * np.mean([n[1][a] for n in naive]):.2f}"
                     for a in HEAD_ATTRIBUTES)
    gap = max(worse.values())
    linear_s, _ = _ours(train, val, HEAD_ATTRIBUTES, head="linear")
    deep = [_ours(train, val, HEAD_ATTRIBUTES, head="mlp:512,128"), _naive_fit(train, val, HEAD_ATTRIBUTES, head="mlp:512,128")]
    deep_speedup = deep[1][0] / deep[0][0]
    all_s, _ = _ours((train_x, labels[:n_train]), (val_x, labels[n_train:n_train + n_val]), names)
    return [row("heads: naive keras Model.fit (3 attrs, 3 epochs, batch 128)", round(naive_s, 2), "s",
                note=f"{n_train:,} x {features.shape[1]} train rows; median of {len(seeds)} seeds "
                     f"({', '.join(f'{r[0]:.1f}' for r in naive)})"),
            row("heads: ours, reference head mlp:128 (3 attrs)", round(ours_s, 2), "s", "<= 10 s", ours_s <= 10,
                note=f"median of {len(seeds)} seeds ({', '.join(f'{r[0]:.2f}' for r in ours)})"),
            row("heads: speed-up over naive fit", round(naive_s / ours_s, 2), "x", ">= 3.5x", naive_s / ours_s >= 3.5),
            row("heads: val accuracy, naive minus ours (mean over seeds, worst attr)", round(gap, 2), "pt",
                "<= 0.5 pt", gap <= 0.5, note=f"val % ours/naive, mean of {len(seeds)} seeds: {accs}"),
            row("heads: ours, linear head (3 attrs)", round(linear_s, 2), "s", "<= 6 s", linear_s <= 6),
            row("heads: ours, mlp:512,128 (3 attrs)", round(deep[0][0], 2), "s",
                note=f"naive model.fit of the same model {deep[1][0]:.1f} s; val % ours/naive: "
                     + ", ".join(f"{a} {100 * deep[0][1][a]:.2f}/{100 * deep[1][1][a]:.2f}" for a in HEAD_ATTRIBUTES)),
            row("heads: speed-up over naive fit, mlp:512,128", round(deep_speedup, 2), "x", ">= 3x", deep_speedup >= 3),
            row("heads: ours, --attrs all (40 outputs)", round(all_s, 2), "s", "<= 12 s", all_s <= 12)]


def bench_probes(features, labels, splits):
    """The probe protocols on the CelebA-size cache: logreg-cv for 3 attributes, knn-cosine's
    scoring of every val row against every train row, the 13-rate linear grid."""
    from embed.sample import CELEBA_ATTRIBUTES
    from heads.probes import KnnCosine, LinearGrid, LogRegCV, _normalised
    names = list(CELEBA_ATTRIBUTES)
    n_train, n_val = splits[0], splits[1]
    cols = [names.index(a) for a in HEAD_ATTRIBUTES]
    train_x, train_y = features[:n_train], labels[:n_train][:, cols]
    val_x, val_y = features[n_train:n_train + n_val], labels[n_train:n_train + n_val][:, cols]
    rows = []
    began = time.perf_counter()
    logreg = LogRegCV().fit(train_x, train_y, HEAD_ATTRIBUTES, val_x, val_y)
    seconds = time.perf_counter() - began
    best = {a: max(curve.values()) for a, curve in logreg.selection_["val_accuracy_by_C"].items()}
    tried = len(next(iter(logreg.selection_["val_accuracy_by_C"].values())))
    rows.append(row("probes: logreg-cv, 3 attrs", round(seconds, 1), "s", "<= 120 s", seconds <= 120,
                    note=f"{tried} values of C per attribute; chosen C "
                         + ", ".join(f"{a} {c:g} (val {100 * best[a]:.2f} %)" for a, c in logreg.selection_["C"].items())))
    knn = KnnCosine()
    knn._index(_normalised(train_x), train_y)
    queries = _normalised(val_x)
    began = time.perf_counter()
    shares = knn._neighbours.vote_shares(queries)
    seconds = time.perf_counter() - began
    accuracy = ", ".join(f"k={k} {100 * ((shares[i] >= 0.5) == (val_y > 0.5)).mean():.2f} %" for i, k in enumerate(knn.ks))
    rows.append(row("probes: knn-cosine, scoring all val rows against all train rows", round(seconds, 1), "s",
                    "<= 60 s", seconds <= 60,
                    note=f"{len(val_x):,} x {len(train_x):,} similarities, top 200, 4 values of k; mean val accuracy {accuracy}"))
    began = time.perf_counter()
    grid = LinearGrid().fit(train_x, train_y, HEAD_ATTRIBUTES, val_x, val_y)
    seconds = time.perf_counter() - began
    rows.append(row("probes: linear-grid, 13 learning rates in one pass (3 attrs)", round(seconds, 1), "s",
                    note=f"best lr {grid.selection_['lr']:g}: mean val {100 * max(grid.selection_['val_accuracy_by_lr'].values()):.2f} %"))
    return rows


def bench_baselines(features, labels, splits):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from embed.sample import CELEBA_ATTRIBUTES
    names = list(CELEBA_ATTRIBUTES)
    n_train, n_val = splits[0], splits[1]
    X, Xv = features[:n_train], features[n_train:n_train + n_val]
    began = time.perf_counter()
    accuracies = []
    for a in HEAD_ATTRIBUTES:
        j = names.index(a)
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(X, labels[:n_train, j])
        accuracies.append(f"{a} {100 * model.score(Xv, labels[n_train:n_train + n_val, j]):.2f}")
    seconds = time.perf_counter() - began
    return [row("baselines: logistic regression, 3 attrs", round(seconds, 2), "s", "<= 30 s", seconds <= 30,
                note="val %: " + ", ".join(accuracies))]


def _pixel_backbone(path):
    """A fixed, weight-free representation of a face: 64x64 RGB averaged over 4x4 blocks (768-d),
    as a .keras file cut at layer "embedding". Real signal without pretrained weights."""
    import keras
    inputs = keras.Input((64, 64, 3))
    x = keras.layers.AveragePooling2D(4)(inputs)
    x = keras.layers.Flatten(name="embedding")(x)
    keras.Model(inputs, keras.layers.Dense(1)(x)).save(path)
    return path


def bench_views(workdir, features, labels, splits, quick):
    """Mirrored views and groups on the real sample (a fixed pixel backbone embedded with --views
    flip): logreg and the reference head on orig / mean / augment for Male, Smiling, Young, and ERM
    vs DFR worst-group accuracy for Blond_Hair x Male over seeds; plus the time --views augment costs
    the reference head on the CelebA-size synthetic cache (twice the training rows)."""
    from embed.backbones import load_backbone
    from embed.dataset import load_dataset
    from embed.runner import embed
    from heads.keras_head import KerasHead, aligned
    from heads.train import run_kinds, train_heads

    work = Path(workdir)
    backbone = load_backbone(str(_pixel_backbone(work / "pixels.keras")), layer="embedding", value_range=(0.0, 1.0))
    dataset = load_dataset(SAMPLE / "list_attr_celeba.txt", SAMPLE / "img_align_celeba", SAMPLE / "list_eval_partition.txt")
    cache = work / "sample-views.h5"
    began = time.perf_counter()
    embed(dataset, backbone, cache, batch_size=64, show_progress=False, views=("flip",), feature_dtype="float32")
    embed_s = time.perf_counter() - began
    seeds = (0,) if quick else (0, 1, 2)
    rows = [row("views: real sample embedded with --views flip (pixel backbone, 768-d)", round(embed_s, 1), "s",
                note=f"{len(dataset.image_ids)} real images; the backbone runs twice per image")]
    for views in ("orig", "mean", "augment"):
        logreg = run_kinds(cache, work / f"lr-{views}", ["logreg"], HEAD_ATTRIBUTES, views=views)["logreg"]
        heads = [train_heads(cache, work / f"h-{views}-{seed}", HEAD_ATTRIBUTES, features="standardize", seed=seed,
                             views=views, epochs=10) for seed in seeds]
        for name, results in (("logreg", [logreg]), ("reference head (10 epochs)", heads)):
            accuracy = {a: [r["attributes"][a]["test"]["accuracy"] for r in results] for a in HEAD_ATTRIBUTES}
            mean = np.mean([np.mean(v) for v in accuracy.values()])
            spread = "" if len(results) == 1 else f"; min-max over {len(results)} seeds " + ", ".join(
                f"{a} {100 * min(v):.1f}-{100 * max(v):.1f}" for a, v in accuracy.items())
            rows.append(row(f"views: {name}, --views {views}, test accuracy (mean of 3 attrs)", round(100 * mean, 2), "%",
                            note=", ".join(f"{a} {100 * np.mean(v):.1f}" for a, v in accuracy.items()) + spread))
    kinds = run_kinds(cache, work / "kinds", ["majority", "logreg-cv", "knn-cosine", "linear-grid"], HEAD_ATTRIBUTES,
                      features="standardize")
    kinds.update({spec: train_heads(cache, work / f"spec-{spec}", HEAD_ATTRIBUTES, head=spec, features="standardize",
                                    epochs=10) for spec in ("linear", "mlp:512,128")})
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
            runs = run_kinds(cache, work / f"dfr-{target}-{seed}", ["logreg", "dfr"], target, groups="Male",
                             features="standardize", seed=seed, dfr_on=dfr_on)
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
    names = list(__import__("embed.sample", fromlist=["x"]).CELEBA_ATTRIBUTES)
    cols = [names.index(a) for a in HEAD_ATTRIBUTES]
    n_train = splits[0]
    train_x = features[:n_train]
    flipped = aligned(np.concatenate([train_x, train_x + 0.01 * np.float32(1)]))  # stands for the flip view
    y = labels[:n_train][:, cols]
    began = time.perf_counter()
    KerasHead().fit(aligned(train_x), y, HEAD_ATTRIBUTES)
    orig_s = time.perf_counter() - began
    began = time.perf_counter()
    KerasHead().fit(flipped, np.concatenate([y, y]), HEAD_ATTRIBUTES)
    augment_s = time.perf_counter() - began
    rows.append(row("views: reference head, --views augment (both views as training rows)", round(augment_s, 2), "s",
                    note=f"{2 * n_train:,} training rows; --views orig {orig_s:.2f} s on {n_train:,}"))
    return rows


def bench_cache_io(workdir, features, labels, splits):
    from bench.synthetic import write_synthetic_cache
    from cache.reader import cache_info, load_split
    from heads.keras_head import KerasHead
    rows, accuracy = [], {}
    for dtype in ("float16", "float32"):
        path = Path(workdir) / f"io-{dtype}.h5"
        began = time.perf_counter()
        write_synthetic_cache(path, splits, features=features, labels=labels, dtype=dtype)
        write_rate = len(features) / (time.perf_counter() - began)
        size_mb = path.stat().st_size / 1e6
        load_split(path, "train", dtype=None)  # warm the page cache, as a plain read would find it
        began = time.perf_counter()
        train = load_split(path, "train", HEAD_ATTRIBUTES, dtype=None)  # as train-heads loads it
        load_s = time.perf_counter() - began
        nbytes = train.features.nbytes
        began = time.perf_counter()
        load_split(path, "train", HEAD_ATTRIBUTES, dtype=np.float32)
        as_float32_gbs = nbytes / (time.perf_counter() - began) / 1e9
        began = time.perf_counter()
        with open(path, "rb") as f:
            f.read(nbytes)
        plain_s = time.perf_counter() - began
        ratio = plain_s / load_s
        if dtype == "float16":  # embed's default: the cache people share
            began = time.perf_counter()
            info = subprocess.run([sys.executable, str(ROOT / "cli.py"), "info", str(path)], capture_output=True)
            info_s = time.perf_counter() - began
            began = time.perf_counter()
            cache_info(path)
            open_s = time.perf_counter() - began
            began = time.perf_counter()
            checked = cache_info(path, check=True)["check"]
            check_s = time.perf_counter() - began
            rows.append(row(f"cache: `cli.py info` on a {len(features):,}-row cache (validated on open)",
                            round(info_s, 2), "s", "<= 1 s", info_s <= 1 and info.returncode == 0,
                            note=f"whole command incl. Python start-up; cache_info itself {open_s:.2f} s; "
                                 f"`info --check` (reads every feature) {check_s:.1f} s, "
                                 f"{len(checked['nonfinite_rows'])} non-finite rows"))
        val = load_split(path, "val", HEAD_ATTRIBUTES, dtype=None)
        head = KerasHead().fit(train.features, train.labels, HEAD_ATTRIBUTES, val.features, val.labels)
        accuracy[dtype] = np.mean([head.history_[-1][f"val_{a}_accuracy"] for a in HEAD_ATTRIBUTES])
        rows += [row(f"cache {dtype}: write", round(write_rate), "rows/s", note=f"file {size_mb:.0f} MB"),
                 row(f"cache {dtype}: load train split (stored dtype, as train-heads does)",
                     round(nbytes / load_s / 1e9, 2), "GB/s",
                     note=f"plain read of the same bytes {nbytes / plain_s / 1e9:.2f} GB/s; "
                          f"loading with conversion to float32: {as_float32_gbs:.2f} GB/s"),
                 row(f"cache {dtype}: load / plain read", round(ratio, 2), "ratio", ">= 0.5", ratio >= 0.5)]
        path.unlink()
    gap = abs(accuracy["float16"] - accuracy["float32"]) * 100
    rows.append(row("cache: head val accuracy float16 vs float32 (mean of 3 attrs)", round(gap, 3), "pt", "<= 0.2 pt",
                    gap <= 0.2, note=f"{100 * accuracy['float16']:.2f} vs {100 * accuracy['float32']:.2f}"))
    return rows


def bench_sweep(workdir, features, labels, splits, quick):
    """The issue's 18-variant grid (hidden x dropout x lr, 3 epochs each) through `run_sweep`."""
    from bench.synthetic import write_synthetic_cache
    from heads.sweep import run_sweep
    path = Path(workdir) / "sweep.h5"
    write_synthetic_cache(path, splits, features=features, labels=labels)
    grid = (["hidden=8,16", "lr=1e-3,3e-4"] if quick else
            ["hidden=64,128,256", "dropout=0,0.2,0.5", "lr=1e-3,3e-4"])
    began = time.perf_counter()
    board = run_sweep(path, Path(workdir) / "sweep", grid, HEAD_ATTRIBUTES)
    seconds = time.perf_counter() - began
    best = board.index[0].rsplit("/", 1)[-1]
    training = sum(json.loads(p.read_text())["run"]["train_seconds"]
                   for p in (Path(workdir) / "sweep").glob("*/metrics.json"))
    return [row(f"sweep: {len(board)} variants, 3 epochs each (trained together in one pass)", round(seconds, 1), "s",
                "<= 180 s", seconds <= 180,
                note=f"training {training:.0f} s, the rest scoring, saving and plotting each run; best by mean "
                     f"val accuracy: {best} ({100 * board[('mean', 'accuracy')].iloc[0]:.2f} %)")]


def machine():
    import tensorflow as tf
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return f"{os.cpu_count()} cores, {cpu}; Python {platform.python_version()}, TensorFlow {tf.__version__}"


# Rows whose first word is not their group's name: bench_views also runs the kinds and the group
# experiments on the real sample's cache it embeds.
ROW_GROUPS = {"kinds": "views", "groups": "views"}


def _group(measure):
    """The group a measure belongs to: the first word of its name ("cache float16: ..." -> cache)."""
    first = measure.split()[0].rstrip(":")
    return ROW_GROUPS.get(first, first)


def render(rows, command, quick, kept=(), kept_from=""):
    """The results table: this run's rows, then rows kept from the previous file (other groups)."""
    lines = [f"# Benchmark results{' (quick smoke run: sizes shrunk, figures meaningless)' if quick else ''}", "",
             f"- date: {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}",
             f"- machine: {machine()}", f"- command: `{command}`"]
    if kept:
        lines.append(f"- rows of the groups not run by this command are kept from the previous run ({kept_from})")
    lines += ["", "| measure | value | unit | target | result | note |", "|---|---|---|---|---|---|"]
    for r in rows:
        result = "" if r["passed"] is None else ("PASS" if r["passed"] else "MISS")
        lines.append(f"| {r['name']} | {r['value']} | {r['unit']} | {r['target']} | {result} | {r['note']} |")
    return "\n".join(lines + list(kept)) + "\n"


@click.command()
@click.option("--quick", is_flag=True, help="Tiny sizes: checks the scripts run, measures nothing.")
@click.option("--results", type=click.Path(dir_okay=False),
              help="Markdown file to write (default bench/RESULTS.md for a full run, none for --quick).")
@click.option("--only", type=click.Choice(GROUPS), multiple=True,
              help="Run only these groups; the results file keeps the other groups' rows from its last run.")
def main(quick, results, only):
    """Benchmark the embed pipeline, head training, baselines, cache I/O and sweeps against their targets."""
    from bench.synthetic import planted
    size = QUICK if quick else FULL
    groups = set(only) or set(GROUPS)
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        if "embed" in groups:
            rows += bench_embed(workdir, size)
        if "feed" in groups:
            rows += bench_feed(size)
        features = labels = None
        if groups & {"heads", "baselines", "probes", "views", "cache", "sweep"}:
            features, labels = planted(sum(size["splits"]), 1280)
        if "heads" in groups:
            rows += bench_heads(features, labels, size["splits"], size["seeds"])
        if "baselines" in groups:
            rows += bench_baselines(features, labels, size["splits"])
        if "probes" in groups:
            rows += bench_probes(features, labels, size["splits"])
        if "views" in groups:
            rows += bench_views(workdir, features, labels, size["splits"], quick)
        if "cache" in groups:
            rows += bench_cache_io(workdir, features, labels, size["splits"])
        if "sweep" in groups:
            rows += bench_sweep(workdir, features, labels, size["splits"], quick)
        if "ray" in groups:
            rows += bench_ray(workdir, size)
        if "rehearsal" in groups:
            rows += bench_rehearsal(workdir, quick)
    target = results or (None if quick else ROOT / "bench" / "RESULTS.md")
    previous = Path(target).read_text() if target and Path(target).exists() else ""
    kept = [line for line in previous.splitlines()
            if line.startswith("| ") and _group(line[2:]) in set(GROUPS) - groups]
    kept_from = "; ".join(line[2:] for line in previous.splitlines() if line.startswith(("- date:", "- command:")))
    text = render(rows, "python -m bench " + " ".join(sys.argv[1:]), quick, kept, kept_from)
    click.echo(text)
    if target:
        notes = previous[previous.index("## Notes"):] if "## Notes" in previous else ""
        Path(target).write_text(text + ("\n" + notes if notes else ""))


if __name__ == "__main__":
    main()
