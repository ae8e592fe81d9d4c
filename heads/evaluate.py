"""`evaluate` a saved run against its caches, and `compare` runs in one leaderboard.

A run remembers each cache's path and dataset fingerprint (config.json); evaluating against a
cache that moved or changed is refused with the reason. Any head kind is loaded through
`heads.rundir.Run`.
"""

from pathlib import Path

import pandas as pd

from cache.errors import UserError
from heads.data import load_task
from heads.metrics import attribute_metrics
from heads.rundir import METRICS, Run


def evaluate_run(run_dir, split="test", caches=None, trust_model=False):
    """Recompute a run's metrics on `split` from its saved head and caches:
    {"attributes": {A: {split: M}}, "run": {"name", "kind", "cache"}}. caches: new paths of the
    run's caches (one per cache it was trained on), if they moved."""
    run = Run(run_dir)
    if isinstance(caches, (str, Path)):
        caches = [caches]
    paths = run.check_caches(list(caches) if caches else None)
    task = load_task(paths, run.attributes, allow_partial=True, feature_splits=(split,))
    data = getattr(task, split)
    probabilities = run.probabilities(data.features, trust_model=trust_model)
    majority = (task.train.labels.mean(axis=0) >= 0.5).astype(int)
    return {"attributes": {name: {split: attribute_metrics(data.labels[:, j], probabilities[:, j],
                                                           run.thresholds[j], majority[j])}
                           for j, name in enumerate(task.attributes)},
            "run": {"name": Path(run_dir).name, "kind": run.kind, "cache": paths[0]}}


def find_runs(paths):
    """Run directories among `paths`: a folder with metrics.json, or its subfolders that have one."""
    runs = []
    for path in map(Path, paths):
        if (path / METRICS).is_file():
            runs.append(path)
        elif path.is_dir() and any((p / METRICS).is_file() for p in path.iterdir()):
            runs.extend(sorted(p for p in path.iterdir() if (p / METRICS).is_file()))
        else:
            raise UserError(f"{path}: not a run directory (no metrics.json in it or its subfolders)")
    return runs


def leaderboard(paths, split="val", metrics=("accuracy",)):
    """pandas DataFrame: one row per run, columns (attribute, metric) plus (mean, metric); sorted by
    the mean of the first metric, best first."""
    rows = {}
    for run in find_runs(paths):
        checked = Run(run)
        checked.check_files()  # a run whose model changed since it was scored is refused, not ranked
        data = checked.metrics
        row = {}
        for name, by_split in data["attributes"].items():
            if not isinstance(by_split, dict) or not isinstance(by_split.get(split), dict):
                raise UserError(f"{run / METRICS}: has no {split} metrics for {name}")
            for m in metrics:
                if m not in by_split[split]:
                    raise UserError(f"unknown metric {m!r}; choose from {', '.join(by_split[split])}")
                value = by_split[split][m]
                if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                    raise UserError(f"{run / METRICS}: {name} {split} {m} is {value!r}, not a number")
                row[(name, m)] = value
        rows[str(run)] = row
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.columns = pd.MultiIndex.from_tuples(table.columns)
    for m in metrics:
        table[("mean", m)] = table.xs(m, axis=1, level=1).mean(axis=1)
    return table.sort_values(("mean", metrics[0]), ascending=False)


def to_markdown(table):
    """GitHub-flavoured Markdown of a leaderboard (values to 4 decimals, missing as '-')."""
    headers = ["run"] + [f"{a} {m}" for a, m in table.columns]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for run, values in table.iterrows():
        cells = ["-" if pd.isna(v) else f"{v:.4f}" for v in values]
        lines.append("| " + " | ".join([run] + cells) + " |")
    return "\n".join(lines) + "\n"
