"""sweep: the 18-variant grid (hidden x dropout x lr) through run_sweep on the CelebA-size planted cache."""

import json
import time
from pathlib import Path

from bench.common import HEAD_ATTRIBUTES, group, machine_name, matmul_limit, mlp_training_flops, row


def bench_sweep(workdir, features, labels, splits, quick):
    """The issue's 18-variant grid (hidden x dropout x lr, 3 epochs each) through `run_sweep`."""
    from bench.synthetic import write_synthetic_cache
    from heads.run.sweep import run_sweep
    from heads.run.task import TaskSpec
    path = Path(workdir) / "sweep.h5"
    write_synthetic_cache(path, splits, features=features, labels=labels)
    grid = (["hidden=8,16", "lr=1e-3,3e-4", "epochs=3"] if quick else
            ["hidden=64,128,256", "dropout=0,0.2,0.5", "lr=1e-3,3e-4", "epochs=3"])
    began = time.perf_counter()
    board = run_sweep(TaskSpec(path, HEAD_ATTRIBUTES), Path(workdir) / "sweep", grid)
    seconds = time.perf_counter() - began
    best = board.index[0].rsplit("/", 1)[-1]
    runs = [json.loads(p.read_text())["run"] for p in (Path(workdir) / "sweep").glob("*/metrics.json")]
    training = sum(r["train_seconds"] for r in runs)
    flops = sum(mlp_training_flops(splits[0], splits[1], [features.shape[1], int(r["settings"]["head"][4:]),
                                                          len(HEAD_ATTRIBUTES)], 3) for r in runs)
    limit = matmul_limit(128, features.shape[1], 128)
    achieved = flops / training / 1e9
    ratio = achieved / max(limit.values())
    return [row(f"sweep: {len(board)} variants, 3 epochs each (trained together in one pass)", round(seconds, 1), "s",
                note=f"training {training:.0f} s, the rest scoring, saving and plotting each run; best by mean "
                     f"val accuracy: {best} ({100 * board[('mean', 'accuracy')].iloc[0]:.2f} %); on {machine_name()}"),
            row("sweep: training FLOP/s / the machine's matmul limit", round(ratio, 3), "ratio",
                note=f"{flops / 1e12:.2f} TFLOP (forward, backward, val) in {training:.1f} s of training = "
                     f"{achieved:.0f} GFLOP/s; limit at [128 x {features.shape[1]}] @ [{features.shape[1]} x 128]: "
                     f"numpy {limit['numpy']:.0f}, TensorFlow {limit['tensorflow']:.0f} GFLOP/s")]


@group("sweep", order=10)
def run(ctx):
    features, labels = ctx.planted
    return bench_sweep(ctx.workdir, features, labels, ctx.size["splits"], ctx.quick)
