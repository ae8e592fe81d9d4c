"""Who does the head fail? Per-group metrics against a direct scikit-learn computation, empty groups,
worst-group ranking, and DFR repairing a planted spurious correlation."""

import json

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from sklearn import metrics as skm

import cli
from cache import layout
from cache.writer import CacheWriter, create_cache
from harness.caches import planted_cache
from heads.run.compare import leaderboard
from heads.run.evaluate import evaluate_run
from heads.run.fit import run_kinds, train_heads
from heads.run.task import TaskSpec


def invoke(*args):
    return CliRunner().invoke(cli.main, [str(a) for a in args])


def spurious_cache(path, rate=0.95, seed=0, sizes=(3000, 1500, 1500), dim=12):
    """Blond_Hair (target) and Male (group): in train Blond_Hair == Male for `rate` of the rows, in
    val/test they are independent. Feature 0 carries Blond_Hair weakly, feature 1 Male strongly."""
    rng = np.random.default_rng(seed)
    partition = np.concatenate([np.full(n, p) for p, n in enumerate(sizes)])
    male = rng.random(len(partition)) < 0.5
    agree = rng.random(len(partition)) < np.where(partition == 0, rate, 0.5)
    blond = np.where(agree, male, ~male)
    x = rng.standard_normal((len(partition), dim)).astype(np.float32)
    x[:, 0] += 1.2 * (2 * blond - 1)
    x[:, 1] = 3.0 * (2 * male - 1) + 0.5 * rng.standard_normal(len(partition))
    labels = np.stack([blond, male], axis=1).astype(np.uint8)
    create_cache(path, image_ids=[f"{i:06d}.jpg" for i in range(len(partition))], attribute_names=["Blond_Hair", "Male"],
                 labels=labels, partition=partition, feature_dim=dim, feature_dtype="float32",
                 settings={"backbone": {"model": "planted"}, "preprocessing": {}, "dataset_fingerprint": f"sp{seed}",
                           "sources": {}})
    with CacheWriter(path) as writer:
        writer.write_rows(0, x, np.full(len(x), layout.STATUS_OK), [""] * len(x))
    return x, labels, partition


def test_group_metrics_equal_a_direct_computation(cache, tmp_path):
    metrics = run_kinds(TaskSpec(cache, "Male,Smiling", groups="Young"), tmp_path / "b", ["logreg"], plots=False)["logreg"]
    with h5py.File(cache, "r") as f:
        ok = f["status"][:] == layout.STATUS_OK
        test = (f["partition"][:] == 2) & ok
        x, y = f["features"][:][test], f["labels"][:][test]
    from heads.run.rundir import Run
    p = Run(tmp_path / "b" / "logreg").probabilities(x)
    section = metrics["groups"]
    assert section["by"] == ["Young"]
    for j, (name, young) in enumerate([("Male", 2), ("Smiling", 2)]):
        result = section["attributes"][name]["test"]
        expected = []
        for target in (0, 1):
            for value in (0, 1):
                member = (y[:, j] == target) & (y[:, 2] == value)
                entry = next(g for g in result["groups"] if g[name] == target and g["Young"] == value)
                assert entry["n"] == member.sum()
                if member.any():
                    accuracy = skm.accuracy_score(y[member, j], p[member, j] >= 0.5)
                    assert entry["accuracy"] == pytest.approx(accuracy)
                    expected.append(accuracy)
        assert result["worst_group_accuracy"] == pytest.approx(min(expected))
        assert result["mean_group_accuracy"] == pytest.approx(np.mean(expected))
    again = evaluate_run(tmp_path / "b" / "logreg", "test")  # the run's groups by default
    recomputed, saved = again["groups"]["attributes"]["Male"]["test"], section["attributes"]["Male"]["test"]
    assert recomputed["worst_group_accuracy"] == pytest.approx(saved["worst_group_accuracy"])
    assert [g["n"] for g in recomputed["groups"]] == [g["n"] for g in saved["groups"]]


def test_empty_groups_are_reported_not_dropped(cache, tmp_path):
    path = tmp_path / "c.h5"
    planted_cache(path)
    with h5py.File(path, "r+") as f:
        labels = f["labels"][:]
        labels[f["partition"][:] == 2, 3] = 0  # nobody is Bald in test
        f["labels"][...] = labels
    train_heads(TaskSpec(path, "Male"), tmp_path / "h", epochs=2, plots=False)
    result = evaluate_run(tmp_path / "h", "test", groups="Bald")
    groups = result["groups"]["attributes"]["Male"]["test"]["groups"]
    assert len(groups) == 4
    empty = [g for g in groups if g["Bald"] == 1]
    assert all(g["n"] == 0 and g["accuracy"] is None for g in empty)
    full = [g["accuracy"] for g in groups if g["n"]]
    assert result["groups"]["attributes"]["Male"]["test"]["worst_group_accuracy"] == pytest.approx(min(full))
    cli_result = invoke("evaluate", tmp_path / "h", "--groups", "Bald")
    assert cli_result.exit_code == 0 and "Male=1, Bald=1" in cli_result.output and "n       0" in cli_result.output


