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


def clustered(n_rows, dim, copies, seed=0, clusters=2000, latent=64):
    """(features float16 [n, dim], labels uint8 [n, 40], copied int [copies, 2]): rows that look
    like a backbone's, unlike planted's isotropic noise: non-negative (ReLU'd) mixtures of
    `clusters` centres in a `latent`-d subspace plus small noise, with linear signal per attribute;
    the last `copies` rows are near-copies (noise 1 % of a row's norm) of earlier rows, copied[i] =
    (copy row, source row). Made in blocks: peak memory about the float16 result."""
    rng = np.random.default_rng(seed)
    basis = rng.standard_normal((latent, dim)).astype(np.float32) / np.sqrt(latent)
    centres = rng.standard_normal((clusters, latent)).astype(np.float32) * 2.0
    w = rng.standard_normal((latent, len(CELEBA_ATTRIBUTES))).astype(np.float32)
    features = np.empty((n_rows, dim), np.float16)
    scores = np.empty((n_rows, len(CELEBA_ATTRIBUTES)), np.float32)
    originals = n_rows - copies
    for start in range(0, originals, 16384):
        stop = min(originals, start + 16384)
        z = centres[rng.integers(0, clusters, stop - start)] + rng.standard_normal((stop - start, latent),
                                                                                    dtype=np.float32)
        x = np.maximum(z @ basis + 0.3 * rng.standard_normal((stop - start, dim), dtype=np.float32), 0)
        features[start:stop] = x
        scores[start:stop] = z @ w / np.sqrt(latent) * 3 + rng.standard_normal((stop - start, w.shape[1]),
                                                                                 dtype=np.float32)
    sources = np.sort(rng.choice(originals, copies, replace=False))
    source = features[sources].astype(np.float32)
    scale = 0.01 * np.linalg.norm(source, axis=1, keepdims=True) / np.sqrt(dim)
    features[originals:] = source + scale * rng.standard_normal(source.shape, dtype=np.float32)
    scores[originals:] = scores[sources]
    rates = np.array(list(CELEBA_ATTRIBUTES.values()))
    cut = np.array([np.quantile(scores[:, j], 1 - r) for j, r in enumerate(rates)])
    return features, (scores > cut).astype(np.uint8), np.stack([np.arange(originals, n_rows), sources], axis=1)
