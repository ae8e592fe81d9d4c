"""Shards: `embed --shard I/N` writes one contiguous block of whole batches into its own cache;
`merge_shards` checks that N shards belong together and joins them into one cache.

A shard file has the cache layout (`cache.layout`) for its own rows only, plus the root attribute
`shard` (JSON: index, count, start, stop, total_rows, batch_size): it holds rows [start, stop) of a
dataset of total_rows, and its `image_ids_fingerprint` and `dataset_fingerprint` are the whole
dataset's. Shards belong together when what their features depend on agrees (the ids, the settings);
their labels may differ (a labels file corrected between shard runs): the merged cache holds each
shard's labels and the fingerprint of them. Shards made before `image_ids_fingerprint` must agree on
`dataset_fingerprint`, as they had to. Shards cut at batch
boundaries, so every image is computed in the same batch as in a single-process run with the same
batch size: that is what makes the merged cache bitwise equal to it.
"""

import os
import re

import numpy as np

from cache import layout
from cache.errors import UsageError, UserError
from cache.reader import open_cache
from cache.units import counted, plural
from cache.writer import CacheWriter, create_cache

# Settings every shard of one dataset must share (names as stored; `shard.*` checked separately).
SHARED_SETTINGS = ("backbone", "preprocessing", "feature_dim", "feature_dtype", "image_ids_fingerprint", "views",
                   "layers")
COPY_BYTES = 256 << 20  # merge copies each shard's rows in blocks of about this many bytes


def parse_shard(text):
    """'I/N' -> (I, N) with 0 <= I < N."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if not match or not int(match.group(1)) < int(match.group(2)):
        raise UsageError(f"--shard {text!r}: expected I/N with 0 <= I < N, e.g. 0/4")
    return int(match.group(1)), int(match.group(2))


def shard_range(n_rows, batch_size, index, count):
    """Rows [start, stop) of shard `index` of `count`: a contiguous run of whole batches, the
    batches split as evenly as possible (a shard may be empty if count exceeds the batches)."""
    n_batches = -(-n_rows // batch_size)
    first, last = index * n_batches // count, (index + 1) * n_batches // count
    return min(first * batch_size, n_rows), min(last * batch_size, n_rows)


def shard_info(n_rows, batch_size, index, count):
    """The `shard` attribute of shard `index` of `count`."""
    start, stop = shard_range(n_rows, batch_size, index, count)
    return {"index": index, "count": count, "start": start, "stop": stop, "total_rows": n_rows,
            "batch_size": batch_size}


def _read_shard(path):
    with open_cache(path) as f:
        settings = f.settings
        if settings["shard"] is None:
            raise UserError(f"{path}: not a shard (made without --shard)")
        if settings["rows_done"] < settings["n_rows"]:
            raise UserError(f"{path}: shard {settings['shard']['index']}/{settings['shard']['count']} is "
                            f"unfinished ({settings['rows_done']} of {settings['n_rows']} rows); rerun its "
                            "embed command to finish it")
        rows = {name: f[name][:] for name in ("labels", "partition")}
        rows["image_id"] = [s.decode() for s in f["image_id"][:]]
        return settings, f.attribute_names, rows


def _check_together(shards):
    """Raise UserError unless the shards share settings and cover 0..count-1 exactly once."""
    (first_path, first, first_names, _), others = shards[0], shards[1:]
    old_shards = any(settings["image_ids_fingerprint"] is None for _, settings, _, _ in shards)
    shared = tuple(k if k != "image_ids_fingerprint" or not old_shards else "dataset_fingerprint" for k in SHARED_SETTINGS)
    for path, settings, names, _ in others:
        for key in shared:
            if settings[key] != first[key]:
                raise UserError(f"{path} does not belong with {first_path}: {key} differs")
        for key in ("count", "total_rows", "batch_size"):
            if settings["shard"][key] != first["shard"][key]:
                raise UserError(f"{path} does not belong with {first_path}: shard {key} is "
                                f"{settings['shard'][key]}, not {first['shard'][key]}")
        if names != first_names:
            raise UserError(f"{path} does not belong with {first_path}: attribute names differ")
    seen = {}
    for path, settings, _, _ in shards:
        index = settings["shard"]["index"]
        if index in seen:
            raise UserError(f"shards overlap: {seen[index]} and {path} are both shard "
                            f"{index}/{settings['shard']['count']}")
        seen[index] = path
    count = first["shard"]["count"]
    missing = [f"{i}/{count}" for i in range(count) if i not in seen]
    if missing:
        raise UserError(f"missing {plural('shard', len(missing))} {', '.join(missing)} of the {count} (got "
                        f"{counted(len(shards), 'file')})")


def merge_shards(paths, out, overwrite=False):
    """Join the complete shards at `paths` (any order) into one cache at `out`; returns its row count.

    The result equals, dataset for dataset and bit for bit, the cache one `embed` run with the same
    batch size writes. Refuses shards that overlap, are missing, unfinished or from other runs.
    """
    if not paths:
        raise UserError("give the shard files to merge")
    if os.path.exists(out) and not overwrite:
        raise UserError(f"{out} exists; pass --overwrite to replace it")
    shards = [(path, *_read_shard(path)) for path in paths]
    _check_together(shards)
    shards.sort(key=lambda s: s[1]["shard"]["index"])
    settings, names = shards[0][1], shards[0][2]
    for path, shard_settings, _, _ in shards:
        info = shard_settings["shard"]
        if info != shard_info(info["total_rows"], info["batch_size"], info["index"], info["count"]):
            raise UserError(f"{path}: its shard attribute {info} is inconsistent")
    ids = [i for s in shards for i in s[3]["image_id"]]
    labels = np.concatenate([s[3]["labels"] for s in shards])
    partition = np.concatenate([s[3]["partition"] for s in shards])
    fingerprint = layout.dataset_fingerprint(ids, names, labels, partition)
    if settings["image_ids_fingerprint"] is None and fingerprint != settings["dataset_fingerprint"]:
        raise UserError("the shards do not reassemble the dataset they were cut from (ids, labels or "
                        "partition differ from its fingerprint)")
    if settings["image_ids_fingerprint"] is not None and layout.ids_fingerprint(ids) != settings["image_ids_fingerprint"]:
        raise UserError("the shards do not reassemble the dataset they were cut from (their ids differ from its "
                        "fingerprint)")
    kept = {k: settings[k] for k in ("backbone", "preprocessing", "sources", "views", "layers", "image_ids_fingerprint")
            if settings[k] is not None}
    create_cache(out, image_ids=ids, attribute_names=names, labels=labels, partition=partition,
                 feature_dim=settings["feature_dim"], feature_dtype=settings["feature_dtype"],
                 settings={**kept, "dataset_fingerprint": fingerprint})
    extra = layout.extra_datasets(settings["views"], settings["layers"], layout.is_aligned(settings))
    with CacheWriter(out) as writer:
        for path, shard_settings, _, _ in shards:  # a block of one shard's rows in memory at a time
            start = shard_settings["shard"]["start"]
            with open_cache(path) as f:
                row_bytes = sum(f[name].dtype.itemsize * int(np.prod(f[name].shape[1:])) for name in ("features", *extra))
                block = max(1, COPY_BYTES // row_bytes)
                for a in range(0, f["features"].shape[0], block):
                    rows = slice(a, a + block)
                    writer.write_rows(start + a, f["features"][rows], f["status"][rows],
                                      [e.decode() for e in f["error"][rows]], {name: f[name][rows] for name in extra})
    return len(ids)
