"""What a run leaves out of its train split on request; val and test are never altered.

`--exclude FILE`: whole train rows. FILE is a CSV with an `image_id` column: audit's
label_issues.csv or duplicates.csv, or any other (other columns are ignored; an id listed twice
counts once). Every id must be in the cache (any split): an id that is not is a typo or another
dataset's, and stops the run. What a run left out is recorded as `Exclusion.record`: {"file"
(absolute path), "sha256", "ids" (distinct ids listed), "train_rows" (train rows left out),
"val_test_ids" (listed ids of val or test, scored as usual)}.

`--mask-labels FILE`: single train labels, made unknown (`cache.layout.UNKNOWN_LABEL`); the row
stays in for every other attribute. FILE is a CSV with `image_id` and `attribute` columns: audit's
label_issues.csv, or any other (other columns ignored; a pair listed twice counts once). Every id
must be in the cache and every attribute among its attribute names (after --labels), as for
--exclude. Recorded as `Masking.record`: {"file", "sha256", "pairs" (distinct pairs listed),
"masked" ({attribute: train labels made unknown}), "val_test_pairs" (pairs on val or test rows:
left as they are), "other_attributes" (pairs of attributes the run does not use)}.
"""

import difflib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cache import layout
from cache.errors import UserError
from cache.layout import UNKNOWN_LABEL, sha256_file
from cache.reader import open_cache
from cache.units import counted, plural


@dataclass(frozen=True)
class ExcludeList:
    """The ids of an exclude file: path (absolute), sha256 of its bytes, ids (distinct, in file
    order), line (id -> the file line it first appears on; the header is line 1)."""
    path: str
    sha256: str
    ids: tuple
    line: dict


def _read_id_table(path, required, what):
    """A CSV as a DataFrame of stripped strings with its file line numbers ("line"; the header is
    line 1), blank lines skipped; one-line UserError naming the file (and line) when it is not a
    readable CSV with the `required` columns or has an empty image_id. what: the files it takes."""
    where = Path(path)
    try:
        table = pd.read_csv(where, dtype=str, keep_default_na=False, skip_blank_lines=False)
    except FileNotFoundError:
        raise UserError(f"{where}: not found") from None
    except pd.errors.EmptyDataError:
        columns = "an image_id column" if required == ["image_id"] else " and ".join(required) + " columns"
        raise UserError(f"{where}: is empty; expected a CSV with {columns}") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise UserError(f"{where}: not a readable CSV ({str(exc).strip().splitlines()[0]})") from None
    missing = [c for c in required if c not in table.columns]
    if missing:
        shown = ", ".join(map(str, table.columns[:6])) + (", ..." if len(table.columns) > 6 else "")
        raise UserError(f"{where}: has no {missing[0]} column (its columns: {shown}); give {what}")
    table["line"] = np.arange(len(table)) + 2
    table = table[~(table.drop(columns="line") == "").all(axis=1)]
    for column in required:
        table[column] = table[column].str.strip()
    empty = table.index[table["image_id"] == ""]
    if len(empty):
        raise UserError(f"{where}: line {table.loc[empty[0], 'line']}: empty image_id")
    return table


def read_exclude(path):
    """Read and check an exclude file (one-line UserError naming the file, and the line if one is at
    fault); blank lines are skipped."""
    table = _read_id_table(path, ["image_id"], "audit's label_issues.csv or duplicates.csv, or any CSV with an "
                                               "image_id column")
    first = {}
    for image_id, line in zip(table["image_id"], table["line"]):
        first.setdefault(str(image_id), int(line))
    return ExcludeList(str(Path(path).resolve()), sha256_file(path), tuple(first), first)


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
        raise UserError(f"{path}: {len(unknown)} of {counted(len(listed.ids), 'listed image id')} "
                        f"{plural('is', len(unknown))} not in {cache_path}; "
                        f"the first is {unknown[0]!r} (line {listed.line[unknown[0]]})")
    return Exclusion(listed, partition[[row_of[i] for i in listed.ids]] if listed.ids else np.zeros(0, int))


@dataclass(frozen=True)
class Masking:
    """A mask file checked against a cache: path (absolute), sha256, pairs ((image_id, attribute),
    distinct, in file order), the cache row of each pair's id, and every cache row's partition."""
    path: str
    sha256: str
    pairs: tuple
    rows: np.ndarray
    partition: np.ndarray

    def apply(self, train, columns):
        """(labels with the listed train labels unknown, the record: module docstring). train: the
        train Split (labels [n, len(columns)] for the attribute names `columns`)."""
        labels = train.labels.copy()
        position = {int(r): i for i, r in enumerate(train.rows)}
        masked = {name: 0 for name in columns}
        on_train = self.partition[self.rows] == layout.PARTITIONS["train"]
        other = 0
        for (image_id, name), row, in_train in zip(self.pairs, self.rows, on_train):
            if name not in masked:
                other += 1
            elif in_train and int(row) in position:  # a train row that failed to embed is not there
                i, j = position[int(row)], columns.index(name)
                masked[name] += int(labels[i, j] != UNKNOWN_LABEL)
                labels[i, j] = UNKNOWN_LABEL
        return labels, {"file": self.path, "sha256": self.sha256, "pairs": len(self.pairs),
                        "masked": {k: v for k, v in masked.items() if v},
                        "val_test_pairs": int((~on_train).sum()), "other_attributes": other}


def check_mask(path, cache_path, names, partition=None):
    """The Masking of mask file `path` against the cache at cache_path, whose attribute names (after
    any --labels) are `names` and whose rows' partition is `partition` (None: the stored one). An id
    the cache does not hold, or an attribute it does not name, is a UserError naming the first and
    its line."""
    table = _read_id_table(path, ["image_id", "attribute"], "audit's label_issues.csv, or any CSV with image_id "
                                                            "and attribute columns")
    with open_cache(cache_path) as f:
        row_of = {s.decode(): i for i, s in enumerate(f["image_id"][:])}
        partition = f["partition"][:] if partition is None else partition
    first = {}
    for image_id, name, line in zip(table["image_id"], table["attribute"], table["line"]):
        first.setdefault((str(image_id), str(name)), int(line))
    unknown = [pair for pair in first if pair[0] not in row_of]
    if unknown:
        raise UserError(f"{path}: {len(unknown)} of {counted(len(first), 'listed label')} "
                        f"{plural('is', len(unknown))} of image ids not in {cache_path}; "
                        f"the first is {unknown[0][0]!r} (line {first[unknown[0]]})")
    stray = [pair for pair in first if pair[1] not in names]
    if stray:
        close = difflib.get_close_matches(stray[0][1], names, n=1, cutoff=0.5)
        raise UserError(f"{path}: line {first[stray[0]]}: attribute {stray[0][1]!r} is not one of the cache's"
                        + (f" (did you mean {close[0]}?)" if close else ""))
    return Masking(str(Path(path).resolve()), sha256_file(path), tuple(first),
                   np.array([row_of[i] for i, _ in first], np.int64), partition)
