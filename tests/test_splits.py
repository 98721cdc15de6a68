import json
from pathlib import Path

import numpy as np
import pytest

from classifiers.learners.splits import (
    FewShot,
    SplitError,
    few_shot_split,
    speaker_dev_split,
    speaker_folds,
    speaker_label_confound,
)
from featurestore.errors import FsError


def corpus(n_speakers: int = 10, per_class: int = 3, classes: str = "ABCD", seed: int = 0):
    """Every speaker says ``per_class`` utterances of every class, in shuffled order."""
    y = np.repeat(np.array(list(classes)), n_speakers * per_class)
    groups = np.tile(np.repeat([f"s{i:02d}" for i in range(n_speakers)], per_class), len(classes))
    order = np.random.default_rng(seed).permutation(y.size)
    return groups[order], y[order]


def test_dev_split_is_speaker_disjoint_and_covers_every_class() -> None:
    groups, y = corpus()
    for seed in range(5):
        train, dev = speaker_dev_split(groups, y, 0.2, seed)
        assert np.intersect1d(groups[train], groups[dev]).size == 0
        assert np.union1d(train, dev).size == y.size and np.intersect1d(train, dev).size == 0
        assert set(y[train]) == set(y[dev]) == set("ABCD")
        assert 0.1 <= dev.size / y.size <= 0.3


def test_dev_split_is_deterministic_per_seed() -> None:
    groups, y = corpus()
    a, b = speaker_dev_split(groups, y, 0.2, 3), speaker_dev_split(groups, y, 0.2, 3)
    np.testing.assert_array_equal(a[1], b[1])
    picks = {tuple(speaker_dev_split(groups, y, 0.2, s)[1]) for s in range(6)}
    assert len(picks) > 1


def test_dev_split_keeps_classes_on_both_sides_when_speakers_are_confounded() -> None:
    # each class spoken by exactly two speakers, each speaker one class (like URDU, worse)
    y = np.repeat(list("ABCD"), 10)
    groups = np.repeat([f"s{i}" for i in range(8)], 5)
    for tries in (20, 0):  # 0: straight to the greedy fallback
        train, dev = speaker_dev_split(groups, y, 0.2, 0, tries=tries)
        assert set(y[train]) == set(y[dev]) == set("ABCD")
        assert np.intersect1d(groups[train], groups[dev]).size == 0


def test_dev_split_impossible_cases_raise_fs_errors() -> None:
    y = np.array(list("ABAB"))
    with pytest.raises(SplitError, match="at least 2 speakers"):
        speaker_dev_split(["s"] * 4, y, 0.2, 0)
    with pytest.raises(SplitError, match=r"\['C'\].*single speaker"):
        speaker_dev_split(["s1", "s2", "s2", "s1", "s3"], list("ABABC"), 0.2, 0)
    with pytest.raises(FsError, match="dev_fraction"):
        speaker_dev_split(["s1", "s2"], ["A", "A"], 1.5, 0)
    with pytest.raises(SplitError, match="one length"):
        speaker_dev_split(["s1", "s2"], ["A"], 0.2, 0)


def test_speaker_folds_leave_speakers_out_and_cap_fold_count() -> None:
    groups, y = corpus(n_speakers=6)
    folds = speaker_folds(groups, y, n_folds=10, seed=0)
    assert len(folds) == 6  # capped at the number of speakers
    tested = np.concatenate([test for _, test in folds])
    assert np.sort(tested).tolist() == list(range(y.size))  # every utterance tested once
    for train, test in folds:
        assert np.intersect1d(groups[train], groups[test]).size == 0
    assert len(speaker_folds(groups, y, n_folds=3, seed=0)) == 3
    with pytest.raises(SplitError):
        speaker_folds(["s"] * 4, list("ABAB"), 3, 0)


def test_few_shot_properties_over_seeds() -> None:
    groups, y = corpus(n_speakers=8, per_class=4)
    picks = set()
    for seed in range(10):
        fs = few_shot_split(y, groups, shots_per_class=5, seed=seed)
        assert np.intersect1d(fs.train_idx, fs.test_idx).size == 0  # shots never tested
        assert np.union1d(fs.train_idx, fs.test_idx).size == y.size  # test = all the others
        assert all(np.sum(y[fs.train_idx] == c) == 5 for c in "ABCD")
        assert fs.capped == {} and fs.per_class_taken == dict.fromkeys("ABCD", 5)
        assert fs.per_class_test == dict.fromkeys("ABCD", 27)
        again = few_shot_split(y, groups, shots_per_class=5, seed=seed)
        np.testing.assert_array_equal(fs.train_idx, again.train_idx)  # deterministic
        picks.add(tuple(fs.train_idx))
    assert len(picks) == 10  # different seeds, different picks


def test_few_shot_caps_small_classes_and_says_so() -> None:
    y = np.array(["A"] * 10 + ["B"] * 4)
    fs = few_shot_split(y, None, shots_per_class=6, seed=0)
    assert fs.capped == {"B": (6, 3)}
    assert fs.per_class_taken == {"A": 6, "B": 3}
    assert fs.per_class_test == {"A": 4, "B": 1}
    fs2 = few_shot_split(y, None, shots_per_class=6, seed=0, min_test=2)
    assert fs2.capped == {"B": (6, 2)}
    zero = few_shot_split(y, None, shots_per_class=0, seed=0)
    assert zero.train_idx.size == 0 and zero.test_idx.size == y.size


