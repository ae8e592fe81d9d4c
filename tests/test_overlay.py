"""Label overlays (`--labels FILE`, `--partition FILE`): cells patched by image id in file order,
unknown markers, new attributes, new splits; the same numbers as labels embedded in the cache;
records with sha256 that evaluate applies again and refuses when changed; one line per bad file."""

import json
import logging

import numpy as np
import pytest
from click.testing import CliRunner

import cli
from cache.errors import UserError
from cache.layout import UNKNOWN_LABEL
from embed.labels import read_labels
from harness.caches import PLANTED_ATTRIBUTES, planted_cache
from heads.run.evaluate import evaluate_run
from heads.run.fit import run_kinds
from heads.run.overlay import NOT_IN_RUN, Overlay, stored_labels
from heads.run.task import TaskSpec, load_task


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("overlay")
    x, labels, partition = planted_cache(folder / "full.h5")
    planted_cache(folder / "male.h5", stored=["Male"])
    return folder, labels, partition


def ids(rows):
    return [f"{r:06d}.jpg" for r in rows]


def write_csv(path, header, rows):
    path.write_text("\n".join([",".join(header)] + [",".join(map(str, r)) for r in rows]) + "\n")
    return path


def labels_file(path, labels, attributes=PLANTED_ATTRIBUTES, rows=None, minus_one=True):
    """All (or `rows`) of the planted labels as a CelebA text file (-1/1) or a 0/1 CSV."""
    rows = range(len(labels)) if rows is None else rows
    if minus_one:
        body = [f"{i} " + " ".join("1" if labels[r, PLANTED_ATTRIBUTES.index(a)] else "-1" for a in attributes)
                for i, r in zip(ids(rows), rows)]
        path.write_text(f"{len(body)}\n{' '.join(attributes)}\n" + "\n".join(body) + "\n")
        return path
    return write_csv(path, ["image_id", *attributes],
                     [[i, *(labels[r, PLANTED_ATTRIBUTES.index(a)] for a in attributes)] for i, r in zip(ids(rows), rows)])


def test_unknown_markers_only_where_asked(tmp_path):
    path = write_csv(tmp_path / "a.csv", ["image_id", "A", "B"], [["x.jpg", 1, ""], ["y.jpg", "NA", 0], ["z.jpg", "?", 1]])
    table = read_labels(path, unknown=True)
    assert table.values.tolist() == [[1, UNKNOWN_LABEL], [UNKNOWN_LABEL, 0], [UNKNOWN_LABEL, 1]]
    with pytest.raises(UserError, match=r"a.csv:2: column 'B' has ''; labels must be -1/1 or 0/1 \(a cache stores "
                                        r"known labels only: give unknown ones at training time, --labels FILE\)$"):
        read_labels(path)
    text = tmp_path / "a.txt"
    text.write_text("2\nA B\nx.jpg 1 NA\ny.jpg ? -1\n")
    assert read_labels(text, unknown=True).values.tolist() == [[1, UNKNOWN_LABEL], [UNKNOWN_LABEL, 0]]


def test_files_patch_cells_in_order(tmp_path, caplog):
    rows = stored_labels_for(tmp_path)
    first = write_csv(tmp_path / "first.csv", ["image_id", "B", "New"],
                      [["b.jpg", 0, 1], ["c.jpg", "?", 0], ["zz.jpg", 1, 1], ["yy.jpg", 1, 1]])
    second = write_csv(tmp_path / "second.csv", ["image_id", "New", "partition"], [["b.jpg", "", 1]])
    with caplog.at_level(logging.INFO):
        overlay = Overlay.read([first, second])
        applied, record = overlay.apply(rows, "c.h5")
    assert applied.names == ["A", "B", "New"]
    u = UNKNOWN_LABEL
    #                       A  B  New     (a: not listed keeps; b: set, then New made unknown by the later file)
    assert applied.labels.tolist() == [[1, 1, u], [0, 0, u], [1, u, 0]]
    assert rows.labels.tolist() == [[1, 1], [0, 1], [1, 0]]  # the stored labels are not touched
    np.testing.assert_array_equal(applied.partition, rows.partition)
    assert record["attributes"] == {"B": {"set": 1, "changed": 2, "unknown": 1, "new": False},
                                    "New": {"set": 2, "changed": 1, "unknown": 2, "new": True}}
    assert [(f["rows"], f["not_in_cache"], f["changed"]) for f in record["files"]] == [(4, 2, 4), (1, 0, 1)]
    assert "2 of 4 listed image ids are not in the cache (in c.h5) and are ignored; the first is 'zz.jpg' (line 4)" \
        in caplog.text
    assert "second.csv: its partition column is ignored" in caplog.text and "--partition" in caplog.text


