"""sweep: the 18-variant grid (hidden x dropout x lr) through run_sweep on the CelebA-size planted cache."""

import json
import time
from pathlib import Path

from bench.common import HEAD_ATTRIBUTES, group, row


def bench_sweep(workdir, features, labels, splits, quick):
    """The issue's 18-variant grid (hidden x dropout x lr, 3 epochs each) through `run_sweep`."""
    from bench.synthetic import write_synthetic_cache
    from heads.run.sweep import run_sweep
    from heads.run.task import TaskSpec
    path = Path(workdir) / "sweep.h5"
    write_synthetic_cache(path, splits, features=features, labels=labels)
    grid = (["hidden=8,16", "lr=1e-3,3e-4"] if quick else
            ["hidden=64,128,256", "dropout=0,0.2,0.5", "lr=1e-3,3e-4"])
    began = time.perf_counter()
    board = run_sweep(TaskSpec(path, HEAD_ATTRIBUTES), Path(workdir) / "sweep", grid)
    seconds = time.perf_counter() - began
    best = board.index[0].rsplit("/", 1)[-1]
    training = sum(json.loads(p.read_text())["run"]["train_seconds"]
                   for p in (Path(workdir) / "sweep").glob("*/metrics.json"))
    return [row(f"sweep: {len(board)} variants, 3 epochs each (trained together in one pass)", round(seconds, 1), "s",
                "<= 180 s", seconds <= 180,
                note=f"training {training:.0f} s, the rest scoring, saving and plotting each run; best by mean "
                     f"val accuracy: {best} ({100 * board[('mean', 'accuracy')].iloc[0]:.2f} %)")]


@group("sweep", order=8)
def run(ctx):
    features, labels = ctx.planted
    return bench_sweep(ctx.workdir, features, labels, ctx.size["splits"], ctx.quick)
