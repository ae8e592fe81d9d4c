"""Every head kind on a generated cache with planted signal: the Keras specs and a user's builder,
the probe protocols (checked against a direct scikit-learn / numpy computation), feature
transforms fitted on train only, and fused caches."""

import json
import textwrap

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

import cli
from cache import layout
from cache.writer import CacheWriter, create_cache
from harness.caches import planted_cache
from heads.run.evaluate import evaluate_run
from heads.run.fit import run_kinds, train_heads
from heads.run.rundir import Run
from heads.run.task import TaskSpec

ATTRS = ["Male", "Smiling"]

BUILDERS = textwrap.dedent('''
    import keras

    def build(n_features, attributes):
        inputs = keras.Input((n_features,), name="features")
        x = keras.layers.Dense(16, activation="relu")(inputs)
        x = keras.layers.BatchNormalization()(x)
        return keras.Model(inputs, {a: keras.layers.Dense(1, activation="sigmoid", name=a)(x) for a in attributes})

    class OwnStep(keras.Model):
        def train_step(self, data):
            return super().train_step(data)

    def own_step(n_features, attributes):
        inputs = keras.Input((n_features,))
        return OwnStep(inputs, {a: keras.layers.Dense(1, activation="sigmoid", name=a)(inputs) for a in attributes})

    def misnamed(n_features, attributes):
        inputs = keras.Input((n_features,))
        return keras.Model(inputs, {"out": keras.layers.Dense(1, activation="sigmoid", name="out")(inputs)})

    def wide(n_features, attributes):
        inputs = keras.Input((n_features,))
        return keras.Model(inputs, {a: keras.layers.Dense(2, activation="sigmoid", name=a)(inputs) for a in attributes})

    def no_sigmoid(n_features, attributes):
        inputs = keras.Input((n_features,))
        return keras.Model(inputs, {a: keras.layers.Dense(1, name=a)(inputs) for a in attributes})

    def not_a_model(n_features, attributes):
        return 3
''')


@pytest.fixture(scope="module")
def builders(tmp_path_factory):
    path = tmp_path_factory.mktemp("builders") / "heads.py"
    path.write_text(BUILDERS)
    return path


def invoke(*args):
    return CliRunner().invoke(cli.main, [str(a) for a in args])


def learned(metrics, floor=0.8):
    return all(metrics["attributes"][a][s]["accuracy"] > floor for a in ATTRS for s in ("val", "test"))


@pytest.mark.parametrize("head", ["linear", "mlp:16,8"])
def test_builtin_specs_learn(cache, tmp_path, head):
    metrics = train_heads(TaskSpec(cache, ATTRS), tmp_path / "run", head=head, epochs=20, lr=1e-2, plots=False)
    assert learned(metrics), metrics["attributes"]
    assert metrics["run"]["settings"]["head"] == head


def test_user_builder_head_trains_evaluates_and_reports(cache, builders, tmp_path):
    result = invoke("train-heads", cache, "--out", tmp_path / "run", "--attrs", ",".join(ATTRS),
                    "--head", f"{builders}:build", "--epochs", "20", "--batch-size", "32", "--lr", "1e-2", "--no-plots")
    assert result.exit_code == 0, result.output + result.stderr
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert learned(metrics), metrics["attributes"]
    again = evaluate_run(tmp_path / "run", "test")
    for a in ATTRS:
        assert again["attributes"][a]["test"]["accuracy"] == pytest.approx(metrics["attributes"][a]["test"]["accuracy"])
    import keras
    model = keras.saving.load_model(tmp_path / "run" / "model.keras")
    moving_mean = next(v for v in model.non_trainable_variables if "moving_mean" in v.path)
    assert np.abs(moving_mean.numpy()).max() > 0  # BatchNormalization's statistics were trained


