"""What a head trains on: the one task spec, and the train/val/test splits it loads, validated.

`TaskSpec` is every option that says which data a run uses (caches, attributes, feature transform,
groups, views, label overlays, and the partial, non-finite and threshold policies); the command
line builds one from one option group and the library passes it whole. `load_task` reads the
caches, with the labels and split a label overlay gives (`heads.run.overlay`): rows whose image
failed are left out and counted; a cache with unfinished rows is refused unless allow_partial.
Several caches of the same images (other backbones) are fused: joined by image id, their features
concatenated in the order given; caches whose ids, partition or labels differ (after the overlay)
are refused.
"""

import difflib
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from cache import layout
from cache.check import find_nonfinite
from cache.errors import UsageError, UserError
from cache.layout import UNKNOWN_LABEL
from cache.reader import Split, StoredRows, load_split, nonfinite_error, open_cache, read_feature_rows, row_status
from cache.units import counted, plural, size_text
from embed.labels import read_labels
from heads.defaults import ATTRIBUTES, RUN
from heads.kinds.base import Data
from heads.run.exclude import check_exclude, check_mask
from heads.run.overlay import Overlay, stored_labels
from heads.run.transforms import parse_features

CACHE_RECORD = ("dataset_fingerprint", "backbone", "preprocessing", "feature_dim", "feature_dtype")
VIEWS = ("orig", "mean", "concat", "augment")  # --views: how heads use a cache's mirrored view
log = logging.getLogger(__name__)
EVAL_VIEWS = ("orig", "mean")
STREAM = ("auto", "always", "never")


def _names(value):
    """'Male,Young', a list, or None -> a tuple of names (None and '' -> ())."""
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    return tuple(value)


@dataclass(frozen=True)
class TaskSpec:
    """Which data a run trains and is scored on. caches: one cache path or several (fused);
    attributes: names, a comma-separated string, "all", or None (the default three); features: a
    `--features` transform spec; groups: attribute names for per-group metrics; views, eval_view:
    how a cache's mirrored view is used (`view_features`; eval_view None: "mean" with views
    "augment", else "orig"); allow_partial: use caches with unfinished
    rows; drop_nonfinite: leave out rows whose features hold NaN/inf (else they stop the load);
    tune_threshold: per-attribute thresholds that maximise val accuracy (test is never read);
    inputs: stored layers to train on instead of the features (`embed --layers`), pooled ones joined
    side by side: a multi-layer probe (none: the features); stream: for one spatial input, whether
    its train split streams from the cache in blocks ("always"), loads into memory ("never"), or
    streams only when it would take more than half the memory available ("auto"); exclude: a CSV
    with an image_id column whose train rows are left out (`heads.run.exclude`; val and test are
    never altered); labels: labels files patching the caches' labels, applied in order; partition: a
    partition file re-splitting their rows (`heads.run.overlay`); mask_labels: a CSV of (image_id,
    attribute) pairs whose train labels become unknown, the rows staying in for the other
    attributes (`heads.run.exclude`; val and test are never altered)."""
    caches: tuple
    attributes: object = None
    features: str = RUN["features"]
    groups: tuple = ()
    views: str = RUN["views"]
    eval_view: str = RUN["eval_view"]
    allow_partial: bool = False
    drop_nonfinite: bool = False
    tune_threshold: bool = RUN["tune_threshold"]
    inputs: tuple = ()
    stream: str = RUN["stream"]
    exclude: str = None
    labels: tuple = ()
    partition: str = None
    mask_labels: str = None

    def __post_init__(self):
        caches = (self.caches,) if isinstance(self.caches, (str, Path)) else tuple(self.caches)
        object.__setattr__(self, "caches", tuple(str(c) for c in caches))
        object.__setattr__(self, "groups", _names(self.groups))
        object.__setattr__(self, "inputs", _names(self.inputs))
        for name in ("exclude", "partition", "mask_labels"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, str(getattr(self, name)))
        labels = (self.labels,) if isinstance(self.labels, (str, Path)) else tuple(self.labels or ())
        object.__setattr__(self, "labels", tuple(str(p) for p in labels))
        if len(set(self.inputs)) != len(self.inputs):
            raise UsageError(f"--input {','.join(self.inputs)}: a layer is named twice")
        if isinstance(self.attributes, (list, tuple)):
            object.__setattr__(self, "attributes", tuple(self.attributes))
        object.__setattr__(self, "features", parse_features(self.features))
        if self.eval_view is None:
            object.__setattr__(self, "eval_view", "mean" if self.views == "augment" else "orig")
        if not self.caches:
            raise UsageError("give at least one cache file")
        if len(set(self.caches)) != len(self.caches):
            raise UsageError("the same cache is given twice")
        if self.views not in VIEWS or self.eval_view not in EVAL_VIEWS:
            raise UsageError(f"--views {self.views!r} / --eval-view {self.eval_view!r}: use "
                             f"{', '.join(VIEWS)} / {', '.join(EVAL_VIEWS)}")
        if self.stream not in STREAM:
            raise UsageError(f"--stream {self.stream!r}: use {', '.join(STREAM)}")
        if self.views != "orig" and len(self.caches) > 1:
            raise UsageError("--views other than orig works on one cache at a time, not on fused caches")

    def check(self):
        """What can be judged before any feature is read (so before TensorFlow starts): every cache is
        whole, not a shard (UserError); --attrs and --groups name attributes of the first cache or of
        its labels files (UsageError, exit 2, for an unknown or repeated name; a bad labels file is a
        UserError naming its line)."""
        for path in self.caches:
            check_whole(path)
        with open_cache(self.caches[0]) as f:
            available = list(f.attribute_names)
        for path in self.labels:
            available += [name for name in read_labels(path, unknown=True).names if name not in available]
        resolve_attributes(self.attributes, available, self.caches[0])
        if self.groups:
            resolve_attributes(list(self.groups), available, self.caches[0])


