import json

import numpy as np
import pytest
import torch
from sklearn.base import clone

from classifiers.learners.heads import MLPHead
from classifiers.learners.metrics import uar
from classifiers.learners.probes import ClassifierError, make_classifier
from classifiers.learners.splits import SplitError
from featurestore.errors import FsError


def blobs(n_per_class: int = 24, d: int = 6, classes: str = "ABC", seed: int = 0):
    """Separable clusters ``X (n, d)``, str labels, 8 speakers each saying every class."""
    rng = np.random.default_rng(seed)
    y = np.repeat(list(classes), n_per_class)
    centres = rng.normal(scale=3.0, size=(len(classes), d))
    X = centres[np.unique(y, return_inverse=True)[1]] + rng.normal(size=(y.size, d))
    groups = np.tile([f"s{i}" for i in range(8)], y.size // 8 + 1)[: y.size]
    return X.astype(np.float32), y, groups


FAST = {"lr": 1e-2, "epochs": 6, "hidden": 16}


def test_defaults_are_the_study_recipe() -> None:
    est = make_classifier("mlp", seed=4)
    assert isinstance(est, MLPHead)
    p = est.get_params()
    assert (p["lr"], p["epochs"], p["batch_size"], p["hidden"]) == (1e-4, 5, 16, 256)
    assert p["dev_fraction"] == 0.2 and p["standardise"] and p["random_state"] == 4


def test_fit_returns_self_learns_and_proba_rows_sum_to_one() -> None:
    X, y, groups = blobs()
    est = MLPHead(**FAST)
    assert est.fit(X, y, groups=groups) is est
    np.testing.assert_array_equal(est.classes_, ["A", "B", "C"])
    proba = est.predict_proba(X)
    assert proba.shape == (y.size, 3) and proba.dtype == np.float64
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-12)
    assert np.mean(est.predict(X) == y) > 0.9
    h = est.history_
    assert len(h["train_loss"]) == len(h["dev_uar"]) == 6
    assert h["dev_split"] == "speaker" and h["n_train"] + h["n_dev"] == y.size
    assert not set(groups[est.dev_idx_]) & set(np.delete(groups, est.dev_idx_))
    json.dumps({k: v for k, v in h.items()})


def test_same_seed_same_predictions_other_seed_differs_and_global_rng_untouched() -> None:
    X, y, groups = blobs(seed=1)
    state = torch.get_rng_state()
    a = MLPHead(random_state=3, **FAST).fit(X, y, groups).predict_proba(X)
    assert torch.equal(state, torch.get_rng_state())
    b = MLPHead(random_state=3, **FAST).fit(X, y, groups).predict_proba(X)
    c = MLPHead(random_state=4, **FAST).fit(X, y, groups).predict_proba(X)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_clone_gives_an_unfitted_twin_with_the_same_results() -> None:
    X, y, groups = blobs(seed=2)
    est = MLPHead(random_state=5, dropout=0.3, **FAST).fit(X, y, groups)
    twin = clone(est)
    assert twin.get_params() == est.get_params() and not hasattr(twin, "net_")
    np.testing.assert_array_equal(twin.fit(X, y, groups).predict(X), est.predict(X))


def test_best_checkpoint_is_the_best_dev_epoch() -> None:
    """Random labels: dev UAR wanders from epoch to epoch, so the best is often not the last.
    The fitted model must score on its dev rows exactly the best recorded dev UAR."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 5)).astype(np.float32)
    y = rng.choice(["A", "B"], size=80)
    groups = np.repeat([f"s{i}" for i in range(10)], 8)
    not_last = 0
    for seed in range(6):
        est = MLPHead(lr=3e-2, epochs=8, hidden=32, dropout=0.0, random_state=seed)
        est.fit(X, y, groups)
        h = est.history_
        best = h["best_epoch"]
        assert h["dev_uar"][best - 1] == max(h["dev_uar"]) == h["best_dev_uar"]
        dev = est.dev_idx_
        assert uar(y[dev], est.predict(X[dev])) == pytest.approx(h["best_dev_uar"])
        not_last += best != len(h["dev_uar"])
    assert not_last > 0  # the check above really chose an earlier epoch at least once


def test_without_groups_a_stratified_random_split_is_recorded() -> None:
    X, y, _ = blobs()
    est = MLPHead(**FAST).fit(X, y)
    assert est.history_["dev_split"] == "utterance"
    assert sorted(np.unique(y[est.dev_idx_], return_counts=True)[1].tolist()) == [5, 5, 5]


def test_no_dev_keeps_the_last_epoch() -> None:
    X, y, groups = blobs()
    est = MLPHead(dev_fraction=0.0, **FAST).fit(X, y, groups)
    h = est.history_
    assert h["dev_split"] == "none" and h["dev_uar"] == [] and h["best_epoch"] == 6
    assert h["n_dev"] == 0 and h["best_dev_uar"] is None


def test_standardisation_uses_training_statistics() -> None:
    X, y, groups = blobs(seed=3)
    X = X * np.float32(1e4) + np.float32(5e4)  # raw scale would stall a 1e-2 Adam
    est = MLPHead(**FAST).fit(X, y, groups)
    train = np.setdiff1d(np.arange(y.size), est.dev_idx_)
    np.testing.assert_allclose(est.mean_, X[train].mean(axis=0, dtype=np.float64), rtol=1e-6)
    assert np.mean(est.predict(X) == y) > 0.9
    off = MLPHead(standardise=False, **FAST).fit(X, y, groups)
    assert np.all(off.mean_ == 0) and np.all(off.scale_ == 1)


def test_errors_are_fs_errors() -> None:
    X, y, groups = blobs()
    with pytest.raises(SplitError):  # one speaker: no speaker-independent dev split
        MLPHead(**FAST).fit(X, y, np.full(y.size, "s0"))
    with pytest.raises(FsError, match="epochs"):
        MLPHead(epochs=0).fit(X, y, groups)
    est = MLPHead(**FAST).fit(X, y, groups)
    with pytest.raises(ClassifierError, match=r"\(n, 6\)"):
        est.predict(X[:, :2])
