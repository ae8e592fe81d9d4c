"""Validate a cache file before anything trusts it (layout: `cache.layout`).

`check_structure` runs on every open (`cache.reader.open_cache`): root attributes present, parsed
and typed; datasets present with the documented shapes and dtypes (every view's and layer's too); labels in {0, 1}, partition in
{0, 1, 2}, status in the documented codes; rows_done within 0..n_rows. It reads the small datasets
only (labels, partition, status: about 9 MB for CelebA), never the features.
`find_nonfinite` scans feature rows for NaN/inf (`info --check`, and every split as it loads).
Every failure is a UserError whose one line starts with the file's path and says what is wrong.
"""

import json
import re

import numpy as np

from cache import layout
from cache.errors import UserError

INT_ATTRS = ("format_version", "feature_dim", "n_rows", "rows_done")
STR_ATTRS = ("tool_version", "created", "dataset_fingerprint", "feature_dtype", "image_ids_fingerprint")
DICT_ATTRS = ("backbone", "preprocessing", "sources")
# Allowed values: each a range of consecutive integers.
VALUES = {"labels": (0, 1), "partition": tuple(layout.PARTITIONS.values()),
          "status": (layout.STATUS_NOT_DONE, layout.STATUS_OK, layout.STATUS_FAILED)}
ROWS_PER_SCAN = 1024  # a block's temporaries stay in the CPU cache: 2x faster than 16,384 rows


def _attribute(path, f, name):
    try:
        value = f.attrs[name]
    except Exception as exc:  # HDF5 raises several types for a damaged attribute
        raise UserError(f"{path}: attribute {name} cannot be read ({type(exc).__name__})") from None
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            raise UserError(f"{path}: attribute {name} is not UTF-8 text") from None
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # h5py hands undecodable bytes over as surrogates
            raise UserError(f"{path}: attribute {name} is not UTF-8 text") from None
    if name in INT_ATTRS:
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
            raise UserError(f"{path}: attribute {name} is {_show(value)}, not an integer")
        return int(value)
    if name in STR_ATTRS:
        if not isinstance(value, str):
            raise UserError(f"{path}: attribute {name} is {_show(value)}, not text")
        return value
    if name in DICT_ATTRS or name in ("shard", "views", "layers"):
        try:
            parsed = json.loads(value) if isinstance(value, str) else None
        except json.JSONDecodeError:
            parsed = None
        if name == "layers":
            if not isinstance(parsed, list) or not all(_is_layer(x) for x in parsed) or \
                    len({x["name"] for x in parsed}) != len(parsed):
                raise UserError(f"{path}: attribute layers is not a JSON list of distinct layers "
                                f"({{\"name\", \"pool\", \"shape\"}}): {_show(value)}")
            return parsed
        if name == "views":
            if not isinstance(parsed, list) or not all(v in layout.VIEW_DATASETS for v in parsed):
                raise UserError(f"{path}: attribute views is not a JSON list of views "
                                f"({', '.join(layout.VIEW_DATASETS)}): {_show(value)}")
            return parsed
        if not isinstance(parsed, dict):
            raise UserError(f"{path}: attribute {name} is not a JSON object ({_show(value)})")
        return parsed
    return value


def _is_layer(entry):
    """A `layers` entry: {"name": text, "pool": gap | none | grid:K, "shape": [positive ints]}."""
    return (isinstance(entry, dict) and isinstance(entry.get("name"), str) and entry["name"].strip() != ""
            and "/" not in entry["name"] and isinstance(entry.get("pool"), str)
            and re.fullmatch(r"gap|none|grid:[1-9]\d*", entry["pool"]) is not None
            and isinstance(entry.get("shape"), list) and 1 <= len(entry["shape"]) <= 3
            and all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in entry["shape"]))


def _show(value, width=40):
    text = repr(value.tolist() if hasattr(value, "tolist") else value)
    return text if len(text) <= width else text[:width] + "..."


def _dataset(path, f, name):
    try:
        item = f[name]
    except KeyError:
        raise UserError(f"{path}: cache lacks dataset {name}") from None
    except Exception as exc:
        raise UserError(f"{path}: dataset {name} cannot be opened ({type(exc).__name__})") from None
    if not hasattr(item, "shape"):
        raise UserError(f"{path}: {name} is a group, not a dataset")
    return item


def _read(path, dataset):
    try:
        return dataset[()]
    except Exception as exc:
        raise UserError(f"{path}: dataset {dataset.name.lstrip('/')} cannot be read "
                        f"({type(exc).__name__}: {str(exc).splitlines()[0][:80] if str(exc) else ''})") from None


def _names(path, labels):
    """The labels' `names` attribute: distinct, non-empty UTF-8 strings."""
    try:
        raw = labels.attrs["names"]
    except Exception:
        raise UserError(f"{path}: labels lack a readable `names` attribute (the attribute names)") from None
    raw = np.asarray(raw)
    if raw.ndim != 1 or raw.dtype.kind not in "OSU":
        raise UserError(f"{path}: labels' `names` attribute is {_show(raw)}, not a list of attribute names")
    names = []
    for item in raw.tolist():
        try:
            name = item.decode("utf-8") if isinstance(item, bytes) else str(item)
            name.encode("utf-8")
        except (UnicodeDecodeError, UnicodeEncodeError):
            raise UserError(f"{path}: an attribute name in labels' `names` is not UTF-8 text") from None
        if not name.strip() or not name.isprintable():
            raise UserError(f"{path}: attribute name {name!r} in labels' `names` is empty or unprintable")
        names.append(name)
    if len(set(names)) != len(names):
        raise UserError(f"{path}: labels' `names` lists an attribute twice")
    return names


