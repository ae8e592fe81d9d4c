"""Read a cache (layout: `cache.layout`): validate it, summarise it, load a split into memory.

Readers open the file without taking HDF5's file lock, so `info` works while `embed` is still
writing; they trust only rows below `rows_done`.
"""

from dataclasses import dataclass

import h5py
import numpy as np

from cache import layout
from cache.check import check_structure, find_nonfinite
from cache.errors import UsageError, UserError
from cache.units import counted, plural


class CacheFile(h5py.File):
    """An open cache whose structure was checked: `settings` holds the root attributes as Python
    values (JSON ones decoded; `shard` None unless a shard file, `views` [] unless the cache holds
    extra views), `attribute_names` the A attribute names; both parsed once, on open."""
    settings: dict
    attribute_names: list


def open_cache(path):
    """Open `path` read-only and check it is a well-formed cache this version understands
    (`cache.check.check_structure`); returns a CacheFile (an h5py.File)."""
    try:
        f = CacheFile(path, "r", locking=False)
    except FileNotFoundError:
        raise UserError(f"{path}: no such cache file") from None
    except (OSError, ValueError, RuntimeError) as exc:
        raise UserError(f"{path}: not a readable HDF5 cache ({str(exc).splitlines()[0][:160]})") from None
    try:
        f.settings, f.attribute_names = check_structure(path, f)
    except Exception:
        f.close()
        raise
    return f


def row_status(f):
    """Status per row; rows at or above rows_done count as not done whatever was stored."""
    status = f["status"][:]
    status[int(f.attrs["rows_done"]):] = layout.STATUS_NOT_DONE
    return status


def scan_features(f):
    """{"ok_rows": n, "nonfinite_rows": [cache rows of ok rows with NaN/inf features]}: reads every
    ok row's features, one chunk at a time."""
    status = row_status(f)
    features, bad = f["features"], []
    for start in range(0, len(status), layout.ROWS_PER_CHUNK * 16):
        stop = min(len(status), start + layout.ROWS_PER_CHUNK * 16)
        ok = np.flatnonzero(status[start:stop] == layout.STATUS_OK)
        if len(ok):
            block = features[start:stop]
            bad.extend((start + ok[find_nonfinite(block[ok])]).tolist())
    return {"ok_rows": int((status == layout.STATUS_OK).sum()), "nonfinite_rows": bad}


def cache_info(path, max_failures=20, check=False):
    """Everything `cli.py info` shows, as a JSON-ready dict; with check, also "check": the result of
    scanning every ok row's features (`scan_features`)."""
    with open_cache(path) as f:
        scanned = scan_features(f) if check else None
        settings = f.settings
        status = row_status(f)
        partition = f["partition"][:]
        labels = f["labels"][:]
        names = f.attribute_names
        failed = np.flatnonzero(status == layout.STATUS_FAILED)
        ids = f["image_id"]
        failures = [{"row": int(i), "image_id": ids[i].decode(), "error": f["error"][i].decode()}
                    for i in failed[:max_failures]]
        faces = _faces_info(f, settings, status) if layout.is_aligned(settings) else None
    ok = status == layout.STATUS_OK
    splits = split_summary(labels, partition, ok, names)
    return {
        "path": str(path),
        "shape": [settings["n_rows"], settings["feature_dim"]],
        "dtype": settings["feature_dtype"],
        "backbone": settings["backbone"],
        "preprocessing": settings["preprocessing"],
        "rows": {"ok": int(ok.sum()), "failed": int(len(failed)),
                 "not_done": int((status == layout.STATUS_NOT_DONE).sum())},
        "rows_done": settings["rows_done"],
        "shard": settings["shard"],
        "views": settings["views"],
        "faces": faces,
        "layers": [{**layer, "bytes": int(settings["n_rows"] * np.prod(layer["shape"])
                                          * np.dtype(settings["feature_dtype"]).itemsize * (1 + len(settings["views"])))}
                   for layer in settings["layers"]],
        "attributes": names,
        "splits": splits,
        "failures": failures,
        "dataset_fingerprint": settings["dataset_fingerprint"],
        "sources": settings["sources"],
        "created": settings["created"],
        "tool_version": settings["tool_version"],
        "format_version": settings["format_version"],
        **({"check": scanned} if check else {}),
    }


