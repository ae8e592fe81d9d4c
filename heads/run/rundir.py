"""A run directory: the one module that writes and reads its files, for every head kind.

RUN_DIR/metrics.json  {"attributes": {"<Attr>": {"val": M, "test": M}},
                       "run": {"name", "kind", "cache", "train_seconds", "settings"[, "selection"]}
                       [, "groups": {"by": [group attributes], "attributes": {"<Attr>": {"val": G, "test": G}}}]}
                      M as in heads.metrics; "selection" (optional) is what the kind chose on val
                      (a C, a k, a learning rate); "epochs" (kinds trained in epochs):
                      {"trained", "best" (the epoch whose weights the head keeps), "auto"};
                      "excluded" (runs trained with --exclude), "masked" (--mask-labels) and "labels"
                      (runs trained with --labels or --partition) as in config.json; "calibration"
                      (--calibrate temperature): KerasHead.calibration_; "plots": false when the
                      run's pictures were not drawn (--no-plots);
                      G as heads.metrics.group_metrics returns it
                      (runs trained with --groups). Written last: a run without it is incomplete.
RUN_DIR/config.json   {"kind", "settings", "attributes", "features" (transform spec), "thresholds",
                       "groups", "inputs" (the stored layers trained on instead of the features; [] for
                       the features), "views", "eval_view" (how the mirrored view is used),
                       "cache" (the first cache's record), "caches" (every cache's record, in feature
                       order: path, dataset_fingerprint, backbone, preprocessing, feature_dim,
                       feature_dtype), "rows", "excluded_failed_rows", "excluded_nonfinite_rows",
                       "excluded" (what --exclude left out of train, heads.run.exclude; null without),
                       "labels" (what --labels and --partition changed, with each file's sha256:
                       heads.run.overlay; null without), "excluded_unlabelled_rows" ({split: rows
                       labelled for none of the run's attributes, left out}; null when none),
                       "masked" (what --mask-labels made unknown in train, heads.run.exclude; null
                       without),
                       "train_majority" ({attribute: the train split's majority class, 0 or 1}, which
                       majority_accuracy is scored against), "train_seconds",
                       "files": {file name: sha256} of every file loaded later}
RUN_DIR/<head files>  the kind's own (model.keras, estimators.joblib, knn_*.npy, dfr.npz), transform.npz
RUN_DIR/history.csv   one row per epoch (kinds trained in epochs); column "best" is 1 on the epoch
                      whose weights the head keeps
Pictures (unless --no-plots) and TensorBoard events beside them are `heads.look`'s (plots, tensorboard).
`Run` reads a run back, checked: evaluate, predict, export, compare and report go through it.
"""

import csv
import json
import os
from pathlib import Path

from cache.errors import UsageError, UserError
from cache.layout import sha256_file
from cache.reader import open_cache
from cache.units import counted
from heads.kinds import head_class, kind_names
from heads.metrics import majority_classes
from heads.run.overlay import check_recorded
from heads.run.task import EVAL_VIEWS, VIEWS, TaskSpec
from heads.run.transforms import Transform, parse_features

CONFIG, METRICS, HISTORY = "config.json", "metrics.json", "history.csv"


def write_json(path, data):
    """Write JSON through a temporary name, so a reader never sees half a file."""
    tmp = Path(f"{path}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def read_json(path):
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: not found (is this a run directory?)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object")
    return data


def write_history(path, history, best_epoch):
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[*history[0], "best"])
        writer.writeheader()
        writer.writerows({**record, "best": int(record["epoch"] == best_epoch)} for record in history)


