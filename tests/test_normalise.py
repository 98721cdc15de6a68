import numpy as np
import pytest

from classifiers.learners.normalise import MODES, NormaliseError, normalise, standardise_set
from featurestore.errors import FsError


def sets(seed: int = 0):
    rng = np.random.default_rng(seed)
    train = (rng.normal(size=(40, 5)) * [1, 2, 3, 4, 5] + 10).astype(np.float32)
    test = (rng.normal(size=(30, 5)) * 7 - 3).astype(np.float32)
    return train, test


def test_modes_listed() -> None:
    assert MODES == ("none", "source", "corpus", "speaker", "coral")


def test_coral_standardises_each_set_then_gives_the_train_set_the_test_covariance() -> None:
    rng = np.random.default_rng(0)
    train = rng.normal(size=(400, 4)) * [1, 2, 3, 4] + 5
    mixing = np.array([[1, 0.8, 0, 0], [0, 1, 0.5, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    test = rng.normal(size=(300, 4)) @ mixing - 2
    a, b, info = normalise(train, test, "coral")
    np.testing.assert_allclose(b, standardise_set(test))  # the test set: standardised only
    before = np.abs(np.cov(standardise_set(train), rowvar=False) - np.cov(b, rowvar=False)).max()
    after = np.abs(np.cov(a, rowvar=False) - np.cov(b, rowvar=False)).max()
    assert before > 0.4 and after < 0.1  # (Ledoit-Wolf shrinkage keeps it from being exact)
    assert info == {"mode": "coral", "transductive": True}


def test_none_returns_the_features_unchanged() -> None:
    a, b = sets()
    a2, b2, info = normalise(a, b, "none")
    np.testing.assert_array_equal(a2, a)
    np.testing.assert_array_equal(b2, b)
    assert info == {"mode": "none", "transductive": False}


def test_source_uses_training_statistics_on_both_sides() -> None:
    a, b = sets()
    a2, b2, info = normalise(a, b, "source")
    assert not info["transductive"]
    np.testing.assert_allclose(a2.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(a2.std(axis=0), 1, atol=1e-5)
    expected = (b - a.mean(axis=0, dtype=np.float64)) / a.std(axis=0, dtype=np.float64)
    np.testing.assert_allclose(b2, expected, rtol=1e-5, atol=1e-5)
    assert a2.dtype == b2.dtype == np.float32


def test_corpus_standardises_each_set_with_its_own_statistics() -> None:
    a, b = sets()
    a2, b2, info = normalise(a, b, "corpus")
    assert info["transductive"]
    for x in (a2, b2):
        np.testing.assert_allclose(x.mean(axis=0), 0, atol=1e-5)
        np.testing.assert_allclose(x.std(axis=0), 1, atol=1e-5)


def test_speaker_standardises_every_speaker_on_both_sides() -> None:
    a, b = sets()
    ga = np.repeat(["p", "q", "r", "s"], 10)
    gb = np.repeat(["t", "u", "v"], 10)
    a2, b2, info = normalise(a, b, "speaker", train_groups=ga, test_groups=gb)
    assert info["transductive"] and info["train_speakers"] == 4 and info["test_speakers"] == 3
    for x, g in ((a2, ga), (b2, gb)):
        for s in np.unique(g):
            np.testing.assert_allclose(x[g == s].mean(axis=0), 0, atol=1e-5)
            np.testing.assert_allclose(x[g == s].std(axis=0), 1, atol=1e-5)
    np.testing.assert_array_equal(standardise_set(b, gb), b2)


def test_zero_variance_is_guarded() -> None:
    a, b = sets()
    a[:, 2] = 4.0
    b[:, 2] = -1.0
    for mode in ("source", "corpus"):
        a2, b2, _ = normalise(a, b, mode)
        assert np.isfinite(a2).all() and np.isfinite(b2).all()
        np.testing.assert_array_equal(a2[:, 2], 0.0)
    # a one-utterance speaker has zero variance everywhere: centred to zeros, counted
    ga = np.array(["solo"] + ["p"] * 39)
    a2, _, info = normalise(a, b, "speaker", train_groups=ga, test_groups=np.repeat("t", 30))
    assert np.isfinite(a2).all() and np.all(a2[0] == 0)
    assert info["train_single_utterance_speakers"] == 1


def test_float64_and_integer_inputs() -> None:
    a, b = sets()
    a2, _, _ = normalise(a.astype(np.float64), b.astype(np.float64), "source")
    assert a2.dtype == np.float64
    i2, _, _ = normalise(np.arange(12).reshape(4, 3), np.ones((2, 3), int), "source")
    assert i2.dtype == np.float64


def test_errors_name_the_fix() -> None:
    a, b = sets()
    with pytest.raises(NormaliseError, match="none, source, corpus, speaker") as err:
        normalise(a, b, "whiten")
    assert isinstance(err.value, FsError)
    with pytest.raises(NormaliseError, match="train_groups"):
        normalise(a, b, "speaker", test_groups=np.repeat("t", 30))
    with pytest.raises(NormaliseError, match="test_groups"):
        normalise(a, b, "speaker", train_groups=np.repeat("p", 40), test_groups=["t"])
    with pytest.raises(NormaliseError, match="width"):
        normalise(a, b[:, :3], "source")
    with pytest.raises(NormaliseError, match="2-D"):
        normalise(a[0], b, "source")
    with pytest.raises(NormaliseError, match="empty"):
        normalise(a[:0], b, "source")
