"""`train-heads`: fit the Keras head on a cache's train split, report val and test, write RUN_DIR.

Thresholds: 0.5, or with tune_threshold the per-attribute value that maximises accuracy on
**val** (test rows are never read before the thresholds are fixed).
"""

import time
from pathlib import Path


from heads import report
from heads.data import load_task
from heads.keras_head import KerasHead
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


def train_on_task(task, out_dir, *, epochs=3, batch_size=128, hidden=128, dropout=0.2, lr=1e-3, l2=1e-4,
                  class_weight="none", standardize=False, seed=0, tune_threshold=False, on_epoch=None):
    """Fit one head on a loaded Task and write its run directory; returns the metrics dict."""
    settings = {"epochs": epochs, "batch_size": batch_size, "hidden": hidden, "dropout": dropout, "lr": lr,
                "l2": l2, "class_weight": class_weight, "standardize": standardize, "seed": seed,
                "tune_threshold": tune_threshold}
    began = time.perf_counter()
    head = KerasHead(hidden=hidden, dropout=dropout, l2=l2, lr=lr, epochs=epochs, batch_size=batch_size,
                     class_weight=class_weight, standardize=standardize, seed=seed)
    head.fit(task.train.features, task.train.labels, task.attributes, task.val.features, task.val.labels,
             on_epoch=on_epoch)
    seconds = time.perf_counter() - began
    val_p = head.predict_proba(task.val.features)
    thresholds = choose_thresholds(task, val_p, tune_threshold)
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
