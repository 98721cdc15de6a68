"""CORAL: align the source's feature covariance to the target's, without target labels (arrays in, arrays out).

Correlation alignment (Sun, Feng & Saenko, AAAI 2016): whiten the source features with their own
covariance and re-colour them with the target's,

    X_s' = (X_s - mu_s) C_s^(-1/2) C_t^(1/2) + mu_t

so that a classifier trained on ``X_s'`` sees the target's second-order statistics. Only the
source (training) rows are transformed; target rows are used as they are. The target's
features are read as a whole, never its labels (transductive, like the ``corpus`` norm).

Covariances are regularised so that ``D > n`` (1024-d mean+std pooled features, a few hundred
utterances) still gives invertible matrices: ``shrinkage="auto"`` is the Ledoit-Wolf estimate
(on standardised columns, rescaled), a float ``s`` in [0, 1] is ``(1 - s) C + s * mean(diag C) * I``;
``eps`` (relative to the mean variance) is added to every eigenvalue on top, as the paper's ``+ I``.

skada's ``CORALAdapter`` computes the same map (tests/test_coral.py checks ours against it when
skada is installed); fs keeps its own ~40 lines because skada pulls in POT, adds about 7 s to
every import, and takes source and target as one array with a ``sample_domain`` code per row.

    aligner = CoralAligner().fit(X_source, X_target)
    clf.fit(aligner.transform(X_source), y_source); clf.predict(X_target)
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.covariance import ledoit_wolf
from sklearn.utils.validation import check_is_fitted

from featurestore.errors import FsError


class CoralError(FsError):
    """CORAL asked of data it cannot use (shapes, too few rows, bad regularisation)."""


def _matrix(X: Any, name: str, n_features: int | None = None) -> np.ndarray:
    """``X`` as a finite float64 ``(n, D)`` array with ``n >= 2``, or :class:`CoralError`."""
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or (n_features is not None and X.shape[1] != n_features):
        want = "(n, D)" if n_features is None else f"(n, {n_features})"
        raise CoralError(f"{name} must have shape {want}, got {X.shape}; pass pooled features of one layer choice")
    if X.shape[0] < 2:
        raise CoralError(f"{name} has {X.shape[0]} row(s); a covariance needs at least 2 utterances")
    if not np.isfinite(X).all():
        raise CoralError(f"{name} holds NaN or infinite values; check the features (`fs store verify`)")
    return X


def covariance(X: np.ndarray, shrinkage: str | float = "auto") -> np.ndarray:
    """Regularised covariance ``(D, D)`` of ``X (n, D)``: Ledoit-Wolf (``"auto"``) or fixed shrinkage to
    ``mean(diag C) * I`` (a float in [0, 1]; 0 is the empirical covariance)."""
    if shrinkage == "auto":
        scale = X.std(axis=0)
        scale = np.where(scale > 1e-12, scale, 1.0)
        cov = ledoit_wolf((X - X.mean(axis=0)) / scale)[0]
        return scale[:, None] * cov * scale[None, :]
    if isinstance(shrinkage, str) or not 0.0 <= float(shrinkage) <= 1.0:
        raise CoralError(f"shrinkage must be 'auto' or a number in [0, 1], got {shrinkage!r}")
    cov = np.cov(X, rowvar=False).reshape(X.shape[1], X.shape[1])
    target = np.trace(cov) / cov.shape[0] * np.eye(cov.shape[0])
    return (1.0 - float(shrinkage)) * cov + float(shrinkage) * target


def _power(cov: np.ndarray, power: float, eps: float) -> np.ndarray:
    """``(cov + eps * mean variance * I) ** power`` ``(D, D)`` of a symmetric PSD ``cov``, by eigendecomposition."""
    values, vectors = np.linalg.eigh(cov)
    floor = eps * max(float(np.trace(cov)) / cov.shape[0], 1e-12)
    values = np.clip(values, 0.0, None) + floor
    if power < 0 and values.min() <= 1e-12 * max(values.max(), 1e-300):
        raise CoralError("the source covariance is singular (more features than utterances?); "
                         "use shrinkage='auto' or eps > 0")
    return (vectors * values**power) @ vectors.T


class CoralAligner(TransformerMixin, BaseEstimator):
    """Map source features onto the target's mean and covariance (CORAL, label-free).

    ``fit(X_source (n, D), X_target (m, D))`` learns the ``(D, D)`` map ``transform_`` and the
    means; ``transform(X (k, D))`` applies it to source rows. ``align_mean=False`` keeps the
    source centred on zero instead of moving it to the target mean (the paper's CORAL aligns
    covariances only; with per-corpus standardisation first both means are zero anyway).

    After fit: ``mean_source_``, ``mean_target_`` ``(D,)``, ``transform_`` ``(D, D)``,
    ``n_features_in_``.
    """

    def __init__(self, shrinkage: str | float = "auto", eps: float = 1e-3, align_mean: bool = True):
        self.shrinkage = shrinkage
        self.eps = eps
        self.align_mean = align_mean

    def fit(self, X: Any, X_target: Any = None) -> CoralAligner:
        """Learn the map from source ``X (n, D)`` to the unlabelled target ``X_target (m, D)``."""
        if X_target is None:
            raise CoralError("CORAL needs the target's (unlabelled) features: fit(X_source, X_target)")
        if not self.eps >= 0:
            raise CoralError(f"eps must be >= 0, got {self.eps}")
        source = _matrix(X, "X_source")
        target = _matrix(X_target, "X_target", source.shape[1])
        self.mean_source_ = source.mean(axis=0)
        self.mean_target_ = target.mean(axis=0)
        whiten = _power(covariance(source, self.shrinkage), -0.5, self.eps)
        colour = _power(covariance(target, self.shrinkage), 0.5, self.eps)
        self.transform_ = whiten @ colour
        self.n_features_in_ = source.shape[1]
        return self

    def transform(self, X: Any) -> np.ndarray:
        """Source rows ``X (k, D)`` aligned to the target: ``(k, D)``, ``X``'s float dtype kept (else float64)."""
        check_is_fitted(self, "transform_")
        X = np.asarray(X)
        dtype = X.dtype if X.dtype in (np.float32, np.float64) else np.float64
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise CoralError(f"expected source features of shape (k, {self.n_features_in_}), got {X.shape}")
        out = (X - self.mean_source_) @ self.transform_
        if self.align_mean:
            out += self.mean_target_
        return out.astype(dtype, copy=False)


def coral_align(
    X_source: Any, X_target: Any, shrinkage: str | float = "auto", eps: float = 1e-3
) -> tuple[np.ndarray, np.ndarray]:
    """``(X_source' (n, D), X_target (m, D))``: the source aligned to the target, the target unchanged.

    The call the ``coral`` normalisation makes on a (training rows, test rows) pair.
    """
    aligner = CoralAligner(shrinkage=shrinkage, eps=eps).fit(X_source, X_target)
    return aligner.transform(X_source), np.asarray(X_target)
