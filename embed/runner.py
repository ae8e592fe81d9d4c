"""The embedding pass: Dataset -> engine (decode, backbone) -> CacheWriter, resumable.

Rows are processed in dataset order in fixed batches [k*B, (k+1)*B); a resumed run starts at the
cache's rows_done (a batch boundary), so it recomputes nothing already written and feeds the
backbone the same batches an uninterrupted run would. Writing batch k overlaps computing k+1.
An `EmbedSpec` holds the run's options; progress goes to an `on_progress` callback, warnings to
`logging`.
"""

import logging
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field

import numpy as np

from cache import layout
from cache.errors import UsageError, UserError, WriteFailed
from cache.reader import open_cache, row_status
from cache.units import counted, size_text
from cache.writer import CacheWriter, create_cache
from embed.defaults import BATCH_SIZE, FEATURE_DTYPE, MAX_PIXELS
from embed.faces import complete_record

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmbedSpec:
    """How one `embed` run writes its cache. batch_size: rows per backbone call (the fixed windows
    resume and shards cut at); feature_dtype: "float16" or "float32"; overwrite: start afresh
    though the cache exists; shard: (I, N) to embed only shard I of N (`cache.shards`); views:
    extra views to store, e.g. ("flip",) (`cache.layout`; each doubles the backbone's work);
    retry_failed: first re-embed the rows marked failed, each in its whole window, ok rows left as
    they are; max_pixels: larger images (by their header) become failed rows before decoding."""
    batch_size: int = BATCH_SIZE
    feature_dtype: str = FEATURE_DTYPE
    overwrite: bool = False
    shard: tuple = None
    views: tuple = ()
    retry_failed: bool = False
    max_pixels: int = MAX_PIXELS

    def __post_init__(self):
        object.__setattr__(self, "views", tuple(dict.fromkeys(self.views)))
        if self.batch_size < 1:
            raise UsageError("--batch-size must be at least 1")
        if self.retry_failed and self.overwrite:
            raise UsageError("--retry-failed keeps the cache's ok rows; it cannot be combined with --overwrite")


@dataclass
class EmbedSummary:
    """What one `embed` invocation did; failures are (image_id, error) for this invocation's rows."""
    path: str
    n_rows: int
    started_at_row: int
    rows_ok: int = 0
    rows_failed: int = 0
    seconds: float = 0.0
    failures: list = field(default_factory=list)
    retried: int = 0       # --retry-failed: failed rows embedded again ...
    retried_ok: int = 0    # ... of which now ok

    @property
    def images_per_second(self):
        done = self.rows_ok + self.rows_failed + self.retried
        return done / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class Progress:
    """What `embed` reports after each batch: label ("embedding" or "retrying failed rows"), rows
    done of total, and `began`: the rows that were done when this invocation began (a resumed run
    begins above 0), so done - began rows were computed now."""
    label: str
    done: int
    total: int
    began: int = 0


class Interrupted(Exception):
    """Ctrl-C during embedding; the cache holds every finished batch."""

    def __init__(self, path, rows_done, n_rows):
        super().__init__(f"interrupted: {rows_done} of {n_rows} rows are saved in {path}; "
                         "run the same command again to resume")


def cache_settings(dataset, backbone, feature_dtype, shard=None, views=()):
    """The root attributes `embed` writes, and must find unchanged to resume. shard: the `shard`
    attribute of a shard file (`cache.shards.shard_info`), else None; views: extra views."""
    settings = {
        "backbone": backbone.spec,
        "preprocessing": backbone.preprocessing.to_dict(),
        "feature_dim": backbone.feature_dim,
        "feature_dtype": feature_dtype,
        "dataset_fingerprint": dataset.fingerprint(),
        "image_ids_fingerprint": layout.ids_fingerprint(dataset.image_ids),
        "sources": dataset.sources,
        "shard": shard,
        "views": list(views),
        "layers": list(backbone.layers),
    }
    return settings


