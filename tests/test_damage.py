"""A cache or a run directory from elsewhere is input too: every reader command either works or
fails with one line that starts with the damaged file's path, never a traceback or a crash.

Targeted cases first (the ones found by hand), then a hypothesis suite that applies one damage at a
time to a small valid cache and a valid run directory (1,000+ derandomized cases), and file
truncations run in a subprocess, where an HDF5 crash would show as a signal."""

import json
import os
import shutil

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cli
from cache import layout
from cache.errors import UserError
from harness import processes
from harness.caches import planted_cache
from harness.trials import counts
from heads.run.fit import prepare, run_kinds, train_heads
from heads.run.task import TaskSpec

ATTRS = "Male,Smiling"
# a few in `make test`, the full counts (which docs/RELIABILITY.md quotes) in `make reliability`
TRIALS = counts()
CACHE_CASES, RUN_CASES, TRUNCATIONS = TRIALS["cache_cases"], TRIALS["run_cases"], TRIALS["truncations"]


@pytest.fixture(scope="module")
def valid(tmp_path_factory):
    """A valid cache (which also stores a spatial layer, "grid"), a logreg run and a Keras-head run
    (with a transform) on it."""
    root = tmp_path_factory.mktemp("valid")
    planted_cache(root / "cache.h5", layer=True)
    run_kinds(TaskSpec(root / "cache.h5", ATTRS), root / "base", ["logreg"], plots=False)
    train_heads(TaskSpec(root / "cache.h5", ATTRS, features="standardize"), root / "head", epochs=1, plots=False)
    return root


def invoke(*args):
    return CliRunner().invoke(cli.main, [str(a) for a in args])


def assert_ok_or_one_line(result, path):
    """The command worked (exit 0), or failed with exactly one `Error: <path>...` line."""
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        f"traceback: {result.exception!r}\n{result.output}"
    if result.exit_code == 0:
        return True
    assert result.exit_code in (1, 2), result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: {path}"), result.stderr
    return False


def damaged_copy(valid, tmp_path, damage):
    path = tmp_path / "c.h5"
    shutil.copy(valid / "cache.h5", path)
    with h5py.File(path, "r+") as f:
        damage(f)
    return path


@pytest.mark.parametrize("damage, message", [
    (lambda f: f.attrs.__setitem__("rows_done", "many"), "attribute rows_done is 'many', not an integer"),
    (lambda f: f.attrs.__setitem__("backbone", "{broken"), "attribute backbone is not a JSON object"),
    (lambda f: f.attrs.__setitem__("preprocessing", "[1, 2]"), "attribute preprocessing is not a JSON object"),
    (lambda f: f["labels"].__setitem__((slice(0, 5), 0), 7), "labels hold values other than 0/1 (rows 0..4, e.g. 7)"),
    (lambda f: f["partition"].__setitem__(slice(3, 4), 9), "partition hold values other than 0/1/2 (rows 3..3, e.g. 9)"),
    (lambda f: f["status"].__setitem__(slice(10, 12), 42), "status hold values other than 0/1/2 (rows 10..11, e.g. 42)"),
    (lambda f: f.attrs.modify("rows_done", 10**6), "rows_done=1000000 is outside 0..1000"),
    (lambda f: f.attrs.modify("format_version", 99), "cache format 99 is newer"),
])
def test_damaged_cache_attributes_and_values_fail_in_one_line(valid, tmp_path, damage, message):
    path = damaged_copy(valid, tmp_path, damage)
    for args in (["info", path], ["train-heads", path, "--out", tmp_path / "r", "--attrs", ATTRS],
                 ["baselines", path, "--out", tmp_path / "b", "--attrs", ATTRS],
                 ["evaluate", valid / "base" / "logreg", "--cache", path]):
        result = invoke(*args)
        assert not assert_ok_or_one_line(result, path), args
        assert message in result.stderr, (args, result.stderr)


