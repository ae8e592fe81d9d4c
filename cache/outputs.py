"""Where every command writes: one policy, checked before any work (and before TensorFlow starts).

- An output file that exists, or an output folder with something in it, is refused in one line
  unless the command got --overwrite. A file where a folder goes (or the reverse) is refused.
- --overwrite replaces only what this toolkit wrote: a folder holding what its command writes (a
  run's config.json, a sweep's runs, an audit's summary.json, ...) is replaced; a folder holding
  anything else is refused even then, naming what it holds, so no user file is ever deleted.
- Missing parent folders are created.
- A command that fails (an error, a usage error found late, an interrupt) leaves things as they
  were: the replaced folder is put back, the parent folders it created are removed.
- Errors name the path the user gave.
"""

import contextlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from cache.errors import UsageError, UserError

RUN_FILES = ("config.json", "metrics.json")
FILE = "file"


def _is_run(folder):
    return any((folder / name).is_file() for name in RUN_FILES)


def _holds_runs(folder):
    """A sweep or baselines folder: runs one level down (and its leaderboards), or a run itself."""
    return _is_run(folder) or any(child.is_dir() and _is_run(child) for child in folder.iterdir())


def _marked(*names):
    return lambda folder: any((folder / name).exists() for name in names)


# What each kind of output folder holds when this toolkit wrote it (the test --overwrite applies).
OWNED = {
    "run": _is_run,
    "runs": _holds_runs,
    "audit": _marked("summary.json", "label_issues.csv", "out_of_fold.csv"),
    "export": _marked("saved_model.pb"),
    "projector": _marked("projector_config.pbtxt"),
    "scenes": _marked("faces.csv"),
    "sample": _marked("list_attr_celeba.txt", "list_attr_celeba.csv"),
    "drawn": lambda folder: all(p.is_file() and p.suffix == ".jpg" for p in folder.iterdir()),
}


@dataclass(frozen=True)
class Output:
    """One thing a command writes: path as the user gave it, the option naming it (for errors), and
    kind: FILE or a folder kind of OWNED."""
    path: str
    option: str
    kind: str = FILE


def beside(path, suffix):
    """The file written beside an output file (a video's table: OUT.csv beside OUT.mp4)."""
    return Path(path).with_suffix(suffix)


def check(output, overwrite=False):
    """Refuse `output` in one line (UserError) if writing it would replace something unasked, or
    something this toolkit did not write; changes nothing. Returns whether something is replaced."""
    if not str(output.path).strip():
        raise UsageError(f"{output.option}: an empty path; give a {'file' if output.kind == FILE else 'folder'} name")
    path, shown = Path(output.path), f"{output.option} {output.path}"
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"{shown}: {parent} is a file, not a folder")
            break
    if output.kind == FILE:
        if path.is_dir():
            raise UserError(f"{shown}: is a folder; give a file name")
        if path.exists() and not overwrite:
            raise UserError(f"{shown}: exists; pass --overwrite to replace it, or choose another name")
        return path.exists()
    if path.exists() and not path.is_dir():
        raise UserError(f"{shown}: is a file; give a folder")
    entries = sorted(p.name for p in path.iterdir()) if path.is_dir() else []
    if entries and not overwrite:
        raise UserError(f"{shown}: not empty ({_some(entries)}); pass --overwrite to replace what it holds, "
                        "or give a new or empty folder")
    if entries and not OWNED[output.kind](path):
        raise UserError(f"{shown}: holds files this command did not write ({_some(entries)}); --overwrite "
                        "replaces only its own output: give a new or empty folder")
    return bool(entries)


@contextlib.contextmanager
def writing(outputs, overwrite=False):
    """Check every output (see `check`), then make their parent folders and move each file or
    folder being replaced aside; on success what was set aside is deleted, on any failure the new
    partial output goes (a file the command started, e.g. a video's table, too) and everything is
    put back as it was."""
    replaced = [output for output in outputs if check(output, overwrite)]
    created = [_make_parents(Path(output.path), output.option) for output in outputs]
    new_files = [Path(output.path) for output in outputs if output.kind == FILE and output not in replaced]
    aside = {}
    try:
        for output in replaced:
            target = Path(output.path)
            aside[target] = target.with_name(f".{target.name}.replaced-{os.getpid()}")
            os.replace(target, aside[target])
        yield
    except BaseException as exc:
        if isinstance(exc, SystemExit):  # the command finished and chose its exit status
            _commit(aside)
            raise
        for path in new_files:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        for target, old in aside.items():
            if old.is_dir():
                shutil.rmtree(target, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    target.unlink()
            os.replace(old, target)
        for folders in created:
            for folder in folders:  # innermost first; only those still empty
                with contextlib.suppress(OSError):
                    folder.rmdir()
        raise
    _commit(aside)


def _commit(aside):
    for old in aside.values():
        if old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)


def _make_parents(path, option):
    """Create path's missing parent folders; returns them, innermost first."""
    missing = [parent for parent in path.parents if not parent.exists()]
    if missing:
        try:
            path.parent.mkdir(parents=True)
        except OSError as exc:
            raise UserError(f"{option} {path}: cannot create the folder {path.parent} ({exc.strerror or exc})") \
                from None
    return missing


def _some(names, shown=3):
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")
