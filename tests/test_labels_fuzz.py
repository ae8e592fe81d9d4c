"""Property-based: any label or partition file, however damaged, ends in a correct parse or in one
UserError line naming the file (never another exception)."""

import numpy as np
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from cache.errors import UserError
from embed.labels import read_labels, read_partition

TOKENS = st.sampled_from(["1", "-1", "0", "2", "x", "", "1.0", " ", "-", "nan", "１", "é"])
IDS = st.sampled_from(["1.jpg", "2.jpg", "3.jpg", "a b.jpg", "", "é.png", "x,y.jpg", '"q".jpg'])
NEWLINES = st.sampled_from(["\n", "\r\n", "\r"])


MUTATIONS = [None, None, None, None, "token", "width", "duplicate", "count", "header", "names", "shuffle", "junk"]


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
    mutation = draw(st.sampled_from([None, None, None, "value", "width", "duplicate", "header", "junk"]))
    if mutation == "value":
        rows[-1][1] = draw(st.sampled_from(["3", "x", "", "-1", "1.0"]))
    elif mutation == "width":
        rows[0].append("0")
    elif mutation == "duplicate":
        rows.append(list(rows[0]))
    elif mutation == "junk":
        rows[0][0] = draw(IDS)
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
