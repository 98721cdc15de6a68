"""Learned layer weights (classifiers/learners/layer_weights.py): the probe finds the one layer that carries the label."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone

from classifiers.learners.layer_weights import WeightedLayerProbe
from classifiers.learners.metrics import uar
from classifiers.learners.probes import ClassifierError, make_classifier


def planted(seed: int, n: int = 480, n_layers: int = 5, dim: int = 16, informative: int = 2,
            n_speakers: int = 24) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``X (n, L, D)``, ``y (n,)``, ``groups (n,)``: every layer holds noise plus a per-speaker offset; only layer
    ``informative`` also holds a class mean."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, size=n)
    groups = np.repeat(np.arange(n_speakers), n // n_speakers)
    X = rng.normal(size=(n, n_layers, dim)) + rng.normal(size=(n_speakers, n_layers, dim))[groups]
    X[:, informative] += rng.normal(size=(3, dim))[y] * 0.5
    return X.astype(np.float32), y, groups


@pytest.fixture(scope="module")
def fitted() -> tuple[WeightedLayerProbe, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    X, y, groups = planted(0)
    train, test = groups < 16, groups >= 16  # test speakers never seen in training
    probe = WeightedLayerProbe(random_state=0).fit(X[train], y[train], groups=groups[train])
    return probe, X[train], y[train], X[test], y[test]


def test_the_informative_layer_gets_the_largest_weight_and_the_label_is_learned(fitted):
    probe, X_train, y_train, X_test, y_test = fitted
    assert probe.layer_weights_.shape == (5,)
    assert probe.layer_weights_.sum() == pytest.approx(1.0)
    assert probe.layer_weights_.argmax() == 2
    assert probe.layer_weights_[2] > 0.5
    score = uar(y_test, probe.predict(X_test))
    assert score > 0.55  # chance is 1/3
    # better than a logistic regression on the unweighted mean of the layers
    averaged = make_classifier("logreg").fit(X_train.mean(axis=1), y_train).predict(X_test.mean(axis=1))
    assert score > uar(y_test, averaged) + 0.05


def test_probabilities_history_and_speaker_dev_split(fitted):
    probe, X_train, _, X_test, _ = fitted
    proba = probe.predict_proba(X_test)
    assert proba.shape == (X_test.shape[0], 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_array_equal(probe.predict(X_test), probe.classes_[proba.argmax(axis=1)])
    history = probe.history_
    assert history["dev_split"] == "speaker"
    assert 1 <= history["best_epoch"] <= probe.epochs == len(history["train_loss"])
    assert history["n_train"] + history["n_dev"] == X_train.shape[0]


def test_seeded_and_clonable(fitted):
    probe, X_train, y_train, _, _ = fitted
    groups = np.repeat(np.arange(16), 20)
    again = clone(probe).set_params(epochs=3).fit(X_train, y_train, groups=groups)
    same = clone(again).fit(X_train, y_train, groups=groups)
    np.testing.assert_array_equal(again.layer_weights_, same.layer_weights_)
    assert clone(probe).get_params() == probe.get_params()
    assert not hasattr(clone(probe), "layer_weights_")


def test_wrong_shapes_are_refused(fitted):
    probe, X_train, y_train, X_test, _ = fitted
    with pytest.raises(ClassifierError, match=r"\(n, L, D\)"):
        WeightedLayerProbe().fit(X_train[:, 0], y_train)
    with pytest.raises(ClassifierError, match=r"\(n, 5, 16\)"):
        probe.predict(X_test[:, :4])
    with pytest.raises(ClassifierError, match=r"\(n, 5, 16\)"):
        probe.predict(X_test[:, :, :8])
    with pytest.raises(ClassifierError, match="2 classes"):
        WeightedLayerProbe().fit(X_train, np.zeros(len(y_train)))
