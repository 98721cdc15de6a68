"""Metrics, in one tested place. UAR = unweighted average recall = mean of per-class recall."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def uar(y_true: Sequence, y_pred: Sequence, labels: Sequence | None = None) -> float:
    """Mean recall over ``labels`` (default: the classes present in ``y_true``).

    Classes listed in ``labels`` but absent from ``y_true`` are left out (their recall is
    undefined); predictions of classes outside ``y_true`` count as errors.
    """
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise ValueError(f"y_true and y_pred must be 1-D of equal length, got {y_true.shape} and {y_pred.shape}")
    if y_true.size == 0:
        raise ValueError("UAR of an empty set is undefined")
    classes = [c for c in (labels if labels is not None else np.unique(y_true)) if np.any(y_true == c)]
    return float(np.mean([np.mean(y_pred[y_true == c] == c) for c in classes]))