def test_nonfinite_features_stop_the_run_or_are_dropped_on_request(valid, tmp_path):
    def poison(f):
        f["features"][7] = np.nan
        f["features"][20, 3] = np.inf
    path = damaged_copy(valid, tmp_path, poison)
    result = invoke("baselines", path, "--out", tmp_path / "b", "--attrs", ATTRS, "--no-plots")
    assert not assert_ok_or_one_line(result, path)
    assert "2 rows of the train split marked ok hold non-finite features (NaN or inf), e.g. rows 7 (000007.jpg)" \
        in result.stderr and "--drop-nonfinite" in result.stderr
    result = invoke("baselines", path, "--out", tmp_path / "b", "--attrs", ATTRS, "--drop-nonfinite", "--no-plots")
    assert result.exit_code == 0 and "left out 2 rows whose features hold NaN or inf" in result.stderr
    config = json.loads((tmp_path / "b" / "logreg" / "config.json").read_text())
    assert config["excluded_nonfinite_rows"] == {"train": 2, "val": 0, "test": 0}
    assert config["rows"]["train"] == 599 - 2
    result = invoke("info", path, "--check")
    assert result.exit_code == 1 and "check FAILED: 2 of 999 ok rows hold non-finite features" in result.stderr
    result = invoke("info", valid / "cache.h5", "--check")
    assert result.exit_code == 0 and "check: OK" in result.output


def test_failed_rows_may_hold_nan(valid, tmp_path):
    """Row 5 is a failed image (planted_cache): its NaN features are expected and never read."""
    path = damaged_copy(valid, tmp_path, lambda f: f["features"].__setitem__(5, np.nan))
    assert invoke("info", path, "--check").exit_code == 0


def test_changed_model_files_are_refused(valid, tmp_path):
    for i, (run, name) in enumerate((("head", "model.keras"), ("head", "transform.npz"),
                                     ("base/logreg", "estimators.joblib"))):
        copy = tmp_path / f"run{i}"
        shutil.copytree(valid / run, copy)
        (copy / name).write_bytes((copy / name).read_bytes() + b"x")
        for args in (["evaluate", copy], ["compare", copy]):
            result = invoke(*args)
            assert not assert_ok_or_one_line(result, copy / name)
            assert "sha256 differs from config.json" in result.stderr


def test_model_that_safe_mode_refuses_names_the_file_and_trust_model(valid, tmp_path):
    import keras
    copy = tmp_path / "head"
    shutil.copytree(valid / "head", copy)
    inputs = keras.Input((32,))
    outputs = {a: keras.layers.Lambda(lambda x: x[:, :1] * 0 + 0.5, name=a)(inputs) for a in ATTRS.split(",")}
    keras.Model(inputs, outputs).save(copy / "model.keras")
    config = json.loads((copy / "config.json").read_text())
    from cache.layout import sha256_file
    config["files"]["model.keras"] = sha256_file(copy / "model.keras")  # a file the run itself recorded
    (copy / "config.json").write_text(json.dumps(config))
    result = invoke("evaluate", copy)
    assert not assert_ok_or_one_line(result, copy / "model.keras")
    assert "safe mode refuses this model" in result.stderr and "--trust-model" in result.stderr


@pytest.mark.parametrize("name, content, message", [
    ("config.json", None, "config.json: not found"),
    ("config.json", "{not json", "config.json: not valid JSON"),
    ("config.json", "[]", "config.json: expected a JSON object"),
    ("config.json", '{"kind": "logreg"}', "config.json: lacks 'attributes'"),
    ("metrics.json", "{", "metrics.json: not valid JSON"),
])
def test_missing_or_unparsable_run_files_fail_in_one_line(valid, tmp_path, name, content, message):
    copy = tmp_path / "run"
    shutil.copytree(valid / "base" / "logreg", copy)
    if content is None:
        os.remove(copy / name)
    else:
        (copy / name).write_text(content)
    for command in ("evaluate", "compare"):
        result = invoke(command, copy)
        assert not assert_ok_or_one_line(result, copy), command
        assert message in result.stderr


# ---- fuzzing: one damage at a time ----

ROOT_ATTRS = [*layout.REQUIRED_ATTRS, "layers"]
FUZZED_DATASETS = [*layout.DATASETS, "layers/grid"]
GARBAGE = st.one_of(st.integers(-2**40, 2**40), st.floats(allow_nan=True), st.text(max_size=30),
                    st.binary(max_size=30), st.just("{"), st.just("[]"), st.just('{"a": 1}'), st.just("null"),
                    st.lists(st.integers(-5, 5), min_size=1, max_size=4).map(np.array))


