"""Interrupting `embed` (kill -9, Ctrl-C) and running the same command again gives the same cache,
bit for bit, as an uninterrupted run, and recomputes nothing already written."""

import random
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

import cli
from embed.sample import make_sample
from tests.conftest import ROOT

N_IMAGES = 400
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    path = tmp_path_factory.mktemp("resume") / "data"
    make_sample(path, n=N_IMAGES, seed=5)
    return path


def command(data, out):
    return [sys.executable, str(ROOT / "cli.py"), "embed", "--data-dir", str(data), "--out", str(out),
            "--model", "keras:EfficientNetV2B0", "--weights", "none", "--image-size", "32", "--batch-size", "4"]


def rows_done(path):
    try:
        with h5py.File(path, "r", locking=False) as f:
            return int(f.attrs["rows_done"])
    except (OSError, KeyError):
        return -1  # not created yet


def snapshot(path):
    with h5py.File(path, "r") as f:
        return {name: f[name][:] for name in ("features", "image_id", "labels", "partition", "status", "error")}


def assert_same_cache(a, b):
    for name in a:
        assert a[name].dtype == b[name].dtype and np.array_equal(a[name], b[name]), name


@pytest.fixture(scope="module")
def reference(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference") / "ref.h5"
    done = subprocess.run(command(dataset, out), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return snapshot(out)


def interrupt(cmd, out, sig, after_rows):
    """Start `cmd`, send `sig` once at least `after_rows` rows are saved plus a random delay."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while rows_done(out) < after_rows and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(random.Random(after_rows).uniform(0, 0.2))
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    return proc.returncode, stdout, stderr


@pytest.mark.parametrize("after_rows", [8, 120])
def test_kill_9_then_same_command_equals_uninterrupted_run(dataset, reference, tmp_path, after_rows):
    out = tmp_path / "c.h5"
    code, _, _ = interrupt(command(dataset, out), out, signal.SIGKILL, after_rows)
    assert code == -signal.SIGKILL
    saved = rows_done(out)
    assert after_rows <= saved < N_IMAGES, "the kill did not land mid-run"
    info = CliRunner().invoke(cli.main, ["info", str(out), "--json"])
    assert info.exit_code == 0 and f'"not_done": {N_IMAGES - saved}' in info.output
    resumed = subprocess.run(command(dataset, out), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed at row {saved} of {N_IMAGES}" in resumed.stdout
    assert f"done: {N_IMAGES - saved} ok, 0 failed" in resumed.stdout  # nothing recomputed
    assert_same_cache(snapshot(out), reference)


def test_ctrl_c_stops_cleanly_and_resumes(dataset, reference, tmp_path):
    out = tmp_path / "c.h5"
    code, _, stderr = interrupt(command(dataset, out), out, signal.SIGINT, 40)
    saved = rows_done(out)
    assert code == cli.EXIT_INTERRUPTED, stderr
    assert f"interrupted: {saved} of {N_IMAGES} rows are saved" in stderr
    assert "run the same command again to resume" in stderr and "Traceback" not in stderr
    resumed = subprocess.run(command(dataset, out), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_cache(snapshot(out), reference)


def test_kill_during_creation_leaves_no_cache_under_the_real_name(dataset, tmp_path):
    out = tmp_path / "c.h5"
    proc = subprocess.Popen(command(dataset, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (tmp_path / "c.h5.tmp").exists() and not out.exists() and time.time() < deadline:
        time.sleep(0.001)
    proc.kill()
    proc.wait()
    if out.exists():
        assert rows_done(out) >= 0  # renamed into place already: a complete, openable file
    resumed = subprocess.run(command(dataset, out), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
