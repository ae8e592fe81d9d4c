"""The one output policy (cache.outputs) and the commands that follow it: parent folders created,
nothing replaced unasked, --overwrite replaces only what the toolkit wrote, a failed command leaves
everything as it was, errors name the user's path."""

import json

import pytest
from click.testing import CliRunner

import cli
from cache.errors import UserError
from cache.outputs import FILE, Output, check, writing


def invoke(*args):
    return CliRunner().invoke(cli.main, [str(a) for a in args])


# --- the policy itself ---------------------------------------------------------------------------

def test_check_changes_nothing_and_names_the_users_path(tmp_path):
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(UserError, match=r"^--out .*file\.txt/r\.html: .*file\.txt is a file, not a folder$"):
        check(Output(str(tmp_path / "file.txt" / "r.html"), "--out"))
    with pytest.raises(UserError, match=r"^--csv .*file\.txt: exists; pass --overwrite to replace it"):
        check(Output(str(tmp_path / "file.txt"), "--csv"))
    with pytest.raises(UserError, match=r"is a folder; give a file name"):
        check(Output(str(tmp_path), "--out"))
    with pytest.raises(UserError, match=r"is a file; give a folder"):
        check(Output(str(tmp_path / "file.txt"), "--out", "run"))
    assert check(Output(str(tmp_path / "new" / "deeper" / "r.html"), "--out")) is False
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]


def test_overwrite_never_deletes_what_the_toolkit_did_not_write(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("precious")
    for overwrite in (False, True):
        with pytest.raises(UserError, match="not empty|did not write"):
            with writing([Output(str(folder), "--out", "run")], overwrite):
                pass
    assert (folder / "notes.txt").read_text() == "precious"


def test_a_failed_command_leaves_everything_as_it_was(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    with pytest.raises(RuntimeError):
        with writing([Output(str(run), "--out", "run"), Output(str(tmp_path / "a" / "b" / "c.csv"), "--csv")],
                     overwrite=True):
            run.mkdir()
            (run / "partial").write_text("half")
            raise RuntimeError("late failure")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"] and (run / "config.json").read_text() == "{}"
    assert not (run / "partial").exists()
    with writing([Output(str(run), "--out", "run"), Output(str(tmp_path / "a" / "b" / "c.csv"), "--csv")],
                 overwrite=True):
        assert not run.exists() and (tmp_path / "a" / "b").is_dir()
        run.mkdir()
        (run / "metrics.json").write_text("{}")
    assert sorted(p.name for p in run.iterdir()) == ["metrics.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "run"]  # nothing set aside is left


def test_a_failed_command_takes_back_the_files_it_started_and_restores_the_ones_it_replaced(tmp_path):
    """A file output is partial when its command fails (a video's table written before the video
    turned out empty): a new one goes, a replaced one (--overwrite) comes back as it was."""
    new, old = tmp_path / "out" / "table.csv", tmp_path / "board.md"
    old.write_text("the old board")
    outputs = [Output(str(new), "--out"), Output(str(old), "--markdown")]
    with pytest.raises(RuntimeError):
        with writing(outputs, overwrite=True):
            new.write_text("frame,face\n0,")
            old.write_text("half a new board")
            raise RuntimeError("no frame could be read")
    assert not new.exists() and not new.parent.exists() and old.read_text() == "the old board"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["board.md"]
    with writing(outputs, overwrite=True):
        new.write_text("frame,face\n")
        old.write_text("the new board")
    assert old.read_text() == "the new board" and new.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["board.md", "out"]  # nothing set aside is left


def test_the_file_kind_is_the_default():
    assert Output("x", "--out").kind == FILE


# --- the commands --------------------------------------------------------------------------------

def test_train_heads_refuses_a_used_run_folder_and_overwrite_replaces_it_whole(cache, tmp_path):
    run = tmp_path / "deep" / "er" / "run"  # parent folders are created
    first = invoke("train-heads", cache, "--out", run, "--epochs", 1, "--attrs", "Male", "--no-plots")
    assert first.exit_code == 0, first.output
    (run / "stale.txt").write_text("from an older version")
    events = sorted((run / "tb").rglob("*tfevents*"))
    again = invoke("train-heads", cache, "--out", run, "--epochs", 1, "--attrs", "Male")
    assert again.exit_code == 1 and again.output.count("\n") == 1 and "Traceback" not in again.output
    assert f"Error: --out {run}: not empty (" in again.output and "pass --overwrite" in again.output
    late = invoke("train-heads", cache, "--out", run, "--overwrite", "--epochs", 1, "--attrs", "Nope")
    assert late.exit_code != 0 and (run / "stale.txt").exists()  # a failed command puts the old run back
    assert sorted((run / "tb").rglob("*tfevents*")) == events
    replaced = invoke("train-heads", cache, "--out", run, "--overwrite", "--epochs", 1, "--attrs", "Male,Young", "--no-plots")
    assert replaced.exit_code == 0, replaced.output
    assert not (run / "stale.txt").exists() and not set(events) & set((run / "tb").rglob("*tfevents*"))
    assert json.loads((run / "config.json").read_text())["attributes"] == ["Male", "Young"]
    assert [p.name for p in tmp_path.rglob(".*")] == []  # nothing set aside is left


def test_a_second_sweep_into_the_same_folder_is_refused_and_overwrite_drops_the_old_variants(cache, tmp_path):
    out = tmp_path / "sweep"
    assert invoke("sweep", cache, "--out", out, "--grid", "lr=1e-3,1e-2", "--grid", "epochs=1",
                  "--attrs", "Male").exit_code == 0
    old = sorted(p.name for p in out.iterdir() if p.is_dir())
    refused = invoke("sweep", cache, "--out", out, "--grid", "dropout=0,0.5", "--grid", "epochs=1", "--attrs", "Male")
    assert refused.exit_code == 1 and "not empty" in refused.output
    assert invoke("sweep", cache, "--out", out, "--grid", "dropout=0,0.5", "--grid", "epochs=1", "--attrs", "Male",
                  "--overwrite", "--no-plots").exit_code == 0
    new = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert len(old) == len(new) == 2 and not set(old) & set(new)
    board = (out / "leaderboard.csv").read_text()
    assert all(name not in board for name in old)


def test_report_compare_and_export_create_folders_and_refuse_what_exists(cache, tmp_path):
    run = tmp_path / "run"
    assert invoke("train-heads", cache, "--out", run, "--epochs", 1, "--attrs", "Male", "--no-plots").exit_code == 0
    page = tmp_path / "missing" / "dir" / "r.html"
    assert invoke("report", run, "--out", page).exit_code == 0 and page.exists()
    again = invoke("report", run, "--out", page)
    assert again.exit_code == 1 and f"--out {page}: exists; pass --overwrite" in again.output
    assert invoke("report", run, "--out", page, "--overwrite").exit_code == 0
    board = tmp_path / "missing" / "b.md"
    compared = invoke("compare", run, "--markdown", board, "--csv", tmp_path / "other" / "b.csv")
    assert compared.exit_code == 0 and board.exists() and (tmp_path / "other" / "b.csv").exists()
    assert f"wrote {board}" in compared.output and f"wrote {tmp_path / 'other' / 'b.csv'}" in compared.output
    assert invoke("compare", run, "--markdown", board).exit_code == 1
    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "README").write_text("mine")
    refused = invoke("export", "--run", run, "--out", tmp_path / "export", "--overwrite")
    assert refused.exit_code == 1 and "holds files this command did not write (README)" in refused.output
    assert (tmp_path / "export" / "README").read_text() == "mine"