def split_summary(labels, partition, ok, names):
    """{split: {"rows", "ok", "positive_rate": {name: the positive rate among the split's ok rows whose
    label is known, or None}}} of labels uint8 [n, A] (UNKNOWN_LABEL unknown), partition [n], ok bool [n]."""
    splits = {}
    for split, code in layout.PARTITIONS.items():
        in_split = partition == code
        rows_ok = in_split & ok
        rates = {}
        for j, name in enumerate(names):
            known = labels[rows_ok, j]
            known = known[known != layout.UNKNOWN_LABEL]
            rates[name] = round(float(known.mean()), 4) if len(known) else None
        splits[split] = {"rows": int(in_split.sum()), "ok": int(rows_ok.sum()), "positive_rate": rates}
    return splits


def _faces_info(f, settings, status):
    """A cache of aligned faces: how it aligned, the rows that failed for want of a face, and the
    rows whose photo held more than one face."""
    align = settings["preprocessing"]["align"]
    count = f["faces/count"][:]
    done = status != layout.STATUS_NOT_DONE
    return {"detector": align["detector"].get("detector"), "min_face": align["detector"].get("min_face"),
            "face": align["face"], "no_face_rows": int(((count == 0) & (status == layout.STATUS_FAILED)).sum()),
            "several_faces_rows": int((done & (count > 1)).sum())}


@dataclass(frozen=True)
class Split:
    """One partition's OK rows in memory.

    features: [n, D] (float32 unless asked otherwise) or None; labels: uint8 [n, k] for `attributes`;
    image_ids: n strings; rows: int64 [n] row numbers in the cache; n_failed: rows of this
    partition excluded because their image failed; n_nonfinite: rows marked ok whose features
    hold NaN or inf, left out on request (drop_nonfinite); n_left_out: ok rows left out because the
    caller listed their image ids (`leave_out`).
    """
    features: np.ndarray
    labels: np.ndarray
    attributes: list
    image_ids: list
    rows: np.ndarray
    n_failed: int
    n_nonfinite: int = 0
    n_left_out: int = 0


class StoredRows:
    """Rows of one stored dataset, read from the cache when asked: what a split's features are when
    they are streamed rather than loaded (`load_split(stream=True)`). `rows`: the cache rows, in
    increasing order; shape and dtype as an array of them would have; read(start, stop) returns
    rows[start:stop] as one 64-byte aligned array (contiguous runs read straight into place)."""

    def __init__(self, path, dataset, rows, row_shape, dtype):
        self.path, self.dataset, self.rows = path, dataset, np.asarray(rows, np.int64)
        self.shape, self.dtype = (len(self.rows), *row_shape), np.dtype(dtype)

    @property
    def ndim(self):
        return len(self.shape)

    @property
    def nbytes(self):
        return int(np.prod(self.shape)) * self.dtype.itemsize

    def __len__(self):
        return self.shape[0]

    def read(self, start, stop):
        with open_cache(self.path) as f:
            return _read_sorted_rows(f[self.dataset], self.rows[start:stop])


def aligned_empty(shape, dtype):
    """An uninitialised C-contiguous array whose data starts on a 64-byte boundary, the alignment
    TensorFlow needs to use the memory in place (see heads.keras_head.as_tensor)."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    buffer = np.empty(nbytes + 64, np.uint8)
    start = -buffer.ctypes.data % 64
    return buffer[start:start + nbytes].view(dtype).reshape(shape)


def _runs(mask):
    """[(start, stop)] of the maximal runs of True in a boolean vector."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.view(np.int8), [0]])))
    return list(zip(edges[::2], edges[1::2]))


