"""Scaling the embedding pass out: shards + merge, several devices, Ray. Each way ends in a cache
bitwise equal to one plain `embed` run (fault_setup.reference: same data, model and batch size)."""

import json
import shutil
import signal
import sys

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

import cli
from cache.shards import shard_range
from harness import faults as reliability
from harness import processes
from harness.faults import N_IMAGES, differences, embed_args, rows_done, snapshot


def invoke(*args):
    return CliRunner().invoke(cli.main, [str(a) for a in args])


def embed_shards(setup, folder, count, batch=None):
    paths = []
    for index in range(count):
        out = folder / f"shard{index}.h5"
        args = embed_args(setup, out) + ["--shard", f"{index}/{count}"]
        if batch:
            args[args.index("--batch-size") + 1] = str(batch)
        result = invoke(*args)
        assert result.exit_code == 0, result.output
        paths.append(out)
    return paths


@given(n_rows=st.integers(0, 500), batch=st.integers(1, 40), count=st.integers(1, 12))
def test_shards_are_contiguous_whole_batches_covering_every_row(n_rows, batch, count):
    ranges = [shard_range(n_rows, batch, i, count) for i in range(count)]
    assert ranges[0][0] == 0 and ranges[-1][1] == n_rows
    for (_, stop), (start, _) in zip(ranges, ranges[1:]):
        assert stop == start
    assert all(start % batch == 0 for start, _ in ranges)


def test_three_shards_merged_equal_one_plain_run(fault_setup, tmp_path):
    shards = embed_shards(fault_setup, tmp_path, 3)
    info = json.loads(invoke("info", shards[1], "--json").output)
    assert info["shard"]["index"] == 1 and info["shard"]["total_rows"] == N_IMAGES
    result = invoke("merge", shards[2], shards[0], shards[1], "--out", tmp_path / "merged.h5")
    assert result.exit_code == 0 and f"{N_IMAGES} rows" in result.output, result.output
    assert not differences(snapshot(tmp_path / "merged.h5"), fault_setup.reference)
    with h5py.File(tmp_path / "merged.h5", "r") as f:
        assert "shard" not in f.attrs and int(f.attrs["rows_done"]) == N_IMAGES


def test_bad_merges_are_refused_clearly(fault_setup, tmp_path):
    shards = embed_shards(fault_setup, tmp_path, 3)
    (tmp_path / "other").mkdir()
    other = embed_shards(fault_setup, tmp_path / "other", 3, batch=8)
    out = tmp_path / "m.h5"
    cases = [
        ((shards[0], shards[0], shards[1], shards[2]), "shards overlap"),
        ((shards[0], shards[2]), "missing shard 1/3 of the 3 (got 2 files)"),
        ((shards[0], shards[1], other[2]), "does not belong with"),
        ((fault_setup.reference_path,), "not a shard"),
    ]
    for files, message in cases:
        result = invoke("merge", *files, "--out", out)
        assert result.exit_code == 1 and message in result.output, (files, result.output)
        assert result.output.count("\n") == 1 and not out.exists()
    with h5py.File(shards[1], "r+") as f:
        f.attrs.modify("rows_done", 4)
    result = invoke("merge", *shards, "--out", out)
    assert result.exit_code == 1 and "unfinished (4 of" in result.output
    out.write_bytes(b"")
    assert "exists; pass --overwrite" in invoke("merge", *shards, "--out", out).output


def test_resuming_a_shard_with_another_shard_spec_is_refused(fault_setup, tmp_path):
    (shard,) = embed_shards(fault_setup, tmp_path, 1)
    result = invoke(*embed_args(fault_setup, shard), "--shard", "1/2")
    assert result.exit_code == 1 and "shard.count 1 but this command gives 2" in result.output


@pytest.mark.parametrize("spec, message, code", [
    ("3/2", "expected I/N with 0 <= I < N", 2),
    ("x", "expected I/N", 2),
    ("60/100", "200 rows make 50 batches of 4, too few for 100 shards; use at most 50", 1),
])
def test_bad_shard_specs_are_refused(fault_setup, tmp_path, spec, message, code):
    result = invoke(*embed_args(fault_setup, tmp_path / "c.h5"), "--shard", spec)
    assert result.exit_code == code and message in result.output and not (tmp_path / "c.h5").exists()


