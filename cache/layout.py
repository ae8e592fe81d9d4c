"""The HDF5 feature-cache layout: the one place it is defined.

One file holds N rows (one per labelled image, in label-file order) and A attributes:

    /features      [N, D] float16 (default) or float32, chunked by rows, preallocated.
                   Row i is the frozen backbone's feature vector of image i.
                   Rows whose status is not OK hold no meaningful value.
    /image_id      [N] UTF-8 string, the id from the label file (a path relative to the image folder).
    /partition     [N] int8, 0 train, 1 val, 2 test.
    /labels        [N, A] uint8 in {0, 1}; attribute `names` lists the A attribute names in order
                   (A = 0 for a folder embedded without labels: they come at training time as
                   overlays, `heads.run.overlay`). A cache stores no unknown label: `embed` refuses
                   a blank cell and points to `--labels` at training time.
    /status        [N] int8, 0 not done, 1 ok, 2 failed.
    /error         [N] fixed-length UTF-8 (256 bytes), why a failed row failed ("" otherwise).
    /features_flip optional, [N, D] like /features: the features of each image mirrored left-right
                   (`embed --views flip`); present exactly when the `views` attribute lists "flip".
    /layers/NAME   optional, [N, *shape] like /features: the backbone's layer NAME for each image,
                   pooled as the `layers` attribute says (`embed --layers NAME:POOL`): gap [N, C],
                   none [N, H, W, C], grid:K [N, K, K, C]; chunked by whole rows, about
                   LAYER_CHUNK_BYTES per chunk, so a batch of rows reads sequentially.
    /layers_flip/NAME  with views flip: the same layer of the mirrored image.
    /faces/box     only in a cache of aligned faces (`embed --align`: preprocessing has "align"):
                   [N, 4] float32, the chosen face's box (x, y, width, height) in photo pixels;
    /faces/landmarks  [N, 5, 2] float32, its five landmarks (x, y) (`embed.faces.LANDMARKS`);
    /faces/score   [N] float32, the detector's score; /faces/count [N] int16, faces seen in the
                   photo (0 on a row that failed for want of a face). A failed row's box, landmarks
                   and score are NaN.

Root attributes:
    format_version       int, this layout's version (FORMAT_VERSION).
    tool_version         str, celeba-heads version that created the file.
    created              str, ISO-8601 UTC creation time.
    backbone             JSON: {"model", "kind", "weights", "layer", "sha256" (of a model/weights
                         file), "random_weights", "mixed_precision"}.
    preprocessing        JSON: {"image_size", "color", "value_range", "resize", "antialias"}, and
                         in a cache of aligned faces "align": {"detector" (its settings), "face"
                         (main | best | largest | central), "refine", "template", "fit" (eyes-mouth |
                         five), "points" [M][5], "weights" [M], "frame", "fill", "exif"}
                         (`embed.faces.align_record`; made before fits were named: no "fit" nor
                         "points", five weights).
    feature_dim          int, D.
    feature_dtype        "float16" | "float32".
    dataset_fingerprint  str, sha256 of ids, attribute names, labels and partition.
    image_ids_fingerprint  optional (caches made since labels became overlays), str: sha256 of the
                         whole dataset's ids in order (`ids_fingerprint`), what the features depend
                         on besides the settings: resume and merge compare it, not the labels.
    sources              JSON: where labels, partition and images came from (informational).
    n_rows               int, N.
    rows_done            int, rows [0, rows_done) are finished (ok or failed). Updated in place
                         only after the rows it covers were written and flushed, so after a crash
                         every row below it is complete and nothing above it is trusted.
    views                optional, JSON list of the extra views stored besides /features, e.g.
                         ["flip"] (absent: none). Each is computed in the same batches as /features.
    layers               optional, JSON list of the layers stored besides /features, in order:
                         [{"name", "pool" ("gap", "none" or "grid:K"), "shape" (per row)}] (absent:
                         none). Computed in the same backbone pass and batches as /features.
    shard                optional, only in a shard file (`embed --shard I/N`, see `cache.shards`):
                         JSON {"index", "count", "start", "stop", "total_rows", "batch_size"}; the
                         file holds rows [start, stop) of the dataset that dataset_fingerprint names.

Crash safety: every dataset is allocated in full when the file is created (in a temporary file,
renamed into place), so embedding afterwards writes raw data only and never changes the file's
structure; a process killed at any moment leaves a file that opens.
"""

