"""celeba-heads command line: embed images once into an HDF5 cache, then work on the cache.

A thin typed layer: each command turns its options into the library's specs (TaskSpec,
BackboneSpec, EmbedSpec, Placement) or keyword arguments, makes one library call, and echoes what
a formatter of `heads.look.tables` makes of the result. The only module that talks to the terminal:
the library reports through return values, callbacks and `logging` (shown here as `note:` and
`WARNING:` lines). TensorFlow is imported only by the commands that need it, so `--help` is instant.
Exit status: 0 success, 1 error (one line, no traceback), 2 usage error, 3 finished with failed
images (unless --allow-failures), 130 interrupted (embed resumes with the same command; the others keep nothing).
"""

import contextlib
import difflib
import functools
import importlib
import json
import logging
import math
import os
import re
import sys
import time

import click
from click.core import ParameterSource

from cache.errors import UsageError, UserError
from cache.units import counted
from embed.backbones import DEFAULT_MODEL  # no TensorFlow import at module level
from embed.defaults import (BATCH_SIZE, FACE_CHOICES, FACE_DEFAULTS, FEATURE_DTYPE, FIT_CHOICES, LOG_EVERY, MAX_PIXELS,
                            SAMPLE)
from heads.defaults import (
    ATTRIBUTES,
    AUDIT,
    BASELINE_MODELS,
    CALIBRATE,
    DFR,
    KERAS,
    PROJECTOR,
    REPORT,
    RUN,
    SCORE,
    SERVE,
    SKLEARN,
    TAIL_GRID,
    TAIL_HALVING,
)
from heads.metrics import BY_NAME  # the metrics table; no scikit-learn import until a metric is computed

EXIT_FAILED_ROWS, EXIT_INTERRUPTED = 3, 130
LIBRARY_LOGGERS = ("embed", "heads", "cache")


def _library(module):
    """A library module imported on first use (so `--help` stays instant)."""
    return importlib.import_module(module)


def _echo_lines(lines, err=False):
    for line in lines:
        click.echo(line, err=err)


# --- talking to the terminal ---------------------------------------------------------------------

class _LibraryNotes(logging.Handler):
    """The library's log records on stderr: `WARNING: ...` for warnings, `note: ...` otherwise; each
    line once per command (a command that loads its task once per split says a file's note once)."""
    said = set()

    def emit(self, record):
        line = ("WARNING: " if record.levelno >= logging.WARNING else "note: ") + record.getMessage()
        if line not in self.said:
            self.said.add(line)
            click.echo(line, err=True)


def _listen_to_the_library():
    _LibraryNotes.said.clear()  # a new command
    for name in LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(logging.INFO)
        if not any(isinstance(h, _LibraryNotes) for h in logger.handlers):
            logger.addHandler(_LibraryNotes())


class _ProgressView:
    """Renders `embed.runner.Progress` events on stderr: a bar on a terminal; otherwise (nohup,
    cluster jobs, CI) a line every log_every seconds with rows done/total, images/s and the ETA."""

    def __init__(self, log_every):
        self.log_every, self.bar, self.label = log_every, None, None
        self.began = self.last = time.perf_counter()

    def __call__(self, progress):
        now = time.perf_counter()
        if progress.label != self.label:  # a new phase (retrying failed rows, then embedding)
            self.close()
            self.label, self.began, self.last, self.seen = progress.label, now, now, progress.began
            if sys.stderr.isatty():
                self.bar = click.progressbar(length=progress.total - progress.began, label=progress.label,
                                             file=sys.stderr, show_pos=True, show_eta=True)
                self.bar.__enter__()
        rate = (progress.done - progress.began) / max(now - self.began, 1e-9)
        if self.bar is not None:
            self.bar.update(progress.done - self.seen)
            self.seen = progress.done
        elif now - self.last >= self.log_every:
            self.last = now
            eta = (progress.total - progress.done) / rate if rate > 0 else 0
            click.echo(_library("heads.look.tables").progress_line(progress.label, progress.done, progress.total,
                                                                   rate, eta), err=True)

    def close(self):
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


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


def uses_tensorflow(when=None, deferred=False):
    """Decorator: the command gets --verbose, and TensorFlow is started before it runs (its start-up
    log noise hidden unless --verbose); when(kwargs): start it only if this says so; deferred: the
    command starts it itself, calling its `start_tensorflow` argument."""
    def decorate(command):
        @functools.wraps(command)
        def run(*args, verbose, **kwargs):
            if deferred:
                return command(*args, start_tensorflow=functools.partial(_start_tensorflow, verbose), **kwargs)
            if when is None or when(kwargs):
                _start_tensorflow(verbose)
            return command(*args, **kwargs)
        return click.option("--verbose", is_flag=True, help="Show TensorFlow's log output.")(run)
    return decorate


FILES_BESIDE = {"video": ".csv", "tflite": ".json"}  # output kinds that are a file and one beside it


def writes(**outputs):
    """Decorator: the command gets --overwrite, and what it writes (argument -> "file", "video" (a
    file and its .csv beside it), "tflite" (a file and its .json beside it) or a folder kind of
    `cache.outputs.OWNED`; or a function of the command's arguments giving one of these) follows the
    one output policy, `cache.outputs`: checked before the command runs (so before TensorFlow
    starts), nothing replaced unasked, everything as it was if the command fails."""
    def decorate(command):
        @functools.wraps(command)
        def run(*args, overwrite, **kwargs):
            policy = _library("cache.outputs")
            options = {p.name: p.opts[0] for p in click.get_current_context().command.params}
            written = []
            for name, kind in outputs.items():
                kind = kind(kwargs) if callable(kind) else kind
                if kwargs.get(name) is not None:  # "" too: the policy refuses an empty path
                    path, option = kwargs[name], options[name]
                    written.append(policy.Output(path, option, policy.FILE if kind in FILES_BESIDE else kind))
                    if kind in FILES_BESIDE and str(path).strip():
                        written.append(policy.Output(str(policy.beside(path, FILES_BESIDE[kind])), option))
            try:
                with policy.writing(written, overwrite):  # an interrupted command's outputs are put back
                    return command(*args, **kwargs)
            except KeyboardInterrupt:
                shown = ", ".join(dict.fromkeys(f"{o.option} {o.path}" for o in written))
                click.echo(f"\ninterrupted: nothing kept ({shown} as before this command); run it again to start "
                           "over", err=True)
                sys.exit(EXIT_INTERRUPTED)
        return click.option("--overwrite", is_flag=True,
                            help="Replace the output if it exists (a folder only if this command wrote it).")(run)
    return decorate


# --- errors --------------------------------------------------------------------------------------

class _UsageFailure(click.ClickException):
    """`Error: <message>` on one line, exit status 2 (bad usage found by the library)."""
    exit_code = 2


class Cli(click.Group):
    """Turns a UserError from any command into `Error: <message>` and exit status 1 (2 for a
    UsageError: a bad option value only the library can judge), and click's own usage errors into
    the same one line (no usage synopsis; --help has it)."""

    def invoke(self, ctx):
        _listen_to_the_library()
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:  # a command that writes says what it kept (`writes`); embed resumes
            click.echo("\ninterrupted: nothing written", err=True)
            sys.exit(EXIT_INTERRUPTED)
        except click.UsageError as exc:
            raise _UsageFailure(exc.format_message()) from None
        except UsageError as exc:
            raise _UsageFailure(str(exc)) from None
        except UserError as exc:
            raise click.ClickException(str(exc)) from None


class SweepCommand(click.Command):
    """`sweep`: a Keras setting given as an option (--epochs 5) is pointed to its grid axis."""

    def parse_args(self, ctx, args):
        try:
            return super().parse_args(ctx, args)
        except click.NoSuchOption as exc:
            key = exc.option_name.lstrip("-").replace("-", "_")
            if key in _library("heads.run.sweep").GRID_KEYS:
                raise click.UsageError(f"sweep takes {exc.option_name} as an axis of its grid: --grid {key}=V1,V2,... "
                                       f"(one value for all variants: --grid {key}=V)", ctx) from None
            raise


