"""Create a cache file and fill its rows in order (layout: `cache.layout`).

`create_cache` builds the whole file, every dataset preallocated, in `<path>.tmp` and renames it
into place, so a half-created cache never exists under the real name. `CacheWriter` then writes
finished batches by row index and advances `rows_done` only after the batch is flushed to disk.
"""

import datetime
import errno
import json
import os
from importlib import metadata
from pathlib import Path

import h5py
import numpy as np

from cache import layout
from cache.errors import UsageError, UserError, WriteFailed
from cache.units import size_text


def _tool_version():
    try:
        return metadata.version("celeba-heads")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def _preallocated():
    """Dataset creation properties: all space allocated now, never filled (sparse on disk)."""
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    dcpl.set_fill_time(h5py.h5d.FILL_TIME_NEVER)
    return dcpl


def _write_failure(path, exc, what):
    """A WriteFailed for an OSError/RuntimeError raised while writing `path`, naming the cause."""
    text = str(exc)
    if getattr(exc, "errno", None) == errno.ENOSPC or f"errno = {errno.ENOSPC}," in text:
        reason = "no space left on device"
    else:
        reason = text.splitlines()[0][:200] if text else type(exc).__name__
    return WriteFailed(f"{path}: {what} failed: {reason}")


def ensure_parent(path):
    """Create the folder a cache file goes into (and its parents) if missing; refuse a path that is a
    folder, in one line."""
    if not str(path).strip():
        raise UsageError("--out: an empty path; give the cache file's path (e.g. cache.h5)")
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: is a folder; give the cache file's path (e.g. {path / 'cache.h5'})")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{path.parent}: cannot create the folder for {path.name} ({exc.strerror or exc})") from None


def create_cache(path, *, image_ids, attribute_names, labels, partition, feature_dim,
                 feature_dtype, settings):
    """Write a new, empty cache (all rows "not done") at `path`, replacing any file there (its folder
    is created if missing).

    image_ids: N strings; labels: uint8 [N, A] in {0, 1}; partition: int [N] in {0, 1, 2};
    settings: the root attributes `backbone`, `preprocessing`, `dataset_fingerprint`, `sources`,
    and optionally `image_ids_fingerprint`, `shard`, `views` (a list of extra views, each getting its dataset) and `layers`
    (the layers stored besides the features: [{"name", "pool", "shape"}], each with a dataset per
    view).
    """
    n_rows = len(image_ids)
    ensure_parent(path)
    labels = np.asarray(labels, dtype=np.uint8)
    partition = np.asarray(partition, dtype=np.int8)
    if labels.shape != (n_rows, len(attribute_names)) or partition.shape != (n_rows,):
        raise ValueError("labels must be [N, A] and partition [N] for N image ids")
    if feature_dtype not in ("float16", "float32"):
        raise UserError(f"feature dtype must be float16 or float32, not {feature_dtype!r}")
    missing = {"backbone", "preprocessing", "dataset_fingerprint", "sources"} - set(settings)
    if missing:
        raise ValueError(f"settings lack {sorted(missing)}")
    tmp = f"{path}.tmp"
    _reserve(tmp, empty_cache_bytes(image_ids, attribute_names), path)
    try:
        with h5py.File(tmp, "w") as f:
            _fill_new_cache(f, image_ids, attribute_names, labels, partition, feature_dim, feature_dtype,
                            settings)
    except (OSError, RuntimeError) as exc:
        os.remove(tmp)
        raise _write_failure(path, exc, "creating the cache") from None
    os.replace(tmp, path)


def empty_cache_bytes(image_ids, attribute_names):
    """Generous estimate of the bytes a new cache occupies on disk before any row is embedded
    (ids, labels, partition, status and metadata; features and errors are sparse until written)."""
    longest_id = max((len(i.encode("utf-8")) for i in image_ids), default=0)
    return len(image_ids) * (len(attribute_names) + longest_id + 64) + 2**16


