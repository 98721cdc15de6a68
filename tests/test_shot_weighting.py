"""Few-shot shot weighting (classifiers/learners/shot_weighting.py): on a shift where the plain union of source and
shots loses to the shots alone, the weight chosen on the shots makes source + shots at least as good as both."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone

from classifiers.learners.heads import MLPHead
from classifiers.learners.metrics import uar
from classifiers.learners.probes import ClassifierError, make_classifier
from classifiers.learners.shot_weighting import (
    BALANCED,
    SHOTS_ONLY,
    AugmentedClassifier,
    ShotWeightedClassifier,
    augment,
    candidate_weights,
    fit_weighted,
    resolve_weight,
)


def shifted_world(seed: int, shots: int = 5, n_source: int = 600, n_test: int = 600, dim: int = 40, changed: int = 5):
    """Three Gaussian classes in 40 dimensions whose means agree between source and target (weak, 0.3 sd) except
    in ``changed`` dimensions, where each side has its own strong (1.5 sd) class means: the source misleads the
    plain union there, and ``shots`` per class are few for 40 dimensions. ``(X_src, y_src, X_shots, y_shots,
    X_test, y_test)``."""
    rng = np.random.default_rng(seed)
    source_means = rng.normal(size=(3, dim)) * 0.3
    target_means = source_means.copy()
    source_means[:, :changed] = rng.normal(size=(3, changed)) * 1.5
    target_means[:, :changed] = rng.normal(size=(3, changed)) * 1.5
    y_src, y_test = rng.integers(0, 3, n_source), rng.integers(0, 3, n_test)
    y_shots = np.repeat(np.arange(3), shots)
    X_src = source_means[y_src] + rng.normal(size=(n_source, dim))
    X_shots = target_means[y_shots] + rng.normal(size=(y_shots.size, dim))
    X_test = target_means[y_test] + rng.normal(size=(n_test, dim))
    return X_src, y_src, X_shots, y_shots, X_test, y_test


def stacked(X_src, y_src, X_shots, y_shots):
    """The rows as a protocol passes them: source then shots, with the mask of the shots."""
    mask = np.r_[np.zeros(len(y_src), bool), np.ones(len(y_shots), bool)]
    return np.vstack([X_src, X_shots]), np.r_[y_src, y_shots], mask


def baselines(base, world):
    """UARs of the plain union and of the shots alone on ``world`` (:func:`shifted_world`'s six arrays)."""
    X_src, y_src, X_shots, y_shots, X_test, y_test = world
    return tuple(uar(y_test, fit_weighted(base, X_src, y_src, X_shots, y_shots, w).predict(X_test))
                 for w in (1.0, SHOTS_ONLY))


def test_weighted_fit_beats_or_matches_the_union_and_the_shots_alone():
    union, alone, weighted = [], [], []
    base = make_classifier("logreg")
    for seed in range(8):
        X_src, y_src, X_shots, y_shots, X_test, y_test = world = shifted_world(seed)
        u, a = baselines(base, world)
        union.append(u)
        alone.append(a)
        clf = ShotWeightedClassifier(base, random_state=seed).fit(*stacked(X_src, y_src, X_shots, y_shots))
        weighted.append(uar(y_test, clf.predict(X_test)))
    union_mean, alone_mean, weighted_mean = np.mean(union), np.mean(alone), np.mean(weighted)
    assert union_mean < alone_mean - 0.1, (union_mean, alone_mean)  # the shift this test is about
    # the chosen weight matches the better baseline: the weight is chosen on 15 shots, so its choice is noisy
    # (on other synthetic shifts it lost up to 3 points to the shots alone; see the module's docstring)
    assert weighted_mean >= alone_mean - 0.01, (weighted_mean, alone_mean)
    assert weighted_mean > union_mean + 0.1, (weighted_mean, union_mean)


def test_candidates_run_from_the_union_to_the_shots_alone():
    assert candidate_weights(600, 15) == (1.0, 10.0, 40.0, 160.0, SHOTS_ONLY)
    assert candidate_weights(10, 40) == (1.0, SHOTS_ONLY)  # balancing weights below 1 are no candidates
    X_src, y_src, X_shots, y_shots, _, _ = shifted_world(0)
    clf = ShotWeightedClassifier(random_state=0).fit(*stacked(X_src, y_src, X_shots, y_shots))
    assert tuple(clf.choice_.scores) == candidate_weights(600, 15)
    assert clf.weight_ in clf.choice_.scores and clf.choice_.n_folds == 4
    assert clf.choice_.scores[clf.weight_] == max(clf.choice_.scores.values())
    record = clf.choice_.to_dict()
    assert record["candidates"][-1]["weight"] == "shots_only" and len(record["candidates"]) == 5
    proba = clf.predict_proba(X_shots)
    assert proba.shape == (15, 3) and np.allclose(proba.sum(axis=1), 1.0)
    assert clone(clf).get_params()["n_folds"] == 4 and not hasattr(clone(clf), "weight_")


def test_a_weight_counts_like_repeated_rows_and_infinity_drops_the_source():
    X_src, y_src, X_shots, y_shots, X_test, _ = shifted_world(1)
    ridge = make_classifier("ridge", standardise=False)  # closed form: weights == repeated rows exactly
    weighted = fit_weighted(ridge, X_src, y_src, X_shots, y_shots, 3.0)
    repeated = clone(ridge).fit(np.vstack([X_src] + [X_shots] * 3), np.r_[y_src, y_shots, y_shots, y_shots])
    np.testing.assert_allclose(weighted.decision_function(X_test), repeated.decision_function(X_test), atol=1e-8)
    alone = fit_weighted(ridge, X_src, y_src, X_shots, y_shots, SHOTS_ONLY)
    only_shots = clone(ridge).fit(X_shots, y_shots)
    np.testing.assert_allclose(alone.decision_function(X_test), only_shots.decision_function(X_test))


def test_one_given_weight_needs_no_cross_validation():
    X_src, y_src, X_shots, y_shots, _, _ = shifted_world(2)
    clf = ShotWeightedClassifier(weights=[SHOTS_ONLY]).fit(*stacked(X_src, y_src, X_shots, y_shots))
    assert clf.weight_ == SHOTS_ONLY and clf.choice_.n_folds == 0


def test_bad_input_is_refused_with_the_fix():
    X_src, y_src, X_shots, y_shots, _, _ = shifted_world(3)
    X, y, mask = stacked(X_src, y_src, X_shots, y_shots)
    with pytest.raises(ClassifierError, match="shot_mask"):
        ShotWeightedClassifier().fit(X, y)
    with pytest.raises(ClassifierError, match="at least one shot"):
        ShotWeightedClassifier().fit(X, y, shot_mask=np.zeros(len(y), bool))
    with pytest.raises(ClassifierError, match="sample weights"):
        ShotWeightedClassifier(MLPHead()).fit(X, y, shot_mask=mask)
    with pytest.raises(ClassifierError, match="positive"):
        ShotWeightedClassifier(weights=[0.0, 1.0]).fit(X, y, shot_mask=mask)
    lone = mask.copy()
    lone[np.flatnonzero(mask)[1:5]] = False  # one shot of class 0 left
    with pytest.raises(ClassifierError, match="at least 2 shots"):
        ShotWeightedClassifier().fit(X, y, shot_mask=lone)


def test_weights_reach_the_probe_even_after_skada_switched_metadata_routing_on() -> None:
    """skada's import turns scikit-learn's metadata routing on process-wide; a weighted probe fit must not care,
    and fs's own skada import leaves the setting as it found it."""
    import sklearn

    from classifiers.learners import target_scores
    from classifiers.learners.probes import make_classifier

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(40, 3)), np.repeat(["a", "b"], 20)
    before = sklearn.get_config()["enable_metadata_routing"]
    target_scores._skada_metrics()
    assert sklearn.get_config()["enable_metadata_routing"] == before
    with sklearn.config_context(enable_metadata_routing=True):
        make_classifier("logreg", 0).fit(X, y, sample_weight=np.linspace(1, 2, 40))


