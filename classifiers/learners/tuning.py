"""Hyper-parameters searched on the source's speaker folds, with the grids declared here and nowhere else.

``GRIDS`` maps each :func:`~classifiers.learners.probes.make_classifier` name to its grid.
:func:`tune` runs scikit-learn's ``GridSearchCV`` over leave-speakers-out folds of the training
data (:func:`~classifiers.learners.splits.speaker_folds`: StratifiedGroupKFold, a speaker in
exactly one test fold), scored by UAR (:func:`~classifiers.learners.metrics.uar`; equal to
scikit-learn's ``balanced_accuracy``, tests/test_tuning.py checks it). Only the source is seen;
the caller refits ``make_classifier(name, seed, **best_params)`` on all of it.

    best, results = tune("logreg", X_src, y_src, speakers_src, random_state=seed)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import sklearn
from sklearn.metrics import make_scorer
from sklearn.model_selection import GridSearchCV

from classifiers.learners.metrics import uar
from classifiers.learners.probes import ClassifierError, check_training_data, make_classifier
from classifiers.learners.splits import speaker_folds

# name -> {parameter: candidate values}; the one place where tuned grids live
GRIDS: dict[str, dict[str, list[Any]]] = {
    "logreg": {"C": [0.01, 0.1, 1.0, 10.0]},
    "svm": {"C": [0.001, 0.01, 0.1, 1.0]},
    "ridge": {"alpha": [1.0, 10.0, 100.0, 1000.0]},
    "lgbm": {"num_leaves": [7, 15, 31], "learning_rate": [0.05, 0.1]},
    "mlp": {"lr": [1e-4, 1e-3], "epochs": [5, 20]},
}

# fine-tuning method -> learning rates its ``tuned`` recipe tries (settings.RECIPES); the epoch is read from each
# candidate's per-epoch dev UAR, so epochs need no grid of their own
RECIPE_GRIDS: dict[str, dict[str, list[Any]]] = {"cnn-lstm": {"lr": [1e-4, 3e-4, 1e-3]}}

UAR_SCORER = make_scorer(uar)


def grid_for(name: str) -> dict[str, list[Any]]:
    """The declared grid of classifier ``name``, or :class:`ClassifierError` naming those that have one."""
    if name not in GRIDS:
        raise ClassifierError(f"no tuning grid for classifier {name!r}; grids exist for: {', '.join(GRIDS)}")
    return GRIDS[name]


def tune(name: str, X: Any, y: Any, groups: Any, random_state: int = 0, *, grid: dict[str, list[Any]] | None = None,
         n_folds: int = 5, fixed: dict[str, Any] | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Grid search of ``name`` on ``X (n, D)``, ``y (n,)`` over leave-speakers-out folds of ``groups (n,)``.

    ``grid`` replaces the declared one; ``fixed`` parameters are passed to every candidate. Every
    candidate is fitted with ``groups`` (the MLP's dev split stays speaker-independent). Returns
    ``(best_params, cv_results)``: the grid parameters of the best mean fold UAR (ties: the first
    in grid order), and per candidate ``{"params", "mean_uar", "std_uar", "fold_uar"}`` (JSON-able).
    """
    X, y, groups = check_training_data(X, y, groups)
    if groups is None:
        raise ClassifierError("tuning needs speaker ids (groups) to make leave-speakers-out folds")
    grid = grid_for(name) if grid is None else grid
    folds = speaker_folds(groups, y, n_folds=n_folds, seed=random_state)
    with sklearn.config_context(enable_metadata_routing=True):
        estimator = make_classifier(name, random_state, **(fixed or {})).set_fit_request(groups=True)
        search = GridSearchCV(estimator, grid, scoring=UAR_SCORER, cv=folds, refit=False, n_jobs=1,
                              error_score="raise")
        search.fit(X, y, groups=groups)
    cv = search.cv_results_
    fold_scores = np.column_stack([cv[f"split{k}_test_score"] for k in range(len(folds))])
    results = [{"params": {k: _native(v) for k, v in params.items()}, "mean_uar": float(cv["mean_test_score"][i]),
                "std_uar": float(cv["std_test_score"][i]), "fold_uar": fold_scores[i].tolist()}
               for i, params in enumerate(cv["params"])]
    best = results[int(np.argmax([r["mean_uar"] for r in results]))]["params"]
    return best, results


def _native(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value
