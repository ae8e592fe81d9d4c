"""cache: writing and loading a CelebA-size cache in float16 and float32, `info` at full size, and float16's cost in accuracy."""

import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from bench.common import HEAD_ATTRIBUTES, ROOT, group, row


def bench_cache_io(workdir, features, labels, splits):
    from bench.synthetic import write_synthetic_cache
    from cache.reader import cache_info, load_split
    from heads.defaults import REFERENCE_EPOCHS
    from heads.kinds.base import Data
    from heads.kinds.keras_head import KerasHead
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
        head = KerasHead(epochs=REFERENCE_EPOCHS).fit(Data(train.features, train.labels, tuple(HEAD_ATTRIBUTES)),
                               Data(val.features, val.labels, tuple(HEAD_ATTRIBUTES)))
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


@group("cache", order=9)
def run(ctx):
    features, labels = ctx.planted
    return bench_cache_io(ctx.workdir, features, labels, ctx.size["splits"])
