"""Unknown labels (a label overlay's empty cells, NA, ?): every kind fits and scores each attribute
on its labelled rows only. Where a kind's attributes are fitted apart (scikit-learn kinds,
logreg-cv, knn-cosine), the fit equals the same kind fitted on the attribute's labelled rows
alone; the Keras heads mask their loss and learn from the labelled rows; metrics count them."""

import json

import numpy as np
import pandas as pd
import pytest

from cache.layout import UNKNOWN_LABEL
from harness.caches import PLANTED_ATTRIBUTES, planted_cache
from heads.kinds import head_class
from heads.kinds.base import Data
from heads.run.fit import run_kinds, train_heads
from heads.run.task import TaskSpec, load_task

ATTRS = ("Male", "Smiling", "Young")


@pytest.fixture(scope="module")
def partial(tmp_path_factory):
    """The planted cache and an overlay leaving Smiling unknown on 70 % and Young on 30 % of every
    split's rows (seeded), as (cache, overlay file, the overlaid labels [n, 4])."""
    folder = tmp_path_factory.mktemp("partial")
    _, labels, _ = planted_cache(folder / "c.h5")
    rng = np.random.default_rng(3)
    overlaid = labels.copy()
    overlaid[rng.random(len(labels)) < 0.7, 1] = UNKNOWN_LABEL
    overlaid[rng.random(len(labels)) < 0.3, 2] = UNKNOWN_LABEL
    table = pd.DataFrame({"image_id": [f"{i:06d}.jpg" for i in range(len(labels))]})
    for j, name in enumerate(PLANTED_ATTRIBUTES[:3]):
        table[name] = [("?" if v == UNKNOWN_LABEL else str(v)) for v in overlaid[:, j]]
    table.to_csv(folder / "partial.csv", index=False)
    return folder / "c.h5", folder / "partial.csv", overlaid


def task_of(partial, attributes=ATTRS, **options):
    cache, overlay, _ = partial
    return load_task(TaskSpec(cache, ",".join(attributes), labels=[overlay], **options))


def test_the_overlay_reaches_the_splits(partial):
    _, _, overlaid = partial
    task = task_of(partial)
    np.testing.assert_array_equal(task.train.labels, overlaid[task.train.rows][:, :3])
    assert (task.train.labels[:, 1] == UNKNOWN_LABEL).mean() == pytest.approx(0.7, abs=0.06)


@pytest.mark.parametrize("kind, settings", [("majority", {}), ("logreg", {}), ("linear_svm", {}), ("knn", {"k": 5}),
                                            ("logreg-cv", {}), ("knn-cosine", {"ks": (3, 10)})])
def test_attributes_fitted_apart_equal_a_fit_on_their_labelled_rows(partial, kind, settings):
    task = task_of(partial)
    train, val = task.data("train"), task.data("val")
    head = head_class(kind).from_settings(settings).fit(train, val)
    probabilities = head.predict_proba(task.test.features)
    for j, name in enumerate(ATTRS):
        known, known_val = train.labels[:, j] != UNKNOWN_LABEL, val.labels[:, j] != UNKNOWN_LABEL
        alone = head_class(kind).from_settings(settings).fit(
            Data(train.features[known], train.labels[known, j:j + 1], (name,)),
            Data(val.features[known_val], val.labels[known_val, j:j + 1], (name,)))
        np.testing.assert_allclose(probabilities[:, j], alone.predict_proba(task.test.features)[:, 0], atol=1e-5,
                                   err_msg=f"{kind} {name}")


def test_metrics_count_the_labelled_rows_and_score_only_them(partial, tmp_path):
    task = task_of(partial)
    metrics = run_kinds(TaskSpec(partial[0], ",".join(ATTRS), labels=[partial[1]], tune_threshold=True),
                        tmp_path, ["logreg"], plots=False)["logreg"]
    head_probabilities = head_class("logreg").from_settings({}).fit(task.data("train")).predict_proba(task.test.features)
    for j, name in enumerate(ATTRS):
        known = task.test.labels[:, j] != UNKNOWN_LABEL
        scored = metrics["attributes"][name]["test"]
        assert scored["n"] == int(known.sum())
        threshold = scored["threshold"]
        expected = ((head_probabilities[known, j] >= threshold) == task.test.labels[known, j]).mean()
        assert scored["accuracy"] == pytest.approx(expected, abs=1e-9)
        train = task.train.labels[:, j][task.train.labels[:, j] != UNKNOWN_LABEL]
        assert json.loads((tmp_path / "logreg" / "config.json").read_text())["train_majority"][name] == int(
            train.mean() >= 0.5)


def test_keras_heads_mask_the_loss_and_learn_from_the_labelled_rows(partial, tmp_path):
    metrics = train_heads(TaskSpec(partial[0], ",".join(ATTRS), labels=[partial[1]]), tmp_path / "mlp", epochs=40,
                          calibrate="temperature", seed=0, plots=False)
    for name in ATTRS:
        assert metrics["attributes"][name]["test"]["accuracy"] > metrics["attributes"][name]["test"]["majority_accuracy"] + 0.1
    # the val accuracy in the history is over Smiling's labelled val rows, as the metrics are
    task = task_of(partial)
    history = pd.read_csv(tmp_path / "mlp" / "history.csv")
    assert 0.5 < history["val_Smiling_accuracy"].iloc[-1] <= 1
    assert metrics["attributes"]["Smiling"]["val"]["n"] == int((task.val.labels[:, 1] != UNKNOWN_LABEL).sum())
    assert set(metrics["run"]["calibration"]["temperature"]) == set(ATTRS)