def check_whole(path):
    """Refuse a shard file (`embed --shard I/N`) in one line: it holds a block of the rows, so a run on
    it would train and score on a fraction of every split as if it were the whole cache."""
    with open_cache(path) as f:
        shard = f.settings["shard"]
    if shard is not None:
        raise UserError(f"{path}: shard {shard['index']}/{shard['count']} of an `embed --shard` run (rows "
                        f"{shard['start']:,} to {shard['stop'] - 1:,} of {shard['total_rows']:,}), not a whole cache; join "
                        "the shards first: cli.py merge SHARD... --out CACHE")


def needs_flip(views, eval_view="orig"):
    """Whether features in this views mode need the flip view to be evaluated."""
    return views in ("mean", "concat", "augment") and not (views == "augment" and eval_view == "orig")


def view_features(views, eval_view, orig, flip, concat=None):
    """The features a head sees (evaluation rows) from the orig and flip views [n, D] (numpy arrays
    or tensors): orig; mean (orig + flip) / 2; concat [orig, flip] ([n, 2D]); augment: eval_view's
    (orig or mean). concat: the concatenation function for tensors (default numpy's)."""
    if views == "orig" or (views == "augment" and eval_view == "orig"):
        return orig
    if views == "concat":
        return (concat or (lambda parts: np.concatenate(parts, axis=1)))([orig, flip])
    return (orig + flip) / 2  # mean, or augment evaluated on the mean


