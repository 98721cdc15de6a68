"""Cross-corpus feature normalisation, on arrays: which statistics standardise which rows.

Modes (``MODES``):

- ``none``: features as they are.
- ``source``: both sets standardised with the training set's mean and std.
- ``corpus``: each set standardised with its own statistics; the test set's come from its
  unlabelled features (transductive: the test set is seen as a whole before prediction).
- ``speaker``: every speaker's rows standardised with that speaker's statistics, on both sides
  (transductive on the test side: each test speaker is seen as a whole).
- ``coral``: as ``corpus``, then the training set mapped onto the test set's covariance by CORAL
  (:func:`classifiers.learners.coral.coral_align`; label-free, transductive like ``corpus``).

A feature with (near) zero variance in a set or speaker is only centred.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from featurestore.errors import FsError

MODES: tuple[str, ...] = ("none", "source", "corpus", "speaker", "coral")
TRANSDUCTIVE: tuple[str, ...] = ("corpus", "speaker", "coral")  # modes that read the test set's own statistics
# the standardisation each mode applies to one set with that set's own statistics (coral: before aligning)
OWN_STATISTICS: dict[str, str] = {"corpus": "corpus", "speaker": "speaker", "coral": "corpus"}

_EPS = 1e-8


class NormaliseError(FsError):
    """A normalisation that cannot be done as asked (mode, shapes, missing speaker ids)."""


def _stats(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and safe std ``(D,)`` of ``X (n, D)`` in float64; std < eps becomes 1."""
    mean = X.mean(axis=0, dtype=np.float64)
    std = X.std(axis=0, dtype=np.float64)
    return mean, np.where(std > _EPS, std, 1.0)


def _apply(X: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    return ((X - mean) / std).astype(X.dtype, copy=False)


def _per_speaker(X: np.ndarray, groups: np.ndarray) -> np.ndarray:
    out = np.empty_like(X)
    for s in np.unique(groups):
        rows = groups == s
        out[rows] = _apply(X[rows], *_stats(X[rows]))
    return out


def _float(X: Any, name: str) -> np.ndarray:
    X = np.asarray(X)
    if X.dtype not in (np.float32, np.float64):
        X = X.astype(np.float64)
    if X.ndim != 2:
        raise NormaliseError(f"{name} must be 2-D (n, D), got shape {X.shape}")
    return X


def _groups(groups: Any, X: np.ndarray, name: str) -> np.ndarray:
    if groups is None:
        raise NormaliseError(
            f"mode 'speaker' needs speaker ids for every row: pass {name}=... "
            "or choose another mode"
        )
    groups = np.asarray(groups)
    if groups.shape != (X.shape[0],):
        raise NormaliseError(f"{name} must have shape ({X.shape[0]},), got {groups.shape}")
    return groups


def standardise_set(X: Any, groups: Any = None) -> np.ndarray:
    """One set ``X (n, D)`` standardised with its own statistics: per speaker when ``groups``
    ``(n,)`` is given (the ``speaker`` mode), else as a whole (the ``corpus`` mode)."""
    X = _float(X, "X")
    if X.shape[0] == 0:
        raise NormaliseError("cannot normalise an empty set; check the rows selected")
    if groups is None:
        return _apply(X, *_stats(X))
    return _per_speaker(X, _groups(groups, X, "groups"))


def normalise(
    X_train: Any,
    X_test: Any,
    mode: str = "source",
    *,
    train_groups: Any = None,
    test_groups: Any = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Normalise ``X_train (n, D)`` and ``X_test (m, D)`` by ``mode`` (see :data:`MODES`).

    Returns ``(X_train', X_test', info)``, float dtypes kept (others become float64). ``info``
    records ``mode``, ``transductive`` (whether test statistics were used) and, for
    ``speaker``, the speaker counts and how many speakers have a single utterance (those
    rows become all zero).
    """
    if mode not in MODES:
        raise NormaliseError(f"unknown normalisation {mode!r}; choose one of: {', '.join(MODES)}")
    X_train, X_test = _float(X_train, "X_train"), _float(X_test, "X_test")
    if X_train.shape[1] != X_test.shape[1]:
        raise NormaliseError(
            f"train and test features differ in width ({X_train.shape[1]} vs {X_test.shape[1]}); "
            "use the same model and layer on both sides"
        )
    if X_train.shape[0] == 0 or X_test.shape[0] == 0:
        raise NormaliseError("cannot normalise an empty set; check the rows selected")
    info: dict[str, Any] = {"mode": mode, "transductive": mode in TRANSDUCTIVE}
    if mode == "none":
        return X_train, X_test, info
    if mode == "source":
        stats = _stats(X_train)
        return _apply(X_train, *stats), _apply(X_test, *stats), info
    if mode == "corpus":
        return standardise_set(X_train), standardise_set(X_test), info
    if mode == "coral":
        from classifiers.learners.coral import coral_align

        X_test = standardise_set(X_test)
        return coral_align(standardise_set(X_train), X_test)[0], X_test, info
    g_train = _groups(train_groups, X_train, "train_groups")
    g_test = _groups(test_groups, X_test, "test_groups")
    for side, g in (("train", g_train), ("test", g_test)):
        speakers, counts = np.unique(g, return_counts=True)
        info[f"{side}_speakers"] = int(speakers.size)
        info[f"{side}_single_utterance_speakers"] = int(np.sum(counts == 1))
    return standardise_set(X_train, g_train), standardise_set(X_test, g_test), info