def test_linear_grid_and_epochs_auto_train_on_partial_labels(partial, tmp_path):
    metrics = run_kinds(TaskSpec(partial[0], ",".join(ATTRS), labels=[partial[1]]), tmp_path, ["linear-grid"],
                        lrs=(1e-3, 1e-2), max_epochs=30, plots=False)["linear-grid"]
    assert metrics["attributes"]["Smiling"]["test"]["accuracy"] > 0.75
    assert set(metrics["run"]["selection"]["val_accuracy_by_lr"]) == {"0.001", "0.01"}


def test_groups_leave_rows_whose_group_is_unknown(partial, tmp_path):
    task = task_of(partial, ("Male",), groups="Young")
    metrics = run_kinds(TaskSpec(partial[0], "Male", labels=[partial[1]], groups="Young"), tmp_path,
                        ["logreg", "dfr"], plots=False)
    known_young = int((task.group_labels["test"][:, 0] != UNKNOWN_LABEL).sum())
    for kind in ("logreg", "dfr"):
        groups = metrics[kind]["groups"]["attributes"]["Male"]["test"]["groups"]
        assert sum(g["n"] for g in groups) == known_young < len(task.test.rows)
        assert metrics[kind]["attributes"]["Male"]["test"]["accuracy"] > 0.8


def test_knn_cosine_needs_k_labelled_rows_per_attribute(partial):
    task = task_of(partial)
    with pytest.raises(Exception, match=r"knn-cosine: k up to 500 needs at least that many train rows labelled "
                                        r"for each attribute; Smiling has 1\d\d"):
        head_class("knn-cosine").from_settings({"ks": (10, 500)}).fit(task.data("train"), task.data("val"))


def test_audit_flags_and_scores_labelled_rows_only(partial, tmp_path):
    from heads.audit.run import AuditSpec, run_audit
    spec = TaskSpec(partial[0], ",".join(ATTRS), labels=[partial[1]], stream="never")
    summary = run_audit(spec, AuditSpec(kind="logreg", folds=3, duplicates=None), tmp_path)
    _, _, overlaid = partial
    task = task_of(partial)
    labelled_smiling = sum(int((task.split(s).labels[:, 1] != UNKNOWN_LABEL).sum()) for s in ("train", "val", "test"))
    assert summary["labels"]["Smiling"]["rows"] == labelled_smiling
    assert summary["label_overlay"]["attributes"]["Smiling"]["unknown"] == int((overlaid[:, 1] == UNKNOWN_LABEL).sum())
    issues = pd.read_csv(tmp_path / "label_issues.csv", dtype={"image_id": str})
    out_of_fold = pd.read_csv(tmp_path / "out_of_fold.csv", dtype={"image_id": str}).set_index("image_id")
    flagged = issues[issues.attribute == "Smiling"].image_id
    assert out_of_fold.loc[flagged, "Smiling_label"].notna().all()
    assert out_of_fold["Smiling_label"].isna().sum() == sum(len(task.split(s).rows) for s in ("train", "val", "test")) \
        - labelled_smiling


def test_one_partly_labelled_attribute_trains_as_on_its_labelled_rows_alone(partial, tmp_path):
    """Rows labelled for none of a run's attributes leave it (counted): a Keras head on Smiling alone
    is the head trained on a split of Smiling's labelled rows (same rows, batches, weights)."""
    cache, overlay, overlaid = partial
    task = task_of(partial, ("Smiling",))
    assert task.unlabelled_rows == {s: int((overlaid[task_of(partial, ("Male",)).split(s).rows, 1] == UNKNOWN_LABEL).sum())
                                    for s in ("train", "val", "test")}
    known = overlaid[:, 1] != UNKNOWN_LABEL
    partition = pd.DataFrame({"image_id": [f"{i:06d}.jpg" for i in np.flatnonzero(known)],
                              "partition": np.repeat([0, 1, 2], [600, 200, 200])[known]})
    partition.to_csv(tmp_path / "labelled.csv", index=False)
    masked = train_heads(TaskSpec(cache, "Smiling", labels=[overlay]), tmp_path / "masked", epochs=5, plots=False)
    alone = train_heads(TaskSpec(cache, "Smiling", partition=tmp_path / "labelled.csv"), tmp_path / "alone", epochs=5, plots=False)
    for split in ("val", "test"):
        for metric, value in alone["attributes"]["Smiling"][split].items():
            assert masked["attributes"]["Smiling"][split][metric] == pytest.approx(value, abs=1e-6), (split, metric)
    config = json.loads((tmp_path / "masked" / "config.json").read_text())
    assert config["excluded_unlabelled_rows"] == task.unlabelled_rows
