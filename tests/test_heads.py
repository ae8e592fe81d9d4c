"""Heads on a generated cache with planted signal: learning, sklearn-consistent metrics, seeds,
threshold tuning on val only, evaluate/compare, and every bad input's message."""

import json
import re
import shutil

import h5py
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from sklearn import metrics as skm

import cli
from cache import layout
from harness.caches import PLANTED_ATTRIBUTES, planted_cache
from heads.metrics import attribute_metrics, tune_threshold
from heads.run.compare import leaderboard, to_markdown
from heads.run.evaluate import evaluate_run
from heads.run.fit import run_kinds, train_heads
from heads.run.task import TaskSpec

ATTRS = PLANTED_ATTRIBUTES


@pytest.fixture(scope="module")
def head_run(cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "head"
    metrics = train_heads(TaskSpec(cache, ["Male", "Smiling", "Young"]), out, epochs=20, seed=1)
    return out, metrics


def test_head_and_logreg_learn_and_majority_does_not(head_run, cache, tmp_path):
    _, head = head_run
    base = run_kinds(TaskSpec(cache, ["Male", "Smiling", "Young"]), tmp_path / "base", ["majority", "logreg"], plots=False)
    for name in ("Male", "Smiling"):
        for metrics in (head, base["logreg"]):
            assert metrics["attributes"][name]["val"]["accuracy"] > 0.85
            assert metrics["attributes"][name]["test"]["accuracy"] > 0.85
            assert metrics["attributes"][name]["test"]["roc_auc"] > 0.93
        majority = base["majority"]["attributes"][name]["test"]
        assert majority["accuracy"] == majority["majority_accuracy"] < 0.75
        assert majority["roc_auc"] == 0.5


def test_run_directory_contents(head_run):
    out, metrics = head_run
    for name in ("model.keras", "history.csv", "config.json", "metrics.json", "loss.png", "accuracy.png",
                 "accuracy_vs_majority.png", "reliability.png"):
        assert (out / name).is_file(), name
    saved = json.loads((out / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(metrics))
    assert set(saved["attributes"]["Male"]["val"]) == {"accuracy", "balanced_accuracy", "f1", "roc_auc", "ece",
                                                      "brier", "majority_accuracy", "threshold", "n"}
    config = json.loads((out / "config.json").read_text())
    assert config["excluded_failed_rows"] == {"train": 1, "val": 0, "test": 0}
    assert config["rows"] == {"train": 599, "val": 200, "test": 200}
    assert config["settings"]["epochs"] == 20 and config["cache"]["dataset_fingerprint"] == "fp0False"
    history = (out / "history.csv").read_text().splitlines()
    assert history[0].startswith("epoch,loss,Male_accuracy") and "val_Young_accuracy" in history[0]
    assert len(history) == 21


def test_metrics_agree_with_sklearn_computed_independently(head_run, cache):
    out, metrics = head_run
    import keras
    model = keras.saving.load_model(out / "model.keras", compile=False)
    with h5py.File(cache, "r") as f:
        rows = np.flatnonzero((f["partition"][:] == 2) & (f["status"][:] == layout.STATUS_OK))
        x, y = f["features"][:][rows], f["labels"][:][rows]
    out_probs = model(x, training=False)
    for j, name in enumerate(["Male", "Smiling", "Young"]):
        p = np.asarray(out_probs[name])[:, 0]
        m = metrics["attributes"][name]["test"]
        assert m["accuracy"] == pytest.approx(skm.accuracy_score(y[:, j], p >= 0.5))
        assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y[:, j], p >= 0.5))
        assert m["f1"] == pytest.approx(skm.f1_score(y[:, j], p >= 0.5))
        assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(y[:, j], p), abs=1e-6)
        assert m["n"] == len(rows) and m["threshold"] == 0.5


def test_same_seed_same_metrics_other_seed_differs(cache, tmp_path):
    a = train_heads(TaskSpec(cache, "Male,Smiling"), tmp_path / "a", epochs=2, seed=7, plots=False)
    b = train_heads(TaskSpec(cache, "Male,Smiling"), tmp_path / "b", epochs=2, seed=7, plots=False)
    c = train_heads(TaskSpec(cache, "Male,Smiling"), tmp_path / "c", epochs=2, seed=8, plots=False)
    assert a["attributes"] == b["attributes"]
    assert a["attributes"] != c["attributes"]