# The embed option that sets each recorded setting (a resume refused for another names the option).
OPTION_OF = {"backbone.model": "--model", "backbone.weights": "--weights", "backbone.layer": "--layer",
             "backbone.mixed_precision": "--mixed-precision", "backbone.sha256": "--model (the file's sha256)",
             "preprocessing.image_size": "--image-size", "preprocessing.color": "--color",
             "preprocessing.value_range": "--value-range", "preprocessing.antialias": "--antialias",
             "preprocessing.align": "--align", "preprocessing.align.face": "--face",
             "preprocessing.align.refine": "--refine-landmarks", "preprocessing.align.fit": "--landmark-fit",
             "preprocessing.align.detector.min_face": "--min-face",
             "preprocessing.align.detector.min_score": "--min-score",
             "preprocessing.align.detector.mirror_score": "--min-mirror-score",
             "feature_dtype": "--dtype", "views": "--views", "layers": "--layers", "shard": "--shard"}


def _differing_setting(stored, wanted, key=None):
    """(The first resume setting that differs, as a dotted path into the settings, its stored value,
    the wanted one), else None; nested records are compared key by key."""
    if key is None:
        for name in (*layout.RESUME_SETTINGS, "shard"):
            diff = _differing_setting(stored[name], wanted[name], name)
            if diff:
                return diff
        return None
    if isinstance(stored, dict) and isinstance(wanted, dict):
        for sub in sorted(set(stored) | set(wanted)):
            diff = _differing_setting(stored.get(sub), wanted.get(sub), f"{key}.{sub}")
            if diff:
                return diff
        return None
    return (key, stored, wanted) if stored != wanted else None


def _shown_setting(value):
    """A recorded setting as the command line writes it: on/off for a flag or a record, 1,2 for a
    list, the text of a string."""
    if isinstance(value, bool) or value is None or isinstance(value, dict):
        return "on" if value else "off"
    if isinstance(value, (list, tuple)):
        return ",".join(map(_shown_setting, value)) or "(none)"
    return f"{value:g}" if isinstance(value, float) else str(value)


def differing_line(path, diff):
    """One line: the setting `path` was made with and the one this command gives (`_differing_setting`)."""
    name, old, new = diff
    option = OPTION_OF.get(name)
    if option is None:
        return f"{path} was made with {name} {old!r} but this command gives {new!r}"
    return f"{path} was made with {option} {_shown_setting(old)} \u2260 {_shown_setting(new)} ({name})"


def _prepare_cache(path, dataset, rows, settings, overwrite):
    """Create the cache for dataset rows [rows.start, rows.stop), or check an existing one
    matches; returns the cache row to start at."""
    if os.path.exists(path) and not overwrite:
        with open_cache(path) as f:
            stored = dict(f.settings)
            if stored["image_ids_fingerprint"] is None:  # made before it: its own ids (a shard's: the old rule)
                stored["image_ids_fingerprint"] = layout.ids_fingerprint([s.decode() for s in f["image_id"][:]]) \
                    if stored["shard"] is None else settings["image_ids_fingerprint"] \
                    if stored["dataset_fingerprint"] == settings["dataset_fingerprint"] else stored["dataset_fingerprint"]
            if stored["preprocessing"].get("align"):  # as an earlier version recorded it: completed
                stored["preprocessing"] = {**stored["preprocessing"],
                                           "align": complete_record(stored["preprocessing"]["align"])}
        diff = _differing_setting(stored, settings)
        if diff and diff[0] == "image_ids_fingerprint":
            raise UserError(f"{path} holds other images than this command lists (their ids differ); give the "
                            "original image list to resume, or pass --overwrite to start afresh")
        if diff:
            raise UserError(differing_line(path, diff) + "; repeat the original settings to resume, or pass "
                            "--overwrite to start afresh")
        if stored["dataset_fingerprint"] != settings["dataset_fingerprint"]:
            log.info("%s: the labels or partition differ from those it was made with; it resumes with its own "
                     "(labels do not change the features: give the new ones at training time with --labels and "
                     "--partition)", path)
        return stored["rows_done"]
    attrs = {k: settings[k] for k in ("backbone", "preprocessing", "dataset_fingerprint", "image_ids_fingerprint",
                                      "sources", "views", "layers")}
    if settings["shard"] is not None:
        attrs["shard"] = settings["shard"]
    create_cache(path, image_ids=dataset.image_ids[rows], attribute_names=dataset.attribute_names,
                 labels=dataset.labels[rows], partition=dataset.partition[rows],
                 feature_dim=settings["feature_dim"], feature_dtype=settings["feature_dtype"], settings=attrs)
    return 0


