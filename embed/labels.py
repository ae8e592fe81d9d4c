"""Parse attribute and partition files, in the CelebA text format and as CSV.

Attribute files (the format is detected from the content):
  * CelebA text (`list_attr_celeba.txt`): line 1 the row count, line 2 the A attribute names
    separated by whitespace, then one row per image: `<image_id> v_1 ... v_A`.
  * CSV (Kaggle's `list_attr_celeba.csv`, or any labelled folder): header `image_id,<names...>`,
    one row per image; an optional `partition` column holds 0 train, 1 val, 2 test.
  Values are -1/1 (CelebA) or 0/1, one convention per file, mapped explicitly -1 -> 0, 0 -> 0,
  1 -> 1. Anything else is an error naming the file, line and column.
Partition files: CelebA text (`<image_id> <p>` per line) or CSV (`image_id,partition`), p in {0, 1, 2}.

Both: UTF-8 with or without BOM, LF, CRLF or mixed line ends; blank lines are ignored. Every
problem raises UserError with a one-line message that names the file and line.
"""

import csv
from dataclasses import dataclass

import numpy as np

from cache.errors import UserError

VALUE_CODES = {"1": 1, "-1": 0, "0": 0}
SHOWN_CHARS = 40


def _shown(text):
    """repr of a value quoted in an error message, cut so one huge field cannot flood the terminal."""
    text = str(text)
    return repr(text) if len(text) <= SHOWN_CHARS else repr(text[:SHOWN_CHARS]) + f"... ({len(text)} chars)"


@dataclass(frozen=True)
class LabelTable:
    """ids: N image ids in file order; names: A attribute names; values: uint8 [N, A] in {0, 1};
    partition: int8 [N] from a `partition` column, or None; lines: int [N] line number of each row."""
    path: str
    ids: list
    names: list
    values: np.ndarray
    partition: object
    lines: np.ndarray


@dataclass(frozen=True)
class PartitionTable:
    """ids: image ids in file order; values: int8 in {0, 1, 2}; lines: line number of each row."""
    path: str
    ids: list
    values: np.ndarray
    lines: np.ndarray


def _read_lines(path):
    """[(line_number, text)] of the non-blank lines, line ends and a leading BOM removed."""
    try:
        data = open(path, "rb").read()
    except OSError as exc:
        raise UserError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise UserError(f"{path}:{line}: not UTF-8 text") from None
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return [(number, line) for number, line in enumerate(lines, 1) if line.strip()]


def _is_csv(lines):
    return bool(lines) and "," in lines[0][1]


def _csv_rows(path, lines):
    """Parse CSV lines into (line_number, [fields]) with surrounding spaces stripped."""
    reader = csv.reader([text for _, text in lines], strict=True)
    try:
        return [(number, [field.strip() for field in fields]) for (number, _), fields in zip(lines, reader)]
    except csv.Error as exc:
        number = lines[min(reader.line_num, len(lines)) - 1][0]
        raise UserError(f"{path}:{number}: malformed CSV: {exc}") from None


def _check_width(path, rows, width, what):
    for number, fields in rows:
        if len(fields) != width:
            raise UserError(f"{path}:{number}: expected {width} fields ({what}), found {len(fields)}")


def _check_names(path, line, names):
    if not names:
        raise UserError(f"{path}:{line}: no attribute names")
    seen = set()
    for name in names:
        if not name:
            raise UserError(f"{path}:{line}: empty attribute name")
        if name in seen:
            raise UserError(f"{path}:{line}: attribute {_shown(name)} appears twice")
        seen.add(name)


def _label_values(path, rows, names, first_column):
    """uint8 [N, A] from the value fields of each row, validated and mapped explicitly."""
    tokens = np.array([fields[first_column:first_column + len(names)] for _, fields in rows], dtype=str)
    tokens = tokens.reshape(len(rows), len(names))
    known = np.isin(tokens, list(VALUE_CODES))
    if not known.all():
        r, c = np.argwhere(~known)[0]
        raise UserError(f"{path}:{rows[r][0]}: column {_shown(names[c])} has {_shown(tokens[r, c])}; "
                        "labels must be -1/1 or 0/1")
    minus, zero = tokens == "-1", tokens == "0"
    if minus.any() and zero.any():
        r, c = np.argwhere(zero)[0]
        raise UserError(f"{path}:{rows[r][0]}: column {_shown(names[c])} has 0 but the file uses -1/1; "
                        "one file must use one convention")
    return (tokens == "1").astype(np.uint8)


