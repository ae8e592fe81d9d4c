"""Calibration of every run: ECE (15 bins, sklearn's binning) and the Brier score in metrics.json,
the reliability diagram, and `compare --metric ece` ranking the lowest first."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss

import cli
from heads.metrics import BY_NAME, attribute_metrics, calibration_bins, expected_calibration_error
from heads.run.compare import leaderboard
from heads.run.fit import run_kinds, train_heads
from heads.run.task import TaskSpec


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
    run_kinds(TaskSpec(cache, "Male,Smiling"), tmp_path / "runs" / "base", ["logreg", "majority"])
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
    run_kinds(TaskSpec(cache, "Male"), tmp_path / "base", ["logreg"])
    path = tmp_path / "base" / "logreg" / "metrics.json"
    old = json.loads(path.read_text())
    for by_split in old["attributes"]["Male"].values():
        del by_split["ece"]
    path.write_text(json.dumps(old))
    result = CliRunner().invoke(cli.main, ["compare", str(tmp_path / "base"), "--metric", "ece"])
    assert result.exit_code == 1 and "has no ece (scored before ece was a metric)" in result.output
