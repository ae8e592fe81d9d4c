"""The benchmark groups stay discoverable: `python -m bench --list` (in a subprocess: tests never
import bench). `make bench-quick` (which .ci/run runs) runs every group at shrunk sizes."""

import subprocess
import sys

from tests.conftest import ROOT

GROUPS = ("embed", "feed", "heads", "baselines", "probes", "defaults", "layers", "views", "cache", "sweep", "ray",
          "rehearsal", "audit", "faces", "labels", "serve", "tflite", "tail")


def test_every_benchmark_group_registers_itself():
    done = subprocess.run([sys.executable, "-m", "bench", "--list"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    listed = [line.split(":")[0] for line in done.stdout.splitlines()]
    assert listed == list(GROUPS), done.stdout