def stored_labels_for(tmp_path):
    from heads.run.overlay import RowLabels
    return RowLabels(ids=np.array(["a.jpg", "b.jpg", "c.jpg"], dtype=object), names=["A", "B"],
                     labels=np.array([[1, 1], [0, 1], [1, 0]], np.uint8), partition=np.array([0, 1, 2], np.int8))


def test_partition_file_resplits_and_unlisted_rows_leave(planted, tmp_path):
    folder, labels, partition = planted
    # train rows 0..299 stay train, 300..599 become test, the test rows become val, and val leaves the run
    listed = [[i, 0 if r < 300 else 2] for i, r in zip(ids(range(600)), range(600))]
    listed += [[i, 1] for i in ids(range(800, 1000))]
    part = write_csv(tmp_path / "p.csv", ["image_id", "partition"], listed)
    task = load_task(TaskSpec(folder / "full.h5", "Male", partition=part))
    assert task.train.image_ids == [i for i in ids(range(300)) if i != "000005.jpg"]  # row 5 failed
    assert task.test.image_ids == ids(range(300, 600)) and task.val.image_ids == ids(range(800, 1000))
    assert task.labels["partition"]["left_out"] == 200 and task.labels["files"] == []
    np.testing.assert_array_equal(task.val.labels[:, 0], labels[800:, 0])


def test_a_cache_with_only_male_trains_as_the_full_cache(planted, tmp_path):
    """The issue's equivalence: labels given at training time = the same labels embedded (same machine)."""
    folder, labels, _ = planted
    full_labels = labels_file(tmp_path / "list_attr.txt", labels)
    attrs = "Male,Smiling,Young"
    embedded = run_kinds(TaskSpec(folder / "full.h5", attrs), tmp_path / "embedded", ["logreg"], plots=False)["logreg"]
    overlaid = run_kinds(TaskSpec(folder / "male.h5", attrs, labels=[full_labels]), tmp_path / "overlaid",
                         ["logreg"], plots=False)["logreg"]
    for name in attrs.split(","):
        for split in ("val", "test"):
            for metric, value in embedded["attributes"][name][split].items():
                assert overlaid["attributes"][name][split][metric] == pytest.approx(value, abs=1e-6), (name, split, metric)
    record = overlaid["run"]["labels"]
    assert record["attributes"]["Smiling"] == {"set": 1000, "changed": 1000, "unknown": 0, "new": True}
    assert record["attributes"]["Male"] == {"set": 1000, "changed": 0, "unknown": 0, "new": False}
    assert json.loads((tmp_path / "overlaid" / "logreg" / "config.json").read_text())["labels"] == record


def invoke(*args):
    return CliRunner().invoke(cli.main, [str(a) for a in args])


