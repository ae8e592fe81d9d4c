"""`audit CACHE --out DIR`: load the audited splits, cross-fit out-of-fold probabilities, find the
likely label errors and the near-duplicates, write the files (the page is heads.look.audit_page's).

DIR/label_issues.csv  heads.audit.labels.ISSUE_COLUMNS, one row per flagged (image, attribute)
DIR/out_of_fold.csv   image_id, split, fold, then <attr>_label and <attr>_probability per attribute
DIR/duplicates.csv    heads.audit.duplicates.PAIR_COLUMNS, one row per near-duplicate pair,
                      train <-> val/test pairs first
DIR/summary.json      {"cache" (the first, whose image folder the page reads), "caches", "attributes",
                       "splits", "excluded_nonfinite_rows" ({split: n}, --drop-nonfinite), "rows",
                       "settings": the AuditSpec and the kind's settings,
                       "seconds": {"load", "folds", "labels", "duplicates"},
                       "labels": {attribute: heads.audit.labels summary},
                       "duplicates": heads.audit.duplicates.duplicate_summary}
Written through temporary names; summary.json last (an audit without it is incomplete).
"""

import dataclasses
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from cache.errors import UsageError, UserError
from cache.layout import UNKNOWN_LABEL
from cache.reader import aligned_empty
from cache.units import counted, plural
from heads.audit.duplicates import check_threshold, find_duplicates
from heads.audit.folds import Rows, out_of_fold
from heads.audit.labels import label_issues
from heads.defaults import AUDIT
from heads.run.fit import kind_settings
from heads.run.rundir import write_json
from heads.run.task import load_task

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class AuditSpec:
    """How `audit` scores rows: kind (a registered head kind) with settings (those it takes; the
    Keras head's head and epochs default to AUDIT's), folds (K >= 2), splits (which are audited,
    together), seed (folds and inner val rows)."""
    kind: str = AUDIT["kind"]
    settings: dict = field(default_factory=dict)
    folds: int = AUDIT["folds"]
    splits: tuple = AUDIT["splits"]
    seed: int = AUDIT["seed"]
    duplicates: dict = field(default_factory=dict)

    def __post_init__(self):
        splits = tuple(s.strip() for s in self.splits.split(",")) if isinstance(self.splits, str) else tuple(self.splits)
        object.__setattr__(self, "splits", splits)
        unknown = [s for s in splits if s not in SPLITS]
        if not splits or unknown or len(set(splits)) != len(splits):
            raise UsageError(f"--split {','.join(splits)}: give one or more of {', '.join(SPLITS)}, each once")
        if self.folds < 2:
            raise UsageError(f"--folds {self.folds}: cross-fitting needs at least 2 folds")
        if self.duplicates is not None and "threshold" in self.duplicates:
            check_threshold(self.duplicates["threshold"])

    def kind_settings(self):
        """The settings the kind is fitted with: the Keras head's audit defaults, then the given ones."""
        defaults = {"head": AUDIT["head"], "epochs": AUDIT["epochs"], "seed": self.seed} if self.kind == "keras_head" \
            else {}
        return kind_settings([self.kind], {**defaults, **self.settings})[self.kind]