def row_bytes(settings):
    """Bytes one row of a cache with these settings takes: every view's features and layers, and
    the error text (the layout's prediction; ids, labels and the rest are small)."""
    itemsize = np.dtype(settings["feature_dtype"]).itemsize
    values = settings["feature_dim"] + sum(int(np.prod(layer["shape"])) for layer in settings["layers"])
    return (1 + len(settings["views"])) * values * itemsize + layout.ERROR_BYTES


def _check_disk(path, rows_left, settings):
    """Say how much the rows still to embed take; when they will not fit in the free space beside
    `path`, refuse a cache that stores layers (they are large: better to know before hours of
    embedding) and warn about any other (a disk that fills mid-run ends cleanly and resumes)."""
    needed = rows_left * row_bytes(settings)
    free = shutil.disk_usage(os.path.dirname(os.path.abspath(path))).free
    if settings["layers"]:
        log.info("the layout predicts %s for %s of %s (features%s)", size_text(needed), counted(rows_left, "row"), path,
                 "".join(f", {layer['name']} {layer['pool']} {layer['shape']}" for layer in settings["layers"]))
    if needed <= free:
        return
    if settings["layers"]:
        raise UserError(f"{path}: {counted(rows_left, 'row')} with their layers need about {size_text(needed)} but "
                        f"{size_text(free)} are free; free space, store fewer or pooled layers, or choose "
                        "another --out")
    log.warning("%s need about %s but %s are free beside %s; embedding will stop when the "
                "disk fills (free space, then run the same command to resume)", counted(rows_left, "row"),
                size_text(needed), size_text(free), path)