def test_evaluate_applies_the_recorded_files_and_refuses_a_changed_one(planted, tmp_path):
    folder, labels, _ = planted
    flipped = labels.copy()
    flipped[800:, 2] = 1 - flipped[800:, 2]  # Young flipped on every test row
    full = labels_file(tmp_path / "full.csv", labels, minus_one=False)
    run = tmp_path / "r"
    result = invoke("baselines", folder / "male.h5", "--out", run, "--models", "logreg", "--labels", full, "--no-plots")
    assert result.exit_code == 0, result.output
    assert "label overlay: labels full.csv (3,000 labels changed)" in result.output
    trained = json.loads((run / "logreg" / "metrics.json").read_text())["attributes"]["Young"]["test"]
    again = evaluate_run(run / "logreg", "test")
    assert again["attributes"]["Young"]["test"] == trained and again["labels"]["other_labels"] is False
    corrections = labels_file(tmp_path / "corrections.csv", flipped, ["Young"], rows=range(800, 1000), minus_one=False)
    other = invoke("evaluate", run / "logreg", "--labels", corrections)
    assert other.exit_code == 0, other.output
    assert ("scored against other labels than the run's: labels full.csv (3,000 labels changed) then "
            "corrections.csv (200 labels changed)") in other.output
    scored = evaluate_run(run / "logreg", "test", labels=[corrections])
    assert scored["attributes"]["Young"]["test"]["accuracy"] == pytest.approx(1 - trained["accuracy"], abs=1e-9)
    assert scored["attributes"]["Male"]["test"] == again["attributes"]["Male"]["test"]
    full.write_text(full.read_text().replace("000900.jpg,1", "000900.jpg,0", 1) if "000900.jpg,1" in full.read_text()
                    else full.read_text().replace("000900.jpg,0", "000900.jpg,1", 1))
    for command in (("evaluate", run / "logreg"), ("compare", run)):
        refused = invoke(*command)
        assert refused.exit_code == 1 and "full.csv: sha256 differs from" in refused.output, refused.output
        assert len(refused.output.strip().splitlines()) == 1


def test_info_shows_what_an_overlay_changes(planted, tmp_path):
    folder, labels, _ = planted
    corrections = write_csv(tmp_path / "c.csv", ["image_id", "Male", "Glasses"],
                            [["000001.jpg", 1 - labels[1, 0], 1], ["000002.jpg", "?", ""], ["nope.jpg", 1, 1]])
    result = invoke("info", folder / "male.h5", "--labels", corrections)
    assert result.exit_code == 0, result.output
    assert "c.csv: 3 rows listed, 1 not in" in result.output
    lines = result.output.splitlines()
    table = lines[next(i for i, line in enumerate(lines) if line.split() == ["attribute", "set", "changed", "unknown"]):]
    assert [line.split() for line in table[1:3]] == [["Male", "1", "2", "1"], ["Glasses", "1", "1", "999", "(new)"]]
    assert "note: " in result.output and "the first is 'nope.jpg' (line 4)" in result.output


def test_an_attribute_without_two_labelled_classes_in_train_stops_in_one_line(planted, tmp_path):
    folder, _, _ = planted
    one_class = write_csv(tmp_path / "p.csv", ["image_id", "Smiling"], [["000001.jpg", 1], ["000002.jpg", 1]])
    result = invoke("baselines", folder / "male.h5", "--out", tmp_path / "r", "--models", "logreg",
                    "--attrs", "Male,Smiling", "--labels", one_class)
    assert result.exit_code == 1 and "attribute Smiling has only class 1 in the train split (2 labelled rows)" \
        in result.output, result.output
    assert not (tmp_path / "r").exists()
    val_only = write_csv(tmp_path / "v.csv", ["image_id", "Smiling"], [["000700.jpg", 1], ["000701.jpg", 0]])
    result = invoke("train-heads", folder / "male.h5", "--out", tmp_path / "r", "--attrs", "Smiling", "--labels", val_only)
    assert result.exit_code == 1 and "attribute Smiling has no labelled row in the train split" in result.output
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("content, message", [
    ("image_id,Male\n000001.jpg,1\n000001.jpg,0\n", "bad.csv: 1 duplicate image id, e.g. '000001.jpg' on lines 2 and 3"),
    ("image_id,Male\n000001.jpg,2\n", "bad.csv:2: column 'Male' has '2'; labels must be -1/1 or 0/1, or empty, NA or ?"),
    ("id,Male\n000001.jpg,1\n", "bad.csv:1: first CSV column must be 'image_id'"),
    ("image_id\n000001.jpg\n", "bad.csv:1: an image_id column and no attribute column"),
    ("image_id,Male\n000001.jpg,-1\n000002.jpg,0\n", "bad.csv:3: column 'Male' has 0 but the file uses -1/1"),
    ("image_id,partition\n000001.jpg,0\n", "bad.csv:1: a partition file, not labels"),
])
def test_bad_labels_files_get_one_line(planted, tmp_path, content, message):
    folder, _, _ = planted
    (tmp_path / "bad.csv").write_text(content)
    for command in (("train-heads", folder / "full.h5", "--out", tmp_path / "r", "--epochs", 1),
                    ("info", folder / "full.h5")):
        result = invoke(*command, "--labels", tmp_path / "bad.csv")
        assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1, result.output
    assert not (tmp_path / "r").exists()