def test_few_shot_speaker_disjoint_excludes_shot_speakers() -> None:
    groups, y = corpus(n_speakers=8, per_class=4)
    fs = few_shot_split(y, groups, shots_per_class=6, seed=1, speaker_disjoint=True)
    shot_speakers = set(groups[fs.train_idx])
    assert not shot_speakers & set(groups[fs.test_idx])
    # shots drawn speaker by speaker in one order: 6 shots of 4 per speaker -> 2 speakers
    assert fs.excluded_speakers == len(shot_speakers) == 2
    assert fs.per_class_test == {c: int(np.sum(y[fs.test_idx] == c)) for c in "ABCD"}
    assert fs.per_class_test == dict.fromkeys("ABCD", 24)
    with pytest.raises(SplitError, match="no test utterance"):
        few_shot_split(y, groups, shots_per_class=31, seed=0, speaker_disjoint=True)
    with pytest.raises(SplitError, match="groups"):
        few_shot_split(y, None, shots_per_class=1, seed=0, speaker_disjoint=True)


def test_few_shot_to_dict_is_json() -> None:
    fs = few_shot_split(np.array(["A"] * 5 + ["B"] * 2), None, shots_per_class=2, seed=0)
    assert isinstance(fs, FewShot)
    d = json.loads(json.dumps(fs.to_dict()))
    assert d["capped"] == {"B": [2, 1]} and d["n_train"] == 3 and len(d["train_idx"]) == 3
    assert "train_idx" not in fs.to_dict(indices=False)


def test_confound_detects_single_label_speakers_and_narrow_classes() -> None:
    groups, y = corpus(n_speakers=6)
    clean = speaker_label_confound(groups, y)
    assert clean["n_speakers"] == 6 and clean["single_label_speakers"] == 0
    assert clean["per_class_speakers"] == dict.fromkeys("ABCD", 6)
    assert not clean["confounded"] and clean["message"].endswith(".")
    y2 = np.repeat(list("AB"), 20)
    g2 = np.repeat([f"s{i}" for i in range(8)], 5)
    bad = speaker_label_confound(g2, y2)
    assert bad["confounded"] and bad["single_label_speakers"] == 8
    assert "8 of 8" in bad["message"]


def test_confound_on_real_urdu(shared_dir: Path) -> None:
    files = sorted((shared_dir / "corpora" / "URDU").glob("*/*.wav"))
    groups = [f.name.split("_")[0] for f in files]
    labels = [f.parent.name.lower() for f in files]
    out = speaker_label_confound(groups, labels)
    assert out["n_speakers"] == 29 and out["single_label_speakers"] == 26
    assert out["per_class_speakers"]["angry"] == 4
    assert out["confounded"]


@pytest.mark.parametrize("seed", range(5))
def test_dev_split_on_tiny_sets_splits_or_says_why(seed: int) -> None:
    # 12 utterances, 3 classes of 4, 6 speakers: more folds (5) than any class has members
    y = np.repeat(np.array(list("ABC")), 4)
    groups = np.array([f"s{i}" for i in (0, 1, 2, 3, 0, 1, 4, 5, 2, 3, 4, 5)])
    try:
        train, dev = speaker_dev_split(groups, y, dev_fraction=0.2, seed=seed)
    except SplitError as exc:  # never sklearn's own ValueError
        assert "speaker" in str(exc)
        return
    assert not set(groups[train]) & set(groups[dev])
    assert set(y[train]) == set(y[dev]) == set("ABC")
    assert sorted(np.concatenate([train, dev]).tolist()) == list(range(12))


def test_dev_split_with_tiny_classes_never_leaks_a_value_error() -> None:
    # every class has 2 utterances (2 speakers each): sklearn's fold checks cannot be met as asked
    y = np.array(list("AABBCC"))
    groups = np.array(["s0", "s1", "s1", "s2", "s2", "s0"])
    try:
        train, dev = speaker_dev_split(groups, y, dev_fraction=0.2, seed=0)
    except SplitError as exc:
        assert "dev split" in str(exc)
    else:
        assert set(y[train]) == set(y[dev]) == set("ABC")


def test_speaker_dev_split_varies_with_the_seed() -> None:
    """Ten speakers, every class from every speaker (EMODB-like): seeds pick different dev speakers."""
    groups = np.repeat([f"s{i}" for i in range(10)], 40)
    y = np.tile(np.repeat(["angry", "happy", "neutral", "sad"], 10), 10)
    dev_speakers = set()
    for seed in range(5):
        train, dev = speaker_dev_split(groups, y, dev_fraction=0.2, seed=seed)
        assert not set(groups[train]) & set(groups[dev])
        assert set(y[dev]) == set(y) and abs(dev.size / y.size - 0.2) <= 0.15
        dev_speakers.add(tuple(sorted(set(groups[dev]))))
        again = speaker_dev_split(groups, y, dev_fraction=0.2, seed=seed)[1]
        assert np.array_equal(again, dev)
    assert len(dev_speakers) >= 3
