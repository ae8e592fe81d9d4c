"""`train-heads`: fit the Keras head on a cache's train split, report val and test, write RUN_DIR.

Thresholds: 0.5, or with tune_threshold the per-attribute value that maximises accuracy on
**val** (test rows are never read before the thresholds are fixed).
"""

import time
from pathlib import Path

from heads import report
from heads.data import load_task
from heads.keras_head import KerasHead, fit_together
from heads.metrics import attribute_metrics, tune_threshold

MODEL_FILE = "model.keras"


def evaluate_probabilities(task, probabilities, thresholds):
    """metrics.json "attributes" part from {split: float [n, k]} probabilities."""
    majority = (task.train.labels.mean(axis=0) >= 0.5).astype(int)
    result = {}
    for j, name in enumerate(task.attributes):
        result[name] = {split: attribute_metrics(getattr(task, split).labels[:, j], p[:, j], thresholds[j], majority[j])
                        for split, p in probabilities.items()}
    return result


def choose_thresholds(task, val_probabilities, tune):
    if not tune:
        return [0.5] * len(task.attributes)
    return [tune_threshold(task.val.labels[:, j], val_probabilities[:, j]) for j in range(len(task.attributes))]


def run_config(task, kind, settings, seconds):
    """config.json: what was run, on which cache, with which rows left out."""
    return {
        "kind": kind,
        "settings": settings,
        "attributes": task.attributes,
        "cache": {"path": str(Path(task.cache).resolve()),
                  "dataset_fingerprint": task.settings["dataset_fingerprint"],
                  "backbone": task.settings["backbone"], "preprocessing": task.settings["preprocessing"],
                  "feature_dim": task.settings["feature_dim"], "feature_dtype": task.settings["feature_dtype"]},
        "rows": {"train": len(task.train.rows), "val": len(task.val.rows), "test": len(task.test.rows)},
        "excluded_failed_rows": task.excluded_failed_rows,
        "train_seconds": round(seconds, 3),
    }


def train_heads(cache, out_dir, attributes=None, *, allow_partial=False, on_epoch=None, **settings):
    """Train the reference head on a cache; writes RUN_DIR (see heads.report), returns the metrics.
    settings: the keyword arguments of `train_on_task`."""
    task = load_task(cache, attributes, allow_partial=allow_partial)
    return train_on_task(task, out_dir, on_epoch=on_epoch, **settings)


def _settings(epochs=3, batch_size=128, hidden=128, dropout=0.2, lr=1e-3, l2=1e-4, class_weight="none",
              standardize=False, seed=0, tune_threshold=False):
    """All train-heads settings, defaults filled in (recorded in config.json and metrics.json)."""
    return {"epochs": epochs, "batch_size": batch_size, "hidden": hidden, "dropout": dropout, "lr": lr,
            "l2": l2, "class_weight": class_weight, "standardize": standardize, "seed": seed,
            "tune_threshold": tune_threshold}


def _head(settings):
    return KerasHead(**{k: v for k, v in settings.items() if k != "tune_threshold"})


def train_on_task(task, out_dir, *, on_epoch=None, **settings):
    """Fit one head on a loaded Task and write its run directory; returns the metrics dict.
    settings: those of `_settings` (epochs, batch_size, hidden, dropout, lr, l2, class_weight,
    standardize, seed, tune_threshold)."""
    settings = _settings(**settings)
    began = time.perf_counter()
    head = _head(settings)
    head.fit(task.train.features, task.train.labels, task.attributes, task.val.features, task.val.labels,
             on_epoch=on_epoch)
    return write_run(task, out_dir, head, settings, time.perf_counter() - began)


def train_together_on_task(task, out_dirs, settings_list):
    """Fit heads that differ only in hidden, dropout, lr and l2 in one pass (`fit_together`) and write one
    run directory each; returns their metrics dicts. Each run's train_seconds is the shared time
    divided by the number of heads."""
    settings_list = [_settings(**s) for s in settings_list]
    began = time.perf_counter()
    heads = [_head(s) for s in settings_list]
    fit_together(heads, task.train.features, task.train.labels, task.attributes, task.val.features,
                 task.val.labels)
    seconds = (time.perf_counter() - began) / len(heads)
    return [write_run(task, out, head, s, seconds) for out, head, s in zip(out_dirs, heads, settings_list)]


def write_run(task, out_dir, head, settings, seconds):
    """Score a fitted head on val and test and write its run directory; returns the metrics dict."""
    val_p = head.predict_proba(task.val.features)
    thresholds = choose_thresholds(task, val_p, settings["tune_threshold"])
    test_p = head.predict_proba(task.test.features)
    config = run_config(task, "keras_head", settings, seconds)
    metrics = {"attributes": evaluate_probabilities(task, {"val": val_p, "test": test_p}, thresholds),
               "run": {"name": Path(out_dir).name, "kind": "keras_head", "cache": config["cache"]["path"],
                       "train_seconds": config["train_seconds"], "settings": settings}}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    head.model_.save(out / MODEL_FILE)
    report.write_history(out / "history.csv", head.history_)
    report.write_json(out / "config.json", {**config, "thresholds": dict(zip(task.attributes, thresholds))})
    report.write_json(out / "metrics.json", metrics)
    report.plot_history(head.history_, task.attributes, out)
    report.plot_accuracy_vs_majority(metrics, out)
    return metrics
