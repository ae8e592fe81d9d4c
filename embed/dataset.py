"""Find a labelled image set on disk and list its samples: ids, image paths, labels, partition.

`locate` resolves `--data-dir` (CelebA layout) and the `--labels/--partition/--images` overrides;
`load_dataset` joins the label and partition files, checks every id against the image folder,
and returns a `Dataset` whose row order (label-file order) is the cache's row order.
`folder_dataset` is `--images DIR` with no labels file: every image file under DIR, sorted by
relative path, with no attributes (they come at training time: `--labels`), every row in train
unless a partition file or the official split says otherwise.
"""

import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from cache import layout
from cache.errors import UserError
from cache.units import counted, plural
from embed.labels import read_labels, read_partition

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}
# CelebA's official split by image number (1-based, inclusive upper bounds).
OFFICIAL_SPLIT_BOUNDS = ((162_770, 0), (182_637, 1), (202_599, 2))
CELEBA_ID = re.compile(r"^(\d{6})\.(jpg|png)$")


@dataclass(frozen=True)
class Dataset:
    """The samples to embed, one row each.

    image_ids: N ids (paths relative to images_dir); attribute_names: A names;
    labels: uint8 [N, A] in {0, 1} (A = 0 for a folder embedded without labels); partition: int8
    [N] in {0, 1, 2};
    missing: ids whose image file does not exist (embedded as failed rows);
    unlabelled: image files in images_dir with no label row (not embedded, reported);
    sources: where labels, partition and images came from.
    """
    images_dir: Path
    image_ids: list
    attribute_names: list
    labels: np.ndarray
    partition: np.ndarray
    sources: dict
    missing: list = field(default_factory=list)
    unlabelled: list = field(default_factory=list)
    unused_partition_rows: int = 0

    @property
    def paths(self):
        return [str(self.images_dir / image_id) for image_id in self.image_ids]

    def fingerprint(self):
        """sha256 over ids, attribute names, labels and partition (not the image bytes)."""
        return layout.dataset_fingerprint(self.image_ids, self.attribute_names, self.labels, self.partition)


def _first_existing(folder, names):
    for name in names:
        if (folder / name).is_file():
            return folder / name
    return None


def locate(data_dir=None, labels=None, partition=None, images=None):
    """Resolve (labels_file, partition_file or None, images_dir); labels_file None: images alone
    (no --data-dir, no --labels), embedded without labels.

    In data_dir: `img_align_celeba/` (or Kaggle's nested `img_align_celeba/img_align_celeba/`),
    `list_attr_celeba.txt` or `.csv`, `list_eval_partition.txt` or `.csv`. Explicit paths win.
    """
    folder = Path(data_dir) if data_dir else None
    if folder is not None and not folder.is_dir():
        raise UserError(f"--data-dir {folder}: not a folder")
    if labels is None:
        if folder is None and images is not None:  # a folder to embed now and label later
            if not Path(images).is_dir():
                raise UserError(f"image folder {images} does not exist; pass --images DIR")
            return None, (Path(partition) if partition else None), Path(images)
        if folder is None:
            raise UserError("give --data-dir (CelebA layout), --labels FILE and --images DIR, or --images DIR "
                            "alone (every image, labelled later)")
        labels = _first_existing(folder, ["list_attr_celeba.txt", "list_attr_celeba.csv"])
        if labels is None:
            raise UserError(f"{folder}: no list_attr_celeba.txt or list_attr_celeba.csv; pass --labels FILE")
    if partition is None and folder is not None:
        partition = _first_existing(folder, ["list_eval_partition.txt", "list_eval_partition.csv"])
    if images is None:
        if folder is None:
            raise UserError("give --images DIR (the folder the image ids are relative to)")
        images = folder / "img_align_celeba"
        if (images / "img_align_celeba").is_dir():
            images = images / "img_align_celeba"
    images = Path(images)
    if not images.is_dir():
        raise UserError(f"image folder {images} does not exist; pass --images DIR")
    return Path(labels), (Path(partition) if partition else None), images


def official_split(image_ids):
    """CelebA's partition by image number: 1-162,770 train, -182,637 val, -202,599 test."""
    values = np.empty(len(image_ids), np.int8)
    for i, image_id in enumerate(image_ids):
        match = CELEBA_ID.match(image_id)
        number = int(match.group(1)) if match else 0
        if not 1 <= number <= OFFICIAL_SPLIT_BOUNDS[-1][0]:
            raise UserError(f"image id {image_id!r} is not a CelebA file name (000001.jpg-202599.jpg); "
                            "the official split needs CelebA ids, give a partition file instead")
        values[i] = next(p for bound, p in OFFICIAL_SPLIT_BOUNDS if number <= bound)
    return values


def _check_inside(images_dir, real_root, image_id, where):
    """Refuse ids that are absolute, climb with '..', or resolve outside the image folder."""
    parts = PurePosixPath(image_id.replace("\\", "/")).parts
    if image_id.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", image_id) or ".." in parts:
        raise UserError(f"{where}: image id {image_id!r} points outside the image folder; refused")
    real = os.path.realpath(images_dir / image_id)
    if os.path.commonpath([real, real_root]) != real_root:
        raise UserError(f"{where}: image id {image_id!r} resolves outside the image folder "
                        f"(to {real}); refused")