@dataclass(frozen=True)
class Task:
    """A TaskSpec loaded. train/val/test: cache.reader.Split for `attributes`, features in the
    stored dtype (float16 or float32; fused caches side by side, first cache first) in the
    evaluation view; caches: one record per cache, in feature order: {"path" (absolute),
    "dataset_fingerprint", "backbone", "preprocessing", "feature_dim", "feature_dtype"}; groups:
    attribute names whose values define the groups of per-group metrics
    (`heads.metrics.group_metrics`), group_labels their 0/1 labels per split; with views "augment",
    train_augment holds the train rows' flip view (trained on as more rows); excluded: what
    spec.exclude left out (`heads.run.exclude.Exclusion.record`), or None; labels: what the label
    overlay did (`heads.run.overlay.Overlay.apply`'s record, for the first cache), or None;
    unlabelled_rows: {split: rows left out because none of the attributes is labelled on them}, or
    None when there were none; masked: what spec.mask_labels made unknown
    (`heads.run.exclude.Masking.record`), or None."""
    spec: TaskSpec
    caches: list
    attributes: list
    train: Split
    val: Split
    test: Split
    group_labels: dict = field(default_factory=dict)  # {"train"|"val"|"test": uint8 [n, len(groups)]}
    train_augment: object = None
    excluded: dict = None
    labels: dict = None
    unlabelled_rows: dict = None
    masked: dict = None

    @property
    def groups(self):
        return self.spec.groups

    @property
    def views(self):
        return self.spec.views

    @property
    def eval_view(self):
        return self.spec.eval_view

    @property
    def cache(self):
        return self.caches[0]["path"]

    def split(self, name):
        return {"train": self.train, "val": self.val, "test": self.test}[name]

    def data(self, name, features=None):
        """Split `name` as the `Data` a head is handed (features: replaced, e.g. transformed)."""
        split = self.split(name)
        groups = self.group_labels.get(name)
        return Data(features=split.features if features is None else features, labels=split.labels,
                    attributes=tuple(self.attributes), group_labels=groups, group_names=self.groups)

    @property
    def excluded_failed_rows(self):
        return {"train": self.train.n_failed, "val": self.val.n_failed, "test": self.test.n_failed}

    @property
    def excluded_nonfinite_rows(self):
        """Rows marked ok but holding NaN/inf features, left out on request (--drop-nonfinite)."""
        return {"train": self.train.n_nonfinite, "val": self.val.n_nonfinite, "test": self.test.n_nonfinite}


def resolve_attributes(requested, available, source=None):
    """'all', a comma-separated string, a list or None (the default three) -> list of names, each
    checked against `available` (the attribute names of the cache at `source`, named in errors)."""
    where = f"{source}: " if source else ""
    if not available:
        raise UserError(f"{where}holds no labels (its images were embedded without a labels file): give them with "
                        "--labels FILE")
    if requested is None:
        requested = list(ATTRIBUTES)
    elif isinstance(requested, str):
        requested = list(available) if requested.strip() == "all" else list(_names(requested))
    if not requested:
        raise UsageError("no attributes given; use --attrs Male,Smiling or --attrs all")
    for name in requested:
        if name not in available:
            close = difflib.get_close_matches(name, available, n=1, cutoff=0.5)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise UsageError(f"{where}unknown attribute {name!r}{hint}; valid: {', '.join(available)}")
    if len(set(requested)) != len(requested):
        raise UsageError(f"attribute listed twice in {','.join(requested)}")
    return list(requested)


def cache_record(path):
    """What a run remembers of a cache (see Task.caches)."""
    with open_cache(path) as f:
        return {"path": str(Path(path).resolve()), **{k: f.settings[k] for k in CACHE_RECORD}}


