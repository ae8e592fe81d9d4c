"""Label overlays: `--labels FILE` (repeatable) and `--partition FILE` change a cache's labels and
split when a run loads it, without embedding again.

A labels file is CelebA text or a CSV with image_id (`embed.labels.read_labels(unknown=True)`). It
patches cells, joined to the cache's rows by image_id:
  * a value (-1/1 or 0/1, one convention per file) sets that row's label;
  * an unknown marker (an empty cell, NA or ?) makes it unknown (`cache.layout.UNKNOWN_LABEL`);
  * a row or an attribute the file does not list keeps what it had;
  * an attribute new to the cache starts unknown on every row.
Files apply in the order given: a later file wins cell by cell. Ids a file lists that the cache
lacks are allowed (a cache may hold a subset of a dataset) and counted in one note naming the
first. A `partition` column in a labels file is ignored with a note pointing to --partition.

A partition file (CelebA text, or CSV image_id,partition) re-splits the rows; a row it does not
list leaves the run (partition NOT_IN_RUN), and the run counts them.

What an overlay did (`Overlay.record`, a run's config.json "labels"):
  {"files": [{"file" (absolute), "sha256", "rows" (ids listed), "not_in_cache" (of them), "changed"
              (labels it changed from what the cache and the files before it gave)}],
   "partition": {"file", "sha256", "rows", "not_in_cache", "left_out" (cache rows not listed)} | null,
   "attributes": {name: {"set" (cells on the cache's rows the files gave a value), "changed" (rows
                  whose label differs from the cache's: a flip, a label on a new attribute, or a
                  known label made unknown), "unknown" (rows unknown after the files), "new"
                  (the cache holds no such attribute)}}}
Only the listed attributes appear; reading and applying is in memory proportional to the labels
(the features are never read).
"""

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cache.errors import UserError
from cache.layout import STATUS_OK, UNKNOWN_LABEL, sha256_file
from cache.reader import open_cache, row_status, split_summary
from cache.units import counted, plural
from embed.labels import read_labels, read_partition

NOT_IN_RUN = -1  # the partition of a row a --partition file does not list
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RowLabels:
    """Every row of a cache as a run sees it, in cache row order: ids (object array of str), names
    (A attribute names), labels uint8 [n, A] (0/1, UNKNOWN_LABEL unknown), partition int8 [n]
    (0 train, 1 val, 2 test, NOT_IN_RUN)."""
    ids: np.ndarray
    names: list
    labels: np.ndarray
    partition: np.ndarray


def stored_labels(path):
    """A cache's own ids, attribute names, labels and partition (no feature is read)."""
    with open_cache(path) as f:
        ids = np.array([s.decode() for s in f["image_id"][:]], dtype=object)
        return RowLabels(ids=ids, names=list(f.attribute_names), labels=f["labels"][:],
                         partition=f["partition"][:].astype(np.int8))


@dataclass(frozen=True)
class Overlay:
    """Labels files (applied in order) and a partition file, read and checked once: apply them to
    any number of caches (fused caches each get the same)."""
    labels: tuple
    partition: object

    @classmethod
    def read(cls, labels=(), partition=None):
        """Read the files (one-line UserError naming file and line on bad input); None if none."""
        if not labels and partition is None:
            return None
        tables = []
        for path in labels:
            table = read_labels(path, unknown=True)
            if table.partition is not None:
                log.info("%s: its partition column is ignored; a labels file changes labels only (re-split "
                         "with --partition FILE)", path)
            tables.append(table)
        return cls(tuple(tables), read_partition(partition) if partition is not None else None)

    def apply(self, rows, cache=None):
        """(RowLabels with the files applied, the record: see the module docstring). cache: the
        cache's path, named in the notes."""
        where = f" (in {cache})" if cache else ""
        labels, names = rows.labels, list(rows.names)
        stored_columns = len(names)
        for table in self.labels:
            _check_case(table, names)
        new_names = [n for table in self.labels for n in table.names if n not in names]
        new_names = list(dict.fromkeys(new_names))
        if new_names:
            labels = np.concatenate([labels, np.full((len(rows.ids), len(new_names)), UNKNOWN_LABEL, np.uint8)],
                                    axis=1)
            names += new_names
        else:
            labels = labels.copy()
        cache_index = pd.Index(rows.ids)
        files, given = [], np.zeros(len(names), np.int64)
        listed_before = np.zeros(labels.shape, bool)  # cells an earlier file listed
        for table in self.labels:
            listed, found = _join(cache_index, table.ids)
            _check_found(table.path, table.ids, rows.ids, found, "--labels")
            files.append(_file_record(table.path, table.ids, found, table.lines, where))
            columns = [names.index(n) for n in table.names]
            cells = np.ix_(listed, columns)
            values = table.values[found]
            files[-1]["changed"] = int((labels[cells] != values).sum())
            files[-1]["overwritten"] = overwritten = int(listed_before[cells].sum())
            if overwritten:
                again = int((listed_before[cells] & (labels[cells] != values)).sum())
                log.info("%s: overwrites %s an earlier --labels file gave (%d of them with another value; "
                         "the later file wins)", table.path, counted(overwritten, "cell"), again)
            labels[cells] = values
            listed_before[cells] = True
            given[columns] += (values != UNKNOWN_LABEL).sum(axis=0)
        partition, partition_record = rows.partition, None
        if self.partition is not None:
            table = self.partition
            listed, found = _join(cache_index, table.ids)
            _check_found(table.path, table.ids, rows.ids, found, "--partition")
            partition = np.full(len(rows.ids), NOT_IN_RUN, np.int8)
            partition[listed] = table.values[found]
            partition_record = {**_file_record(table.path, table.ids, found, table.lines, where),
                                "left_out": int(len(rows.ids) - len(listed))}
        touched = list(dict.fromkeys(n for table in self.labels for n in table.names))
        attributes = {}
        for name in touched:
            j = names.index(name)
            before = rows.labels[:, j] if j < stored_columns else np.full(len(rows.ids), UNKNOWN_LABEL, np.uint8)
            attributes[name] = {"set": int(given[j]), "changed": int((labels[:, j] != before).sum()),
                                "unknown": int((labels[:, j] == UNKNOWN_LABEL).sum()), "new": j >= stored_columns}
        record = {"files": files, "partition": partition_record, "attributes": attributes}
        return RowLabels(rows.ids, names, labels, partition), record