def test_bad_partition_file_and_unknown_attribute(planted, tmp_path):
    folder, _, _ = planted
    (tmp_path / "p.csv").write_text("image_id,partition\n000001.jpg,3\n")
    result = invoke("train-heads", folder / "full.h5", "--out", tmp_path / "r", "--partition", tmp_path / "p.csv")
    assert result.exit_code == 1 and "p.csv:2: partition of '000001.jpg' is '3'" in result.output, result.output
    extra = write_csv(tmp_path / "e.csv", ["image_id", "Glasses"], [["000001.jpg", 1]])
    result = invoke("train-heads", folder / "full.h5", "--out", tmp_path / "r", "--labels", extra, "--attrs", "Glases")
    assert result.exit_code == 2 and "unknown attribute 'Glases' (did you mean Glasses?)" in result.output, result.output


def test_fused_caches_take_the_overlay_each(planted, tmp_path):
    folder, labels, _ = planted
    full_labels = labels_file(tmp_path / "all.txt", labels)
    task = load_task(TaskSpec((folder / "male.h5", folder / "full.h5"), "Male,Young", labels=[full_labels]))
    plain = load_task(TaskSpec(folder / "full.h5", "Male,Young"))
    np.testing.assert_array_equal(task.test.labels, plain.test.labels)
    assert task.test.features.shape[1] == 2 * plain.test.features.shape[1]
    without = invoke("baselines", folder / "male.h5", folder / "full.h5", "--out", tmp_path / "r", "--models",
                     "majority", "--attrs", "Male")
    assert without.exit_code == 1 and "their attribute names differ" in without.output


def test_not_in_run_rows_are_not_scored_anywhere(planted, tmp_path):
    folder, _, _ = planted
    part = write_csv(tmp_path / "p.csv", ["image_id", "partition"],
                     [[i, r % 3] for i, r in zip(ids(range(0, 1000, 2)), range(500))])
    overlay = Overlay.read((), part)
    applied, record = overlay.apply(stored_labels(folder / "full.h5"))
    assert (applied.partition == NOT_IN_RUN).sum() == 500 == record["partition"]["left_out"]
    task = load_task(TaskSpec(folder / "full.h5", "Male", partition=part))
    assert len(task.train.rows) + len(task.val.rows) + len(task.test.rows) == 500  # the failed row 5 is not listed
    assert all(int(i[:6]) % 2 == 0 for i in task.test.image_ids)


def test_info_shows_the_splits_and_rates_a_run_sees(planted, tmp_path):
    """info --labels/--partition: the split sizes and positive rates after the files, not the cache's."""
    folder, labels, _ = planted
    smiling = write_csv(tmp_path / "s.csv", ["image_id", "Smiling"], [[i, labels[r, 1]] for i, r in zip(ids(range(10)), range(10))])
    listed = [[i, 1 if r < 100 else (0 if r < 600 else 1 if r < 800 else 2)] for i, r in zip(ids(range(900)), range(900))]
    part = write_csv(tmp_path / "p.csv", ["image_id", "partition"], listed)
    result = invoke("info", folder / "male.h5", "--labels", smiling, "--partition", part)
    assert result.exit_code == 0, result.output
    assert ("splits with --labels/--partition applied: train 500/500 ok, val 299/300 ok, test 100/100 ok, "
            "100 left out by --partition") in result.output
    rates = next(line.split()[1:] for line in result.output.splitlines() if line.startswith("Smiling "))
    known = [r for r in range(10) if r != 5]  # row 5 failed
    assert rates == ["-", f"{labels[known, 1].mean():.3f}", "-"]
    summary = json.loads(invoke("info", folder / "male.h5", "--labels", smiling, "--partition", part, "--json").output)
    assert summary["splits"]["val"]["positive_rate"]["Smiling"] == round(float(labels[known, 1].mean()), 4)
    assert summary["attributes"] == ["Male", "Smiling"] and summary["left_out"] == 100


