"""Metrics, in one tested place. UAR = unweighted average recall = mean of per-class recall.

Every function takes 1-D label arrays of equal length ``(n,)``. ``labels`` fixes the class
order (rows and columns of :func:`confusion`, keys of :func:`per_class_recall`); by default it
is the sorted set of classes in ``y_true``. Recall-based metrics average only over the classes
present in ``y_true`` (a class with no true utterance has no recall); predictions of any other
class count as errors.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from sklearn.metrics import confusion_matrix, f1_score


def _check(y_true: ArrayLike, y_pred: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise ValueError(
            f"y_true and y_pred must be 1-D of equal length, got {y_true.shape} and {y_pred.shape}"
        )
    if y_true.size == 0:
        raise ValueError("a metric of an empty set is undefined")
    return y_true, y_pred


def _labels(y_true: np.ndarray, labels: Sequence | None) -> list:
    return list(labels) if labels is not None else list(np.unique(y_true))


def _present(y_true: np.ndarray, labels: Sequence | None) -> list:
    return [c for c in _labels(y_true, labels) if np.any(y_true == c)]


def _native(value: Any) -> Any:
    """A numpy scalar as the plain Python value ``json`` can write."""
    return value.item() if isinstance(value, np.generic) else value


def uar(y_true: ArrayLike, y_pred: ArrayLike, labels: Sequence | None = None) -> float:
    """Mean recall over ``labels`` (default: the classes present in ``y_true``).

    Classes listed in ``labels`` but absent from ``y_true`` are left out (their recall is
    undefined); predictions of classes outside ``y_true`` count as errors.
    """
    y_true, y_pred = _check(y_true, y_pred)
    classes = _present(y_true, labels)
    return float(np.mean([np.mean(y_pred[y_true == c] == c) for c in classes]))


def per_class_recall(
    y_true: ArrayLike, y_pred: ArrayLike, labels: Sequence | None = None
) -> dict[str, float]:
    """``{str(label): recall}`` in ``labels`` order; NaN for a label absent from ``y_true``."""
    y_true, y_pred = _check(y_true, y_pred)
    out: dict[str, float] = {}
    for c in _labels(y_true, labels):
        mask = y_true == c
        out[str(c)] = float(np.mean(y_pred[mask] == c)) if mask.any() else math.nan
    return out


def confusion(y_true: ArrayLike, y_pred: ArrayLike, labels: Sequence | None = None) -> np.ndarray:
    """``(C, C)`` int counts, rows = true class, columns = predicted class, in ``labels`` order.

    Utterances whose true or predicted label is not in ``labels`` are not counted.
    """
    y_true, y_pred = _check(y_true, y_pred)
    return confusion_matrix(y_true, y_pred, labels=_labels(y_true, labels)).astype(np.int64)


def weighted_accuracy(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Plain accuracy: the fraction of utterances predicted right (WA in the SER literature)."""
    y_true, y_pred = _check(y_true, y_pred)
    return float(np.mean(y_true == y_pred))


def macro_f1(y_true: ArrayLike, y_pred: ArrayLike, labels: Sequence | None = None) -> float:
    """Mean F1 over the classes of ``labels`` present in ``y_true`` (F1 = 0 when undefined)."""
    y_true, y_pred = _check(y_true, y_pred)
    present = _present(y_true, labels)
    return float(f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0))


def chance_uar(labels: Sequence) -> float:
    """UAR of a uniform random guess among ``labels``: ``1 / C``."""
    n = len(set(labels))
    if n == 0:
        raise ValueError("chance level of zero classes is undefined")
    return 1.0 / n


def evaluate(
    y_true: ArrayLike, y_pred: ArrayLike, labels: Sequence | None = None
) -> dict[str, Any]:
    """Every metric above as one JSON-serialisable dict.

    Keys: ``uar``, ``wa``, ``macro_f1``, ``per_class_recall`` (``None`` for a label absent from
    ``y_true``), ``confusion`` (nested lists, rows true), ``labels``, ``chance`` (``1 / C``),
    ``n`` (number of utterances).
    """
    y_true, y_pred = _check(y_true, y_pred)
    labels = _labels(y_true, labels)
    recall = per_class_recall(y_true, y_pred, labels)
    return {
        "uar": uar(y_true, y_pred, labels),
        "wa": weighted_accuracy(y_true, y_pred),
        "macro_f1": macro_f1(y_true, y_pred, labels),
        "per_class_recall": {k: (None if math.isnan(v) else v) for k, v in recall.items()},
        "confusion": confusion(y_true, y_pred, labels).tolist(),
        "labels": [_native(c) for c in labels],
        "chance": chance_uar(labels),
        "n": int(y_true.size),
    }
