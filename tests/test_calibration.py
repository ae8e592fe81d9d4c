"""Calibration of every run: ECE (15 bins, sklearn's binning) and the Brier score in metrics.json,
the reliability diagram, `compare --metric ece` ranking the lowest first; `--calibrate temperature`
fitted on val, kept in the model, applied by evaluate, predict and export."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.special import expit
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss

import cli
from cache.errors import UsageError
from harness.faults import run_cli
from heads.kinds.calibration import fit_temperatures, logit
from heads.metrics import BY_NAME, attribute_metrics, calibration_bins, expected_calibration_error
from heads.run.compare import leaderboard
from heads.run.evaluate import evaluate_run, split_predictions
from heads.run.fit import run_kinds, train_heads
from heads.run.task import TaskSpec
from tests.conftest import assert_served_from_images_as_evaluated


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 200).flatmap(lambda n: st.tuples(
    arrays(np.int64, n, elements=st.integers(0, 1)),
    arrays(np.float64, n, elements=st.sampled_from([0.0, 1 / 15, 0.5, 14 / 15, 1.0]) | st.floats(0, 1)))))
def test_bins_are_sklearns_calibration_curve(case):
    y, p = case
    rows, mean_p, rate = calibration_bins(y, p)
    expected_rate, expected_p = calibration_curve(y, p, n_bins=15, strategy="uniform")
    filled = rows > 0
    assert rows.sum() == len(y) and len(rows) == 15
    np.testing.assert_allclose(rate[filled], expected_rate)
    np.testing.assert_allclose(mean_p[filled], expected_p)
    ece = expected_calibration_error(y, p)
    assert ece == pytest.approx(np.sum(rows[filled] / len(y) * np.abs(expected_rate - expected_p)))
    assert 0 <= ece <= 1


def test_ece_and_brier_values():
    y = np.array([1] * 7 + [0] * 3)
    calibrated = attribute_metrics(y, np.full(10, 0.7), 0.5, 1)
    assert calibrated["ece"] == pytest.approx(0.0) and calibrated["brier"] == pytest.approx(0.21)
    over = attribute_metrics(np.ones(10, int), np.full(10, 0.7), 0.5, 1)  # says 0.7, is 1.0
    assert over["ece"] == pytest.approx(0.3) and over["brier"] == pytest.approx(brier_score_loss(np.ones(10), [0.7] * 10))
    assert BY_NAME["ece"].higher_is_better is False and BY_NAME["brier"].higher_is_better is False


def test_compare_ranks_lower_calibration_error_first(cache, tmp_path):
    train_heads(TaskSpec(cache, "Male,Smiling"), tmp_path / "runs" / "head", epochs=3)
    run_kinds(TaskSpec(cache, "Male,Smiling"), tmp_path / "runs" / "base", ["logreg", "majority"], plots=False)
    runs = [tmp_path / "runs" / "head", tmp_path / "runs" / "base"]
    for metric in ("ece", "brier"):
        means = list(leaderboard(runs, "test", [metric, "accuracy"])[("mean", metric)])
        assert means == sorted(means) and len(means) == 3 and means[0] < means[-1]
    accuracy = list(leaderboard(runs, "test", ["accuracy"])[("mean", "accuracy")])
    assert accuracy == sorted(accuracy, reverse=True)
    result = CliRunner().invoke(cli.main, ["compare", *map(str, runs), "--metric", "ece", "--split", "test"])
    assert result.exit_code == 0 and "ece" in result.output, result.output
    saved = json.loads((tmp_path / "runs" / "head" / "metrics.json").read_text())
    assert 0 <= saved["attributes"]["Male"]["test"]["ece"] <= 1
    assert (tmp_path / "runs" / "head" / "reliability.png").stat().st_size > 5000


def test_compare_names_a_run_scored_before_a_metric_existed(cache, tmp_path):
    run_kinds(TaskSpec(cache, "Male"), tmp_path / "base", ["logreg"], plots=False)
    path = tmp_path / "base" / "logreg" / "metrics.json"
    old = json.loads(path.read_text())
    for by_split in old["attributes"]["Male"].values():
        del by_split["ece"]
    path.write_text(json.dumps(old))
    result = CliRunner().invoke(cli.main, ["compare", str(tmp_path / "base"), "--metric", "ece"])
    assert result.exit_code == 1 and "has no ece (scored before ece was a metric)" in result.output


def test_fit_temperatures_recovers_a_planted_temperature():
    rng = np.random.default_rng(0)
    z = rng.normal(0, 2.5, (20000, 2))
    y = (rng.random(z.shape) < 1 / (1 + np.exp(-z))).astype(int)
    overconfident, underconfident = 1 / (1 + np.exp(-2 * z[:, :1])), 1 / (1 + np.exp(-0.5 * z[:, 1:]))
    t = fit_temperatures(y, np.concatenate([overconfident, underconfident], axis=1))
    assert t[0] == pytest.approx(2.0, rel=0.06) and t[1] == pytest.approx(0.5, rel=0.06)


def test_temperature_is_fitted_on_val_and_kept_in_the_model(cache, tmp_path):
    plain = train_heads(TaskSpec(cache, "Male,Smiling"), tmp_path / "plain", epochs=4, seed=3, plots=False)
    calibrated = train_heads(TaskSpec(cache, "Male,Smiling"), tmp_path / "cal", epochs=4, seed=3,
                             calibrate="temperature", plots=False)
    record = calibrated["run"]["calibration"]
    assert record["method"] == "temperature" and set(record["temperature"]) == {"Male", "Smiling"}
    for name in ("Male", "Smiling"):
        assert record["val_bce_after"][name] <= record["val_bce_before"][name] + 1e-9
        assert record["temperature"][name] != pytest.approx(1.0, abs=1e-3)
        for split in ("val", "test"):  # a monotone map: rankings kept, decisions at 0.5 kept (to a row at 0.5)
            before, after = plain["attributes"][name][split], calibrated["attributes"][name][split]
            assert after["roc_auc"] == pytest.approx(before["roc_auc"], abs=1e-6)
            assert abs(after["accuracy"] - before["accuracy"]) <= 1 / before["n"] + 1e-9
        assert calibrated["attributes"][name]["val"]["brier"] <= plain["attributes"][name]["val"]["brier"] + 1e-3
    assert calibrated["run"]["settings"]["calibrate"] == "temperature"
    again = evaluate_run(tmp_path / "cal", "test")["attributes"]
    for name in ("Male", "Smiling"):
        assert again[name]["test"]["ece"] == pytest.approx(calibrated["attributes"][name]["test"]["ece"], abs=1e-6)


def test_a_calibrated_head_loads_in_a_fresh_process_and_serves_calibrated(fault_setup, tmp_path):
    run = tmp_path / "cal"
    result = CliRunner().invoke(cli.main, ["train-heads", str(fault_setup.reference_path), "--out", str(run),
                                           "--attrs", "Male,Smiling", "--max-epochs", "6", "--calibrate",
                                           "temperature", "--features", "standardize", "--no-plots"])
    assert result.exit_code == 0, result.output
    fresh = run_cli("evaluate", run, "--split", "test", "--json")  # the Temperature layer registered before loading
    assert fresh.returncode == 0, fresh.stderr[-1500:]
    saved = json.loads((run / "metrics.json").read_text())["attributes"]
    assert json.loads(fresh.stdout)["attributes"]["Male"]["test"]["ece"] == pytest.approx(
        saved["Male"]["test"]["ece"], abs=1e-6)
    # a temperature T scales the backbone's last-bit differences between graphs by up to 1 / T
    temperatures = np.array(list(json.loads((run / "metrics.json").read_text())["run"]["calibration"]
                                 ["temperature"].values()))
    atol = 2e-3 / min(1.0, temperatures.min())
    assert_served_from_images_as_evaluated(run, fault_setup, tmp_path, n=4, atol=atol)
    # the check can fail: the same rows without the temperatures are further off than atol
    calibrated = split_predictions(run, "test")[3][:4]
    uncalibrated = expit(logit(calibrated) * temperatures)
    assert np.abs(calibrated - uncalibrated).max() > 3 * atol


def test_calibrate_needs_a_val_split_and_a_known_method(cache, tmp_path):
    with pytest.raises(UsageError, match="--calibrate 'platt': use none, temperature"):
        train_heads(TaskSpec(cache, "Male"), tmp_path / "x", epochs=1, calibrate="platt")
    result = CliRunner().invoke(cli.main, ["train-heads", str(cache), "--out", str(tmp_path / "y"), "--calibrate", "x"])
    assert result.exit_code == 2 and "Invalid value for '--calibrate'" in result.output