def load_task(spec, feature_splits=("train", "val", "test"), required_splits=("train", "val", "test")):
    """Load train (partition 0), val (1) and test (2) of a TaskSpec; splits not in feature_splits
    get labels only (features None); a split of required_splits without a row stops the load in one
    line naming what emptied it (the partition file, or the cache's own split). Rows marked ok with
    NaN/inf features stop the load unless spec.drop_nonfinite (then counted, see Task).
    spec.exclude's ids are left out of train only."""
    paths = list(spec.caches)
    for path in paths:
        check_whole(path)
    spatial = [check_inputs(path, spec.inputs, spec.views, spec.eval_view) for path in paths]
    if any(spatial) and len(paths) > 1:
        raise UsageError(f"--input {spec.inputs[0]} is spatial: fused caches join features side by side, which "
                         "spatial maps cannot be; give one cache")
    overlay = Overlay.read(spec.labels, spec.partition)
    labelled = [overlay.apply(stored_labels(p), p) for p in paths] if overlay else None
    if labelled:
        available = labelled[0][0].names
    else:
        with open_cache(paths[0]) as f:
            available = f.attribute_names
    attributes = resolve_attributes(spec.attributes, available, paths[0])
    groups = resolve_attributes(list(spec.groups), available, paths[0]) if spec.groups else []
    columns = attributes + [g for g in groups if g not in attributes]
    views, eval_view = spec.views, spec.eval_view
    flip = needs_flip(views, eval_view) or views == "augment"
    train_augment = None
    stream = any(spatial) and "train" in feature_splits and _streams_train(paths[0], spec)
    exclusion = check_exclude(spec.exclude, paths[0], labelled[0][0].partition if labelled else None) \
        if spec.exclude else None
    leave_out = exclusion.listed.ids if exclusion else ()
    masking = check_mask(spec.mask_labels, paths[0], available, labelled[0][0].partition if labelled else None) \
        if spec.mask_labels else None
    if len(paths) == 1:
        splits = {}
        for name in layout.PARTITIONS:
            split = load_split(paths[0], name, columns, allow_partial=spec.allow_partial, dtype=None,
                               with_features=name in feature_splits, drop_nonfinite=spec.drop_nonfinite,
                               views=("orig", "flip") if flip else ("orig",), layers=spec.inputs,
                               stream=stream and name == "train", leave_out=leave_out if name == "train" else (),
                               labelled=labelled[0][0] if labelled else None)
            if flip and split.features is not None:
                orig, mirrored = split.features
                if name == "train" and views == "augment":
                    train_augment = mirrored
                split = replace(split, features=view_features(views, eval_view, orig, mirrored))
            splits[name] = split
    else:
        splits = _fused_splits(paths, columns, spec.allow_partial, feature_splits, spec.drop_nonfinite, spec.inputs,
                               leave_out, [rows for rows, _ in labelled] if labelled else None)
    masked = None
    if masking:
        masked_labels, masked = masking.apply(splits["train"], columns)
        splits["train"] = replace(splits["train"], labels=masked_labels)
    group_labels = {name: split.labels[:, [columns.index(g) for g in groups]] for name, split in splits.items()}
    splits = {name: replace(split, labels=split.labels[:, :len(attributes)], attributes=attributes)
              for name, split in splits.items()}
    unlabelled = {}
    for name, split in splits.items():  # a row labelled for none of the attributes has nothing to train or score
        keep = (split.labels != UNKNOWN_LABEL).any(axis=1)
        unlabelled[name] = int((~keep).sum())
        if unlabelled[name]:
            splits[name] = _rows_kept(split, keep)
            group_labels[name] = group_labels[name][keep]
            if name == "train" and train_augment is not None:
                train_augment = train_augment[keep]
    if any(unlabelled.values()):
        log.info("left out the rows labelled for none of %s: %s", ", ".join(attributes),
                 ", ".join(f"{n:,} {split}" for split, n in unlabelled.items()))
    _check_labelled(splits, attributes, paths[0])
    for name, split in splits.items():
        if len(split.rows) == 0 and name in required_splits:
            raise UserError(_empty_split(paths[0], name, spec.partition, attributes, unlabelled[name]))
    excluded = exclusion.record(splits["train"].n_left_out) if exclusion else None
    partitioned = labelled[0][1]["partition"] if labelled else None
    if partitioned and partitioned["left_out"]:
        log.info("--partition %s: %s of %s it does not list %s out of the run", spec.partition,
                 counted(partitioned["left_out"], "row"), paths[0], plural("is", partitioned["left_out"]) + " left")
    return Task(spec=replace(spec, groups=tuple(groups)), caches=[cache_record(p) for p in paths],
                attributes=attributes, group_labels=group_labels if groups else {}, train_augment=train_augment,
                excluded=excluded, labels=labelled[0][1] if labelled else None, masked=masked,
                unlabelled_rows=unlabelled if any(unlabelled.values()) else None, **splits)


def _rows_kept(split, keep):
    """A Split with only the rows where keep (bool [n]) is true; streamed features stay streamed."""
    features = split.features
    if isinstance(features, StoredRows):
        features = StoredRows(features.path, features.dataset, features.rows[keep], features.shape[1:], features.dtype)
    elif features is not None:
        features = features[keep]
    return replace(split, features=features, labels=split.labels[keep], rows=split.rows[keep],
                   image_ids=[i for i, k in zip(split.image_ids, keep) if k])


