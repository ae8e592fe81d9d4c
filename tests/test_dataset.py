"""Finding a dataset on disk and joining labels, partition and image files."""

import os
import shutil

import numpy as np
import pytest

from cache.errors import UserError
from embed.dataset import load_dataset, locate, official_split
from tests.conftest import copy_dataset


def test_locate_prefers_text_files_and_finds_images(sample_dir):
    labels, partition, images = locate(sample_dir)
    assert labels.name == "list_attr_celeba.txt" and partition.name == "list_eval_partition.txt"
    assert images == sample_dir / "img_align_celeba"


def test_locate_finds_kaggle_nested_layout_and_csv(sample_dir, tmp_path):
    root = tmp_path / "kaggle"
    (root / "img_align_celeba").mkdir(parents=True)
    shutil.copytree(sample_dir / "img_align_celeba", root / "img_align_celeba" / "img_align_celeba")
    for name in ("list_attr_celeba.csv", "list_eval_partition.csv"):
        shutil.copy(sample_dir / name, root / name)
    labels, partition, images = locate(root)
    assert labels.name == "list_attr_celeba.csv" and partition.name == "list_eval_partition.csv"
    assert images == root / "img_align_celeba" / "img_align_celeba"


def test_explicit_paths_override(sample_dir):
    labels, partition, images = locate(sample_dir, labels=sample_dir / "list_attr_celeba.csv")
    assert labels.name == "list_attr_celeba.csv"


def test_locate_errors(tmp_path):
    with pytest.raises(UserError, match="give --data-dir"):
        locate()
    with pytest.raises(UserError, match="no list_attr_celeba.txt or list_attr_celeba.csv"):
        locate(tmp_path)


@pytest.mark.parametrize("labels_name, partition_name", [
    ("list_attr_celeba.txt", "list_eval_partition.txt"), ("list_attr_celeba.csv", "list_eval_partition.csv")])
def test_both_formats_give_the_same_dataset(sample_dir, labels_name, partition_name):
    data = load_dataset(sample_dir / labels_name, sample_dir / "img_align_celeba", sample_dir / partition_name)
    reference = load_dataset(sample_dir / "list_attr_celeba.txt", sample_dir / "img_align_celeba",
                             sample_dir / "list_eval_partition.txt")
    assert data.image_ids == reference.image_ids and data.fingerprint() == reference.fingerprint()
    assert len(data.image_ids) == 40 and data.missing == [] and data.unlabelled == []
    assert set(np.unique(data.partition)) == {0, 1, 2}


def test_missing_and_unlabelled_files_are_counted(sample_dir, tmp_path):
    root = copy_dataset(sample_dir, tmp_path / "d")
    os.remove(root / "img_align_celeba" / "000003.jpg")
    shutil.copy(root / "img_align_celeba" / "000001.jpg", root / "img_align_celeba" / "extra.jpg")
    data = load_dataset(root / "list_attr_celeba.txt", root / "img_align_celeba", root / "list_eval_partition.txt")
    assert data.missing == ["000003.jpg"] and "000003.jpg" in data.image_ids
    assert data.unlabelled == ["extra.jpg"]


def test_no_partition_is_a_clear_error_with_the_official_split_as_option(sample_dir):
    with pytest.raises(UserError, match="--official-split"):
        load_dataset(sample_dir / "list_attr_celeba.txt", sample_dir / "img_align_celeba")
    data = load_dataset(sample_dir / "list_attr_celeba.txt", sample_dir / "img_align_celeba",
                        use_official_split=True)
    assert (data.partition == 0).all()  # ids 1..40 are all in CelebA's train range


def test_official_split_boundaries():
    ids = ["000001.jpg", "162770.jpg", "162771.jpg", "182637.jpg", "182638.jpg", "202599.jpg"]
    np.testing.assert_array_equal(official_split(ids), [0, 0, 1, 1, 2, 2])
    with pytest.raises(UserError, match="not a CelebA file name"):
        official_split(["202600.jpg"])
    with pytest.raises(UserError, match="not a CelebA file name"):
        official_split(["face.jpg"])


def test_labelled_id_without_partition_row(sample_dir, tmp_path):
    partition = tmp_path / "p.txt"
    partition.write_text("000001.jpg 0\n")
    with pytest.raises(UserError, match=r"p.txt: 39 labelled images have no partition row, e.g. '000002.jpg'"):
        load_dataset(sample_dir / "list_attr_celeba.txt", sample_dir / "img_align_celeba", partition)


@pytest.mark.parametrize("bad_id", ["../secret.jpg", "/etc/passwd", "sub/../../x.jpg", "link.jpg"])
def test_ids_escaping_the_image_folder_are_refused(tmp_path, bad_id):
    images = tmp_path / "images"
    images.mkdir()
    (tmp_path / "secret.jpg").write_bytes(b"x")
    os.symlink(tmp_path / "secret.jpg", images / "link.jpg")
    labels = tmp_path / "labels.csv"
    labels.write_text(f"image_id,A,partition\nok.jpg,1,0\n{bad_id},0,0\n")
    (images / "ok.jpg").write_bytes(b"x")
    with pytest.raises(UserError, match=r"labels.csv:3: image id .* outside the image folder"):
        load_dataset(labels, images)


def test_symlink_inside_the_folder_is_fine(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    (images / "real.jpg").write_bytes(b"x")
    os.symlink(images / "real.jpg", images / "alias.jpg")
    labels = tmp_path / "labels.csv"
    labels.write_text("image_id,A,partition\nalias.jpg,1,0\n")
    assert load_dataset(labels, images).missing == []


def test_fingerprint_changes_with_labels(sample_dir, tmp_path):
    root = copy_dataset(sample_dir, tmp_path / "d")
    first = load_dataset(root / "list_attr_celeba.csv", root / "img_align_celeba", root / "list_eval_partition.csv")
    text = (root / "list_attr_celeba.csv").read_text().splitlines()
    cells = text[1].split(",")
    cells[1] = "1" if cells[1] == "-1" else "-1"
    text[1] = ",".join(cells)
    (root / "list_attr_celeba.csv").write_text("\n".join(text) + "\n")
    second = load_dataset(root / "list_attr_celeba.csv", root / "img_align_celeba", root / "list_eval_partition.csv")
    assert first.fingerprint() != second.fingerprint()
