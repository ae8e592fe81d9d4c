"""Attribute and partition parsing: both formats, line ends, explicit mapping, one-line errors."""

import numpy as np
import pytest

from cache.errors import UserError
from embed.labels import read_labels, read_partition

TEXT = "3\nA B C\n1.jpg 1 -1 1\n2.jpg -1 -1 1\n3.jpg 1 1 -1\n"
EXPECTED = np.array([[1, 0, 1], [0, 0, 1], [1, 1, 0]], np.uint8)


def write(tmp_path, name, text, newline="\n", bom=False):
    path = tmp_path / name
    data = text.replace("\n", newline).encode()
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + data)
    return path


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
@pytest.mark.parametrize("bom", [False, True])
def test_text_format_maps_minus_one_to_zero(tmp_path, newline, bom):
    table = read_labels(write(tmp_path, "a.txt", TEXT, newline, bom))
    assert table.ids == ["1.jpg", "2.jpg", "3.jpg"]
    assert table.names == ["A", "B", "C"]
    np.testing.assert_array_equal(table.values, EXPECTED)
    assert table.values.dtype == np.uint8 and table.partition is None
    assert list(table.lines) == [3, 4, 5]


def test_text_format_tolerates_trailing_space_and_padding(tmp_path):
    text = "2\nA B \n1.jpg  1 -1\n2.jpg -1  1\n"
    table = read_labels(write(tmp_path, "a.txt", text))
    assert table.names == ["A", "B"]
    np.testing.assert_array_equal(table.values, [[1, 0], [0, 1]])


@pytest.mark.parametrize("values", [("1", "-1"), ("1", "0")])
def test_csv_format_with_either_convention(tmp_path, values):
    pos, neg = values
    text = f"image_id,A,B\nx.jpg,{pos},{neg}\ny.jpg,{neg},{pos}\n"
    table = read_labels(write(tmp_path, "a.csv", text, "\r\n"))
    np.testing.assert_array_equal(table.values, [[1, 0], [0, 1]])


def test_csv_partition_column_is_split_off(tmp_path):
    text = "image_id,A,partition,B\nx.jpg,1,0,0\ny.jpg,0,2,1\n"
    table = read_labels(write(tmp_path, "a.csv", text))
    assert table.names == ["A", "B"]
    np.testing.assert_array_equal(table.values, [[1, 0], [0, 1]])
    np.testing.assert_array_equal(table.partition, [0, 2])


def test_mixed_line_endings_keep_line_numbers(tmp_path):
    path = tmp_path / "a.txt"
    path.write_bytes(b"2\r\nA B\n1.jpg 1 -1\r\n2.jpg 1 7\n")
    with pytest.raises(UserError, match=r"a.txt:4: column 'B' has '7'"):
        read_labels(path)


@pytest.mark.parametrize("text, message", [
    ("3\nA B\n1.jpg 1 -1\n2.jpg 1 2\n3.jpg 1 1\n", r"a.txt:4: column 'B' has '2'; labels must be -1/1 or 0/1"),
    ("2\nA B\n1.jpg 1 -1\n2.jpg 1\n", r"a.txt:4: expected 3 fields"),
    ("5\nA B\n1.jpg 1 -1\n2.jpg 1 1\n", r"a.txt:1: the count line says 5 rows but the file has 2"),
    ("2\nA B\n1.jpg 1 -1\n1.jpg 1 1\n", r"a.txt: 1 duplicate image id, e.g. '1.jpg' on lines 3 and 4"),
    ("2\nA B\n1.jpg 1 -1\n2.jpg 0 1\n", r"a.txt:4: column 'A' has 0 but the file uses -1/1"),
    ("A B\n1.jpg 1 -1\n", r"a.txt:1: expected the row count"),
    ("2\nA A\n1.jpg 1 -1\n2.jpg 1 1\n", r"a.txt:2: attribute 'A' appears twice"),
    ("", r"a.txt: empty attribute file"),
    ("0\nA B\n", r"a.txt: no label rows"),
    ("1\nA B\n1.jpg 0.5 1\n", r"a.txt:3: column 'A' has '0.5'"),  # 1.0 is read as 1 (spreadsheets)
])
def test_text_format_errors_name_file_and_line(tmp_path, text, message):
    with pytest.raises(UserError, match=message):
        read_labels(write(tmp_path, "a.txt", text))


@pytest.mark.parametrize("text, message", [
    ("id,A\nx.jpg,1\n", r"a.csv:1: first CSV column must be 'image_id', found 'id'"),
    ("image_id,A,B\nx.jpg,1\n", r"a.csv:2: expected 3 fields"),
    ("image_id,A\nx.jpg,yes\n", r"a.csv:2: column 'A' has 'yes'"),
    ("image_id,A,partition\nx.jpg,1,5\n", r"a.csv:2: partition of 'x.jpg' is '5'"),
    ("image_id,A\n,1\n", r"a.csv:2: empty image id"),
])
def test_csv_errors_name_file_and_line(tmp_path, text, message):
    with pytest.raises(UserError, match=message):
        read_labels(write(tmp_path, "a.csv", text))


