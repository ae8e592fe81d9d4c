"""`--exclude FILE`: image ids whose train rows a run leaves out; val and test are never altered.

FILE is a CSV with an `image_id` column: audit's label_issues.csv or duplicates.csv, or any other
(other columns are ignored; an id listed twice counts once). Every id must be in the cache (any
split): an id that is not is a typo or another dataset's, and stops the run. What a run left out is
recorded as `Exclusion.record`: {"file" (absolute path), "sha256", "ids" (distinct ids listed),
"train_rows" (train rows left out), "val_test_ids" (listed ids of val or test, scored as usual)}.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cache import layout
from cache.errors import UserError
from cache.layout import sha256_file
from cache.reader import open_cache


@dataclass(frozen=True)
class ExcludeList:
    """The ids of an exclude file: path (absolute), sha256 of its bytes, ids (distinct, in file
    order), line (id -> the file line it first appears on; the header is line 1)."""
    path: str
    sha256: str
    ids: tuple
    line: dict


def read_exclude(path):
    """Read and check an exclude file (one-line UserError naming the file, and the line if one is at
    fault); blank lines are skipped."""
    where = Path(path)
    try:
        table = pd.read_csv(where, dtype=str, keep_default_na=False, skip_blank_lines=False)
    except FileNotFoundError:
        raise UserError(f"{where}: not found") from None
    except pd.errors.EmptyDataError:
        raise UserError(f"{where}: is empty; expected a CSV with an image_id column") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise UserError(f"{where}: not a readable CSV ({str(exc).strip().splitlines()[0]})") from None
    if "image_id" not in table.columns:
        shown = ", ".join(map(str, table.columns[:6])) + (", ..." if len(table.columns) > 6 else "")
        raise UserError(f"{where}: has no image_id column (its columns: {shown}); give audit's label_issues.csv "
                        "or duplicates.csv, or any CSV with an image_id column")
    lines = np.arange(len(table)) + 2
    blank = (table == "").all(axis=1).to_numpy()
    ids = table["image_id"].str.strip().to_numpy()[~blank]
    lines = lines[~blank]
    empty = np.flatnonzero(ids == "")
    if len(empty):
        raise UserError(f"{where}: line {lines[empty[0]]}: empty image_id")
    first = {}
    for image_id, line in zip(ids, lines):
        first.setdefault(str(image_id), int(line))
    return ExcludeList(str(where.resolve()), sha256_file(where), tuple(first), first)


@dataclass(frozen=True)
class Exclusion:
    """An exclude file checked against a cache: listed (its ExcludeList) and the partition of each
    listed id in the cache."""
    listed: ExcludeList
    partitions: np.ndarray

    def record(self, train_rows):
        """What the run stores: see the module docstring. train_rows: the train rows left out."""
        return {"file": self.listed.path, "sha256": self.listed.sha256, "ids": len(self.listed.ids),
                "train_rows": int(train_rows),
                "val_test_ids": int((self.partitions != layout.PARTITIONS["train"]).sum())}


def check_exclude(path, cache_path, partition=None):
    """The Exclusion of exclude file `path` against the cache at cache_path; an id the cache does
    not hold is a UserError counting them and naming the first with its line. partition: every
    cache row's partition, if a --partition file changed it (else the stored one)."""
    listed = read_exclude(path)
    with open_cache(cache_path) as f:
        row_of = {s.decode(): i for i, s in enumerate(f["image_id"][:])}
        partition = f["partition"][:] if partition is None else partition
    unknown = [i for i in listed.ids if i not in row_of]
    if unknown:
        raise UserError(f"{path}: {len(unknown)} of {len(listed.ids)} listed image id(s) are not in {cache_path}; "
                        f"the first is {unknown[0]!r} (line {listed.line[unknown[0]]})")
    return Exclusion(listed, partition[[row_of[i] for i in listed.ids]] if listed.ids else np.zeros(0, int))
