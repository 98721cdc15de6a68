"""Label-free scores of a trained probe on an unlabelled target (higher is better for every one).

- :func:`prediction_entropy`: minus the mean entropy of the target's class probabilities
  (skada's :class:`~skada.metrics.PredictionEntropyScorer`; a confident probe scores high, also when
  confidently wrong: a classic but biased baseline).
- :func:`soft_neighbourhood_density`: the entropy of each target prediction's similarity
  distribution over the other target predictions, averaged (Saito et al., ICCV 2021; skada's
  :class:`~skada.metrics.SoftNeighborhoodDensity`, temperature 0.05).
- :func:`importance_weighted_uar`: the UAR on held-out source (dev) utterances, each weighted by
  ``p(target | x) / p(source | x)`` from a source-vs-target domain classifier (importance-weighted
  validation, Sugiyama et al. 2007). Implemented here, not with skada's
  :class:`~skada.metrics.ImportanceWeightedScorer`: that one weighs by kernel density estimates
  (degenerate in hundreds of feature dimensions) and scores the estimator's own ``score`` (accuracy)
  on the data given, where a selection needs UAR on held-out utterances.

skada is imported on first use (it pulls POT: about 3 s), never at CLI start-up.
"""

from __future__ import annotations

from typing import Any

import numpy as np

WEIGHT_CLIP = 20.0  # the largest importance weight relative to the mean (keeps one utterance from deciding)


class _GivenProbabilities:
    """An "estimator" whose ``predict_proba`` returns probabilities computed before, by row index in ``X (n, 1)``:
    lets skada's scorers read a probe's target outputs without refitting or re-reading features."""

    def __init__(self, proba: np.ndarray):
        self.proba = proba

    def predict_proba(self, X: np.ndarray, **_: Any) -> np.ndarray:
        return self.proba[np.asarray(X)[:, 0].astype(int)]


def _target_proba(proba: np.ndarray) -> np.ndarray:
    proba = np.asarray(proba, dtype=np.float64)
    if proba.ndim != 2 or proba.shape[0] < 2 or proba.shape[1] < 2:
        raise ValueError(f"target class probabilities must be (n >= 2, C >= 2), got shape {proba.shape}")
    return proba


def _skada_metrics() -> Any:
    """``skada.metrics``, imported without leaving scikit-learn's metadata routing on: skada's import switches
    it on for the whole process, which breaks every later ``Pipeline.fit(step__sample_weight=...)``."""
    import sklearn

    before = sklearn.get_config()["enable_metadata_routing"]
    try:
        import skada.metrics
    finally:
        sklearn.set_config(enable_metadata_routing=before)
    return skada.metrics


def _skada_score(scorer_name: str, proba: np.ndarray, **params: Any) -> float:
    """skada's domain-aware scorer ``scorer_name`` (sign applied: higher is better) on target-only probabilities."""
    proba = _target_proba(proba)
    n = proba.shape[0]
    rows = np.arange(n, dtype=np.float64)[:, None]
    masked = -np.ones(n, dtype=int)  # every row is a target row: no label is given
    import sklearn

    metrics = _skada_metrics()
    with sklearn.config_context(enable_metadata_routing=True):  # skada's scorers route sample_domain
        scorer = getattr(metrics, scorer_name)(**params)
        return float(scorer(_GivenProbabilities(proba), rows, masked, sample_domain=-np.ones(n, dtype=int)))


def prediction_entropy(proba: np.ndarray) -> float:
    """Minus the mean prediction entropy of ``proba (n, C)`` (target class probabilities): higher is better.

    skada averages ``-p log p`` over rows and classes, i.e. the mean entropy per utterance divided by ``C``."""
    return _skada_score("PredictionEntropyScorer", proba)


def soft_neighbourhood_density(proba: np.ndarray, temperature: float = 0.05) -> float:
    """Soft neighbourhood density of ``proba (n, C)`` (target class probabilities): higher is better."""
    return _skada_score("SoftNeighborhoodDensity", proba, T=temperature)


def importance_weights(X_source: np.ndarray, X_target: np.ndarray, X_dev: np.ndarray, seed: int = 0) -> np.ndarray:
    """``(m,)`` weights ``p(target | x) / p(source | x) * n_source / n_target`` of the dev rows ``X_dev (m, D)``
    from a logistic-regression domain classifier on ``X_source (n_s, D)`` vs ``X_target (n_t, D)`` (standardised
    on both), normalised to mean 1 and clipped at :data:`WEIGHT_CLIP`."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X = np.concatenate([X_source, X_target]).astype(np.float64)
    domain = np.r_[np.zeros(len(X_source), dtype=int), np.ones(len(X_target), dtype=int)]
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000, random_state=seed)).fit(X, domain)
    p = np.clip(clf.predict_proba(np.asarray(X_dev, dtype=np.float64))[:, 1], 1e-6, 1 - 1e-6)
    w = p / (1 - p) * len(X_source) / len(X_target)
    w = w / w.mean()
    w = np.minimum(w, WEIGHT_CLIP)
    return w / w.mean()


def weighted_uar(y_true: np.ndarray, y_pred: np.ndarray, weights: np.ndarray) -> float:
    """Mean over the classes present in ``y_true (m,)`` of the ``weights (m,)``-weighted recall."""
    y_true, y_pred, weights = np.asarray(y_true), np.asarray(y_pred), np.asarray(weights, dtype=np.float64)
    recalls = [float(np.sum(weights[y_true == c] * (y_pred[y_true == c] == c)) / np.sum(weights[y_true == c]))
               for c in np.unique(y_true) if np.sum(weights[y_true == c]) > 0]
    return float(np.mean(recalls))


def importance_weighted_uar(y_dev: np.ndarray, pred_dev: np.ndarray, X_dev: np.ndarray, X_source: np.ndarray,
                            X_target: np.ndarray, seed: int = 0) -> float:
    """Importance-weighted dev UAR: the source dev labels ``y_dev (m,)`` against the probe's ``pred_dev (m,)``,
    each dev row weighted by :func:`importance_weights` (source ``X_source``, target ``X_target``: features only)."""
    return weighted_uar(y_dev, pred_dev, importance_weights(X_source, X_target, X_dev, seed))