def _reserve(tmp, n_bytes, path):
    """Allocate n_bytes at `tmp` (which HDF5 then truncates and reuses), so a disk too full to hold
    even the empty cache fails here with a clear error instead of inside HDF5, which cannot close a
    file whose metadata it failed to write."""
    try:
        with open(tmp, "wb") as f:
            os.posix_fallocate(f.fileno(), 0, n_bytes)
    except OSError as exc:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise _write_failure(path, exc, f"creating the cache ({size_text(n_bytes)})") from None


def _fill_new_cache(f, image_ids, attribute_names, labels, partition, feature_dim, feature_dtype, settings):
    """Create every dataset and root attribute of an empty cache in the open file `f`."""
    n_rows = len(image_ids)
    chunk_rows = max(1, min(layout.ROWS_PER_CHUNK, n_rows))
    views = settings.get("views") or []
    for name in ["features"] + [layout.stored_dataset(v) for v in views]:
        f.create_dataset(name, shape=(n_rows, feature_dim), dtype=feature_dtype,
                         chunks=(chunk_rows, feature_dim), dcpl=_preallocated())
    itemsize = np.dtype(feature_dtype).itemsize
    for view in ("orig", *views):
        for layer in settings.get("layers") or []:
            shape = tuple(layer["shape"])
            rows = max(1, min(layout.layer_chunk_rows(shape, itemsize), n_rows))
            f.create_dataset(layout.stored_dataset(view, layer["name"]), shape=(n_rows, *shape), dtype=feature_dtype,
                             chunks=(rows, *shape), dcpl=_preallocated())
    if layout.is_aligned(settings):
        for name, (shape, dtype) in layout.FACE_DATASETS.items():
            f.create_dataset(name, shape=(n_rows, *shape), dtype=dtype, chunks=(chunk_rows, *shape),
                             dcpl=_preallocated())
    f.create_dataset("error", shape=(n_rows,), dtype=h5py.string_dtype("utf-8", layout.ERROR_BYTES),
                     chunks=(chunk_rows,), dcpl=_preallocated())
    f.create_dataset("image_id", data=np.array(image_ids, dtype=object), dtype=h5py.string_dtype())
    f.create_dataset("partition", data=partition)
    f.create_dataset("labels", data=labels)
    f["labels"].attrs.create("names", np.array(attribute_names, dtype=object), dtype=h5py.string_dtype())
    f.create_dataset("status", data=np.zeros(n_rows, np.int8))
    attrs = {k: v for k, v in settings.items() if not (k in ("views", "layers") and not v)}  # none: no attribute
    attrs.update(
        format_version=layout.FORMAT_VERSION,
        tool_version=_tool_version(),
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        feature_dim=int(feature_dim),
        feature_dtype=feature_dtype,
        n_rows=n_rows,
        rows_done=0,
    )
    for name, value in attrs.items():
        f.attrs[name] = layout.encode_attr(name, value)


