"""`audit`: out-of-fold probabilities that never saw their row's label, cleanlab's label issues
written as cleanlab finds them, near-duplicates found by faiss, the page, and planted truth found:
a 2,000-image generated sample with 10 % of its labels flipped and 60 images copied into other
splits (`make-sample --label-noise --duplicates`), embedded by the fixed pixel backbone
(harness.caches.pixel_backbone: 4x4 block means of 64x64 RGB, 768-d)."""

import json
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

import cli
from harness.caches import pixel_backbone, planted_cache
from heads.audit.duplicates import Centred, exact_neighbours, find_duplicates
from heads.audit.folds import Rows, out_of_fold
from heads.look.tables import audit_lines

PLANTED_N = 2000
SEEN = ("Male", "Young", "Smiling")
CHROMIUM = Path("/usr/bin/chromium")


def invoke(*args):
    return CliRunner().invoke(cli.main, [str(a) for a in args])


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """(data folder, cache) of a generated sample with planted label flips and duplicates."""
    root = tmp_path_factory.mktemp("audit")
    result = invoke("make-sample", "--out", root / "data", "--n", PLANTED_N, "--label-noise", 0.1, "--duplicates", 60)
    assert result.exit_code == 0, result.output
    result = invoke("embed", "--data-dir", root / "data", "--out", root / "c.h5", "--model",
                    pixel_backbone(root / "pixels.keras"), "--layer", "embedding", "--value-range", "0,1",
                    "--image-size", 64)
    assert result.exit_code == 0, result.output
    return root / "data", root / "c.h5"


@pytest.fixture(scope="module")
def audited(planted, tmp_path_factory):
    out = tmp_path_factory.mktemp("audited") / "a"
    result = invoke("audit", planted[1], "--out", out, "--attrs", ",".join(SEEN))
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
    assert "barely sees" not in output and "60 pairs in 60 groups, 60 across train and val/test" in output


def test_a_weak_attribute_gets_a_note():
    oof = {"accuracy": 0.6, "majority_accuracy": 0.55, "roc_auc": 0.6}
    summary = {"rows": 10, "splits": ["train"], "settings": {"kind": "logreg", "folds": 5, "settings": {}},
               "seconds": {"folds": 1.0}, "labels": {
                   "Bald": {"rows": 10, "flagged": 1, "flagged_rate": 0.1, "noise_rate": 0.1, "out_of_fold": oof},
                   "Male": {"rows": 10, "flagged": 1, "flagged_rate": 0.1, "noise_rate": 0.1,
                            "out_of_fold": {**oof, "roc_auc": 0.9}}}}
    lines = audit_lines(summary, 0.75)
    assert lines[-1].startswith("note: the out-of-fold head barely sees Bald (ROC AUC below 0.75)")


def test_label_issues_are_cleanlabs_on_the_written_probabilities(audited):
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores
    out, _ = audited
    oof = pd.read_csv(out / "out_of_fold.csv", dtype={"image_id": str})
    issues = pd.read_csv(out / "label_issues.csv", dtype={"image_id": str})
    summary = json.loads((out / "summary.json").read_text())
    for name in SEEN:
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
    before = features.copy()
    probabilities, fold = out_of_fold(rows, "logreg", {"C": 1e4}, folds=5)
    assert np.array_equal(rows.features, before)  # rearranged in place for each fold, then restored
    assert ((probabilities >= 0.5) == labels).mean() < 0.6  # chance, as it must be out of fold
    from sklearn.linear_model import LogisticRegression
    assert LogisticRegression(C=1e4, max_iter=2000).fit(features, labels[:, 0]).score(features, labels[:, 0]) == 1.0
    assert np.bincount(fold).tolist() == [60] * 5


