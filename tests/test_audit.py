"""`audit`: out-of-fold probabilities that never saw their row's label, cleanlab's label issues
written as cleanlab finds them, and planted truth found: a 6,000-image generated sample with 10 %
of its labels flipped (`make-sample --label-noise`), embedded by a tiny conv backbone."""

import json

import h5py
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

import cli
from harness.caches import planted_cache
from heads.audit.folds import Rows, out_of_fold

PLANTED_N = 6000
SEEN = ("Male", "Young")  # the cues the tiny backbone's pooled features carry (its stride-2 conv misses Smiling's stripes)


def invoke(*args):
    return CliRunner().invoke(cli.main, [str(a) for a in args])


@pytest.fixture(scope="module")
def planted(fault_setup, tmp_path_factory):
    """(data folder, cache) of a generated sample with planted label flips and duplicates."""
    root = tmp_path_factory.mktemp("audit")
    result = invoke("make-sample", "--out", root / "data", "--n", PLANTED_N, "--label-noise", 0.1, "--duplicates", 60)
    assert result.exit_code == 0, result.output
    result = invoke("embed", "--data-dir", root / "data", "--out", root / "c.h5", "--model", fault_setup.model,
                    "--value-range", "0,1", "--image-size", 32)
    assert result.exit_code == 0, result.output
    return root / "data", root / "c.h5"


@pytest.fixture(scope="module")
def audited(planted, tmp_path_factory):
    out = tmp_path_factory.mktemp("audited") / "a"
    result = invoke("audit", planted[1], "--out", out, "--attrs", ",".join(SEEN + ("Smiling",)))
    assert result.exit_code == 0, result.output
    return out, result.output


def test_flags_the_planted_label_flips(planted, audited):
    data, _ = planted
    out, output = audited
    flips = pd.read_csv(data / "planted_label_flips.csv", dtype={"image_id": str})
    issues = pd.read_csv(out / "label_issues.csv", dtype={"image_id": str})
    copies = set(pd.read_csv(data / "planted_duplicates.csv", dtype={"image_id": str}).image_id)
    for name in SEEN:  # a copy carries its source's given labels, flipped or not: it counts as planted too
        sources = pd.read_csv(data / "planted_duplicates.csv", dtype=str).set_index("image_id").source_id
        planted_ids = set(flips[flips.attribute == name].image_id)
        planted_ids |= {c for c in copies if sources[c] in planted_ids}
        flagged = set(issues[issues.attribute == name].image_id)
        precision, recall = len(flagged & planted_ids) / len(flagged), len(flagged & planted_ids) / len(planted_ids)
        assert precision >= 0.8 and recall >= 0.6, (name, precision, recall)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rows"] == PLANTED_N + 60 and summary["splits"] == ["train", "val", "test"]
    for name in SEEN:
        assert 0.06 <= summary["labels"][name]["noise_rate"] <= 0.14  # cleanlab's estimate of the planted 10 %
    assert "barely sees Smiling" in output and "Male" not in output.split("barely sees")[1]


def test_label_issues_are_cleanlabs_on_the_written_probabilities(audited):
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores
    out, _ = audited
    oof = pd.read_csv(out / "out_of_fold.csv", dtype={"image_id": str})
    issues = pd.read_csv(out / "label_issues.csv", dtype={"image_id": str})
    summary = json.loads((out / "summary.json").read_text())
    for name in ("Male", "Young"):
        p = oof[f"{name}_probability"].to_numpy()
        given = oof[f"{name}_label"].to_numpy()
        pred = np.stack([1 - p, p], axis=1)
        expected = set(oof.image_id[find_label_issues(given, pred, filter_by="prune_by_noise_rate")])
        mine = issues[issues.attribute == name]
        assert set(mine.image_id) == expected and len(mine) == summary["labels"][name]["flagged"]
        assert list(mine["rank"]) == list(range(1, len(mine) + 1)) and mine.quality.is_monotonic_increasing
        quality = dict(zip(oof.image_id, get_label_quality_scores(given, pred)))
        np.testing.assert_allclose(mine.quality, [quality[i] for i in mine.image_id], rtol=1e-4)
        assert set(oof.fold) == {1, 2, 3, 4, 5}


def test_no_row_is_scored_by_a_model_that_saw_its_label():
    rng = np.random.default_rng(0)
    features = rng.standard_normal((300, 400)).astype(np.float32)  # noise: only memorising fits the labels
    labels = rng.integers(0, 2, (300, 2)).astype(np.uint8)
    rows = Rows(features, labels, ("A", "B"), [f"{i}.jpg" for i in range(300)], np.array(["train"] * 300, object))
    probabilities, fold = out_of_fold(rows, "logreg", {"C": 1e4}, folds=5)
    assert ((probabilities >= 0.5) == labels).mean() < 0.6  # chance, as it must be out of fold
    from sklearn.linear_model import LogisticRegression
    assert LogisticRegression(C=1e4, max_iter=2000).fit(features, labels[:, 0]).score(features, labels[:, 0]) == 1.0
    assert np.bincount(fold).tolist() == [60] * 5


@pytest.fixture(scope="module")
def rare(tmp_path_factory):
    """A planted cache whose Bald has 3 positive rows, all in train."""
    path = tmp_path_factory.mktemp("rare") / "c.h5"
    _, labels, _ = planted_cache(path)
    labels[:, 3] = 0
    labels[[0, 1, 2], 3] = 1
    with h5py.File(path, "r+") as f:
        f["labels"][...] = labels
    return path


@pytest.mark.parametrize("args, message", [
    (["--attrs", "Bald"], "attribute Bald has 3 row(s) of class 1 in the audited splits; 5-fold cross-fitting "
                          "needs at least 5 (use fewer --folds, or leave Bald out of --attrs)"),
    (["--split", "train,tset"], "--split train,tset: give one or more of train, val, test, each once"),
    (["--folds", "1"], "Invalid value for '--folds'"),
    (["--kind", "logreg", "--head", "linear"], "logreg does not take --head"),
    (["--kind", "nope"], "unknown head kind 'nope'"),
])
def test_bad_audit_options_are_one_line(rare, tmp_path, args, message):
    result = invoke("audit", rare, "--out", tmp_path / "a", *args)
    assert result.exit_code in (1, 2) and message in result.output and "Traceback" not in result.output, result.output
    assert not (tmp_path / "a" / "summary.json").exists()


def test_make_sample_plants_flips_and_duplicates_as_recorded(planted):
    data, _ = planted
    given = pd.read_csv(data / "list_attr_celeba.csv", dtype={"image_id": str}).set_index("image_id")
    flips = pd.read_csv(data / "planted_label_flips.csv", dtype={"image_id": str})
    assert 0.09 < len(flips) / (PLANTED_N * 40) < 0.11
    for row in flips.head(50).itertuples():
        assert given.loc[row.image_id, row.attribute] == (1 if row.given_label else -1) and row.true_label != row.given_label
    copies = pd.read_csv(data / "planted_duplicates.csv", dtype=str)
    assert len(copies) == 60 and len(given) == PLANTED_N + 60 and (copies.split != copies.source_split).all()
    partition = pd.read_csv(data / "list_eval_partition.csv", dtype={"image_id": str}).set_index("image_id").partition
    names = {0: "train", 1: "val", 2: "test"}
    for row in copies.itertuples():
        same = (data / "img_align_celeba" / row.image_id).read_bytes() == (data / "img_align_celeba" / row.source_id).read_bytes()
        assert same == (row.copy == "exact") and names[partition[row.image_id]] == row.split
        assert (given.loc[row.image_id] == given.loc[row.source_id]).all()