def check_structure(path, f):
    """Raise UserError unless the open h5py.File `f` is a well-formed cache; returns (settings, names):
    the root attributes parsed and typed (`shard` None unless a shard file, `views` [] unless the
    cache holds extra views, `image_ids_fingerprint` None in a cache made before it), and the
    attribute names the labels' `names` lists."""
    missing = [a for a in layout.REQUIRED_ATTRS if a not in f.attrs]
    if missing:
        raise UserError(f"{path}: not a celeba-heads cache (missing attributes {', '.join(missing)})")
    settings = {name: _attribute(path, f, name) for name in layout.REQUIRED_ATTRS}
    settings["shard"] = _attribute(path, f, "shard") if "shard" in f.attrs else None
    settings["image_ids_fingerprint"] = _attribute(path, f, "image_ids_fingerprint") \
        if "image_ids_fingerprint" in f.attrs else None
    settings["views"] = _attribute(path, f, "views") if "views" in f.attrs else []
    settings["layers"] = _attribute(path, f, "layers") if "layers" in f.attrs else []
    if settings["format_version"] > layout.FORMAT_VERSION:
        raise UserError(f"{path}: cache format {settings['format_version']} is newer than this tool's "
                        f"{layout.FORMAT_VERSION}; upgrade celeba-heads")
    if settings["format_version"] < 1:
        raise UserError(f"{path}: format_version {settings['format_version']} is not a valid version")
    n, dim = settings["n_rows"], settings["feature_dim"]
    if n < 0 or dim < 1:
        raise UserError(f"{path}: n_rows={n} and feature_dim={dim} must be >= 0 and >= 1")
    if settings["feature_dtype"] not in ("float16", "float32"):
        raise UserError(f"{path}: feature_dtype {settings['feature_dtype']!r} is not float16 or float32")
    if not 0 <= settings["rows_done"] <= n:
        raise UserError(f"{path}: rows_done={settings['rows_done']} is outside 0..{n}")
    views = [layout.VIEW_DATASETS[v] for v in settings["views"]]
    layers = {layout.stored_dataset(view, layer["name"]): (n, *layer["shape"])
              for view in ("orig", *settings["views"]) for layer in settings["layers"]}
    faces = {name: (n, *shape) for name, (shape, _) in layout.FACE_DATASETS.items()} if layout.is_aligned(settings) else {}
    if faces and not isinstance(settings["preprocessing"]["align"], dict):
        raise UserError(f"{path}: preprocessing.align is not a JSON object")
    datasets = {name: _dataset(path, f, name) for name in (*layout.DATASETS, *views, *layers, *faces)}
    names = _names(path, datasets["labels"])
    expected = {"features": (n, dim), "image_id": (n,), "partition": (n,), "status": (n,),
                "error": (n,), "labels": (n, len(names)), **{v: (n, dim) for v in views}, **layers, **faces}
    for name, shape in expected.items():
        if datasets[name].shape != shape:
            raise UserError(f"{path}: dataset {name} has shape {datasets[name].shape}, expected {shape}")
    kinds = {"features": "f", "partition": "iu", "labels": "iu", "status": "iu", "image_id": "OSU", "error": "OSU",
             **{name: "f" if dtype.startswith("float") else "iu" for name, (_, dtype) in layout.FACE_DATASETS.items()
                if name in faces}}
    for name, allowed in kinds.items():
        if datasets[name].dtype.kind not in allowed:
            raise UserError(f"{path}: dataset {name} has dtype {datasets[name].dtype}, not the documented type")
    for name in ("features", *views, *layers):
        if datasets[name].dtype.name != settings["feature_dtype"]:
            raise UserError(f"{path}: {name} are {datasets[name].dtype.name} but the file says "
                            f"{settings['feature_dtype']}")
    for name, allowed in VALUES.items():
        values = _read(path, datasets[name])
        if values.size and min(allowed) <= values.min() and values.max() <= max(allowed):
            continue  # the allowed values are a range of integers: 10x faster than np.isin
        bad = ~np.isin(values, allowed)
        if bad.any():
            rows = np.flatnonzero(bad.reshape(len(values), -1).any(axis=1)) if values.ndim > 1 else np.flatnonzero(bad)
            raise UserError(f"{path}: {name} hold values other than {'/'.join(map(str, allowed))} "
                            f"(rows {rows[0]}..{rows[-1]}, e.g. {values[bad][0]})")
    return settings, names


def find_nonfinite(features, first_row=0):
    """Row offsets (relative to the array, plus first_row) whose features (any per-row shape) hold
    NaN or inf; scans in blocks so a large split needs no full-size temporary."""
    bad = []
    for start in range(0, len(features), ROWS_PER_SCAN):
        block = features[start:start + ROWS_PER_SCAN]
        block = block.reshape(len(block), -1)
        if block.dtype == np.float16:  # exponent bits all ones, their largest value: NaN or inf
            nonfinite = (block.view(np.uint16) & 0x7C00).max(axis=1) == 0x7C00
        else:
            nonfinite = ~np.isfinite(block).all(axis=1)
        bad.extend((np.flatnonzero(nonfinite) + start + first_row).tolist())
    return bad
