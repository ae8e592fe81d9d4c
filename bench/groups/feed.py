"""feed: the input pipeline alone against a graph-only tf.data map, at 1 thread and all cores."""

import os
import time

import numpy as np

from bench.common import SAMPLE, group, row


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


@group("feed", order=2)
def run(ctx):
    return bench_feed(ctx.size)
