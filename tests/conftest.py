"""Shared fixtures: generated datasets, tiny backbones saved the way users' models are, the real sample.

Nothing here touches the network or real pretrained weights. TensorFlow is imported where a fixture
needs it: the pytest-xdist controller loads this file too, and a module-level import kept both
workers waiting 8 s for it.
"""

import contextlib
import fcntl
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Under pytest-xdist every worker gets its share of the cores for TensorFlow's and OpenMP's thread
# pools (and so do the processes a test starts, which inherit the environment): two workers on two
# cores, each with pools as wide as the machine, spend their time waiting on each other's threads
# (make test took 118 s instead of 126 s with a share of 1, paired rounds on a 2-core Xeon).
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    _share = str(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))
    for _name in ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
        os.environ.setdefault(_name, _share)

import numpy as np
import pytest

from embed.sample import make_sample

ROOT = Path(__file__).resolve().parents[1]
MADE_BY_TOOLS = {".venv", ".pytest_cache", ".hypothesis", "__pycache__", "demo-output", ".git", "build", "site"}


# `make test` runs pytest-xdist --dist loadfile --no-loadscope-reorder: whole files go to the two
# workers in collection order. The costliest files first (seconds per file from --durations=0 on
# the AVX2-only EPYC, 2026-12-03 session 14: 79, 70, 64, 50, 40, 30, 29, 26, 26, 24; test_tflite.py
# 52 and test_serve.py 30 on 2026-12-06, session 19) let both
# workers finish together; the rest keep pytest's order. A stale list costs balance, never a test.
# test_readme.py leads for `make reliability`, where its run of the docs' command blocks is the
# longest test (8.5 min).
COSTLIEST_FIRST = ("test_readme.py", "test_layers.py", "test_faces.py", "test_heads.py", "test_tflite.py",
                   "test_scale.py", "test_audit.py", "test_serve.py", "test_head_kinds.py", "test_faults.py",
                   "test_cli.py", "test_damage.py", "test_feed.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(COSTLIEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each file's order kept


@pytest.fixture(scope="session", autouse=True)
def project_root_stays_clean():
    """No test leaves a file in the project root (a command given a relative path runs in a workspace)."""
    def listing():
        return {p.name for p in ROOT.iterdir()} - MADE_BY_TOOLS
    before = listing()
    yield
    assert listing() <= before, f"tests left {sorted(listing() - before)} in {ROOT}"


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory):
    """A 40-image synthetic CelebA-layout dataset (read-only for tests; copy it to modify)."""
    out = tmp_path_factory.mktemp("sample")
    make_sample(out, n=40, seed=1)
    return out


def shared_data(variable, default, marker, what):
    """A folder of ../shared (or $variable) holding `marker`; CI must have it, elsewhere its tests skip."""
    path = Path(os.environ.get(variable, ROOT.parent / "shared" / default))
    if not (path / marker).is_file():
        if os.environ.get("CI"):
            pytest.fail(f"CI must provide {what}; not found at {path}")
        pytest.skip(f"{what} not found at {path}; set {variable}")
    return path


@pytest.fixture(scope="session")
def celeba_sample():
    """The 1,987 real CelebA images in shared/ (path from $CELEBA_SAMPLE or ../shared/celeba-sample)."""
    return shared_data("CELEBA_SAMPLE", "celeba-sample", "list_attr_celeba.txt", "the real CelebA sample")


@pytest.fixture(scope="session")
def face_cnns():
    """The two small pretrained face CNNs in shared/models (path from $CELEBA_MODELS or ../shared/models)."""
    return shared_data("CELEBA_MODELS", "models", "gender_mini_XCEPTION.hdf5", "the shared face CNNs")


