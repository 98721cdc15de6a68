"""CORAL alignment (classifiers/learners/coral.py): it fixes a constructed covariance shift, keeps the target as it is,
works with more features than utterances, refuses bad input and computes what skada computes."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone

from classifiers.learners.coral import CoralAligner, CoralError, coral_align
from classifiers.learners.metrics import uar
from classifiers.learners.normalise import standardise_set
from classifiers.learners.probes import make_classifier


def shifted_world(seed: int, n: int = 300, d: int = 8, unshifted: bool = False) -> tuple[np.ndarray, ...]:
    """Three Gaussian classes; the target is ``A @ x + b`` of the same class-conditional law (``A`` symmetric
    PD with eigenvalues from 0.2 to 5 along a random basis, ``b`` a large offset): the label rule is the same.
    ``(X_source, y_source, X_target, y_target)``, plus the target before the shift with ``unshifted``."""
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(3, d)) * 1.2
    mixing = rng.normal(size=(d, d)) / np.sqrt(d) + np.eye(d)
    y_source, y_target = rng.integers(0, 3, size=n), rng.integers(0, 3, size=n)
    X_source = means[y_source] + rng.normal(size=(n, d)) @ mixing
    X_target = means[y_target] + rng.normal(size=(n, d)) @ mixing
    basis, _ = np.linalg.qr(rng.normal(size=(d, d)))
    A = basis @ np.diag(np.geomspace(0.2, 5.0, d)) @ basis.T
    shifted = X_target @ A.T + rng.normal(size=d) * 3.0
    return (X_source, y_source, shifted, y_target) + ((X_target,) if unshifted else ())


def target_uar(X_train: np.ndarray, y_train: np.ndarray, X_test: np.ndarray, y_test: np.ndarray) -> float:
    return uar(y_test, make_classifier("logreg").fit(X_train, y_train).predict(X_test))


def test_coral_beats_no_alignment_and_corpus_standardisation_on_a_covariance_shift():
    raw, corpus, coral, no_shift = [], [], [], []
    for seed in range(3):
        Xs, ys, Xt, yt, Xt_unshifted = shifted_world(seed, unshifted=True)
        no_shift.append(target_uar(Xs, ys, Xt_unshifted, yt))
        raw.append(target_uar(Xs, ys, Xt, yt))
        corpus.append(target_uar(standardise_set(Xs), ys, standardise_set(Xt), yt))
        coral.append(target_uar(*coral_align(Xs, Xt)[:1], ys, Xt, yt))
    assert np.mean(coral) > np.mean(raw) + 0.2, (coral, raw)
    assert np.mean(coral) > np.mean(corpus) + 0.05, (coral, corpus)
    # CORAL matches second moments only (its map equals A up to a rotation), so it wins back most, not all,
    # of what the shift cost
    assert np.mean(coral) - np.mean(raw) > 0.6 * (np.mean(no_shift) - np.mean(raw)), (coral, raw, no_shift)


def test_aligned_source_has_the_target_mean_and_covariance_and_the_target_is_unchanged():
    Xs, _, Xt, _ = shifted_world(0, n=2000, d=5)
    Xt_before = Xt.copy()
    aligned, target = coral_align(Xs, Xt, shrinkage=0.0, eps=0.0)
    assert target is Xt or np.array_equal(target, Xt_before)
    np.testing.assert_array_equal(Xt, Xt_before)
    np.testing.assert_allclose(aligned.mean(axis=0), Xt.mean(axis=0), atol=1e-8)
    np.testing.assert_allclose(np.cov(aligned, rowvar=False), np.cov(Xt, rowvar=False), rtol=1e-6, atol=1e-8)


def test_more_features_than_utterances_gives_finite_features_of_the_source_dtype():
    rng = np.random.default_rng(1)
    Xs, Xt = rng.normal(size=(40, 120)).astype(np.float32), rng.normal(size=(30, 120)) * 2 + 1
    aligner = CoralAligner().fit(Xs, Xt)
    out = aligner.transform(Xs)
    assert out.shape == (40, 120) and out.dtype == np.float32 and np.isfinite(out).all()
    assert aligner.transform_.shape == (120, 120)
    fixed = CoralAligner(shrinkage=0.5).fit_transform(Xs, Xt)
    assert np.isfinite(fixed).all()
    with pytest.raises(CoralError, match="singular"):
        CoralAligner(shrinkage=0.0, eps=0.0).fit(Xs, Xt)


def test_align_mean_false_leaves_the_source_centred_on_zero():
    Xs, _, Xt, _ = shifted_world(2)
    out = CoralAligner(align_mean=False).fit(Xs, Xt).transform(Xs)
    np.testing.assert_allclose(out.mean(axis=0), 0.0, atol=1e-8)


def test_follows_scikit_learn_conventions():
    aligner = CoralAligner(shrinkage=0.1, eps=1e-2, align_mean=False)
    copy = clone(aligner)
    assert copy.get_params() == {"shrinkage": 0.1, "eps": 1e-2, "align_mean": False}
    assert not hasattr(copy, "transform_")


@pytest.mark.parametrize(
    ("source", "target", "message"),
    [
        (np.zeros((5, 3)), None, "target"),
        (np.zeros((5, 3)), np.zeros((5, 4)), r"\(n, 3\)"),
        (np.zeros(5), np.zeros((5, 1)), r"\(n, D\)"),
        (np.zeros((1, 3)), np.zeros((5, 3)), "at least 2"),
        (np.full((5, 3), np.nan), np.zeros((5, 3)), "NaN"),
    ],
)
def test_bad_input_is_refused_with_the_fix(source, target, message):
    with pytest.raises(CoralError, match=message):
        CoralAligner().fit(source, target)


def test_bad_settings_and_widths_are_refused():
    X = np.random.default_rng(0).normal(size=(10, 3))
    with pytest.raises(CoralError, match="shrinkage"):
        CoralAligner(shrinkage=2.0).fit(X, X)
    with pytest.raises(CoralError, match="eps"):
        CoralAligner(eps=-1.0).fit(X, X)
    with pytest.raises(CoralError, match=r"\(k, 3\)"):
        CoralAligner().fit(X, X).transform(X[:, :2])


@pytest.mark.slow  # importing skada (and POT) takes several seconds
def test_same_map_as_skada_coral_adapter():
    skada = pytest.importorskip("skada")
    rng = np.random.default_rng(3)
    Xs, Xt = rng.normal(size=(60, 20)), rng.normal(size=(50, 20)) @ rng.normal(size=(20, 20)) + 1.0
    adapter = skada.CORALAdapter(reg="auto").fit(np.vstack([Xs, Xt]), sample_domain=np.r_[np.ones(60), -np.ones(50)])
    theirs = adapter.transform(Xs, sample_domain=np.ones(60), allow_source=True)
    ours = CoralAligner(eps=0.0, align_mean=False).fit(Xs, Xt).transform(Xs)
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-8)
