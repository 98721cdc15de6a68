"""Probes on pooled features behind one scikit-learn interface; arrays in, arrays out.

Every estimator takes ``X`` ``(n, D)`` float features, ``y`` ``(n,)`` labels and optional
``groups`` ``(n,)`` speaker ids (used by estimators that hold out a dev set; ignored by the
others), is seeded by ``random_state`` and works with :func:`sklearn.base.clone`.
``predict_proba`` returns ``(n, C)`` rows summing to 1 in ``classes_`` order.

    est = make_classifier("logreg", seed=0).fit(X_train, y_train, groups=speakers)
    scores = evaluate(y_test, est.predict(X_test), labels=est.classes_)
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import sklearn
from scipy.special import softmax
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression, RidgeClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC
from sklearn.utils.validation import check_is_fitted

from featurestore.errors import FsError


class ClassifierError(FsError):
    """A classifier that cannot be built or trained as asked (name, parameters, data)."""


def check_training_data(
    X: Any, y: Any, groups: Any = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Validate ``X (n, D)`` finite floats, ``y (n,)`` with at least 2 classes, ``groups (n,)``.

    Returns the arrays (``X`` as float32 unless it is float64). Raises :class:`ClassifierError`.
    """
    X = np.asarray(X)
    if X.dtype != np.float64:
        X = X.astype(np.float32)
    y = np.asarray(y)
    if X.ndim != 2 or y.ndim != 1 or X.shape[0] != y.shape[0]:
        raise ClassifierError(
            f"expected X of shape (n, D) and y of shape (n,), got {X.shape} and {y.shape}; "
            "pass one pooled feature row and one label per utterance"
        )
    if not np.isfinite(X).all():
        raise ClassifierError(
            "X holds NaN or infinite values; check the features read from the store "
            "(`fs store verify`) or the normalisation"
        )
    if np.unique(y).size < 2:
        raise ClassifierError(
            f"training needs at least 2 classes, got {np.unique(y).tolist()}; check the label map"
        )
    if groups is not None:
        groups = np.asarray(groups)
        if groups.shape != y.shape:
            raise ClassifierError(
                f"groups must give one speaker id per utterance: shape {groups.shape}, "
                f"y has {y.shape}"
            )
    return X, y, groups


def check_features(X: Any, n_features: int) -> np.ndarray:
    """``X`` as a finite ``(n, n_features)`` array, or :class:`ClassifierError`."""
    X = np.asarray(X)
    if X.dtype != np.float64:
        X = X.astype(np.float32)
    if X.ndim != 2 or X.shape[1] != n_features:
        raise ClassifierError(
            f"expected features of shape (n, {n_features}) as in training, got {X.shape}; "
            "use the same model and layer for training and test"
        )
    if not np.isfinite(X).all():
        raise ClassifierError("X holds NaN or infinite values; check the features")
    return X


def scores_to_proba(scores: np.ndarray) -> np.ndarray:
    """Softmax of decision scores ``(n, C)``; a binary ``(n,)`` score d gives sigmoid(d)."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim == 1:
        scores = np.column_stack([-scores, scores]) / 2.0
    return softmax(scores, axis=1)


def _rows_sum_to_one(proba: np.ndarray) -> np.ndarray:
    """``proba (n, C)`` as float64 rows summing to 1 (float32 models sum to 1 +- 1e-7)."""
    proba = np.asarray(proba, dtype=np.float64)
    return proba / proba.sum(axis=1, keepdims=True)


class _Probe(ClassifierMixin, BaseEstimator):
    """A scikit-learn pipeline built from the parameters at fit time."""

    def _build(self) -> Pipeline:
        raise NotImplementedError

    def _steps(self, model: Any) -> Pipeline:
        return make_pipeline(StandardScaler(), model) if self.standardise else make_pipeline(model)

    def fit(self, X: Any, y: Any, groups: Any = None, sample_weight: Any = None) -> _Probe:
        """Train on ``X (n, D)``, ``y (n,)``; ``groups`` is accepted for one interface; ``sample_weight (n,)``
        weighs each utterance's loss (the standardisation stays unweighted)."""
        X, y, _ = check_training_data(X, y, groups)
        model = self._build()
        weights = {} if sample_weight is None else {f"{model.steps[-1][0]}__sample_weight": np.asarray(sample_weight)}
        with sklearn.config_context(enable_metadata_routing=False):  # our own pipeline: parameters by step name
            self.model_ = model.fit(X, y, **weights)
        self.classes_ = self.model_.classes_
        self.n_features_in_ = X.shape[1]
        return self

    def _features(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "model_")
        return check_features(X, self.n_features_in_)

    def decision_function(self, X: Any) -> np.ndarray:
        """Scores ``(n, C)`` (``(n,)`` for two classes) of the final estimator."""
        return self.model_.decision_function(self._features(X))

    def predict(self, X: Any) -> np.ndarray:
        """Labels ``(n,)`` from ``classes_``."""
        return self.model_.predict(self._features(X))

    def predict_proba(self, X: Any) -> np.ndarray:
        """``(n, C)`` probabilities in ``classes_`` order; see each class for how."""
        return scores_to_proba(self.decision_function(X))