def _read_sorted_rows(stored, rows):
    """Rows `rows` (increasing) of dataset `stored` into one 64-byte aligned array, read in
    contiguous runs straight into place (no concatenation copy)."""
    features = aligned_empty((len(rows), *stored.shape[1:]), stored.dtype)
    mask = np.zeros(stored.shape[0], bool)
    mask[rows] = True
    filled = 0
    for a, b in _runs(mask):
        stored.read_direct(features, np.s_[a:b], np.s_[filled:filled + b - a])
        filled += b - a
    return features


def read_feature_rows(path, rows, layers=()):
    """Features of cache rows `rows` (distinct, any order), in that order, in the stored dtype (the
    given stored layers instead, flattened side by side, as `load_split` reads them)."""
    rows = np.asarray(rows, np.int64)
    order = np.argsort(rows, kind="stable")
    with open_cache(path) as f:
        check_layers(path, f.settings, layers)
        features = _read_view(f, "orig", layers, rows[order])
    if np.all(order[:-1] < order[1:]):
        return features
    restored = aligned_empty(features.shape, features.dtype)
    restored[order] = features
    return restored


def nonfinite_error(path, split, count, rows, ids):
    """The UserError for `count` ok rows with NaN/inf features; rows, ids: the first few."""
    shown = ", ".join(f"{r} ({i})" for r, i in zip(rows, ids))
    return UserError(f"{path}: {counted(count, 'row')} of the {split} split marked ok {plural('holds', count)} "
                     "non-finite features "
                     f"(NaN or inf), e.g. rows {shown}; re-embed them, or pass --drop-nonfinite to leave them out")


def load_split(path, partition, attributes=None, allow_partial=False, dtype=np.float32, with_features=True,
               drop_nonfinite=False, views=("orig",), layers=(), stream=False, leave_out=(), labelled=None):
    """Load the OK rows of one partition ("train"/"val"/"test" or 0/1/2).

    attributes: names to return labels for (default: all, in cache order). Refuses a cache with
    unfinished rows unless allow_partial. Reads features in contiguous row runs; with
    with_features=False, Split.features is None and no feature is read. dtype=None keeps the
    stored dtype (no conversion: a float16 cache loads at the speed of reading the file).
    Features come back 64-byte aligned (`aligned_empty`), so heads train on them without a copy.
    Rows marked ok whose features hold NaN or inf stop the load (UserError naming them) unless
    drop_nonfinite, which leaves them out and counts them in Split.n_nonfinite. views: which
    views to read ("orig" = /features, "flip" = /features_flip); with more than one,
    Split.features is a list in that order. layers: read these stored layers instead of /features
    (each view's): one as stored ([n, *shape]), several flattened and joined side by side.
    stream: one view of one layer, left in the cache: Split.features is a StoredRows (checked for
    non-finite rows block by block, in the stored dtype), for a split larger than memory.
    leave_out: image ids (str) whose rows are not loaded (neither read nor checked), counted in
    Split.n_left_out. labelled: the names, labels [N, A] and partition [N] of every cache row to use
    instead of the stored ones (a labels overlay: `heads.run.overlay.RowLabels`).
    """
    code = layout.PARTITIONS.get(partition, partition)
    if code not in layout.PARTITIONS.values():
        raise UserError(f"unknown partition {partition!r}; use train, val or test")
    with open_cache(path) as f:
        status = row_status(f)
        not_done = int((status == layout.STATUS_NOT_DONE).sum())
        if not_done and not allow_partial:
            raise UserError(f"{path}: {not_done} of {len(status)} rows are not embedded yet; finish "
                            "the cache with the same `embed` command, or allow a partial cache")
        names = f.attribute_names if labelled is None else labelled.names
        attributes = names if attributes is None else list(attributes)
        unknown = [a for a in attributes if a not in names]
        if unknown:
            raise UserError(f"{path}: unknown {plural('attribute', len(unknown))} {', '.join(unknown)}")
        columns = [names.index(a) for a in attributes]
        in_split = (f["partition"][:] if labelled is None else labelled.partition) == code
        wanted = in_split & (status == layout.STATUS_OK)
        all_ids = f["image_id"][:]
        n_left_out = 0
        if len(leave_out):
            listed = np.isin(all_ids, np.array([i.encode() for i in leave_out]))
            n_left_out = int((wanted & listed).sum())
            wanted &= ~listed
        rows = np.flatnonzero(wanted)
        features, n_nonfinite = None, 0
        if with_features:
            stored_views = f.settings["views"]
            for view in views:
                if view != "orig" and view not in stored_views:
                    raise UserError(f"{path}: holds no {view} view (embed with --views {view})")
            check_layers(path, f.settings, layers)
            if stream and (len(views) != 1 or len(layers) != 1):
                raise UserError("streaming reads one view of one stored layer")
            blocks = [] if stream else [_read_view(f, view, layers, rows) for view in views]
            bad = sorted(set().union(*(find_nonfinite(b) for b in blocks))) if not stream else \
                _nonfinite_rows(f[layout.stored_dataset(views[0], layers[0])], rows)
            if bad and not drop_nonfinite:
                name = {v: k for k, v in layout.PARTITIONS.items()}[code]
                first = rows[bad[:3]]
                raise nonfinite_error(path, name, len(bad), first.tolist(), [s.decode() for s in all_ids[first]])
            if bad:
                keep = np.ones(len(rows), bool)
                keep[bad] = False
                rows, blocks, n_nonfinite = rows[keep], [b[keep] for b in blocks], len(bad)
            if stream:
                stored = f[layout.stored_dataset(views[0], layers[0])]
                features = StoredRows(path, stored.name, rows, stored.shape[1:], stored.dtype)
            else:
                if dtype is not None:
                    blocks = [b if b.dtype == dtype else b.astype(dtype) for b in blocks]
                features = blocks[0] if len(blocks) == 1 else blocks
        labels = (f["labels"][:] if labelled is None else labelled.labels)[rows][:, columns]
        ids = [s.decode() for s in all_ids[rows]] if len(rows) else []
        n_failed = int((status[in_split] == layout.STATUS_FAILED).sum())
    return Split(features=features, labels=labels, attributes=attributes, image_ids=ids, rows=rows,
                 n_failed=n_failed, n_nonfinite=n_nonfinite, n_left_out=n_left_out)