def test_feature_augmentation_with_balanced_weight_recovers_from_a_misleading_source():
    """EasyAdapt (augment=True) with shots and source weighing the same in total, no cross-validation on the shots:
    on the shift where the source misleads the union by 18 points, far above the union and within 2 points of the
    shots alone (measured here: 81.0 vs 82.4, the union 64.6; on real corpora see the module's docstring)."""
    union, alone, adapted = [], [], []
    base = make_classifier("logreg")
    for seed in range(8):
        X_src, y_src, X_shots, y_shots, X_test, y_test = world = shifted_world(seed)
        u, a = baselines(base, world)
        union.append(u)
        alone.append(a)
        clf = ShotWeightedClassifier(base, weights=[BALANCED], augment=True, random_state=seed)
        clf.fit(*stacked(X_src, y_src, X_shots, y_shots))
        assert clf.weight_ == pytest.approx(len(y_src) / len(y_shots)) and clf.choice_.n_folds == 0
        adapted.append(uar(y_test, clf.predict(X_test)))
    assert np.mean(union) < np.mean(alone) - 0.1
    assert np.mean(adapted) >= np.mean(alone) - 0.02, (np.mean(adapted), np.mean(alone))
    assert np.mean(adapted) > np.mean(union) + 0.1, (np.mean(adapted), np.mean(union))


def test_augmented_rows_put_source_and_shots_in_their_own_copies():
    X = np.arange(6, dtype=float).reshape(2, 3)
    assert np.array_equal(augment(X, is_target=False), np.hstack([X, X, np.zeros_like(X)]))
    assert np.array_equal(augment(X, is_target=True), np.hstack([X, np.zeros_like(X), X]))
    X_src, y_src, X_shots, y_shots, X_test, _ = shifted_world(2)
    fit = fit_weighted(make_classifier("logreg"), X_src, y_src, X_shots, y_shots, 4.0, augmented=True)
    assert isinstance(fit, AugmentedClassifier) and fit.n_features_in_ == X_src.shape[1]
    assert fit.estimator_.get_params()["standardise"] is False  # standardised once, before the copies
    manual = fit.estimator_.predict_proba(augment(fit.scaler_.transform(X_test), is_target=True))
    assert np.allclose(fit.predict_proba(X_test), manual)
    assert resolve_weight(BALANCED, 600, 15) == 40.0 and resolve_weight(BALANCED, 10, 40) == 1.0
    assert resolve_weight(2.5, 600, 15) == 2.5