def test_head_with_its_own_train_step_falls_back_to_fit_and_says_so(cache, builders, tmp_path):
    result = invoke("train-heads", cache, "--out", tmp_path / "run", "--attrs", ",".join(ATTRS),
                    "--head", f"{builders}:own_step", "--epochs", "20", "--lr", "1e-2", "--no-plots")
    assert result.exit_code == 0, result.output + result.stderr
    assert "defines its own train_step; training it with keras Model.fit" in result.stderr
    assert learned(json.loads((tmp_path / "run" / "metrics.json").read_text()))


@pytest.mark.parametrize("head, message", [
    ("mlp:", "'mlp:': expected linear, mlp:128"),
    ("conv:3", "expected linear"),
    ("absent.py:build", "no such file absent.py"),
    ("{builders}:missing", "has no function 'missing'"),
    ("{builders}:misnamed", "missing outputs Male, Smiling; unexpected output out"),
    ("{builders}:wide", "output Male has shape [2] per row, expected [1]"),
    ("{builders}:no_sigmoid", "output Male is not a probability"),
    ("{builders}:not_a_model", "returned int, not a keras.Model"),
])
def test_bad_head_specs_and_builders_exit_2_in_one_line(cache, builders, tmp_path, head, message):
    result = invoke("train-heads", cache, "--out", tmp_path / "run", "--attrs", ",".join(ATTRS),
                    "--head", head.format(builders=builders))
    assert result.exit_code == 2, result.output + result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("Error:")


def test_bad_features_and_models_exit_2(cache, tmp_path):
    for args, message in [(["train-heads", "--features", "pca:0"], "expected one of raw"),
                          (["baselines", "--models", "logreg,forest"], "unknown model 'forest'"),
                          (["train-heads", "--features", "l2", "--standardize"], "contradicts")]:
        result = invoke(args[0], cache, "--out", tmp_path / "r", *args[1:])
        assert result.exit_code == 2 and message in result.stderr, (args, result.stderr)


def test_probe_kinds_learn_and_record_what_they_chose(cache, tmp_path):
    results = run_kinds(TaskSpec(cache, ATTRS), tmp_path / "probes", ["logreg-cv", "knn-cosine", "linear-grid"],
                        max_epochs=20, plots=False)  # linear-grid's slowest rates would run to the cap of 100 here
    for kind, metrics in results.items():
        assert learned(metrics, 0.75), (kind, metrics["attributes"])
    assert set(results["logreg-cv"]["run"]["selection"]["C"]) == set(ATTRS)
    assert all(k in (10, 20, 100, 200) for k in results["knn-cosine"]["run"]["selection"]["k"].values())
    assert len(results["linear-grid"]["run"]["selection"]["val_accuracy_by_lr"]) == 13
    grid = results["linear-grid"]["run"]
    epochs = grid["selection"]["epochs_by_lr"]  # each rate stops on its own; the run's are the kept rate's
    assert len(epochs) == 13 and max(epochs.values()) <= 20
    assert grid["epochs"]["trained"] == epochs[f"{grid['selection']['lr']:g}"]
    for kind in results:  # every kind is a run directory like any other
        again = evaluate_run(tmp_path / "probes" / kind, "test")
        for a in ATTRS:
            assert again["attributes"][a]["test"]["accuracy"] == pytest.approx(
                results[kind]["attributes"][a]["test"]["accuracy"], abs=1e-6), kind


def _splits(cache):
    with h5py.File(cache, "r") as f:
        ok = f["status"][:] == layout.STATUS_OK
        part, x, y = f["partition"][:], f["features"][:], f["labels"][:]
    return [(x[(part == p) & ok], y[(part == p) & ok][:, :2]) for p in (0, 1, 2)]


