"""Embed now, label later: `embed --images DIR` alone embeds every image of the folder (sorted
relative paths, sub-folders too, no attributes, all train unless --partition); heads train on it
with --labels and --partition; shards whose labels differ still merge; old rules stay for old
caches."""

import json
import shutil

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

import cli
from tests.conftest import copy_dataset


def invoke(*args):
    return CliRunner().invoke(cli.main, [str(a) for a in args])


@pytest.fixture(scope="module")
def folder(sample_dir, tmp_path_factory):
    """The 40 generated images, a few moved into a sub-folder, no labels file beside them."""
    root = tmp_path_factory.mktemp("unlabelled") / "photos"
    shutil.copytree(sample_dir / "img_align_celeba", root)
    (root / "more").mkdir()
    for name in ("000003.jpg", "000010.jpg"):
        (root / name).rename(root / "more" / name)
    (root / "notes.txt").write_text("not an image")
    return root


def embed_folder(folder, out, probe, *extra):
    return invoke("embed", "--images", folder, "--out", out, "--model", probe, "--image-size", 16, "--batch-size", 8,
                  *extra)


def test_a_folder_embeds_without_labels_in_sorted_path_order(folder, probe_saved_model, tmp_path):
    out = tmp_path / "c.h5"
    result = embed_folder(folder, out, probe_saved_model)
    assert result.exit_code == 0, result.output
    assert "dataset: 40 images in" in result.output and "no labels: give them at training time with --labels" \
        in result.output
    with h5py.File(out, "r") as f:
        ids = [s.decode() for s in f["image_id"][:]]
        assert f["labels"].shape == (40, 0) and list(f["labels"].attrs["names"]) == []
        assert (f["partition"][:] == 0).all()
    assert ids == sorted(ids) and "more/000003.jpg" in ids and "notes.txt" not in ids
    info = invoke("info", out)
    assert info.exit_code == 0 and "40 ok, 0 failed" in info.output
    refused = invoke("train-heads", out, "--out", tmp_path / "r")
    assert refused.exit_code == 1 and "holds no labels (its images were embedded without a labels file): give them " \
        "with --labels FILE" in refused.output, refused.output


def test_labels_and_partition_at_training_time_match_an_embed_with_them(sample_dir, folder, probe_saved_model,
                                                                         tmp_path):
    """The same images embedded with their labels, and without them then overlaid: the same rows, labels and
    partition per image, and the same features (the same backbone pass per image, another row order)."""
    labelled = tmp_path / "labelled.h5"
    flat = copy_dataset(sample_dir, tmp_path / "flat")
    assert invoke("embed", "--data-dir", flat, "--out", labelled, "--model", probe_saved_model, "--image-size", 16,
                  "--batch-size", 8).exit_code == 0
    out = tmp_path / "c.h5"
    assert embed_folder(folder, out, probe_saved_model).exit_code == 0
    # the labels file names the images by their path in the folder
    moved = {"000003.jpg": "more/000003.jpg", "000010.jpg": "more/000010.jpg"}
    for name in ("list_attr_celeba.csv", "list_eval_partition.csv"):
        lines = (sample_dir / name).read_text().splitlines()
        fixed = [lines[0]] + [",".join([moved.get(l.split(",")[0], l.split(",")[0])] + l.split(",")[1:]) for l in lines[1:]]
        (tmp_path / name).write_text("\n".join(fixed) + "\n")
    from heads.run.task import TaskSpec, load_task
    overlaid = load_task(TaskSpec(out, "Male,Smiling", labels=[tmp_path / "list_attr_celeba.csv"],
                                  partition=tmp_path / "list_eval_partition.csv"))
    embedded = load_task(TaskSpec(labelled, "Male,Smiling"))
    for split in ("train", "val", "test"):
        a, b = overlaid.split(split), embedded.split(split)
        order = np.argsort([moved.get(i, i).rsplit("/", 1)[-1] for i in a.image_ids])
        assert [a.image_ids[k].rsplit("/", 1)[-1] for k in order] == b.image_ids
        np.testing.assert_array_equal(a.labels[order], b.labels)
        np.testing.assert_allclose(a.features[order], b.features, atol=1e-3)
    trained = invoke("baselines", out, "--out", tmp_path / "runs", "--models", "logreg", "--attrs", "Male,Smiling",
                     "--labels", tmp_path / "list_attr_celeba.csv", "--partition", tmp_path / "list_eval_partition.csv", "--no-plots")
    assert trained.exit_code == 0, trained.output
    record = json.loads((tmp_path / "runs" / "logreg" / "config.json").read_text())["labels"]
    assert record["attributes"]["Male"] == {"set": 40, "changed": 40, "unknown": 0, "new": True}


