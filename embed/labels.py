"""Parse attribute and partition files, in the CelebA text format and as CSV.

Attribute files (the format is detected from the content):
  * CelebA text (`list_attr_celeba.txt`): line 1 the row count, line 2 the A attribute names
    separated by whitespace, then one row per image: `<image_id> v_1 ... v_A`.
  * CSV (Kaggle's `list_attr_celeba.csv`, or any labelled folder): header `image_id,<names...>`,
    one row per image; an optional `partition` column holds 0 train, 1 val, 2 test.
  Values are -1/1 (CelebA) or 0/1, one convention per file, mapped explicitly -1 -> 0, 0 -> 0,
  1 -> 1. A labels overlay (`read_labels(unknown=True)`) may also hold an empty cell, `NA`, `?`,
  `NaN` or `#N/A`: an unknown label, stored as `cache.layout.UNKNOWN_LABEL`. Anything else is an
  error naming the file, line and column.
Partition files: CelebA text (`<image_id> <p>` per line) or CSV (`image_id,partition`), p in {0, 1, 2}.

Both: UTF-8 with or without BOM, LF, CRLF or mixed line ends; blank lines are ignored. CSV as
spreadsheets and pandas write it is read too: `;` or tab between fields when the header starts with
image_id, a leading row-index column (pandas' `to_csv()` with its index: an empty or `Unnamed: 0`
header before image_id; ignored, with a note), numbers written as `1.0`, `-1.0` or `+1`, and
`True`/`False` (1/0). A spreadsheet file itself (.xlsx, .ods, .xls) is refused with a hint to save
it as CSV. Every problem raises UserError with a one-line message that names the file and line. A CelebA-size
file (202,599 rows x 40 attributes) parses in about a second: Python's garbage collector is paused
while the millions of small token strings are made (it would triple the time, finding nothing).
"""

import contextlib
import csv
import functools
import gc
import logging
from dataclasses import dataclass
from itertools import chain

import numpy as np

from cache.errors import UserError
from cache.layout import UNKNOWN_LABEL
from cache.units import counted

UNKNOWN_TOKENS = ("", "NA", "?", "NaN", "nan", "#N/A")
INDEX_HEADERS = ("", "Unnamed: 0")  # what pandas' to_csv() and spreadsheets head a row-index column with
DELIMITERS = (",", ";", "\t")
SPREADSHEET_MAGIC = {b"PK\x03\x04": "an .xlsx or .ods spreadsheet (a zip file)",
                     b"\xd0\xcf\x11\xe0": "an .xls spreadsheet"}
ROWS_PER_BLOCK = 16_384
SHOWN_CHARS = 40
log = logging.getLogger(__name__)


def _shown(text):
    """repr of a value quoted in an error message, cut so one huge field cannot flood the terminal."""
    text = str(text)
    return repr(text) if len(text) <= SHOWN_CHARS else repr(text[:SHOWN_CHARS]) + f"... ({len(text)} chars)"


@contextlib.contextmanager
def _gc_paused():
    """Pause the cyclic garbage collector (the token lists made here hold no cycles)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@dataclass(frozen=True)
class LabelTable:
    """ids: N image ids in file order; names: A attribute names; values: uint8 [N, A] in {0, 1}
    (and UNKNOWN_LABEL where a file read with unknown=True leaves a label unknown);
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
    for magic, kind in SPREADSHEET_MAGIC.items():
        if data.startswith(magic):
            raise UserError(f"{path}: {kind}, not text; save it as CSV (File > Save as > CSV: image_id first, "
                            "then one column per attribute)")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise UserError(f"{path}:{line}: not UTF-8 text") from None
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return [(number, line) for number, line in enumerate(lines, 1) if line.strip()]


def _csv_delimiter(lines):
    """The CSV field delimiter, or None for the CelebA text format: a comma anywhere in the first
    line; `;` or tab when the header's first or second field (after an index column) is image_id."""
    first = lines[0][1] if lines else ""
    if "," in first:
        return ","
    for delimiter in DELIMITERS[1:]:
        if delimiter in first and "image_id" in [field.strip() for field in first.split(delimiter)[:2]]:
            return delimiter
    return None