def _retry_windows(statuses, batch_size):
    """Cache rows to recompute for --retry-failed: every batch window holding a failed row, whole
    (so each image is computed in the batch a plain run computes it in), in order."""
    failed = np.flatnonzero(statuses == layout.STATUS_FAILED)
    windows = sorted(set((failed // batch_size).tolist()))
    return np.concatenate([np.arange(w * batch_size, min((w + 1) * batch_size, len(statuses))) for w in windows]
                          ) if windows else np.zeros(0, np.int64)


def retry_failed_rows(dataset, rows, path, engine, spec, summary, on_progress):
    """Re-embed the rows of `path` marked failed (the files may have been fixed); ok rows stay as
    they are. Returns the number of rows retried."""
    with open_cache(path) as f:
        status = row_status(f)
    recompute = _retry_windows(status, spec.batch_size)
    total, retried = int((status == layout.STATUS_FAILED).sum()), 0
    with CacheWriter(path) as writer:
        paths = dataset.paths[rows]
        results = engine.results([paths[i] for i in recompute], recompute, spec.batch_size, spec.views, spec.max_pixels)
        with closing(results):
            for index, outputs, errors in results:
                chosen = status[index] == layout.STATUS_FAILED  # only the failed rows are written
                failed = np.array([bool(e) for e in errors])[chosen]
                new_status = np.where(failed, layout.STATUS_FAILED, layout.STATUS_OK)
                features = outputs.pop("features")
                writer.rewrite_rows(index[chosen], features[chosen], new_status, [e for e, c in zip(errors, chosen) if c],
                                    {name: x[chosen] for name, x in outputs.items()})
                retried += int(chosen.sum())
                summary.retried_ok += int((~failed).sum())
                summary.failures += [(dataset.image_ids[rows][i], e) for i, e, c in zip(index, errors, chosen) if c and e]
                on_progress(Progress("retrying failed rows", retried, total))
    return retried


def _no_progress(progress):
    pass


def embed(dataset, backbone, path, spec=EmbedSpec(), *, engine=None, on_progress=None):
    """Embed every not-yet-done row of `dataset` into the cache at `path` as the EmbedSpec says;
    returns EmbedSummary.

    engine: where the backbone runs (`embed.engines`; default this machine, `backbone` on one
    device). on_progress(Progress): after every batch.
    Raises Interrupted on Ctrl-C and WriteFailed on a failed write, after saving finished batches.
    """
    from cache.shards import shard_info
    from embed.engines import LocalEngine

    on_progress = on_progress or _no_progress
    batch_size, views = spec.batch_size, spec.views
    engine = engine or LocalEngine([backbone])
    engine.connect()  # before touching the cache: a missing Ray or cluster fails cleanly
    info = shard_info(len(dataset.image_ids), batch_size, *spec.shard) if spec.shard else None
    if info and info["start"] == info["stop"]:
        n_batches = -(-len(dataset.image_ids) // batch_size)
        raise UserError(f"--shard {spec.shard[0]}/{spec.shard[1]}: {len(dataset.image_ids)} rows make {n_batches} "
                        f"batches of {batch_size}, too few for {spec.shard[1]} shards; use at most {n_batches}")
    rows = slice(info["start"], info["stop"]) if info else slice(0, len(dataset.image_ids))
    settings = cache_settings(dataset, backbone, spec.feature_dtype, info, views)
    if spec.retry_failed and not os.path.exists(path):
        raise UserError(f"{path}: no such cache; --retry-failed re-embeds the failed rows of an existing cache")
    start = _prepare_cache(path, dataset, rows, settings, spec.overwrite)
    n_rows = rows.stop - rows.start
    summary = EmbedSummary(path=str(path), n_rows=n_rows, started_at_row=start)
    began = time.perf_counter()
    if spec.retry_failed:
        try:
            summary.retried = retry_failed_rows(dataset, rows, path, engine, spec, summary, on_progress)
        except KeyboardInterrupt:
            raise Interrupted(path, start, n_rows) from None
    if start >= n_rows:
        summary.seconds = time.perf_counter() - began
        return summary
    _check_disk(path, n_rows - start, settings)
    results = engine.results(dataset.paths[rows][start:], np.arange(start, n_rows), batch_size, views, spec.max_pixels)
    ids = dataset.image_ids[rows]
    # closing(results): stop the input pipeline here, even on an error; a tf.data iterator left for
    # interpreter shutdown to collect can hang the exit.
    with closing(results), CacheWriter(path) as writer, ThreadPoolExecutor(max_workers=1) as pool:
        pending = None
        try:
            for index, outputs, errors in results:
                failed = np.array([bool(e) for e in errors])
                for values in outputs.values():
                    if np.issubdtype(values.dtype, np.floating):  # faces/count stays a count
                        values[failed] = np.nan
                status = np.where(failed, layout.STATUS_FAILED, layout.STATUS_OK)
                if pending is not None:
                    pending.result()
                features = outputs.pop("features")
                pending = pool.submit(writer.write_rows, int(index[0]), features, status, errors, outputs)
                summary.rows_ok += int((~failed).sum())
                summary.rows_failed += int(failed.sum())
                summary.failures += [(ids[i], e) for i, e in zip(index, errors) if e]
                on_progress(Progress("embedding", int(index[-1]) + 1, n_rows, start))
            if pending is not None:
                pending.result()
        except KeyboardInterrupt:
            # every write submitted finishes first, also one submitted as Ctrl-C arrived (before `pending`
            # was bound to it): the count said is then the count on disk
            pool.shutdown(wait=True)
            raise Interrupted(path, writer.rows_done, n_rows) from None
        except WriteFailed as exc:
            raise WriteFailed(f"{exc}; rows 0:{writer.rows_saved} are saved: fix the cause "
                              "and run the same command again to resume") from None
    summary.seconds = time.perf_counter() - began
    return summary