def audited_rows(task_spec, splits):
    """(Rows of `splits` one after another, the caches' paths first first, {split: rows left out
    for NaN/inf features (task_spec.drop_nonfinite)}, the label overlay's record or None). The splits' features are read one split at
    a time into one array (float16 stays float16), so loading holds the rows and one split; the
    labels and ids are those of the rows read."""
    task = load_task(task_spec, feature_splits=(), required_splits=("train",))
    empty = [s for s in splits if not task.split(s).image_ids]
    splits = [s for s in splits if s not in empty]
    if empty:
        if not splits:
            raise UserError(f"{task_spec.caches[0]}: the audited {plural('split', len(empty))} {', '.join(empty)} "
                            f"{plural('holds', len(empty))} no row "
                            "(--split names which to audit)")
        log.info("the %s %s %s no row: audited %s (cross-fitting needs no val split)", ", ".join(empty),
                 plural("split", len(empty)), plural("holds", len(empty)), ", ".join(splits))
    most = sum(len(task.split(s).image_ids) for s in splits)  # before non-finite rows are dropped
    caches, attributes = [c["path"] for c in task.caches], tuple(task.attributes)
    features, parts, dropped, start = None, [], {}, 0
    for name in splits:
        part = load_task(task_spec, feature_splits=(name,), required_splits=("train",)).split(name)
        if not isinstance(part.features, np.ndarray):
            raise UsageError("audit reads the audited splits into memory; this input streams: use --stream never")
        if features is None:
            features = aligned_empty((most, *part.features.shape[1:]), part.features.dtype)
        features[start:start + len(part.features)] = part.features
        start += len(part.features)
        dropped[name] = part.n_nonfinite
        parts.append(dataclasses.replace(part, features=None))
    rows = Rows(features=features[:start], labels=np.concatenate([p.labels for p in parts]), attributes=attributes,
                image_ids=[i for p in parts for i in p.image_ids],
                splits=np.array([s for s, p in zip(splits, parts) for _ in p.image_ids], dtype=object))
    return rows, caches, dropped, task.labels


def _write_csv(frame, path):
    tmp = Path(f"{path}.tmp")
    frame.to_csv(tmp, index=False, float_format="%.6g")
    tmp.replace(path)


def run_audit(task_spec, audit_spec, out_dir):
    """Audit the TaskSpec's caches (its attributes, features transform, inputs) as audit_spec says;
    writes out_dir (module docstring) and returns summary.json's contents."""
    import pandas as pd

    if task_spec.exclude or task_spec.mask_labels:
        raise UsageError("audit scores every row and label it is given; --exclude and --mask-labels are for training")
    settings = audit_spec.kind_settings()
    began = time.perf_counter()
    rows, caches, nonfinite, overlay = audited_rows(task_spec, audit_spec.splits)
    if sum(nonfinite.values()):
        log.info("left out %s whose features hold NaN or inf (%s)", counted(sum(nonfinite.values()), "row"), nonfinite)
    loaded = time.perf_counter()
    probabilities, fold = out_of_fold(rows, audit_spec.kind, settings, audit_spec.folds,
                                      features=task_spec.features, seed=audit_spec.seed)
    folded = time.perf_counter()
    issues, label_summary = label_issues(rows, probabilities)
    labelled = time.perf_counter()
    if audit_spec.duplicates is not None:
        pairs, duplicate_summary = find_duplicates(rows, **audit_spec.duplicates, seed=audit_spec.seed)
    searched = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if (out / "summary.json").exists():
        (out / "summary.json").unlink()
    _write_csv(issues, out / "label_issues.csv")
    table = {"image_id": rows.image_ids, "split": rows.splits, "fold": fold + 1}
    for j, name in enumerate(rows.attributes):
        table[f"{name}_label"] = pd.Series(rows.labels[:, j]).where(rows.labels[:, j] != UNKNOWN_LABEL).astype("Int64")
        table[f"{name}_probability"] = probabilities[:, j]
    _write_csv(pd.DataFrame(table), out / "out_of_fold.csv")
    if audit_spec.duplicates is not None:
        _write_csv(pairs, out / "duplicates.csv")
    elif (out / "duplicates.csv").exists():
        (out / "duplicates.csv").unlink()
    summary = {"cache": caches[0], "caches": caches, "attributes": list(rows.attributes),
               "splits": [s for s in audit_spec.splits if s in set(rows.splits)], "excluded_nonfinite_rows": nonfinite,
               "rows": len(rows), "settings": {**asdict(audit_spec), "settings": settings,
                                               "features": task_spec.features, "inputs": list(task_spec.inputs)},
               "seconds": {"load": round(loaded - began, 3), "folds": round(folded - loaded, 3),
                           "labels": round(labelled - folded, 3), "duplicates": round(searched - labelled, 3)},
               "labels": label_summary, "label_overlay": overlay,
               "duplicates": duplicate_summary if audit_spec.duplicates is not None else None}
    write_json(out / "summary.json", summary)
    log.info("audit of %s x %s: %s", counted(len(rows), "row"), counted(len(rows.attributes), "attribute"),
             counted(len(issues), "flagged label"))
    return summary