def test_threshold_tuning_never_reads_test_rows(tmp_path):
    """Two caches that differ only in their test rows give the same tuned thresholds."""
    planted_cache(tmp_path / "a.h5")
    planted_cache(tmp_path / "b.h5", flip_test=True)
    thresholds = []
    for name in ("a", "b"):
        train_heads(TaskSpec(tmp_path / f"{name}.h5", "Male,Smiling,Young", tune_threshold=True), tmp_path / name, epochs=2, plots=False)
        thresholds.append(json.loads((tmp_path / name / "config.json").read_text())["thresholds"])
    assert thresholds[0] == thresholds[1]
    assert any(t != 0.5 for t in thresholds[0].values())


def test_tune_threshold_maximises_accuracy():
    y = np.array([0, 0, 1, 0, 1, 1])
    p = np.array([0.1, 0.2, 0.3, 0.35, 0.8, 0.9])
    t = tune_threshold(y, p)
    best = max(skm.accuracy_score(y, p >= c) for c in np.unique(p))
    assert skm.accuracy_score(y, p >= t) == best == 5 / 6


def test_attribute_metrics_single_class_split():
    m = attribute_metrics([1, 1, 1], [0.9, 0.2, 0.7], 0.5, train_majority=0)
    assert m["roc_auc"] is None and m["balanced_accuracy"] is None
    assert m["accuracy"] == pytest.approx(2 / 3) and m["majority_accuracy"] == 0.0


def test_class_weight_balanced_raises_minority_recall(cache, tmp_path):
    plain = train_heads(TaskSpec(cache, "Young"), tmp_path / "plain", epochs=3, plots=False)
    balanced = train_heads(TaskSpec(cache, "Young"), tmp_path / "bal", epochs=3, class_weight="balanced", plots=False)
    assert (balanced["attributes"]["Young"]["val"]["balanced_accuracy"]
            >= plain["attributes"]["Young"]["val"]["balanced_accuracy"] - 0.01)


def test_evaluate_reproduces_the_saved_metrics(head_run, cache, tmp_path):
    out, metrics = head_run
    again = evaluate_run(out, "test")
    for name in ("Male", "Smiling", "Young"):
        for key, value in metrics["attributes"][name]["test"].items():
            assert again["attributes"][name]["test"][key] == pytest.approx(value, abs=1e-6), (name, key)
    base = run_kinds(TaskSpec(cache, "Male"), tmp_path / "base", ["logreg"], plots=False)
    assert evaluate_run(tmp_path / "base" / "logreg", "val")["attributes"]["Male"]["val"] == \
        base["logreg"]["attributes"]["Male"]["val"]


def test_evaluate_refuses_moved_or_changed_cache(tmp_path):
    planted_cache(tmp_path / "c.h5")
    train_heads(TaskSpec(tmp_path / "c.h5", "Male"), tmp_path / "run", epochs=1, plots=False)
    shutil.move(tmp_path / "c.h5", tmp_path / "moved.h5")
    with pytest.raises(Exception, match="is not there \\(moved\\?\\); pass --cache"):
        evaluate_run(tmp_path / "run")
    assert evaluate_run(tmp_path / "run", caches=tmp_path / "moved.h5")["attributes"]["Male"]["test"]["n"] == 200
    planted_cache(tmp_path / "other.h5", seed=3)
    with pytest.raises(Exception, match="dataset_fingerprint differs"):
        evaluate_run(tmp_path / "run", caches=tmp_path / "other.h5")


def test_changed_estimator_file_is_not_unpickled(cache, tmp_path):
    run_kinds(TaskSpec(cache, "Male"), tmp_path / "base", ["logreg"], plots=False)
    path = tmp_path / "base" / "logreg" / "estimators.joblib"
    path.write_bytes(path.read_bytes() + b"tampered")
    with pytest.raises(Exception, match="sha256 differs"):
        evaluate_run(tmp_path / "base" / "logreg")