def test_a_column_naming_an_attribute_in_another_case_gets_a_did_you_mean(planted, tmp_path):
    folder, _, _ = planted
    lower = write_csv(tmp_path / "lower.csv", ["image_id", "male"], [["000001.jpg", 1]])
    result = invoke("train-heads", folder / "male.h5", "--out", tmp_path / "r", "--labels", lower, "--attrs", "Male")
    assert result.exit_code == 1 and "lower.csv: column 'male' is not an attribute of the cache; did you mean 'Male'?" \
        in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "r").exists()


@pytest.mark.parametrize("file_id, hint", [
    ("000001", "the file's ids lack the extension the cache's carry"),
    ("000001.png", "the file's ids carry another extension than the cache's"),
    ("img_align_celeba/000001.jpg", "the file's ids carry a folder the cache's lack"),
    ("face_1.jpg", "no id matches"),
])
def test_a_file_whose_ids_all_miss_the_cache_is_an_error_with_a_hint(planted, tmp_path, file_id, hint):
    folder, _, _ = planted
    for option, header in (("--labels", "Male"), ("--partition", "partition")):
        path = write_csv(tmp_path / "f.csv", ["image_id", header], [[file_id, 1]])
        result = invoke("info", folder / "male.h5", option, path)
        assert result.exit_code == 1, result.output
        assert (f"f.csv: none of its 1 image id is in the cache ({option}): {hint} (the file's first: "
                f"'{file_id}'; the cache's first: '000000.jpg')") in result.output, result.output


def test_a_later_file_overwriting_cells_says_how_many(tmp_path, caplog):
    rows = stored_labels_for(tmp_path)
    first = write_csv(tmp_path / "first.csv", ["image_id", "A", "B"], [["a.jpg", 0, 1], ["b.jpg", 1, 1]])
    second = write_csv(tmp_path / "second.csv", ["image_id", "B"], [["a.jpg", 1], ["b.jpg", 0], ["c.jpg", 1]])
    with caplog.at_level(logging.INFO):
        applied, record = Overlay.read([first, second]).apply(rows, "c.h5")
    assert "second.csv: overwrites 2 cells an earlier --labels file gave (1 of them with another value" in caplog.text
    assert [f["overwritten"] for f in record["files"]] == [0, 2]
    assert applied.labels.tolist() == [[0, 1], [1, 0], [1, 1]]


def test_compare_warns_when_runs_were_scored_on_different_splits(planted, tmp_path):
    """A run split by a partition file beside one on the cache's own split: a warning naming both;
    accuracy printed as train-heads prints it (% to one decimal)."""
    folder, _, _ = planted
    listed = [[i, 0 if r < 500 else 1 if r < 800 else 2] for i, r in zip(ids(range(1000)), range(1000))]
    part = write_csv(tmp_path / "p.csv", ["image_id", "partition"], listed)
    for name, extra in (("own", ()), ("split", ("--partition", part))):
        result = invoke("baselines", folder / "full.h5", "--out", tmp_path / name, "--models", "logreg", "--no-plots", *extra)
        assert result.exit_code == 0, result.output
    result = invoke("compare", tmp_path / "own", tmp_path / "split")
    assert result.exit_code == 0, result.output
    assert (f"WARNING: the runs were scored on different partitions (the cache's own split for {tmp_path / 'own' / 'logreg'}, "
            f"partition file p.csv for {tmp_path / 'split' / 'logreg'})") in result.output, result.output
    own = json.loads((tmp_path / "own" / "logreg" / "metrics.json").read_text())["attributes"]["Male"]["val"]["accuracy"]
    row = next(line.split() for line in result.output.splitlines() if line.startswith(str(tmp_path / "own")))
    assert row[2] == f"{100 * own:.1f}" and "(accuracy, F1 and other rates in %)" in result.output
    same = invoke("compare", tmp_path / "own", tmp_path / "split", "--partition", part)  # one split for both
    assert same.exit_code == 0 and "WARNING" not in same.output, same.output