def _csv_rows(path, lines, delimiter=","):
    """Parse CSV lines into (line_number, [fields]) with surrounding spaces stripped."""
    reader = csv.reader([text for _, text in lines], strict=True, delimiter=delimiter)
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


def _integer_text(token):
    """A number as spreadsheets and pandas write it ('1.0', '-1.00', '+1', 'True', 'FALSE') as its
    integer text ('1', '-1', '0'); anything else unchanged."""
    lowered = token.lower()
    if lowered in ("true", "false"):
        return "1" if lowered == "true" else "0"
    try:
        number = float(token)
    except ValueError:
        return token
    return str(int(number)) if number.is_integer() else token


def _label_values(path, rows, names, first_column, unknown=False):
    """uint8 [N, A] from the value fields of each row (widths already checked), validated and mapped
    explicitly; with unknown, UNKNOWN_TOKENS map to UNKNOWN_LABEL."""
    zero, minus_one = 2, 3  # told apart first: one file must not mix the conventions
    codes = {"1": 1, "0": zero, "-1": minus_one, **({t: UNKNOWN_LABEL for t in UNKNOWN_TOKENS} if unknown else {})}
    width = len(names)
    tokens = list(chain.from_iterable(fields[first_column:first_column + width] for _, fields in rows))
    try:
        values = np.fromiter(map(codes.__getitem__, tokens), np.uint8, count=len(tokens))
    except KeyError:  # the slow path: numbers written as 1.0, True/False
        written = [token if token in codes else _integer_text(token) for token in tokens]
        try:
            values = np.fromiter(map(codes.__getitem__, written), np.uint8, count=len(tokens))
        except KeyError:
            values = None
    if values is not None:
        values = values.reshape(len(rows), width)
    else:
        at = next(i for i, token in enumerate(written) if token not in codes)
        r, c = divmod(at, width)
        allowed = "-1/1 or 0/1" + (", or empty, NA or ? for unknown" if unknown else "")
        hint = "" if unknown or tokens[at] not in UNKNOWN_TOKENS else (
            " (a cache stores known labels only: give unknown ones at training time, --labels FILE)")
        raise UserError(f"{path}:{rows[r][0]}: column {_shown(names[c])} has {_shown(tokens[at])}; "
                        f"labels must be {allowed}{hint}")
    zeros = values == zero
    if zeros.any() and (values == minus_one).any():
        r, c = np.argwhere(zeros)[0]
        raise UserError(f"{path}:{rows[r][0]}: column {_shown(names[c])} has 0 but the file uses -1/1; "
                        "one file must use one convention")
    values[zeros | (values == minus_one)] = 0
    return values


def _check_ids(path, ids, lines):
    """Refuse an empty or a repeated image id, naming the lines."""
    first_line = {}
    for image_id, number in zip(ids, lines):
        if not image_id:
            raise UserError(f"{path}:{number}: empty image id")
        if image_id in first_line:
            duplicates = len(ids) - len(set(ids))
            raise UserError(f"{path}: {counted(duplicates, 'duplicate image id')}, e.g. {_shown(image_id)} on lines "
                            f"{first_line[image_id]} and {number}")
        first_line[image_id] = number


def read_labels(path, unknown=False):
    """Parse an attribute file (CelebA text or CSV) into a LabelTable; with unknown, cells may be
    unknown (empty, NA or ?: a labels overlay)."""
    with _gc_paused():
        return _read_labels(str(path), unknown)


