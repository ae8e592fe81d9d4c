"""`sweep`: train one Keras head per point of a settings grid on one cache, then rank them.

Grid specs are `name=v1,v2,...` for the train-heads settings in GRID_KEYS; the variants are the
cartesian product, in the order given. `head` takes head specs: `head=linear,mlp:128,mlp:512,128`
is three variants (a bare number continues the mlp spec before it). Each variant's run directory
is named from its settings (`hidden=64_dropout=0.2_lr=0.001`), holds the usual files
(metrics.json, ...), and the sweep writes leaderboard.csv and leaderboard.md (val accuracy, best
mean first), and TensorBoard's HParams experiment (`heads.look.tensorboard`). The cache is read and
the feature transform fitted once. Variants that share epochs, batch_size, class_weight and seed
train together, in one pass over the in-memory features (`heads.kinds.trainer.fit_together`); each
runs the same algorithm as if trained alone (equal to float32 rounding).
"""

import hashlib
import itertools
import re
from pathlib import Path

from cache.errors import UsageError
from heads.defaults import KERAS, RUN
from heads.kinds.keras_head import check_setting, unused_settings
from heads.kinds.trainer import SHARED_SETTINGS
from heads.look.tensorboard import hparam_values, write_sweep_experiment
from heads.run.compare import leaderboard, to_csv, to_markdown
from heads.run.fit import keras_settings, prepare, train_together

GRID_KEYS = ("head", "hidden", "dropout", "lr", "l2", "epochs", "patience", "max_epochs", "batch_size", "class_weight",
             "calibrate", "tail_lr", "tail_bn")  # each checked as train-heads checks it (`check_setting`)


def _split_values(name, values):
    """Comma-separated grid values; for `head`, a bare number continues the mlp or attentive spec
    before it (head=mlp:512,128,attentive:64,4 is two heads)."""
    items = [v.strip() for v in values.split(",")]
    if name != "head":
        return items
    specs = []
    for item in items:
        if item.isdigit() and specs and specs[-1].startswith(("mlp:", "attentive:")):
            specs[-1] += "," + item
        else:
            specs.append(item)
    return specs


def parse_grid(specs):
    """['hidden=64,128', 'lr=1e-3'] -> [{'hidden': 64, 'lr': 0.001}, {'hidden': 128, 'lr': 0.001}].
    Every value is checked as train-heads checks its option (`heads.kinds.keras_head.check_setting`);
    anything wrong is a UsageError (exit 2) naming the --grid spec."""
    axes = {}
    for spec in specs:
        name, sep, values = spec.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or not values.strip():
            raise UsageError(f"--grid {spec!r}: expected name=v1,v2,...")
        if name not in GRID_KEYS:
            raise UsageError(f"--grid {spec!r}: {name!r} is not sweepable; use one of {', '.join(GRID_KEYS)}")
        if name in axes:
            raise UsageError(f"--grid names {name!r} twice")
        try:
            axes[name] = [check_setting(name, v) for v in _split_values(name, values)]
        except UsageError as exc:
            raise UsageError(f"--grid {spec!r}: {exc}") from None
        if len(set(axes[name])) != len(axes[name]):
            raise UsageError(f"--grid {spec!r}: a value is given twice")
    if not axes:
        raise UsageError("give at least one --grid name=v1,v2,...")
    if "head" in axes and "hidden" in axes:
        raise UsageError("--grid: give head=mlp:H,... or hidden=H,..., not both")
    variants = [dict(zip(axes, point)) for point in itertools.product(*axes.values())]
    _check_used(axes, variants)
    return variants


def _check_used(axes, variants):
    """An axis no variant uses (tail_lr without a tail head, patience without epochs=auto) would only
    repeat runs: a UsageError naming it."""
    unused = None
    for variant in variants:
        settings = keras_settings(**variant)
        head = f"mlp:{variant['hidden']}" if "hidden" in variant else settings["head"]
        ignored = dict(unused_settings(head, settings["epochs"], list(variant)))
        unused = ignored if unused is None else {k: v for k, v in unused.items() if k in ignored}
    if unused:
        name, why = next(iter(unused.items()))
        values = ",".join(map(str, axes[name]))
        raise UsageError(f"--grid {name}={values}: no variant uses it (--{name.replace('_', '-')} {why})")


def variant_name(settings):
    """Deterministic directory name of only [A-Za-z0-9._=-]: 'hidden=64_dropout=0.2_lr=0.001'. Any
    other character of a value becomes '-', and such a name ends in a short hash of the settings, so
    two variants never share one: 'head=mlp-512-128_lr=0.001_3f9a1c'."""
    text = "_".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in settings.items())
    safe = re.sub(r"[^A-Za-z0-9._=-]", "-", text)
    return safe if safe == text else f"{safe}_{hashlib.sha256(text.encode()).hexdigest()[:6]}"


def run_sweep(spec, out_dir, grid, *, seed=KERAS["seed"], on_variant=None, plots=RUN["plots"]):
    """Train every variant of `grid` (specs as above) on the TaskSpec's caches; returns the
    leaderboard DataFrame (also written to out_dir). on_variant(i, total, name, metrics) after each;
    plots: draw each run's pictures."""
    variants = parse_grid(grid)
    prepared = prepare(spec)
    out = Path(out_dir)
    together = {}  # variants that share SHARED_SETTINGS, trained in one pass
    for settings in variants:
        full = keras_settings(seed=seed, **settings)
        together.setdefault(tuple(full[k] for k in SHARED_SETTINGS), []).append(settings)
    done = 0
    hparams = dict(zip(map(variant_name, variants), hparam_values(variants)))
    for batch in together.values():
        runs = train_together(prepared, [out / variant_name(v) for v in batch], [{"seed": seed, **v} for v in batch],
                              hparams=[hparams[variant_name(v)] for v in batch], plots=plots)
        for settings, metrics in zip(batch, runs):
            done += 1
            if on_variant:
                on_variant(done, len(variants), variant_name(settings), metrics)
    write_sweep_experiment(out, variants, prepared.task.attributes)
    board = leaderboard([out / variant_name(v) for v in variants], "val", ["accuracy"])
    to_csv(board, out / "leaderboard.csv")
    (out / "leaderboard.md").write_text(to_markdown(board, "val"))
    return board
