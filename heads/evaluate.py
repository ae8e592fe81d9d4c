"""`evaluate` a saved run against its cache, and `compare` runs in one leaderboard.

A run remembers its cache's path and dataset fingerprint (config.json); evaluating against a
cache that moved or changed is refused with the reason.
"""

import os
from pathlib import Path

import numpy as np
import pandas as pd

from cache.errors import UserError
from cache.reader import open_cache, read_settings
from heads import report
from heads.data import load_task
from heads.metrics import attribute_metrics

RUN_FILES = ("config.json", "metrics.json")


def check_cache(config, cache=None):
    """Path of the run's cache (or `cache`), after checking it is the same dataset and backbone."""
    path = cache or config["cache"]["path"]
    if not os.path.exists(path):
        raise UserError(f"the run's cache {path} is not there (moved?); pass --cache NEW_PATH")
    with open_cache(path) as f:
        settings = read_settings(f)
    for key in ("dataset_fingerprint", "backbone", "preprocessing"):
        if settings[key] != config["cache"][key]:
            raise UserError(f"{path}: its {key} differs from the one the run was trained on; "
                            "evaluate against the run's own cache")
    return path


def run_probabilities(run_dir, config, features):
    """Scores [n, k] of the run's saved model (Keras head or scikit-learn estimators)."""
    if config["kind"] == "keras_head":
        import keras
        from heads.keras_head import predict_model
        from heads.train import MODEL_FILE
        model = keras.saving.load_model(Path(run_dir) / MODEL_FILE, compile=False)
        return predict_model(model, config["attributes"], np.asarray(features, np.float32))
    from heads.baselines import load_estimators, predict_scores
    return predict_scores(load_estimators(run_dir, config), features)


def evaluate_run(run_dir, split="test", cache=None):
    """Recompute a run's metrics on `split` from its saved model and cache: {"attributes": {A: {split: M}}}."""
    config = report.read_json(Path(run_dir) / "config.json")
    path = check_cache(config, cache)
    task = load_task(path, config["attributes"], allow_partial=True, feature_splits=(split,))
    data = getattr(task, split)
    probabilities = run_probabilities(run_dir, config, data.features)
    majority = (task.train.labels.mean(axis=0) >= 0.5).astype(int)
    thresholds = config["thresholds"]
    return {"attributes": {name: {split: attribute_metrics(data.labels[:, j], probabilities[:, j],
                                                           thresholds[name], majority[j])}
                           for j, name in enumerate(task.attributes)},
            "run": {"name": Path(run_dir).name, "kind": config["kind"], "cache": path}}


def find_runs(paths):
    """Run directories among `paths`: a folder with metrics.json, or its subfolders that have one."""
    runs = []
    for path in map(Path, paths):
        if (path / "metrics.json").is_file():
            runs.append(path)
        elif path.is_dir() and any((p / "metrics.json").is_file() for p in path.iterdir()):
            runs.extend(sorted(p for p in path.iterdir() if (p / "metrics.json").is_file()))
        else:
            raise UserError(f"{path}: not a run directory (no metrics.json in it or its subfolders)")
    return runs


def leaderboard(paths, split="val", metrics=("accuracy",)):
    """pandas DataFrame: one row per run, columns (attribute, metric) plus (mean, metric); sorted by
    the mean of the first metric, best first."""
    rows = {}
    for run in find_runs(paths):
        data = report.read_json(run / "metrics.json")
        row = {}
        for name, by_split in data["attributes"].items():
            if split not in by_split:
                raise UserError(f"{run}/metrics.json has no {split} metrics")
            for m in metrics:
                if m not in by_split[split]:
                    raise UserError(f"unknown metric {m!r}; choose from {', '.join(by_split[split])}")
                row[(name, m)] = by_split[split][m]
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