class LibraryChecked(click.ParamType):
    """A string option checked by a library function (which raises UsageError): exit 2 if bad."""

    def __init__(self, name, check):
        self.name, self.check = name, check

    def convert(self, value, param, ctx):
        try:
            return self.check(value)
        except UsageError as exc:  # click names the option itself
            self.fail(re.sub(r"^--[\w-]+:? ", "", str(exc)), param, ctx)


def _checked(name, module, function):
    return LibraryChecked(name, lambda value: getattr(_library(module), function)(value))


class FiniteRange(click.FloatRange):
    """A float range that refuses NaN (which passes every comparison) and infinities."""

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


SEED = click.IntRange(0, 2**32 - 1)  # what NumPy's and TensorFlow's seeding accept
HEAD = LibraryChecked("head", lambda v: _library("heads.kinds.architectures").parse_head(v).spec)


def _setting(name, metavar):
    """A Keras head setting's option type: checked by the kind's own table (`check_setting`), the
    check sweep's --grid values get too."""
    return LibraryChecked(metavar, lambda v: _library("heads.kinds.keras_head").check_setting(name, v))
EPOCHS = _checked("auto|N", "heads.kinds.trainer", "parse_epochs")
FEATURES = _checked("features", "heads.run.transforms", "parse_features")


def _given(**values):
    """The options among `values` that the user gave (not left at their defaults): settings a
    library function must not receive unasked (`baselines` hands each kind only what it takes)."""
    ctx = click.get_current_context()
    return {name: value for name, value in values.items()
            if ctx.get_parameter_source(name) not in (None, ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP)}


def _options(*options):
    """Decorator applying click options in the order listed."""
    def decorate(command):
        for option in reversed(options):
            command = option(command)
        return command
    return decorate


@click.group(cls=Cli, context_settings={"help_option_names": ["-h", "--help"]})
def main():
    """Embed face images once with a frozen backbone, then train attribute heads on the cache."""


# --- option groups, each declared once -----------------------------------------------------------

TRUST_MODEL = click.option("--trust-model", is_flag=True,
                           help="Load a model file that Keras' safe mode refuses (code inside, e.g. a Lambda layer); "
                                "only for files you made or trust.")
AS_JSON = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
PLOTS = click.option("--plots/--no-plots", default=RUN["plots"], show_default=True,
                     help="Draw each run's pictures (loss.png and accuracy.png per epoch, accuracy_vs_majority.png, "
                          "reliability.png); --no-plots saves about half of a small run's time, e.g. in a sweep.")
ATTRS = click.option("--attrs", "attributes", default=",".join(ATTRIBUTES), show_default=True,
                     help="Comma-separated attribute names, or 'all'.")
GROUPS = click.option("--groups", help="Attributes defining groups (e.g. Male or Male,Young): metrics per "
                                       "combination of target and group values, worst-group accuracy.")
DROP_NONFINITE = click.option("--drop-nonfinite", is_flag=True,
                              help="Leave out rows whose features hold NaN or inf (counted in a run's config.json, "
                                   "an audit's summary.json) instead of stopping.")
LABEL_OVERLAY = (
    click.option("--labels", "label_files", multiple=True, type=click.Path(exists=True, dir_okay=False),
                 help="A labels file (CelebA text, or CSV with image_id) patching the cache's labels by image id, "
                      "without embedding again: a value sets a label, an empty cell, NA or ? makes it unknown, "
                      "what the file does not list stays. Repeatable: later files win cell by cell."),
    click.option("--partition", "partition_file", type=click.Path(exists=True, dir_okay=False),
                 help="A partition file (CelebA text, or CSV image_id,partition) re-splitting the cache's rows; "
                      "rows it does not list leave the run."))
IMAGES = click.option("--images", type=click.Path(file_okay=False), help="The image folder, if it moved since embedding.")
EPOCH_OPTIONS = (
    click.option("--epochs", default=KERAS["epochs"], show_default=True, type=EPOCHS,
                 help="auto: train until the val loss has not improved for --patience epochs (at most "
                      "--max-epochs) and keep the best epoch's weights; or a number of epochs (the reference "
                      "notebook's recipe is 3)."),
    click.option("--patience", default=KERAS["patience"], show_default=True, type=_setting("patience", "N"),
                 help="--epochs auto: epochs without a better val loss before stopping."),
    click.option("--max-epochs", default=KERAS["max_epochs"], show_default=True, type=_setting("max_epochs", "N"),
                 help="--epochs auto: the most epochs to train."))


def dataset_options(command):
    """--data-dir and its overrides -> `dataset`: a function loading the Dataset (embed.dataset)."""
    @_options(
        click.option("--data-dir", type=click.Path(exists=True, file_okay=False),
                     help="CelebA folder: img_align_celeba/, list_attr_celeba.txt|.csv, list_eval_partition.txt|.csv."),
        click.option("--labels", type=click.Path(exists=True, dir_okay=False),
                     help="Attribute file (CelebA text or CSV with image_id); overrides --data-dir."),
        click.option("--partition", type=click.Path(exists=True, dir_okay=False),
                     help="Partition file (CelebA text or CSV); overrides --data-dir."),
        click.option("--images", type=click.Path(exists=True, file_okay=False),
                     help="Folder the image ids are relative to; overrides --data-dir. Alone (no --labels, no "
                          "--data-dir): every image in it and its sub-folders, sorted by path, embedded without "
                          "labels (give them at training time with --labels), all in train unless --partition."),
        click.option("--official-split", is_flag=True,
                     help="No partition file: use CelebA's split by image number (1-162770 train, "
                          "162771-182637 val, 182638-202599 test)."))
    @functools.wraps(command)
    def run(*args, data_dir, labels, partition, images, official_split, **kwargs):
        return command(*args, dataset=functools.partial(_library("embed.dataset").open_dataset, data_dir, labels,
                                                        partition, images, official_split), **kwargs)
    return run