class CacheWriter:
    """Open an existing cache for appending finished rows in order; use as a context manager.

    Holds the file's write lock: a second writer on the same file gets a UserError. A failed write
    (disk full, I/O error) raises WriteFailed and leaves `rows_done` where it was, so the file opens
    and the same command resumes once the cause is fixed.
    """

    def __init__(self, path):
        self.path = path
        try:
            self._file = h5py.File(path, "r+", rdcc_nbytes=0)  # no chunk cache: rows go straight to disk
        except BlockingIOError:
            raise UserError(f"{path}: locked by another process (is another `embed` writing it?)") from None
        except OSError as exc:
            raise UserError(f"{path}: cannot open the cache for writing: {exc}") from None
        self._features = self._file["features"]
        views = [v for v, name in layout.VIEW_DATASETS.items() if name in self._file]
        layers = json.loads(self._file.attrs["layers"]) if "layers" in self._file.attrs else []
        aligned = layout.is_aligned({"preprocessing": json.loads(self._file.attrs["preprocessing"])})
        self._extra = {name: self._file[name] for name in layout.extra_datasets(views, layers, aligned)}
        self._status = self._file["status"]
        self._error = self._file["error"]
        self._fd = self._file.id.get_vfd_handle()
        self._failed = False
        self.rows_saved = self.rows_done  # rows known to be on disk and marked done

    @property
    def rows_done(self):
        return int(self._file.attrs["rows_done"])

    @property
    def n_rows(self):
        return int(self._file.attrs["n_rows"])

    def write_rows(self, start, features, status, errors, extra=None):
        """Write rows [start, start + len(features)) and then mark them done.

        start must equal `rows_done`; features: [B, D] array (cast to the cache's dtype, which
        must keep every OK row finite); status: [B] of STATUS_OK / STATUS_FAILED; errors: B strings;
        extra: {dataset: [B, ...]} for each extra dataset the cache holds (`layout.extra_datasets`:
        the views' features, the layers, the faces).
        """
        stop = start + len(features)
        if start != self.rows_done or stop > self.n_rows:
            raise ValueError(f"rows {start}:{stop} do not continue rows_done={self.rows_done}")
        stored = self._cast(start, stop, features, status, extra)
        try:
            for name, dataset in self._extra.items():
                dataset[start:stop] = stored[name]
            self._features[start:stop] = stored["features"]
            self._status[start:stop] = np.asarray(status, np.int8)
            self._error[start:stop] = [layout.truncate_error(e) for e in errors]
            self._file.flush()
            os.fsync(self._fd)
            self._file.attrs.modify("rows_done", stop)
            self._file.flush()
            self.rows_saved = stop
        except (OSError, RuntimeError) as exc:
            self._failed = True
            raise _write_failure(self.path, exc, f"writing rows {start}:{stop}") from None

    def _cast(self, start, stop, features, status, extra):
        """{dataset: values in its dtype} for the features and every extra dataset; UserError if an OK
        row overflows the dtype."""
        extra = extra or {}
        if set(extra) != set(self._extra):
            raise ValueError(f"the cache holds extra datasets {sorted(self._extra)}, got {sorted(extra)}")
        ok = np.asarray(status) == layout.STATUS_OK
        stored = {}
        for name, values, dataset in [("features", features, self._features),
                                      *((n, extra[n], d) for n, d in self._extra.items())]:
            with np.errstate(over="ignore"):  # overflow is checked and reported just below
                stored[name] = np.asarray(values).astype(dataset.dtype)
            if not np.isfinite(stored[name][ok]).all():
                raise UserError(f"{name} of rows {start}:{stop} overflow {dataset.dtype}; embed with --dtype float32")
        return stored

    def rewrite_rows(self, rows, features, status, errors, extra=None):
        """Overwrite finished rows (distinct, below rows_done), e.g. failed rows embedded again:
        features first, flushed, then status and errors, so a crash in between leaves the old
        status (a failed row's features are never read)."""
        rows = np.asarray(rows, np.int64)
        if len(rows) == 0:
            return
        if rows.max() >= self.rows_done or len(np.unique(rows)) != len(rows):
            raise ValueError(f"rows to rewrite must be distinct and below rows_done={self.rows_done}")
        order = np.argsort(rows)  # h5py writes a selection of rows in increasing order
        rows = rows[order]
        extra = extra or {}
        try:
            for name, values, dataset in [("features", features, self._features),
                                          *((n, extra[n], d) for n, d in self._extra.items())]:
                dataset[rows] = np.asarray(values)[order].astype(dataset.dtype)
            self._file.flush()
            os.fsync(self._fd)
            self._status[rows] = np.asarray(status, np.int8)[order]
            self._error[rows] = [layout.truncate_error(errors[i]) for i in order]
            self._file.flush()
        except (OSError, RuntimeError) as exc:
            self._failed = True
            raise _write_failure(self.path, exc, f"rewriting {len(rows)} rows") from None

    def close(self):
        """Close the file. After a failed write, HDF5's final flush fails the same way; that error
        was already raised by write_rows, and rows_done on disk still marks the last good batch."""
        if not self._file.id.valid:
            return
        try:
            self._file.close()
        except (OSError, RuntimeError):
            if not self._failed:
                raise

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
