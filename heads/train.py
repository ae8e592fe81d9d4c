"""Train head kinds on cached features and write one run directory each (`heads.rundir`).

`train_heads` fits one Keras head (`train-heads`), `train_together` several Keras heads in one
pass (`sweep`), `run_kinds` any registered kinds side by side (`baselines`). Each loads the
caches once, fits the feature transform on the train split only, and transforms each split once.
Thresholds: 0.5, or with tune_threshold the per-attribute value that maximises val accuracy
(test rows are never read before they are fixed).
"""

import time
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np

from heads import rundir
from heads.data import load_task
from heads.defaults import KERAS, RUN
from heads.keras_head import KerasHead, fit_together
from heads.registry import head_class
from heads.transforms import Transform


@dataclass
class Prepared:
    """A loaded task with its fitted transform, the transformed training rows and labels (both
    views with --views augment) and the transformed val split."""
    task: object
    transform: Transform
    train: object
    train_labels: object
    val: object


def prepare(caches, attributes=None, features=RUN["features"], allow_partial=False, drop_nonfinite=False,
            groups=None, views="orig", eval_view="orig"):
    """Load the task (groups: attributes for per-group metrics; views: how the mirrored view is
    used), fit the transform on the training rows, and transform them and val once."""
    task = load_task(caches, attributes, allow_partial=allow_partial, drop_nonfinite=drop_nonfinite, groups=groups,
                     views=views, eval_view=eval_view)
    dropped = sum(task.excluded_nonfinite_rows.values())
    if dropped:
        click.echo(f"note: left out {dropped} row(s) whose features hold NaN or inf ({task.excluded_nonfinite_rows})",
                   err=True)
    train_x, train_y = task.train.features, task.train.labels
    if task.train_augment is not None:  # both views as training rows, each with its image's labels
        train_x, train_y = np.concatenate([train_x, task.train_augment]), np.concatenate([train_y, train_y])
    transform = Transform(features).fit(train_x)
    return Prepared(task, transform, transform.transform(train_x), train_y, transform.transform(task.val.features))


def _fit_and_write(prepared, head, out_dir, run_settings, on_epoch=None, name=None):
    task = prepared.task
    # a kind that reweights by group (dfr) is handed the group attributes' labels
    train_groups = task.group_labels["train"] if task.groups else None
    if train_groups is not None and len(train_groups) != len(prepared.train_labels):  # --views augment
        train_groups = np.concatenate([train_groups, train_groups])
    extra = ({"group_labels": train_groups,
              "group_labels_val": task.group_labels["val"] if task.groups else None, "group_names": task.groups}
             if getattr(head, "needs_groups", False) else {})
    began = time.perf_counter()
    head.fit(prepared.train, prepared.train_labels, task.attributes, prepared.val, task.val.labels, on_epoch=on_epoch,
             **extra)
    seconds = time.perf_counter() - began
    settings = {**head.get_params(), **run_settings}
    return rundir.write_run(out_dir, prepared.task, head, prepared.transform, settings, seconds, name=name,
                            val_features=prepared.val)


def keras_settings(**settings):
    """Keras head settings with defaults filled in; `hidden` (a width) is shorthand for mlp:<hidden>."""
    hidden = settings.pop("hidden", None)
    if hidden is not None:
        settings["head"] = f"mlp:{hidden}"
    return {**KERAS, **settings}


def train_heads(caches, out_dir, attributes=None, *, features=RUN["features"], tune_threshold=RUN["tune_threshold"],
                allow_partial=False, drop_nonfinite=False, groups=None, views="orig", eval_view="orig", on_epoch=None,
                **settings):
    """Train one Keras head (settings: those of KerasHead, or hidden=N for mlp:N) on one cache or
    several fused ones; writes RUN_DIR and returns its metrics."""
    prepared = prepare(caches, attributes, features, allow_partial, drop_nonfinite, groups, views, eval_view)
    head = KerasHead(**keras_settings(**settings))
    return _fit_and_write(prepared, head, out_dir, {"features": features, "tune_threshold": tune_threshold},
                          on_epoch=on_epoch)


def train_together(prepared, out_dirs, settings_list, tune_threshold=RUN["tune_threshold"], hparams=None):
    """Fit Keras heads that share `keras_head.SHARED_SETTINGS` in one pass (`fit_together`) and write one
    run directory each; returns their metrics. Each run's train_seconds is the shared time divided
    by the number of heads. hparams: per head, the sweep grid values (TensorBoard HParams)."""
    heads = [KerasHead(**keras_settings(**s)) for s in settings_list]
    task = prepared.task
    began = time.perf_counter()
    fit_together(heads, prepared.train, prepared.train_labels, task.attributes, prepared.val, task.val.labels)
    seconds = (time.perf_counter() - began) / len(heads)
    run = {"features": prepared.transform.spec, "tune_threshold": tune_threshold}
    return [rundir.write_run(out, task, head, prepared.transform, {**head.get_params(), **run}, seconds,
                             val_features=prepared.val, hparams=values)
            for out, head, values in zip(out_dirs, heads, hparams or [None] * len(heads))]


def run_kinds(caches, out_dir, kinds, attributes=None, *, features=RUN["features"],
              tune_threshold=RUN["tune_threshold"], allow_partial=False, drop_nonfinite=False, groups=None,
              views="orig", eval_view="orig", **settings):
    """Fit each head kind in `kinds` (settings: passed to every kind that takes them) on the same
    task and transform; writes RUN_DIR/<kind>/ each; returns {kind: metrics}."""
    prepared = prepare(caches, attributes, features, allow_partial, drop_nonfinite, groups, views, eval_view)
    results = {}
    for kind in kinds:
        head = head_class(kind).from_settings(settings)
        results[kind] = _fit_and_write(prepared, head, Path(out_dir) / kind,
                                       {"features": features, "tune_threshold": tune_threshold},
                                       name=f"{Path(out_dir).name}/{kind}")
    return results