def backbone_options(command):
    """The backbone's options -> `backbone`: an embed.backbones.BackboneSpec."""
    @_options(
        click.option("--model", default=DEFAULT_MODEL, show_default=True,
                     help="TF-Hub handle, local SavedModel folder, keras:<Name>, or a .keras/.h5 file."),
        click.option("--weights", help="For keras:<Name>: imagenet (default), none (random: smoke tests only) or a "
                                       "weights file."),
        click.option("--layer", help="For a Keras model file: the layer whose output is the feature (default: what "
                                     "feeds its classifier when that maps 8x more channels to the class scores, else "
                                     "the layer before the last; embed says which)."),
        click.option("--layers", type=_checked("NAME[:POOL],...", "embed.backbones", "parse_layers"), default="",
                     help="Also store these inner layers of a Keras backbone, from the same pass, each its own "
                          "dataset: POOL gap (the default, [C]), none ([H, W, C]) or grid:K (K x K average "
                          "pooling). The size the layout predicts is printed first; a disk too small is refused."),
        click.option("--trust-model", is_flag=True,
                     help="Load a Keras model file with safe mode off. Safe mode refuses Lambda layers because "
                          "they can run arbitrary code; turn it off only for files you made or trust."),
        click.option("--image-size", type=click.IntRange(8, 4096), help="Override the backbone's input size (pixels)."),
        click.option("--color", type=click.Choice(["rgb", "grayscale"]), help="Override the backbone's colour mode."),
        click.option("--value-range", type=_checked("LO,HI", "embed.backbones", "parse_value_range"),
                     help="Override the pixel range the backbone expects, as LO,HI (e.g. 0,1)."),
        click.option("--antialias", is_flag=True, help="Antialias when resizing (the reference used plain bilinear)."),
        click.option("--mixed-precision", is_flag=True, help="GPU: run a Keras backbone in mixed float16."),
        click.option("--xla", is_flag=True, help="Compile the backbone with XLA (jit_compile)."),
        click.option("--align", is_flag=True,
                     help="Photos, not aligned crops: find the face in each image (MTCNN), align it by its five "
                          "landmarks into CelebA's 178x218 frame, then embed it. An image with no face is a failed "
                          "row; each row's box, landmarks, score and face count are stored."),
        click.option("--face", type=click.Choice(list(FACE_CHOICES)),
                     help="--align: which face of a photo with several (default main: the largest face near the "
                          "centre, box area minus twice the squared distance from the photo's centre; best: the "
                          "detector's most confident; largest; central)."),
        click.option("--min-face", type=click.IntRange(min=12),
                     help=f"--align: the smallest face searched, in pixels (default {FACE_DEFAULTS['min_face']})."),
        click.option("--min-score", type=FiniteRange(min=0, max=1, max_open=True),
                     help=f"--align: the lowest detector score a face keeps (default {FACE_DEFAULTS['min_score']:g})."),
        click.option("--min-mirror-score", "mirror_score", type=FiniteRange(min=0, max=1, max_open=True),
                     help="--align: the lowest score a face keeps with its box mirrored left-right (a face is "
                          "nearly symmetric, a face-like pattern in a texture seldom is; 0: no check; default "
                          f"{FACE_DEFAULTS['mirror_score']:g})."),
        click.option("--landmark-fit", "fit", type=click.Choice(list(FIT_CHOICES)),
                     help="--align: which landmarks the alignment fits onto CelebA's (default eyes-mouth: both "
                          "eyes and the mouth's centre; five: all five, weighted 1/1/0.3/0.3/0.3, the default of "
                          "caches made before it)."),
        click.option("--refine-landmarks", "refine", is_flag=True,
                     help="--align: find each face's landmarks again on its aligned crop, then align by those "
                          "(about 1.5x the detection time; steadier alignment, docs: Faces in the wild)."))
    @functools.wraps(command)
    def run(*args, model, weights, layer, layers, trust_model, image_size, color, value_range, antialias,
            mixed_precision, xla, align, face, min_face, min_score, mirror_score, fit, refine, **kwargs):
        for option, value in (("--face", face), ("--min-face", min_face), ("--min-score", min_score),
                              ("--min-mirror-score", mirror_score), ("--landmark-fit", fit),
                              ("--refine-landmarks", refine)):
            if value is not None and value is not False and not align:
                raise click.UsageError(f"{option} needs --align")
        record = _library("embed.faces").align_record(
            face or FACE_DEFAULTS["face"], refine, fit=fit or FACE_DEFAULTS["fit"],
            min_face=min_face or FACE_DEFAULTS["min_face"],
            min_score=FACE_DEFAULTS["min_score"] if min_score is None else min_score,
            mirror_score=FACE_DEFAULTS["mirror_score"] if mirror_score is None else mirror_score) if align else None
        spec = _library("embed.backbones").BackboneSpec(
            model=model, weights=weights, layer=layer, image_size=image_size, color=color, value_range=value_range,
            antialias=antialias, trust_model=trust_model, mixed_precision=mixed_precision, xla=xla, layers=layers,
            align=record)
        return command(*args, backbone=spec, **kwargs)
    return run


def embed_run_options(command):
    """How the cache is written -> `run`: an embed.runner.EmbedSpec."""
    @_options(
        click.option("--batch-size", default=BATCH_SIZE, show_default=True, type=click.IntRange(1, 65536)),
        click.option("--dtype", "feature_dtype", default=FEATURE_DTYPE, show_default=True,
                     type=click.Choice(["float16", "float32"]), help="Feature dtype in the cache."),
        click.option("--overwrite", is_flag=True, help="Start afresh even if --out exists."),
        click.option("--retry-failed", is_flag=True,
                     help="Re-embed the rows marked failed (after fixing their files), each in its whole batch; ok "
                          "rows are left as they are. Then finish the cache if it is unfinished."),
        click.option("--max-pixels", default=MAX_PIXELS, show_default=True, type=click.IntRange(min=1),
                     help="Images larger than this (read from the file header, before decoding) become failed "
                          "rows: decompression bombs cannot exhaust memory."),
        click.option("--shard", type=_checked("I/N", "cache.shards", "parse_shard"),
                     help="I/N: embed only shard I of N (a contiguous block of whole batches) into --out; "
                          "join the N shard files with `cli.py merge`."),
        click.option("--views", type=click.Choice(["flip"]), multiple=True,
                     help="Also store each image's features mirrored left-right (dataset features_flip): the "
                          "backbone runs twice per image, so embedding takes twice as long."))
    @functools.wraps(command)
    def run(*args, batch_size, feature_dtype, overwrite, retry_failed, max_pixels, shard, views, **kwargs):
        spec = _library("embed.runner").EmbedSpec(
            batch_size=batch_size, feature_dtype=feature_dtype, overwrite=overwrite, shard=shard, views=tuple(views),
            retry_failed=retry_failed, max_pixels=max_pixels)
        return command(*args, run=spec, **kwargs)
    return run


def placement_options(command):
    """Where the backbone runs -> `placement`: an embed.placement.Placement."""
    @_options(
        click.option("--devices", default="1", show_default=True,
                     help="all, or how many GPUs to use (whole batches go round-robin, one model copy per GPU); "
                          "a machine without GPUs has one device, its CPU."),
        click.option("--engine", default="local", show_default=True, type=click.Choice(["local", "ray"]),
                     help="ray: run the backbone in a Ray actor pool (pip install 'celeba-heads[ray]')."),
        click.option("--ray-address", help="Ray cluster to join (default: start a local one)."),
        click.option("--ray-actors", type=click.IntRange(min=1),
                     help="Backbone actors (default: one per GPU in the cluster, else one per 2 CPUs)."))
    @functools.wraps(command)
    def run(*args, devices, engine, ray_address, ray_actors, **kwargs):
        placement = _library("embed.placement").Placement(devices=devices, engine=engine, ray_address=ray_address,
                                                        ray_actors=ray_actors)
        return command(*args, placement=placement, **kwargs)
    return run


def task_options(command):
    """The caches and every option saying which data a run uses -> `task`: a heads.run.task.TaskSpec."""
    @_options(
        click.argument("caches", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False)),
        ATTRS,
        click.option("--features", default=RUN["features"], show_default=True, type=FEATURES,
                     help="Feature transform fitted on train only and stored with the run: raw, standardize, "
                          "l2, pca:N, pca-whiten:N."),
        click.option("--standardize", is_flag=True, help="Shorthand for --features standardize."),
        click.option("--tune-threshold", is_flag=True, help="Per-attribute threshold maximising val accuracy (never test)."),
        click.option("--allow-partial", is_flag=True, help="Use caches with unfinished rows."),
        DROP_NONFINITE,
        GROUPS,
        click.option("--views", default=RUN["views"], show_default=True,
                     type=click.Choice(["orig", "mean", "concat", "augment"]),
                     help="With a cache embedded --views flip: orig features, the mean of orig and mirrored, both "
                          "side by side (concat), or both as training rows (augment)."),
        click.option("--input", "inputs", default="",
                     help="Train on these stored layers instead of the features (LAYER[,LAYER...]: a cache embedded "
                          "with --layers; pooled layers are joined side by side, a multi-layer probe)."),
        click.option("--stream", default=RUN["stream"], show_default=True, type=click.Choice(["auto", "always", "never"]),
                     help="A spatial --input's train split: stream it from the cache in blocks (always), load it "
                          "into memory (never), or stream only when it would take more than half the memory "
                          "available (auto). The run says which."),
        click.option("--eval-view", default=RUN["eval_view"], type=click.Choice(["orig", "mean"]),
                     help="--views augment: evaluate (and predict) on the mean of both views (the default: "
                          "test-time augmentation) or on orig."),
        click.option("--exclude", type=click.Path(exists=True, dir_okay=False),
                     help="Leave out the train rows of the image ids in this CSV (an image_id column: audit's "
                          "label_issues.csv or duplicates.csv, or any). Val and test are never altered; the run "
                          "records the file's sha256 and what it left out."),
        click.option("--mask-labels", type=click.Path(exists=True, dir_okay=False),
                     help="Make the train labels listed in this CSV unknown (image_id and attribute columns: audit's "
                          "label_issues.csv, or any); each row stays in for its other attributes. Val and test are "
                          "never altered; the run records the file's sha256 and the counts."),
        *LABEL_OVERLAY)
    @functools.wraps(command)
    def run(*args, caches, attributes, features, standardize, tune_threshold, allow_partial, drop_nonfinite, groups,
            inputs, stream, views, eval_view, exclude, mask_labels, label_files, partition_file, **kwargs):
        if standardize and features not in ("raw", "standardize"):
            raise click.BadParameter(f"--standardize contradicts --features {features}", param_hint="--standardize")
        spec = _library("heads.run.task").TaskSpec(
            caches=caches, attributes=attributes, features="standardize" if standardize else features, groups=groups,
            views=views, eval_view=eval_view, allow_partial=allow_partial, drop_nonfinite=drop_nonfinite,
            tune_threshold=tune_threshold, inputs=inputs, stream=stream, exclude=exclude, labels=label_files,
            partition=partition_file, mask_labels=mask_labels)
        spec.check()
        return command(*args, task=spec, **kwargs)
    return run