def _check_ids(path, rows):
    first_line = {}
    for number, fields in rows:
        image_id = fields[0]
        if not image_id:
            raise UserError(f"{path}:{number}: empty image id")
        if image_id in first_line:
            duplicates = len(rows) - len({fields[0] for _, fields in rows})
            raise UserError(f"{path}: {duplicates} duplicate image id(s), e.g. {_shown(image_id)} on lines "
                            f"{first_line[image_id]} and {number}")
        first_line[image_id] = number


def read_labels(path):
    """Parse an attribute file (CelebA text or CSV) into a LabelTable."""
    path = str(path)
    lines = _read_lines(path)
    if not lines:
        raise UserError(f"{path}: empty attribute file")
    partition = None
    if _is_csv(lines):
        header_line, header = _csv_rows(path, lines[:1])[0]
        if header[0] != "image_id":
            raise UserError(f"{path}:{header_line}: first CSV column must be 'image_id', found {_shown(header[0])}")
        rows = _csv_rows(path, lines[1:])
        _check_width(path, rows, len(header), "image_id and one per column of the header")
        names = header[1:]
        if "partition" in names:
            column = names.index("partition") + 1
            names = names[:column - 1] + names[column:]
            partition = _partition_values(path, [(n, [f[0], f[column]]) for n, f in rows])
            rows = [(n, f[:column] + f[column + 1:]) for n, f in rows]
        _check_names(path, header_line, names)
    else:
        count_line, count_text = lines[0]
        try:
            count = int(count_text.strip())
        except ValueError:
            raise UserError(f"{path}:{count_line}: expected the row count (CelebA text format) "
                            f"or a CSV header, found {_shown(count_text.strip())}") from None
        if len(lines) < 2:
            raise UserError(f"{path}: no attribute-name line after the row count")
        names_line, names_text = lines[1]
        names = names_text.split()
        _check_names(path, names_line, names)
        rows = [(number, text.split()) for number, text in lines[2:]]
        _check_width(path, rows, len(names) + 1, "an image id and one value per attribute")
        if count != len(rows):
            raise UserError(f"{path}:{count_line}: the count line says {count} rows but the file has "
                            f"{len(rows)} (truncated or edited?)")
    if not rows:
        raise UserError(f"{path}: no label rows")
    _check_ids(path, rows)
    return LabelTable(path=path, ids=[f[0] for _, f in rows], names=names,
                      values=_label_values(path, rows, names, 1), partition=partition,
                      lines=np.array([n for n, _ in rows]))


def _partition_values(path, rows):
    values = np.empty(len(rows), np.int8)
    for i, (number, fields) in enumerate(rows):
        if fields[1] not in ("0", "1", "2"):
            raise UserError(f"{path}:{number}: partition of {_shown(fields[0])} is {_shown(fields[1])}; "
                            "must be 0 (train), 1 (val) or 2 (test)")
        values[i] = int(fields[1])
    return values


def read_partition(path):
    """Parse a partition file (CelebA text or CSV) into a PartitionTable."""
    path = str(path)
    lines = _read_lines(path)
    if not lines:
        raise UserError(f"{path}: empty partition file")
    if _is_csv(lines):
        header_line, header = _csv_rows(path, lines[:1])[0]
        if header != ["image_id", "partition"]:
            raise UserError(f"{path}:{header_line}: CSV header must be 'image_id,partition', "
                            f"found {_shown(','.join(header))}")
        rows = _csv_rows(path, lines[1:])
    else:
        rows = [(number, text.split()) for number, text in lines]
    _check_width(path, rows, 2, "an image id and a partition")
    if not rows:
        raise UserError(f"{path}: no partition rows")
    _check_ids(path, rows)
    return PartitionTable(path=path, ids=[f[0] for _, f in rows], values=_partition_values(path, rows),
                          lines=np.array([n for n, _ in rows]))
