"""labels: a label overlay at CelebA size (`--labels FILE` on a 202,599-row cache) against a plain pandas read of the same file, and its memory against the features it never reads."""

import io
import time
import tracemalloc
from pathlib import Path

import numpy as np

from bench.common import group, row
from bench.synthetic import CELEBA_SPLITS


def write_celeba_text(path, ids, names, labels):
    """A list_attr_celeba.txt of these labels (-1/1), the original's layout."""
    body = "\n".join(f"{i} " + " ".join(np.where(v, " 1", "-1")) for i, v in zip(ids, labels))
    Path(path).write_text(f"{len(ids)}\n{' '.join(names)}\n{body}\n")


@group("labels", order=15)
def run(ctx):
    import pandas as pd

    from cache.writer import create_cache
    from embed.sample import CELEBA_ATTRIBUTES
    from heads.run.overlay import Overlay, stored_labels

    n, names = sum(CELEBA_SPLITS), list(CELEBA_ATTRIBUTES)
    rng = np.random.default_rng(0)
    labels = (rng.random((n, len(names))) < 0.3).astype(np.uint8)
    ids = [f"{i + 1:06d}.jpg" for i in range(n)]
    partition = np.concatenate([np.full(count, p, np.int8) for p, count in enumerate(CELEBA_SPLITS)])
    caches = {}
    for dim in (1280, 64):  # the same labels beside wide and narrow features: the overlay's memory must not care
        caches[dim] = ctx.workdir / f"labels-cache-{dim}.h5"
        create_cache(caches[dim], image_ids=ids, attribute_names=names, labels=labels, partition=partition,
                     feature_dim=dim, feature_dtype="float16",
                     settings={"backbone": {"model": "synthetic", "kind": "synthetic"}, "preprocessing": {},
                               "dataset_fingerprint": "labels", "sources": {}})
    relabelled = labels.copy()
    flips = rng.random(relabelled.shape) < 0.01
    relabelled[flips] = 1 - relabelled[flips]
    text = ctx.workdir / "list_attr_celeba.txt"
    write_celeba_text(text, ids, names, relabelled)
    rounds = []
    for _ in range(3):  # paired: a plain pandas read of the same file, then the overlay, alternating
        began = time.perf_counter()
        pd.read_csv(io.StringIO(text.read_text()), sep=r"\s+", skiprows=2, header=None)
        plain = time.perf_counter() - began
        began = time.perf_counter()
        applied, record = Overlay.read([text]).apply(stored_labels(caches[1280]))
        rounds.append((time.perf_counter() - began, plain))
    seconds, plain = min(rounds)
    assert sum(a["changed"] for a in record["attributes"].values()) == int(flips.sum())
    peaks = {}
    for dim, cache in caches.items():
        tracemalloc.start()
        Overlay.read([text]).apply(stored_labels(cache))
        peaks[dim] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        cache.unlink()
    ratio = peaks[1280] / peaks[64]
    file_mb = text.stat().st_size / 1e6
    return [row(f"labels: --labels list_attr_celeba.txt applied to a {n:,}-row cache (read, check, join)",
                round(seconds, 2), "s", "<= 2 s", seconds <= 2,
                note=f"{int(flips.sum()):,} labels changed; a plain pandas.read_csv of the file: {plain:.2f} s "
                     f"(overlay / plain {seconds / plain:.2f}); best of 3 paired rounds"),
            row("labels: the overlay's peak memory beside 1280-d / 64-d features", round(ratio, 3), "ratio",
                "within 5 % (the labels', not the features')", abs(ratio - 1) <= 0.05,
                note=f"peak {peaks[1280] / 1e6:.0f} MB (tracemalloc) for {n:,} x {len(names)} labels, "
                     f"{peaks[1280] / 1e6 / file_mb:.1f}x the {file_mb:.0f} MB file; the features "
                     f"({n * 1280 * 2 / 1e6:.0f} MB at 1280-d) are never read")]
