"""scikit-learn baselines on the cached features, one binary classifier per attribute.

Models: majority (DummyClassifier, most frequent class), logreg (StandardScaler + LogisticRegression,
C), linear_svm (StandardScaler + LinearSVC, C; its score is sigmoid(decision_function), not a
calibrated probability, so its threshold 0.5 is the SVM's own decision), knn (StandardScaler +
KNeighborsClassifier; slow on a full-size cache).
Each model's fitted estimators are saved with joblib (a pickle: load only files you made) and their
sha256 recorded in config.json, checked before loading.
"""

import time
from pathlib import Path

import joblib
import numpy as np
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from cache.errors import UserError
from embed.backbones import sha256_file
from heads import report
from heads.data import load_task
from heads.train import choose_thresholds, evaluate_probabilities, run_config

MODELS = ("majority", "logreg", "linear_svm", "knn")
MODEL_FILE = "estimators.joblib"


def make_estimator(model, C=1.0, k=15, seed=0):
    if model == "majority":
        return DummyClassifier(strategy="most_frequent")
    if model == "logreg":
        return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=1000, random_state=seed))
    if model == "linear_svm":
        return make_pipeline(StandardScaler(), LinearSVC(C=C, random_state=seed))
    if model == "knn":
        return make_pipeline(StandardScaler(), KNeighborsClassifier(n_neighbors=k))
    raise UserError(f"unknown baseline {model!r}; choose from {', '.join(MODELS)}")


def scores(estimator, X):
    """Positive-class score in [0, 1] per row (probability, or sigmoid of an SVM's margin)."""
    if hasattr(estimator, "predict_proba"):
        return estimator.predict_proba(X)[:, list(estimator.classes_).index(1)]
    return 1.0 / (1.0 + np.exp(-estimator.decision_function(X)))


def predict_scores(estimators, X):
    """float [n, k] from one fitted estimator per attribute."""
    return np.stack([scores(e, X) for e in estimators], axis=1)


def load_estimators(run_dir, config):
    """Load a run's estimators after checking the file's sha256 against its config.json."""
    path = Path(run_dir) / MODEL_FILE
    expected = config.get("model_sha256")
    if not path.is_file():
        raise UserError(f"{path}: missing")
    if sha256_file(path) != expected:
        raise UserError(f"{path}: sha256 differs from config.json; refusing to unpickle a changed file")
    return joblib.load(path)


def parse_models(models):
    names = [m.strip() for m in models.split(",")] if isinstance(models, str) else list(models)
    for name in names:
        if name not in MODELS:
            raise UserError(f"unknown baseline {name!r}; choose from {', '.join(MODELS)}")
    return names


def run_baselines(cache, out_dir, attributes=None, models=("majority", "logreg"), *, C=1.0, k=15, seed=0,
                  tune_threshold=False, allow_partial=False):
    """Fit each model per attribute on train; writes RUN_DIR/<model>/; returns {model: metrics}."""
    task = load_task(cache, attributes, allow_partial=allow_partial)
    train_x, val_x, test_x = (np.asarray(s.features, np.float32) for s in (task.train, task.val, task.test))
    results = {}
    for model in parse_models(models):
        began = time.perf_counter()
        estimators = [make_estimator(model, C, k, seed).fit(train_x, task.train.labels[:, j])
                      for j in range(len(task.attributes))]
        seconds = time.perf_counter() - began
        val_p = predict_scores(estimators, val_x)
        thresholds = choose_thresholds(task, val_p, tune_threshold)
        test_p = predict_scores(estimators, test_x)
        settings = {"model": model, "C": C, "k": k, "seed": seed, "tune_threshold": tune_threshold}
        out = Path(out_dir) / model
        out.mkdir(parents=True, exist_ok=True)
        joblib.dump(estimators, out / MODEL_FILE)
        config = {**run_config(task, model, settings, seconds), "thresholds": dict(zip(task.attributes, thresholds)),
                  "model_sha256": sha256_file(out / MODEL_FILE)}
        metrics = {"attributes": evaluate_probabilities(task, {"val": val_p, "test": test_p}, thresholds),
                   "run": {"name": f"{Path(out_dir).name}/{model}", "kind": model, "cache": config["cache"]["path"],
                           "train_seconds": config["train_seconds"], "settings": settings}}
        report.write_json(out / "config.json", config)
        report.write_json(out / "metrics.json", metrics)
        report.plot_accuracy_vs_majority(metrics, out)
        results[model] = metrics
    return results
