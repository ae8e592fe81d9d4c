"""celeba-heads command line: embed images once into an HDF5 cache, then work on the cache.

Options map one-to-one onto library function arguments; this file holds no logic a library test
would miss. TensorFlow is imported only by the commands that need it, so `--help` is instant.
Exit status: 0 success, 1 error (one line, no traceback), 2 usage error, 3 finished with failed
images (unless --allow-failures), 130 interrupted (resume with the same command).
"""

import contextlib
import json
import os
import re
import sys

import click

from cache.errors import UsageError, UserError
from embed.backbones import DEFAULT_MODEL  # no TensorFlow import at module level
from embed.defaults import BATCH_SIZE, LOG_EVERY, MAX_PIXELS
from heads.defaults import ATTRIBUTES, BASELINE_MODELS, KERAS, RUN, SKLEARN

EXIT_FAILED_ROWS, EXIT_INTERRUPTED = 3, 130


@contextlib.contextmanager
def _stderr_silenced():
    """Point file descriptor 2 at /dev/null (C++ log lines written during TensorFlow's import)."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _start_tensorflow(verbose):
    """Import TensorFlow, hiding its start-up log noise unless verbose."""
    if verbose:
        import tensorflow  # noqa: F401
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with _stderr_silenced():
        import tensorflow  # noqa: F401
    import absl.logging
    import tensorflow as tf
    absl.logging.set_verbosity(absl.logging.ERROR)
    tf.get_logger().setLevel("ERROR")  # e.g. retracing notes when a sweep builds one graph per variant


class _UsageFailure(click.ClickException):
    """`Error: <message>` on one line, exit status 2 (bad usage found by the library)."""
    exit_code = 2


class Cli(click.Group):
    """Turns a UserError from any command into `Error: <message>` and exit status 1 (2 for a
    UsageError: a bad option value only the library can judge)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except UsageError as exc:
            raise _UsageFailure(str(exc)) from None
        except UserError as exc:
            raise click.ClickException(str(exc)) from None


class LibraryChecked(click.ParamType):
    """A string option checked by a library function (which raises UsageError): exit 2 if bad."""

    def __init__(self, name, check):
        self.name, self.check = name, check

    def convert(self, value, param, ctx):
        try:
            return self.check(value)
        except UsageError as exc:  # click names the option itself
            self.fail(re.sub(r"^--[\w-]+:? ", "", str(exc)), param, ctx)


def _library(module):
    """A library module imported on first use (so `--help` stays instant)."""
    import importlib
    return importlib.import_module(module)


def _head_spec(value):
    from heads.architectures import parse_head
    return parse_head(value).spec


def _features_spec(value):
    from heads.transforms import parse_features
    return parse_features(value)


def _spurious(value):
    from embed.sample import parse_spurious
    return parse_spurious(value)


HEAD = LibraryChecked("head", _head_spec)
FEATURES = LibraryChecked("features", _features_spec)


@click.group(cls=Cli, context_settings={"help_option_names": ["-h", "--help"]})
def main():
    """Embed face images once with a frozen backbone, then train attribute heads on the cache."""