import hashlib
import json

import numpy as np

FORMAT_VERSION = 1
STATUS_NOT_DONE, STATUS_OK, STATUS_FAILED = 0, 1, 2
PARTITIONS = {"train": 0, "val": 1, "test": 2}
UNKNOWN_LABEL = 255  # a label no file gave (a labels overlay's empty cell, NA or ?; heads.run.overlay)
ERROR_BYTES = 256
ROWS_PER_CHUNK = 1024
LAYER_CHUNK_BYTES = 4 << 20

DATASETS = ("features", "image_id", "partition", "labels", "status", "error")
VIEW_DATASETS = {"flip": "features_flip"}  # extra view -> its dataset
LAYER_GROUPS = {"orig": "layers", "flip": "layers_flip"}  # view -> the group holding its layers
# a cache of aligned faces: dataset -> (shape of a row, dtype)
FACE_DATASETS = {"faces/box": ((4,), "float32"), "faces/landmarks": ((5, 2), "float32"),
                 "faces/score": ((), "float32"), "faces/count": ((), "int16")}
JSON_ATTRS = ("backbone", "preprocessing", "sources", "shard", "views", "layers")
REQUIRED_ATTRS = (
    "format_version", "tool_version", "created", "backbone", "preprocessing", "feature_dim",
    "feature_dtype", "dataset_fingerprint", "sources", "n_rows", "rows_done",
)
# Settings an `embed` command must repeat exactly to resume a cache: what the features depend on
# (a cache made before image_ids_fingerprint compares its ids; `embed.runner`).
RESUME_SETTINGS = ("backbone", "preprocessing", "feature_dim", "feature_dtype", "image_ids_fingerprint", "views",
                   "layers")


def stored_dataset(view="orig", layer=None):
    """The dataset of one view's features ("features", "features_flip") or of one stored layer
    ("layers/NAME", "layers_flip/NAME")."""
    if layer is None:
        return "features" if view == "orig" else VIEW_DATASETS[view]
    return f"{LAYER_GROUPS[view]}/{layer}"


def extra_datasets(views, layers, aligned=False):
    """Every dataset a cache with these extra views and layers (the `layers` attribute's entries)
    stores besides /features, in the order they are written: views' features, then each view's
    layers, then (aligned: a cache of aligned faces) FACE_DATASETS."""
    names = [stored_dataset(view) for view in views]
    names += [stored_dataset(view, layer["name"]) for view in ("orig", *views) for layer in layers]
    return names + (list(FACE_DATASETS) if aligned else [])


def is_aligned(settings):
    """True for a cache of aligned faces (its preprocessing has "align")."""
    return bool((settings.get("preprocessing") or {}).get("align"))


def layer_chunk_rows(shape, itemsize):
    """Rows per chunk of a layer dataset whose rows have `shape`: about LAYER_CHUNK_BYTES, at least 1."""
    row_bytes = int(np.prod(shape)) * itemsize
    return max(1, min(ROWS_PER_CHUNK, LAYER_CHUNK_BYTES // max(row_bytes, 1)))


def encode_attr(name, value):
    """Root attribute value as stored: JSON text for structured settings, else as is."""
    return json.dumps(value, sort_keys=True) if name in JSON_ATTRS else value


def truncate_error(text):
    """Encode an error message as UTF-8 cut to ERROR_BYTES without splitting a character."""
    data = text.encode("utf-8")[:ERROR_BYTES]
    return data.decode("utf-8", errors="ignore").encode("utf-8")


def dataset_fingerprint(image_ids, attribute_names, labels, partition):
    """The `dataset_fingerprint` attribute: sha256 over ids, attribute names, labels and partition."""
    digest = hashlib.sha256()
    digest.update("\n".join(attribute_names).encode())
    digest.update(b"\0" + "\n".join(image_ids).encode() + b"\0")
    digest.update(np.ascontiguousarray(labels, np.uint8).tobytes())
    digest.update(np.ascontiguousarray(partition, np.int8).tobytes())
    return digest.hexdigest()


def ids_fingerprint(image_ids):
    """The `image_ids_fingerprint` attribute: sha256 over the ids in order."""
    return hashlib.sha256(("\0".join(image_ids) + "\0").encode()).hexdigest()


def sha256_file(path):
    """sha256 hex digest of a file's bytes: what a cache records of a model file (`backbone.sha256`)
    and a run of every file it wrote."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