def test_logreg_cv_matches_scikit_learn_at_the_chosen_C(cache, tmp_path):
    metrics = run_kinds(TaskSpec(cache, ATTRS), tmp_path / "p", ["logreg-cv"], plots=False)["logreg-cv"]
    (train_x, train_y), (val_x, val_y), (test_x, _) = _splits(cache)
    scaler = StandardScaler().fit(train_x)
    ours = Run(tmp_path / "p" / "logreg-cv").probabilities(test_x)
    for j, a in enumerate(ATTRS):
        curve = metrics["run"]["selection"]["val_accuracy_by_C"][a]
        chosen = metrics["run"]["selection"]["C"][a]
        assert curve[f"{chosen:g}"] == max(curve.values())
        direct = LogisticRegression(C=chosen, max_iter=1000).fit(scaler.transform(train_x), train_y[:, j])
        assert direct.score(scaler.transform(val_x), val_y[:, j]) == pytest.approx(curve[f"{chosen:g}"], abs=0.01)
        # the same optimum, reached from a warm start: equal to L-BFGS's tolerance
        direct_p = direct.predict_proba(scaler.transform(test_x))[:, 1]
        np.testing.assert_allclose(ours[:, j], direct_p, atol=1e-2)
        assert np.mean((ours[:, j] >= 0.5) == (direct_p >= 0.5)) >= 0.99


def test_knn_cosine_matches_a_direct_numpy_computation(cache, tmp_path):
    metrics = run_kinds(TaskSpec(cache, ATTRS), tmp_path / "p", ["knn-cosine"], plots=False)["knn-cosine"]
    (train_x, train_y), _, (test_x, _) = _splits(cache)
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    stored = unit(train_x).astype(np.float16).astype(np.float32)  # the run keeps its neighbours as float16
    similarity = unit(test_x) @ stored.T
    ours = Run(tmp_path / "p" / "knn-cosine").probabilities(test_x)
    for j, a in enumerate(ATTRS):
        k = metrics["run"]["selection"]["k"][a]
        top = np.argsort(-similarity, axis=1)[:, :k]
        weights = np.exp(np.take_along_axis(similarity, top, axis=1) / 0.07)
        expected = (weights * train_y[top, j]).sum(axis=1) / weights.sum(axis=1)
        np.testing.assert_allclose(ours[:, j], expected, rtol=1e-4, atol=1e-6)


def test_transforms_are_fitted_on_train_only(tmp_path):
    """Two caches that differ only in their test rows give the same fitted transform, and a run
    stores the transform it was prepared with."""
    from heads.run.fit import prepare
    planted_cache(tmp_path / "a.h5")
    planted_cache(tmp_path / "b.h5", flip_test=True)
    for spec in ("standardize", "pca:4", "pca-whiten:3"):
        fitted = [prepare(TaskSpec(tmp_path / f"{name}.h5", ATTRS, features=spec)).transform for name in "ab"]
        state = [{k: getattr(t, k) for k in ("mean_", "scale_", "components_") if getattr(t, k) is not None}
                 for t in fitted]
        assert state[0].keys() == state[1].keys() and len(state[0]) >= 2
        for key in state[0]:
            np.testing.assert_array_equal(state[0][key], state[1][key])
    train_heads(TaskSpec(tmp_path / "b.h5", ATTRS, features="pca-whiten:3"), tmp_path / "run", epochs=1, plots=False)
    with np.load(tmp_path / "run" / "transform.npz") as stored:
        for key, values in state[1].items():
            np.testing.assert_array_equal(stored[key.rstrip("_")], values)


@pytest.mark.parametrize("features", ["l2", "pca-whiten:30"])
def test_transformed_runs_learn_and_evaluate(cache, tmp_path, features):
    metrics = run_kinds(TaskSpec(cache, ATTRS, features=features), tmp_path / "b", ["logreg"], plots=False)["logreg"]
    assert learned(metrics)
    assert json.loads((tmp_path / "b" / "logreg" / "config.json").read_text())["features"] == features
    again = evaluate_run(tmp_path / "b" / "logreg", "val")
    assert again["attributes"]["Male"]["val"] == pytest.approx(metrics["attributes"]["Male"]["val"])


