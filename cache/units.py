"""Numbers in words for what the command line and the logs say: a count with its noun in the right
number ("1 row", "2,048 rows"), and a size in bytes in the unit that fits ("640 kB", "1.2 GB")."""

IRREGULAR = {"was": "were", "has": "have", "is": "are", "holds": "hold", "copy": "copies", "epoch": "epochs",
             "category": "categories"}


def plural(noun, n):
    """`noun` as it goes with the number n (English: add s, or IRREGULAR's form)."""
    if n == 1:
        return noun
    return IRREGULAR.get(noun, noun[:-1] + "ies" if noun.endswith("y") and noun[-2:-1] not in "aeiou" else
                         noun + "es" if noun.endswith(("s", "x", "ch", "sh")) else noun + "s")


def counted(n, noun):
    """'1 row', '2,048 rows': the count (thousands separated) and its noun in the right number; for
    a phrase ('labelled row'), the last word takes the number."""
    head, _, last = noun.rpartition(" ")
    return f"{n:,} " + (f"{head} " if head else "") + plural(last, n)


def size_text(n_bytes):
    """A size in decimal units that fit: '512 bytes', '640 kB', '12.5 MB', '1.20 GB', '2.10 TB'."""
    n_bytes = float(n_bytes)
    if round(n_bytes) < 1e3:
        return f"{n_bytes:.0f} bytes"
    for unit, scale, digits in (("kB", 1e3, 0), ("MB", 1e6, 1), ("GB", 1e9, 2), ("TB", 1e12, 2)):
        if round(n_bytes / scale, digits) < 1e3 or unit == "TB":
            return f"{n_bytes / scale:.{digits}f} {unit}"