def _read_labels(path, unknown):
    lines = _read_lines(path)
    if not lines:
        raise UserError(f"{path}: empty attribute file")
    partition_column = None
    delimiter = _csv_delimiter(lines)
    if delimiter:
        header_line, header, split_rows = _csv_header(path, lines, delimiter)
        if header[0] != "image_id":
            raise UserError(f"{path}:{header_line}: first CSV column must be 'image_id', found {_shown(header[0])}")
        body, width, what = lines[1:], len(header), "image_id and one per column of the header"
        names = header[1:]
        if "partition" in names:
            partition_column = names.index("partition") + 1
            names = names[:partition_column - 1] + names[partition_column:]
            if not names:
                raise UserError(f"{path}:{header_line}: a partition file, not labels (its columns: image_id, partition); "
                                "give it as --partition FILE")
        _check_names(path, header_line, names)
    else:
        count_line, count_text = lines[0]
        if count_text.strip() == "image_id":
            raise UserError(f"{path}:{count_line}: an image_id column and no attribute column")
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
        body, width, what = lines[2:], len(names) + 1, "an image id and one value per attribute"
        if count != len(body):
            raise UserError(f"{path}:{count_line}: the count line says {count} rows but the file has "
                            f"{len(body)} (truncated or edited?)")
        split_rows = lambda block: [(number, text.split()) for number, text in block]  # noqa: E731
    if not body:
        raise UserError(f"{path}: no label rows")
    ids, values, partition = [], [], []
    for start in range(0, len(body), ROWS_PER_BLOCK):  # tokens a block at a time: memory stays near the file's size
        rows = split_rows(body[start:start + ROWS_PER_BLOCK])
        _check_width(path, rows, width, what)
        if partition_column is not None:
            partition.append(_partition_values(path, [(n, [f[0], f[partition_column]]) for n, f in rows]))
            rows = [(n, f[:partition_column] + f[partition_column + 1:]) for n, f in rows]
        ids.extend(fields[0] for _, fields in rows)
        values.append(_label_values(path, rows, names, 1, unknown))
    line_numbers = np.array([number for number, _ in body])
    _check_ids(path, ids, line_numbers)
    return LabelTable(path=path, ids=ids, names=names, values=np.concatenate(values),
                      partition=np.concatenate(partition) if partition else None, lines=line_numbers)


def _csv_header(path, lines, delimiter):
    """(header line number, header fields, a function parsing body lines into (line, fields)); a
    leading row-index column (pandas' to_csv() with its index) is left out of both, with a note."""
    header_line, header = _csv_rows(path, lines[:1], delimiter)[0]
    split_rows = functools.partial(_csv_rows, path, delimiter=delimiter)
    if len(header) > 1 and header[0] in INDEX_HEADERS and header[1] == "image_id":
        log.info("%s: its first column (headed %r) is a row index, as pandas' to_csv() writes it; ignored",
                 path, header[0])
        return header_line, header[1:], lambda block: [(n, fields[1:]) for n, fields in split_rows(block)]
    return header_line, header, split_rows


def _partition_values(path, rows):
    values = np.empty(len(rows), np.int8)
    for i, (number, fields) in enumerate(rows):
        if fields[1] not in ("0", "1", "2") and _integer_text(fields[1]) in ("0", "1", "2"):
            fields = [fields[0], _integer_text(fields[1])]
        if fields[1] not in ("0", "1", "2"):
            raise UserError(f"{path}:{number}: partition of {_shown(fields[0])} is {_shown(fields[1])}; "
                            "must be 0 (train), 1 (val) or 2 (test)")
        values[i] = int(fields[1])
    return values


def read_partition(path):
    """Parse a partition file (CelebA text or CSV) into a PartitionTable."""
    with _gc_paused():
        return _read_partition(str(path))


def _read_partition(path):
    lines = _read_lines(path)
    if not lines:
        raise UserError(f"{path}: empty partition file")
    delimiter = _csv_delimiter(lines)
    if delimiter:
        header_line, header, split_rows = _csv_header(path, lines, delimiter)
        if header != ["image_id", "partition"]:
            raise UserError(f"{path}:{header_line}: CSV header must be 'image_id,partition', "
                            f"found {_shown(delimiter.join(header))}")
        rows = split_rows(lines[1:])
    else:
        rows = [(number, text.split()) for number, text in lines]
    _check_width(path, rows, 2, "an image id and a partition")
    if not rows:
        raise UserError(f"{path}: no partition rows")
    ids, lines = [f[0] for _, f in rows], np.array([n for n, _ in rows])
    _check_ids(path, ids, lines)
    return PartitionTable(path=path, ids=ids, values=_partition_values(path, rows), lines=lines)
