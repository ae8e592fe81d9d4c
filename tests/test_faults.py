"""Fault injection (the cases `python -m bench.reliability` tabulates in docs/RELIABILITY.md): kills at
random moments, Ctrl-C, a full disk, a concurrent reader and damaged images never lose a finished
row, never leave a file that does not open, and a rerun of the same command ends bitwise equal to an
uninterrupted run."""

import time

import pytest

from harness import faults as reliability
from harness import processes
from harness.faults import BATCH, N_IMAGES, PHASES
from harness.trials import counts

pytestmark = pytest.mark.slow


@pytest.fixture
def setup(fault_setup):
    return fault_setup


@pytest.mark.trials
def test_kills_at_random_moments_lose_nothing(setup, tmp_path):
    """Kills spread over every phase: 3 in `make test` (one each), 20 in `make reliability` (harness.trials)."""
    trials = reliability.kill_trials(setup, tmp_path, n_trials=counts()["kills"], seed=0, in_process=True)
    for number, trial in enumerate(trials, 1):
        assert trial.info_ok, f"trial {number}: `info` failed after {trial}"
        assert trial.resume_ok, f"trial {number}: the rerun did not resume where the kill left off: {trial}"
        assert not trial.differing, f"trial {number}: {trial.differing} differ from the uninterrupted run"
        assert trial.rows_redone <= BATCH, f"trial {number}: {trial.rows_redone} rows written twice"
    assert {t.phase for t in trials} == set(PHASES)
    mid_run = [t for t in trials if t.killed and 0 < t.rows_at_kill < N_IMAGES]
    aimed = sum(t.phase == "mid-run" for t in trials)
    assert len(mid_run) >= aimed // 2, "too few kills landed mid-run to test resuming"


def test_ctrl_c_stops_cleanly_and_the_same_command_resumes(setup, tmp_path):
    result = reliability.ctrl_c_trial(setup, tmp_path / "c.h5", after_rows=40)
    assert result.exit_code == 130, result.message
    assert f"interrupted: {result.rows_saved} of {N_IMAGES} rows are saved" in result.message
    assert "run the same command again to resume" in result.message and "Traceback" not in result.message
    assert result.resume_ok and not result.differing


def test_full_disk_is_one_clear_error_and_resumes_once_space_is_freed(setup, tmp_path):
    result = reliability.disk_full_trial(setup, tmp_path)
    if result.skipped:
        pytest.skip(result.skipped)
    assert result.create_exit == 1 and "creating the cache" in result.create_error
    assert "no space left on device" in result.create_error and result.create_leftovers == []
    assert result.write_exit == 1 and "no space left on device" in result.write_error
    assert 0 < result.rows_saved < N_IMAGES
    assert f"rows 0:{result.rows_saved} are saved" in result.write_error, result.write_error
    assert result.info_ok, "the cache left by a full disk does not open"
    assert result.resume_ok and not result.differing


def test_reader_during_embedding_sees_only_finished_rows(setup, tmp_path):
    result = reliability.concurrent_reader_trial(setup, tmp_path / "c.h5")
    assert result.reads >= 5 and result.distinct_prefixes >= 2, result
    assert result.inconsistent == 0
    assert result.writer_exit == 0 and not result.differing


def test_damaged_images_are_recorded_and_counted_consistently(setup, tmp_path):
    result = reliability.damaged_images_trial(setup, tmp_path)
    assert result.failed == result.expected_failed
    assert result.survived, result


def test_kill_during_creation_leaves_no_cache_under_the_real_name(setup, tmp_path):
    out = tmp_path / "c.h5"
    proc = reliability.start_embed(setup, out)
    deadline = time.time() + 120
    while not (tmp_path / "c.h5.tmp").exists() and not out.exists() and time.time() < deadline:
        time.sleep(0.0005)
    proc.kill()
    proc.wait()
    if out.exists():
        assert reliability.rows_done(out) >= 0  # renamed into place already: a complete, openable file
    resumed = reliability.cli_in_process(*reliability.embed_args(setup, out))
    assert resumed.returncode == 0, resumed.stderr
    assert not reliability.differences(reliability.snapshot(out), setup.reference)


@pytest.mark.reliability
def test_a_forked_run_equals_a_fresh_interpreters_run(setup, tmp_path):
    """`make test` forks the CLI's processes from a preloaded interpreter (harness.processes); the
    same command in a fresh interpreter ends the same way and writes the same cache, bit for bit
    (same machine, same computation)."""
    runs = {fork: processes.run(*reliability.embed_args(setup, tmp_path / f"fork{fork}.h5"), fork=fork)
            for fork in (True, False)}
    for fork, done in runs.items():
        assert done.returncode == 0, (fork, done.stderr[-2000:])
        assert f"done: {N_IMAGES} ok, 0 failed" in done.stdout, (fork, done.stdout)
    assert not reliability.differences(reliability.snapshot(tmp_path / "forkTrue.h5"),
                                       reliability.snapshot(tmp_path / "forkFalse.h5"))


def test_a_called_function_that_raises_ends_its_process_with_1_and_the_traceback():
    """harness.processes.call: a function's exception is the child's exit status 1, its traceback on stderr."""
    done = processes.call(int, "not a number")
    assert done.returncode == 1 and "ValueError: invalid literal for int()" in done.stderr, done
