"""The embedding pass: Dataset -> image_batches -> backbone -> CacheWriter, resumable.

Rows are processed in dataset order in fixed batches [k*B, (k+1)*B); a resumed run starts at the
cache's rows_done (a batch boundary), so it recomputes nothing already written and feeds the
backbone the same batches an uninterrupted run would. Writing batch k overlaps computing k+1.
"""

import os
import shutil
import sys
import time
from collections import deque
from contextlib import closing
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


def local_results(paths, indices, backbones, batch_size, views=()):
    """Embed `paths` in fixed batches on this machine; yields (indices, features, errors, views) in order.

    backbones: one copy of the same model per device; batch k runs on backbones[k % len], up to
    one batch per device at once. Every batch is computed whole, on one device, exactly as with a
    single device, so the features do not depend on the number of devices.
    indices: int [n] cache rows; features: float32 numpy [B, D]; errors: B strings ("" if OK);
    views: {view: float32 [B, D]} for each extra view asked for (`embed_views`).
    """
    from embed.pipeline import image_batches

    batches = image_batches(paths, indices, backbones[0].preprocessing, batch_size)
    if len(backbones) == 1:
        for batch in batches:
            yield batch_result(batch, *embed_views(backbones[0], batch["image"], views))
        return
    in_flight = deque()
    with ThreadPoolExecutor(max_workers=len(backbones)) as pool:
        for k, batch in enumerate(batches):
            in_flight.append((batch, pool.submit(embed_views, backbones[k % len(backbones)], batch["image"], views)))
            if len(in_flight) == len(backbones):
                batch, features = in_flight.popleft()
                yield batch_result(batch, *features.result())
        while in_flight:
            batch, features = in_flight.popleft()
            yield batch_result(batch, *features.result())


def embed_views(backbone, images, views=()):
    """(features, {view: features}) of a batch of images [B, S, S, C]: the "flip" view runs the
    backbone on the batch mirrored left-right (the same batch, so the same batch composition)."""
    from embed.pipeline import mirrored
    return backbone.extract(images), {view: backbone.extract(mirrored(images)) for view in views}


def batch_result(batch, features, views=None):
    """(indices, features, errors, views) as numpy and str from one pipeline batch and its backbone
    outputs."""
    errors = [e.decode("utf-8", "replace") for e in batch["error"].numpy()]
    return batch["index"].numpy(), features.numpy(), errors, {v: f.numpy() for v, f in (views or {}).items()}


def embed(dataset, backbone, path, *, batch_size=64, feature_dtype="float16", overwrite=False,
          show_progress=True, shard=None, replicas=(), engine="local", ray_address=None, ray_actors=None,
          trust_model=False, views=()):
    """Embed every not-yet-done row of `dataset` into the cache at `path`; returns EmbedSummary.

    shard: (I, N) to embed only shard I of N (`cache.shards`) into a shard file. replicas: more
    copies of `backbone` on other devices (see `local_results`). engine: "local", or "ray" to run
    the backbone in `ray_actors` Ray actors (`embed.ray_engine`; needs the `ray` extra) at ray_address,
    each loading the model as `backbone.spec` records it (trust_model: as for `load_backbone`).
    views: extra views to store besides the features, e.g. ("flip",) (`cache.layout`); each doubles
    the backbone's work.
    Raises Interrupted on Ctrl-C and WriteFailed on a failed write, after saving finished batches.
    """
    from cache.shards import shard_info

    if batch_size < 1:
        raise UserError("--batch-size must be at least 1")
    if engine == "ray":
        from embed.ray_engine import connect
        connect(ray_address)  # before touching the cache: a missing Ray or cluster fails cleanly
    info = shard_info(len(dataset.image_ids), batch_size, *shard) if shard else None
    if info and info["start"] == info["stop"]:
        n_batches = -(-len(dataset.image_ids) // batch_size)
        raise UserError(f"--shard {shard[0]}/{shard[1]}: {len(dataset.image_ids)} rows make {n_batches} batches "
                        f"of {batch_size}, too few for {shard[1]} shards; use at most {n_batches}")
    rows = slice(info["start"], info["stop"]) if info else slice(0, len(dataset.image_ids))
    settings = cache_settings(dataset, backbone, feature_dtype, info, views)
    start = _prepare_cache(path, dataset, rows, settings, overwrite)
    n_rows = rows.stop - rows.start
    summary = EmbedSummary(path=str(path), n_rows=n_rows, started_at_row=start)
    if start >= n_rows:
        return summary
    _warn_if_disk_short(path, n_rows - start, settings)
    paths = dataset.paths[rows][start:]
    if engine == "ray":
        from embed.ray_engine import ray_results
        results = ray_results(paths, np.arange(start, n_rows), backbone, batch_size, actors=ray_actors,
                              trust_model=trust_model, views=views)
    else:
        results = local_results(paths, np.arange(start, n_rows), [backbone, *replicas], batch_size, views)
    ids = dataset.image_ids[rows]
    began = time.perf_counter()
    # closing(results): stop the input pipeline here, even on an error; a tf.data iterator left for
    # interpreter shutdown to collect can hang the exit.
    with closing(results), CacheWriter(path) as writer, ThreadPoolExecutor(max_workers=1) as pool, \
            click.progressbar(length=n_rows - start, label="embedding", file=sys.stderr,
                              show_pos=True, show_eta=True, hidden=not show_progress,
                              item_show_func=lambda rate: rate) as bar:
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
