"""What every benchmark group shares: the row a measure becomes, the group registry, sizes, the
real sample's location, the machine's description, and the planted CelebA-size features.

A group is one module of `bench.groups` with one function registered by `@group(NAME)`: it takes a
`Context` and returns its `Row`s. The runner (`python -m bench`) stamps each row with its group.
"""

import functools
import os
import platform
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = Path(os.environ.get("CELEBA_SAMPLE", ROOT.parent / "shared" / "celeba-sample"))
HEAD_ATTRIBUTES = ["Male", "Smiling", "Young"]
FULL = {"images": 512, "image_size": 224, "embed_batch": 64, "rounds": 7, "splits": (162_770, 19_867, 19_962),
        "seeds": (0, 1, 2), "feed_images": 1987}
QUICK = {"images": 24, "image_size": 64, "embed_batch": 8, "rounds": 1, "splits": (3_000, 600, 600), "seeds": (0,),
         "feed_images": 128}
GROUPS = {}  # name -> (order, function(Context) -> [Row])


@dataclass(frozen=True)
class Row:
    """One measure: its group, name, value and unit; a target (text), whether it passed (None: no
    target) and a note saying how it was measured."""
    group: str
    name: str
    value: object
    unit: str
    target: str = ""
    passed: object = None
    note: str = ""


def row(name, value, unit, target=None, passed=None, note=""):
    """A Row of the group being run (the runner fills in the group)."""
    return Row("", name, value, unit, target or "", passed, note)


def group(name, order):
    """Register a group's function under `name`; groups run by increasing `order`."""
    def decorate(function):
        GROUPS[name] = (order, function)
        return function
    return decorate


class Context:
    """What a group runs with: a scratch folder, the sizes (FULL or QUICK), and data built once for
    every group that needs it."""

    def __init__(self, workdir, quick):
        self.workdir, self.quick = Path(workdir), quick
        self.size = QUICK if quick else FULL

    @functools.cached_property
    def planted(self):
        """(features float32 [n, 1280], labels uint8 [n, 40]) at the sizes' split sizes (`bench.synthetic`)."""
        from bench.synthetic import planted
        return planted(sum(self.size["splits"]), 1280)


def machine():
    import tensorflow as tf
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return f"{os.cpu_count()} cores, {cpu}; Python {platform.python_version()}, TensorFlow {tf.__version__}"
