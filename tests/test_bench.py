"""The benchmark scripts stay runnable: `python -m bench --quick` (sizes shrunk; figures not checked)."""

import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def test_quick_benchmark_runs_and_writes_its_table(celeba_sample, tmp_path):
    results = tmp_path / "RESULTS.md"
    done = subprocess.run([sys.executable, "-m", "bench", "--quick", "--results", str(results)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600, env={**__import__("os").environ,
                                                                            "CELEBA_SAMPLE": str(celeba_sample)})
    assert done.returncode == 0, done.stderr[-2000:]
    text = results.read_text()
    for measure in ("embed: pipeline efficiency", "heads: speed-up over naive fit", "heads: ours, --attrs all",
                    "baselines: logistic regression", "cache float16: load / plain read",
                    "cache: head val accuracy float16 vs float32", "sweep: 4 variants",
                    "ray: Ray engine, instance already running"):
        assert measure in text, measure
    assert "| PASS |" in text or "| MISS |" in text
    # every row names its group, so `--only` keeps the rows of the groups it does not run
    from bench.__main__ import GROUPS, _group
    measures = [line.split(" | ")[0][2:] for line in text.splitlines() if line.startswith("| ") and " | " in line]
    assert [m for m in measures[1:] if _group(m) not in GROUPS] == []
