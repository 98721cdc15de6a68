"""Uncertainty of UAR: bootstrap intervals over test speakers, paired comparisons, McNemar.

A test set of a few hundred utterances from 6-30 speakers carries several points of sampling
error, and utterances of one speaker are not independent. The intervals here therefore resample
**speakers** with replacement (a cluster bootstrap) by default; the utterance-level interval is
available beside it (it ignores the clustering and is narrower).

Every function takes the predictions of one or several training seeds on one test set:
``y_true`` ``(n,)``, ``y_pred`` ``(n,)`` or ``(n_seeds, n)``, ``groups`` ``(n,)`` speaker ids. With
several seeds, the statistic is the mean UAR over seeds and each bootstrap resample draws one set
of speakers shared by all seeds (pooled over seeds). UAR follows :func:`classifiers.learners.metrics.uar`:
the mean recall over the classes present (in the resample).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike
from scipy.stats import binomtest

Unit = Literal["speaker", "utterance"]


@dataclass(frozen=True)
class Interval:
    """A UAR estimate (fraction, like ``uar_mean``) with its percentile bootstrap interval."""

    estimate: float
    low: float
    high: float
    confidence: float
    n_resamples: int
    unit: Unit

    def as_list(self) -> list[float]:
        """``[low, high]``, the ledger's ``uar_ci95`` shape."""
        return [self.low, self.high]

    def __str__(self) -> str:
        return f"{100 * self.estimate:.1f} [{100 * self.low:.1f}, {100 * self.high:.1f}]"


@dataclass(frozen=True)
class PairedComparison:
    """UAR(A) - UAR(B) on the same test utterances, its interval, and a two-sided p-value."""

    difference: float
    low: float
    high: float
    p_value: float
    confidence: float
    n_resamples: int
    unit: Unit

    def __str__(self) -> str:
        return (f"{100 * self.difference:+.1f} [{100 * self.low:+.1f}, {100 * self.high:+.1f}] "
                f"p={self.p_value:.3g}")


@dataclass(frozen=True)
class McNemar:
    """Exact McNemar test on utterances: ``a_only`` right only under A, ``b_only`` only under B."""

    a_only: int
    b_only: int
    p_value: float


