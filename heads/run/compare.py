"""`compare`: one leaderboard of runs, from their metrics.json (or scored again per group).

Rows are runs (a run directory, or every run directory at any depth below a folder: a sweep, a
baselines folder, a tree of runs), columns (attribute, metric) plus (mean, metric) over the
attributes every run scores, best mean of the first metric first (lowest for a
metric where lower is better: ece, brier). Metric names come from `heads.metrics` (METRICS and
GROUP_METRICS).
"""

import logging
import os
from pathlib import Path

import pandas as pd

from cache.errors import UserError
from cache.units import counted
from heads.metrics import BY_NAME, GROUP_METRICS
from heads.run.evaluate import evaluate_run
from heads.run.rundir import CONFIG, METRICS, Run

GROUP_METRIC_NAMES = tuple(m.name for m in GROUP_METRICS)
log = logging.getLogger(__name__)


def find_runs(paths):
    """Run directories among `paths`, each a run (a folder holding metrics.json) or a folder searched
    at any depth for runs (sorted by path; hidden folders and a run's own subfolders are not
    searched). Warns of folders holding an unfinished run (config.json but no metrics.json)."""
    runs = []
    for path in map(Path, paths):
        if (path / METRICS).is_file():
            runs.append(path)
            continue
        found, unfinished = [], []
        for folder, subfolders, files in os.walk(path):
            subfolders[:] = sorted(s for s in subfolders if not s.startswith("."))
            if METRICS in files:
                found.append(Path(folder))
                subfolders[:] = []
            elif CONFIG in files:
                unfinished.append(Path(folder))
        if not found:
            raise UserError(f"{path}: not a run directory (no metrics.json in it or any folder below it)")
        if unfinished:
            log.warning("%s: %s left out (config.json but no metrics.json), e.g. %s", path,
                        counted(len(unfinished), "unfinished run"), unfinished[0])
        runs.extend(sorted(found))
    return runs


def _metric(run, data, name, split, m):
    """One metric of one attribute from a run's metrics (a group metric from its "groups" section)."""
    if m in GROUP_METRIC_NAMES:
        section = (data.get("groups") or {}).get("attributes", {}).get(name, {}).get(split)
        if not isinstance(section, dict):
            raise UserError(f"{run / METRICS}: has no group metrics on {split}; train with --groups, or "
                            "compare with --groups ATTR")
        value = section.get(m)
    else:
        by_split = data["attributes"].get(name)
        if not isinstance(by_split, dict) or not isinstance(by_split.get(split), dict):
            raise UserError(f"{run / METRICS}: has no {split} metrics for {name}")
        if m not in BY_NAME:
            raise UserError(f"unknown metric {m!r}; choose from {', '.join(BY_NAME)}")
        if m not in by_split[split]:
            raise UserError(f"{run / METRICS}: has no {m} (scored before {m} was a metric): train it again")
        value = by_split[split][m]
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise UserError(f"{run / METRICS}: {name} {split} {m} is {value!r}, not a number")
    return value