def test_compare_leaderboard_and_files(head_run, cache, tmp_path):
    out, _ = head_run
    run_kinds(TaskSpec(cache, ["Male", "Smiling", "Young"]), tmp_path / "base", ["majority", "logreg"], plots=False)
    table = leaderboard([out, tmp_path / "base"], "test", ["accuracy", "roc_auc"])
    assert list(table.index)[-1].endswith("majority")
    assert ("Male", "accuracy") in table.columns and ("mean", "roc_auc") in table.columns
    assert table[("head", "")].tolist()[-1] == "majority" and table.at[str(out), ("head", "")].startswith("mlp:")
    markdown = to_markdown(table, "test")
    assert markdown.startswith("Runs ranked by their mean test accuracy, highest first.\n\n| run | head | Male accuracy |")
    assert markdown.count("\n") == 7
    result = CliRunner().invoke(cli.main, ["compare", str(out), str(tmp_path / "base"), "--split", "test", "--csv",
                                           str(tmp_path / "t.csv"), "--markdown", str(tmp_path / "t.md")])
    assert result.exit_code == 0 and "majority" in result.output
    written = pd.read_csv(tmp_path / "t.csv", index_col="run")  # one header row
    assert written.shape == (3, 5) and list(written.columns[:2]) == ["head", "Male accuracy"]
    assert written.loc[str(out), "mean accuracy"] == pytest.approx(table.at[str(out), ("mean", "accuracy")])


def invoke(*args):
    return CliRunner().invoke(cli.main, [str(a) for a in args])


def test_cli_train_heads_prints_table(cache, tmp_path):
    """The table per epoch and at the end; --no-plots: no pictures, recorded, and the report says why."""
    result = invoke("train-heads", cache, "--out", tmp_path / "r", "--epochs", 2, "--attrs", "Male", "--no-plots")
    assert result.exit_code == 0, result.output
    assert "epoch 2: loss" in result.output and "keras head" in result.output and "Male" in result.output
    assert result.output.endswith(f"wrote {tmp_path / 'r'}: model.keras, metrics.json, config.json, history.csv\n")
    assert not list((tmp_path / "r").glob("*.png"))
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["run"]["plots"] is False
    page = invoke("report", tmp_path / "r", "--out", tmp_path / "page.html", "--errors", 0)
    assert page.exit_code == 0, page.output
    assert "No pictures: the run was trained with --no-plots." in (tmp_path / "page.html").read_text()


@pytest.mark.parametrize("args, message", [
    (["--attrs", "Smilling"], "unknown attribute 'Smilling' (did you mean Smiling?); valid: Male, Smiling, Young, Bald"),
    (["--attrs", "Male,Male"], "listed twice"),
    (["--attrs", ","], "no attributes given"),
    (["--epochs", "0"], "Invalid value for '--epochs'"),
    (["--dropout", "1"], "Invalid value for '--dropout'"),
    # options that would change nothing for the head chosen (a class of mistakes: each refused, exit 2)
    (["--tail-lr", "1e-3"], "--tail-lr is for --head tail: it would change nothing"),
    (["--head", "linear", "--tail-bn", "frozen"], "--tail-bn is for --head tail: it would change nothing"),
    (["--epochs", "3", "--patience", "5"], "--patience is for --epochs auto: it would change nothing"),
    (["--epochs", "3", "--max-epochs", "5"], "--max-epochs is for --epochs auto: it would change nothing"),
    (["--head", "my.py:build", "--l2", "0.01"], "--l2 is for the built-in heads (a FILE.py:FUNCTION head builds its own)"),
])
def test_cli_bad_options(cache, tmp_path, args, message):
    result = invoke("train-heads", cache, "--out", tmp_path / "r", *args)
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output, result.output
    assert not (tmp_path / "r").exists()


def test_partial_cache_refused_unless_allowed(tmp_path):
    planted_cache(tmp_path / "p.h5", finish=False)
    result = invoke("train-heads", tmp_path / "p.h5", "--out", tmp_path / "r", "--attrs", "Male")
    assert result.exit_code == 1 and "rows are not embedded yet" in result.output
    result = invoke("train-heads", tmp_path / "p.h5", "--out", tmp_path / "r", "--attrs", "Male", "--allow-partial")
    assert result.exit_code == 1 and "the val split has no embedded rows" in result.output


