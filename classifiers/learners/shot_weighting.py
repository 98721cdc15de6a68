"""Few-shot shot weighting: source + k target shots per class, the shots up-weighted by a factor chosen on the shots.

Training on the union of a large source and a few target shots lets the source drown the shots
(on real pairs, source + 20 shots per class lost to the 20 shots alone in 5 of 6 cases). Here each
shot's loss counts ``w`` times a source utterance's, and ``w`` is chosen among candidates by
cross-validation over the shots only: for each fold, train on the source + the other shots
(weighted ``w``), predict the held-out shots; the candidate with the best UAR of the pooled
out-of-fold predictions wins (ties: the lower log loss, then the smaller weight). The candidates:

- ``1``: the plain union;
- ``f * n_source / n_shots`` for ``f`` in ``factors`` (``f = 1``: shots and source weigh the same in total);
- ``inf``: the shots alone (the source dropped), so the choice can always fall back to the
  target-only model and is no worse than it, up to the noise of the choice.

The target's test rows are never seen: only the shots (whose labels are training data). Costs
``(number of candidates) x n_folds + 1`` fits, the shots-only ones tiny.

``balanced`` (a named weight, no cross-validation): each shot weighs ``n_source / n_shots``, so the
shots and the source weigh the same in total.

**Feature augmentation** (``augment=True``; Daumé III, "Frustratingly easy domain adaptation",
ACL 2007): every row ``x (D,)`` becomes ``(x, x, 0)`` for the source and ``(x, 0, x)`` for a shot
(and for the target's test rows), after one standardisation of the union. The probe learns shared
weights from both and target-only weights from the shots, the L2 penalty pulling the target-only
part to zero where the shots do not need it: the shots can overrule the source where they disagree
instead of being outvoted. On the 6 real pairs of URDU, EMODB, RAVDESS (Whisper-base layer 3,
corpus norm, 5/10/20 shots) augmentation with ``balanced`` met "source + shots >= shots alone - 1
and >= 0 shots" in 16 of 18 cells, the plain union in 4, ``auto`` without augmentation in 13.

The choice is only as good as a cross-validation on a few shots can be: on 12 synthetic shifts
(logreg, 40 dimensions, 5-20 shots per class, 10 seeds each) the chosen weight averaged 1 point
below the better of the two baselines (union, shots alone), 3 points at worst, and far above
either baseline used everywhere (up to 14 points). Margins in favour of the shots alone, log loss
as the criterion and leave-one-shot-per-class-out folds did not do better.

    clf = ShotWeightedClassifier(make_classifier("logreg"), random_state=seed)
    clf.fit(np.vstack([X_src, X_shots]), np.r_[y_src, y_shots], shot_mask=np.r_[np.zeros(n_src, bool), np.ones(n_shots, bool)])
    clf.weight_, clf.choice_.scores     # the weight used, every candidate's cross-validated UAR
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.metrics import log_loss
from sklearn.model_selection import StratifiedKFold
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted, has_fit_parameter

from classifiers.learners.metrics import uar
from classifiers.learners.probes import ClassifierError, check_training_data, make_classifier

SHOTS_ONLY = math.inf
BALANCED = "balanced"  # a named weight: n_source / n_shots


def resolve_weight(weight: float | str, n_source: int, n_shots: int) -> float:
    """``weight`` as a number: :data:`BALANCED` becomes ``n_source / n_shots`` (at least 1)."""
    if weight == BALANCED:
        if n_shots < 1:
            raise ClassifierError("a balanced shot weight needs at least one shot")
        return max(1.0, n_source / n_shots)
    return float(weight)


def augment(X: np.ndarray, is_target: bool) -> np.ndarray:
    """EasyAdapt features ``(n, 3D)`` of ``X (n, D)``: ``(x, x, 0)`` for source rows, ``(x, 0, x)`` for target rows."""
    zeros = np.zeros_like(X)
    return np.hstack([X, zeros, X] if is_target else [X, X, zeros])


class AugmentedClassifier(ClassifierMixin, BaseEstimator):
    """``estimator`` trained on EasyAdapt features (:func:`augment`) of source and target rows.

    ``fit(X (n, D), y (n,), is_target (n,) bool, sample_weight, groups)`` standardises ``X`` once
    (``scaler_``, over every row), makes the source and target copies and fits a clone of
    ``estimator`` with its own standardisation off (``estimator_``, on ``(n, 3D)``); ``predict`` /
    ``predict_proba`` take rows ``(m, D)`` of the target. ``classes_``, ``n_features_in_`` (``D``).
    """

    def __init__(self, estimator: BaseEstimator | None = None):
        self.estimator = estimator

    def fit(self, X: Any, y: Any, is_target: Any = None, sample_weight: Any = None,
            groups: Any = None) -> AugmentedClassifier:
        """Fit on the augmented rows; ``is_target`` marks the target's rows (the shots)."""
        X, y, groups = check_training_data(X, y, groups)
        target = np.zeros(y.shape, bool) if is_target is None else np.asarray(is_target, dtype=bool)
        if target.shape != y.shape:
            raise ClassifierError(f"is_target must be a (n,) boolean mask, got shape {target.shape} for {y.size} rows")
        self.scaler_ = StandardScaler().fit(X.astype(np.float64))
        Z = self.scaler_.transform(X.astype(np.float64))
        A = np.where(target[:, None], augment(Z, is_target=True), augment(Z, is_target=False))
        est = clone(make_classifier("logreg") if self.estimator is None else self.estimator)
        if "standardise" in est.get_params():
            est.set_params(standardise=False)
        self.estimator_ = est.fit(A, y, groups=groups, sample_weight=sample_weight)
        self.classes_ = self.estimator_.classes_
        self.n_features_in_ = X.shape[1]
        return self

    def _target(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "estimator_")
        return augment(self.scaler_.transform(np.asarray(X, dtype=np.float64)), is_target=True)

    def predict_proba(self, X: Any) -> np.ndarray:
        """``(m, C)`` probabilities in ``classes_`` order."""
        return self.estimator_.predict_proba(self._target(X))

    def predict(self, X: Any) -> np.ndarray:
        """Labels ``(m,)``."""
        return self.estimator_.predict(self._target(X))


