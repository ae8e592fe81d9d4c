"""Fault injection for `embed`: kills at random moments, Ctrl-C, a full disk, a concurrent reader,
damaged images. Each case runs the real CLI in another process (harness.processes: forked from a
preloaded interpreter in `make test`, a fresh one at full count) and checks the result against an
uninterrupted run, bit for bit.

tests/test_faults.py runs the cases and asserts on their results (`harness.trials` says how many);
`python -m bench.reliability` runs them at full count and rewrites docs/RELIABILITY.md.
"""

import os
import random
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import h5py
import numpy as np

from cli import EXIT_FAILED_ROWS, EXIT_INTERRUPTED
from harness import processes

N_IMAGES, BATCH = 200, 4
DATASETS = ("features", "image_id", "labels", "partition", "status", "error")
PHASES = ("before the first write", "mid-run", "finalising")


@dataclass
class Setup:
    """A generated dataset, a tiny saved Keras backbone, and an uninterrupted run to compare with."""
    data: Path
    model: Path
    reference: dict = None
    reference_path: Path = None
    seconds_to_first_row: float = 0.0
    seconds_total: float = 0.0


def embed_args(setup, out, batch=BATCH):
    return ["embed", "--data-dir", str(setup.data), "--out", str(out), "--model", str(setup.model),
            "--value-range", "0,1", "--image-size", "32", "--batch-size", str(batch)]


def embed_on_two_logical_cpus(model, data, two, one, layers="conv2d:grid:2"):
    """In a process of its own (`processes.call`: TensorFlow is configured before it starts): the
    CPU split into two logical devices, then the setup's model and data embedded with both (one model
    copy per device, batches round-robin) into `two`, and with one into `one`, at BATCH."""
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from embed.backbones import BackboneSpec
    from embed.dataset import open_dataset
    from embed.placement import Placement, build
    from embed.runner import EmbedSpec, embed
    for devices, path in (("2", two), ("1", one)):
        backbone, engine = build(BackboneSpec(model, value_range=(0.0, 1.0), image_size=32, layers=layers),
                                 Placement(devices=devices))
        if len(engine.backbones) != int(devices):
            raise RuntimeError(f"{len(engine.backbones)} backbone copies for --devices {devices}")
        embed(open_dataset(data), backbone, path, EmbedSpec(batch_size=BATCH), engine=engine)


def start_embed(setup, out, *extra, capture=False):
    """`embed` of the setup into `out` (plus extra options) in another process (harness.processes.start)."""
    return processes.start(*embed_args(setup, out), *extra, capture=capture)


def run_cli(*args, timeout=300):
    """The CLI in another process (where the process is the point: it is killed, or must not share
    this one's state); returns CompletedProcess with text output."""
    return processes.run(*args, timeout=timeout)


def cli_in_process(*args):
    """The CLI run in this process (click's CliRunner: no interpreter or TensorFlow start-up); returns a
    CompletedProcess like run_cli's. Not thread-safe: it swaps sys.stdout and sys.stderr."""
    from click.testing import CliRunner

    import cli
    result = CliRunner().invoke(cli.main, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)


def rows_done(path):
    """rows_done of the cache at `path`, or -1 while it does not exist (yet)."""
    try:
        with h5py.File(path, "r", locking=False) as f:
            return int(f.attrs["rows_done"])
    except (OSError, KeyError):
        return -1


def snapshot(path):
    with h5py.File(path, "r", locking=False) as f:
        return {name: f[name][:] for name in DATASETS}


def differences(a, b):
    """Names of the datasets that differ (dtype or any bit) between two snapshots."""
    def same(x, y):
        if x.dtype != y.dtype or x.shape != y.shape:
            return False
        return np.array_equal(x, y) if x.dtype == object else x.tobytes() == y.tobytes()
    return [n for n in DATASETS if not same(a[n], b[n])]


def rows_written_not_done(path):
    """Rows at or above rows_done that already hold data: written by a killed run but not marked
    done, so a resume writes them again."""
    with h5py.File(path, "r", locking=False) as f:
        done = int(f.attrs["rows_done"])
        written = (f["status"][done:] != 0) | np.any(f["features"][done:] != 0, axis=1)
    return int(written.sum())


def prepare_model(path):
    """A tiny conv backbone saved as a real .keras file at `path` (32x32 RGB -> 256-d)."""
    import keras
    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(256, activation="tanh", name="embedding")(x)  # the default cut: before the classifier
    keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x)).save(path)
    return Path(path)


