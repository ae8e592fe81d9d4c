"""A CelebA-size feature cache with planted signal, for head, baseline and I/O benchmarks.

Features x ~ N(0, 1) (D = 1280); attribute j is 1 where x . w_j / sqrt(D) * 3 + noise > b_j, with
b_j set so the positive rates are CelebA's. Split sizes are CelebA's: 162,770 / 19,867 / 19,962.
"""

import numpy as np

from cache import layout
from cache.writer import CacheWriter, create_cache
from embed.sample import CELEBA_ATTRIBUTES

CELEBA_SPLITS = (162_770, 19_867, 19_962)


def planted(n_rows, dim, seed=0):
    """(features float32 [n, dim], labels uint8 [n, 40]) with linear signal per attribute."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_rows, dim), dtype=np.float32)
    w = rng.standard_normal((dim, len(CELEBA_ATTRIBUTES))).astype(np.float32) * (3 / np.sqrt(dim))
    scores = x @ w + rng.standard_normal((n_rows, len(CELEBA_ATTRIBUTES))).astype(np.float32)
    rates = np.array(list(CELEBA_ATTRIBUTES.values()))
    cut = np.array([np.quantile(scores[:, j], 1 - r) for j, r in enumerate(rates)])
    return x, (scores > cut).astype(np.uint8)


def write_synthetic_cache(path, splits=CELEBA_SPLITS, dim=1280, dtype="float16", seed=0, features=None,
                          labels=None, rows_per_write=4096):
    """Write a complete cache at `path`; returns (features, labels) so a caller can reuse them."""
    n = sum(splits)
    if features is None:
        features, labels = planted(n, dim, seed)
    partition = np.concatenate([np.full(count, p, np.int8) for p, count in enumerate(splits)])
    create_cache(path, image_ids=[f"{i + 1:06d}.jpg" for i in range(n)], attribute_names=list(CELEBA_ATTRIBUTES),
                 labels=labels, partition=partition, feature_dim=dim, feature_dtype=dtype,
                 settings={"backbone": {"model": "synthetic", "kind": "synthetic"},
                           "preprocessing": {}, "dataset_fingerprint": f"synthetic-{seed}", "sources": {}})
    with CacheWriter(path) as writer:
        for start in range(0, n, rows_per_write):
            stop = min(n, start + rows_per_write)
            writer.write_rows(start, features[start:stop], np.full(stop - start, layout.STATUS_OK),
                              [""] * (stop - start))
    return features, labels
