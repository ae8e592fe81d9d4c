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


def machine_name():
    """The CPU model, with AVX-512 or not: what absolute times are labelled with."""
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")),
               platform.processor())
    flags = next((line for line in lines if line.startswith("flags")), "")
    return f"{os.cpu_count()} cores of {cpu}{' (AVX-512)' if ' avx512f' in flags else ''}"


def machine():
    import tensorflow as tf
    return f"{machine_name()}; Python {platform.python_version()}, TensorFlow {tf.__version__}"


def matmul_limit(m, k, n, rounds=3, min_seconds=0.5):
    """This machine's float32 matmul throughput at [m, k] @ [k, n], measured now: {"numpy": GFLOP/s,
    "tensorflow": GFLOP/s}, the best of `rounds` timed loops each (numpy's BLAS; TensorFlow's
    kernel inside one tf.function loop, as the heads' trainer runs it). Compute-bound targets are
    ratios to the faster of the two, measured in the same run."""
    import time

    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((m, k), dtype=np.float32), rng.standard_normal((k, n), dtype=np.float32)
    flops = 2.0 * m * k * n
    repeats = max(1, int(min_seconds * 50e9 / flops))  # about min_seconds at 50 GFLOP/s

    def numpy_loop():
        for _ in range(repeats):
            np.matmul(a, b)

    @tf.function(autograph=False)
    def tf_loop(x, y):
        def body(i, total):  # x changes each step (cheaply: it is the smaller operand), so no product is hoisted
            return i + 1, total + tf.reduce_sum(tf.matmul(x + tf.cast(i, tf.float32) * 1e-9, y))
        return tf.while_loop(lambda i, _: i < repeats, body, (tf.constant(0), tf.constant(0.0)))[1]

    x, y = tf.constant(a), tf.constant(b)
    timings = {"numpy": numpy_loop, "tensorflow": lambda: tf_loop(x, y).numpy()}
    result = {}
    for name, run in timings.items():
        run()  # warm: threads, traces
        best = float("inf")
        for _ in range(rounds):
            began = time.perf_counter()
            run()
            best = min(best, time.perf_counter() - began)
        result[name] = repeats * flops / best / 1e9
    return result


def mlp_training_flops(n_train, n_val, widths, epochs):
    """FLOPs of training a dense stack of `widths` (input, hidden..., outputs) for `epochs` on
    n_train rows, validating on n_val rows after each: forward 2*in*out per layer and row, backward
    the same for the weight gradients plus the input gradients of every layer but the first."""
    layers = list(zip(widths[:-1], widths[1:]))
    forward = sum(2 * i * o for i, o in layers)
    backward = forward + sum(2 * i * o for i, o in layers[1:])
    return epochs * (n_train * (forward + backward) + n_val * forward)