def _as_seeds(y_true: ArrayLike, y_pred: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """``(n,)`` truth and ``(n_seeds, n)`` predictions, checked."""
    truth = np.asarray(y_true)
    pred = np.asarray(y_pred)
    if pred.ndim == 1:
        pred = pred[None, :]
    if truth.ndim != 1 or pred.ndim != 2 or pred.shape[1] != truth.size:
        raise ValueError(f"y_true must be (n,) and y_pred (n,) or (n_seeds, n), got {truth.shape} and {np.shape(y_pred)}")
    if truth.size == 0:
        raise ValueError("an interval of an empty test set is undefined")
    return truth, pred


def _units(groups: ArrayLike | None, n: int, unit: Unit) -> np.ndarray:
    """``(n,)`` int codes of the resampling unit of each utterance."""
    if unit == "utterance":
        return np.arange(n)
    if unit != "speaker":
        raise ValueError(f"unit must be 'speaker' or 'utterance', got {unit!r}")
    if groups is None:
        raise ValueError("a speaker bootstrap needs the speaker of every test utterance (groups)")
    groups = np.asarray(groups)
    if groups.shape != (n,):
        raise ValueError(f"groups must be (n,) = ({n},), got {groups.shape}")
    return np.unique(groups, return_inverse=True)[1].reshape(-1)


def _counts(truth: np.ndarray, preds: list[np.ndarray], codes: np.ndarray,
            n_units: int | None = None) -> tuple[np.ndarray, list[np.ndarray]]:
    """Per unit and class: ``totals`` ``(U, K)`` utterances and, per predictor, ``hits`` ``(S, U, K)`` right
    (``U`` = ``n_units``, default the highest unit code + 1)."""
    classes, class_idx = np.unique(truth, return_inverse=True)
    n_units = int(codes.max()) + 1 if n_units is None else n_units
    cell = codes * len(classes) + class_idx.reshape(-1)
    size = n_units * len(classes)
    totals = np.bincount(cell, minlength=size).reshape(n_units, len(classes)).astype(np.float64)
    hits = [np.stack([np.bincount(cell, weights=(p == truth), minlength=size).reshape(n_units, len(classes)) for p in pred])
            for pred in preds]
    return totals, hits


def _uar_of(weights: np.ndarray, totals: np.ndarray, hits: np.ndarray) -> np.ndarray:
    """Mean-over-seeds UAR for each row of unit ``weights`` ``(B, U)`` → ``(B,)``."""
    total = weights @ totals                                   # (B, K)
    right = np.einsum("bu,suk->bsk", weights, hits)           # (B, S, K)
    present = total > 0
    recall = np.where(present[:, None, :], right / np.where(present, total, 1.0)[:, None, :], 0.0)
    per_seed = recall.sum(axis=2) / present.sum(axis=1)[:, None]
    return per_seed.mean(axis=1)


def _resample_weights(n_units: int, n_resamples: int, random_state: int | np.random.Generator | None) -> np.ndarray:
    """``(B, U)`` how often each unit is drawn in each resample (``U`` draws with replacement)."""
    rng = np.random.default_rng(random_state)
    return rng.multinomial(n_units, np.full(n_units, 1.0 / n_units), size=n_resamples).astype(np.float64)


def _check_level(confidence: float, n_resamples: int) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1, got {n_resamples}")


def uar_interval(y_true: ArrayLike, y_pred: ArrayLike, groups: ArrayLike | None = None, *, unit: Unit = "speaker",
                 n_resamples: int = 1000, confidence: float = 0.95,
                 random_state: int | np.random.Generator | None = 0) -> Interval:
    """Percentile bootstrap interval of UAR over test speakers (or utterances).

    ``y_true`` ``(n,)``; ``y_pred`` ``(n,)`` or ``(n_seeds, n)``; ``groups`` ``(n,)`` speaker ids
    (needed for ``unit="speaker"``). The estimate is the mean over seeds of the UAR on the whole set.
    """
    _check_level(confidence, n_resamples)
    truth, pred = _as_seeds(y_true, y_pred)
    codes = _units(groups, truth.size, unit)
    totals, (hits,) = _counts(truth, [pred], codes)
    estimate = float(_uar_of(np.ones((1, totals.shape[0])), totals, hits)[0])
    boot = _uar_of(_resample_weights(totals.shape[0], n_resamples, random_state), totals, hits)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(boot, [alpha, 1.0 - alpha])
    return Interval(estimate, float(low), float(high), confidence, n_resamples, unit)


def uar_interval_sets(parts: Sequence[tuple[ArrayLike, ArrayLike, ArrayLike]], *, unit: Unit = "speaker",
                      n_resamples: int = 1000, confidence: float = 0.95,
                      random_state: int | np.random.Generator | None = 0) -> Interval:
    """Percentile bootstrap interval of the mean-over-seeds UAR when each seed has its own test set
    (few-shot: each seed's shots leave the test set).

    ``parts``: one ``(y_true (n_s,), y_pred (n_s,), units (n_s,))`` per seed; ``units`` names each
    utterance's resampling unit across seeds (speaker ids for a speaker bootstrap, utterance ids for
    an utterance bootstrap). Each resample draws units of the union of all parts with replacement, and
    a unit drawn ``k`` times counts ``k`` times in every seed that tested it. With one test set shared
    by all seeds this is :func:`uar_interval` with ``groups=units``. ``unit`` says what ``units`` name.
    """
    _check_level(confidence, n_resamples)
    if not parts:
        raise ValueError("an interval needs the predictions of at least one seed")
    checked = []
    for truth, pred, units in parts:
        truth, pred = _as_seeds(truth, pred)
        if pred.shape[0] != 1:
            raise ValueError("each part holds one seed's predictions: y_pred must be (n,)")
        units = np.asarray(units).astype(str)
        if units.shape != truth.shape:
            raise ValueError(f"units must be (n,) = {truth.shape}, got {units.shape}")
        checked.append((truth, pred, units))
    names = np.unique(np.concatenate([units for _, _, units in checked]))
    weights = np.vstack([np.ones((1, names.size)), _resample_weights(names.size, n_resamples, random_state)])
    per_seed = []
    for truth, pred, units in checked:
        totals, (hits,) = _counts(truth, [pred], np.searchsorted(names, units), names.size)
        with np.errstate(invalid="ignore", divide="ignore"):  # a resample that drew none of this seed's units
            per_seed.append(_uar_of(weights, totals, hits))
    values = np.nanmean(np.stack(per_seed), axis=0)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.nanquantile(values[1:], [alpha, 1.0 - alpha])
    return Interval(float(values[0]), float(low), float(high), confidence, n_resamples, unit)


def paired_bootstrap(y_true: ArrayLike, pred_a: ArrayLike, pred_b: ArrayLike, groups: ArrayLike | None = None, *,
                     unit: Unit = "speaker", n_resamples: int = 1000, confidence: float = 0.95,
                     random_state: int | np.random.Generator | None = 0) -> PairedComparison:
    """UAR(A) - UAR(B) on one test set, resampling speakers (or utterances) jointly for A and B.

    ``pred_a``, ``pred_b``: ``(n,)`` or ``(n_seeds, n)`` each (seed counts may differ). The p-value
    is two-sided, from the bootstrap distribution shifted to a zero difference:
    ``(1 + #{|d* - d| >= |d|}) / (1 + B)``.
    """
    _check_level(confidence, n_resamples)
    truth, a = _as_seeds(y_true, pred_a)
    _, b = _as_seeds(y_true, pred_b)
    codes = _units(groups, truth.size, unit)
    totals, (hits_a, hits_b) = _counts(truth, [a, b], codes)
    whole = np.ones((1, totals.shape[0]))
    difference = float(_uar_of(whole, totals, hits_a)[0] - _uar_of(whole, totals, hits_b)[0])
    weights = _resample_weights(totals.shape[0], n_resamples, random_state)
    boot = _uar_of(weights, totals, hits_a) - _uar_of(weights, totals, hits_b)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(boot, [alpha, 1.0 - alpha])
    extreme = np.abs(boot - difference) >= abs(difference) - 1e-12
    p_value = float((1 + extreme.sum()) / (1 + n_resamples)) if difference != 0 else 1.0
    return PairedComparison(difference, float(low), float(high), min(p_value, 1.0), confidence, n_resamples, unit)


def mcnemar(y_true: ArrayLike, pred_a: ArrayLike, pred_b: ArrayLike) -> McNemar:
    """Exact (binomial) McNemar test of A vs B on the utterances both predicted, each ``(n,)``."""
    truth, a = _as_seeds(y_true, pred_a)
    _, b = _as_seeds(y_true, pred_b)
    if a.shape[0] != 1 or b.shape[0] != 1:
        raise ValueError("McNemar compares one prediction per utterance: pass one seed's predictions")
    right_a, right_b = a[0] == truth, b[0] == truth
    a_only, b_only = int(np.sum(right_a & ~right_b)), int(np.sum(right_b & ~right_a))
    p_value = 1.0 if a_only + b_only == 0 else float(binomtest(a_only, a_only + b_only, 0.5).pvalue)
    return McNemar(a_only, b_only, p_value)