class LogRegProbe(_Probe):
    """Standardisation + multinomial logistic regression (lbfgs); probabilities are its own.

    lbfgs on standardised features converges in tens of iterations on pooled encoder
    features (32-56 on Whisper-base URDU/EMODB, 1024-d mean+std), so ``max_iter=1000`` is
    never the limit in practice. ``tol=1e-3`` fits about twice as fast but stops short of the
    optimum (cross-corpus UAR moved by up to 5 points in that test). Fits use BLAS threads:
    run sweeps with one thread per fit and parallel processes (bench/bench_probe_speed.py).
    """

    def __init__(
        self,
        C: float = 1.0,
        max_iter: int = 1000,
        tol: float = 1e-4,
        class_weight: str | None = None,
        standardise: bool = True,
        random_state: int | None = 0,
    ):
        self.C = C
        self.max_iter = max_iter
        self.tol = tol
        self.class_weight = class_weight
        self.standardise = standardise
        self.random_state = random_state

    def _build(self) -> Pipeline:
        return self._steps(
            LogisticRegression(
                C=self.C,
                max_iter=self.max_iter,
                tol=self.tol,
                class_weight=self.class_weight,
                random_state=self.random_state,
            )
        )

    def predict_proba(self, X: Any) -> np.ndarray:
        """``(n, C)`` multinomial probabilities of the logistic model."""
        return _rows_sum_to_one(self.model_.predict_proba(self._features(X)))


class SVMProbe(_Probe):
    """Standardisation + linear SVM (LinearSVC, primal/dual chosen by shape).

    ``predict_proba`` is the softmax of ``decision_function`` (no calibration fits: cheap and
    deterministic, monotone in the SVM's scores, but not calibrated probabilities).
    """

    def __init__(
        self,
        C: float = 1.0,
        max_iter: int = 5000,
        tol: float = 1e-4,
        class_weight: str | None = None,
        standardise: bool = True,
        random_state: int | None = 0,
    ):
        self.C = C
        self.max_iter = max_iter
        self.tol = tol
        self.class_weight = class_weight
        self.standardise = standardise
        self.random_state = random_state

    def _build(self) -> Pipeline:
        return self._steps(
            LinearSVC(
                C=self.C,
                max_iter=self.max_iter,
                tol=self.tol,
                class_weight=self.class_weight,
                random_state=self.random_state,
            )
        )


class RidgeProbe(_Probe):
    """Standardisation + ridge regression on one-hot targets (RidgeClassifier, closed form).

    ``predict_proba`` is the softmax of ``decision_function`` (scores, not calibrated).
    ``random_state`` is recorded only: the solution is deterministic.
    """

    def __init__(
        self,
        alpha: float = 1.0,
        class_weight: str | None = None,
        standardise: bool = True,
        random_state: int | None = 0,
    ):
        self.alpha = alpha
        self.class_weight = class_weight
        self.standardise = standardise
        self.random_state = random_state

    def _build(self) -> Pipeline:
        return self._steps(RidgeClassifier(alpha=self.alpha, class_weight=self.class_weight))