def test_one_class_attribute_is_refused(tmp_path):
    planted_cache(tmp_path / "c.h5", bald_in_train=False)
    result = invoke("baselines", tmp_path / "c.h5", "--out", tmp_path / "r", "--attrs", "Bald")
    assert result.exit_code == 1
    assert "attribute Bald has only class 0 in the train split" in result.output


def test_a_setting_no_chosen_kind_takes_is_a_usage_error(cache, tmp_path):
    """Each given setting goes to the kinds that take it; one none of them takes stops the command."""
    result = invoke("baselines", cache, "--out", tmp_path / "r", "--models", "knn", "--C", "5")
    assert result.exit_code == 2 and "Error: knn does not take --C" in result.output, result.output
    result = invoke("baselines", cache, "--out", tmp_path / "r", "--models", "majority,knn", "--dfr-on", "train")
    assert result.exit_code == 2 and "none of majority, knn takes --dfr-on" in result.output, result.output
    assert not (tmp_path / "r").exists()
    result = invoke("baselines", cache, "--out", tmp_path / "r", "--models", "majority,logreg", "--C", "0.5",
                    "--attrs", "Male", "--no-plots")
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "r" / "logreg" / "config.json").read_text())
    assert config["settings"]["C"] == 0.5 and "C" not in json.loads((tmp_path / "r" / "majority" / "config.json").read_text())["settings"]
    assert f"wrote {tmp_path / 'r'}: majority, logreg (each: metrics.json" in result.output and "<" not in result.output
    evaluated = invoke("evaluate", tmp_path / "r" / "logreg", "--split", "val")
    assert evaluated.exit_code == 0 and "attribute                   acc  bal_acc       f1      auc      ece " \
        "majority        n" in evaluated.output  # the training table's columns, and the labelled rows


def test_a_keras_setting_given_to_sweep_as_an_option_points_to_its_grid_axis(cache, tmp_path):
    result = invoke("sweep", cache, "--out", tmp_path / "s", "--epochs", "3")
    assert result.exit_code == 2 and result.output == ("Error: sweep takes --epochs as an axis of its grid: --grid "
                                                       "epochs=V1,V2,... (one value for all variants: --grid epochs=V)\n")
    assert "No such option" in invoke("sweep", cache, "--out", tmp_path / "s", "--epoch", "3", "--no-plots").output


def test_unknown_baseline_and_not_a_run(cache, tmp_path):
    result = invoke("baselines", cache, "--out", tmp_path / "r", "--models", "forest")
    assert result.exit_code == 2 and "unknown model 'forest'; choose from majority, logreg" in result.output
    (tmp_path / "empty").mkdir()
    result = invoke("compare", tmp_path / "empty")
    assert result.exit_code == 1 and "not a run directory" in result.output