def _check_case(table, names):
    """A column naming a cache attribute in another case ('male') is a typo, not a new attribute."""
    by_case = {name.casefold(): name for name in names}
    for name in table.names:
        if name not in names and name.casefold() in by_case:
            raise UserError(f"{table.path}: column {name!r} is not an attribute of the cache; did you mean "
                            f"{by_case[name.casefold()]!r}? (names are case-sensitive; rename the column)")


def _check_found(path, file_ids, cache_ids, found, option):
    """A file none of whose ids is a cache row changes nothing: an error, with how the ids differ."""
    if len(found) or not len(file_ids) or not len(cache_ids):
        return
    theirs, ours = str(file_ids[0]), str(cache_ids[0])
    stem = lambda image_id: image_id.rsplit(".", 1)[0]  # noqa: E731
    base = lambda image_id: image_id.rsplit("/", 1)[-1]  # noqa: E731
    file_set, cache_set = set(file_ids), set(cache_ids)
    if file_set & {stem(i) for i in cache_set}:
        hint = "the file's ids lack the extension the cache's carry"
    elif {stem(i) for i in file_set} & {stem(i) for i in cache_set}:
        hint = "the file's ids carry another extension than the cache's"
    elif {base(i) for i in file_set} & cache_set:
        hint = "the file's ids carry a folder the cache's lack"
    elif file_set & {base(i) for i in cache_set}:
        hint = "the cache's ids carry a folder the file's lack"
    else:
        hint = "no id matches"
    raise UserError(f"{path}: none of its {counted(len(file_ids), 'image id')} is in the cache ({option}): {hint} "
                    f"(the file's first: {theirs!r}; the cache's first: {ours!r})")


def _join(cache_index, file_ids):
    """(cache rows the file lists, the file rows holding them), both int64, in cache row order."""
    at = pd.Index(file_ids).get_indexer(cache_index)
    listed = np.flatnonzero(at >= 0)
    return listed, at[listed]


def _file_record(path, ids, found, lines, where):
    """A file's record; its ids the cache lacks are counted in one note naming the first."""
    missing = len(ids) - len(found)
    if missing:
        mask = np.ones(len(ids), bool)
        mask[found] = False
        first = int(np.argmax(mask))
        log.info("%s: %d of %s %s not in the cache%s and %s ignored; the first is %r (line %d)", path, missing,
                 counted(len(ids), "listed image id"), plural("is", missing), where, plural("is", missing),
                 ids[first], lines[first])
    return {"file": str(Path(path).resolve()), "sha256": sha256_file(path), "rows": len(ids),
            "not_in_cache": int(missing)}


def check_recorded(record, where):
    """The files a run recorded (its config.json "labels"), as (labels paths, partition path),
    after checking each is still there with the same sha256 (one-line UserError naming it)."""
    if not record:
        return (), None
    entries = list(record.get("files") or []) + ([record["partition"]] if record.get("partition") else [])
    for entry in entries:
        path = entry.get("file") if isinstance(entry, dict) else None
        if not isinstance(path, str) or not isinstance(entry.get("sha256"), str):
            raise UserError(f"{where}: labels must record each file's path and sha256")
        if not Path(path).is_file():
            raise UserError(f"{path}: missing (the run was trained with it; {where} records its sha256)")
        if sha256_file(path) != entry["sha256"]:
            raise UserError(f"{path}: sha256 differs from {where}; the file changed after the run was trained "
                            "with it (give the changed labels to evaluate with --labels, or train again)")
    return (tuple(e["file"] for e in record.get("files") or []),
            record["partition"]["file"] if record.get("partition") else None)


def overlay_info(summary, cache, labels=(), partition=None):
    """`info --labels/--partition`: the cache's summary (`cache.reader.cache_info`) as a run sees it
    with the files applied: "splits" and "attributes" from the applied labels and partition,
    "overlay" the record of what the files change (`Overlay.apply`), "left_out" the rows the
    partition file does not list."""
    applied, record = Overlay.read(labels, partition).apply(stored_labels(cache), cache)
    with open_cache(cache) as f:
        ok = row_status(f) == STATUS_OK
    return {**summary, "attributes": applied.names, "overlay": record,
            "splits": split_summary(applied.labels, applied.partition, ok, applied.names),
            "left_out": int((applied.partition == NOT_IN_RUN).sum())}