def test_not_utf8(tmp_path):
    path = tmp_path / "a.txt"
    path.write_bytes(b"1\nA\n\xff.jpg 1\n")
    with pytest.raises(UserError, match=r"a.txt:3: not UTF-8"):
        read_labels(path)


@pytest.mark.parametrize("name, text", [
    ("p.txt", "1.jpg 0\r\n2.jpg 1\r\n3.jpg 2\r\n"),
    ("p.csv", "image_id,partition\n1.jpg,0\n2.jpg,1\n3.jpg,2\n"),
])
def test_partition_both_formats(tmp_path, name, text):
    table = read_partition(write(tmp_path, name, text))
    assert table.ids == ["1.jpg", "2.jpg", "3.jpg"]
    np.testing.assert_array_equal(table.values, [0, 1, 2])


@pytest.mark.parametrize("name, text, message", [
    ("p.txt", "1.jpg 0\n2.jpg 3\n", r"p.txt:2: partition of '2.jpg' is '3'"),
    ("p.txt", "1.jpg 0 1\n", r"p.txt:1: expected 2 fields"),
    ("p.csv", "image,split\n1.jpg,0\n", r"p.csv:1: CSV header must be 'image_id,partition'"),
    ("p.txt", "1.jpg 0\n1.jpg 1\n", r"duplicate image id"),
    ("p.txt", "\n\n", r"p.txt: empty partition file"),
])
def test_partition_errors(tmp_path, name, text, message):
    with pytest.raises(UserError, match=message):
        read_partition(write(tmp_path, name, text))


def test_sample_files_agree_across_formats(celeba_sample):
    """The real CelebA files: text and CSV give the same ids, names and values."""
    text, csv = read_labels(celeba_sample / "list_attr_celeba.txt"), read_labels(celeba_sample / "list_attr_celeba.csv")
    assert text.ids == csv.ids and text.names == csv.names and len(text.ids) == 1987
    np.testing.assert_array_equal(text.values, csv.values)
    p_text, p_csv = read_partition(celeba_sample / "list_eval_partition.txt"), read_partition(celeba_sample / "list_eval_partition.csv")
    assert p_text.ids == p_csv.ids
    np.testing.assert_array_equal(p_text.values, p_csv.values)


def test_files_as_pandas_and_spreadsheets_write_them(tmp_path, caplog):
    """pandas' to_csv() with its index, NaN as an empty cell, floats and booleans; a spreadsheet's
    `;` or tab CSV: the same table as the plain file."""
    import logging

    import pandas as pd
    frame = pd.DataFrame({"image_id": ["1.jpg", "2.jpg", "3.jpg"], "A": [1.0, 0.0, float("nan")],
                          "B": [True, False, True], "C": [0, 1, 1]})
    frame.to_csv(tmp_path / "indexed.csv")  # ",image_id,A,B,C" then "0,1.jpg,1.0,True,0"
    frame.to_csv(tmp_path / "semicolon.csv", sep=";", index=False)
    frame.to_csv(tmp_path / "tabs.tsv", sep="\t", index=False, na_rep="NaN")
    frame.to_csv(tmp_path / "unnamed.csv", index_label="Unnamed: 0", na_rep="#N/A")
    for name in ("indexed.csv", "semicolon.csv", "tabs.tsv", "unnamed.csv"):
        with caplog.at_level(logging.INFO):
            table = read_labels(tmp_path / name, unknown=True)
        assert table.ids == ["1.jpg", "2.jpg", "3.jpg"] and table.names == ["A", "B", "C"], name
        assert table.values.tolist() == [[1, 1, 0], [0, 0, 1], [255, 1, 1]], name
    assert "indexed.csv: its first column (headed '') is a row index" in caplog.text
    with pytest.raises(UserError, match=r"indexed.csv:4: column 'A' has ''; labels must be -1/1 or 0/1 \(a cache"):
        read_labels(tmp_path / "indexed.csv")  # a cache's own labels stay known
    with pytest.raises(UserError, match=r"x.csv:2: column 'A' has '0.5'; labels must be"):
        read_labels(write(tmp_path, "x.csv", "image_id,A\n1.jpg,0.5\n"))
    pd.DataFrame({"image_id": ["1.jpg", "2.jpg"], "partition": [0.0, 2.0]}).to_csv(tmp_path / "p.csv")
    assert read_partition(tmp_path / "p.csv").values.tolist() == [0, 2]


@pytest.mark.parametrize("magic, kind", [(b"PK\x03\x04", "an .xlsx or .ods spreadsheet"),
                                         (b"\xd0\xcf\x11\xe0", "an .xls spreadsheet")])
def test_a_spreadsheet_file_gets_a_hint_to_save_it_as_csv(tmp_path, magic, kind):
    path = tmp_path / "labels.xlsx"
    path.write_bytes(magic + bytes(range(256)))
    for read in (read_labels, read_partition):
        with pytest.raises(UserError, match=rf"labels.xlsx: {kind}.*, not text; save it as CSV"):
            read(path)