def _second_cache(path, first, dim=8, change=None, seed=5):
    """Another 'backbone' over the first cache's images: noise features, rows in reverse order."""
    with h5py.File(first, "r") as f:
        ids = [s.decode() for s in f["image_id"][:]][::-1]
        labels, partition = f["labels"][:][::-1].copy(), f["partition"][:][::-1].copy()
        names = [str(n) for n in f["labels"].attrs["names"]]
        status = f["status"][:][::-1]
    if change:
        change(ids, labels, partition)
    create_cache(path, image_ids=ids, attribute_names=names, labels=labels, partition=partition, feature_dim=dim,
                 feature_dtype="float16", settings={"backbone": {"model": "noise"}, "preprocessing": {},
                                                    "dataset_fingerprint": str(path), "sources": {}})
    features = np.random.default_rng(seed).standard_normal((len(ids), dim))
    with CacheWriter(path) as writer:
        writer.write_rows(0, features, status, ["bad" if s == layout.STATUS_FAILED else "" for s in status])


def test_fusion_joins_caches_by_id_and_refuses_mismatches(cache, tmp_path):
    _second_cache(tmp_path / "b.h5", cache)
    metrics = train_heads(TaskSpec([cache, tmp_path / "b.h5"], ATTRS), tmp_path / "fused", epochs=10, plots=False)
    assert learned(metrics)
    config = json.loads((tmp_path / "fused" / "config.json").read_text())
    assert [c["feature_dim"] for c in config["caches"]] == [32, 8]
    assert Run(tmp_path / "fused").load()[1].n_features_in_ == 40
    again = evaluate_run(tmp_path / "fused", "test")
    assert again["attributes"]["Male"]["test"]["accuracy"] == pytest.approx(metrics["attributes"]["Male"]["test"]["accuracy"])

    def relabel(ids, labels, partition):
        labels[3, 0] = 1 - labels[3, 0]

    def repartition(ids, labels, partition):
        partition[0] = (partition[0] + 1) % 3

    def rename(ids, labels, partition):
        ids[7] = "elsewhere.jpg"

    for change, message in [(relabel, "labels differ for 1 image,"), (repartition, "partition differ"),
                            (rename, "they hold different images")]:
        _second_cache(tmp_path / "bad.h5", cache, change=change)
        result = invoke("train-heads", cache, tmp_path / "bad.h5", "--out", tmp_path / "r", "--attrs", "Male")
        assert result.exit_code == 1 and "cannot be fused with" in result.stderr and message in result.stderr, result.stderr


def test_knn_cosine_scores_alike_on_either_matmul_and_keeps_its_choice(cache, tmp_path, monkeypatch):
    """The similarity product runs on TensorFlow's or numpy's matmul, whichever was faster at fit
    (timed on real queries); the run records the choice and scores with it after loading."""
    from heads.kinds.probes import _Neighbours
    rng = np.random.default_rng(0)
    train, queries = rng.standard_normal((3000, 24)).astype(np.float32), rng.standard_normal((700, 24)).astype(np.float32)
    train /= np.linalg.norm(train, axis=1, keepdims=True)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    labels = (train[:, :2] > 0).astype(np.uint8)
    shares = {m: _Neighbours(train, labels, (10, 20), 0.07, 256, m).vote_shares(queries) for m in ("tensorflow", "numpy")}
    np.testing.assert_allclose(shares["numpy"], shares["tensorflow"], rtol=1e-4, atol=1e-5)
    timed = _Neighbours(train, labels, (10, 20), 0.07, 256).choose_matmul(queries)
    assert set(timed) == {"tensorflow", "numpy"} and all(t > 0 for t in timed.values())
    monkeypatch.setattr(_Neighbours, "choose_matmul", lambda self, queries: setattr(self, "matmul", "numpy") or {})
    metrics = run_kinds(TaskSpec(cache, ATTRS), tmp_path / "p", ["knn-cosine"], plots=False)["knn-cosine"]
    assert metrics["run"]["selection"]["matmul"] == "numpy"
    run = Run(tmp_path / "p" / "knn-cosine")
    _, head = run.load()
    assert head.matmul_ == "numpy" and head._neighbours.matmul == "numpy"
    assert evaluate_run(tmp_path / "p" / "knn-cosine", "test")["attributes"] == \
        {a: {"test": m["test"]} for a, m in metrics["attributes"].items()}