def _replace(f, name, data):
    attrs = dict(f[name].attrs)
    del f[name]
    f.create_dataset(name, data=data)
    for key, value in attrs.items():
        f[name].attrs[key] = value


@st.composite
def cache_damage(draw):
    """(description, function that damages an open h5py.File)."""
    kind = draw(st.sampled_from(["attr_delete", "attr_set", "dataset_delete", "dataset_reshape", "dataset_retype",
                                 "values", "nonfinite", "names", "features_value"]))
    if kind == "attr_delete":
        name = draw(st.sampled_from(ROOT_ATTRS))
        return f"delete attribute {name}", lambda f: f.attrs.__delitem__(name)
    if kind == "attr_set":
        name, value = draw(st.sampled_from(ROOT_ATTRS)), draw(GARBAGE)
        return f"attribute {name} = {value!r}", lambda f: f.attrs.__setitem__(name, value)
    if kind == "dataset_delete":
        name = draw(st.sampled_from(FUZZED_DATASETS))
        return f"delete dataset {name}", lambda f: f.__delitem__(name)
    if kind == "dataset_reshape":
        name, cut = draw(st.sampled_from(FUZZED_DATASETS)), draw(st.sampled_from([-1, 1, "col"]))

        def reshape(f):
            data = f[name][()]
            data = (np.concatenate([data, data[:1]]) if cut == 1 else data[:-1] if cut == -1
                    else np.stack([data, data], axis=-1))
            _replace(f, name, data)
        return f"reshape {name} ({cut})", reshape
    if kind == "dataset_retype":
        name = draw(st.sampled_from(FUZZED_DATASETS))
        dtype = draw(st.sampled_from(["float64", "int64", "S4", "bool"]))
        return f"retype {name} to {dtype}", lambda f: _replace(f, name, f[name][()].astype(dtype) if dtype != "S4"
                                                           else np.full(f[name].shape, b"x", "S4"))
    if kind == "values":
        name = draw(st.sampled_from(["labels", "partition", "status"]))
        row, value = draw(st.integers(0, 999)), draw(st.integers(-128, 127))
        return f"{name}[{row}] = {value}", lambda f: f[name].__setitem__(row, value)
    if kind == "nonfinite":
        row, value = draw(st.integers(0, 999)), draw(st.sampled_from([np.nan, np.inf, -np.inf]))
        name = draw(st.sampled_from(["features", "layers/grid"]))
        return f"{name}[{row}] = {value}", lambda f: f[name].__setitem__(row, value)
    if kind == "features_value":
        row, value = draw(st.integers(0, 999)), draw(st.floats(-1e3, 1e3))
        return f"features[{row}] = {value} (harmless)", lambda f: f["features"].__setitem__(row, value)
    value = draw(st.one_of(st.just(np.array(["a"], dtype=object)), GARBAGE))
    return f"labels.names = {value!r}", lambda f: f["labels"].attrs.__setitem__("names", value)


