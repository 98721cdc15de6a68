import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score

from classifiers.metrics import uar


def test_uar_is_mean_per_class_recall() -> None:
    y = ["a", "a", "a", "a", "b", "b"]
    p = ["a", "a", "a", "b", "b", "a"]
    assert uar(y, p) == pytest.approx((3 / 4 + 1 / 2) / 2)


def test_uar_matches_balanced_accuracy_and_ignores_imbalance() -> None:
    rng = np.random.default_rng(0)
    y = rng.choice(4, size=500, p=[0.7, 0.1, 0.1, 0.1])
    p = np.where(rng.random(500) < 0.6, y, rng.integers(0, 4, 500))
    assert uar(y, p) == pytest.approx(balanced_accuracy_score(y, p))
    assert uar(y, np.zeros_like(y)) == pytest.approx(0.25)  # majority guess = chance


def test_uar_labels_absent_from_truth_are_left_out_and_bad_shapes_fail() -> None:
    assert uar([0, 0, 1], [0, 0, 2], labels=[0, 1, 2, 3]) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        uar([0, 1], [0])
    with pytest.raises(ValueError):
        uar([], [])
