"""Tuning (classifiers/learners/tuning.py): grids in one place, leave-speakers-out folds, UAR as the score."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score

from classifiers.learners import heads
from classifiers.learners.metrics import uar
from classifiers.learners.probes import ClassifierError, classifier_names, make_classifier
from classifiers.learners.splits import speaker_folds
from classifiers.learners.tuning import GRIDS, tune


def noisy_world(seed: int = 0, n: int = 200, dim: int = 60) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Three classes in 3 of 60 dimensions, 10 speakers of 20 utterances: strong regularisation pays."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    X = rng.normal(size=(n, dim))
    X[:, :3] += np.eye(3)[y]
    return X, y, np.repeat(np.arange(10), n // 10)


def test_every_grid_names_a_classifier_and_its_parameters():
    for name, grid in GRIDS.items():
        assert name in classifier_names()
        make_classifier(name, 0, **{k: v[0] for k, v in grid.items()})  # raises for an unknown parameter


def test_best_params_are_the_best_mean_uar_over_leave_speakers_out_folds():
    X, y, groups = noisy_world()
    best, results = tune("logreg", X, y, groups, random_state=3)
    assert [r["params"]["C"] for r in results] == GRIDS["logreg"]["C"]
    means = [r["mean_uar"] for r in results]
    assert best == results[int(np.argmax(means))]["params"]
    # the same numbers by hand: speaker_folds with the same seed, metrics.uar on each held-out fold
    folds = speaker_folds(groups, y, n_folds=5, seed=3)
    for entry in results:
        by_hand = [uar(y[test], make_classifier("logreg", 3, **entry["params"]).fit(X[train], y[train]).predict(X[test]))
                   for train, test in folds]
        np.testing.assert_allclose(entry["fold_uar"], by_hand)
        assert entry["mean_uar"] == pytest.approx(np.mean(by_hand))
    for train, test in folds:
        assert not set(groups[train]) & set(groups[test])
    assert best["C"] < 1.0  # 57 noise dimensions and 160 training utterances: the grid prefers more regularisation


def test_groups_reach_the_estimator_so_the_mlp_dev_split_is_by_speaker(monkeypatch):
    seen: list[bool] = []
    original = heads.MLPHead.fit

    def spy(self, X, y, groups=None):
        seen.append(groups is not None and len(groups) == len(y))
        return original(self, X, y, groups=groups)

    monkeypatch.setattr(heads.MLPHead, "fit", spy)
    X, y, groups = noisy_world(n=100, dim=8)
    best, results = tune("mlp", X, y, groups, grid={"epochs": [1]}, fixed={"hidden": 8}, n_folds=3)
    assert best == {"epochs": 1} and len(results[0]["fold_uar"]) == 3
    assert seen == [True, True, True]


def test_balanced_accuracy_equals_uar():
    rng = np.random.default_rng(0)
    for _ in range(20):
        y_true, y_pred = rng.integers(0, 4, 50), rng.integers(0, 4, 50)
        assert balanced_accuracy_score(y_true, y_pred) == pytest.approx(uar(y_true, y_pred))
    # a predicted class absent from y_true counts as an error in both (sklearn warns)
    y_true, y_pred = np.array([0, 0, 1, 1]), np.array([0, 2, 1, 1])
    with pytest.warns(UserWarning):
        assert balanced_accuracy_score(y_true, y_pred) == pytest.approx(uar(y_true, y_pred)) == 0.75


def test_bad_requests_are_refused_with_the_fix():
    X, y, groups = noisy_world(n=40)
    with pytest.raises(ClassifierError, match="grids exist for"):
        tune("nope", X, y, groups)
    with pytest.raises(ClassifierError, match="speaker ids"):
        tune("logreg", X, y, None)
