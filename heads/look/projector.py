"""`projector`: a TensorBoard Embedding Projector export of a sample of a cache's rows.

OUT/embedding.ckpt.*, checkpoint   the sampled features, float32 [n, D] (a tf.train.Checkpoint)
OUT/metadata.tsv              a header, then one line per row: id, split, the chosen attributes (0/1)
OUT/sprite.png                thumbnails of the rows' images in a square grid (when the images are
                              reachable), at most 8192 x 8192 pixels as TensorBoard requires
OUT/projector_config.pbtxt    ties them together; `tensorboard --logdir OUT` opens it
The export is built in a temporary folder and renamed into place when complete.
"""

import math
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from cache import layout
from cache.errors import UserError
from cache.reader import load_split, open_cache
from heads.defaults import PROJECTOR
from heads.look.thumbnails import image_folder, png, thumbnail
from heads.run.overlay import Overlay, stored_labels
from heads.run.task import resolve_attributes

SPRITE_LIMIT = 8192


def export_projector(cache, out_dir, *, n=PROJECTOR["n"], split=PROJECTOR["split"], attributes=None,
                     seed=PROJECTOR["seed"], images=None, size=PROJECTOR["thumbnail"], labels=(), partition=None):
    """Write the projector export of `n` rows (seeded sample) of `split`; returns {"rows", "sprite"
    (None or the sprite's size), "note" (why there is no sprite, or which tiles are blank)}.
    labels, partition: a label overlay (`heads.run.overlay`); an unknown label shows as ?."""
    import tensorflow as tf
    from tensorboard.plugins import projector

    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out} exists and is not empty; choose another --out")
    splits = list(layout.PARTITIONS) if split == "all" else [split]
    overlay = Overlay.read(labels, partition)
    labelled = overlay.apply(stored_labels(cache), cache)[0] if overlay else None
    with open_cache(cache) as f:
        attributes = resolve_attributes(attributes, labelled.names if labelled else f.attribute_names, cache)
    parts = [(name, load_split(cache, name, attributes, labelled=labelled)) for name in splits]
    rows = [(name, i) for name, part in parts for i in range(len(part.rows))]
    if not rows:
        raise UserError(f"{cache}: the {split} split has no embedded rows")
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(len(rows), size=min(n, len(rows)), replace=False))
    lookup = dict(parts)
    features = np.stack([lookup[rows[c][0]].features[rows[c][1]] for c in chosen]).astype(np.float32)
    ids = [lookup[rows[c][0]].image_ids[rows[c][1]] for c in chosen]
    labels = [lookup[rows[c][0]].labels[rows[c][1]] for c in chosen]
    folder, why = image_folder(cache, images)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent if out.parent.exists() else None))
    try:
        tf.train.Checkpoint(embedding=tf.Variable(features)).write(str(tmp / "embedding.ckpt"))
        # the checkpoint index names the file relative to the folder, so the export can move
        (tmp / "checkpoint").write_text('model_checkpoint_path: "embedding.ckpt"\n'
                                        'all_model_checkpoint_paths: "embedding.ckpt"\n')
        with open(tmp / "metadata.tsv", "w") as f:
            f.write("\t".join(["id", "split", *attributes]) + "\n")
            for c, image_id, values in zip(chosen, ids, labels):
                shown = ["?" if v == layout.UNKNOWN_LABEL else str(v) for v in values]
                f.write("\t".join([image_id, rows[c][0], *shown]) + "\n")
        config = projector.ProjectorConfig()
        embedding = config.embeddings.add()
        embedding.tensor_name = "embedding/.ATTRIBUTES/VARIABLE_VALUE"
        embedding.metadata_path = "metadata.tsv"
        sprite, note = None, why
        if folder is not None:
            per_row = math.ceil(math.sqrt(len(ids)))
            tile = max(1, min(size, SPRITE_LIMIT // per_row))
            sheet = np.full((per_row * tile, per_row * tile, 3), 255, np.uint8)
            missing = 0
            for k, image_id in enumerate(ids):
                picture = thumbnail(folder / image_id, tile)
                if picture is None:
                    missing += 1
                    picture = np.full((tile, tile, 3), 200, np.uint8)
                r, c = divmod(k, per_row)
                sheet[r * tile:(r + 1) * tile, c * tile:(c + 1) * tile] = picture
            (tmp / "sprite.png").write_bytes(png(sheet))
            embedding.sprite.image_path = "sprite.png"
            embedding.sprite.single_image_dim.extend([tile, tile])
            sprite = [int(sheet.shape[1]), int(sheet.shape[0])]
            note = (f"{missing} of {len(ids)} images could not be read from {folder}; their sprite tiles are grey"
                    if missing else None)
        projector.visualize_embeddings(str(tmp), config)
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"rows": len(ids), "sprite": sprite, "note": note}
