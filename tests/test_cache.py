"""The HDF5 cache: creation, row writing, validation on open, split loading."""

import h5py
import numpy as np
import pytest

from cache import layout
from cache.errors import UserError
from cache.reader import cache_info, load_split, open_cache
from cache.writer import CacheWriter, create_cache

SETTINGS = {"backbone": {"model": "m", "kind": "keras_app"}, "preprocessing": {"image_size": 8},
            "dataset_fingerprint": "f" * 64, "sources": {"labels": "x"}}


def make_cache(path, n=10, dim=4, dtype="float16"):
    partition = np.array([0] * 5 + [1] * 3 + [2] * 2)[:n]
    labels = (np.arange(n * 2).reshape(n, 2) % 3 == 0).astype(np.uint8)
    create_cache(path, image_ids=[f"{i}.jpg" for i in range(n)], attribute_names=["A", "B"], labels=labels,
                 partition=partition, feature_dim=dim, feature_dtype=dtype, settings=SETTINGS)
    return labels, partition


def fill(path, n=10, dim=4, failed=(), batch=4):
    features = np.arange(n * dim, dtype=np.float32).reshape(n, dim) / 7
    with CacheWriter(path) as writer:
        for start in range(0, n, batch):
            rows = np.arange(start, min(n, start + batch))
            status = np.array([layout.STATUS_FAILED if r in failed else layout.STATUS_OK for r in rows])
            errors = ["broken" if r in failed else "" for r in rows]
            writer.write_rows(start, features[rows], status, errors)
    return features


def test_new_cache_has_the_documented_layout(tmp_path):
    path = tmp_path / "c.h5"
    labels, partition = make_cache(path)
    with h5py.File(path, "r") as f:
        assert set(layout.DATASETS) <= set(f)
        assert f["features"].shape == (10, 4) and f["features"].dtype == np.float16
        assert list(f["labels"].attrs["names"]) == ["A", "B"]
        assert f.attrs["rows_done"] == 0 and (f["status"][:] == layout.STATUS_NOT_DONE).all()
        np.testing.assert_array_equal(f["labels"][:], labels)
        np.testing.assert_array_equal(f["partition"][:], partition)
        assert f["features"].chunks[0] == 10
    assert not (tmp_path / "c.h5.tmp").exists()


def test_rows_round_trip_and_failed_rows_are_excluded(tmp_path):
    path = tmp_path / "c.h5"
    labels, _ = make_cache(path)
    features = fill(path, failed={1, 6})
    train = load_split(path, "train")
    assert train.rows.tolist() == [0, 2, 3, 4] and train.n_failed == 1
    np.testing.assert_allclose(train.features, features[[0, 2, 3, 4]], rtol=1e-3)
    assert train.features.dtype == np.float32 and train.image_ids == ["0.jpg", "2.jpg", "3.jpg", "4.jpg"]
    stored = load_split(path, "train", dtype=None)  # as the heads load it: no conversion, no copy needed
    assert stored.features.dtype == np.float16 and stored.features.ctypes.data % 64 == 0
    np.testing.assert_array_equal(stored.features, features[[0, 2, 3, 4]].astype(np.float16))
    val = load_split(path, 1, attributes=["B"])
    assert val.rows.tolist() == [5, 7] and val.attributes == ["B"]
    np.testing.assert_array_equal(val.labels, labels[[5, 7]][:, [1]])
    info = cache_info(path)
    assert info["rows"] == {"ok": 8, "failed": 2, "not_done": 0}
    assert info["failures"][0] == {"row": 1, "image_id": "1.jpg", "error": "broken"}
    assert info["splits"]["val"] == {"rows": 3, "ok": 2, "positive_rate": {"A": 0.0, "B": 0.5}}


def test_split_with_interleaved_partitions_reads_every_run(tmp_path):
    path = tmp_path / "c.h5"
    partition = np.array([0, 1, 0, 0, 2, 1, 0])
    create_cache(path, image_ids=[str(i) for i in range(7)], attribute_names=["A"],
                 labels=np.zeros((7, 1)), partition=partition, feature_dim=2, feature_dtype="float32",
                 settings=SETTINGS)
    features = fill(path, n=7, dim=2, batch=3)
    train = load_split(path, "train")
    np.testing.assert_array_equal(train.features, features[[0, 2, 3, 6]])
    assert train.features.ctypes.data % 64 == 0


def test_unfinished_cache_is_refused_unless_partial_allowed(tmp_path):
    path = tmp_path / "c.h5"
    make_cache(path)
    with CacheWriter(path) as writer:
        writer.write_rows(0, np.ones((4, 4)), [layout.STATUS_OK] * 4, [""] * 4)
    with pytest.raises(UserError, match="6 of 10 rows are not embedded yet"):
        load_split(path, "train")
    assert load_split(path, "train", allow_partial=True).rows.tolist() == [0, 1, 2, 3]
    assert cache_info(path)["rows"] == {"ok": 4, "failed": 0, "not_done": 6}


def test_writer_refuses_gaps_and_overflow(tmp_path):
    path = tmp_path / "c.h5"
    make_cache(path)
    with CacheWriter(path) as writer:
        with pytest.raises(ValueError, match="do not continue"):
            writer.write_rows(4, np.ones((4, 4)), [1] * 4, [""] * 4)
        with pytest.raises(UserError, match="overflow float16; embed with --dtype float32"):
            writer.write_rows(0, np.full((4, 4), 1e6), [1] * 4, [""] * 4)


def test_second_writer_is_refused(tmp_path):
    path = tmp_path / "c.h5"
    make_cache(path)
    import subprocess
    import sys
    holder = subprocess.Popen([sys.executable, "-c", f"import h5py,time; f=h5py.File({str(path)!r},'r+'); "
                               "print('open', flush=True); time.sleep(30)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        with pytest.raises(UserError, match="locked by another process"):
            CacheWriter(path)
        assert cache_info(path)["rows"]["not_done"] == 10  # readers are not blocked
    finally:
        holder.kill()
        holder.wait()


def test_long_error_text_is_cut_on_a_character_boundary():
    text = "é" * 200
    cut = layout.truncate_error(text)
    assert len(cut) <= layout.ERROR_BYTES and cut.decode("utf-8") == "é" * 128


@pytest.mark.parametrize("damage, message", [
    (lambda f: f.attrs.__delitem__("feature_dim"), "missing attributes feature_dim"),
    (lambda f: f.attrs.modify("format_version", 99), "cache format 99 is newer"),
    (lambda f: f.__delitem__("status"), "lacks dataset"),
    (lambda f: (f.__delitem__("status"), f.create_dataset("status", data=np.zeros(3, np.int8))), "status has shape"),
    (lambda f: f.attrs.__setitem__("feature_dtype", "float32"), "features are float16 but the file says float32"),
    (lambda f: f.attrs.modify("rows_done", 11), "rows_done=11 is outside"),
])
def test_damaged_cache_is_refused_clearly(tmp_path, damage, message):
    path = tmp_path / "c.h5"
    make_cache(path)
    with h5py.File(path, "r+") as f:
        damage(f)
    with pytest.raises(UserError, match=message):
        open_cache(path)


def test_not_a_cache(tmp_path):
    (tmp_path / "x.h5").write_bytes(b"hello")
    with pytest.raises(UserError, match="not a readable HDF5 cache"):
        open_cache(tmp_path / "x.h5")
    with pytest.raises(UserError, match="no such cache file"):
        open_cache(tmp_path / "absent.h5")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = 1
    with pytest.raises(UserError, match="not a celeba-heads cache"):
        open_cache(tmp_path / "other.h5")