def prepare(workdir):
    """Generate the dataset and a tiny conv backbone (a real .keras file) in `workdir`, then time an
    uninterrupted run: kill moments are drawn from its timings, results compared with its cache.
    Once made, `workdir` is reused: another process (a pytest-xdist worker) reads the same setup;
    callers make it under a lock."""
    import json

    from embed.sample import make_sample

    workdir = Path(workdir)
    record = workdir / "setup.json"
    if record.is_file():
        timings = json.loads(record.read_text())
        return Setup(workdir / "data", workdir / "tiny.keras", snapshot(workdir / "reference.h5"),
                     workdir / "reference.h5", timings["seconds_to_first_row"], timings["seconds_total"])
    make_sample(workdir / "data", n=N_IMAGES, seed=5)
    setup = Setup(workdir / "data", prepare_model(workdir / "tiny.keras"))
    out = workdir / "reference.h5"
    began = time.perf_counter()
    proc = start_embed(setup, out, capture=True)
    while proc.poll() is None:
        if not setup.seconds_to_first_row and rows_done(out) > 0:
            setup.seconds_to_first_row = time.perf_counter() - began
        time.sleep(0.002)
    setup.seconds_total = time.perf_counter() - began
    _, stderr = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"reference run failed: {stderr[-1000:]}")
    setup.seconds_to_first_row = setup.seconds_to_first_row or setup.seconds_total
    setup.reference, setup.reference_path = snapshot(out), out
    record.write_text(json.dumps({"seconds_to_first_row": setup.seconds_to_first_row,
                                  "seconds_total": setup.seconds_total}))
    return setup


@dataclass
class KillTrial:
    phase: str
    delay: float            # seconds from process start to SIGKILL
    killed: bool            # False if the run finished before the signal arrived
    rows_at_kill: int       # rows_done after the kill (-1: no cache under the real name yet)
    rows_redone: int        # rows written but not marked done, written again by the resume
    info_ok: bool           # `info` opened the file (or rightly said there is none)
    resume_ok: bool         # the same command, run again, exited 0 and resumed at rows_at_kill
    differing: list = field(default_factory=list)

    @property
    def survived(self):
        return self.info_ok and self.resume_ok and not self.differing


def wait_until(predicate, proc, timeout=120):
    """Poll predicate() every 2 ms until it holds, the process ends or timeout seconds pass."""
    deadline = time.time() + timeout
    while not predicate() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.002)


def kill_trial(setup, out, phase, rng, in_process=False):
    """Start `embed`, SIGKILL it at a random moment of `phase`, check `info`, resume, compare.
    in_process: `info` and the resume run in this process (the killed run is another process either way)."""
    batch_seconds = (setup.seconds_total - setup.seconds_to_first_row) / (N_IMAGES / BATCH)
    began = time.perf_counter()
    proc = start_embed(setup, out)
    if phase == "before the first write":
        time.sleep(rng.uniform(0, setup.seconds_to_first_row))
    elif phase == "mid-run":
        target = rng.randrange(BATCH, N_IMAGES - 2 * BATCH)
        wait_until(lambda: rows_done(out) >= target, proc)
        time.sleep(rng.uniform(0, 1.5 * batch_seconds))
    else:
        wait_until(lambda: rows_done(out) >= N_IMAGES - BATCH, proc)
        time.sleep(rng.uniform(0, 2 * batch_seconds))
    delay = time.perf_counter() - began
    killed = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    at_kill = rows_done(out)
    redone = rows_written_not_done(out) if at_kill >= 0 else 0
    cli_run = cli_in_process if in_process else run_cli
    info = cli_run("info", out)
    info_ok = info.returncode == 0 if out.exists() else "no such cache file" in info.stderr
    resumed = cli_run(*embed_args(setup, out))
    expect = (f"resumed at row {at_kill} of {N_IMAGES}" if 0 < at_kill < N_IMAGES
              else "already complete" if at_kill == N_IMAGES else "done: ")
    resume_ok = resumed.returncode == 0 and expect in resumed.stdout
    differing = differences(snapshot(out), setup.reference) if resumed.returncode == 0 else list(DATASETS)
    return KillTrial(phase, delay, killed, at_kill, redone, info_ok, resume_ok, differing)