def test_partition_at_embed_time_must_list_every_image(folder, probe_saved_model, tmp_path):
    part = tmp_path / "p.csv"
    part.write_text("image_id,partition\n000001.jpg,1\n")
    result = embed_folder(folder, tmp_path / "c.h5", probe_saved_model, "--partition", part)
    assert result.exit_code == 1 and "39 images of" in result.output and "have no partition row" in result.output


def test_a_blank_cell_at_embed_time_points_to_training_time(sample_dir, probe_saved_model, tmp_path):
    data = copy_dataset(sample_dir, tmp_path / "d")
    (data / "list_attr_celeba.txt").unlink()
    text = (data / "list_attr_celeba.csv").read_text()
    first = text.splitlines()[1]
    (data / "list_attr_celeba.csv").write_text(text.replace(first, first.rsplit(",", 1)[0] + ",", 1))
    result = invoke("embed", "--data-dir", data, "--out", tmp_path / "c.h5", "--model", probe_saved_model)
    assert result.exit_code == 1 and "a cache stores known labels only: give unknown ones at training time, " \
        "--labels FILE" in result.output, result.output
    assert not (tmp_path / "c.h5").exists()


def test_shards_of_differently_labelled_runs_merge(sample_dir, probe_saved_model, tmp_path):
    data = copy_dataset(sample_dir, tmp_path / "d")
    common = ("--model", probe_saved_model, "--image-size", 16, "--batch-size", 8)
    single = tmp_path / "single.h5"
    assert invoke("embed", "--data-dir", data, "--out", single, *common).exit_code == 0
    first = tmp_path / "s0.h5"
    assert invoke("embed", "--data-dir", data, "--out", first, "--shard", "0/2", *common).exit_code == 0
    text = (data / "list_attr_celeba.txt").read_text()
    flipped = text.replace("000030.jpg -1", "000030.jpg  1", 1) if "000030.jpg -1" in text else \
        text.replace("000030.jpg  1", "000030.jpg -1", 1)
    assert flipped != text
    (data / "list_attr_celeba.txt").write_text(flipped)
    second = tmp_path / "s1.h5"
    assert invoke("embed", "--data-dir", data, "--out", second, "--shard", "1/2", *common).exit_code == 0
    merged = tmp_path / "m.h5"
    result = invoke("merge", first, second, "--out", merged)
    assert result.exit_code == 0, result.output
    with h5py.File(merged, "r") as m, h5py.File(single, "r") as s:
        np.testing.assert_array_equal(m["features"][:], s["features"][:])  # same machine, same batches
        assert (m["labels"][:] != s["labels"][:]).sum() == 1
        assert m.attrs["image_ids_fingerprint"] == s.attrs["image_ids_fingerprint"]
        assert m.attrs["dataset_fingerprint"] != s.attrs["dataset_fingerprint"]
    refused = invoke("train-heads", first, "--out", tmp_path / "r", "--attrs", "Male")
    assert refused.exit_code == 1 and "s0.h5: shard 0/2 of an `embed --shard` run (rows 0 to " in refused.output
    assert "not a whole cache; join the shards first: cli.py merge SHARD... --out CACHE" in refused.output
    assert not (tmp_path / "r").exists()
    assert "SHARD 0/2: rows 0 to " in invoke("info", first).output
    assert "SHARD" not in invoke("info", merged).output