def candidate_weights(n_source: int, n_shots: int, factors: Sequence[float] = (0.25, 1.0, 4.0)) -> tuple[float, ...]:
    """Ascending distinct shot weights: ``1``, ``f * n_source / n_shots`` for each factor (those above 1), ``inf``."""
    if n_shots < 1 or n_source < 0:
        raise ClassifierError(f"shot weighting needs shots and a source, got {n_shots} shots and {n_source} source rows")
    balance = n_source / n_shots
    return tuple(sorted({1.0, *(float(f) * balance for f in factors if float(f) * balance > 1.0), SHOTS_ONLY}))


@dataclass
class ShotWeightChoice:
    """The weight chosen and why: ``scores`` and ``log_losses`` map each candidate weight to the UAR and mean
    log loss of the out-of-fold predictions of the shots (``inf`` = shots only)."""

    weight: float
    scores: dict[float, float]
    log_losses: dict[float, float]
    n_folds: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-able record (``"shots_only"`` for the infinite weight)."""

        def name(w: float) -> float | str:
            return "shots_only" if math.isinf(w) else w

        return {"weight": name(self.weight), "n_folds": self.n_folds,
                "candidates": [{"weight": name(w), "uar": self.scores[w], "log_loss": self.log_losses[w]}
                               for w in self.scores]}


def fit_weighted(estimator: BaseEstimator, X_source: np.ndarray, y_source: np.ndarray, X_shots: np.ndarray,
                 y_shots: np.ndarray, weight: float, groups_source: np.ndarray | None = None,
                 groups_shots: np.ndarray | None = None, augmented: bool = False) -> BaseEstimator:
    """A clone of ``estimator`` fitted on source ``(n, D)`` + shots ``(k, D)``, each shot weighted ``weight``
    (``inf``: on the shots alone); ``augmented``: on :func:`augment`'s features, standardised once on the
    union (the estimator's own standardisation, if it has one, off), as an :class:`AugmentedClassifier`."""
    est = clone(estimator)
    if math.isinf(weight):
        return est.fit(X_shots, y_shots, groups=groups_shots)
    groups = None if groups_source is None or groups_shots is None else np.concatenate([groups_source, groups_shots])
    sample_weight = np.concatenate([np.ones(len(y_source)), np.full(len(y_shots), float(weight))])
    X, y = np.concatenate([X_source, X_shots]), np.concatenate([y_source, y_shots])
    if augmented:
        is_target = np.arange(len(y)) >= len(y_source)
        return AugmentedClassifier(est).fit(X, y, is_target, sample_weight=sample_weight, groups=groups)
    return est.fit(X, y, groups=groups, sample_weight=sample_weight)


def _folds(y_shots: np.ndarray, n_folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    smallest = int(np.unique(y_shots, return_counts=True)[1].min())
    if smallest < 2:
        raise ClassifierError(f"choosing a shot weight needs at least 2 shots of every class, got {smallest}; "
                              "ask for more shots or give one weight (weights=[w])")
    folds = StratifiedKFold(n_splits=min(n_folds, smallest), shuffle=True, random_state=seed)
    return list(folds.split(np.zeros(y_shots.size), y_shots))


def choose_shot_weight(estimator: BaseEstimator, X_source: np.ndarray, y_source: np.ndarray, X_shots: np.ndarray,
                       y_shots: np.ndarray, candidates: Sequence[float], n_folds: int = 4, seed: int = 0,
                       groups_source: np.ndarray | None = None,
                       groups_shots: np.ndarray | None = None, augmented: bool = False) -> ShotWeightChoice:
    """The candidate weight whose out-of-fold predictions of the shots score best (stratified folds over the shots)."""
    classes = np.unique(np.concatenate([y_source, y_shots]))
    folds = _folds(y_shots, n_folds, seed)
    scores: dict[float, float] = {}
    losses: dict[float, float] = {}
    for weight in candidates:
        predicted = np.empty_like(y_shots)
        proba = np.zeros((y_shots.size, classes.size))
        for train, held_out in folds:
            est = fit_weighted(estimator, X_source, y_source, X_shots[train], y_shots[train], weight, groups_source,
                               None if groups_shots is None else groups_shots[train], augmented)
            predicted[held_out] = est.predict(X_shots[held_out])
            proba[np.ix_(held_out, np.searchsorted(classes, est.classes_))] = est.predict_proba(X_shots[held_out])
        scores[weight] = uar(y_shots, predicted)
        losses[weight] = float(log_loss(y_shots, np.clip(proba, 1e-12, 1.0), labels=classes))
    best = max(candidates, key=lambda w: (scores[w], -losses[w], -w))
    return ShotWeightChoice(weight=best, scores=scores, log_losses=losses, n_folds=len(folds))


class ShotWeightedClassifier(ClassifierMixin, BaseEstimator):
    """``estimator`` trained on source + target shots, the shots weighted by a cross-validated factor.

    ``fit(X (n, D), y (n,), shot_mask (n,) bool, groups (n,) optional)``: rows with ``shot_mask``
    are the target shots, the others the source. ``weights``: the candidate weights (``None``: see
    :func:`candidate_weights` with ``factors``; :data:`BALANCED` is ``n_source / n_shots``); one weight
    skips the cross-validation. ``augment``: fit on EasyAdapt features (:func:`augment`), predicting
    every row given to ``predict`` as a target row.
    ``estimator`` must accept ``sample_weight`` in ``fit`` (``logreg``, ``svm``, ``ridge``,
    ``lgbm``); default ``make_classifier("logreg")``.

    After fit: ``estimator_`` (fitted on everything with the chosen weight), ``weight_``,
    ``choice_`` (:class:`ShotWeightChoice`), ``classes_``, ``n_features_in_``.
    """

    def __init__(self, estimator: BaseEstimator | None = None, weights: Sequence[float | str] | None = None,
                 factors: Sequence[float] = (0.25, 1.0, 4.0), n_folds: int = 4, random_state: int | None = 0,
                 augment: bool = False):
        self.estimator = estimator
        self.weights = weights
        self.augment = augment
        self.factors = factors
        self.n_folds = n_folds
        self.random_state = random_state

    def fit(self, X: Any, y: Any, shot_mask: Any = None, groups: Any = None) -> ShotWeightedClassifier:
        """Choose the shot weight on the shots, then fit on source + shots with it."""
        X, y, groups = check_training_data(X, y, groups)
        if shot_mask is None:
            raise ClassifierError("shot weighting needs shot_mask: True for the target shots, False for source rows")
        shots = np.asarray(shot_mask, dtype=bool)
        if shots.shape != y.shape or not shots.any():
            raise ClassifierError(f"shot_mask must be a (n,) boolean mask with at least one shot; got shape "
                                  f"{shots.shape} and {int(shots.sum())} shots")
        if self.n_folds < 2:
            raise ClassifierError(f"n_folds must be at least 2, got {self.n_folds}")
        seed = 0 if self.random_state is None else int(self.random_state)
        base = make_classifier("logreg", seed) if self.estimator is None else self.estimator
        if not has_fit_parameter(base, "sample_weight"):
            raise ClassifierError(f"{type(base).__name__} does not take sample weights; use logreg, svm, ridge or lgbm")
        n_source, n_shots = int((~shots).sum()), int(shots.sum())
        candidates = (candidate_weights(n_source, n_shots, self.factors) if self.weights is None
                      else tuple(resolve_weight(w, n_source, n_shots) for w in self.weights))
        if not candidates or min(candidates) <= 0:
            raise ClassifierError(f"shot weights must be positive (inf: shots only), got {list(candidates)}")
        parts = (X[~shots], y[~shots], X[shots], y[shots])
        g_src, g_shot = (None, None) if groups is None else (groups[~shots], groups[shots])
        if len(candidates) == 1:
            self.choice_ = ShotWeightChoice(candidates[0], {}, {}, 0)
        else:
            self.choice_ = choose_shot_weight(base, *parts, candidates, self.n_folds, seed, g_src, g_shot,
                                              bool(self.augment))
        self.weight_ = self.choice_.weight
        self.estimator_ = fit_weighted(base, *parts, self.weight_, g_src, g_shot, bool(self.augment))
        self.classes_ = self.estimator_.classes_
        self.n_features_in_ = X.shape[1]
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        """``(n, C)`` probabilities of the fitted estimator, in ``classes_`` order."""
        check_is_fitted(self, "estimator_")
        return self.estimator_.predict_proba(X)

    def predict(self, X: Any) -> np.ndarray:
        """Labels ``(n,)`` of the fitted estimator."""
        check_is_fitted(self, "estimator_")
        return self.estimator_.predict(X)