def test_bad_group_names_give_did_you_mean(cache, tmp_path):
    for args in (["train-heads", cache, "--out", tmp_path / "r"], ["baselines", cache, "--out", tmp_path / "b"]):
        result = invoke(*args, "--groups", "Mael")
        assert result.exit_code == 2 and "unknown attribute 'Mael' (did you mean Male?)" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_dfr_raises_worst_group_accuracy_far_above_a_plain_head(tmp_path):
    spurious_cache(tmp_path / "sp.h5")
    erm = run_kinds(TaskSpec(tmp_path / "sp.h5", "Blond_Hair", groups="Male"), tmp_path / "runs", ["logreg", "dfr"], plots=False)
    plain = erm["logreg"]["groups"]["attributes"]["Blond_Hair"]["test"]["worst_group_accuracy"]
    dfr = erm["dfr"]["groups"]["attributes"]["Blond_Hair"]["test"]["worst_group_accuracy"]
    assert plain < 0.6 and dfr > plain + 0.2, (plain, dfr)
    assert erm["dfr"]["run"]["selection"]["dfr_on"] == "val" and erm["dfr"]["run"]["selection"]["refits"] == 20
    train_heads(TaskSpec(tmp_path / "sp.h5", "Blond_Hair"), tmp_path / "runs" / "head", epochs=5, plots=False)  # no --groups
    table = leaderboard([tmp_path / "runs"], "test", ["worst_group_accuracy", "accuracy"], groups="Male")
    assert table.index[0].endswith("dfr")
    result = invoke("compare", tmp_path / "runs", "--split", "test", "--metric", "worst_group_accuracy",
                    "--groups", "Male")
    assert result.exit_code == 0 and "worst_group_accuracy" in result.output
    on_train = run_kinds(TaskSpec(tmp_path / "sp.h5", "Blond_Hair", groups="Male"), tmp_path / "tr", ["dfr"], dfr_on="train", plots=False)
    assert on_train["dfr"]["run"]["selection"]["refits"] == 10
    assert on_train["dfr"]["groups"]["attributes"]["Blond_Hair"]["test"]["worst_group_accuracy"] > plain


def test_dfr_without_groups_is_refused(cache, tmp_path):
    result = invoke("baselines", cache, "--out", tmp_path / "b", "--models", "dfr", "--attrs", "Male")
    assert result.exit_code == 1 and "dfr reweights by group: give --groups" in result.stderr


def test_compare_worst_group_needs_group_metrics(cache, tmp_path):
    run_kinds(TaskSpec(cache, "Male"), tmp_path / "b", ["majority"], plots=False)
    result = invoke("compare", tmp_path / "b", "--metric", "worst_group_accuracy")
    assert result.exit_code == 1 and "has no group metrics" in result.stderr
    saved = json.loads((tmp_path / "b" / "majority" / "metrics.json").read_text())
    assert "groups" not in saved


def test_make_sample_plants_the_correlation_in_train_only(tmp_path):
    import pandas as pd
    result = invoke("make-sample", "--out", tmp_path / "s", "--n", "300", "--spurious", "Blond_Hair:Male:0.95")
    assert result.exit_code == 0, result.output
    labels = pd.read_csv(tmp_path / "s" / "list_attr_celeba.csv")
    partition = pd.read_csv(tmp_path / "s" / "list_eval_partition.csv")["partition"]
    agree = labels["Blond_Hair"] == labels["Male"]
    assert agree[partition == 0].mean() > 0.9 and agree[partition != 0].mean() < 0.8
    for bad, message in [("Blond_Hair:Mael:0.9", "did you mean Male?"), ("Blond_Hair:Male", "TARGET:GROUP:RATE"),
                         ("Male:Male:0.5", "must differ"), ("Blond_Hair:Male:2", "RATE must be a number in [0, 1]")]:
        result = invoke("make-sample", "--out", tmp_path / "x", "--spurious", bad)
        assert result.exit_code == 2 and message in result.output, (bad, result.output)
