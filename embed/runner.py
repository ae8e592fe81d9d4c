"""The embedding pass: Dataset -> engine (decode, backbone) -> CacheWriter, resumable.

Rows are processed in dataset order in fixed batches [k*B, (k+1)*B); a resumed run starts at the
cache's rows_done (a batch boundary), so it recomputes nothing already written and feeds the
backbone the same batches an uninterrupted run would. Writing batch k overlaps computing k+1.
"""

import datetime
import os
import shutil
import sys
import time
from contextlib import closing
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import click
import numpy as np

from cache import layout
from cache.errors import UserError, WriteFailed
from cache.reader import open_cache, read_settings, row_status
from cache.writer import CacheWriter, create_cache
from embed.defaults import BATCH_SIZE, LOG_EVERY


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
        "sources": dataset.sources,
        "shard": shard,
        "views": list(views),
    }
    return settings


def _differing_setting(stored, wanted):
    """Name and values of the first resume setting that differs, else None."""
    for key in (*layout.RESUME_SETTINGS, "shard"):
        a, b = stored[key], wanted[key]
        if isinstance(a, dict) and isinstance(b, dict):
            for sub in sorted(set(a) | set(b)):
                if a.get(sub) != b.get(sub):
                    return f"{key}.{sub}", a.get(sub), b.get(sub)
        elif a != b:
            return key, a, b
    return None


def _prepare_cache(path, dataset, rows, settings, overwrite):
    """Create the cache for dataset rows [rows.start, rows.stop), or check an existing one
    matches; returns the cache row to start at."""
    if os.path.exists(path) and not overwrite:
        with open_cache(path) as f:
            stored = read_settings(f)
        diff = _differing_setting(stored, settings)
        if diff:
            name, old, new = diff
            raise UserError(f"{path} was made with {name}={old!r} but this command gives {new!r}; "
                            "repeat the original settings to resume, or pass --overwrite to start afresh")
        return stored["rows_done"]
    attrs = {k: settings[k] for k in ("backbone", "preprocessing", "dataset_fingerprint", "sources", "views")}
    if settings["shard"] is not None:
        attrs["shard"] = settings["shard"]
    create_cache(path, image_ids=dataset.image_ids[rows], attribute_names=dataset.attribute_names,
                 labels=dataset.labels[rows], partition=dataset.partition[rows],
                 feature_dim=settings["feature_dim"], feature_dtype=settings["feature_dtype"], settings=attrs)
    return 0


def _warn_if_disk_short(path, rows_left, settings):
    """Warn up front when the rows still to embed will not fit in the free space beside `path`."""
    row_bytes = ((1 + len(settings["views"])) * settings["feature_dim"] * np.dtype(settings["feature_dtype"]).itemsize
                 + layout.ERROR_BYTES)
    needed = rows_left * row_bytes
    free = shutil.disk_usage(os.path.dirname(os.path.abspath(path))).free
    if needed > free:
        click.echo(f"WARNING: {rows_left} rows need about {needed / 1e6:.0f} MB but {free / 1e6:.0f} MB are "
                   f"free beside {path}; embedding will stop when the disk fills (free space, then run the "
                   "same command to resume)", err=True)


class Progress:
    """Progress on stderr: a bar on a terminal; otherwise (nohup, cluster jobs, CI) a line every
    log_every seconds with rows done/total, images/s and the ETA, so a log shows where a run is."""

    def __init__(self, total, done=0, log_every=LOG_EVERY, show=True, label="embedding"):
        self.total, self.done, self.log_every, self.label = total, done, log_every, label
        self.began = self.last = time.perf_counter()
        self.counted = 0
        self.bar = None
        if show and sys.stderr.isatty():
            self.bar = click.progressbar(length=total - done, label=label, file=sys.stderr, show_pos=True,
                                         show_eta=True, item_show_func=lambda rate: rate)
            self.bar.__enter__()
        self.logging = show and self.bar is None

    def update(self, rows):
        self.counted += rows
        now = time.perf_counter()
        rate = self.counted / max(now - self.began, 1e-9)
        if self.bar is not None:
            self.bar.update(rows, f"{rate:.1f} img/s")
        elif self.logging and now - self.last >= self.log_every:
            self.last = now
            done = self.done + self.counted
            eta = (self.total - done) / rate if rate > 0 else 0
            click.echo(f"{self.label}: {done}/{self.total} rows ({100 * done / max(self.total, 1):.1f} %), "
                       f"{rate:.1f} images/s, ETA {datetime.timedelta(seconds=round(eta))}", err=True)

    def close(self):
        if self.bar is not None:
            self.bar.__exit__(None, None, None)