# --- the embedding pass ----------------------------------------------------------------------------

@main.command()
@dataset_options
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Cache file to write (HDF5).")
@backbone_options
@embed_run_options
@placement_options
@click.option("--allow-failures", is_flag=True, help="Exit 0 even if some images failed.")
@click.option("--log-every", default=LOG_EVERY, show_default=True, type=FiniteRange(min=0, min_open=True),
              help="Seconds between progress lines when stderr is not a terminal (logs of nohup or cluster jobs).")
@uses_tensorflow(deferred=True)
def embed(dataset, out, backbone, run, placement, allow_failures, log_every, start_tensorflow):
    """Run the frozen backbone once over every labelled image into an HDF5 cache (resumable)."""
    tables = _library("heads.look.tables")
    dataset = dataset()  # the label files, and where the cache goes, are checked before TensorFlow's start-up
    _library("cache.writer").ensure_parent(out)
    _echo_lines(tables.dataset_lines(dataset))
    start_tensorflow()
    from cache.reader import cache_info
    from embed.placement import build
    from embed.runner import Interrupted
    from embed.runner import embed as run_embed

    model, engine = build(backbone, placement)
    click.echo(tables.backbone_line(backbone.model, model))
    progress = _ProgressView(log_every)
    try:
        summary = run_embed(dataset, model, out, run, engine=engine, on_progress=progress)
    except Interrupted as exc:
        progress.close()
        click.echo(str(exc), err=True)
        sys.exit(EXIT_INTERRUPTED)
    progress.close()
    info = cache_info(out)
    _echo_lines(tables.embed_lines(summary, info, out, retried=run.retry_failed))
    if info["rows"]["failed"] and not allow_failures:
        click.echo(f"{counted(info['rows']['failed'], 'image')} failed; exit status {EXIT_FAILED_ROWS} "
                   "(pass --allow-failures to accept)", err=True)
        sys.exit(EXIT_FAILED_ROWS)