def test_each_fold_trains_on_exactly_its_rows_and_a_failure_restores_the_features(monkeypatch):
    import heads.audit.folds as folds_module
    rng = np.random.default_rng(3)
    features = rng.standard_normal((200, 8)).astype(np.float32)
    features[:, 0] = np.arange(200)  # each row names itself
    labels = np.stack([np.arange(200) % 2, (np.arange(200) // 2) % 2], axis=1).astype(np.uint8)
    rows = Rows(features, labels, ("A", "B"), [f"{i}.jpg" for i in range(200)], np.array(["train"] * 200, object))
    before, seen = features.copy(), []

    class Recording:
        @classmethod
        def from_settings(cls, settings):
            return cls()

        def fit(self, train, val):
            seen.append((train.features[:, 0].astype(int), val.features[:, 0].astype(int)))
            assert np.array_equal(train.labels, labels[train.features[:, 0].astype(int)])
            if len(seen) == 3:
                raise RuntimeError("fold 3 fails")

        def predict_proba(self, x):
            return np.zeros((len(x), 2), np.float32)

    monkeypatch.setattr(folds_module, "head_class", lambda kind: Recording)
    with pytest.raises(RuntimeError, match="fold 3 fails"):
        out_of_fold(rows, "recording", {}, folds=5)
    assert np.array_equal(rows.features, before)
    fold = folds_module.fold_of(rows, 5, 0)
    for k, (trained, val) in enumerate(seen):
        assert set(trained) | set(val) == set(np.flatnonzero(fold != k)) and not set(trained) & set(val)
        assert len(val) == 16


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


@pytest.mark.parametrize("args, code, message", [
    (["--attrs", "Bald"], 1, "attribute Bald has 3 rows of class 1 in the audited splits; 5-fold cross-fitting "
                             "needs at least 5 (use fewer --folds, or leave Bald out of --attrs)"),
    (["--split", "train,tset"], 2, "--split train,tset: give one or more of train, val, test, each once"),
    (["--folds", "1"], 2, "Invalid value for '--folds'"),
    (["--kind", "logreg", "--head", "linear"], 2, "logreg does not take --head"),
    (["--kind", "nope"], 2, "unknown head kind 'nope'"),
    (["--kind", "logreg_cv"], 2, "unknown head kind 'logreg_cv' (did you mean logreg-cv?)"),
    (["--attrs", "Mael"], 2, "unknown attribute 'Mael' (did you mean Male?)"),
])
def test_bad_audit_options_are_one_line(rare, tmp_path, args, code, message):
    result = invoke("audit", rare, "--out", tmp_path / "a", *args)
    assert result.exit_code == code and message in result.output and "Traceback" not in result.output, result.output
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


def test_every_planted_duplicate_is_found_with_no_false_pair(planted, audited):
    data, _ = planted
    out, _ = audited
    planted_pairs = pd.read_csv(data / "planted_duplicates.csv", dtype=str)
    pairs = pd.read_csv(out / "duplicates.csv", dtype={"image_id": str, "duplicate_id": str}, keep_default_na=False)
    found = {frozenset(p) for p in zip(pairs.image_id, pairs.duplicate_id)}
    assert found == {frozenset(p) for p in zip(planted_pairs.image_id, planted_pairs.source_id)}
    assert pairs.leak.all() and (pairs.split == "train").all()  # image_id: the train member, the row --exclude drops
    assert (pairs.labels_disagree == "").all() and pairs.group.nunique() == 60
    reencoded = set(planted_pairs[planted_pairs["copy"] == "reencoded"].image_id)
    low = pairs[pairs.image_id.isin(reencoded) | pairs.duplicate_id.isin(reencoded)].similarity
    assert len(low) == 30 and low.max() < 0.9999  # the re-encoded crops are near, not exact, copies
    d = json.loads((out / "summary.json").read_text())["duplicates"]
    assert (d["search"], d["pairs"], d["groups"], d["leak_groups"], d["rows_in_groups"]) == ("exact", 60, 60, 60, 120)
    assert sum(d["nearest_similarity"]["counts"]) == PLANTED_N + 60


def test_ivf_search_finds_the_same_pairs_and_reports_its_recall(planted, tmp_path):
    result = invoke("audit", planted[1], "--out", tmp_path / "a", "--attrs", "Male", "--kind", "majority",
                    "--dup-search", "ivf", "--dup-probes", 32)
    assert result.exit_code == 0, result.output
    d = json.loads((tmp_path / "a" / "summary.json").read_text())["duplicates"]
    assert d["search"] == "ivf" and d["recall_queries"] == 1000 and d["recall_at_1"] >= 0.9, d
    assert d["pairs"] == 60 and "recall@1" in result.output


def test_exclude_takes_the_train_member_of_each_duplicate_pair(planted, audited, tmp_path):
    out, _ = audited
    result = invoke("baselines", planted[1], "--out", tmp_path / "b", "--models", "majority",
                    "--exclude", out / "duplicates.csv", "--no-plots")
    assert result.exit_code == 0, result.output
    excluded = json.loads((tmp_path / "b" / "majority" / "config.json").read_text())["excluded"]
    assert excluded["train_rows"] == 60 and excluded["ids"] == 60


def test_exact_neighbours_are_numpys_on_centred_rows():
    rng = np.random.default_rng(1)
    features = (rng.random((300, 24)) * 3).astype(np.float16)  # all positive, like pooled ReLU features
    similarity, index = exact_neighbours(Centred(features), 4)
    x = features.astype(np.float64) - features.astype(np.float64).mean(axis=0)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    cosines = x @ x.T
    expected = np.argsort(-cosines, axis=1, kind="stable")[:, :4]
    np.testing.assert_allclose(similarity, np.take_along_axis(cosines, expected, axis=1), atol=1e-5)
    assert (index == expected).mean() > 0.99  # the same neighbours, up to float32 near-ties


def test_a_group_of_copies_counts_once_and_needs_enough_neighbours():
    rng = np.random.default_rng(2)
    features = rng.standard_normal((50, 16)).astype(np.float32)
    features[[10, 20, 30]] = features[5]  # rows 5, 10, 20, 30: four copies of one vector
    rows = Rows(features, np.zeros((50, 1), np.uint8), ("A",), [f"{i:03d}.jpg" for i in range(50)],
                np.array(["train"] * 50, object))
    pairs, summary = find_duplicates(rows, threshold=0.99, neighbours=3)
    assert len(pairs) == 6 and summary["groups"] == 1 and summary["rows_in_groups"] == 4
    members = {"005.jpg", "010.jpg", "020.jpg", "030.jpg"}
    assert set(pairs.image_id) | set(pairs.duplicate_id) == members
    pairs, summary = find_duplicates(rows, threshold=0.99, neighbours=1)  # mutual nearest: ties leave some unpaired
    assert summary["groups"] >= 1 and summary["pairs"] < 6


@pytest.mark.parametrize("value", ["0", "1.5", "-0.2"])
def test_a_threshold_outside_0_1_is_one_line(rare, tmp_path, value):
    result = invoke("audit", rare, "--out", tmp_path / "a", "--dup-threshold", value)
    assert result.exit_code == 2 and "--dup-threshold" in result.output and "0<x<=1" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "a").exists()


def test_the_page_without_its_images_says_so(planted, audited, tmp_path):
    from heads.look.audit_page import build_audit_page
    out, _ = audited
    copy = tmp_path / "a"
    copy.mkdir()
    for name in ("summary.json", "label_issues.csv", "duplicates.csv"):
        (copy / name).write_bytes((out / name).read_bytes())
    with pytest.raises(Exception, match="not a folder"):
        build_audit_page(copy, images=tmp_path / "nowhere")
    page = build_audit_page(copy, images=tmp_path).read_text()  # a folder without the images
    assert "could not be read" in page and "<h2>Duplicate pairs</h2>" in page


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (make browser installs it)")
def test_audit_page_renders_in_headless_chromium(audited):
    from playwright.sync_api import sync_playwright
    out, _ = audited
    summary = json.loads((out / "summary.json").read_text())
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        page = browser.new_page()
        errors = []
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto((out / "audit.html").as_uri())
        page.wait_for_load_state("load")
        rows = page.eval_on_selector_all("#labels tbody tr", "rows => rows.map(r => Array.from(r.cells, c => c.textContent))")
        widths = page.eval_on_selector_all("img", "images => images.map(i => i.complete ? i.naturalWidth : 0)")
        issue_figures = page.eval_on_selector_all(".gallery.issues figure", "f => f.length")
        pairs = page.eval_on_selector_all(".gallery.pairs .pair", "p => p.map(x => x.className)")
        browser.close()
    assert [r[0] for r in rows] == list(SEEN) and rows[0][3] == str(summary["labels"]["Male"]["flagged"])
    assert issue_figures == 3 * 24 and len(pairs) == 24 and all("leak" in c for c in pairs)
    assert len(widths) == 1 + 3 * 24 + 2 * 24 and all(w > 0 for w in widths), widths
    assert errors == []


def test_no_duplicates_skips_the_search_and_fused_caches_are_audited_side_by_side(planted, tmp_path):
    _, cache = planted
    twin = tmp_path / "twin.h5"
    twin.write_bytes(cache.read_bytes())
    out = tmp_path / "a"
    result = invoke("audit", cache, twin, "--out", out, "--attrs", "Male", "--kind", "majority", "--no-duplicates")
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["duplicates"] is None and not (out / "duplicates.csv").exists()
    assert summary["caches"] == [str(cache.resolve()), str(twin.resolve())] and "near-duplicates" not in result.output
    page = (out / "audit.html").read_text()
    assert "Near-duplicates" not in page and "Duplicate pairs" not in page and " + " in page


def test_rows_with_nan_features_stop_the_audit_or_are_left_out_and_counted(planted, tmp_path):
    _, cache = planted
    damaged = tmp_path / "nan.h5"
    damaged.write_bytes(cache.read_bytes())
    with h5py.File(damaged, "r+") as f:
        partition = f["partition"][:]
        row = int(np.flatnonzero(partition == 1)[3])  # a val row
        features = f["features"][row]
        features[0] = np.nan
        f["features"][row] = features
        lost = f["image_id"][row].decode()
    result = invoke("audit", damaged, "--out", tmp_path / "a", "--attrs", "Male", "--kind", "majority")
    assert result.exit_code == 1 and "NaN" in result.output and "Traceback" not in result.output, result.output
    result = invoke("audit", damaged, "--out", tmp_path / "b", "--attrs", "Male", "--kind", "majority",
                    "--drop-nonfinite")
    assert result.exit_code == 0 and "left out 1 row whose" in result.output, result.output
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert summary["rows"] == PLANTED_N + 60 - 1 and summary["excluded_nonfinite_rows"] == {"train": 0, "val": 1, "test": 0}
    oof = pd.read_csv(tmp_path / "b" / "out_of_fold.csv", dtype={"image_id": str})
    given = pd.read_csv(planted[0] / "list_attr_celeba.csv", dtype={"image_id": str}).set_index("image_id").Male
    assert lost not in set(oof.image_id) and len(oof) == PLANTED_N + 59
    assert (oof.Male_label.to_numpy() == (given.loc[oof.image_id].to_numpy() == 1)).all()  # labels stay with their rows


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (make browser installs it)")
def test_the_review_loop_marks_downloads_corrections_and_trains_with_them(planted, audited, tmp_path):
    """Mark three of Male's suspects (a click, then keys), reload (the marks stay), download
    corrections.csv, and train with it as a labels overlay: exactly the marked labels change."""
    from playwright.sync_api import sync_playwright
    _, cache = planted
    out, _ = audited
    issues = pd.read_csv(out / "label_issues.csv", dtype={"image_id": str})
    given = issues[issues.attribute == "Male"].head(3)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        context = browser.new_context(accept_downloads=True)
        page = context.new_page()
        errors = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto((out / "audit.html").as_uri())
        first = page.locator(".suspect").nth(0)
        first.locator("button.flip").click()  # selects it and marks it flip
        page.keyboard.press("ArrowRight")
        page.keyboard.press("u")  # the second: unsure; the selection moves on to the third
        page.keyboard.press("k")
        page.reload()
        counted = page.text_content("#review-count")
        marks = page.eval_on_selector_all(".suspect", "s => s.slice(0, 4).map(x => x.dataset.mark || '')")
        with page.expect_download() as download:
            page.click("#review-download")
        download.value.save_as(tmp_path / "corrections.csv")
        browser.close()
    assert errors == [] and counted == "3 marked: 1 keep, 1 flip, 1 unsure" and marks == ["flip", "unsure", "keep", ""]
    corrections = pd.read_csv(tmp_path / "corrections.csv", dtype=str, keep_default_na=False)
    assert list(corrections.columns) == ["image_id", "Male"]
    assert corrections.image_id.tolist() == given.image_id.tolist()
    first_given, third_given = int(given.given_label.iloc[0]), int(given.given_label.iloc[2])
    assert corrections.Male.tolist() == [str(1 - first_given), "?", str(third_given)]
    result = invoke("baselines", cache, "--out", tmp_path / "r", "--models", "majority", "--attrs", "Male,Smiling",
                    "--labels", tmp_path / "corrections.csv", "--no-plots")
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "r" / "majority" / "config.json").read_text())["labels"]
    assert record["attributes"] == {"Male": {"set": 2, "changed": 2, "unknown": 1, "new": False}}


def test_no_duplicate_pair_says_where_the_similarities_lie(cache, tmp_path):
    result = invoke("audit", cache, "--out", tmp_path / "a", "--kind", "logreg", "--attrs", "Male", "--folds", "2",
                    "--dup-threshold", "0.9999")
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())["duplicates"]
    assert summary["pairs"] == 0
    quantiles = summary["nearest_similarity"]["quantiles"]
    assert (f"note: no pair reaches --dup-threshold 0.9999; the nearest neighbours' similarity is "
            f"{quantiles['0.5']:.3f} at the median and {quantiles['0.999']:.3f} at the 99.9th percentile") in result.output