def _empty_split(path, name, partition, attributes, unlabelled):
    """Why the `name` split holds no row: what emptied it, and what to do."""
    code = {"train": 0, "val": 1, "test": 2}[name]
    if unlabelled:
        return f"{path}: the {name} split has no row labelled for any of {', '.join(attributes)}"
    if partition is not None:
        return (f"{partition} (--partition): puts no embedded row of {path} in the {name} split; give some rows "
                f"partition {code} ({name})")
    with open_cache(path) as f:
        in_split = int((f["partition"][:] == code).sum())
    if in_split:
        return (f"{path}: the {name} split has no embedded rows (its {counted(in_split, 'row')} failed or "
                f"{plural('is', in_split)} not embedded yet)")
    return (f"{path}: the {name} split has no rows (a folder embedded without a partition puts every image in "
            f"train): give --partition FILE, a CSV image_id,partition with 0 train, 1 val, 2 test")


def _check_labelled(splits, attributes, path):
    """Each attribute trains and is scored on its labelled rows: one with no labelled train row, or
    one class among them, stops the run in one line; a partly labelled one gets a note."""
    for j, name in enumerate(attributes):
        known = {split: int((s.labels[:, j] != UNKNOWN_LABEL).sum()) for split, s in splits.items()}
        train = splits["train"].labels[:, j]
        train = train[train != UNKNOWN_LABEL]
        if not len(train):
            raise UserError(f"{path}: attribute {name} has no labelled row in the train split; label some "
                            "(--labels FILE), or leave it out of --attrs")
        if train.min() == train.max():
            raise UserError(f"{path}: attribute {name} has only class {int(train[0])} in the train split "
                            f"({counted(len(train), 'labelled row')}); a classifier cannot learn it")
        if any(known[split] < len(s.rows) for split, s in splits.items()):
            log.info("%s is labelled on %s rows; each split's unlabelled rows are left out of its loss and scores",
                     name, ", ".join(f"{known[split]:,} of {len(s.rows):,} {split}" for split, s in splits.items()))


def _table(path, labelled=None):
    with open_cache(path) as f:
        status = row_status(f)
        if labelled is None:
            return {"names": f.attribute_names, "ids": [s.decode() for s in f["image_id"][:]],
                    "partition": f["partition"][:], "labels": f["labels"][:], "status": status}
    return {"names": labelled.names, "ids": list(labelled.ids), "partition": labelled.partition,
            "labels": labelled.labels, "status": status}