def _retry_windows(statuses, batch_size):
    """Cache rows to recompute for --retry-failed: every batch window holding a failed row, whole
    (so each image is computed in the batch a plain run computes it in), in order."""
    failed = np.flatnonzero(statuses == layout.STATUS_FAILED)
    windows = sorted(set((failed // batch_size).tolist()))
    return np.concatenate([np.arange(w * batch_size, min((w + 1) * batch_size, len(statuses))) for w in windows]
                          ) if windows else np.zeros(0, np.int64)


def retry_failed_rows(dataset, rows, path, engine, batch_size, views, summary, show_progress, log_every):
    """Re-embed the rows of `path` marked failed (the files may have been fixed); ok rows stay as
    they are. Returns the number of rows retried."""
    with open_cache(path) as f:
        status = row_status(f)
    recompute = _retry_windows(status, batch_size)
    retried = 0
    progress = Progress(int((status == layout.STATUS_FAILED).sum()), 0, log_every, show_progress,
                        label="retrying failed rows")
    with CacheWriter(path) as writer:
        paths = dataset.paths[rows]
        results = engine.results([paths[i] for i in recompute], recompute, batch_size, views)
        with closing(results), closing(progress):
            for index, features, errors, extra in results:
                chosen = status[index] == layout.STATUS_FAILED  # only the failed rows are written
                failed = np.array([bool(e) for e in errors])[chosen]
                new_status = np.where(failed, layout.STATUS_FAILED, layout.STATUS_OK)
                writer.rewrite_rows(index[chosen], features[chosen], new_status, [e for e, c in zip(errors, chosen) if c],
                                    {v: x[chosen] for v, x in extra.items()})
                retried += int(chosen.sum())
                summary.retried_ok += int((~failed).sum())
                summary.failures += [(dataset.image_ids[rows][i], e) for i, e, c in zip(index, errors, chosen) if c and e]
                progress.update(int(chosen.sum()))
    return retried


def embed(dataset, backbone, path, *, engine=None, batch_size=BATCH_SIZE, feature_dtype="float16", overwrite=False,
          show_progress=True, shard=None, views=(), retry_failed=False, log_every=LOG_EVERY):
    """Embed every not-yet-done row of `dataset` into the cache at `path`; returns EmbedSummary.

    engine: where the backbone runs (`embed.engines`; default this machine, `backbone` on one
    device). shard: (I, N) to embed only shard I of N (`cache.shards`) into a shard file. views:
    extra views to store besides the features, e.g. ("flip",) (`cache.layout`); each doubles the
    backbone's work. retry_failed: first re-embed the rows marked failed (after the files were
    fixed), each in its whole batch window, leaving ok rows untouched. log_every: seconds between
    progress lines when stderr is not a terminal.
    Raises Interrupted on Ctrl-C and WriteFailed on a failed write, after saving finished batches.
    """
    from cache.shards import shard_info
    from embed.engines import LocalEngine

    if batch_size < 1:
        raise UserError("--batch-size must be at least 1")
    engine = engine or LocalEngine([backbone])
    engine.connect()  # before touching the cache: a missing Ray or cluster fails cleanly
    info = shard_info(len(dataset.image_ids), batch_size, *shard) if shard else None
    if info and info["start"] == info["stop"]:
        n_batches = -(-len(dataset.image_ids) // batch_size)
        raise UserError(f"--shard {shard[0]}/{shard[1]}: {len(dataset.image_ids)} rows make {n_batches} batches "
                        f"of {batch_size}, too few for {shard[1]} shards; use at most {n_batches}")
    rows = slice(info["start"], info["stop"]) if info else slice(0, len(dataset.image_ids))
    settings = cache_settings(dataset, backbone, feature_dtype, info, views)
    if retry_failed and not os.path.exists(path):
        raise UserError(f"{path}: no such cache; --retry-failed re-embeds the failed rows of an existing cache")
    start = _prepare_cache(path, dataset, rows, settings, overwrite)
    n_rows = rows.stop - rows.start
    summary = EmbedSummary(path=str(path), n_rows=n_rows, started_at_row=start)
    began = time.perf_counter()
    if retry_failed:
        try:
            summary.retried = retry_failed_rows(dataset, rows, path, engine, batch_size, views, summary,
                                                show_progress, log_every)
        except KeyboardInterrupt:
            raise Interrupted(path, start, n_rows) from None
    if start >= n_rows:
        summary.seconds = time.perf_counter() - began
        return summary
    _warn_if_disk_short(path, n_rows - start, settings)
    results = engine.results(dataset.paths[rows][start:], np.arange(start, n_rows), batch_size, views)
    ids = dataset.image_ids[rows]
    progress = Progress(n_rows, start, log_every, show_progress)
    # closing(results): stop the input pipeline here, even on an error; a tf.data iterator left for
    # interpreter shutdown to collect can hang the exit.
    with closing(results), CacheWriter(path) as writer, ThreadPoolExecutor(max_workers=1) as pool:
        pending = None
        try:
            for index, features, errors, extra in results:
                failed = np.array([bool(e) for e in errors])
                for values in (features, *extra.values()):
                    values[failed] = np.nan
                status = np.where(failed, layout.STATUS_FAILED, layout.STATUS_OK)
                if pending is not None:
                    pending.result()
                pending = pool.submit(writer.write_rows, int(index[0]), features, status, errors, extra)
                summary.rows_ok += int((~failed).sum())
                summary.rows_failed += int(failed.sum())
                summary.failures += [(ids[i], e) for i, e in zip(index, errors) if e]
                progress.update(len(index))
            if pending is not None:
                pending.result()
        except KeyboardInterrupt:
            if pending is not None:
                pending.result()
            raise Interrupted(path, writer.rows_done, n_rows) from None
        except WriteFailed as exc:
            raise WriteFailed(f"{exc}; rows 0:{writer.rows_saved} are saved: fix the cause "
                              "and run the same command again to resume") from None
        finally:
            progress.close()
    summary.seconds = time.perf_counter() - began
    return summary
