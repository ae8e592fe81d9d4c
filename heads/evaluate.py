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
from heads.rundir import METRICS, Run, split_group_metrics


def split_predictions(run_dir, split="test", caches=None, trust_model=False, groups=None, drop_nonfinite=False):
    """(Run, Task, paths, probabilities float32 [n, k]) of a run's saved head on one split of its
    caches (checked by fingerprint; `caches`: their new paths if they moved)."""
    run = Run(run_dir)
    if isinstance(caches, (str, Path)):
        caches = [caches]
    paths = run.check_caches(list(caches) if caches else None)
    groups = groups or run.config.get("groups") or None
    task = load_task(paths, run.attributes, allow_partial=True, feature_splits=(split,), groups=groups,
                     drop_nonfinite=drop_nonfinite, views=run.views, eval_view=run.eval_view)
    return run, task, paths, run.probabilities(getattr(task, split).features, trust_model=trust_model)


def evaluate_run(run_dir, split="test", caches=None, trust_model=False, groups=None, drop_nonfinite=False):
    """Recompute a run's metrics on `split` from its saved head and caches:
    {"attributes": {A: {split: M}}, "run": {"name", "kind", "cache"}[, "groups": ...]}. caches: new
    paths of the run's caches (one per cache it was trained on), if they moved. groups: attribute
    names for per-group metrics (default: those the run was trained with, if any)."""
    run, task, paths, probabilities = split_predictions(run_dir, split, caches, trust_model, groups, drop_nonfinite)
    data = getattr(task, split)
    majority = (task.train.labels.mean(axis=0) >= 0.5).astype(int)
    result = {"attributes": {name: {split: attribute_metrics(data.labels[:, j], probabilities[:, j],
                                                             run.thresholds[j], majority[j])}
                             for j, name in enumerate(task.attributes)},
              "run": {"name": Path(run_dir).name, "kind": run.kind, "cache": paths[0]}}
    group_section = split_group_metrics(task, {split: probabilities}, run.thresholds)
    if group_section:
        result["groups"] = group_section
    return result


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


GROUP_METRICS = ("worst_group_accuracy", "mean_group_accuracy")


def _metric(run, data, name, split, m):
    """One metric of one attribute from a run's metrics (a group metric from its "groups" section)."""
    if m in GROUP_METRICS:
        section = (data.get("groups") or {}).get("attributes", {}).get(name, {}).get(split)
        if not isinstance(section, dict):
            raise UserError(f"{run / METRICS}: has no group metrics on {split}; train with --groups, or "
                            "compare with --groups ATTR")
        value = section.get(m)
    else:
        by_split = data["attributes"].get(name)
        if not isinstance(by_split, dict) or not isinstance(by_split.get(split), dict):
            raise UserError(f"{run / METRICS}: has no {split} metrics for {name}")
        if m not in by_split[split]:
            raise UserError(f"unknown metric {m!r}; choose from {', '.join([*by_split[split], *GROUP_METRICS])}")
        value = by_split[split][m]
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise UserError(f"{run / METRICS}: {name} {split} {m} is {value!r}, not a number")
    return value


def leaderboard(paths, split="val", metrics=("accuracy",), groups=None):
    """pandas DataFrame: one row per run, columns (attribute, metric) plus (mean, metric); sorted by
    the mean of the first metric, best first. worst_group_accuracy and mean_group_accuracy come from
    a run's groups section; with groups (attribute names) every run is scored again on `split`
    per group (its caches and saved head), so runs trained without --groups rank too."""
    rows = {}
    for run in find_runs(paths):
        checked = Run(run)
        checked.check_files()  # a run whose model changed since it was scored is refused, not ranked
        data = evaluate_run(run, split, groups=groups) if groups else checked.metrics
        rows[str(run)] = {(name, m): _metric(run, data, name, split, m)
                          for name in data["attributes"] for m in metrics}
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