def write_run_files(out_dir, task, head, transform, settings, seconds, thresholds):
    """Write everything of a run but metrics.json (a previous one is removed first, so the run reads
    as incomplete until `write_metrics`): the head's files, the transform, config.json, history.csv.
    settings: everything the run was given (recorded as is)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if (out / METRICS).exists():
        os.remove(out / METRICS)
    head.save(out)
    files = list(head.files) + transform.save(out)
    config = {
        "kind": head.kind,
        "settings": settings,
        "attributes": task.attributes,
        "features": transform.spec,
        "groups": list(task.groups),
        "inputs": list(task.spec.inputs),
        "views": task.views,
        "eval_view": task.eval_view,
        "thresholds": dict(zip(task.attributes, thresholds)),
        "cache": task.caches[0],
        "caches": task.caches,
        "rows": {"train": len(task.train.rows), "val": len(task.val.rows), "test": len(task.test.rows)},
        "excluded_failed_rows": task.excluded_failed_rows,
        "excluded_nonfinite_rows": task.excluded_nonfinite_rows,
        "excluded": task.excluded,
        "labels": task.labels,
        "excluded_unlabelled_rows": task.unlabelled_rows,
        "masked": task.masked,
        "train_majority": dict(zip(task.attributes, map(int, majority_classes(task.train.labels)))),
        "train_seconds": round(seconds, 3),
        "files": {f: sha256_file(out / f) for f in files},
    }
    write_json(out / CONFIG, config)
    if head.history_:
        write_history(out / HISTORY, head.history_, head.best_epoch_)


def write_metrics(out_dir, metrics):
    """metrics.json, the run's last file: the run is complete once it exists."""
    write_json(Path(out_dir) / METRICS, metrics)


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class Run:
    """A run directory read back: config and metrics checked on open; `load` the head."""

    def __init__(self, path):
        self.path = Path(path)
        if not self.path.is_dir():
            raise UserError(f"{self.path}: not a run directory")
        self.config = read_json(self.path / CONFIG)
        self.metrics = read_json(self.path / METRICS)
        config, where = self.config, self.path / CONFIG
        for key in ("kind", "attributes", "thresholds", "cache"):
            if key not in config:
                raise UserError(f"{where}: lacks {key!r} (not written by celeba-heads?)")
        self.kind = config["kind"]
        if not isinstance(self.kind, str) or self.kind not in kind_names():
            raise UserError(f"{where}: kind {self.kind!r} is not a head kind ({', '.join(kind_names())})")
        self.attributes = config["attributes"]
        if (not isinstance(self.attributes, list) or not self.attributes
                or not all(isinstance(a, str) for a in self.attributes)):
            raise UserError(f"{where}: attributes must be a list of attribute names")
        thresholds = config["thresholds"]
        if not isinstance(thresholds, dict) or not all(_is_number(thresholds.get(a)) for a in self.attributes):
            raise UserError(f"{where}: thresholds must give a number for each of {', '.join(self.attributes)}")
        self.thresholds = [float(thresholds[a]) for a in self.attributes]
        majority = config.get("train_majority")  # runs written before it: None (evaluate counts train again)
        if majority is not None and (not isinstance(majority, dict)
                                     or not all(majority.get(a) in (0, 1) for a in self.attributes)):
            raise UserError(f"{where}: train_majority must give 0 or 1 for each of {', '.join(self.attributes)}")
        self.train_majority = None if majority is None else [int(majority[a]) for a in self.attributes]
        # runs written before the "caches" list held one cache
        self.caches = config.get("caches") or [config["cache"]]
        if not isinstance(self.caches, list) or not all(
                isinstance(c, dict) and isinstance(c.get("path"), str) for c in self.caches):
            raise UserError(f"{where}: cache/caches must record each cache's path")
        for key, kind in (("settings", dict), ("files", dict), ("features", str), ("views", str), ("eval_view", str)):
            if key in config and not isinstance(config[key], kind):
                raise UserError(f"{where}: {key} must be a {'JSON object' if kind is dict else 'string'}")
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in config.get("files", {}).items()):
            raise UserError(f"{where}: files must map file names to sha256 digests")
        for key in ("groups", "inputs"):
            value = config.get(key, [])
            if not isinstance(value, list) or not all(isinstance(g, str) and g for g in value):
                raise UserError(f"{where}: {key} must be a list of names")
        self.inputs = tuple(config.get("inputs", []))
        if config.get("labels") is not None and not isinstance(config["labels"], dict):
            raise UserError(f"{where}: labels must be a JSON object or null")
        try:
            parse_features(config.get("features", "raw"))
        except UsageError as exc:
            raise UserError(f"{where}: {exc}") from None
        self.views, self.eval_view = config.get("views", "orig"), config.get("eval_view", "orig")
        if self.views not in VIEWS or self.eval_view not in EVAL_VIEWS:
            raise UserError(f"{where}: views {self.views!r} / eval_view {self.eval_view!r} are not known")
        if not isinstance(self.metrics.get("attributes"), dict) or not self.metrics["attributes"]:
            raise UserError(f"{self.path / METRICS}: lacks its \"attributes\" table")

    @property
    def head_name(self):
        """The head as a user names it: a Keras head's spec (mlp:128, attentive:64, tail), else the kind."""
        head = self.config.get("settings", {}).get("head")
        return head if self.kind == "keras_head" and isinstance(head, str) else self.kind

    def _recorded_files(self):
        files = self.config.get("files")
        if files is None and self.config.get("model_sha256"):  # written before the "files" record
            files = {"estimators.joblib": self.config["model_sha256"]}
        return files or {}

    def check_files(self):
        """Refuse a file the run wrote that has changed or gone since (sha256 in config.json)."""
        for name, digest in self._recorded_files().items():
            path = self.path / name
            if not path.is_file():
                raise UserError(f"{path}: missing (the run wrote it; config.json records its sha256)")
            if sha256_file(path) != digest:
                raise UserError(f"{path}: sha256 differs from config.json; the file changed after the run "
                                "wrote it, refusing to load it")

    def load(self, trust_model=False):
        """(transform, head) as the run saved them, after checking every recorded file."""
        self.check_files()
        cls = head_class(self.kind)
        unrecorded = [name for name in cls.code_files if name not in self._recorded_files()]
        if unrecorded:
            raise UserError(f"{self.path}: config.json records no sha256 for {unrecorded[0]}; refusing to "
                            "load a file that runs code")
        try:
            transform = Transform.load(self.path, self.config.get("features", "raw"))
            head = cls.load(self.path, self.config.get("settings", {}), self.attributes, trust_model=trust_model)
        except UsageError as exc:  # a setting recorded in config.json that is no longer valid
            raise UserError(f"{self.path / CONFIG}: {exc}") from None
        return transform, head

    def check_caches(self, paths=None):
        """Paths of the run's caches (or `paths`, one per recorded cache, for caches that moved),
        after checking each holds the same dataset and backbone the run was trained on."""
        if paths and len(paths) != len(self.caches):
            raise UserError(f"{self.path} was trained on {counted(len(self.caches), 'cache')}; give --cache once for each")
        checked = []
        for record, path in zip(self.caches, paths or [c["path"] for c in self.caches]):
            if not os.path.exists(path):
                raise UserError(f"{path}: the run's cache is not there (moved?); pass --cache NEW_PATH")
            with open_cache(path) as f:
                settings = f.settings
            for key in ("dataset_fingerprint", "backbone", "preprocessing"):
                if key in record and settings[key] != record[key]:
                    raise UserError(f"{path}: its {key} differs from the one the run was trained on; "
                                    "evaluate against the run's own cache")
            checked.append(str(path))
        return checked

    def label_files(self):
        """(labels files, partition file) the run was trained with, each checked unchanged (sha256)."""
        return check_recorded(self.config.get("labels"), self.path / CONFIG)

    def task_spec(self, caches, groups=None, drop_nonfinite=False, labels=(), partition=None):
        """The TaskSpec that scores this run on `caches` (checked paths): its attributes, views and
        transform, its groups unless others are given, its labels and partition files (checked
        unchanged) with `labels` applied after them and `partition` instead of its own; partial
        caches allowed (rows not done are not scored)."""
        recorded_labels, recorded_partition = self.label_files()
        return TaskSpec(caches=tuple(caches), attributes=tuple(self.attributes),
                        features=self.config.get("features", "raw"),
                        groups=groups or tuple(self.config.get("groups") or ()), views=self.views,
                        eval_view=self.eval_view, allow_partial=True, drop_nonfinite=drop_nonfinite, inputs=self.inputs,
                        labels=recorded_labels + tuple(labels or ()), partition=partition or recorded_partition)

    def probabilities(self, features, trust_model=False):
        """float32 [n, k] for features [n, D] as the caches store them (transform applied here)."""
        transform, head = self.load(trust_model)
        return head.predict_proba(transform.transform(features))