@main.command()
@click.argument("shards", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Cache file to write.")
@click.option("--overwrite", is_flag=True, help="Replace --out if it exists.")
def merge(shards, out, overwrite):
    """Join the shard files of one `embed --shard I/N` run into one cache (checks they belong together)."""
    n_rows = _library("cache.shards").merge_shards(list(shards), out, overwrite=overwrite)
    click.echo(f"merged {len(shards)} shards into {out}: {n_rows} rows")


@main.command()
@click.argument("cache", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--check", is_flag=True, help="Also read every ok row's features and check they are finite "
                                            "(the structure and label checks run on every open).")
@_options(*LABEL_OVERLAY)
def info(cache, as_json, check, label_files, partition_file):
    """Summarise a cache: shape, backbone, preprocessing, row status, splits, label rates; with
    --labels/--partition, also what those files change."""
    tables = _library("heads.look.tables")
    summary = _library("cache.reader").cache_info(cache, check=check)
    if label_files or partition_file:
        summary = _library("heads.run.overlay").overlay_info(summary, cache, label_files, partition_file)
    click.echo(json.dumps(summary, indent=2) if as_json else tables.info_text(summary))
    if "overlay" in summary and not as_json:
        _echo_lines(tables.overlay_lines(summary["overlay"], cache))
    if check:
        ok, line = tables.check_line(cache, summary["check"])
        if not ok:
            raise UserError(line)
        click.echo(line)


# --- heads on the cache ----------------------------------------------------------------------------

@main.command("train-heads")
@task_options
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run directory to write.")
@click.option("--head", default=KERAS["head"], show_default=True, type=HEAD,
              help="linear, mlp:H1[,H2...], attentive[:W[,H[,Q]]] (over a spatial --input), tail (the backbone's "
                   "own layers after the --input layer, trained on the cache) or FILE.py:FUNCTION "
                   "(build(n_features, attributes) -> keras.Model with one sigmoid output named after each attribute).")
@click.option("--hidden", type=_setting("hidden", "N"), help="Shorthand for --head mlp:HIDDEN.")
@_options(*EPOCH_OPTIONS)
@click.option("--batch-size", default=KERAS["batch_size"], show_default=True, type=_setting("batch_size", "N"))
@click.option("--dropout", default=KERAS["dropout"], show_default=True, type=_setting("dropout", "[0,1)"),
              help="Dropout on the input features (built-in heads).")
@click.option("--lr", default=KERAS["lr"], show_default=True, type=_setting("lr", "LR>0"),
              help="Adam learning rate.")
@click.option("--l2", default=KERAS["l2"], show_default=True, type=_setting("l2", "L2>=0"),
              help="L2 penalty on the output layer (built-in heads).")
@click.option("--class-weight", default=KERAS["class_weight"], show_default=True, type=click.Choice(["none", "balanced"]))
@click.option("--seed", default=KERAS["seed"], show_default=True, type=SEED, help="Same seed and cache, same metrics.")
@click.option("--tail-lr", default=KERAS["tail_lr"], show_default=True, type=_setting("tail_lr", "auto|LR>0"),
              help="--head tail: Adam learning rate of the backbone's own layers (the head on top uses --lr); auto: "
                   f"the tail grid's {', '.join(f'{r:g}' for r in TAIL_GRID['tail_lr'])}, one tail per rate and "
                   f"--tail-bn policy trained together, the better half going on after epoch "
                   f"{' and '.join(map(str, TAIL_HALVING))}, the best on val kept.")
@click.option("--tail-bn", default=KERAS["tail_bn"], show_default=True,
              type=click.Choice(["auto", "frozen", "train"]),
              help="--head tail: keep the BatchNormalization statistics and scales as pretrained, or train them; "
                   "auto: both, trained together and halved as for --tail-lr, the best on val kept (with --tail-lr auto: "
                   "every pair).")
@click.option("--calibrate", default=KERAS["calibrate"], show_default=True, type=click.Choice(CALIBRATE),
              help="temperature: after training, fit one temperature per attribute on val (never test) and keep "
                   "it in the model, so evaluate, predict and export apply it.")
@PLOTS
@writes(out="run")
@uses_tensorflow()
def train_heads(task, out, head, hidden, plots, **settings):
    """Train a Keras head on the cache (several caches of the same images: their features joined):
    fit on train, validate each epoch, report val and test."""
    if hidden is not None and head != KERAS["head"]:
        raise click.BadParameter("give --head or --hidden, not both", param_hint="--hidden")
    given = _given(**{name: settings[name] for name in ("tail_lr", "tail_bn", "dropout", "l2", "patience", "max_epochs")})
    unused = _library("heads.kinds.keras_head").unused_settings(head, settings["epochs"], given)
    if unused:
        name, why = unused[0]
        raise click.UsageError(f"--{name.replace('_', '-')} {why}: it would change nothing")
    tables = _library("heads.look.tables")
    metrics = _library("heads.run.fit").train_heads(task, out, head=f"mlp:{hidden}" if hidden else head, plots=plots,
                                                    on_epoch=lambda r: click.echo(tables.epoch_line(r)), **settings)
    click.echo(tables.trained(metrics, f"keras head {metrics['run']['settings']['head']}"))
    click.echo(f"wrote {out}: model.keras, metrics.json, config.json, history.csv"
               + (", loss.png, accuracy.png, accuracy_vs_majority.png, reliability.png" if plots else ""))


@main.command(cls=SweepCommand)
@task_options
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Sweep directory; one run folder per variant.")
@click.option("--grid", "grid", multiple=True, required=True, callback=lambda ctx, param, value: _grid(value),
              help="name=v1,v2,... (repeat for each axis): head, hidden, dropout, lr, l2, epochs (auto or N), "
                   "patience, max_epochs, batch_size, class_weight, calibrate, tail_lr, tail_bn; each value checked as "
                   "train-heads checks its option. head=linear,mlp:128,mlp:512,128 is three heads.")
@click.option("--seed", default=KERAS["seed"], show_default=True, type=SEED)
@PLOTS
@writes(out="runs")
@uses_tensorflow()
def sweep(task, out, grid, seed, plots):
    """Train one Keras head per grid point on the cache and write a leaderboard (val accuracy)."""
    tables = _library("heads.look.tables")
    board = _library("heads.run.sweep").run_sweep(task, out, list(grid), seed=seed, plots=plots,
                                                  on_variant=lambda *v: click.echo(tables.variant_line(*v)))
    click.echo(tables.leaderboard_text(board))
    click.echo(f"wrote {out}: {counted(len(board), 'run folder')} (one per variant), leaderboard.csv, leaderboard.md")


def _grid(specs):
    """--grid: checked as train-heads checks each option (before TensorFlow starts); exit 2 if bad."""
    try:
        _library("heads.run.sweep").parse_grid(list(specs))
    except UsageError as exc:
        raise click.UsageError(str(exc)) from None
    return specs


def _metric_names(value):
    """--metrics of `compare`: names of heads.metrics, at least one, each once."""
    names = [m.strip() for m in value.split(",") if m.strip()]
    unknown = [m for m in names if m not in BY_NAME]
    if not names or unknown or len(set(names)) != len(names):
        raise UsageError(f"--metrics {value!r}: give one or more of {', '.join(BY_NAME)}, each once")
    return names


def _audit_kind(value):
    """--kind of `audit`: any registered head kind."""
    choices = _library("heads.kinds").kind_names()
    if value not in choices:
        close = difflib.get_close_matches(value, choices, n=1, cutoff=0.5)
        raise UsageError(f"unknown head kind {value!r}{f' (did you mean {close[0]}?)' if close else ''}; choose from "
                         f"{', '.join(choices)}")
    return value


def _head_kinds(value):
    """--models: kinds that `baselines` trains (heads.kinds registry)."""
    choices = _library("heads.kinds").kind_names(command="baselines")
    kinds = [m.strip() for m in value.split(",") if m.strip()]
    for kind in kinds:
        if kind not in choices:
            raise UsageError(f"unknown model {kind!r}; choose from {', '.join(choices)}")
    if not kinds:
        raise UsageError("give at least one model")
    return kinds


@main.command()
@task_options
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run directory; one subfolder per model.")
@click.option("--models", default=",".join(BASELINE_MODELS), show_default=True, type=LibraryChecked("models", _head_kinds),
              help="Comma-separated: majority, logreg, linear_svm, knn (scikit-learn), the probe protocols "
                   "logreg-cv, knn-cosine, linear-grid, and dfr (group-balanced last-layer retraining; needs --groups).")
@click.option("--C", "C", default=SKLEARN["C"], show_default=True, type=FiniteRange(min=0, min_open=True),
              help="Inverse regularisation strength (logreg, linear_svm).")
@click.option("--k", default=SKLEARN["k"], show_default=True, type=click.IntRange(min=1), help="Neighbours (knn).")
@click.option("--refit-train-val", is_flag=True, help="logreg-cv: refit on train + val with the C chosen on val.")
@click.option("--dfr-on", default=DFR["dfr_on"], show_default=True, type=click.Choice(["val", "train"]),
              help="dfr: refit the last layer on group-balanced subsets of val (20, the paper's DFR) or train (10).")
@click.option("--seed", default=SKLEARN["seed"], show_default=True, type=SEED)
@_options(*EPOCH_OPTIONS)
@PLOTS
@writes(out="runs")
@uses_tensorflow()
def baselines(task, out, models, C, k, refit_train_val, dfr_on, seed, epochs, patience, max_epochs, plots):
    """scikit-learn baselines and probe protocols on the same splits and attributes, one run each.
    Each option given goes to the models that take it (--epochs: linear-grid); one that none of them
    takes is an error."""
    settings = _given(C=C, k=k, refit_train_val=refit_train_val, dfr_on=dfr_on, seed=seed, epochs=epochs,
                      patience=patience, max_epochs=max_epochs)
    tables = _library("heads.look.tables")
    results = _library("heads.run.fit").run_kinds(task, out, models, plots=plots, **settings)
    for model, metrics in results.items():
        click.echo(tables.trained(metrics, model))
    click.echo(f"wrote {out}: {', '.join(results)} (each: metrics.json, config.json, the fitted model"
               + (", accuracy_vs_majority.png, reliability.png)" if plots else ")"))


# --- runs: score, compare, predict, export ------------------------------------------------------------

@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--split", default=SCORE["evaluate_split"], show_default=True, type=click.Choice(["train", "val", "test"]))
@click.option("--cache", "caches", multiple=True, type=click.Path(dir_okay=False),
              help="The run's cache at a new path (checked by fingerprint); once per cache of a fused run.")
@AS_JSON
@TRUST_MODEL
@GROUPS
@DROP_NONFINITE
@_options(*LABEL_OVERLAY)
@uses_tensorflow()
def evaluate(run_dir, split, caches, as_json, trust_model, groups, drop_nonfinite, label_files, partition_file):
    """Re-evaluate a saved run (any head kind) against its caches, with the label files it was trained
    with; --labels scores it against other labels (applied after them), --partition another split."""
    result = _library("heads.run.evaluate").evaluate_run(run_dir, split, list(caches) or None, trust_model=trust_model,
                                                         groups=groups, drop_nonfinite=drop_nonfinite,
                                                         labels=label_files, partition=partition_file)
    click.echo(json.dumps(result, indent=2) if as_json else _library("heads.look.tables").evaluated(result, split, run_dir))


@main.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--split", default=SCORE["compare_split"], show_default=True, type=click.Choice(["val", "test"]))
@click.option("--metrics", "--metric", "metrics", default=",".join(SCORE["compare_metrics"]), show_default=True,
              type=LibraryChecked("M[,M...]", lambda v: _metric_names(v)),
              help=f"Comma-separated: {', '.join(BY_NAME)} (the first ranks).")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False), help="Also write the table as CSV.")