class LGBMProbe(_Probe):
    """Gradient-boosted trees (LightGBM), small by default, one thread; its own probabilities.

    Trees need no standardisation, so ``standardise`` defaults to off. ``max_bin=63`` and 30 %
    of the features per tree keep a fit on 400 x 1024 features near 2.5 CPU s (100 rounds x 4
    classes); more bins did not score better on Whisper-base URDU/EMODB features.
    """

    def __init__(
        self,
        n_estimators: int = 100,
        learning_rate: float = 0.1,
        num_leaves: int = 15,
        min_child_samples: int = 10,
        subsample: float = 0.8,
        colsample_bytree: float = 0.3,
        max_bin: int = 63,
        class_weight: str | None = None,
        n_jobs: int = 1,
        standardise: bool = False,
        random_state: int | None = 0,
    ):
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.subsample = subsample
        self.colsample_bytree = colsample_bytree
        self.max_bin = max_bin
        self.class_weight = class_weight
        self.n_jobs = n_jobs
        self.standardise = standardise
        self.random_state = random_state

    def _build(self) -> Pipeline:
        from lightgbm import LGBMClassifier

        return self._steps(
            LGBMClassifier(
                n_estimators=self.n_estimators,
                learning_rate=self.learning_rate,
                num_leaves=self.num_leaves,
                min_child_samples=self.min_child_samples,
                subsample=self.subsample,
                subsample_freq=1 if self.subsample < 1.0 else 0,
                colsample_bytree=self.colsample_bytree,
                max_bin=self.max_bin,
                class_weight=self.class_weight,
                n_jobs=self.n_jobs,
                random_state=self.random_state,
                verbose=-1,
            )
        )

    def fit(self, X: Any, y: Any, groups: Any = None, sample_weight: Any = None) -> LGBMProbe:
        """Train on ``X (n, D)``, ``y (n,)``; parameters LightGBM rejects raise :class:`ClassifierError`."""
        from lightgbm.basic import LightGBMError

        X, y, groups = check_training_data(X, y, groups)  # data errors are ours, not LightGBM's
        try:
            return super().fit(X, y, groups, sample_weight)
        except (LightGBMError, ValueError) as exc:
            reason = str(exc).split(" at /")[0].strip().splitlines()[0]
            params = {k: v for k, v in self.get_params().items() if v != LGBMProbe().get_params()[k]}
            raise ClassifierError(f"LightGBM rejects the lgbm parameters {params}: {reason}; fix classifier_params "
                                  "(see https://lightgbm.readthedocs.io/en/latest/Parameters.html)") from None

    def decision_function(self, X: Any) -> np.ndarray:
        """Raw boosting scores ``(n, C)`` (``(n,)`` for two classes)."""
        return self.model_.predict(self._features(X), raw_score=True)

    def predict_proba(self, X: Any) -> np.ndarray:
        """``(n, C)`` probabilities of the boosted model."""
        return _rows_sum_to_one(self.model_.predict_proba(self._features(X)))


# name -> (module:class, description). The MLP is imported on use: it needs torch.
_REGISTRY: dict[str, tuple[str, str]] = {
    "logreg": (
        "classifiers.learners.probes:LogRegProbe",
        "standardise + multinomial logistic regression (lbfgs, C=1)",
    ),
    "svm": (
        "classifiers.learners.probes:SVMProbe",
        "standardise + linear SVM (LinearSVC); probabilities = softmax of its scores",
    ),
    "ridge": (
        "classifiers.learners.probes:RidgeProbe",
        "standardise + ridge classifier (closed form); probabilities = softmax of its scores",
    ),
    "lgbm": (
        "classifiers.learners.probes:LGBMProbe",
        "LightGBM gradient-boosted trees (100 rounds, 15 leaves, 63 bins, 1 thread)",
    ),
    "mlp": (
        "classifiers.learners.heads:MLPHead",
        "the study's head: Linear-ReLU-dropout-Linear, Adam 1e-4, 5 epochs, batch 16, "
        "best epoch on a speaker-independent dev split (torch)",
    ),
}

CLASSIFIERS: dict[str, str] = {name: desc for name, (_, desc) in _REGISTRY.items()}


def _class(name: str) -> type:
    if name not in _REGISTRY:
        raise ClassifierError(
            f"unknown classifier {name!r}; choose one of: {', '.join(_REGISTRY)}"
        )
    module, cls = _REGISTRY[name][0].split(":")
    return getattr(importlib.import_module(module), cls)


def make_classifier(name: str, seed: int = 0, **params: Any) -> BaseEstimator:
    """A fresh, unfitted estimator ``name`` (see :data:`CLASSIFIERS`) seeded with ``seed``.

    ``params`` override its defaults; an unknown name or parameter raises
    :class:`ClassifierError` naming the valid choices.
    """
    cls = _class(name)
    valid = cls().get_params()
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise ClassifierError(
            f"classifier {name!r} has no parameter(s) {unknown}; valid: {', '.join(sorted(valid))}"
        )
    if "random_state" in params:
        raise ClassifierError("give the seed as make_classifier(name, seed=...), not random_state")
    return cls(random_state=seed, **params)


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def classifier_name(est: BaseEstimator) -> str | None:
    """The registry name of ``est``'s class, or ``None`` for a foreign estimator."""
    target = f"{type(est).__module__}:{type(est).__name__}"
    return next((n for n, (path, _) in _REGISTRY.items() if path == target), None)


def classifier_config(est: BaseEstimator) -> dict[str, Any]:
    """JSON-able record of an estimator: ``{"name", "class", "params"}`` (for the ledger)."""
    return {
        "name": classifier_name(est),
        "class": f"{type(est).__module__}.{type(est).__qualname__}",
        "params": _jsonable(est.get_params(deep=False)),
    }


def classifier_names() -> Sequence[str]:
    """The names :func:`make_classifier` accepts."""
    return tuple(_REGISTRY)
