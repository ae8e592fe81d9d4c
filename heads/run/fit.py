"""Fit head kinds on a task and write one run directory each: load, transform, fit, score, write.

`prepare` loads a TaskSpec's caches once, fits the feature transform on the train split only, and
transforms train and val once. `run_kinds` fits registered kinds side by side (`baselines`),
`train_heads` one Keras head (`train-heads`), `train_together` several Keras heads in one pass
(`sweep`). Each run is scored (`heads.run.scoring`), its files written (`heads.run.rundir`) with
its pictures and TensorBoard events (`heads.look`), metrics.json last.
"""

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cache.errors import UsageError
from cache.units import counted
from heads.defaults import KERAS, RUN
from heads.kinds import head_class
from heads.kinds.base import Data, option_name
from heads.kinds.trainer import fit_together
from heads.look import plots as pictures
from heads.look import tensorboard
from heads.run import rundir
from heads.run.scoring import score
from heads.run.task import Task, load_task
from heads.run.transforms import Transform

log = logging.getLogger(__name__)


@dataclass
class Prepared:
    """A loaded task, its transform fitted on the training rows, and the `Data` heads are fitted on:
    train (transformed; both views as rows with --views augment) and val (transformed)."""
    task: Task
    transform: Transform
    train: Data
    val: Data


def prepare(spec):
    """Load the TaskSpec's splits, fit its transform on the training rows, transform train and val."""
    task = load_task(spec)
    dropped = sum(task.excluded_nonfinite_rows.values())
    if dropped:
        log.info("left out %s whose features hold NaN or inf (%s)", counted(dropped, "row"), task.excluded_nonfinite_rows)
    train_x, train_y = task.train.features, task.train.labels
    groups = task.group_labels.get("train")
    if task.train_augment is not None:  # both views as training rows, each with its image's labels
        train_x, train_y = np.concatenate([train_x, task.train_augment]), np.concatenate([train_y, train_y])
        groups = None if groups is None else np.concatenate([groups, groups])
    if not isinstance(train_x, np.ndarray) and spec.features != "raw":  # streamed from the cache
        raise UsageError(f"--features {spec.features} is fitted on the train split in memory, and it streams: use "
                         "raw (or --stream never)")
    transform = Transform(spec.features).fit(train_x)
    source = None
    if len(spec.inputs) == 1 and len(task.caches) == 1:  # a stored layer: a kind may continue the backbone from it
        record = task.caches[0]
        source = {"backbone": record["backbone"], "preprocessing": record["preprocessing"], "layer": spec.inputs[0]}
    train = Data(transform.transform(train_x), train_y, tuple(task.attributes), groups, task.groups, source)
    return Prepared(task, transform, train, task.data("val", transform.transform(task.val.features)))


def write_run(prepared, head, out_dir, seconds, name=None, hparams=None, plots=RUN["plots"]):
    """Score a fitted head and write its run directory; returns its metrics (metrics.json).
    hparams: a sweep variant's grid values (its TensorBoard HParams session). plots: draw the run's
    pictures (`heads.look.plots`; about half of a small run's time); without them the run records
    "plots": false."""
    task = prepared.task
    thresholds, scores, probabilities = score(task, head, prepared.transform, prepared.val.features)
    settings = {**head.get_params(), "features": task.spec.features, "tune_threshold": task.spec.tune_threshold}
    run = {"name": name or Path(out_dir).name, "kind": head.kind, "cache": task.cache,
           "train_seconds": round(seconds, 3), "settings": settings}
    if head.selection_ is not None:
        run["selection"] = head.selection_
    if task.excluded:
        run["excluded"] = task.excluded
    if task.labels:
        run["labels"] = task.labels
    if task.masked:
        run["masked"] = task.masked
    if head.calibration_:
        run["calibration"] = head.calibration_
    if head.history_:
        run["epochs"] = {"trained": len(head.history_), "best": head.best_epoch_,
                         "auto": getattr(head, "epochs", None) == "auto"}
    if not plots:
        run["plots"] = False
    metrics = {"attributes": scores["attributes"], "run": run, **({"groups": scores["groups"]} if "groups" in scores else {})}
    rundir.write_run_files(out_dir, task, head, prepared.transform, settings, seconds, thresholds)
    if head.history_:
        tensorboard.write_run_events(out_dir, head.history_, metrics, hparams)
    if plots:
        draw_run_pictures(task, head, metrics, probabilities, out_dir)
    rundir.write_metrics(out_dir, metrics)
    return metrics


