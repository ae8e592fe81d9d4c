"""The real CelebA sample (shared/celeba-sample, 1,987 original JPEGs): both file formats round-trip."""

import h5py
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

import cli


@pytest.fixture(scope="module")
def expected(celeba_sample):
    """Ids, 0/1 labels and partition parsed independently with pandas from the Kaggle CSVs."""
    attrs = pd.read_csv(celeba_sample / "list_attr_celeba.csv", dtype={"image_id": str})
    part = pd.read_csv(celeba_sample / "list_eval_partition.csv", dtype={"image_id": str})
    assert (attrs["image_id"] == part["image_id"]).all()
    values = attrs.drop(columns="image_id")
    assert set(np.unique(values.to_numpy())) == {-1, 1}
    return {"ids": attrs["image_id"].tolist(), "names": list(values.columns),
            "labels": (values.to_numpy() == 1).astype(np.uint8), "partition": part["partition"].to_numpy()}


@pytest.mark.slow
@pytest.mark.parametrize("labels_name, partition_name", [
    ("list_attr_celeba.txt", "list_eval_partition.txt"), ("list_attr_celeba.csv", "list_eval_partition.csv")])
def test_real_sample_round_trips_ids_labels_partition(celeba_sample, probe_saved_model, expected, tmp_path,
                                                      labels_name, partition_name):
    out = tmp_path / "real.h5"
    result = CliRunner().invoke(cli.main, [
        "embed", "--labels", str(celeba_sample / labels_name), "--partition", str(celeba_sample / partition_name),
        "--images", str(celeba_sample / "img_align_celeba"), "--out", str(out),
        "--model", str(probe_saved_model), "--image-size", "32", "--batch-size", "128"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "done: 1987 ok, 0 failed" in result.output
    with h5py.File(out, "r") as f:
        assert [s.decode() for s in f["image_id"][:]] == expected["ids"]
        assert [str(n) for n in f["labels"].attrs["names"]] == expected["names"]
        np.testing.assert_array_equal(f["labels"][:], expected["labels"])
        np.testing.assert_array_equal(f["partition"][:], expected["partition"])
        features = f["features"][:].astype(np.float32)
    assert np.bincount(expected["partition"]).tolist() == [548, 780, 659]
    assert features[:, 0].min() >= 0 and features[:, 1].max() <= 1  # probe: pixel min, max
    assert 0.2 < features[:, 2:].mean() < 0.8  # real faces, not blank images