@click.option("--markdown", "markdown_path", type=click.Path(dir_okay=False), help="Also write it as Markdown.")
@GROUPS
@_options(*LABEL_OVERLAY)
@writes(csv_path="file", markdown_path="file")
@uses_tensorflow(when=lambda kwargs: kwargs["groups"] or kwargs["label_files"] or kwargs["partition_file"])
def compare(run_dirs, split, metrics, csv_path, markdown_path, groups, label_files, partition_file):
    """One leaderboard of runs (rows) by attribute x metric, best mean first (for ece and brier the
    lowest). With --groups, every run is scored again per group on its caches (runs trained without
    --groups too); with --labels or --partition, against those labels or that split."""
    compared = _library("heads.run.compare")
    table = compared.leaderboard(run_dirs, split, metrics, groups=groups,
                                 labels=label_files, partition=partition_file)
    click.echo(_library("heads.look.tables").leaderboard_text(table, split))
    for folder, count in table.attrs["searched"].items():
        click.echo(f"{folder}: {counted(count, 'run')} found at any depth")
    if csv_path:
        compared.to_csv(table, csv_path)
        click.echo(f"wrote {csv_path}")
    if markdown_path:
        with open(markdown_path, "w") as f:
            f.write(compared.to_markdown(table, split))
        click.echo(f"wrote {markdown_path}")


@main.command()
@click.option("--run", "run_dir", required=True, type=click.Path(exists=True, file_okay=False), help="A run directory.")
@click.argument("images", nargs=-1, type=click.Path())
@click.option("--video", type=click.Path(dir_okay=False),
              help="A video instead of images: every frame's faces predicted (--faces all or best), the frames "
                   "annotated into --out, and OUT.csv with one row per frame x face x attribute.")
@click.option("--out", "video_out", type=click.Path(dir_okay=False),
              help="--video: the annotated video to write (.mp4); its table goes beside it as .csv.")
@click.option("--faces", type=click.Choice(["all", "best", "none"]),
              help="all: find every face in each photo, align it to CelebA's frame by its landmarks and "
                   "predict each, numbered in the order of the run's face rule (main, the large face near the centre "
                   "first, unless its --align cache recorded another); best: only the first face; none: the whole "
                   "image as it is (for photos already aligned like the run's images). Default: all for a run on an "
                   "--align cache, else none.")
@click.option("--min-face", type=click.IntRange(min=12),
              help=f"--faces: the smallest face searched, in pixels (its box side; default: as the run's --align "
                   f"cache recorded, else {FACE_DEFAULTS['min_face']}); smaller is slower.")
@click.option("--min-score", type=FiniteRange(min=0, max=1, max_open=True),
              help=f"--faces: the lowest detector score a face keeps (default: as the run's --align cache recorded, "
                   f"else {FACE_DEFAULTS['min_score']:g}).")
@click.option("--min-mirror-score", "mirror_score", type=FiniteRange(min=0, max=1, max_open=True),
              help=f"--faces: the lowest score a face keeps with its box mirrored left-right (0: no check; default: "
                   f"as the run's --align cache recorded, else {FACE_DEFAULTS['mirror_score']:g}).")
@click.option("--refine-landmarks/--no-refine-landmarks", "refine", default=None,
              help="--faces: find each face's landmarks again on its aligned crop (default: as the run's --align "
                   "cache recorded, else no).")
@click.option("--draw", "draw_dir", type=click.Path(file_okay=False),
              help="--faces: also write each photo with its faces' boxes, landmarks and decided attributes into "
                   "this folder (created; must be empty), under the photo's file name (.jpg added unless it ends "
                   "so: a.png -> a.png.jpg).")
@click.option("--max-pixels", default=MAX_PIXELS, show_default=True, type=click.IntRange(min=1),
              help="--faces: photos larger than this (read from the file header) are reported as failed.")
@AS_JSON
@TRUST_MODEL
@writes(video_out="video", draw_dir="drawn")
@uses_tensorflow()
def predict(run_dir, images, video, video_out, faces, min_face, min_score, mirror_score, refine, draw_dir, max_pixels,
            as_json, trust_model):
    """Predict attributes for image files with a run (its cache's backbone and preprocessing + its head).
    With --faces, each face in each photo is found, aligned and predicted; with --video, each face of
    each frame."""
    served = _library("heads.serve.predict")
    tables = _library("heads.look.tables")
    if bool(images) == bool(video):
        raise click.UsageError("give image files or --video, not both" if images else "give image files or --video")
    if bool(video) != bool(video_out):
        raise click.UsageError("--video needs --out OUT.mp4" if video else "--out is for --video")
    if video:
        if faces == "none" or draw_dir:
            raise click.UsageError("--video predicts faces: --faces all or best, and no --draw (--out is the "
                                   "annotated video)")
        result = _library("heads.serve.video").predict_video(run_dir, video, video_out, faces=faces or "all",
                                                              min_face=min_face, refine=refine,
                                                              min_score=min_score, mirror_score=mirror_score,
                                                              trust_model=trust_model)
        click.echo(json.dumps(result, indent=2) if as_json else tables.video_line(result))
        return
    faces = faces or served.default_face_mode(run_dir)
    if faces == "none":
        for option, value in (("--draw", draw_dir), ("--min-face", min_face), ("--min-score", min_score),
                              ("--min-mirror-score", mirror_score), ("--refine-landmarks", refine)):
            if value is not None:
                raise click.UsageError(f"{option} needs --faces all or best")
        results = served.predict_images(run_dir, list(images), trust_model=trust_model)
        lines = tables.predictions(results)
    else:
        if draw_dir:
            _library("heads.look.drawn").check_draw_names(images)
        results = served.predict_faces(run_dir, list(images), faces=faces, min_face=min_face, refine=refine,
                                       min_score=min_score, mirror_score=mirror_score, max_pixels=max_pixels,
                                       draw_dir=draw_dir, trust_model=trust_model)
        lines = tables.face_predictions(results)
    if as_json:
        click.echo(json.dumps(results, indent=2))
    else:
        _echo_lines(lines)
    if draw_dir:
        click.echo(f"wrote {draw_dir}: {counted(sum(r['size'] is not None for r in results), 'drawn photo')}", err=True)
    failed = sum(not r["ok"] for r in results)
    if failed:
        click.echo(f"{failed} of {counted(len(results), 'image')} could not be read"
                   + (" or had no face" if faces != "none" else ""), err=True)
        sys.exit(EXIT_FAILED_ROWS)