def draw_run_pictures(task, head, metrics, probabilities, out_dir):
    """loss.png and accuracy.png (a head trained by epochs), accuracy_vs_majority.png, reliability.png."""
    if head.history_:
        pictures.plot_history(head.history_, task.attributes, out_dir, best_epoch=head.best_epoch_)
    pictures.plot_accuracy_vs_majority(metrics, out_dir)
    pictures.plot_reliability({split: task.split(split).labels for split in probabilities}, probabilities,
                              task.attributes, out_dir)


def check_takes(head, features):
    """Refuse features of a rank the head kind does not train on (`Head.takes`), in one line."""
    spatial = features.ndim > 2
    if head.takes == "vectors" and spatial:
        what = head.head if head.kind == "keras_head" else head.kind
        raise UsageError(f"{what} trains on vectors, and the input is spatial ({list(features.shape[1:])} per row): "
                         "train --head attentive on it, or store the layer pooled (embed --layers NAME:gap)")
    if head.takes == "tokens" and not spatial:
        raise UsageError(f"--head {head.head} attends over a spatial layer's tokens, and the input is a vector "
                         f"({features.shape[1]} per row): give --input a layer stored with :none or :grid:K")


def _fit_and_write(prepared, head, out_dir, name=None, on_epoch=None, plots=RUN["plots"]):
    check_takes(head, prepared.train.features)
    began = time.perf_counter()
    head.fit(prepared.train, prepared.val, on_epoch=on_epoch)
    return write_run(prepared, head, out_dir, time.perf_counter() - began, name=name, plots=plots)


def kind_settings(kinds, settings):
    """{kind: the settings it takes} from settings a user gave for several kinds at once; a setting
    none of them takes is a UsageError naming them."""
    classes = {kind: head_class(kind) for kind in kinds}
    for key in settings:
        if not any(key in cls.setting_names() for cls in classes.values()):
            which = "none of " + ", ".join(kinds) + " takes" if len(kinds) > 1 else f"{kinds[0]} does not take"
            raise UsageError(f"{which} {option_name(key)}")
    return {kind: {k: v for k, v in settings.items() if k in cls.setting_names()} for kind, cls in classes.items()}


def run_kinds(spec, out_dir, kinds, plots=RUN["plots"], **settings):
    """Fit each head kind in `kinds` on the same task and transform (settings: given to the kinds
    that take them); writes RUN_DIR/<kind>/ each (pictures if `plots`); returns {kind: metrics}."""
    prepared = prepare(spec)
    results = {}
    for kind, taken in kind_settings(list(kinds), settings).items():
        head = head_class(kind).from_settings(taken)
        results[kind] = _fit_and_write(prepared, head, Path(out_dir) / kind, name=f"{Path(out_dir).name}/{kind}",
                                       plots=plots)
    return results


def keras_settings(**settings):
    """Keras head settings with defaults filled in; `hidden` (a width) is shorthand for mlp:<hidden>."""
    hidden = settings.pop("hidden", None)
    if hidden is not None:
        settings["head"] = f"mlp:{hidden}"
    return {**KERAS, **settings}


def train_heads(spec, out_dir, on_epoch=None, plots=RUN["plots"], **settings):
    """Train one Keras head (settings: those of the keras_head kind, or hidden=N for mlp:N) on the
    TaskSpec's caches; writes RUN_DIR (pictures if `plots`) and returns its metrics.
    on_epoch(record) after each epoch."""
    head = head_class("keras_head").from_settings(keras_settings(**settings))
    return _fit_and_write(prepare(spec), head, out_dir, on_epoch=on_epoch, plots=plots)


def train_together(prepared, out_dirs, settings_list, hparams=None, plots=RUN["plots"]):
    """Fit Keras heads that share `trainer.SHARED_SETTINGS` in one pass (`fit_together`) and write one
    run directory each (pictures if `plots`); returns their metrics. Each run's train_seconds is the
    shared time divided by the number of heads. hparams: per head, the sweep grid values (TensorBoard
    HParams)."""
    heads = [head_class("keras_head").from_settings(keras_settings(**s)) for s in settings_list]
    for head in heads:
        check_takes(head, prepared.train.features)
    began = time.perf_counter()
    fit_together(heads, prepared.train, prepared.val)
    seconds = (time.perf_counter() - began) / len(heads)
    return [write_run(prepared, head, out, seconds, hparams=values, plots=plots)
            for out, head, values in zip(out_dirs, heads, hparams or [None] * len(heads))]
