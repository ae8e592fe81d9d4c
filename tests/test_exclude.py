"""`--exclude FILE` (train rows) and `--mask-labels FILE` (train labels) are left out (in memory,
streamed, fused), val and test never change, the run records the file and counts, evaluate scores it
as trained, bad files get one line."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

import cli
from cache.errors import UserError
from cache.layout import UNKNOWN_LABEL
from harness.caches import PLANTED_SPLITS, planted_cache
from heads.run.evaluate import evaluate_run
from heads.run.exclude import read_exclude
from heads.run.fit import run_kinds
from heads.run.task import TaskSpec, load_task

N_TRAIN = PLANTED_SPLITS[0]


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    path = tmp_path_factory.mktemp("exclude") / "c.h5"
    x, labels, partition = planted_cache(path, layer=True)
    return path, labels, partition


def ids(rows):
    return [f"{r:06d}.jpg" for r in rows]


def write_list(path, image_ids, extra_column=True):
    lines = ["attribute,image_id,score" if extra_column else "image_id"]
    lines += [f"Male,{i},0.1" if extra_column else i for i in image_ids]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_leaves_out_listed_train_rows_only(planted, tmp_path):
    path, labels, partition = planted
    male_train = np.flatnonzero((partition == 0) & (labels[:, 0] == 1))
    male_train = male_train[male_train != 5][::2]  # row 5 failed: not a train row to leave out
    val_rows = np.flatnonzero(partition == 1)[:7]
    listed = write_list(tmp_path / "x.csv", ids(male_train) + ids(male_train[:3]) + ids(val_rows))
    plain = load_task(TaskSpec(path, "Male"))
    task = load_task(TaskSpec(path, "Male", exclude=listed))
    assert len(task.train.rows) == len(plain.train.rows) - len(male_train)
    assert set(task.train.image_ids) == set(plain.train.image_ids) - set(ids(male_train))
    assert task.val.image_ids == plain.val.image_ids and task.test.image_ids == plain.test.image_ids
    np.testing.assert_array_equal(task.val.features, plain.val.features)
    assert task.excluded == {"file": str(listed.resolve()), "sha256": read_exclude(listed).sha256,
                             "ids": len(male_train) + 7, "train_rows": len(male_train), "val_test_ids": 7}


def test_run_records_it_and_evaluate_scores_it_as_trained(planted, tmp_path):
    path, labels, partition = planted
    # leave out most Male train rows: the train majority turns from 1 to 0
    male_train = np.flatnonzero((partition == 0) & (labels[:, 0] == 1))
    keep = (labels[partition == 0, 0] == 0).sum() // 2
    listed = write_list(tmp_path / "x.csv", ids(male_train[keep:]))
    before = run_kinds(TaskSpec(path, "Male"), tmp_path / "plain", ["majority"], plots=False)["majority"]
    after = run_kinds(TaskSpec(path, "Male", exclude=listed), tmp_path / "ex", ["majority"], plots=False)["majority"]
    config = json.loads((tmp_path / "ex" / "majority" / "config.json").read_text())
    assert config["train_majority"] == {"Male": 0} and json.loads(
        (tmp_path / "plain" / "majority" / "config.json").read_text())["train_majority"] == {"Male": 1}
    assert config["excluded"]["train_rows"] == len(male_train) - keep
    assert config["rows"]["train"] == N_TRAIN - 1 - (len(male_train) - keep)
    assert after["run"]["excluded"] == config["excluded"]
    for split in ("val", "test"):
        assert after["attributes"]["Male"][split]["n"] == before["attributes"]["Male"][split]["n"]
        again = evaluate_run(tmp_path / "ex" / "majority", split)["attributes"]["Male"][split]
        assert again == after["attributes"]["Male"][split]
    assert after["attributes"]["Male"]["test"]["majority_accuracy"] == pytest.approx(
        1 - before["attributes"]["Male"]["test"]["majority_accuracy"])


def test_streamed_and_fused_inputs_leave_out_the_same_rows(planted, tmp_path):
    path, _, _ = planted
    listed = write_list(tmp_path / "x.csv", ids(range(0, 600, 3)), extra_column=False)
    in_memory = load_task(TaskSpec(path, "Male", inputs="grid", stream="never", exclude=listed))
    streamed = load_task(TaskSpec(path, "Male", inputs="grid", stream="always", exclude=listed))
    np.testing.assert_array_equal(streamed.train.features.rows, in_memory.train.rows)
    assert streamed.excluded == in_memory.excluded and in_memory.excluded["train_rows"] == 200
    other = tmp_path / "other.h5"
    planted_cache(other, layer=True)
    fused = load_task(TaskSpec((path, other), "Male", exclude=listed))
    assert fused.train.image_ids == in_memory.train.image_ids and fused.excluded["train_rows"] == 200


def invoke(*args):
    return CliRunner().invoke(cli.main, [str(a) for a in args])


def test_cli_says_what_it_left_out(planted, tmp_path):
    path, _, _ = planted
    listed = write_list(tmp_path / "x.csv", ids([1, 2, 3]))
    result = invoke("train-heads", path, "--out", tmp_path / "r", "--attrs", "Male", "--epochs", 1, "--exclude", listed, "--no-plots")
    assert result.exit_code == 0, result.output
    assert f"excluded: 3 train rows listed in {listed.resolve()} (3 ids listed; 0 of them in val or test" in result.output
    assert result.output.count("3 train rows") == 1  # said once, not also as a note


@pytest.mark.parametrize("content, message", [
    ("id,score\n000001.jpg,1\n", "has no image_id column (its columns: id, score)"),
    ("image_id\n000001.jpg\nnot_an_image.jpg\n999999.jpg\n", "2 of 3 listed image ids are not in"),
    ("image_id\n000001.jpg\nnot_an_image.jpg\n", "the first is 'not_an_image.jpg' (line 3)"),
    ("image_id,attribute\n000001.jpg,Male\n,Male\n", "line 3: empty image_id"),
    ("", "is empty; expected a CSV with an image_id column"),
])
def test_bad_exclude_files(planted, tmp_path, content, message):
    path, _, _ = planted
    (tmp_path / "bad.csv").write_text(content)
    for command in ("baselines", "train-heads"):
        result = invoke(command, path, "--out", tmp_path / "r", "--attrs", "Male", "--exclude", tmp_path / "bad.csv")
        assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1, result.output
    assert not (tmp_path / "r").exists()


def test_read_exclude_skips_blank_lines_and_counts_an_id_once(tmp_path):
    listed = read_exclude(write_list(tmp_path / "x.csv", ["a.jpg", "b.jpg", "a.jpg"]))
    assert listed.ids == ("a.jpg", "b.jpg") and listed.line == {"a.jpg": 2, "b.jpg": 3}
    (tmp_path / "y.csv").write_text("image_id\n\na.jpg\n\n")
    assert read_exclude(tmp_path / "y.csv").line == {"a.jpg": 3}
    with pytest.raises(UserError, match="not found"):
        read_exclude(tmp_path / "missing.csv")


def write_pairs(path, pairs, header="image_id,attribute,given_label"):
    path.write_text("\n".join([header] + [f"{i},{a},1" for i, a in pairs]) + "\n")
    return path


def test_mask_labels_makes_listed_train_labels_unknown_and_keeps_the_rows(planted, tmp_path):
    path, labels, partition = planted
    train = [r for r in np.flatnonzero(partition == 0) if r != 5][:40]
    val = np.flatnonzero(partition == 1)[:4]
    pairs = [(i, "Male") for i in ids(train[:20])] + [(i, "Smiling") for i in ids(train[20:40])] \
        + [(i, "Male") for i in ids(val)] + [(ids([train[0]])[0], "Bald"), (ids([train[0]])[0], "Male")]
    listed = write_pairs(tmp_path / "issues.csv", pairs)
    plain = load_task(TaskSpec(path, "Male,Smiling"))
    task = load_task(TaskSpec(path, "Male,Smiling", mask_labels=listed))
    assert task.train.image_ids == plain.train.image_ids  # every row stays
    unknown = task.train.labels == UNKNOWN_LABEL
    position = {r: i for i, r in enumerate(task.train.rows)}
    assert set(np.flatnonzero(unknown[:, 0])) == {position[r] for r in train[:20]}
    assert set(np.flatnonzero(unknown[:, 1])) == {position[r] for r in train[20:40]}
    np.testing.assert_array_equal(task.val.labels, plain.val.labels)
    np.testing.assert_array_equal(task.train.labels[~unknown], plain.train.labels[~unknown])
    assert task.masked == {"file": str(listed.resolve()), "sha256": read_exclude(listed).sha256, "pairs": 45,
                           "masked": {"Male": 20, "Smiling": 20}, "val_test_pairs": 4, "other_attributes": 1}
    result = invoke("baselines", path, "--out", tmp_path / "r", "--models", "logreg", "--attrs", "Male,Smiling",
                    "--mask-labels", listed, "--no-plots")
    assert result.exit_code == 0, result.output
    assert f"masked: 40 train labels listed in {listed.resolve()} made unknown (Male 20, Smiling 20;" in result.output
    config = json.loads((tmp_path / "r" / "logreg" / "config.json").read_text())
    assert config["masked"] == task.masked and config["rows"]["train"] == len(plain.train.rows)
    metrics = json.loads((tmp_path / "r" / "logreg" / "metrics.json").read_text())
    assert metrics["run"]["masked"] == task.masked
    both = load_task(TaskSpec(path, "Male", mask_labels=listed))  # a row masked for every attribute of a run leaves it
    assert both.unlabelled_rows["train"] == 20 and len(both.train.rows) == len(plain.train.rows) - 20


@pytest.mark.parametrize("content, message", [
    ("image_id\n000001.jpg\n", "has no attribute column (its columns: image_id)"),
    ("image_id,attribute\n000001.jpg,Male\nnope.jpg,Male\n", "1 of 2 listed labels is of image ids not in"),
    ("image_id,attribute\n000001.jpg,Mael\n", "line 2: attribute 'Mael' is not one of the cache's (did you mean Male?)"),
    ("image_id,attribute\n,Male\n", "line 2: empty image_id"),
])
def test_bad_mask_files(planted, tmp_path, content, message):
    path, _, _ = planted
    (tmp_path / "bad.csv").write_text(content)
    result = invoke("train-heads", path, "--out", tmp_path / "r", "--attrs", "Male", "--mask-labels", tmp_path / "bad.csv")
    assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "r").exists()
