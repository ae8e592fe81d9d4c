"""The cached features a head trains on: train/val/test splits for chosen attributes, validated.

Reads only the cache. Rows whose image failed are left out and counted; a cache with unfinished
rows is refused unless allow_partial.
"""

import difflib
from dataclasses import dataclass

from cache.errors import UserError
from cache.reader import attribute_names, load_split, open_cache, read_settings

DEFAULT_ATTRIBUTES = ("Male", "Smiling", "Young")


@dataclass(frozen=True)
class Task:
    """train/val/test: cache.reader.Split for `attributes`, features in the cache's dtype (float16
    or float32); cache: path; settings: the cache's root attributes (backbone, preprocessing,
    dataset_fingerprint, ...)."""
    cache: str
    attributes: list
    train: object
    val: object
    test: object
    settings: dict

    @property
    def excluded_failed_rows(self):
        return {"train": self.train.n_failed, "val": self.val.n_failed, "test": self.test.n_failed}


def resolve_attributes(requested, available):
    """'all', a comma-separated string or a list -> list of names, each checked against `available`."""
    if requested is None:
        requested = list(DEFAULT_ATTRIBUTES)
    elif isinstance(requested, str):
        requested = list(available) if requested.strip() == "all" else [a.strip() for a in requested.split(",") if a.strip()]
    if not requested:
        raise UserError("no attributes given; use --attrs Male,Smiling or --attrs all")
    for name in requested:
        if name not in available:
            close = difflib.get_close_matches(name, available, n=1, cutoff=0.5)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise UserError(f"unknown attribute {name!r}{hint}; valid: {', '.join(available)}")
    if len(set(requested)) != len(requested):
        raise UserError(f"attribute listed twice in {','.join(requested)}")
    return list(requested)


def load_task(cache, attributes=None, allow_partial=False, feature_splits=("train", "val", "test")):
    """Load train (partition 0), val (1) and test (2) for `attributes` from the cache at `cache`;
    splits not in feature_splits get labels only (features None)."""
    with open_cache(cache) as f:
        available = attribute_names(f)
        settings = read_settings(f)
    attributes = resolve_attributes(attributes, available)
    splits = {name: load_split(cache, name, attributes, allow_partial=allow_partial, dtype=None,
                               with_features=name in feature_splits)
              for name in ("train", "val", "test")}
    for name, split in splits.items():
        if len(split.rows) == 0:
            raise UserError(f"{cache}: the {name} split has no embedded rows")
    train_labels = splits["train"].labels
    for j, name in enumerate(attributes):
        if train_labels[:, j].min() == train_labels[:, j].max():
            raise UserError(f"{cache}: attribute {name} has only class {int(train_labels[0, j])} in the "
                            "train split; a classifier cannot learn it")
    return Task(cache=str(cache), attributes=attributes, settings=settings, **splits)
