"""Numbers in words: counts with their noun in the right number, sizes in the unit that fits."""

import pytest

from cache.units import counted, plural, size_text


@pytest.mark.parametrize("n, noun, text", [
    (0, "row", "0 rows"), (1, "row", "1 row"), (2048, "labelled row", "2,048 labelled rows"), (1, "face", "1 face"),
    (3, "copy", "3 copies"), (2, "pass", "2 passes"), (2, "day", "2 days"), (3, "epoch", "3 epochs"),
    (2, "match", "2 matches"),
])
def test_counts_take_the_right_number(n, noun, text):
    assert counted(n, noun) == text


def test_verbs_agree_with_their_count():
    assert [plural("has", n) for n in (1, 2)] == ["has", "have"] and [plural("is", n) for n in (1, 0)] == ["is", "are"]
    assert [plural("holds", n) for n in (1, 2)] == ["holds", "hold"]


@pytest.mark.parametrize("n_bytes, text", [
    (12, "12 bytes"), (640_000, "640 kB"), (720_000, "720 kB"), (999_600, "1.0 MB"), (12_500_000, "12.5 MB"),
    (999_999_000, "1.00 GB"), (1_200_000_000, "1.20 GB"), (2.1e12, "2.10 TB"),
])
def test_sizes_print_in_a_unit_that_fits(n_bytes, text):
    assert size_text(n_bytes) == text  # never "0.00 GB"
