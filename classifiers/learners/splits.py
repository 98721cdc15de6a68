"""Splits that keep evaluation honest: speakers disjoint, shots never tested, confounds named.

Every function takes per-utterance arrays of one length ``n``: ``y`` (labels) and ``groups``
(speaker ids), and returns integer index arrays into them, sorted ascending.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from sklearn.model_selection import StratifiedGroupKFold

from featurestore.errors import FsError


class SplitError(FsError):
    """A split that cannot be made as asked (too few speakers, classes or utterances)."""


def _arrays(groups: ArrayLike, y: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    groups = np.asarray(groups)
    y = np.asarray(y)
    if groups.ndim != 1 or groups.shape != y.shape:
        raise SplitError(
            f"groups and y must be 1-D of one length, got {groups.shape} and {y.shape}; "
            "pass one speaker id and one label per utterance"
        )
    if y.size == 0:
        raise SplitError("cannot split an empty set; check the query that selected the rows")
    return groups, y


def _covers(idx: np.ndarray, y: np.ndarray, classes: np.ndarray) -> bool:
    return np.isin(classes, y[idx]).all()


def _greedy_dev(
    groups: np.ndarray, y: np.ndarray, dev_fraction: float, rng: np.random.Generator
) -> np.ndarray | None:
    """Speakers moved to dev one by one, each move keeping every class on the train side."""
    classes = np.unique(y)
    speakers = rng.permutation(np.unique(groups))
    in_dev = np.zeros(y.size, dtype=bool)
    target = dev_fraction * y.size

    def try_move(s: Any) -> bool:
        moved = in_dev | (groups == s)
        if moved.all() or not _covers(np.flatnonzero(~moved), y, classes):
            return False
        in_dev[:] = moved
        return True

    # rarest classes (fewest speakers) first, so that each gets a dev speaker
    by_spread = sorted(classes, key=lambda c: np.unique(groups[y == c]).size)
    for c in by_spread:
        if c in y[in_dev]:
            continue
        for s in speakers:
            if not in_dev[groups == s].any() and c in y[groups == s] and try_move(s):
                break
    for s in speakers:
        if in_dev.sum() >= target:
            break
        if not in_dev[groups == s].any():
            try_move(s)
    return np.flatnonzero(in_dev) if _covers(np.flatnonzero(in_dev), y, classes) else None


def speaker_dev_split(
    groups: ArrayLike,
    y: ArrayLike,
    dev_fraction: float = 0.2,
    seed: int = 0,
    *,
    tries: int = 20,
) -> tuple[np.ndarray, np.ndarray]:
    """Hold out about ``dev_fraction`` of the utterances, by whole speakers, as a dev set.

    Speakers never straddle the two sides, and every class is present on both: folds of
    :class:`~sklearn.model_selection.StratifiedGroupKFold` are tried over ``tries`` derived
    seeds (a valid fold within 5 points of the closest to ``dev_fraction``, drawn by ``seed``),
    then a greedy speaker-by-speaker choice. Returns ``(train_idx, dev_idx)``. Raises
    :class:`SplitError` when no such split exists (one speaker, or a class spoken by a single speaker).
    """
    groups, y = _arrays(groups, y)
    if not 0.0 < dev_fraction < 1.0:
        raise SplitError(f"dev_fraction must be in (0, 1), got {dev_fraction}")
    classes, speakers = np.unique(y), np.unique(groups)
    if speakers.size < 2:
        raise SplitError(
            f"a speaker-independent dev split needs at least 2 speakers, got {speakers.size}; "
            "give speaker ids (groups) or use a random split"
        )
    lone = [str(c) for c in classes if np.unique(groups[y == c]).size < 2]
    if lone:
        raise SplitError(
            f"classes {lone} are spoken by a single speaker, so they cannot be on both sides "
            "of a speaker-independent dev split; drop those classes or use a random split"
        )
    # sklearn refuses more folds than the largest class has utterances (tiny sets): cap there
    largest = int(np.unique(y, return_counts=True)[1].max())
    n_splits = int(min(speakers.size, largest, max(2, round(1.0 / dev_fraction))))
    everything = np.arange(y.size)
    for t in range(tries):
        folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed + 7919 * t)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            try:
                candidates = [
                    (abs(dev.size / y.size - dev_fraction), k, dev)
                    for k, (train, dev) in enumerate(folds.split(everything, y, groups))
                    if _covers(train, y, classes) and _covers(dev, y, classes)
                ]
            except ValueError:  # any other fold check of sklearn: the greedy choice below decides
                break
        if candidates:
            # any valid fold near the asked fraction, drawn by the seed: seeds must give different dev
            # speakers (the closest fold alone is the same for every seed)
            best = min(c[0] for c in candidates)
            near = [c for c in candidates if c[0] <= best + 0.05]
            dev = near[int(np.random.default_rng(seed).integers(len(near)))][2]
            return np.setdiff1d(everything, dev), np.sort(dev)
    dev = _greedy_dev(groups, y, dev_fraction, np.random.default_rng(seed))
    if dev is None:
        raise SplitError(
            "found no speaker-disjoint dev split with every class on both sides "
            f"({speakers.size} speakers, {classes.size} classes); use a random split instead"
        )
    return np.setdiff1d(everything, dev), dev


def speaker_folds(
    groups: ArrayLike, y: ArrayLike, n_folds: int = 5, seed: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Leave-speakers-out folds, stratified by class: ``[(train_idx, test_idx), ...]``.

    ``n_folds`` is capped at the number of speakers; each speaker is in exactly one test fold.
    """
    groups, y = _arrays(groups, y)
    n_speakers = np.unique(groups).size
    if n_speakers < 2:
        raise SplitError(
            f"leave-speakers-out folds need at least 2 speakers, got {n_speakers}; "
            "check the speaker ids (groups)"
        )
    if n_folds < 2:
        raise SplitError(f"n_folds must be at least 2, got {n_folds}")
    folds = StratifiedGroupKFold(n_splits=min(n_folds, n_speakers), shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return [(np.sort(a), np.sort(b)) for a, b in folds.split(np.zeros(y.size), y, groups)]


@dataclass
class FewShot:
    """A few-shot split of a target set: ``train_idx`` are the shots, ``test_idx`` the rest.

    ``capped`` maps each class that could not give the shots asked to ``(asked, taken)``;
    ``per_class_taken`` and ``per_class_test`` count shots and test utterances per class.
    With ``speaker_disjoint`` the test side excludes every speaker who gave a shot
    (``excluded_speakers`` of them).
    """

    train_idx: np.ndarray
    test_idx: np.ndarray
    capped: dict[str, tuple[int, int]]
    per_class_taken: dict[str, int]
    per_class_test: dict[str, int] = field(default_factory=dict)
    shots_per_class: int = 0
    seed: int = 0
    speaker_disjoint: bool = False
    min_test: int = 1
    excluded_speakers: int = 0

    def to_dict(self, indices: bool = True) -> dict[str, Any]:
        """JSON-serialisable record; ``indices=False`` leaves the index lists out."""
        out = asdict(self)
        out["capped"] = {k: list(v) for k, v in self.capped.items()}
        out["n_train"], out["n_test"] = int(self.train_idx.size), int(self.test_idx.size)
        if indices:
            out["train_idx"], out["test_idx"] = self.train_idx.tolist(), self.test_idx.tolist()
        else:
            del out["train_idx"], out["test_idx"]
        return out


def few_shot_split(
    y: ArrayLike,
    groups: ArrayLike | None = None,
    shots_per_class: int = 50,
    seed: int = 0,
    speaker_disjoint: bool = False,
    *,
    min_test: int = 1,
) -> FewShot:
    """Take ``shots_per_class`` utterances of each class for training; test on all the others.

    A class with fewer than ``shots_per_class + min_test`` utterances is capped at
    ``n_class - min_test`` shots and listed in ``capped``. With ``speaker_disjoint=True``
    (``groups`` required) shots are drawn speaker by speaker in one seeded speaker order, so
    that few speakers are used, and the test side drops every utterance of those speakers;
    :class:`SplitError` if that leaves a class with no test utterance.
    """
    y = np.asarray(y)
    if shots_per_class < 0 or min_test < 0:
        raise SplitError(f"shots_per_class and min_test must be >= 0, got {shots_per_class}, {min_test}")
    if groups is None:
        if speaker_disjoint:
            raise SplitError("speaker_disjoint=True needs speaker ids: pass groups")
        groups_arr = np.arange(y.size)
    else:
        groups_arr, y = _arrays(groups, y)
    rng = np.random.default_rng(seed)
    speaker_order = {s: r for r, s in enumerate(rng.permutation(np.unique(groups_arr)))}
    capped: dict[str, tuple[int, int]] = {}
    taken: dict[str, int] = {}
    shots: list[np.ndarray] = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        take = max(0, min(shots_per_class, idx.size - min_test))
        if take < shots_per_class:
            capped[str(c)] = (int(shots_per_class), int(take))
        taken[str(c)] = int(take)
        if speaker_disjoint:
            # speakers in the shared order, utterances shuffled within each speaker
            rank = np.array([speaker_order[s] for s in groups_arr[idx]])
            idx = idx[np.lexsort((rng.random(idx.size), rank))]
            shots.append(idx[:take])
        else:
            shots.append(rng.choice(idx, size=take, replace=False))
    train = np.sort(np.concatenate(shots)).astype(np.int64)
    test_mask = np.ones(y.size, dtype=bool)
    test_mask[train] = False
    excluded = 0
    if speaker_disjoint:
        shot_speakers = np.unique(groups_arr[train])
        excluded = int(shot_speakers.size)
        test_mask &= ~np.isin(groups_arr, shot_speakers)
    test = np.flatnonzero(test_mask)
    per_test = {str(c): int(np.sum(y[test] == c)) for c in np.unique(y)}
    empty = [c for c, n in per_test.items() if n == 0]
    if empty:
        raise SplitError(
            f"{shots_per_class} shots per class leave no test utterance for {empty}"
            + (f" once the {excluded} shot speakers are excluded" if speaker_disjoint else "")
            + "; ask for fewer shots"
            + (" or use speaker_disjoint=False" if speaker_disjoint else " or a larger min_test")
        )
    return FewShot(
        train_idx=train,
        test_idx=test,
        capped=capped,
        per_class_taken=taken,
        per_class_test=per_test,
        shots_per_class=int(shots_per_class),
        seed=int(seed),
        speaker_disjoint=bool(speaker_disjoint),
        min_test=int(min_test),
        excluded_speakers=excluded,
    )


def speaker_label_confound(groups: ArrayLike, y: ArrayLike) -> dict[str, Any]:
    """How entangled speaker and label are: a classifier may learn the speaker, not the emotion.

    Returns ``n_speakers``, ``single_label_speakers`` (count of speakers whose utterances all
    carry one label), ``per_class_speakers`` (``{class: number of speakers}``), ``confounded``
    (more than half the speakers single-label, or some class from at most 4 speakers) and a
    one-sentence ``message``.
    """
    groups, y = _arrays(groups, y)
    speakers = np.unique(groups)
    single = int(sum(np.unique(y[groups == s]).size == 1 for s in speakers))
    per_class = {str(c): int(np.unique(groups[y == c]).size) for c in np.unique(y)}
    narrow = sorted(c for c, n in per_class.items() if n <= 4)
    confounded = single > speakers.size / 2 or bool(narrow)
    if confounded:
        parts = [f"{single} of {speakers.size} speakers occur with one label only"]
        if narrow:
            parts.append(
                "class " + ", ".join(f"{c} comes from {per_class[c]} speakers" for c in narrow)
            )
        message = (
            "Speaker and label are confounded: " + "; ".join(parts)
            + ", so a classifier can score by recognising speakers; evaluate across speakers "
            "or corpora."
        )
    else:
        message = (
            f"Speaker and label are not strongly confounded: {single} of {speakers.size} "
            f"speakers occur with one label only and every class has at least 5 speakers."
        )
    return {
        "n_speakers": int(speakers.size),
        "single_label_speakers": single,
        "per_class_speakers": per_class,
        "confounded": bool(confounded),
        "message": message,
    }