def kill_trials(setup, workdir, n_trials, seed=0, parallel=2, in_process=False):
    """n_trials kills spread over the phases (1/5 before the first write, 3/5 mid-run, 1/5
    finalising; the last one finalising if fewer than 5), `parallel` at a time; trial i draws its
    moment from Random(seed + i). in_process: `info` and the resumes run in this process, one trial
    at a time (click's CliRunner is not thread-safe), which saves two interpreter start-ups a trial."""
    from concurrent.futures import ThreadPoolExecutor

    phases = [PHASES[0] if i % 5 == 0 else PHASES[2] if i % 5 == 4 else PHASES[1] for i in range(n_trials)]
    if n_trials >= 3 and PHASES[2] not in phases:
        phases[-1] = PHASES[2]
    def trial(i):
        return kill_trial(setup, Path(workdir) / f"kill{i}.h5", phases[i], random.Random(seed + i), in_process)

    if in_process:
        return [trial(i) for i in range(n_trials)]
    with ThreadPoolExecutor(parallel) as pool:
        return list(pool.map(trial, range(n_trials)))


@dataclass
class CtrlC:
    exit_code: int
    rows_saved: int
    message: str
    resume_ok: bool
    differing: list

    @property
    def survived(self):
        return (self.exit_code == EXIT_INTERRUPTED and "run the same command again to resume" in self.message
                and self.resume_ok and not self.differing)


def ctrl_c_trial(setup, out, after_rows):
    """Start `embed`, press Ctrl-C (SIGINT) once after_rows are saved, then resume and compare."""
    proc = start_embed(setup, out, capture=True)
    wait_until(lambda: rows_done(out) >= after_rows, proc)
    # Freeze the run where it is, so Ctrl-C lands mid-run even if this poll was slow to notice.
    proc.send_signal(signal.SIGSTOP)
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGCONT)
    _, stderr = proc.communicate(timeout=60)
    saved = rows_done(out)
    resumed = cli_in_process(*embed_args(setup, out))  # the interrupted run was the process to test
    differing = differences(snapshot(out), setup.reference) if resumed.returncode == 0 else list(DATASETS)
    return CtrlC(proc.returncode, saved, stderr.strip(), resumed.returncode == 0, differing)


@dataclass
class DiskFull:
    skipped: str = ""              # why the case could not run here, else ""
    create_exit: int = 0           # a disk too small for even the empty cache
    create_error: str = ""
    create_leftovers: list = field(default_factory=list)
    write_exit: int = 0            # a disk that fills mid-run
    write_error: str = ""
    rows_saved: int = 0
    info_ok: bool = False
    resume_ok: bool = False
    differing: list = field(default_factory=list)

    @property
    def survived(self):
        return (not self.skipped and self.create_exit == 1 and not self.create_leftovers
                and self.write_exit == 1 and 0 < self.rows_saved < N_IMAGES and self.info_ok
                and self.resume_ok and not self.differing)


def _error_line(stderr):
    lines = [line for line in stderr.splitlines() if line.startswith("Error:")]
    return lines[-1] if lines else stderr.strip()[-300:]


def _room_for_a_third(setup):
    """Bytes for the empty cache (as `create_cache` reserves them) plus a third of the rows."""
    from cache import layout
    from cache.writer import empty_cache_bytes

    with h5py.File(setup.reference_path, "r") as f:
        ids = [i.decode() for i in f["image_id"][:]]
        names = list(f["labels"].attrs["names"])
        row_bytes = f["features"].dtype.itemsize * f["features"].shape[1] + layout.ERROR_BYTES
    return empty_cache_bytes(ids, names) + N_IMAGES * row_bytes // 3


def _mount_tmpfs(folder, size):
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                          capture_output=True, text=True)


