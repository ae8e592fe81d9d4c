"""Property-based: any label or partition file, however damaged, ends in a correct parse or in one
UserError line naming the file (never another exception)."""

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from cache.errors import UserError
from embed.labels import read_labels, read_partition

HUGE = "9" * 200_000  # one field larger than the csv module's limit
TOKENS = st.sampled_from(["1", "-1", "0", "2", "x", "", "1.0", " ", "-", "nan", "１", "é", HUGE])
IDS = st.sampled_from(["1.jpg", "2.jpg", "3.jpg", "a b.jpg", "", "é.png", "x,y.jpg", '"q".jpg', HUGE + ".jpg"])
NEWLINES = st.sampled_from(["\n", "\r\n", "\r"])


MUTATIONS = [None, None, None, None, "token", "width", "duplicate", "count", "header", "names", "shuffle", "junk",
             "empty"]


@st.composite
def label_texts(draw):
    """A well-formed text or CSV attribute file, then at most one damaging mutation."""
    names = draw(st.lists(st.sampled_from(["A", "B", "Male", "Young", "Smiling"]), min_size=1, max_size=4,
                          unique=True))
    ids = [f"{i:06d}.jpg" for i in range(1, draw(st.integers(1, 5)) + 1)]
    scheme = draw(st.sampled_from([("1", "-1"), ("1", "0")]))
    rows = [[image_id] + [draw(st.sampled_from(scheme)) for _ in names] for image_id in ids]
    csv = draw(st.booleans()) or scheme == ("1", "0")
    mutation = draw(st.sampled_from(MUTATIONS))
    if mutation == "token":
        rows[draw(st.integers(0, len(rows) - 1))][draw(st.integers(1, len(names)))] = draw(TOKENS)
    elif mutation == "width":
        row = rows[draw(st.integers(0, len(rows) - 1))]
        row.append("1") if draw(st.booleans()) else row.pop()
    elif mutation == "duplicate":
        rows.append(list(rows[0]))
    elif mutation == "names":
        names = names + [draw(st.sampled_from(["", names[0], "partition"]))]
    elif mutation == "junk":
        rows[0][0] = draw(IDS)
    separator = "," if csv else " "
    lines = [separator.join(row) for row in rows]
    if csv:
        header = ",".join(["image_id"] + names)
        lines = [draw(st.sampled_from(["id," + ",".join(names), "", "image_id"])) if mutation == "header" else header] + lines
    else:
        count = str(len(rows)) if mutation != "count" else draw(st.sampled_from(["0", "99", "x", ""]))
        lines = [count, " ".join(names)] + lines
    if mutation == "shuffle":
        lines = draw(st.permutations(lines))
    if mutation == "empty":
        lines = draw(st.sampled_from([[], [""], ["", " "]]))
    newline = draw(NEWLINES)
    data = (newline.join(lines) + draw(st.sampled_from(["", newline]))).encode()
    if draw(st.booleans()):
        data = b"\xef\xbb\xbf" + data
    return data


def check(parse, path, data):
    path.write_bytes(data)
    try:
        result = parse(path)
    except UserError as exc:
        message = str(exc)
        assert message.startswith(str(path)) and "\n" not in message, message
        assert len(message) < len(str(path)) + 250, f"{len(message)}-char error: {message[:300]}"
        event("one-line error")
        return None
    event("parsed")
    assert len(set(result.ids)) == len(result.ids)
    return result


@settings(max_examples=800, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=label_texts())
def test_any_label_file_parses_or_fails_in_one_line(tmp_path, data):
    table = check(read_labels, tmp_path / "labels.txt", data)
    if table is not None:
        assert table.values.shape == (len(table.ids), len(table.names)) and table.values.dtype == np.uint8
        assert set(np.unique(table.values)) <= {0, 1}


@st.composite
def partition_texts(draw):
    """A well-formed text or CSV partition file, then at most one damaging mutation."""
    rows = [[f"{i:06d}.jpg", draw(st.sampled_from(["0", "1", "2"]))] for i in range(1, draw(st.integers(1, 6)) + 1)]
    mutation = draw(st.sampled_from([None, None, None, "value", "width", "duplicate", "header", "junk",
                                               "huge"]))
    if mutation == "value":
        rows[-1][1] = draw(st.sampled_from(["3", "x", "", "-1", "1.0"]))
    elif mutation == "width":
        rows[0].append("0")
    elif mutation == "duplicate":
        rows.append(list(rows[0]))
    elif mutation == "junk":
        rows[0][0] = draw(IDS)
    elif mutation == "huge":
        rows[0][draw(st.integers(0, 1))] = HUGE
    csv = draw(st.booleans())
    sep = "," if csv else " "
    header = [draw(st.sampled_from(["image_id,split", "image,partition"])) if mutation == "header"
              else "image_id,partition"] if csv else []
    return draw(NEWLINES).join(header + [sep.join(r) for r in rows]).encode()


@settings(max_examples=400, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=partition_texts())
def test_any_partition_file_parses_or_fails_in_one_line(tmp_path, data):
    table = check(read_partition, tmp_path / "partition.txt", data)
    if table is not None:
        assert set(np.unique(table.values)) <= {0, 1, 2} and len(table.values) == len(table.ids)


def test_full_size_file_parses_and_a_late_error_names_its_line(tmp_path):
    """A file as long as CelebA's (202,599 rows) parses; a bad value on its last line is reported there."""
    n = 202_599
    names = ["A", "B", "C"]
    rows = [f"{i:06d}.jpg {' '.join('1' if (i >> k) & 1 else '-1' for k in range(3))}" for i in range(1, n + 1)]
    path = tmp_path / "list_attr_celeba.txt"
    path.write_text("\n".join([str(n), " ".join(names)] + rows) + "\n")
    table = read_labels(path)
    assert len(table.ids) == n and table.values[4].tolist() == [1, 0, 1]  # 000005.jpg: bits 101
    path.write_text("\n".join([str(n), " ".join(names)] + rows[:-1] + [rows[-1].rsplit(" ", 1)[0] + " x"]) + "\n")
    with pytest.raises(UserError, match=rf":{n + 2}: column 'C' has 'x'"):
        read_labels(path)