@pytest.mark.trials
@settings(max_examples=CACHE_CASES, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
@given(damage=cache_damage())
def test_fuzz_damaged_cache(valid, tmp_path_factory, damage):
    description, apply = damage
    folder = tmp_path_factory.mktemp("fuzz")
    path = folder / "c.h5"
    shutil.copy(valid / "cache.h5", path)
    try:
        with h5py.File(path, "r+") as f:
            apply(f)
    except Exception:  # noqa: BLE001  h5py or numpy refused to write this damage: nothing to read back
        return
    assert_ok_or_one_line(invoke("info", path, "--check"), path)
    try:  # what train-heads, baselines and sweep do before training
        prepared = prepare(TaskSpec(path, ATTRS))
        assert np.isfinite(prepared.train.features).all() and set(np.unique(prepared.task.train.labels)) <= {0, 1}, description
    except UserError as exc:
        assert str(exc).startswith(str(path)) and "\n" not in str(exc), (description, str(exc))
    try:  # the same for a head trained on the stored layer, in memory and streamed
        for stream in ("never", "always"):
            prepared = prepare(TaskSpec(path, ATTRS, inputs="grid", stream=stream))
            rows = prepared.train.features
            values = rows if isinstance(rows, np.ndarray) else rows.read(0, len(rows))
            assert values.shape[1:] == (2, 2, 8) and np.isfinite(values).all(), description
    except UserError as exc:  # a usage error names the option first, then the file
        message = str(exc).removeprefix("--input grid: ")
        assert message.startswith(str(path)) and "\n" not in message, (description, str(exc))
    result = invoke("evaluate", valid / "base" / "logreg", "--cache", path, "--json")
    if assert_ok_or_one_line(result, path):
        metrics = json.loads(result.stdout)["attributes"]
        assert all(0 <= m["test"]["accuracy"] <= 1 for m in metrics.values()), description
    shutil.rmtree(folder)


@st.composite
def run_damage(draw):
    """(description, run subfolder, function(run_dir) that damages it)."""
    run = draw(st.sampled_from(["base/logreg", "head"]))
    name = draw(st.sampled_from(["config.json", "metrics.json", "history.csv", "model.keras", "estimators.joblib",
                                 "transform.npz"]))
    kind = draw(st.sampled_from(["delete", "truncate", "append", "json_key", "json_value"]))
    cut = draw(st.floats(0, 1))
    key = draw(st.sampled_from(["kind", "attributes", "thresholds", "cache", "caches", "files", "settings",
                                "features", "run"]))
    value = draw(st.one_of(st.none(), st.integers(), st.text(max_size=10), st.lists(st.integers(), max_size=2),
                           st.dictionaries(st.text(max_size=5), st.integers(), max_size=2)))

    def apply(folder):
        path = folder / name
        if not path.exists():
            return
        if kind == "delete":
            os.remove(path)
        elif kind == "truncate":
            data = path.read_bytes()
            path.write_bytes(data[:int(len(data) * cut)])
        elif kind == "append":
            path.write_bytes(path.read_bytes() + b"\0garbage")
        elif name.endswith(".json"):
            data = json.loads(path.read_text())
            if kind == "json_key":
                data.pop(key, None)
            else:
                data[key] = value
            path.write_text(json.dumps(data))
    return f"{run}/{name}: {kind} {key} {value!r} {cut:.2f}", run, apply


@pytest.mark.trials
@settings(max_examples=RUN_CASES, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
@given(damage=run_damage())
def test_fuzz_damaged_run_directory(valid, tmp_path_factory, damage):
    description, run, apply = damage
    folder = tmp_path_factory.mktemp("run")
    copy = folder / "run"
    shutil.copytree(valid / run, copy)
    apply(copy)
    for command in ("evaluate", "compare"):
        assert_ok_or_one_line(invoke(command, copy), copy)
    shutil.rmtree(folder)


@pytest.mark.trials
def test_truncated_cache_never_crashes_the_interpreter(valid, tmp_path):
    """HDF5 can crash on some truncations: each reader runs in its own process (harness.processes.run_each:
    forked from one fresh interpreter), and a signal (negative return code) is a failure."""
    data = (valid / "cache.h5").read_bytes()
    rng = np.random.default_rng(0)
    cuts = sorted(set(rng.integers(0, len(data), TRUNCATIONS - 5).tolist()) | {0, 100, 512, 2048, len(data) - 1})
    paths = [tmp_path / f"cut{cut}.h5" for cut in cuts]
    for cut, path in zip(cuts, paths):
        path.write_bytes(data[:cut])
    outcomes = []
    for cut, path, proc in zip(cuts, paths, processes.run_each([("info", path) for path in paths], timeout=600)):
        assert proc.returncode in (0, 1), (cut, proc.returncode, proc.stderr[-500:])
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 0 or (len(lines) == 1 and lines[0].startswith(f"Error: {path}")), (cut, proc.stderr)
        outcomes.append(proc.returncode)
    assert outcomes.count(1) >= len(cuts) - 1  # a truncated cache is refused (the last byte may not matter)