def disk_full_trial(setup, workdir):
    """Embed into a size-limited tmpfs: once too small to create the cache, once filling mid-run (in
    another process: HDF5 cannot close a file it failed to write); then grow it and resume."""
    mnt = Path(workdir) / "small-disk"
    mnt.mkdir()
    if os.geteuid() != 0:
        return DiskFull(skipped="mounting a size-limited tmpfs needs root")
    mounted = _mount_tmpfs(mnt, "16k")
    if mounted.returncode != 0:
        return DiskFull(skipped=f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    result = DiskFull()
    out = mnt / "c.h5"
    try:
        done = cli_in_process(*embed_args(setup, out))
        result.create_exit, result.create_error = done.returncode, _error_line(done.stderr)
        result.create_leftovers = sorted(p.name for p in mnt.iterdir())
        # Room for the empty cache and about a third of the rows.
        subprocess.run(["mount", "-o", f"remount,size={_room_for_a_third(setup) // 1024}k", str(mnt)], check=True)
        done = run_cli(*embed_args(setup, out))
        result.write_exit, result.write_error = done.returncode, _error_line(done.stderr)
        result.rows_saved = rows_done(out)
        result.info_ok = cli_in_process("info", out).returncode == 0
        subprocess.run(["mount", "-o", "remount,size=4m", str(mnt)], check=True)
        done = cli_in_process(*embed_args(setup, out))
        result.resume_ok = done.returncode == 0 and f"resumed at row {result.rows_saved}" in done.stdout
        result.differing = differences(snapshot(out), setup.reference) if done.returncode == 0 else list(DATASETS)
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
    return result


@dataclass
class ConcurrentReader:
    reads: int              # times the reader opened the cache while `embed` was writing
    distinct_prefixes: int  # different rows_done values it saw
    inconsistent: int       # reads whose finished rows differed from the reference's
    writer_exit: int
    differing: list

    @property
    def survived(self):
        return self.reads > 0 and self.inconsistent == 0 and self.writer_exit == 0 and not self.differing


def concurrent_reader_trial(setup, out):
    """Read the cache in a loop (the reader API `info` uses) while `embed` writes it."""
    from cache.errors import UserError
    from cache.reader import cache_info, open_cache

    proc = start_embed(setup, out)
    reads, seen, inconsistent = 0, set(), 0
    while proc.poll() is None:
        try:
            with open_cache(out) as f:
                done = int(f.attrs["rows_done"])
                rows = {name: f[name][:done] for name in ("features", "status", "error")}
            cache_info(out)
        except UserError:
            time.sleep(0.002)  # not created yet
            continue
        reads += 1
        seen.add(done)
        if any(not np.array_equal(rows[n], setup.reference[n][:done]) for n in rows):
            inconsistent += 1
    differing = differences(snapshot(out), setup.reference) if proc.returncode == 0 else list(DATASETS)
    return ConcurrentReader(reads, len(seen), inconsistent, proc.returncode, differing)


# name -> (how the file is damaged, should it embed?)
DAMAGES = {
    "000001.jpg": ("truncated to a third", False),
    "000002.jpg": ("zero bytes", False),
    "000003.jpg": ("random bytes", False),
    "000004.jpg": ("a PNG named .jpg", True),
    "000005.jpg": ("grayscale JPEG", True),
    "000006.jpg": ("CMYK JPEG", True),
    "000007.jpg": ("1x1 pixel", True),
    "000008.jpg": ("4000x4000 pixels", True),
    "000009.jpg": ("a directory", False),
    "000010.jpg": ("no read permission", os.geteuid() == 0),  # root reads any file
    "000011.jpg": ("deleted", False),
}


def damage_images(images):
    from PIL import Image

    good = (images / "000001.jpg").read_bytes()
    pixels = Image.open(images / "000004.jpg").convert("RGB")
    (images / "000001.jpg").write_bytes(good[: len(good) // 3])
    (images / "000002.jpg").write_bytes(b"")
    (images / "000003.jpg").write_bytes(np.random.default_rng(3).bytes(len(good)))
    pixels.save(images / "000004.jpg", format="PNG")
    pixels.convert("L").save(images / "000005.jpg")
    pixels.convert("CMYK").save(images / "000006.jpg")
    Image.new("RGB", (1, 1), (200, 100, 50)).save(images / "000007.jpg")
    pixels.resize((4000, 4000)).save(images / "000008.jpg")
    (images / "000009.jpg").unlink()
    (images / "000009.jpg").mkdir()
    (images / "000010.jpg").chmod(0)
    (images / "000011.jpg").unlink()


@dataclass
class DamagedImages:
    expected_failed: list
    failed: list            # ids `info` lists as failed
    exit_code: int
    summary_line: str

    @property
    def survived(self):
        n = len(self.expected_failed)
        return (self.failed == self.expected_failed and self.exit_code == EXIT_FAILED_ROWS
                and f"{N_IMAGES - n} ok, {n} failed, 0 not done" in self.summary_line)


def damaged_images_trial(setup, workdir):
    import json

    copy = Path(workdir) / "damaged"
    shutil.copytree(setup.data, copy)
    damage_images(copy / "img_align_celeba")
    out = Path(workdir) / "damaged.h5"
    done = run_cli(*embed_args(Setup(copy, setup.model), out))
    info = json.loads(run_cli("info", out, "--json").stdout)
    summary = [line for line in done.stdout.splitlines() if line.startswith("done:")]
    return DamagedImages(expected_failed=sorted(k for k, (_, ok) in DAMAGES.items() if not ok),
                         failed=sorted(f["image_id"] for f in info["failures"]), exit_code=done.returncode,
                         summary_line=summary[0] if summary else done.stderr.strip())