def leaderboard(paths, split="val", metrics=("accuracy",), groups=None, ranked=True, labels=(), partition=None):
    """pandas DataFrame: one row per run, columns ("head", "": the head spec or kind, `Run.head_name`),
    attrs["searched"]: {folder given that is not a run: how many runs were found below it},
    (attribute, metric) and (mean, metric); sorted by
    the mean of the first metric, best first: highest, or lowest where lower is better (ranked=False:
    in the order `find_runs` gives). worst_group_accuracy and mean_group_accuracy come from
    a run's groups section; with groups (attribute names) every run is scored again on `split`
    per group (its caches and saved head), so runs trained without --groups rank too; with labels
    (files applied after each run's own) or partition, every run is scored again against them."""
    rows, heads, scored, splits = {}, {}, [], {}
    for run in find_runs(paths):
        checked = Run(run)
        heads[str(run)] = checked.head_name
        splits[str(run)] = _split_of(checked, split, partition)
        checked.check_files()  # a run whose model changed since it was scored is refused, not ranked
        checked.label_files()  # as is one trained on labels that have changed since
        rescore = groups or labels or partition
        data = evaluate_run(run, split, groups=groups, labels=labels, partition=partition) if rescore else checked.metrics
        rows[str(run)] = {(name, m): _metric(run, data, name, split, m)
                          for name in data["attributes"] for m in metrics}
        scored.append(set(data["attributes"]))
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.columns = pd.MultiIndex.from_tuples(table.columns)
    attributes = list(dict.fromkeys(a for a, _ in table.columns))
    common = [a for a in attributes if all(a in names for names in scored)]
    if not common:
        raise UserError("the runs share no attribute scored on " + split + ": nothing to rank them on")
    if len(common) < len(attributes):
        log.warning("the runs score different attributes: the mean ranks them on the %d they all score (%s); "
                    "the other %d are shown but left out of the mean", len(common), ", ".join(common),
                    len(attributes) - len(common))
    _warn_if_splits_differ(splits, split)
    for m in metrics:
        table[("mean", m)] = table[common].xs(m, axis=1, level=1).mean(axis=1)
    table.insert(0, ("head", ""), pd.Series(heads))
    table.attrs["searched"] = {str(p): sum(Path(r).is_relative_to(p) for r in table.index)
                               for p in map(Path, paths) if not (p / METRICS).is_file()}
    if not ranked:
        return table
    return table.sort_values(("mean", metrics[0]), ascending=BY_NAME[metrics[0]].higher_is_better is False)


def _split_of(run, split, partition):
    """What a run's `split` was made of: its images (the caches' dataset fingerprints), the partition
    file that split them (name and sha256; None: the cache's own split) unless `partition` re-splits
    every run alike, and its row count (unless re-scored)."""
    images = tuple(c.get("dataset_fingerprint") for c in run.caches)
    if partition is not None:
        return images, "--partition", None
    recorded = (run.config.get("labels") or {}).get("partition")
    split_file = (Path(recorded["file"]).name, recorded["sha256"]) if recorded else None
    return images, split_file, (run.config.get("rows") or {}).get(split)


def _warn_if_splits_differ(splits, split):
    """Runs scored on different images, partitions or row counts of `split` are not comparable: warn,
    naming a run of each (as for different attribute sets)."""
    kinds = {}
    for run, identity in splits.items():
        kinds.setdefault(identity, run)
    if len(kinds) < 2:
        return
    (first, a), (second, b) = list(kinds.items())[:2]
    if first[0] != second[0]:
        what = "different images (their caches' dataset fingerprints differ)"
    elif first[1] != second[1]:
        name = lambda s: f"partition file {s[0]}" if s else "the cache's own split"  # noqa: E731
        what = f"different partitions ({name(first[1])} for {a}, {name(second[1])} for {b})"
    else:
        what = f"different {split} rows ({first[2]} for {a}, {second[2]} for {b})"
    log.warning("the runs were scored on %s: %d kinds of %s split among %d runs, so their %s metrics are not "
                "comparable (compare with --partition FILE to score every run on one split)",
                what, len(kinds), split, len(splits), split)


def _ranking(table, split):
    metric = next(m for a, m in table.columns if a == "mean")
    order = "lowest" if BY_NAME[metric].higher_is_better is False else "highest"
    return f"Runs ranked by their mean {split} {metric}, {order} first"


def flat(table):
    """The leaderboard with one header row (columns "head", "<attribute> <metric>", "mean <metric>";
    the index named "run"), for a CSV a spreadsheet or pandas reads without a multi-row header."""
    out = table.copy()
    out.columns = [f"{a} {m}".strip() for a, m in table.columns]
    out.index.name = "run"
    return out


def to_csv(table, path):
    flat(table).to_csv(path)


def to_markdown(table, split):
    """GitHub-flavoured Markdown of a leaderboard (values to 4 decimals, missing as '-'), after a line
    saying which split and metric rank it."""
    headers = ["run"] + [f"{a} {m}".strip() for a, m in table.columns]
    lines = [_ranking(table, split) + ".", "", "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for run, values in table.iterrows():
        cells = [v if isinstance(v, str) else "-" if pd.isna(v) else f"{v:.4f}" for v in values]
        lines.append("| " + " | ".join([run] + cells) + " |")
    return "\n".join(lines) + "\n"