def pixel_probe():
    """A stand-in for a TF-Hub image feature vector: any size RGB in, 5 statistics out:
    [min, max, mean R, mean G, mean B] of the pixels it receives (a tf.Module)."""
    import tensorflow as tf

    class PixelProbe(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
        def __call__(self, images):
            return tf.concat([tf.reduce_min(images, [1, 2, 3])[:, None], tf.reduce_max(images, [1, 2, 3])[:, None],
                              tf.reduce_mean(images, [1, 2])], axis=1)

    return PixelProbe()


@pytest.fixture(scope="session")
def probe_saved_model(tmp_path_factory):
    """pixel_probe() saved as a SavedModel folder, loaded through the real `hub.load` path by the tool."""
    import tensorflow as tf
    path = tmp_path_factory.mktemp("probe") / "pixel_probe"
    tf.saved_model.save(pixel_probe(), str(path))
    return path


@pytest.fixture(scope="session")
def grayscale_h5_model(tmp_path_factory):
    """A Keras .h5 classifier on 64x64 grayscale input with a layer named "embedding" (8-d)."""
    import keras
    keras.utils.set_random_seed(0)
    inputs = keras.Input((64, 64, 1))
    x = keras.layers.Conv2D(4, 3, strides=4, activation="relu", name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dense(8, activation="tanh", name="embedding")(x)
    outputs = keras.layers.Dense(2, activation="softmax", name="classifier")(x)
    model = keras.Model(inputs, outputs)
    path = tmp_path_factory.mktemp("h5") / "gray.h5"
    model.save(path)
    return path


@contextlib.contextmanager
def shared_folder(tmp_path_factory, name):
    """A folder every pytest-xdist worker of this test run sees (the workers' common temp dir), held
    under a lock while the caller fills it or reads it: the first worker builds, the others wait."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent
    folder = base / name
    folder.mkdir(exist_ok=True)
    with open(base / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield folder


def copy_dataset(src, dst):
    """Copy a sample dataset folder so a test may damage it."""
    import shutil
    shutil.copytree(src, dst)
    return Path(dst)


@pytest.fixture(scope="session")
def fault_setup(tmp_path_factory):
    """harness.faults' setup: a 200-image dataset, a tiny saved .keras backbone, and the cache of
    one uninterrupted `embed` subprocess run (batch 4) to compare other runs with, bit for bit.
    Made once per test run: pytest-xdist workers share it (under a lock)."""
    from harness import faults
    with shared_folder(tmp_path_factory, "fault-setup") as folder:
        return faults.prepare(folder)


@pytest.fixture(scope="session")
def cache(tmp_path_factory):
    """A planted cache (`harness.caches.planted_cache`: 1,000 rows, 32-d, learnable attributes), read-only."""
    from harness.caches import planted_cache
    path = tmp_path_factory.mktemp("planted") / "cache.h5"
    planted_cache(path)
    return path


def assert_served_from_images_as_evaluated(run, fault_setup, tmp_path, n=6, atol=2e-3):
    """predict and an exported SavedModel, from the image files of n test rows, give the
    probabilities evaluate scores from the cache (to atol: another graph decodes and runs the
    backbone); returns the scored task."""
    import tensorflow as tf

    from heads.run.evaluate import split_predictions
    from heads.serve.export import export_run
    from heads.serve.predict import predict_images
    run_obj, task, _, probabilities = split_predictions(run, "test")
    images = [str(fault_setup.data / "img_align_celeba" / task.test.image_ids[i]) for i in range(n)]
    for k, entry in enumerate(predict_images(run, images)):
        for j, name in enumerate(run_obj.attributes):
            assert entry["attributes"][name]["probability"] == pytest.approx(float(probabilities[k, j]), abs=atol)
    export_run(run, tmp_path / "served")
    served = tf.saved_model.load(str(tmp_path / "served"))
    out = served.signatures["from_bytes"](images=tf.constant([open(p, "rb").read() for p in images]))
    for j, name in enumerate(run_obj.attributes):
        np.testing.assert_allclose(out[name].numpy(), probabilities[:n, j], atol=atol)
    return task


def pytest_unconfigure(config):
    """A pytest-xdist worker, its report sent, leaves without tearing down its interpreter (TensorFlow's
    thread pools, Ray, the forkserver's cleanup: 2.3 s the controller waited for at the end of make test)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import atexit
        import sys
        atexit.register(lambda: (sys.stdout.flush(), sys.stderr.flush(), os._exit(0)))