@pytest.mark.slow
def test_demo_heads_beat_majority(tmp_path):
    result = CliRunner().invoke(cli.main, ["demo", "--workdir", str(tmp_path), "--n", "120"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    head = json.loads((tmp_path / "head" / "metrics.json").read_text())
    logreg = json.loads((tmp_path / "baselines" / "logreg" / "metrics.json").read_text())
    for metrics in (head, logreg):
        for name in ("Male", "Young"):
            test = metrics["attributes"][name]["test"]
            assert test["accuracy"] >= test["majority_accuracy"] + 0.1, (name, test)
    assert (tmp_path / "head" / "loss.png").is_file()
    # keras:EfficientNetV2B0 with random weights: warned about, shown by info, 1280-d rows in its own 0-255 range
    assert "random weights" in result.output and "RANDOM WEIGHTS" in result.output
    with h5py.File(tmp_path / "features.h5", "r") as f:
        assert f["features"].shape == (120, 1280) and np.isfinite(f["features"][:]).all()
        assert json.loads(f.attrs["preprocessing"])["value_range"] == [0.0, 255.0]


def test_sweep_grid_names_and_leaderboard(cache, tmp_path):
    from heads.run.sweep import parse_grid, variant_name
    grid = parse_grid(["hidden=8,16", "lr=1e-3,3e-3"])
    assert grid == [{"hidden": 8, "lr": 0.001}, {"hidden": 8, "lr": 0.003}, {"hidden": 16, "lr": 0.001},
                    {"hidden": 16, "lr": 0.003}]
    assert variant_name(grid[1]) == "hidden=8_lr=0.003"
    result = invoke("sweep", cache, "--out", tmp_path / "s", "--grid", "hidden=8,16", "--grid", "dropout=0,0.5",
                    "--grid", "epochs=10", "--attrs", "Male,Smiling", "--no-plots")  # (auto: tests/test_epochs.py)
    assert result.exit_code == 0, result.output
    assert "[4/4] hidden=16_dropout=0.5_epochs=10" in result.output
    for name in ("hidden=8_dropout=0_epochs=10", "hidden=8_dropout=0.5_epochs=10", "hidden=16_dropout=0_epochs=10",
                 "hidden=16_dropout=0.5_epochs=10"):
        metrics = json.loads((tmp_path / "s" / name / "metrics.json").read_text())
        assert metrics["run"]["settings"]["head"] == "mlp:" + name.split("_")[0].split("=")[1]
        assert metrics["run"]["plots"] is False and not list((tmp_path / "s" / name).glob("*.png"))
    board = (tmp_path / "s" / "leaderboard.csv").read_text().splitlines()
    assert len(board) == 1 + 4 and board[0].startswith("run,head,Male accuracy,Smiling accuracy,mean accuracy")
    assert (tmp_path / "s" / "leaderboard.md").read_text().startswith("Runs ranked by their mean val accuracy")
    heads = invoke("sweep", cache, "--out", tmp_path / "h", "--grid", "head=linear,mlp:8,4", "--attrs", "Male",
                   "--grid", "epochs=1", "--no-plots")
    assert heads.exit_code == 0, heads.output
    names = sorted(p.name for p in (tmp_path / "h").iterdir() if p.is_dir())
    assert names[0] == "head=linear_epochs=1" and re.fullmatch(r"head=mlp-8-4_epochs=1_[0-9a-f]{6}", names[1]), names
    assert all(re.fullmatch(r"[A-Za-z0-9._=-]+", n) for n in names)
    # a variant equals the same settings trained alone (up to float32 rounding: see
    # test_heads_trained_together_equal_heads_trained_alone)
    alone = train_heads(TaskSpec(cache, "Male,Smiling"), tmp_path / "alone", hidden=8, dropout=0.5, epochs=10,
                        plots=False)
    swept = json.loads((tmp_path / "s" / "hidden=8_dropout=0.5_epochs=10" / "metrics.json").read_text())
    for name, by_split in alone["attributes"].items():
        for split, values in by_split.items():
            assert swept["attributes"][name][split] == pytest.approx(values, abs=1e-6), (name, split)


@pytest.mark.parametrize("grid, message", [
    (["hidden"], "expected name=v1,v2"),
    (["depth=2,3"], "'depth' is not sweepable"),
    (["hidden=a,b"], "--hidden 'a': must be a whole number >= 1"),
    (["lr=1e-3", "lr=3e-4"], "names 'lr' twice"),
    (["dropout=0.1,1.5"], "--dropout '1.5': must be a number in [0, 1)"),
    (["batch_size=0"], "--batch-size '0': must be a whole number >= 1"),
    (["lr=0"], "--lr '0': must be a number in (0, inf)"),
    (["lr=1e-3,0.001"], "a value is given twice"),
    (["head=mlp:x"], "--head 'mlp:x': expected linear"),
    (["tail_lr=1e-3,1e-4"], "Error: --grid tail_lr=0.001,0.0001: no variant uses it (--tail-lr is for --head tail)"),
    (["patience=3,5", "epochs=2"], "--grid patience=3,5: no variant uses it (--patience is for --epochs auto)"),
    (["head=my.py:build", "l2=0.1"], "--grid l2=0.1: no variant uses it (--l2 is for the built-in heads"),
])
def test_sweep_bad_grid_values_are_checked_as_train_heads_checks_them(cache, tmp_path, grid, message):
    """One validation path: each --grid value goes through the check of its train-heads option, exit 2
    before TensorFlow starts and before anything is written."""
    args = [a for g in grid for a in ("--grid", g)]
    result = invoke("sweep", cache, "--out", tmp_path / "s", *args)
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output, result.output
    assert not (tmp_path / "s").exists()
    option = next((m.split("'")[0].strip() for m in [message] if m.startswith("--")), None)
    if option and not option.startswith(("--head", "--grid")):  # the same value, given to train-heads, gets the same words
        value = message.split("'")[1]
        single = invoke("train-heads", cache, "--out", tmp_path / "r", option, value)
        assert single.exit_code == 2 and message.split(": ", 1)[1] in single.output, single.output


def assert_same_history(a, b):
    """Histories of the same training computed in two graphs: equal up to float32 rounding."""
    assert [sorted(r) for r in a] == [sorted(r) for r in b]
    for ra, rb in zip(a, b):
        for key in ra:
            assert ra[key] == pytest.approx(rb[key], rel=1e-5, abs=1e-6), key


def test_heads_trained_together_equal_heads_trained_alone():
    """fit_together shares the batch order, the gather and the random bits, not the results.

    Tolerance, not bitwise: Grappler's remapper decides per graph which ops it fuses into oneDNN
    kernels, so a head's ops inside a bigger graph may run different kernels than alone (on
    AVX-512 CPUs the validation probabilities differed by 1 ulp; with remapping off, bitwise)."""
    from heads.kinds.base import Data
    from heads.kinds.keras_head import KerasHead
    from heads.kinds.trainer import fit_together
    rng = np.random.default_rng(0)
    X = rng.standard_normal((700, 16)).astype(np.float16)
    Y = (X[:, :2].astype(np.float32) > 0).astype(np.float32)
    settings = [{"head": "mlp:8", "dropout": 0.0, "lr": 1e-3}, {"head": "mlp:8", "dropout": 0.5, "lr": 3e-3, "l2": 1e-2},
                {"head": "mlp:12,4", "dropout": 0.2, "lr": 1e-3}, {"head": "linear", "dropout": 0.0, "lr": 1e-2}]
    train, val = Data(X, Y, ("A", "B")), Data(X[:100], Y[:100], ("A", "B"))
    together = [KerasHead(batch_size=64, epochs=12, **s) for s in settings]  # stopping: test_epochs
    fit_together(together, train, val)
    for head, s in zip(together, settings):
        alone = KerasHead(batch_size=64, epochs=12, **s).fit(train, val)
        np.testing.assert_allclose(head.predict_proba(X), alone.predict_proba(X), rtol=1e-5, atol=1e-6)
        assert_same_history(head.history_, alone.history_)
    with pytest.raises(ValueError, match="must share epochs"):
        fit_together([KerasHead(epochs=2), KerasHead(epochs=3)], train)


@pytest.mark.parametrize("spec", ["linear", "mlp:8", "mlp:8,4"])
def test_builtin_forward_pass_equals_the_keras_model(spec):
    """MLP.logits (the fast trainer's forward pass) computes the Keras model's own logits."""
    import tensorflow as tf

    from heads.kinds.architectures import parse_head
    rng = np.random.default_rng(1)
    model = parse_head(spec).build(16, list("abc"), 0.5, 1e-2)
    for variable in model.trainable_variables:
        variable.assign(rng.standard_normal(variable.shape).astype(np.float32))
    X = rng.standard_normal((50, 16)).astype(np.float32)
    logits = parse_head(spec).logits([v.value for v in model.trainable_variables], tf.constant(X)).numpy()
    probabilities = model(X, training=False)
    for j, name in enumerate("abc"):
        np.testing.assert_allclose(1 / (1 + np.exp(-logits[:, j])), np.asarray(probabilities[name])[:, 0],
                                   rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("spec", ["mlp:8", "linear", "mlp:8,4"])
def test_trainer_follows_keras_fit_with_adam(spec):
    """Without dropout the fast trainer is the same algorithm as model.fit: same weights after 3 steps."""
    import keras

    from heads.kinds.architectures import parse_head
    from heads.kinds.base import Data
    from heads.kinds.keras_head import KerasHead
    rng = np.random.default_rng(2)
    X = rng.standard_normal((64, 16)).astype(np.float32)
    Y = (X[:, :2] + 0.5 * rng.standard_normal((64, 2)) > 0).astype(np.float32)
    ours = KerasHead(head=spec, dropout=0.0, l2=1e-2, lr=1e-2, batch_size=64, seed=3, epochs=3).fit(Data(X, Y, ("A", "B")))
    keras.utils.set_random_seed(3)
    model = parse_head(spec).build(16, ["A", "B"], dropout=0.0, l2=1e-2)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss={"A": "binary_crossentropy", "B": "binary_crossentropy"})
    model.fit(X, {"A": Y[:, :1], "B": Y[:, 1:]}, batch_size=64, epochs=3, shuffle=False, verbose=0)
    for ours_weight, keras_weight in zip(ours.model_.get_weights(), model.get_weights()):
        np.testing.assert_allclose(ours_weight, keras_weight, rtol=1e-4, atol=1e-6)
    keras.utils.set_random_seed(3)
    initial = parse_head(spec).build(16, ["A", "B"], 0.0, 1e-2).get_weights()
    assert not np.allclose(ours.model_.get_weights()[0], initial[0], atol=1e-3)  # training moved the weights


def test_compare_finds_runs_at_any_depth_and_ranks_different_attribute_sets_on_the_shared_ones(cache, tmp_path):
    tree = tmp_path / "tree"
    assert invoke("baselines", cache, "--out", tree / "x" / "base", "--models", "majority",
                  "--attrs", "Male,Young", "--no-plots").exit_code == 0
    assert invoke("baselines", cache, "--out", tree / "y", "--models", "logreg", "--attrs", "Male", "--no-plots").exit_code == 0
    (tree / "z").mkdir()
    (tree / "z" / "config.json").write_text("{}")  # a run that never finished
    result = invoke("compare", tree, "--split", "test")
    assert result.exit_code == 0, result.output
    assert f"{tree}: 2 runs found at any depth" in result.stdout
    assert f"1 unfinished run left out (config.json but no metrics.json), e.g. {tree / 'z'}" in result.stderr
    assert "the mean ranks them on the 1 they all score (Male); the other 1 are shown but left out" in result.stderr
    from heads.run.compare import leaderboard
    table = leaderboard([tree], "test")
    assert list(table.index) == [str(tree / "y" / "logreg"), str(tree / "x" / "base" / "majority")]
    assert (table[("mean", "accuracy")] == table[("Male", "accuracy")]).all()


@pytest.mark.parametrize("args", [["train-heads", "--lr", "1e30"], ["train-heads", "--lr", "1e30", "--epochs", "2"],
                                  ["sweep", "--grid", "lr=1e30", "--grid", "epochs=2"]])
def test_a_diverging_loss_stops_in_one_line_naming_the_rate(cache, tmp_path, args):
    command, *options = args
    result = invoke(command, cache, "--out", tmp_path / "r", "--attrs", "Male", *options)
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    errors = [line for line in result.output.splitlines() if not line.startswith(("epoch ", "note: "))]
    assert len(errors) == 1 and errors[0].startswith("Error: ")
    assert "head mlp:128: the training loss became NaN or inf in epoch 1, so training diverged; lower --lr 1e+30" \
        in result.output


def test_a_diverged_grid_member_is_left_out_and_knn_k_is_checked_against_the_rows(cache, tmp_path):
    from heads.kinds import head_class
    from heads.kinds.trainer import fit_together
    from heads.run.fit import prepare
    prepared = prepare(TaskSpec(cache, "Male"))
    heads = [head_class("keras_head")(lr=lr, epochs=2) for lr in (1e30, 1e-3)]
    fit_together(heads, prepared.train, prepared.val, diverged="keep")
    assert [h.diverged_ for h in heads] == [1, None] and len(heads[1].history_) == 2
    result = invoke("baselines", cache, "--out", tmp_path / "b", "--models", "knn", "--k", "5000", "--attrs", "Male")
    assert result.exit_code == 1 and result.output.startswith("Error: knn: --k 5000 needs at least that many train "
                                                              "rows labelled for each attribute; Male has "), result.output