def _nonfinite_rows(stored, rows, block_bytes=256 << 20):
    """Offsets into `rows` whose stored values hold NaN or inf, read a block at a time."""
    row_bytes = int(np.prod(stored.shape[1:])) * stored.dtype.itemsize
    block = max(1, block_bytes // max(row_bytes, 1))
    bad = []
    for start in range(0, len(rows), block):
        values = _read_sorted_rows(stored, rows[start:start + block])
        bad.extend(find_nonfinite(values, first_row=start))
    return bad


def check_layers(path, settings, layers):
    """Refuse layer names the cache does not store (a UsageError naming the ones it does, the nearest
    first)."""
    import difflib
    stored = [layer["name"] for layer in settings["layers"]]
    for name in layers:
        if name not in stored:
            if not stored:
                raise UsageError(f"--input {name}: {path} stores no layers besides its features (embed with "
                                 "--layers NAME[:POOL])")
            nearest = difflib.get_close_matches(name, stored, n=len(stored), cutoff=0)
            raise UsageError(f"--input {name}: {path} stores no such layer; it stores {', '.join(nearest)}")


def _read_view(f, view, layers, rows):
    """One view's features of `rows`: /features (or its view's dataset), one layer as stored, or
    several layers' rows flattened and side by side, one 64-byte aligned array."""
    if not layers:
        return _read_sorted_rows(f[layout.stored_dataset(view)], rows)
    parts = [_read_sorted_rows(f[layout.stored_dataset(view, name)], rows) for name in layers]
    if len(parts) == 1:
        return parts[0]
    joined = aligned_empty((len(rows), sum(int(np.prod(p.shape[1:])) for p in parts)), parts[0].dtype)
    start = 0
    for part in parts:
        width = int(np.prod(part.shape[1:]))
        joined[:, start:start + width] = part.reshape(len(rows), width)
        start += width
    return joined
