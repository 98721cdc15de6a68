import json
import math

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score

from classifiers.learners.metrics import (
    chance_uar,
    confusion,
    evaluate,
    macro_f1,
    per_class_recall,
    uar,
    weighted_accuracy,
)


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


Y = ["angry", "angry", "happy", "happy", "happy", "sad"]
P = ["angry", "happy", "happy", "happy", "angry", "happy"]  # "sad" never predicted


def test_per_class_recall_by_hand_in_labels_order() -> None:
    r = per_class_recall(Y, P, labels=["sad", "happy", "angry"])
    assert list(r) == ["sad", "happy", "angry"]
    assert r == {"sad": 0.0, "happy": pytest.approx(2 / 3), "angry": 0.5}


def test_per_class_recall_class_absent_from_truth_is_nan() -> None:
    r = per_class_recall(Y, P, labels=["angry", "happy", "neutral", "sad"])
    assert math.isnan(r["neutral"])


def test_confusion_by_hand_rows_true_columns_predicted() -> None:
    c = confusion(Y, P, labels=["angry", "happy", "sad"])
    assert c.dtype.kind == "i"
    np.testing.assert_array_equal(c, [[1, 1, 0], [1, 2, 0], [0, 1, 0]])
    c2 = confusion(Y, P, labels=["sad", "angry", "happy"])
    np.testing.assert_array_equal(c2, [[0, 0, 1], [0, 1, 1], [0, 1, 2]])
    # default order: sorted classes of y_true
    np.testing.assert_array_equal(confusion(Y, P), c)


def test_accuracy_and_macro_f1_by_hand() -> None:
    assert weighted_accuracy(Y, P) == pytest.approx(3 / 6)
    # angry: P=1/2 R=1/2 F=1/2; happy: P=2/4 R=2/3 F=4/7; sad: F=0
    assert macro_f1(Y, P) == pytest.approx((0.5 + 4 / 7 + 0.0) / 3)
    # a label absent from y_true is left out, as for UAR
    assert macro_f1(Y, P, labels=["angry", "happy", "neutral", "sad"]) == pytest.approx(
        (0.5 + 4 / 7) / 3
    )


def test_chance_uar() -> None:
    assert chance_uar(["angry", "happy", "neutral", "sad"]) == 0.25
    assert chance_uar(["a", "b", "a"]) == 0.5
    with pytest.raises(ValueError):
        chance_uar([])


def test_evaluate_is_json_and_consistent() -> None:
    labels = ["angry", "happy", "neutral", "sad"]
    out = evaluate(np.array(Y), np.array(P), labels)
    again = json.loads(json.dumps(out, allow_nan=False))
    assert again == out
    assert out["uar"] == pytest.approx((0.5 + 2 / 3 + 0.0) / 3)
    assert out["wa"] == pytest.approx(0.5)
    assert out["labels"] == labels
    assert out["chance"] == 0.25
    assert out["per_class_recall"]["neutral"] is None
    assert out["confusion"][2] == [0, 0, 0, 0]
    assert out["n"] == 6


def test_evaluate_with_integer_labels_is_json() -> None:
    out = evaluate(np.array([0, 1, 1]), np.array([0, 1, 0]))
    assert out["labels"] == [0, 1]
    json.dumps(out, allow_nan=False)
