"""--epochs auto (the default): train until the val loss stops improving, keep the best epoch's
weights, each head of a sweep on its own; a note when fixed epochs make few optimizer steps; and
--views augment scored on the mean of both views unless told otherwise."""

import csv
import json

import numpy as np
import pytest
from click.testing import CliRunner

import cli
from cache.units import counted
from heads.kinds.base import Data
from heads.kinds.keras_head import KerasHead
from heads.kinds.trainer import fit_together
from heads.run.task import TaskSpec
from tests.test_heads import assert_same_history


def invoke(*args):
    return CliRunner().invoke(cli.main, [str(a) for a in args])


def planted(seed=0, n=700, width=16):
    """Data whose first two features decide two labels, with label noise so the val loss turns up."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, width)).astype(np.float32)
    Y = ((X[:, :2] + 0.8 * rng.standard_normal((n, 2))) > 0).astype(np.float32)
    return Data(X[:500], Y[:500], ("A", "B")), Data(X[500:], Y[500:], ("A", "B"))


def test_auto_stops_after_patience_and_keeps_the_best_epoch():
    train, val = planted()
    head = KerasHead(head="mlp:64", dropout=0.0, lr=3e-2, batch_size=32, patience=2).fit(train, val)
    losses = [r["val_loss"] for r in head.history_]
    best = int(np.argmin(losses)) + 1
    assert head.best_epoch_ == best and len(losses) == best + 2  # stopped after 2 epochs without a better loss
    assert len(losses) < 100
    kept = head.validation_record(val)["val_loss"]  # the model holds the best epoch's weights again
    assert kept == pytest.approx(losses[best - 1], rel=1e-6)


def test_auto_stops_at_max_epochs_and_fixed_epochs_train_them_all():
    train, val = planted()
    capped = KerasHead(head="linear", dropout=0.0, lr=1e-4, max_epochs=4).fit(train, val)
    assert len(capped.history_) == 4  # a slow learner still improving: stopped by max_epochs
    fixed = KerasHead(head="linear", epochs=5).fit(train, val)
    assert len(fixed.history_) == 5 and fixed.best_epoch_ == 5
    with pytest.raises(Exception, match="val split has no rows"):
        KerasHead(head="linear").fit(train, Data(val.features[:0], val.labels[:0], ("A", "B")))


def test_heads_trained_together_stop_on_their_own_as_if_alone():
    """A sweep's heads share batches and dropout bits; each stops when it would alone."""
    train, val = planted(1)
    settings = [{"head": "mlp:32", "lr": 3e-2, "patience": 1}, {"head": "mlp:32", "lr": 1e-3, "patience": 2},
                {"head": "linear", "lr": 1e-2, "dropout": 0.5, "max_epochs": 6}]
    together = [KerasHead(batch_size=32, **s) for s in settings]
    fit_together(together, train, val)
    assert len({len(h.history_) for h in together}) > 1  # they did stop at different epochs
    for head, s in zip(together, settings):
        alone = KerasHead(batch_size=32, **s).fit(train, val)
        assert head.best_epoch_ == alone.best_epoch_
        assert_same_history(head.history_, alone.history_)
        np.testing.assert_allclose(head.predict_proba(val.features), alone.predict_proba(val.features),
                                   rtol=1e-5, atol=1e-6)


def test_the_run_records_and_shows_when_it_stopped(cache, tmp_path):
    result = invoke("train-heads", cache, "--out", tmp_path / "run", "--attrs", "Male,Smiling", "--no-plots")
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    epochs = metrics["run"]["epochs"]
    assert epochs["auto"] and 1 <= epochs["best"] <= epochs["trained"] <= 100
    assert f"trained {counted(epochs['trained'], 'epoch')}; the val loss was lowest after epoch {epochs['best']}" in result.output
    with open(tmp_path / "run" / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == epochs["trained"] and [r["epoch"] for r in rows if r["best"] == "1"] == [str(epochs["best"])]
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["settings"]["epochs"] == "auto" and config["settings"]["patience"] == 3


def test_few_optimizer_steps_get_a_note_and_bad_epochs_exit_2(cache, tmp_path):
    result = invoke("train-heads", cache, "--out", tmp_path / "run", "--attrs", "Male", "--epochs", "3", "--no-plots")
    assert result.exit_code == 0, result.output
    assert "note: 3 epochs of 599 rows at batch 128 are 15 optimizer steps" in result.stderr
    result = invoke("train-heads", cache, "--out", tmp_path / "r2", "--epochs", "soon")
    assert result.exit_code == 2 and "expected auto or a whole number" in result.output
    result = invoke("sweep", cache, "--out", tmp_path / "s", "--grid", "epochs=auto,2", "--attrs", "Male", "--no-plots")
    assert result.exit_code == 0, result.output
    assert {json.loads((tmp_path / "s" / name / "metrics.json").read_text())["run"]["epochs"]["trained"]
            for name in ("epochs=2",)} == {2}
    assert json.loads((tmp_path / "s" / "epochs=auto" / "metrics.json").read_text())["run"]["epochs"]["auto"]


def test_views_augment_scores_the_mean_of_both_views_by_default():
    assert TaskSpec("c.h5", views="augment").eval_view == "mean"
    assert TaskSpec("c.h5", views="augment", eval_view="orig").eval_view == "orig"
    assert TaskSpec("c.h5").eval_view == "orig" and TaskSpec("c.h5", views="mean").eval_view == "orig"
