"""TensorBoard event files for runs and sweeps (`tensorboard --logdir DIR`), written as the summary
protobufs tf.summary writes (scalars as tensor summaries of the scalars plugin, the HParams plugin's
messages) through TensorBoard's own event-file writer: no TensorFlow op per value.

RUN_DIR/tb/   per epoch (step = epoch): train/loss, val/loss, train/<attr>_accuracy,
              val/<attr>_accuracy; at the end (step = last epoch): final/<split>_<attr>_<metric>
              for each score of `heads.metrics.METRICS` (accuracy, balanced_accuracy, f1, roc_auc),
              final/<split>_mean_accuracy, and final/epochs_trained, final/best_epoch (the epoch
              whose weights the head keeps).
SWEEP_DIR/    the HParams plugin's experiment (every grid key and its values; the final metrics),
              and each variant's tb/ holds its session (its grid values), so TensorBoard's HParams
              tab shows the sweep as a table and a parallel-coordinates view.
"""

import time
from pathlib import Path

from heads.metrics import SCORES

TB_DIR = "tb"


def _final_scalars(metrics):
    """{tag: value} of a run's val/test metrics (None values left out)."""
    scalars = {}
    for split in ("val", "test"):
        values = []
        for name, by_split in metrics["attributes"].items():
            for m in SCORES:
                value = by_split.get(split, {}).get(m)
                if value is not None:
                    scalars[f"final/{split}_{name}_{m}"] = value
            if by_split.get(split, {}).get("accuracy") is not None:
                values.append(by_split[split]["accuracy"])
        if values:
            scalars[f"final/{split}_mean_accuracy"] = sum(values) / len(values)
    return scalars


class _Events:
    """An event file in `folder` (created if missing): `write(summary, step)` appends one summary
    protobuf; the file is complete once the `with` block ends."""

    def __init__(self, folder):
        from tensorboard.summary.writer.event_file_writer import EventFileWriter
        Path(folder).mkdir(parents=True, exist_ok=True)
        self._writer = EventFileWriter(str(folder))

    def write(self, summary, step=0):
        from tensorboard.compat.proto.event_pb2 import Event
        self._writer.add_event(Event(wall_time=time.time(), step=step, summary=summary))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._writer.close()


def write_run_events(run_dir, history, metrics, hparams=None):
    """Write RUN_DIR/tb/: the per-epoch history, the final metrics, and (for a sweep variant) its
    HParams session with `hparams` {grid key: value} (as `hparam_values` gives them)."""
    from tensorboard.plugins.scalar.summary_v2 import scalar_pb

    with _Events(Path(run_dir) / TB_DIR) as events:
        for record in history:
            step = int(record["epoch"])
            for key, value in record.items():
                if key == "epoch":
                    continue
                split, name = ("val", key[4:]) if key.startswith("val_") else ("train", key)
                events.write(scalar_pb(f"{split}/{name}", float(value)), step)
        last = int(history[-1]["epoch"]) if history else 0
        finals = _final_scalars(metrics)
        epochs = metrics["run"].get("epochs")
        if epochs:
            finals.update({"final/epochs_trained": epochs["trained"], "final/best_epoch": epochs["best"]})
        for tag, value in finals.items():
            events.write(scalar_pb(tag, float(value)), last)
        if hparams:
            from tensorboard.plugins.hparams import api as hp
            events.write(hp.hparams_pb(hparams, trial_id=Path(run_dir).name))


def _hparam_value(value):
    return value if isinstance(value, (bool, int, float, str)) else str(value)


def hparam_values(grid):
    """The grid's values as HParams takes them: one type per key (a key whose values mix types, such
    as epochs=auto,5, as text), in the grid's order."""
    mixed = {key for key in {k for variant in grid for k in variant}
             if len({type(_hparam_value(v)) for v in (variant[key] for variant in grid if key in variant)}) > 1}
    return [{k: str(v) if k in mixed else _hparam_value(v) for k, v in variant.items()} for variant in grid]


def write_sweep_experiment(sweep_dir, grid, attributes):
    """The HParams experiment of a sweep: one HParam per grid key with its values, and the final
    mean and per-attribute accuracies as its metrics."""
    from tensorboard.plugins.hparams import api as hp

    keys = {}
    for variant in hparam_values(grid):
        for key, value in variant.items():
            keys.setdefault(key, []).append(value)
    hparams = [hp.HParam(key, hp.Discrete(sorted(set(values), key=str))) for key, values in keys.items()]
    metrics = [hp.Metric(f"final/{split}_mean_accuracy", display_name=f"{split} mean accuracy")
               for split in ("val", "test")]
    metrics += [hp.Metric(f"final/val_{a}_accuracy", display_name=f"val {a} accuracy") for a in attributes]
    with _Events(sweep_dir) as events:
        events.write(hp.hparams_config_pb(hparams=hparams, metrics=metrics))
