"""Generated caches and models for tests and benchmarks (no network, no pretrained weights)."""

import shutil
from pathlib import Path

import numpy as np

from cache import layout
from cache.writer import CacheWriter, create_cache

PLANTED_ATTRIBUTES = ["Male", "Smiling", "Young", "Bald"]
PLANTED_SPLITS = {0: 600, 1: 200, 2: 200}


def planted_cache(path, seed=0, flip_test=False, dim=32, finish=True, bald_in_train=True, layer=False, stored=None):
    """Features x ~ N(0, 1); attribute j is 1 where x . w_j + noise > b_j (so it is learnable).
    layer: also store the features as a spatial layer "grid" [2, 2, dim / 4] (each row x reshaped).
    stored: the attribute names whose labels the cache holds (default all; the same features either
    way). Returns the features, every attribute's labels and the partition."""
    rng = np.random.default_rng(seed)
    partition = np.concatenate([np.full(n, p) for p, n in PLANTED_SPLITS.items()])
    n = len(partition)
    x = rng.standard_normal((n, dim)).astype(np.float32)
    w = rng.standard_normal((dim, len(PLANTED_ATTRIBUTES)))
    logits = x @ w + 0.5 * rng.standard_normal((n, len(PLANTED_ATTRIBUTES))) - np.array([0.0, 0.5, -2.0, 3.0])
    labels = (logits > 0).astype(np.uint8)
    if not bald_in_train:
        labels[partition == 0, 3] = 0
    if flip_test:
        test = partition == 2
        labels[test] = 1 - labels[test]
        x[test] = -x[test]
    columns = [PLANTED_ATTRIBUTES.index(a) for a in (stored or PLANTED_ATTRIBUTES)]
    create_cache(path, image_ids=[f"{i:06d}.jpg" for i in range(n)], attribute_names=[PLANTED_ATTRIBUTES[j] for j in columns],
                 labels=labels[:, columns],
                 partition=partition, feature_dim=dim, feature_dtype="float32",
                 settings={"backbone": {"model": "keras:EfficientNetV2B0", "kind": "keras_app"},
                           "preprocessing": {"image_size": 32}, "dataset_fingerprint": f"fp{seed}{flip_test}",
                           "sources": {}, **({"layers": [{"name": "grid", "pool": "grid:2", "shape": [2, 2, dim // 4]}]}
                                             if layer else {})})
    with CacheWriter(path) as writer:
        stop = n if finish else n // 2
        status = np.full(stop, layout.STATUS_OK)
        status[5] = layout.STATUS_FAILED
        extra = {"layers/grid": x[:stop].reshape(stop, 2, 2, dim // 4)} if layer else None
        writer.write_rows(0, x[:stop], status, ["bad" if s == layout.STATUS_FAILED else "" for s in status], extra)
    return x, labels, partition


def pixel_backbone(path):
    """A fixed, weight-free representation of a face: 64x64 RGB averaged over 4x4 blocks (768-d),
    as a .keras file cut at layer "embedding". Real signal without pretrained weights."""
    import keras
    inputs = keras.Input((64, 64, 3))
    x = keras.layers.AveragePooling2D(4)(inputs)
    x = keras.layers.Flatten(name="embedding")(x)
    keras.Model(inputs, keras.layers.Dense(1)(x)).save(path)
    return path


def real_sample_with_copies(sample, out, count, seed=0):
    """A CelebA-layout folder `out` of the real sample's images (copied: embed refuses links that
    lead out of the image folder) plus `count` planted
    copies in other splits (embed.sample.plant_duplicates: half exact, half re-encoded crops), with
    planted_duplicates.csv; returns out."""
    import pandas as pd

    from embed.sample import plant_duplicates, write_label_files
    sample, out = Path(sample), Path(out)
    images = out / "img_align_celeba"
    images.mkdir(parents=True, exist_ok=True)
    attributes = pd.read_csv(sample / "list_attr_celeba.csv", dtype={"image_id": str})
    partition = pd.read_csv(sample / "list_eval_partition.csv", dtype={"image_id": str}).set_index("image_id")
    ids = list(attributes.image_id)
    for image_id in ids:
        shutil.copyfile(sample / "img_align_celeba" / image_id, images / image_id)
    given = (attributes.drop(columns="image_id").to_numpy() == 1).astype(np.uint8)
    split = partition.loc[ids, "partition"].to_numpy().astype(np.int8)
    top = max(int(Path(i).stem) for i in ids)
    renamed = [f"{int(Path(i).stem):06d}.jpg" for i in ids]
    assert renamed == ids and top < 10 ** 6 - count, "the sample's ids are CelebA's six-digit names"
    ids, given, split = plant_duplicates(out, images, ids, given, split, count, seed, first_new=top + 1)
    write_label_files(out, list(attributes.columns[1:]), ids, given, split)
    return out
