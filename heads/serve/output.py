"""Where `predict` writes: checked before any work."""

from pathlib import Path

from cache.errors import UserError


def check_new_file(path, option):
    """Refuse an output file that exists (or is a folder): nothing is overwritten by surprise."""
    if Path(path).exists():
        raise UserError(f"{option} {path}: exists; remove it or choose another name")