def test_an_emptied_split_blames_what_emptied_it_and_audit_needs_no_val(planted, tmp_path):
    """Everything in train (a folder embedded now, labelled later): audit cross-fits it without a val
    split; train-heads says to pass --partition, and a partition file that empties a split is named."""
    folder, _, _ = planted
    all_train = write_csv(tmp_path / "all.csv", ["image_id", "partition"], [[i, 0] for i in ids(range(1000))])
    result = invoke("audit", folder / "full.h5", "--out", tmp_path / "a", "--partition", all_train, "--kind", "logreg",
                    "--attrs", "Male", "--folds", 2, "--no-duplicates")
    assert result.exit_code == 0, result.output
    assert "note: the val, test splits hold no row: audited train (cross-fitting needs no val split)" in result.output
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["splits"] == ["train"]
    result = invoke("train-heads", folder / "full.h5", "--out", tmp_path / "r", "--partition", all_train, "--epochs", 1)
    assert result.exit_code == 1 and result.output.strip() == (
        f"Error: {all_train} (--partition): puts no embedded row of {folder / 'full.h5'} in the val split; "
        "give some rows partition 1 (val)"), result.output
    no_test = write_csv(tmp_path / "nt.csv", ["image_id", "partition"], [[i, 0 if r < 800 else 1]
                                                                          for i, r in zip(ids(range(1000)), range(1000))])
    result = invoke("audit", folder / "full.h5", "--out", tmp_path / "b", "--partition", no_test, "--split", "test",
                    "--kind", "logreg", "--attrs", "Male", "--folds", 2, "--no-duplicates")
    assert result.exit_code == 1 and "the audited split test holds no row" in result.output, result.output


def test_a_cache_with_every_row_in_train_says_to_pass_a_partition(tmp_path):
    planted_cache(tmp_path / "c.h5")
    import h5py
    with h5py.File(tmp_path / "c.h5", "r+") as f:
        f["partition"][:] = 0
    result = invoke("train-heads", tmp_path / "c.h5", "--out", tmp_path / "r", "--epochs", 1)
    assert result.exit_code == 1 and "the val split has no rows (a folder embedded without a partition puts every " \
        "image in train): give --partition FILE" in result.output, result.output


@pytest.mark.parametrize("command", [("train-heads", "--epochs", 1, "--no-plots"),
                                     ("baselines", "--models", "logreg", "--no-plots"),
                                     ("sweep", "--grid", "hidden=4,8", "--grid", "epochs=1", "--no-plots"),
                                     ("audit", "--kind", "logreg", "--folds", 2, "--no-duplicates")])
def test_ctrl_c_exits_130_saying_what_was_kept(planted, tmp_path, monkeypatch, command):
    """Ctrl-C (KeyboardInterrupt) mid-command: exit 130, one line, and the output as it was before (here
    an earlier run that --overwrite was replacing)."""
    import heads.run.task
    folder, _, _ = planted
    out = tmp_path / "out"
    name, *options = command
    assert invoke(name, folder / "full.h5", "--out", out, "--attrs", "Male", *options).exit_code == 0
    before = sorted((p.relative_to(out), p.stat().st_mtime_ns) for p in out.rglob("*"))

    def pressed(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(heads.run.task, "load_split", pressed)  # inside the command, after its checks
    result = invoke(name, folder / "full.h5", "--out", out, "--attrs", "Male", "--overwrite", *options)
    assert result.exit_code == 130, result.output
    assert result.output.strip().splitlines()[-1] == (f"interrupted: nothing kept (--out {out} as before this command); "
                                                      "run it again to start over")
    assert sorted((p.relative_to(out), p.stat().st_mtime_ns) for p in out.rglob("*")) == before


def test_a_note_prints_once_though_the_command_loads_its_task_once_per_split(planted, tmp_path):
    folder, _, _ = planted
    missing = write_csv(tmp_path / "m.csv", ["image_id", "Male"], [["000001.jpg", 1], ["nope.jpg", 0]])
    result = invoke("audit", folder / "full.h5", "--out", tmp_path / "a", "--labels", missing, "--kind", "logreg",
                    "--attrs", "Male", "--folds", 2, "--no-duplicates")
    assert result.exit_code == 0, result.output
    assert result.output.count("m.csv: 1 of 2 listed image ids is not in the cache") == 1, result.output
