"""Feature arithmetic that transforms and head kinds share, written once: per-feature
standardization statistics and per-row L2 normalisation, each with one floor."""

import numpy as np

STD_FLOOR = 1e-7    # a feature with a smaller standard deviation is divided by this instead
NORM_FLOOR = 1e-12  # a row with a smaller L2 norm is divided by this instead (so zeros stay zeros)


def standardization(X):
    """(mean, std) float32 [D] of features X [n, D], accumulated in float64, std floored."""
    X = np.asarray(X)
    mean = X.mean(axis=0, dtype=np.float64)
    std = np.sqrt(X.var(axis=0, dtype=np.float64))
    return mean.astype(np.float32), np.maximum(std, STD_FLOOR).astype(np.float32)


def l2_normalised(X):
    """float32 [n, D]: each row of X divided by its L2 norm."""
    X = np.asarray(X, np.float32)
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), NORM_FLOOR)


def l2_normalised_tf(x):
    """The same on a float32 tensor [B, D]."""
    import tensorflow as tf
    return x / tf.maximum(tf.norm(x, axis=1, keepdims=True), NORM_FLOOR)
