"""The embedding pass: Dataset -> image_batches -> backbone -> CacheWriter, resumable.

Rows are processed in dataset order in fixed batches [k*B, (k+1)*B); a resumed run starts at the
cache's rows_done (a batch boundary), so it recomputes nothing already written and feeds the
backbone the same batches an uninterrupted run would. Writing batch k overlaps computing k+1.
"""

import os
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import click
import numpy as np

from cache import layout
from cache.errors import UserError, WriteFailed
from cache.reader import open_cache, read_settings
from cache.writer import CacheWriter, create_cache


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

    @property
    def images_per_second(self):
        done = self.rows_ok + self.rows_failed
        return done / self.seconds if self.seconds > 0 else 0.0


class Interrupted(Exception):
    """Ctrl-C during embedding; the cache holds every finished batch."""

    def __init__(self, path, rows_done, n_rows):
        super().__init__(f"interrupted: {rows_done} of {n_rows} rows are saved in {path}; "
                         "run the same command again to resume")


def cache_settings(dataset, backbone, feature_dtype):
    """The root attributes `embed` writes, and must find unchanged to resume."""
    return {
        "backbone": backbone.spec,
        "preprocessing": backbone.preprocessing.to_dict(),
        "feature_dim": backbone.feature_dim,
        "feature_dtype": feature_dtype,
        "dataset_fingerprint": dataset.fingerprint(),
        "sources": dataset.sources,
    }


def _differing_setting(stored, wanted):
    """Name and values of the first resume setting that differs, else None."""
    for key in layout.RESUME_SETTINGS:
        a, b = stored[key], wanted[key]
        if isinstance(a, dict) and isinstance(b, dict):
            for sub in sorted(set(a) | set(b)):
                if a.get(sub) != b.get(sub):
                    return f"{key}.{sub}", a.get(sub), b.get(sub)
        elif a != b:
            return key, a, b
    return None


def _prepare_cache(path, dataset, settings, overwrite):
    """Create the cache, or check an existing one matches; returns the row to start at."""
    if os.path.exists(path) and not overwrite:
        with open_cache(path) as f:
            stored = read_settings(f)
        diff = _differing_setting(stored, settings)
        if diff:
            name, old, new = diff
            raise UserError(f"{path} was made with {name}={old!r} but this command gives {new!r}; "
                            "repeat the original settings to resume, or pass --overwrite to start afresh")
        return stored["rows_done"]
    create_cache(path, image_ids=dataset.image_ids, attribute_names=dataset.attribute_names,
                 labels=dataset.labels, partition=dataset.partition,
                 feature_dim=settings["feature_dim"], feature_dtype=settings["feature_dtype"],
                 settings={k: settings[k] for k in ("backbone", "preprocessing", "dataset_fingerprint", "sources")})
    return 0


def _warn_if_disk_short(path, rows_left, settings):
    """Warn up front when the rows still to embed will not fit in the free space beside `path`."""
    row_bytes = settings["feature_dim"] * np.dtype(settings["feature_dtype"]).itemsize + layout.ERROR_BYTES
    needed = rows_left * row_bytes
    free = shutil.disk_usage(os.path.dirname(os.path.abspath(path))).free
    if needed > free:
        click.echo(f"WARNING: {rows_left} rows need about {needed / 1e6:.0f} MB but {free / 1e6:.0f} MB are "
                   f"free beside {path}; embedding will stop when the disk fills (free space, then run the "
                   "same command to resume)", err=True)


def embed(dataset, backbone, path, *, batch_size=64, feature_dtype="float16", overwrite=False,
          show_progress=True):
    """Embed every not-yet-done row of `dataset` into the cache at `path`; returns EmbedSummary.

    Raises Interrupted on Ctrl-C after saving the finished batches.
    """
    from embed.pipeline import image_batches

    if batch_size < 1:
        raise UserError("--batch-size must be at least 1")
    settings = cache_settings(dataset, backbone, feature_dtype)
    start = _prepare_cache(path, dataset, settings, overwrite)
    n_rows = len(dataset.image_ids)
    summary = EmbedSummary(path=str(path), n_rows=n_rows, started_at_row=start)
    if start >= n_rows:
        return summary
    _warn_if_disk_short(path, n_rows - start, settings)
    paths = dataset.paths
    batches = image_batches(paths[start:], np.arange(start, n_rows), backbone.preprocessing, batch_size)
    began = time.perf_counter()
    with CacheWriter(path) as writer, ThreadPoolExecutor(max_workers=1) as pool, \
            click.progressbar(length=n_rows - start, label="embedding", file=sys.stderr,
                              show_pos=True, show_eta=True, hidden=not show_progress,
                              item_show_func=lambda rate: rate) as bar:
        pending = None
        try:
            for batch in batches:
                features = backbone.extract(batch["image"]).numpy()
                index = batch["index"].numpy()
                errors = [e.decode("utf-8", "replace") for e in batch["error"].numpy()]
                failed = np.array([bool(e) for e in errors])
                features[failed] = np.nan
                status = np.where(failed, layout.STATUS_FAILED, layout.STATUS_OK)
                if pending is not None:
                    pending.result()
                pending = pool.submit(writer.write_rows, int(index[0]), features, status, errors)
                summary.rows_ok += int((~failed).sum())
                summary.rows_failed += int(failed.sum())
                summary.failures += [(dataset.image_ids[i], e) for i, e in zip(index, errors) if e]
                elapsed = time.perf_counter() - began
                bar.update(len(index), f"{(summary.rows_ok + summary.rows_failed) / elapsed:.1f} img/s")
            if pending is not None:
                pending.result()
        except KeyboardInterrupt:
            if pending is not None:
                pending.result()
            raise Interrupted(path, writer.rows_done, n_rows) from None
        except WriteFailed as exc:
            raise WriteFailed(f"{exc}; rows 0:{writer.rows_saved} are saved: fix the cause "
                              "and run the same command again to resume") from None
    summary.seconds = time.perf_counter() - began
    return summary