def _scan(images_dir, label_table):
    """(missing ids, unlabelled files); refuses ids escaping images_dir."""
    real_root = os.path.realpath(images_dir)
    entries = {}
    with os.scandir(images_dir) as it:
        for entry in it:
            entries[entry.name] = entry
    missing = []
    for image_id, line in zip(label_table.ids, label_table.lines):
        where = f"{label_table.path}:{line}"
        entry = entries.get(image_id)
        if entry is None:
            _check_inside(images_dir, real_root, image_id, where)
            if not os.path.lexists(images_dir / image_id):
                missing.append(image_id)
        elif entry.is_symlink() or image_id in (".", ".."):
            _check_inside(images_dir, real_root, image_id, where)
            if not os.path.exists(images_dir / image_id):
                missing.append(image_id)
    labelled = set(label_table.ids)
    unlabelled = sorted(name for name, entry in entries.items()
                        if Path(name).suffix.lower() in IMAGE_SUFFIXES and name not in labelled
                        and stat.S_ISREG(entry.stat().st_mode))
    return missing, unlabelled


def load_dataset(labels_path, images_dir, partition_path=None, use_official_split=False):
    """Read labels (+ partition) and check them against images_dir; returns a Dataset.

    Partition source, in order: a `partition` column in the label CSV, partition_path, the
    official CelebA split if use_official_split; otherwise a UserError says what to pass.
    """
    table = read_labels(labels_path)
    images_dir = Path(images_dir)
    sources = {"labels": str(labels_path), "images": str(images_dir)}
    unused = 0
    if table.partition is not None:
        partition = table.partition
        sources["partition"] = f"{labels_path} (partition column)"
    elif partition_path is not None:
        part = read_partition(partition_path)
        lookup = dict(zip(part.ids, part.values))
        absent = [(i, n) for i, n in zip(table.ids, table.lines) if i not in lookup]
        if absent:
            raise UserError(f"{partition_path}: {counted(len(absent), 'labelled image')} "
                            f"{plural('has', len(absent))} no partition row, "
                            f"e.g. {absent[0][0]!r} ({labels_path}:{absent[0][1]})")
        partition = np.array([lookup[i] for i in table.ids], np.int8)
        unused = len(part.ids) - len(table.ids)
        sources["partition"] = str(partition_path)
    elif use_official_split:
        partition = official_split(table.ids)
        sources["partition"] = "official CelebA split by image number"
    else:
        raise UserError(f"no partition for {labels_path}: pass --partition FILE, add a 'partition' "
                        "column to the CSV, or use --official-split for CelebA's split by image number")
    missing, unlabelled = _scan(images_dir, table)
    return Dataset(images_dir=images_dir, image_ids=table.ids, attribute_names=table.names,
                   labels=table.values, partition=partition, sources=sources, missing=missing,
                   unlabelled=unlabelled, unused_partition_rows=unused)


def folder_images(images_dir):
    """Relative paths ('/'-separated) of every image file (IMAGE_SUFFIXES) under images_dir, sorted;
    a link leading out of the folder is refused."""
    images_dir = Path(images_dir)
    real_root = os.path.realpath(images_dir)
    found = []
    for root, folders, files in os.walk(images_dir):
        folders.sort()
        for name in files:
            if Path(name).suffix.lower() in IMAGE_SUFFIXES:
                image_id = (Path(root) / name).relative_to(images_dir).as_posix()
                if (Path(root) / name).is_symlink():
                    _check_inside(images_dir, real_root, image_id, str(images_dir))
                found.append(image_id)
    return sorted(found)


def folder_dataset(images_dir, partition_path=None, use_official_split=False):
    """Every image under images_dir with no attributes (a Dataset whose labels are [N, 0]): sorted by
    relative path; partition from partition_path (it must list every image), the official split, or
    else every row in train."""
    images_dir = Path(images_dir)
    ids = folder_images(images_dir)
    if not ids:
        raise UserError(f"{images_dir}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) in it or its sub-folders")
    sources = {"labels": None, "images": str(images_dir)}
    unused = 0
    if partition_path is not None:
        part = read_partition(partition_path)
        lookup = dict(zip(part.ids, part.values))
        absent = [i for i in ids if i not in lookup]
        if absent:
            raise UserError(f"{partition_path}: {counted(len(absent), 'image')} of {images_dir} "
                            f"{plural('has', len(absent))} no partition row, "
                            f"e.g. {absent[0]!r}")
        partition = np.array([lookup[i] for i in ids], np.int8)
        unused, sources["partition"] = len(part.ids) - len(ids), str(partition_path)
    elif use_official_split:
        partition, sources["partition"] = official_split(ids), "official CelebA split by image number"
    else:
        partition, sources["partition"] = np.zeros(len(ids), np.int8), "every image in train (no partition file)"
    return Dataset(images_dir=images_dir, image_ids=ids, attribute_names=[], labels=np.zeros((len(ids), 0), np.uint8),
                   partition=partition, sources=sources, unused_partition_rows=unused)


def open_dataset(data_dir=None, labels=None, partition=None, images=None, official_split=False):
    """`locate` the files (`--data-dir` and its overrides) and `load_dataset` them (or, for --images
    alone, `folder_dataset`)."""
    labels_path, partition_path, images_dir = locate(data_dir, labels, partition, images)
    if labels_path is None:
        return folder_dataset(images_dir, partition_path, use_official_split=official_split)
    return load_dataset(labels_path, images_dir, partition_path, use_official_split=official_split)
