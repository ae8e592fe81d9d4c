"""`evaluate`: score a saved run again, any head kind, against its caches.

A run remembers each cache's path and dataset fingerprint (config.json); evaluating against a
cache that moved or changed is refused with the reason. Runs are read through `heads.run.rundir.Run`
and scored with the same functions as when they were trained (`heads.run.scoring`).
"""

from pathlib import Path

from heads.run.rundir import Run
from heads.run.scoring import split_group_metrics, split_metrics
from heads.run.task import load_task


def split_predictions(run_dir, split="test", caches=None, trust_model=False, groups=None, drop_nonfinite=False,
                      labels=(), partition=None):
    """(Run, Task, paths, probabilities float32 [n, k]) of a run's saved head on one split of its
    caches (checked by fingerprint; `caches`: their new paths if they moved), with the run's label
    files applied again (checked unchanged), then `labels`; `partition` instead of the run's."""
    run = Run(run_dir)
    if isinstance(caches, (str, Path)):
        caches = [caches]
    paths = run.check_caches(list(caches) if caches else None)
    task = load_task(run.task_spec(paths, groups, drop_nonfinite, labels, partition), feature_splits=(split,))
    return run, task, paths, run.probabilities(task.split(split).features, trust_model=trust_model)


def evaluate_run(run_dir, split="test", caches=None, trust_model=False, groups=None, drop_nonfinite=False,
                 labels=(), partition=None):
    """Recompute a run's metrics on `split` from its saved head and caches:
    {"attributes": {A: {split: M}}, "run": {"name", "kind", "cache"}[, "labels": ...][, "groups": ...]}.
    caches: new paths of the run's caches (one per cache it was trained on), if they moved. groups:
    attribute names for per-group metrics (default: those the run was trained with, if any).
    labels, partition: score against other labels (files applied after the run's own) or another
    split; "labels" then records the overlay (`heads.run.overlay`) and "other_labels" is true."""
    run, task, paths, probabilities = split_predictions(run_dir, split, caches, trust_model, groups, drop_nonfinite,
                                                        labels, partition)
    result = {"attributes": split_metrics(task, {split: probabilities}, run.thresholds, run.train_majority),
              "run": {"name": Path(run_dir).name, "kind": run.kind, "cache": paths[0]}}
    if task.labels:
        result["labels"] = {**task.labels, "other_labels": bool(labels or partition)}
    group_section = split_group_metrics(task, {split: probabilities}, run.thresholds)
    if group_section:
        result["groups"] = group_section
    return result
