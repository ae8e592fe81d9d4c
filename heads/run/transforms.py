"""Feature transforms (`--features SPEC`), fitted on the train split only and stored with the run,
so evaluate, predict and export apply exactly what training saw.

SPEC:
  raw             features as cached (no copy)
  standardize     (x - mean) / std, per feature (`heads.scaling.standardization`; for a spatial
                  input, per position and channel)
  l2              x / ||x||, per row (nothing fitted; `heads.scaling.l2_normalised`)
  pca:N           (x - mean) @ components[:N].T, the top N principal axes of the train features
  pca-whiten:N    the same, each component divided by its standard deviation
Fitted state lives in RUN_DIR/transform.npz (arrays `mean`, `scale`, `components`, `spec`).
"""

import re
from pathlib import Path

import numpy as np

from cache.errors import UsageError, UserError
from heads.scaling import l2_normalised, l2_normalised_tf, standardization

TRANSFORM_FILE = "transform.npz"
SPECS = "raw, standardize, l2, pca:N, pca-whiten:N"
WHITEN_FLOOR = 1e-7  # a principal component's variance is floored here before whitening


def parse_features(spec):
    """Validate a `--features` SPEC; returns it normalised, or raises UsageError (exit 2)."""
    text = str(spec).strip()
    if text in ("raw", "standardize", "l2"):
        return text
    match = re.fullmatch(r"(pca|pca-whiten):(\d+)", text)
    if match and int(match.group(2)) >= 1:
        return text
    raise UsageError(f"--features {text!r}: expected one of {SPECS} (N >= 1)")


class Transform:
    """fit(X) on train features -> self; transform(X [n, D]) -> float32 [n, D'] (raw: X as given)."""

    def __init__(self, spec="raw"):
        self.spec = parse_features(spec)
        self.mean_ = self.scale_ = self.components_ = None

    @property
    def kind(self):
        return self.spec.split(":")[0]

    def fit(self, X):
        X = np.asarray(X)
        if X.ndim > 2 and self.kind not in ("raw", "standardize"):
            raise UsageError(f"--features {self.spec} needs vectors; the input is spatial ({list(X.shape[1:])} per "
                             "row): use raw or standardize (per position and channel)")
        if self.kind == "standardize":
            self.mean_, std = standardization(X)
            self.scale_ = 1.0 / std
        elif self.kind in ("pca", "pca-whiten"):
            from sklearn.decomposition import PCA
            n = int(self.spec.split(":")[1])
            if n > min(X.shape):
                raise UserError(f"--features {self.spec}: at most {min(X.shape)} components for "
                                f"{X.shape[0]} train rows of width {X.shape[1]}")
            pca = PCA(n_components=n, svd_solver="covariance_eigh").fit(X.astype(np.float32))
            self.mean_ = pca.mean_.astype(np.float32)
            self.components_ = pca.components_.astype(np.float32)
            if self.kind == "pca-whiten":
                self.scale_ = (1.0 / np.sqrt(np.maximum(pca.explained_variance_, WHITEN_FLOOR))).astype(np.float32)
        return self

    def transform(self, X):
        if self.kind == "raw":
            return X
        X = np.asarray(X, np.float32)
        if self.kind == "l2":
            return l2_normalised(X)
        if self.kind == "standardize":
            return (X - self.mean_) * self.scale_
        projected = (X - self.mean_) @ self.components_.T
        return projected * self.scale_ if self.scale_ is not None else projected

    def transform_tf(self, x):
        """The same on a float32 tensor [B, D] (for `export`)."""
        import tensorflow as tf
        if self.kind == "raw":
            return x
        if self.kind == "l2":
            return l2_normalised_tf(x)
        if self.kind == "standardize":
            return (x - self.mean_) * self.scale_
        projected = tf.matmul(x - self.mean_, tf.constant(self.components_), transpose_b=True)
        return projected * self.scale_ if self.scale_ is not None else projected

    def save(self, directory):
        """Write transform.npz (not for raw); returns the file names written."""
        if self.kind == "raw":
            return []
        arrays = {k: v for k, v in (("mean", self.mean_), ("scale", self.scale_), ("components", self.components_))
                  if v is not None}
        np.savez(Path(directory) / TRANSFORM_FILE, spec=np.array(self.spec), **arrays)
        return [TRANSFORM_FILE]

    @classmethod
    def load(cls, directory, spec):
        transform = cls(spec)
        if transform.kind == "raw":
            return transform
        path = Path(directory) / TRANSFORM_FILE
        try:
            with np.load(path, allow_pickle=False) as data:
                if str(data["spec"]) != transform.spec:
                    raise UserError(f"{path}: holds {data['spec']}, the run says {transform.spec}")
                transform.mean_, transform.scale_, transform.components_ = (
                    data[k] if k in data else None for k in ("mean", "scale", "components"))
        except (OSError, ValueError, KeyError) as exc:
            raise UserError(f"{path}: cannot read the fitted transform ({exc})") from None
        return transform