def available_memory():
    """Bytes of memory available to this process now (Linux: MemAvailable), or None if unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _streams_train(path, spec):
    """Whether the train split of the one spatial input streams from the cache (TaskSpec.stream),
    saying which and why (logged)."""
    with open_cache(path) as f:
        ok = (row_status(f) == layout.STATUS_OK) & (f["partition"][:] == layout.PARTITIONS["train"])
        layer = next(x for x in f.settings["layers"] if x["name"] == spec.inputs[0])
        size = int(ok.sum()) * int(np.prod(layer["shape"])) * np.dtype(f.settings["feature_dtype"]).itemsize
    free = available_memory()
    stream = spec.stream == "always" or (spec.stream == "auto" and free is not None and size > free / 2)
    if stream and spec.views == "augment":
        raise UsageError("--views augment adds the mirrored rows to a train split in memory; it cannot stream "
                         f"(--stream never, or --views orig); {spec.inputs[0]}'s train split is {size_text(size)}")
    log.info("the train split of %s (%s%s) %s", spec.inputs[0], size_text(size),
             f"; {size_text(free)} of memory available" if free else "",
             "streams from the cache in blocks" if stream else "loads into memory")
    return stream


def check_inputs(path, inputs, views="orig", eval_view="orig"):
    """Refuse --input layers the cache at `path` does not store; several layers are joined side by
    side, so they must all be vectors (stored pooled); and a spatial layer's mirrored map is not
    aligned with it, so it is not averaged or joined with its flip view. Returns whether the input
    is spatial (one layer stored none or grid:K)."""
    from cache.reader import check_layers
    with open_cache(path) as f:
        check_layers(path, f.settings, inputs)
        stored = {layer["name"]: layer for layer in f.settings["layers"]}
    spatial = [name for name in inputs if len(stored[name]["shape"]) != 1]
    if spatial and len(inputs) > 1:
        raise UsageError(f"--input {','.join(inputs)}: {spatial[0]} is stored spatial ({stored[spatial[0]]['pool']}, "
                         f"{' x '.join(map(str, stored[spatial[0]]['shape']))} per image) and cannot be joined with "
                         "other layers; give it alone, or embed it pooled (--layers NAME:gap)")
    if spatial and (views in ("mean", "concat") or needs_flip(views, eval_view)):
        raise UsageError(f"--input {spatial[0]} is spatial: its mirrored map is not aligned with it, so --views "
                         f"{views}{' --eval-view ' + eval_view if views == 'augment' else ''} cannot average or join "
                         "them; use --views augment --eval-view orig (both views as training rows) or orig")
    return bool(spatial)


def _fused_splits(paths, attributes, allow_partial, feature_splits, drop_nonfinite, inputs=(), leave_out=(),
                  labelled=None):
    """Splits over the rows every cache embedded, in the first cache's row order; the rows of
    leave_out's image ids are left out of train. labelled: per cache, its RowLabels after a label
    overlay (None: the stored labels)."""
    labelled = labelled or [None] * len(paths)
    first = _table(paths[0], labelled[0])
    row_of = [np.arange(len(first["ids"]))]
    status = [first["status"]]
    for path, rows_labelled in zip(paths[1:], labelled[1:]):
        other = _table(path, rows_labelled)
        if other["names"] != first["names"]:
            raise UserError(f"{path} cannot be fused with {paths[0]}: their attribute names differ")
        index = {image_id: row for row, image_id in enumerate(other["ids"])}
        missing = [i for i in first["ids"] if i not in index]
        if missing or len(other["ids"]) != len(first["ids"]):
            example = missing[0] if missing else next(i for i in other["ids"] if i not in set(first["ids"]))
            raise UserError(f"{path} cannot be fused with {paths[0]}: they hold different images "
                            f"({len(other['ids'])} vs {len(first['ids'])} ids; e.g. {example} is in only one)")
        rows = np.array([index[i] for i in first["ids"]], np.int64)
        for what in ("partition", "labels"):
            differ = np.flatnonzero(np.any((other[what][rows] != first[what]).reshape(len(rows), -1), axis=1))
            if len(differ):
                raise UserError(f"{path} cannot be fused with {paths[0]}: {what} differ for {len(differ)} "
                                f"{plural('image', len(differ))}, e.g. {first['ids'][differ[0]]}")
        row_of.append(rows)
        status.append(other["status"][rows])
    status = np.stack(status)
    not_done = np.any(status == layout.STATUS_NOT_DONE, axis=0)
    if not_done.any() and not allow_partial:
        raise UserError(f"{int(not_done.sum())} rows are not embedded yet in all of {', '.join(map(str, paths))}; "
                        "finish the caches with their `embed` commands, or allow partial caches")
    ok = np.all(status == layout.STATUS_OK, axis=0)
    failed = np.any(status == layout.STATUS_FAILED, axis=0)
    columns = [first["names"].index(a) for a in attributes]
    listed = np.isin(np.array(first["ids"], dtype=object), list(leave_out)) if len(leave_out) else np.zeros(len(ok), bool)
    splits = {}
    for name, code in layout.PARTITIONS.items():
        in_split = first["partition"] == code
        left_out = in_split & ok & listed if name == "train" else np.zeros(len(ok), bool)
        rows = np.flatnonzero(in_split & ok & ~left_out)
        features, n_nonfinite = None, 0
        if name in feature_splits:
            features = np.concatenate([read_feature_rows(p, r[rows], inputs) for p, r in zip(paths, row_of)], axis=1)
            bad = find_nonfinite(features)
            if bad and not drop_nonfinite:
                raise nonfinite_error(", ".join(map(str, paths)), name, len(bad), rows[bad[:3]].tolist(),
                                      [first["ids"][r] for r in rows[bad[:3]]])
            if bad:
                keep = np.ones(len(rows), bool)
                keep[bad] = False
                rows, features, n_nonfinite = rows[keep], features[keep], len(bad)
        splits[name] = Split(features=features, labels=first["labels"][rows][:, columns], attributes=attributes,
                             image_ids=[first["ids"][r] for r in rows], rows=rows,
                             n_failed=int((in_split & failed).sum()), n_nonfinite=n_nonfinite,
                             n_left_out=int(left_out.sum()))
    return splits
