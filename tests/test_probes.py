import json

import numpy as np
import pytest
from sklearn.base import clone

from classifiers.learners.probes import (
    CLASSIFIERS,
    ClassifierError,
    LogRegProbe,
    classifier_config,
    make_classifier,
    scores_to_proba,
)
from featurestore.errors import FsError

SKLEARN_PROBES = ["logreg", "svm", "ridge", "lgbm"]


def blobs(n_per_class: int = 30, d: int = 8, classes: str = "ABC", seed: int = 0):
    """Separable gaussian clusters: ``X (n, d)`` float32, ``y`` str labels, 6 speakers."""
    rng = np.random.default_rng(seed)
    y = np.repeat(list(classes), n_per_class)
    centres = rng.normal(scale=3.0, size=(len(classes), d))
    X = centres[np.unique(y, return_inverse=True)[1]] + rng.normal(size=(y.size, d))
    groups = np.tile([f"s{i}" for i in range(6)], y.size // 6 + 1)[: y.size]
    return X.astype(np.float32), y, groups


@pytest.mark.parametrize("name", SKLEARN_PROBES)
def test_probe_interface(name: str) -> None:
    X, y, groups = blobs()
    est = make_classifier(name, seed=1)
    assert est.fit(X, y, groups=groups) is est
    np.testing.assert_array_equal(est.classes_, ["A", "B", "C"])
    pred = est.predict(X)
    assert pred.shape == (y.size,) and np.mean(pred == y) > 0.9
    proba = est.predict_proba(X)
    assert proba.shape == (y.size, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-9)
    assert (proba >= 0).all()
    np.testing.assert_array_equal(est.classes_[proba.argmax(axis=1)], pred)


@pytest.mark.parametrize("name", SKLEARN_PROBES)
def test_probe_clone_keeps_params_and_is_unfitted(name: str) -> None:
    X, y, _ = blobs()
    est = make_classifier(name, seed=3).fit(X, y)
    twin = clone(est)
    assert twin.get_params() == est.get_params()
    assert twin.random_state == 3 and not hasattr(twin, "classes_")
    np.testing.assert_array_equal(twin.fit(X, y).predict_proba(X), est.predict_proba(X))


@pytest.mark.parametrize("name", SKLEARN_PROBES)
def test_probe_same_seed_same_predictions(name: str) -> None:
    X, y, _ = blobs(seed=2)
    a = make_classifier(name, seed=7).fit(X, y).predict_proba(X)
    b = make_classifier(name, seed=7).fit(X, y).predict_proba(X)
    np.testing.assert_array_equal(a, b)


def test_binary_probes_give_two_column_proba() -> None:
    X, y, _ = blobs(classes="AB")
    for name in SKLEARN_PROBES:
        proba = make_classifier(name, 0).fit(X, y).predict_proba(X)
        assert proba.shape == (y.size, 2)
        np.testing.assert_allclose(proba.sum(axis=1), 1.0)


def test_scores_to_proba_is_softmax_and_sigmoid() -> None:
    np.testing.assert_allclose(scores_to_proba(np.array([[0.0, 0.0]])), [[0.5, 0.5]])
    p = scores_to_proba(np.array([2.0]))
    np.testing.assert_allclose(p, [[1 / (1 + np.exp(2.0)), 1 / (1 + np.exp(-2.0))]])


def test_make_classifier_params_and_errors() -> None:
    est = make_classifier("logreg", seed=5, C=0.1)
    assert isinstance(est, LogRegProbe) and est.C == 0.1 and est.random_state == 5
    assert est.max_iter >= 1000
    with pytest.raises(ClassifierError, match="logreg, svm, ridge, lgbm, mlp") as err:
        make_classifier("forest", 0)
    assert isinstance(err.value, FsError)
    with pytest.raises(ClassifierError, match="no parameter.*'gamma'.*valid: C,"):
        make_classifier("logreg", 0, gamma=1)
    with pytest.raises(ClassifierError, match="seed"):
        make_classifier("ridge", 0, random_state=1)
    assert set(CLASSIFIERS) == {"logreg", "svm", "ridge", "lgbm", "mlp"}
    assert all(isinstance(v, str) and v for v in CLASSIFIERS.values())


def test_lgbm_defaults_are_small_and_single_threaded() -> None:
    est = make_classifier("lgbm", 0)
    assert est.n_jobs == 1 and est.n_estimators <= 200
    X, y, _ = blobs()
    inner = est.fit(X, y).model_[-1]
    assert inner.get_params()["verbose"] == -1 and inner.get_params()["n_jobs"] == 1


def test_classifier_config_is_json() -> None:
    est = make_classifier("svm", seed=2, C=np.float64(0.5))
    cfg = json.loads(json.dumps(classifier_config(est)))
    assert cfg["name"] == "svm"
    assert cfg["class"] == "classifiers.learners.probes.SVMProbe"
    assert cfg["params"]["C"] == 0.5 and cfg["params"]["random_state"] == 2
    assert classifier_config(make_classifier("mlp", 0))["name"] == "mlp"


def test_bad_data_gives_classifier_errors() -> None:
    X, y, _ = blobs()
    est = make_classifier("logreg", 0)
    with pytest.raises(ClassifierError, match="at least 2 classes"):
        est.fit(X, np.full(y.size, "A"))
    with pytest.raises(ClassifierError, match="shape"):
        est.fit(X, y[:-1])
    bad = X.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ClassifierError, match="NaN"):
        est.fit(bad, y)
    with pytest.raises(ClassifierError, match="groups"):
        est.fit(X, y, groups=["s"] * 3)
    est.fit(X, y)
    with pytest.raises(ClassifierError, match=r"\(n, 8\)"):
        est.predict(X[:, :4])


@pytest.mark.parametrize("params, reason", [
    ({"num_leaves": -3}, r"num_leaves"),
    ({"learning_rate": "fast"}, r"fast"),
    ({"subsample": 2.0}, r"bagging_fraction"),
    ({"n_estimators": 0}, r"boosting rounds"),
])
def test_bad_lgbm_parameter_is_a_classifier_error(params: dict, reason: str) -> None:
    X, y, groups = blobs()
    with pytest.raises(ClassifierError, match=rf"LightGBM rejects the lgbm parameters .*{reason}.*classifier_params"):
        make_classifier("lgbm", seed=0, **params).fit(X, y, groups)