def test_devices_all_on_a_cpu_machine_equals_the_plain_run(fault_setup, tmp_path):
    out = tmp_path / "c.h5"
    result = invoke(*embed_args(fault_setup, out), "--devices", "all")
    assert result.exit_code == 0, result.output
    assert not differences(snapshot(out), fault_setup.reference)
    result = invoke(*embed_args(fault_setup, tmp_path / "d.h5"), "--devices", "2")
    assert result.exit_code == 1 and "--devices 2: this machine has no GPU" in result.output


def test_two_devices_round_robin_equals_the_plain_run(fault_setup, tmp_path):
    """Two logical CPU devices (TF must be configured before it starts, so in a process of its own)
    exercise the several-device path: one model copy per device, batches round-robin; a stored
    layer travels the same way (compared with one device in the same process)."""
    out, one = tmp_path / "c.h5", tmp_path / "one.h5"
    done = processes.call(reliability.embed_on_two_logical_cpus, fault_setup.model, fault_setup.data, out, one)
    assert done.returncode == 0, done.stderr[-2000:]
    assert not differences(snapshot(out), snapshot(one))
    with h5py.File(out, "r") as f, h5py.File(one, "r") as g:
        assert f["layers/conv2d"][:].tobytes() == g["layers/conv2d"][:].tobytes()
    # the features of a backbone that also hands out a layer, against the plain run's (another graph)
    np.testing.assert_allclose(snapshot(out)["features"].astype(np.float32),
                               fault_setup.reference["features"].astype(np.float32), rtol=2e-3, atol=2e-3)


# --- Ray -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ray_address():
    """A local Ray instance with 2 CPUs and no dashboard, shared by this module's Ray tests."""
    ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install '.[ray]')")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.mark.slow
def test_ray_engine_equals_the_plain_run_failed_images_included(fault_setup, ray_address, tmp_path):
    damaged = reliability.Setup(tmp_path / "data", fault_setup.model)
    shutil.copytree(fault_setup.data, damaged.data)
    reliability.damage_images(damaged.data / "img_align_celeba")
    n_failed = sum(not embeds for _, embeds in reliability.DAMAGES.values())
    layers = ["--layers", "conv2d:grid:2"]  # stored layers travel through Ray too
    # batch 40: 5 Ray Data rows, not 50 (each row costs Ray overhead, and none takes another path)
    local = invoke(*embed_args(damaged, tmp_path / "local.h5", batch=40), *layers)
    assert local.exit_code == cli.EXIT_FAILED_ROWS, local.output
    # in process: this process is the Ray driver already (ray_address), as a user's script would be
    done = invoke(*embed_args(damaged, tmp_path / "ray.h5", batch=40), *layers, "--engine", "ray",
                  "--ray-address", ray_address)
    assert done.exit_code == cli.EXIT_FAILED_ROWS, done.output[-2000:]
    assert f"done: {N_IMAGES - n_failed} ok, {n_failed} failed" in done.output
    assert not differences(snapshot(tmp_path / "ray.h5"), snapshot(tmp_path / "local.h5"))
    with h5py.File(tmp_path / "ray.h5", "r") as f, h5py.File(tmp_path / "local.h5", "r") as g:
        assert f["layers/conv2d"].shape == (N_IMAGES, 2, 2, 8)
        assert f["layers/conv2d"][:].tobytes() == g["layers/conv2d"][:].tobytes()


@pytest.mark.reliability
def test_ray_engine_killed_mid_run_resumes_to_the_same_cache(fault_setup, ray_address, tmp_path):
    out = tmp_path / "c.h5"
    proc = reliability.start_embed(fault_setup, out, "--engine", "ray", "--ray-address", ray_address)
    reliability.wait_until(lambda: rows_done(out) >= 8, proc, timeout=300)
    proc.send_signal(signal.SIGSTOP)  # freeze the driver (its writer) where it is, then kill it
    saved = rows_done(out)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 8 <= saved < N_IMAGES, "the kill did not land mid-run"
    done = reliability.run_cli(*embed_args(fault_setup, out), "--engine", "ray", "--ray-address", ray_address,
                               timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"resumed at row {saved} of {N_IMAGES}" in done.stdout
    assert not differences(snapshot(out), fault_setup.reference)


def test_ray_engine_without_ray_says_how_to_install_it(fault_setup, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    result = invoke(*embed_args(fault_setup, tmp_path / "c.h5"), "--engine", "ray")
    assert result.exit_code == 1 and "pip install 'celeba-heads[ray]'" in result.output
