"""The CLI in another process, for the tests where the process is the point: it is killed or
interrupted, or it must not share the test's state (a run loaded by a process that never trained it);
`run_each`, many short commands each in its own process (forked from one fresh interpreter); and
`call`, a harness function in a forked child (one that configures TensorFlow before it starts).

Two ways to start the same command:
- fresh: `python cli.py ...`, a new interpreter as users run it, TensorFlow's import included (8 s
  of CPU on the AVX2-only EPYC);
- forked: from a server process (multiprocessing's forkserver) that imported TensorFlow, Keras,
  h5py and `cli` once and ran nothing else: no TensorFlow op, no head module, no Keras object
  registered. A child starts where a fresh interpreter would be after those imports, then runs
  `cli.main` with its arguments, its stdout and stderr in files: 1.3 s instead of 9 s a run.
`make test` forks (harness.trials.QUICK); `make reliability` and `python -m bench.reliability`
(CELEBA_HEADS_TRIALS=full) start fresh interpreters. Both give the same cache bit for bit.
"""

import importlib
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from harness.trials import counts

ROOT = Path(__file__).resolve().parents[1]
PRELOADED = ("tensorflow", "keras", "h5py", "cli")


def forked():
    """True where children are forked from the preloaded server (make test), False for fresh interpreters."""
    return not counts()["fresh_processes"]


def start(*args, capture=False, fork=None):
    """Start `cli.py args...`; returns a subprocess.Popen or a Forked (the same methods: pid, poll,
    wait, send_signal, kill, communicate, returncode). capture: stdout and stderr are kept as text
    for communicate(); otherwise discarded. fork: True or False to choose, None as forked() says."""
    args = [str(a) for a in args]
    if forked() if fork is None else fork:
        return Forked(args, capture)
    output = subprocess.PIPE if capture else subprocess.DEVNULL
    # A shell runs background jobs with SIGINT ignored and a child inherits that, so under a CI
    # started in the background Ctrl-C would never reach the run: the child gets the default back.
    return subprocess.Popen([sys.executable, str(ROOT / "cli.py"), *args], stdout=output, stderr=output, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def run(*args, timeout=300, fork=None):
    """`cli.py args...` to its end; returns a CompletedProcess with text stdout and stderr."""
    proc = start(*args, capture=True, fork=fork)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise
    return subprocess.CompletedProcess(args, proc.returncode, stdout, stderr)


def run_each(commands, timeout=300):
    """Each `cli.py args` of `commands` (lists of arguments) to its end, one after another, each in a
    process of its own forked from one fresh interpreter that imported `cli` (and not TensorFlow): one
    interpreter start for all of them. Returns a CompletedProcess each, with text stdout and stderr
    (returncode -N: signal N ended it)."""
    with tempfile.TemporaryDirectory(prefix="cli-runs-") as folder:
        jobs = [[[str(a) for a in args], os.path.join(folder, f"{i}.out"), os.path.join(folder, f"{i}.err")]
                for i, args in enumerate(commands)]
        code = f"from harness.processes import _fork_each; _fork_each({jobs!r})"
        driver = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        if driver.returncode != 0:
            raise RuntimeError(f"the interpreter forking the runs failed: {driver.stderr[-2000:]}")
        return [subprocess.CompletedProcess(args, status, Path(out).read_text(errors="replace"),
                                            Path(err).read_text(errors="replace"))
                for (args, out, err), status in zip(jobs, json.loads(driver.stdout))]


def _fork_each(jobs):
    """run_each's interpreter: `cli`, h5py and pandas imported once, then a forked child per job;
    prints the statuses as JSON."""
    for name in ("cli", "h5py", "pandas"):  # before the forks, so that each child starts with them
        importlib.import_module(name)
    statuses = []
    for args, stdout_path, stderr_path in jobs:
        pid = os.fork()
        if pid == 0:
            _child(_cli, args, stdout_path, stderr_path)
        statuses.append(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
    print(json.dumps(statuses))


def call(function, *args, timeout=300):
    """function(*args) (a module-level function; args: Python literals and paths) to its end in a
    process forked from the preloaded server, where TensorFlow is imported but not started (so the
    function may still configure it); returns a CompletedProcess with text stdout and stderr,
    returncode 1 and the traceback on stderr if it raised."""
    target = [function.__module__, function.__qualname__, [str(a) if isinstance(a, Path) else a for a in args]]
    proc = Forked(target, True, run=_call)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise
    return subprocess.CompletedProcess(target, proc.returncode, stdout, stderr)


def _call(target):
    module, name, args = target
    getattr(importlib.import_module(module), name)(*args)


def _cli(args):
    import cli
    cli.main(args, prog_name="cli.py")


def _server():
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(PRELOADED))
    return context


def _child(run, args, stdout_path, stderr_path):
    """The child: its own SIGINT handling (KeyboardInterrupt, as a fresh interpreter has), its output
    into the given files, then run(args) (`_cli`: the CLI exactly as `python cli.py` runs it); exits
    with its status (1 and the traceback on stderr if it raised)."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for fd, path in ((1, stdout_path), (2, stderr_path)):
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(target, fd)
        os.close(target)
    try:
        run(args)
        status = 0
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
    except BaseException:
        import traceback
        traceback.print_exc()
        status = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


class Forked:
    """A CLI run (or `call`'s function) forked from the preloaded server, with subprocess.Popen's methods."""

    def __init__(self, args, capture, run=_cli):
        self._folder = tempfile.TemporaryDirectory(prefix="cli-run-") if capture else None
        stdout, stderr = ((os.path.join(self._folder.name, "stdout"), os.path.join(self._folder.name, "stderr"))
                          if capture else (os.devnull, os.devnull))
        self._paths = (stdout, stderr)
        self._process = _server().Process(target=_child, args=(run, args, stdout, stderr))
        self._process.start()
        self.pid = self._process.pid

    @property
    def returncode(self):
        """The exit status, -N if signal N ended it, None while it runs."""
        return self._process.exitcode

    def poll(self):
        return self._process.exitcode

    def wait(self, timeout=None):
        self._process.join(timeout)
        if self._process.exitcode is None:
            raise subprocess.TimeoutExpired(f"cli.py (pid {self.pid})", timeout)
        return self._process.exitcode

    def send_signal(self, sig):
        if self._process.exitcode is None:
            os.kill(self.pid, sig)

    def kill(self):
        self.send_signal(signal.SIGKILL)

    def communicate(self, timeout=None):
        """Wait for the end; returns (stdout, stderr) as text ("" when not captured)."""
        self.wait(timeout)
        if self._folder is None:
            return "", ""
        try:
            return tuple(Path(p).read_text(errors="replace") for p in self._paths)
        finally:
            self._folder.cleanup()