def _dataset_options(command):
    options = [
        click.option("--data-dir", type=click.Path(exists=True, file_okay=False),
                     help="CelebA folder: img_align_celeba/, list_attr_celeba.txt|.csv, list_eval_partition.txt|.csv."),
        click.option("--labels", type=click.Path(exists=True, dir_okay=False),
                     help="Attribute file (CelebA text or CSV with image_id); overrides --data-dir."),
        click.option("--partition", type=click.Path(exists=True, dir_okay=False),
                     help="Partition file (CelebA text or CSV); overrides --data-dir."),
        click.option("--images", type=click.Path(exists=True, file_okay=False),
                     help="Folder the image ids are relative to; overrides --data-dir."),
        click.option("--official-split", is_flag=True,
                     help="No partition file: use CelebA's split by image number (1-162770 train, "
                          "162771-182637 val, 182638-202599 test)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@main.command()
@_dataset_options
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Cache file to write (HDF5).")
@click.option("--model", default=DEFAULT_MODEL, show_default=True,
              help="TF-Hub handle, local SavedModel folder, keras:<Name>, or a .keras/.h5 file.")
@click.option("--weights", help="For keras:<Name>: imagenet (default), none (random: smoke tests only) or a weights file.")
@click.option("--layer", help="For a Keras model file: the layer whose output is the feature (default: the one before the last).")
@click.option("--trust-model", is_flag=True,
              help="Load a Keras model file with safe mode off. Safe mode refuses Lambda layers because "
                   "they can run arbitrary code; turn it off only for files you made or trust.")
@click.option("--image-size", type=click.IntRange(min=8), help="Override the backbone's input size (pixels).")
@click.option("--color", type=click.Choice(["rgb", "grayscale"]), help="Override the backbone's colour mode.")
@click.option("--value-range", type=LibraryChecked("LO,HI", lambda v: _library("embed.backbones").parse_value_range(v)),
              help="Override the pixel range the backbone expects, as LO,HI (e.g. 0,1).")
@click.option("--antialias", is_flag=True, help="Antialias when resizing (the reference used plain bilinear).")
@click.option("--batch-size", default=BATCH_SIZE, show_default=True, type=click.IntRange(min=1))
@click.option("--dtype", "feature_dtype", default="float16", show_default=True,
              type=click.Choice(["float16", "float32"]), help="Feature dtype in the cache.")
@click.option("--mixed-precision", is_flag=True, help="GPU: run a Keras backbone in mixed float16.")
@click.option("--xla", is_flag=True, help="Compile the backbone with XLA (jit_compile).")
@click.option("--overwrite", is_flag=True, help="Start afresh even if --out exists.")
@click.option("--allow-failures", is_flag=True, help="Exit 0 even if some images failed.")
@click.option("--retry-failed", is_flag=True,
              help="Re-embed the rows marked failed (after fixing their files), each in its whole batch; ok rows "
                   "are left as they are. Then finish the cache if it is unfinished.")
@click.option("--max-pixels", default=MAX_PIXELS, show_default=True, type=click.IntRange(min=1),
              help="Images larger than this (read from the file header, before decoding) become failed rows: "
                   "decompression bombs cannot exhaust memory.")
@click.option("--log-every", default=LOG_EVERY, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Seconds between progress lines when stderr is not a terminal (logs of nohup or cluster jobs).")
@click.option("--devices", default="1", show_default=True,
              help="all, or how many GPUs to use (whole batches go round-robin, one model copy per GPU); "
                   "a machine without GPUs has one device, its CPU.")
@click.option("--shard", type=LibraryChecked("I/N", lambda v: _library("cache.shards").parse_shard(v)),
              help="I/N: embed only shard I of N (a contiguous block of whole batches) into --out; "
                   "join the N shard files with `cli.py merge`.")
@click.option("--engine", default="local", show_default=True, type=click.Choice(["local", "ray"]),
              help="ray: run the backbone in a Ray actor pool (pip install 'celeba-heads[ray]').")
@click.option("--ray-address", help="Ray cluster to join (default: start a local one).")
@click.option("--ray-actors", type=click.IntRange(min=1),
              help="Backbone actors (default: one per GPU in the cluster, else one per 2 CPUs).")
@click.option("--views", type=click.Choice(["flip"]), multiple=True,
              help="Also store each image's features mirrored left-right (dataset features_flip): the "
                   "backbone runs twice per image, so embedding takes twice as long.")
@click.option("--verbose", is_flag=True, help="Show TensorFlow's log output.")
def embed(data_dir, labels, partition, images, official_split, out, model, weights, layer, trust_model,
          image_size, color, value_range, antialias, batch_size, feature_dtype, mixed_precision, xla,
          overwrite, allow_failures, retry_failed, max_pixels, log_every, devices, shard, engine, ray_address,
          ray_actors, views, verbose):
    """Run the frozen backbone once over every labelled image into an HDF5 cache (resumable)."""
    from embed.dataset import load_dataset, locate

    if engine != "ray" and (ray_address or ray_actors):
        raise click.UsageError("--ray-address and --ray-actors apply to --engine ray only")
    if engine == "ray" and devices != "1":
        raise click.UsageError("--devices applies to --engine local; Ray places one actor per GPU itself")
    if retry_failed and overwrite:
        raise click.UsageError("--retry-failed keeps the cache's ok rows; it cannot be combined with --overwrite")
    labels_path, partition_path, images_dir = locate(data_dir, labels, partition, images)
    dataset = load_dataset(labels_path, images_dir, partition_path, use_official_split=official_split)
    _report_dataset(dataset)
    _start_tensorflow(verbose)
    from embed.backbones import load_backbone, resolve_devices
    from embed.engines import LocalEngine
    from embed.runner import Interrupted, embed as run_embed
    from cache.reader import cache_info

    backbones = [load_backbone(model, weights=weights, layer=layer, image_size=image_size, color=color,
                               value_range=value_range, antialias=antialias, trust_model=trust_model,
                               mixed_precision=mixed_precision, xla=xla, device=device)
                 for device in resolve_devices(devices)]
    backbone = backbones[0]
    if engine == "ray":
        from embed.ray_engine import RayEngine
        runs_on = RayEngine(backbone, ray_address, ray_actors, trust_model, max_pixels)
    else:
        runs_on = LocalEngine(backbones, max_pixels=max_pixels)
    prep = backbone.preprocessing
    click.echo(f"backbone: {model} -> {backbone.feature_dim}-d; input {prep.image_size}x{prep.image_size} "
               f"{prep.color}, values in [{prep.value_range[0]:g}, {prep.value_range[1]:g}]")
    try:
        summary = run_embed(dataset, backbone, out, engine=runs_on, batch_size=batch_size, feature_dtype=feature_dtype,
                            overwrite=overwrite, shard=shard, views=tuple(dict.fromkeys(views)),
                            retry_failed=retry_failed, log_every=log_every)
    except Interrupted as exc:
        click.echo(str(exc), err=True)
        sys.exit(EXIT_INTERRUPTED)
    if retry_failed:
        click.echo(f"retried {summary.retried} failed row(s): {summary.retried_ok} now ok, "
                   f"{summary.retried - summary.retried_ok} still failed")
    if summary.started_at_row >= summary.n_rows:
        click.echo(f"{out} is already complete; nothing to embed")
    elif summary.started_at_row:
        click.echo(f"resumed at row {summary.started_at_row} of {summary.n_rows}")
    for image_id, error in summary.failures[:20]:
        click.echo(f"failed: {image_id}: {error}")
    if len(summary.failures) > 20:
        click.echo(f"... and {len(summary.failures) - 20} more (see `cli.py info {out}`)")
    info = cache_info(out)
    click.echo(f"done: {summary.rows_ok} ok, {summary.rows_failed} failed in {summary.seconds:.1f} s, "
               f"{summary.images_per_second:.1f} images/s; cache {out}: {info['rows']['ok']} ok, "
               f"{info['rows']['failed']} failed, {info['rows']['not_done']} not done")
    if info["rows"]["failed"] and not allow_failures:
        click.echo(f"{info['rows']['failed']} image(s) failed; exit status {EXIT_FAILED_ROWS} "
                   "(pass --allow-failures to accept)", err=True)
        sys.exit(EXIT_FAILED_ROWS)


def _report_dataset(dataset):
    click.echo(f"dataset: {len(dataset.image_ids)} labelled images, {len(dataset.attribute_names)} "
               f"attributes, from {dataset.sources['labels']}")
    if dataset.missing:
        click.echo(f"note: {len(dataset.missing)} labelled id(s) have no image file (recorded as failed "
                   f"rows), e.g. {dataset.missing[0]}")
    if dataset.unlabelled:
        click.echo(f"note: {len(dataset.unlabelled)} image file(s) have no label row and are not embedded, "
                   f"e.g. {dataset.unlabelled[0]}")
    if dataset.unused_partition_rows:
        click.echo(f"note: the partition file lists {dataset.unused_partition_rows} id(s) without a label row")


@main.command()
@click.argument("shards", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Cache file to write.")
@click.option("--overwrite", is_flag=True, help="Replace --out if it exists.")
def merge(shards, out, overwrite):
    """Join the shard files of one `embed --shard I/N` run into one cache (checks they belong together)."""
    from cache.shards import merge_shards

    n_rows = merge_shards(list(shards), out, overwrite=overwrite)
    click.echo(f"merged {len(shards)} shards into {out}: {n_rows} rows")


@main.command()
@click.argument("cache", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--check", is_flag=True, help="Also read every ok row's features and check they are finite "
                                            "(the structure and label checks run on every open).")
def info(cache, as_json, check):
    """Summarise a cache: shape, backbone, preprocessing, row status, splits, label rates."""
    from cache.reader import cache_info

    summary = cache_info(cache, check=check)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        _print_info(summary)
    if check:
        bad = summary["check"]["nonfinite_rows"]
        if bad:
            raise UserError(f"{cache}: check FAILED: {len(bad)} of {summary['check']['ok_rows']} ok rows hold "
                            f"non-finite features (NaN or inf), e.g. rows {', '.join(map(str, bad[:5]))}")
        click.echo(f"check: OK: structure, labels, partition and status valid; all {summary['check']['ok_rows']} "
                   "ok rows have finite features")


def _print_info(summary):
    rows, prep, backbone = summary["rows"], summary["preprocessing"], summary["backbone"]
    weights = f", weights {backbone['weights']}" if backbone.get("weights") else ""
    click.echo(f"cache: {summary['path']} (format {summary['format_version']}, "
               f"celeba-heads {summary['tool_version']}, created {summary['created']})")
    click.echo(f"features: {summary['shape'][0]} x {summary['shape'][1]} {summary['dtype']}")
    click.echo(f"backbone: {backbone.get('model', '?')} ({backbone.get('kind', '?')}{weights})"
               + ("  RANDOM WEIGHTS" if backbone.get("random_weights") else ""))
    if "image_size" in prep:
        lo, hi = (f"{v:g}" if isinstance(v, (int, float)) else str(v) for v in prep.get("value_range") or "??")
        click.echo(f"preprocessing: {prep['image_size']}x{prep['image_size']} {prep.get('color', '?')}, values in "
                   f"[{lo}, {hi}], {prep.get('resize', '?')}"
                   + (" antialiased" if prep.get("antialias") else ""))
    if summary["views"]:
        click.echo(f"views: orig, {', '.join(summary['views'])} (features_{summary['views'][0]} holds the mirrored images)")
    click.echo(f"rows: {rows['ok']} ok, {rows['failed']} failed, {rows['not_done']} not done")
    splits = summary["splits"]
    click.echo("splits: " + ", ".join(f"{name} {s['ok']}/{s['rows']} ok" for name, s in splits.items()))
    click.echo(f"{'attribute':<22}" + "".join(f"{name:>8}" for name in splits) + "   (positive rate, ok rows)")
    for attribute in summary["attributes"]:
        rates = [splits[name]["positive_rate"][attribute] for name in splits]
        click.echo(f"{attribute:<22}" + "".join(f"{r:8.3f}" if r is not None else f"{'-':>8}" for r in rates))
    for failure in summary["failures"]:
        click.echo(f"failed row {failure['row']}: {failure['image_id']}: {failure['error']}")
    if rows["failed"] > len(summary["failures"]):
        click.echo(f"... {rows['failed'] - len(summary['failures'])} more failed rows (see --json or the cache)")


def _print_epoch(record):
    accuracies = "  ".join(f"{k.removeprefix('val_').removesuffix('_accuracy')} {100 * v:.1f}%"
                           for k, v in record.items() if k.startswith("val_") and k.endswith("_accuracy"))
    val_loss = f", val loss {record['val_loss']:.4f}" if "val_loss" in record else ""
    click.echo(f"epoch {record['epoch']}: loss {record['loss']:.4f}{val_loss}  val: {accuracies}")


def _attrs_option(command):
    return click.option("--attrs", "attributes", default=",".join(ATTRIBUTES), show_default=True,
                        help="Comma-separated attribute names, or 'all'.")(command)


def _groups_option(command):
    return click.option("--groups", help="Attributes defining groups (e.g. Male or Male,Young): metrics per "
                                         "combination of target and group values, worst-group accuracy.")(command)


def _run_options(command):
    """Options every command that trains on caches shares."""
    options = [
        _attrs_option,
        click.option("--features", default=RUN["features"], show_default=True, type=FEATURES,
                     help="Feature transform fitted on train only and stored with the run: raw, standardize, "
                          "l2, pca:N, pca-whiten:N."),
        click.option("--standardize", is_flag=True, help="Shorthand for --features standardize."),
        click.option("--tune-threshold", is_flag=True, help="Per-attribute threshold maximising val accuracy (never test)."),
        click.option("--allow-partial", is_flag=True, help="Use caches with unfinished rows."),
        click.option("--drop-nonfinite", is_flag=True,
                     help="Leave out rows whose features hold NaN or inf (counted in config.json) instead of stopping."),
        _groups_option,
        click.option("--views", default="orig", show_default=True, type=click.Choice(["orig", "mean", "concat", "augment"]),
                     help="With a cache embedded --views flip: orig features, the mean of orig and mirrored, both "
                          "side by side (concat), or both as training rows (augment)."),
        click.option("--eval-view", default="orig", show_default=True, type=click.Choice(["orig", "mean"]),
                     help="--views augment: evaluate (and predict) on orig or on the mean of both views."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _features(features, standardize):
    if standardize and features not in ("raw", "standardize"):
        raise click.BadParameter(f"--standardize contradicts --features {features}", param_hint="--standardize")
    return "standardize" if standardize else features


CACHES = click.argument("caches", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))


@main.command("train-heads")
@CACHES
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run directory to write.")
@click.option("--head", default=KERAS["head"], show_default=True, type=HEAD,
              help="linear, mlp:H1[,H2...] or FILE.py:FUNCTION (build(n_features, attributes) -> keras.Model "
                   "with one sigmoid output named after each attribute).")
@click.option("--hidden", type=click.IntRange(min=1), help="Shorthand for --head mlp:HIDDEN.")
@click.option("--epochs", default=KERAS["epochs"], show_default=True, type=click.IntRange(min=1))
@click.option("--batch-size", default=KERAS["batch_size"], show_default=True, type=click.IntRange(min=1))
@click.option("--dropout", default=KERAS["dropout"], show_default=True, type=click.FloatRange(0, 1, max_open=True),
              help="Dropout on the input features (built-in heads).")
@click.option("--lr", default=KERAS["lr"], show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Adam learning rate.")
@click.option("--l2", default=KERAS["l2"], show_default=True, type=click.FloatRange(min=0),
              help="L2 penalty on the output layer (built-in heads).")
@click.option("--class-weight", default=KERAS["class_weight"], show_default=True, type=click.Choice(["none", "balanced"]))
@click.option("--seed", default=KERAS["seed"], show_default=True, type=int, help="Same seed and cache, same metrics.")
@_run_options
@click.option("--verbose", is_flag=True, help="Show TensorFlow's log output.")
def train_heads(caches, out, head, hidden, epochs, batch_size, dropout, lr, l2, class_weight, seed, attributes,
                features, standardize, tune_threshold, allow_partial, drop_nonfinite, groups, views, eval_view,
                verbose):
    """Train a Keras head on the cache (several caches of the same images: their features joined):
    fit on train, validate each epoch, report val and test."""
    if hidden is not None and head != KERAS["head"]:
        raise click.BadParameter("give --head or --hidden, not both", param_hint="--hidden")
    features = _features(features, standardize)
    _start_tensorflow(verbose)
    from heads.report import format_groups, format_table
    from heads.train import train_heads as run_training

    metrics = run_training(list(caches), out, attributes, head=f"mlp:{hidden}" if hidden else head, epochs=epochs,
                           batch_size=batch_size, dropout=dropout, lr=lr, l2=l2, class_weight=class_weight,
                           seed=seed, features=features, tune_threshold=tune_threshold, allow_partial=allow_partial,
                           drop_nonfinite=drop_nonfinite, groups=groups, views=views, eval_view=eval_view,
                           on_epoch=_print_epoch)
    click.echo(format_table(metrics, title=f"keras head {metrics['run']['settings']['head']} "
                                           f"({metrics['run']['train_seconds']:.1f} s training)"))
    if "groups" in metrics:
        click.echo(format_groups(metrics, "test"))
    click.echo(f"wrote {out}: model.keras, metrics.json, config.json, history.csv, loss.png, accuracy.png, "
               "accuracy_vs_majority.png")


@main.command()
@CACHES
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Sweep directory; one run folder per variant.")
@click.option("--grid", "grid", multiple=True, required=True,
              help="name=v1,v2,... (repeat for each axis): head, hidden, dropout, lr, l2, epochs, batch_size, "
                   "class_weight. head=linear,mlp:128,mlp:512,128 is three heads.")
@click.option("--seed", default=KERAS["seed"], show_default=True, type=int)
@_run_options
@click.option("--verbose", is_flag=True, help="Show TensorFlow's log output.")
def sweep(caches, out, grid, seed, attributes, features, standardize, tune_threshold, allow_partial, drop_nonfinite,
          groups, views, eval_view, verbose):
    """Train one Keras head per grid point on the cache and write a leaderboard (val accuracy)."""
    features = _features(features, standardize)
    _start_tensorflow(verbose)
    import pandas as pd
    from heads.sweep import run_sweep

    def progress(i, total, name, metrics):
        click.echo(f"[{i}/{total}] {name}: {metrics['run']['train_seconds']:.1f} s, val accuracy "
                   + ", ".join(f"{a} {100 * m['val']['accuracy']:.1f}%" for a, m in metrics["attributes"].items()))

    board = run_sweep(list(caches), out, list(grid), attributes, seed=seed, features=features,
                      tune_threshold=tune_threshold, allow_partial=allow_partial, drop_nonfinite=drop_nonfinite,
                      groups=groups, views=views, eval_view=eval_view, on_variant=progress)
    with pd.option_context("display.width", 200, "display.max_columns", 50, "display.float_format", "{:.4f}".format):
        click.echo(board.to_string(na_rep="-"))
    click.echo(f"wrote {out}/<variant>/ and {out}/leaderboard.csv, leaderboard.md")


def _head_kinds(value):
    """--models: kinds registered in heads.registry, other than the Keras head (train-heads, sweep)."""
    from heads.registry import kind_names
    choices = [k for k in kind_names() if k != "keras_head"]
    kinds = [m.strip() for m in value.split(",") if m.strip()]
    for kind in kinds:
        if kind not in choices:
            raise UsageError(f"unknown model {kind!r}; choose from {', '.join(choices)}")
    if not kinds:
        raise UsageError("give at least one model")
    return kinds


@main.command()
@CACHES
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run directory; one subfolder per model.")
@click.option("--models", default=",".join(BASELINE_MODELS), show_default=True, type=LibraryChecked("models", _head_kinds),
              help="Comma-separated: majority, logreg, linear_svm, knn (scikit-learn), the probe protocols "
                   "logreg-cv, knn-cosine, linear-grid, and dfr (group-balanced last-layer retraining; needs --groups).")
@click.option("--C", "C", default=SKLEARN["C"], show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Inverse regularisation strength (logreg, linear_svm).")
@click.option("--k", default=SKLEARN["k"], show_default=True, type=click.IntRange(min=1), help="Neighbours (knn).")
@click.option("--refit-train-val", is_flag=True, help="logreg-cv: refit on train + val with the C chosen on val.")
@click.option("--dfr-on", default="val", show_default=True, type=click.Choice(["val", "train"]),
              help="dfr: refit the last layer on group-balanced subsets of val (20, the paper's DFR) or train (10).")
@click.option("--seed", default=SKLEARN["seed"], show_default=True, type=int)
@_run_options
@click.option("--verbose", is_flag=True, help="Show TensorFlow's log output.")
def baselines(caches, out, models, C, k, refit_train_val, dfr_on, seed, attributes, features, standardize,
              tune_threshold, allow_partial, drop_nonfinite, groups, views, eval_view, verbose):
    """scikit-learn baselines and probe protocols on the same splits and attributes, one run each."""
    features = _features(features, standardize)
    _start_tensorflow(verbose)
    from heads.report import format_groups, format_table
    from heads.train import run_kinds

    results = run_kinds(list(caches), out, models, attributes, features=features, tune_threshold=tune_threshold,
                        allow_partial=allow_partial, drop_nonfinite=drop_nonfinite, groups=groups, views=views,
                        eval_view=eval_view, C=C, k=k,
                        seed=seed, refit_train_val=refit_train_val, dfr_on=dfr_on)
    for model, metrics in results.items():
        chosen = metrics["run"].get("selection")
        note = "" if not chosen else "; chose " + json.dumps({k: v for k, v in chosen.items() if not k.startswith("val_")})
        click.echo(format_table(metrics, title=f"{model} ({metrics['run']['train_seconds']:.1f} s training{note})"))
        if "groups" in metrics:
            click.echo(format_groups(metrics, "test"))
    click.echo(f"wrote {out}/<model>/: metrics.json, config.json, the fitted model, accuracy_vs_majority.png")


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--split", default="test", show_default=True, type=click.Choice(["train", "val", "test"]))
@click.option("--cache", "caches", multiple=True, type=click.Path(dir_okay=False),
              help="The run's cache at a new path (checked by fingerprint); once per cache of a fused run.")
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON.")
@click.option("--trust-model", is_flag=True, help="Load a model file that Keras' safe mode refuses (code inside).")
@_groups_option
@click.option("--drop-nonfinite", is_flag=True, help="Leave out rows whose features hold NaN or inf.")
@click.option("--verbose", is_flag=True, help="Show TensorFlow's log output.")
def evaluate(run_dir, split, caches, as_json, trust_model, groups, drop_nonfinite, verbose):
    """Re-evaluate a saved run (any head kind) against its cache."""
    _start_tensorflow(verbose)
    from heads.evaluate import evaluate_run
    from heads.metrics import METRIC_NAMES
    from heads.report import format_groups

    result = evaluate_run(run_dir, split, list(caches) or None, trust_model=trust_model, groups=groups,
                          drop_nonfinite=drop_nonfinite)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    if "groups" in result:
        click.echo(format_groups(result, split))
    click.echo(f"{run_dir} ({result['run']['kind']}) on {split} of {result['run']['cache']}")
    click.echo(f"{'attribute':<22}" + "".join(f"{m:>19}" for m in METRIC_NAMES))
    for name, by_split in result["attributes"].items():
        values = by_split[split]
        click.echo(f"{name:<22}" + "".join(f"{'-':>19}" if values[m] is None else f"{values[m]:>19.4g}"
                                           for m in METRIC_NAMES))


@main.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--split", default="val", show_default=True, type=click.Choice(["val", "test"]))
@click.option("--metrics", "--metric", "metrics", default="accuracy", show_default=True,
              help="Comma-separated: accuracy, balanced_accuracy, f1, roc_auc, majority_accuracy, "
                   "worst_group_accuracy, mean_group_accuracy (the first ranks).")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False), help="Also write the table as CSV.")
@click.option("--markdown", "markdown_path", type=click.Path(dir_okay=False), help="Also write it as Markdown.")
@_groups_option
@click.option("--verbose", is_flag=True, help="Show TensorFlow's log output.")
def compare(run_dirs, split, metrics, csv_path, markdown_path, groups, verbose):
    """One leaderboard of runs (rows) by attribute x metric, best mean first. With --groups, every run
    is scored again per group on its caches (runs trained without --groups too)."""
    import pandas as pd
    if groups:
        _start_tensorflow(verbose)
    from heads.evaluate import leaderboard, to_markdown

    table = leaderboard(run_dirs, split, [m.strip() for m in metrics.split(",") if m.strip()], groups=groups)
    with pd.option_context("display.width", 200, "display.max_columns", 50, "display.float_format", "{:.4f}".format):
        click.echo(f"{split} split")
        click.echo(table.to_string(na_rep="-"))
    if csv_path:
        table.to_csv(csv_path)
    if markdown_path:
        with open(markdown_path, "w") as f:
            f.write(to_markdown(table))


@main.command()
@click.option("--run", "run_dir", required=True, type=click.Path(exists=True, file_okay=False), help="A run directory.")
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print the predictions as JSON.")
@click.option("--trust-model", is_flag=True, help="Backbone or head model files need safe mode off (see embed --help).")
@click.option("--verbose", is_flag=True, help="Show TensorFlow's log output.")
def predict(run_dir, images, as_json, trust_model, verbose):
    """Predict attributes for image files with a run (its cache's backbone and preprocessing + its head)."""
    _start_tensorflow(verbose)
    from heads.predict import predict_images

    results = predict_images(run_dir, list(images), trust_model=trust_model)
    if as_json:
        click.echo(json.dumps(results, indent=2))
    else:
        for r in results:
            if r["ok"]:
                click.echo(f"{r['image']}  " + "  ".join(f"{a} {v['probability']:.3f} ({v['decision']})"
                                                         for a, v in r["attributes"].items()))
            else:
                click.echo(f"{r['image']}  failed: {r['error']}")
    failed = sum(not r["ok"] for r in results)
    if failed:
        click.echo(f"{failed} of {len(results)} image(s) could not be read", err=True)
        sys.exit(EXIT_FAILED_ROWS)


@main.command()
@click.option("--run", "run_dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="A run directory whose head is a TensorFlow graph (the Keras kinds).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="SavedModel folder to write.")
@click.option("--trust-model", is_flag=True, help="Backbone or head model files need safe mode off (see embed --help).")
@click.option("--verbose", is_flag=True, help="Show TensorFlow's log output.")
def export(run_dir, out, trust_model, verbose):
    """Export backbone + preprocessing + head as one SavedModel (image bytes -> probabilities), for TF Serving."""
    _start_tensorflow(verbose)
    from heads.predict import export_run

    export_run(run_dir, out, trust_model=trust_model)
    click.echo(f"wrote SavedModel {out}: signatures serving_default/from_bytes (string [B] image files) and "
               "from_pixels (float32 [B, S, S, C] preprocessed)")


@main.command()
@click.argument("cache", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder to write (must not exist or be empty).")
@click.option("--n", default=5000, show_default=True, type=click.IntRange(min=1), help="Rows to sample.")
@click.option("--split", default="val", show_default=True, type=click.Choice(["train", "val", "test", "all"]))
@click.option("--attrs", "attributes", default=",".join(ATTRIBUTES), show_default=True,
              help="Attributes in the metadata (comma-separated, or 'all').")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--images", type=click.Path(file_okay=False), help="The image folder, if it moved since embedding.")
@click.option("--verbose", is_flag=True, help="Show TensorFlow's log output.")
def projector(cache, out, n, split, attributes, seed, images, verbose):
    """Export a sample of the cache for TensorBoard's Embedding Projector (features, metadata, sprite)."""
    _start_tensorflow(verbose)
    from heads.projector import export_projector

    result = export_projector(cache, out, n=n, split=split, attributes=attributes, seed=seed, images=images)
    sprite = f", sprite {result['sprite'][0]}x{result['sprite'][1]}" if result["sprite"] else ", no sprite"
    click.echo(f"wrote {out}: {result['rows']} rows, metadata.tsv{sprite}")
    if result["note"]:
        click.echo(f"note: {result['note']}", err=True)
    click.echo(f"view it: tensorboard --logdir {out}  (Projector tab)")


@main.command()
@click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="HTML file to write.")
@click.option("--split", default="test", show_default=True, type=click.Choice(["val", "test"]),
              help="The split whose errors the galleries show.")
@click.option("--errors", "n_errors", default=24, show_default=True, type=click.IntRange(min=0),
              help="Most confident errors shown per attribute.")
@click.option("--images", type=click.Path(file_okay=False), help="The image folder, if it moved since embedding.")
@click.option("--verbose", is_flag=True, help="Show TensorFlow's log output.")
def report(runs, out, split, n_errors, images, verbose):
    """One self-contained HTML page: leaderboard, metrics vs majority, plots, groups, error galleries."""
    _start_tensorflow(verbose)
    from heads.html_report import build_report

    count = build_report(list(runs), out, split=split, n_errors=n_errors, images=images)
    click.echo(f"wrote {out}: {count} run(s)")


@main.command("make-sample")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder to write the dataset into.")
@click.option("--n", default=512, show_default=True, type=click.IntRange(min=10), help="Number of images.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--spurious", type=LibraryChecked("spurious", lambda v: _spurious(v)),
              help="TARGET:GROUP:RATE, e.g. Blond_Hair:Male:0.95: in train, TARGET agrees with GROUP at RATE; "
                   "in val and test they are independent (a planted spurious correlation).")
@click.option("--verbose", is_flag=True, help="Show TensorFlow's log output.")
def make_sample(out, n, seed, spurious, verbose):
    """Write a synthetic CelebA-layout dataset whose labels are visible in the pixels."""
    _start_tensorflow(verbose)
    from embed.sample import make_sample as write_sample

    write_sample(out, n=n, seed=seed, spurious=spurious)
    click.echo(f"wrote {n} images and label/partition files (text and CSV) to {out}")


@main.command()
@click.option("--workdir", default="demo-output", show_default=True, type=click.Path(file_okay=False))
@click.option("--n", default=512, show_default=True, type=click.IntRange(min=40), help="Images in the sample.")
@click.pass_context
def demo(ctx, workdir, n):
    """Offline end to end: sample dataset -> embed (random-weight EfficientNetV2-B0) -> heads and baseline."""
    data_dir, cache_path = os.path.join(workdir, "sample"), os.path.join(workdir, "features.h5")
    ctx.invoke(make_sample, out=data_dir, n=n)
    ctx.invoke(embed, data_dir=data_dir, out=cache_path, model="keras:EfficientNetV2B0", weights="none",
               overwrite=True)
    ctx.invoke(info, cache=cache_path)
    click.echo("\nrandom-weight features are tiny (std ~1e-3), so the head standardizes its input (--features standardize)")
    ctx.invoke(train_heads, caches=(cache_path,), out=os.path.join(workdir, "head"), features="standardize")
    ctx.invoke(baselines, caches=(cache_path,), out=os.path.join(workdir, "baselines"))
    runs = (os.path.join(workdir, "head"), os.path.join(workdir, "baselines"))
    ctx.invoke(compare, run_dirs=runs, split="test")
    ctx.invoke(report, runs=runs, out=os.path.join(workdir, "report.html"))
    click.echo(f"\nplots: {workdir}/head/loss.png, accuracy.png, accuracy_vs_majority.png; TensorBoard: "
               f"tensorboard --logdir {workdir}/head/tb")
    click.echo(f"report: {os.path.abspath(os.path.join(workdir, 'report.html'))}")


if __name__ == "__main__":
    main()