@main.command()
@click.option("--run", "run_dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="A run directory whose head is a TensorFlow graph (the Keras kinds).")
@click.option("--out", required=True, type=click.Path(),
              help="SavedModel folder to write; with --format tflite, the .tflite file (its .json sidecar beside it).")
@click.option("--format", "export_format", type=click.Choice(["savedmodel", "tflite"]), default="savedmodel",
              show_default=True, help="savedmodel: for TF Serving (image bytes in); tflite: one file for an edge "
                                      "device (preprocessed pixels in; the sidecar says how to make them).")
@click.option("--quantize", type=click.Choice(["none", "float16", "int8"]), default="none", show_default=True,
              help="--format tflite: float16 weights, or int8 weights and activations calibrated on train images.")
@click.option("--calibration-rows", default=200, show_default=True, type=click.IntRange(1, 100_000),
              help="--quantize int8: how many of the run's train images calibrate it (spread over the split).")
@IMAGES
@TRUST_MODEL
@writes(out=lambda kwargs: "tflite" if kwargs["export_format"] == "tflite" else "export")
@uses_tensorflow(deferred=True)
def export(run_dir, out, export_format, quantize, calibration_rows, images, trust_model, start_tensorflow):
    """Export backbone + preprocessing + head as one SavedModel (image bytes -> probabilities), for TF
    Serving; or as one TFLite file (preprocessed pixels -> probabilities) with a JSON sidecar."""
    given = _given(quantize=quantize, calibration_rows=calibration_rows, images=images)
    if export_format == "savedmodel" and given:
        raise click.UsageError(f"--{next(iter(given)).replace('_', '-')} is for --format tflite")
    if (given.keys() & {"calibration_rows", "images"}) and quantize != "int8":
        raise click.UsageError("--calibration-rows and --images are for --quantize int8")
    start_tensorflow()
    if export_format == "tflite":
        sidecar = _library("heads.serve.tflite").export_tflite(run_dir, out, quantize=quantize,
                                                               calibration_rows=calibration_rows, images=images,
                                                               trust_model=trust_model)
        click.echo(_library("heads.look.tables").tflite_line(out, sidecar))
        return
    _library("heads.serve.export").export_run(run_dir, out, trust_model=trust_model)
    if _library("heads.serve.predict").default_face_mode(run_dir) == "all":
        click.echo(f"wrote SavedModel {out}: signature serving_default/from_pixels (float32 [B, S, S, C] aligned "
                   "faces, preprocessed); faces are found and aligned by the client as "
                   f"{out}/assets.extra/celeba_heads.json says (detector settings, template, weights, preprocessing)")
    else:
        click.echo(f"wrote SavedModel {out}: signatures serving_default/from_bytes (string [B] image files) and "
                   f"from_pixels (float32 [B, S, S, C] preprocessed); attributes, thresholds and preprocessing in "
                   f"{out}/assets.extra/celeba_heads.json")


@main.command()
@click.option("--run", "run_dir", required=True, type=click.Path(exists=True, file_okay=False), help="A run directory.")
@click.option("--host", default=SERVE["host"], show_default=True,
              help="Address to listen on; anything but loopback needs --token or --no-auth.")
@click.option("--port", default=SERVE["port"], show_default=True, type=click.IntRange(0, 65535),
              help="Port to listen on (0: any free port; the URL printed says which).")
@click.option("--token", envvar=SERVE["token_env"], show_envvar=True,
              help="A secret every /v1 request must send as 'Authorization: Bearer TOKEN'.")
@click.option("--no-auth", is_flag=True, help="Serve beyond loopback without a token (behind your own gateway).")
@click.option("--cors-origin", "cors_origins", multiple=True,
              help="Allow browser pages from this origin (e.g. https://app.example) to call the API; repeatable. "
                   "Default: no CORS headers.")
@click.option("--max-bytes", default=SERVE["max_bytes"], show_default=True, type=click.IntRange(min=1),
              help="Largest request body; a larger one gets 413, refused before it is read.")
@click.option("--max-pixels", default=MAX_PIXELS, show_default=True, type=click.IntRange(min=1),
              help="Largest photo (width x height, read from its header); a larger one gets 413, never decoded.")
@click.option("--max-batch", default=SERVE["max_batch"], show_default=True, type=click.IntRange(1, 1024),
              help="Most photos gathered from concurrent requests into one batch.")
@click.option("--max-wait", default=1000 * SERVE["max_wait"], show_default=True, type=FiniteRange(0, 10_000),
              help="Milliseconds a batch's first request waits for others to join it.")
@click.option("--workers", default=SERVE["workers"], show_default=True, type=click.IntRange(1, 64),
              help="Batches run at once (threads sharing the loaded run).")
@click.option("--max-queue", default=SERVE["max_queue"], show_default=True, type=click.IntRange(min=1),
              help="Requests waiting for a batch; one more gets 503.")
@click.option("--request-timeout", default=SERVE["request_timeout"], show_default=True,
              type=FiniteRange(0.1, 3600), help="Seconds a client has to send its request body (else 408).")
@TRUST_MODEL
@uses_tensorflow(deferred=True)
def serve(run_dir, host, port, token, no_auth, cors_origins, max_bytes, max_pixels, max_batch, max_wait, workers,
          max_queue, request_timeout, trust_model, start_tensorflow):
    """Serve a run over HTTP: POST /v1/predict (a photo in, its faces' attributes out, batched across
    requests), GET /v1/run, /healthz, /metrics (Prometheus), /openapi.json. Ctrl-C or SIGTERM stops
    it after the requests in flight."""
    service = _library("heads.serve.service")
    service.check_access(host, token, no_auth)
    start_tensorflow()
    limits = service.Limits(max_bytes=max_bytes, max_pixels=max_pixels, request_timeout=request_timeout,
                            max_batch=max_batch, max_wait=max_wait / 1000, workers=workers, max_queue=max_queue)

    def ready(url):
        click.echo(f"serving {run_dir} at {url} (POST {url}/v1/predict; Ctrl-C to stop)")
        sys.stdout.flush()
    service.serve(run_dir, host=host, port=port, token=token, no_auth=no_auth, cors_origins=cors_origins,
                  limits=limits, trust_model=trust_model, on_ready=ready)
    click.echo("stopped: every request in flight was answered")


# --- looking at results --------------------------------------------------------------------------------

@main.command()
@click.argument("cache", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder to write (must not exist or be empty).")
@click.option("--n", default=PROJECTOR["n"], show_default=True, type=click.IntRange(min=1), help="Rows to sample.")
@click.option("--split", default=PROJECTOR["split"], show_default=True, type=click.Choice(["train", "val", "test", "all"]))
@click.option("--attrs", "attributes", default=",".join(ATTRIBUTES), show_default=True,
              help="Attributes in the metadata (comma-separated, or 'all').")
@click.option("--seed", default=PROJECTOR["seed"], show_default=True, type=SEED)
@IMAGES
@_options(*LABEL_OVERLAY)
@writes(out="projector")
@uses_tensorflow()
def projector(cache, out, n, split, attributes, seed, images, label_files, partition_file):
    """Export a sample of the cache for TensorBoard's Embedding Projector (features, metadata, sprite)."""
    result = _library("heads.look.projector").export_projector(cache, out, n=n, split=split, attributes=attributes,
                                                               seed=seed, images=images, labels=label_files,
                                                               partition=partition_file)
    lines, note = _library("heads.look.tables").projector_lines(out, result)
    click.echo(lines[0])
    if note:
        click.echo(f"note: {note}", err=True)
    _echo_lines(lines[1:])


@main.command()
@click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="HTML file to write.")
@click.option("--split", default=REPORT["split"], show_default=True, type=click.Choice(["val", "test"]),
              help="The split whose errors the galleries show.")
@click.option("--errors", "n_errors", default=REPORT["errors"], show_default=True, type=click.IntRange(min=0),
              help="Most confident errors shown per attribute.")
@IMAGES
@_options(*LABEL_OVERLAY)
@writes(out="file")
@uses_tensorflow()
def report(runs, out, split, n_errors, images, label_files, partition_file):
    """One self-contained HTML page: leaderboard, metrics vs majority, plots, groups, error galleries
    (judged by the runs' labels, or with --labels/--partition by those)."""
    count = _library("heads.look.page").build_report(list(runs), out, split=split, n_errors=n_errors, images=images,
                                                     labels=label_files, partition=partition_file)
    click.echo(f"wrote {out}: {counted(count, 'run')}")


# --- the dataset, audited through the cache -----------------------------------------------------------

@main.command()
@click.argument("caches", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for the audit's files.")
@ATTRS
@click.option("--split", "splits", default=",".join(AUDIT["splits"]), show_default=True,
              help="The splits audited (together, as one pool of rows): train, val, test, comma-separated.")
@click.option("--kind", default=AUDIT["kind"], show_default=True, type=LibraryChecked("kind", _audit_kind),
              help="The head kind whose out-of-fold probabilities are audited (keras_head, logreg, logreg-cv, ...).")
@click.option("--head", type=HEAD, help=f"keras_head: its architecture [default: {AUDIT['head']}].")
@click.option("--epochs", type=EPOCHS, help=f"keras_head: auto or N [default: {AUDIT['epochs']}].")
@click.option("--folds", default=AUDIT["folds"], show_default=True, type=click.IntRange(min=2),
              help="K of K-fold cross-fitting: each row is scored by a head fitted without its fold.")
@click.option("--features", default=RUN["features"], show_default=True, type=FEATURES,
              help="Feature transform, fitted per fold on the fold's training rows.")
@click.option("--input", "inputs", default="", help="Audit on these stored layers instead of the features.")
@click.option("--allow-partial", is_flag=True, help="Use caches with unfinished rows.")
@DROP_NONFINITE
@click.option("--dup-threshold", default=AUDIT["dup_threshold"], show_default=True,
              type=FiniteRange(0, 1, min_open=True),
              help="Near-duplicates: the least centred cosine similarity of a pair (see the page's histogram).")
@click.option("--dup-neighbours", default=AUDIT["dup_neighbours"], show_default=True, type=click.IntRange(min=1),
              help="Near-duplicates: each of a pair among the other's N nearest (1: mutual nearest neighbours).")
@click.option("--dup-search", default=AUDIT["dup_search"], show_default=True,
              type=click.Choice(["auto", "exact", "ivf"]),
              help=f"Nearest-neighbour search: exact, ivf (faiss PCA{AUDIT['dup_pca']},IVF({AUDIT['dup_lists_per_sqrt']} sqrt n),SQ8 with exact "
                   f"re-ranking, recall measured), auto (exact up to {AUDIT['dup_exact_max']:,} rows).")
@click.option("--dup-probes", default=AUDIT["dup_probes"], show_default=True, type=click.IntRange(min=1),
              help="ivf: inverted lists probed per row (more: higher recall, slower).")
@click.option("--no-duplicates", is_flag=True, help="Skip the near-duplicate search.")
@click.option("--top", default=AUDIT["top"], show_default=True, type=click.IntRange(min=0),
              help="The page: suspected label errors shown per attribute, and duplicate pairs shown.")
@IMAGES
@click.option("--seed", default=AUDIT["seed"], show_default=True, type=SEED, help="Folds, inner val rows, head.")
@_options(*LABEL_OVERLAY)
@writes(out="audit")
@uses_tensorflow(deferred=True)
def audit(caches, out, attributes, splits, kind, head, epochs, folds, features, inputs, allow_partial, drop_nonfinite,
          dup_threshold, dup_neighbours, dup_search, dup_probes, no_duplicates, top, images, seed, label_files,
          partition_file, start_tensorflow):
    """Audit the labelled rows through the cache: out-of-fold probabilities from K-fold cross-fitting,
    likely label errors per attribute (cleanlab), near-duplicate pairs (faiss), written to
    label_issues.csv, duplicates.csv, summary.json and audit.html."""
    task = _library("heads.run.task").TaskSpec(caches=caches, attributes=attributes, features=features, inputs=inputs,
                                               allow_partial=allow_partial, drop_nonfinite=drop_nonfinite,
                                               stream="never", labels=label_files, partition=partition_file)
    task.check()
    start_tensorflow()
    audited = _library("heads.audit.run")
    duplicates = None if no_duplicates else {"threshold": dup_threshold, "neighbours": dup_neighbours,
                                             "search": dup_search, "probes": dup_probes}
    spec = audited.AuditSpec(kind=kind, settings=_given(head=head, epochs=epochs), folds=folds, splits=splits,
                             seed=seed, duplicates=duplicates)
    summary = audited.run_audit(task, spec, out)
    for line in _library("heads.look.tables").audit_lines(summary, AUDIT["weak_auc"]):
        click.echo(line)
    _library("heads.look.audit_page").build_audit_page(out, top=top, images=images)
    files = "label_issues.csv, out_of_fold.csv, " + ("" if no_duplicates else "duplicates.csv, ") + "summary.json"
    click.echo(f"wrote {out}: {files}, audit.html")


# --- data and the demo ------------------------------------------------------------------------------

@main.command("make-scenes")
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Folder to write scenes/ and faces.csv into (created; must be new or empty).")
@click.option("--faces-per-scene", default="1", show_default=True,
              type=_checked("N[,N...]", "embed.scenes", "parse_faces_per_scene"),
              help="Faces in each scene, in turn (e.g. 1,1,1,2,3).")
@click.option("--labels-from", type=click.Path(exists=True, file_okay=False),
              help="A CelebA folder holding the images' labels (list_attr_celeba and list_eval_partition): also "
                   "write labels.csv for the scenes of one face, for embed --align.")
@click.option("--seed", default=0, show_default=True, type=SEED)
@writes(out="scenes")
def make_scenes(images, out, faces_per_scene, labels_from, seed):
    """Paste aligned face images (CelebA's 178x218) into textured photos at a random scale (0.45-1.1),
    rotation (+-25 degrees) and position, one to N faces a photo; faces.csv records which image went
    where and its five template landmarks in the photo. Test data for predict --faces."""
    scenes = _library("embed.scenes")
    dataset = _library("embed.dataset").open_dataset(labels_from) if labels_from else None
    truth = scenes.make_scenes(list(images), out, seed=seed, faces_per_scene=faces_per_scene, dataset=dataset)
    click.echo(f"wrote {out}: scenes/ ({len(images)} faces), {truth.name}" + (", labels.csv" if dataset else ""))


@main.command("make-sample")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder to write the dataset into.")
@click.option("--n", default=SAMPLE["n"], show_default=True, type=click.IntRange(10, SAMPLE["max_n"]),
              help="Number of images.")
@click.option("--seed", default=SAMPLE["seed"], show_default=True, type=SEED)
@click.option("--spurious", type=_checked("spurious", "embed.sample", "parse_spurious"),
              help="TARGET:GROUP:RATE, e.g. Blond_Hair:Male:0.95: in train, TARGET agrees with GROUP at RATE; "
                   "in val and test they are independent (a planted spurious correlation).")
@click.option("--label-noise", default=0.0, show_default=True, type=FiniteRange(0, 0.5, max_open=True),
              help="Flip each label with this probability in the label files (the pixels keep the true ones); "
                   "the flips are listed in planted_label_flips.csv.")
@click.option("--duplicates", default=0, show_default=True, type=click.IntRange(min=0),
              help="Add this many copies of earlier images in other splits, every second one re-encoded and "
                   "slightly cropped; listed in planted_duplicates.csv.")
@writes(out="sample")
@uses_tensorflow()
def make_sample(out, n, seed, spurious, label_noise, duplicates):
    """Write a synthetic CelebA-layout dataset whose labels are visible in the pixels."""
    if duplicates > n:
        raise click.BadParameter(f"{duplicates} copies of {n} images: at most --n", param_hint="--duplicates")
    _library("embed.sample").make_sample(out, n=n, seed=seed, spurious=spurious, label_noise=label_noise,
                                         duplicates=duplicates)
    click.echo(f"wrote {n + duplicates} images and label/partition files (text and CSV) to {out}")


@main.command()
@click.option("--workdir", default="demo-output", show_default=True, type=click.Path(file_okay=False))
@click.option("--n", default=SAMPLE["n"], show_default=True, type=click.IntRange(40, SAMPLE["max_n"]),
              help="Images in the sample.")
@click.pass_context
def demo(ctx, workdir, n):
    """Offline end to end: sample dataset -> embed (random-weight EfficientNetV2-B0) -> heads and baseline."""
    data_dir, cache_path = os.path.join(workdir, "sample"), os.path.join(workdir, "features.h5")
    ctx.invoke(make_sample, out=data_dir, n=n, overwrite=True)
    ctx.invoke(embed, data_dir=data_dir, out=cache_path, model="keras:EfficientNetV2B0", weights="none",
               overwrite=True)
    ctx.invoke(info, cache=cache_path)
    click.echo("\nrandom-weight features are tiny (std ~1e-3), so the head standardizes its input (--features standardize)")
    ctx.invoke(train_heads, caches=(cache_path,), out=os.path.join(workdir, "head"), features="standardize",
               overwrite=True)
    ctx.invoke(baselines, caches=(cache_path,), out=os.path.join(workdir, "baselines"), overwrite=True)
    runs = (os.path.join(workdir, "head"), os.path.join(workdir, "baselines"))
    ctx.invoke(compare, run_dirs=runs, split="test")
    ctx.invoke(report, runs=runs, out=os.path.join(workdir, "report.html"), overwrite=True)
    click.echo(f"\nplots: {workdir}/head/loss.png, accuracy.png, accuracy_vs_majority.png, reliability.png; TensorBoard: "
               f"tensorboard --logdir {workdir}/head/tb")
    click.echo(f"report: {os.path.abspath(os.path.join(workdir, 'report.html'))}")


if __name__ == "__main__":
    main()
