"""Selection without the target (classifiers/studies/selection.py): LTO finds the layer that transfers where the
source's own dev split does not; the speaker guard uses label-free facts only; bad requests are refused."""

from __future__ import annotations

import math

import numpy as np
import pytest

from classifiers.learners.metrics import uar
from classifiers.learners.probes import make_classifier
from classifiers.learners.splits import speaker_dev_split
from classifiers.studies.selection import (
    Candidate,
    SelectionError,
    TargetFacts,
    lto_pairs,
    rank_agreement,
    select_lto,
    speaker_guard,
)

CORPORA = ("a", "b", "c", "target")
SHARED_LAYER, LOCAL_LAYER = 2, 4


def planted_corpora(seed: int = 0, n_layers: int = 5, dim: int = 6) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per corpus ``(X (n, L, D), y (n,), speakers (n,))``. Layer 2 carries the emotion along directions shared
    by every corpus (moderately); layer 4 carries it strongly along directions of each corpus's own (it scores
    best within a corpus and transfers at chance); the other layers are noise."""
    rng = np.random.default_rng(seed)
    shared = rng.normal(size=(3, dim)) * 0.9
    corpora = {}
    for name in CORPORA:
        y = rng.integers(0, 3, 180)
        speakers = np.repeat(np.arange(12), 15)
        X = rng.normal(size=(180, n_layers, dim))
        X[:, SHARED_LAYER] += shared[y]
        X[:, LOCAL_LAYER] += (rng.normal(size=(3, dim)) * 2.0)[y]
        corpora[name] = (X, y, speakers)
    return corpora


def layer_scorer(corpora, calls: list | None = None):
    def score(layer: int, source: str, target: str) -> float:
        if calls is not None:
            calls.append((layer, source, target))
        Xs, ys, _ = corpora[source]
        Xt, yt, _ = corpora[target]
        return uar(yt, make_classifier("logreg").fit(Xs[:, layer], ys).predict(Xt[:, layer]))
    return score


def source_dev_choice(corpora, source: str, layers: range) -> int:
    """Today's ``--layer best``: the layer of best UAR on a speaker-independent dev split of the source."""
    X, y, speakers = corpora[source]
    train, dev = speaker_dev_split(speakers, y, 0.2, seed=0)
    dev_uar = [uar(y[dev], make_classifier("logreg").fit(X[train, k], y[train]).predict(X[dev, k])) for k in layers]
    return int(np.argmax(dev_uar))


def test_lto_finds_the_layer_that_transfers_where_the_source_dev_split_does_not():
    corpora = planted_corpora()
    calls: list = []
    score = layer_scorer(corpora, calls)
    layers = range(5)
    selection = select_lto([Candidate(k) for k in layers], CORPORA, "target", score)
    assert selection.chosen == SHARED_LAYER
    assert len(selection.pairs) == 6 and all("target" not in pair for pair in selection.pairs)
    assert all(target != "target" and source != "target" for _, source, target in calls)  # never sees the target
    assert source_dev_choice(corpora, "a", layers) == LOCAL_LAYER  # the source's own dev split is fooled
    hindsight = {k: score(k, "a", "target") for k in layers}
    assert max(hindsight, key=hindsight.get) == SHARED_LAYER
    agreement = rank_agreement(selection.mean_scores, hindsight)
    assert agreement["chosen"] == SHARED_LAYER and agreement["points_lost"] == 0.0
    record = selection.to_dict()
    assert record["chosen"] == SHARED_LAYER and len(record["candidates"]) == 5
    assert record["candidates"][2]["mean_uar"] == pytest.approx(np.mean(record["candidates"][2]["pair_uar"]))


def table_scorer(table: dict):
    """A planted score per setting (the same on every pair)."""
    return lambda setting, source, target: table[setting]


SETTINGS = {("layer3", "speaker"): 0.60, ("layer3", "corpus"): 0.55, ("last", "corpus"): 0.50}
CANDIDATES = [Candidate(s, needs_speaker_variety=s[1] == "speaker") for s in SETTINGS]


def test_speaker_normalisation_is_excluded_unless_label_free_facts_allow_it():
    score = table_scorer(SETTINGS)
    # unknown speaker structure (URDU-like: many speakers, few utterances each; nothing declared)
    urdu_like = TargetFacts.from_speakers(np.repeat(np.arange(29), 14)[:400], n_classes=4)
    for facts in (None, urdu_like, TargetFacts(n_classes=4, speakers_cover_classes=True)):
        selection = select_lto(CANDIDATES, CORPORA, "target", score, facts=facts)
        assert selection.chosen == ("layer3", "corpus")
        assert list(selection.excluded) == [("layer3", "speaker")]
        assert ("layer3", "speaker") not in selection.mean_scores
    # an acted corpus: every speaker records every class, 42 utterances each
    acted = TargetFacts.from_speakers(np.repeat(np.arange(10), 42), n_classes=4, speakers_cover_classes=True)
    assert acted.n_speakers == 10 and acted.min_utterances_per_speaker == 42
    selection = select_lto(CANDIDATES, CORPORA, "target", score, facts=acted)
    assert selection.chosen == ("layer3", "speaker") and not selection.excluded
    # declared, but a speaker with 5 utterances cannot show 4 classes twice over
    few = TargetFacts.from_speakers(np.r_[np.repeat(np.arange(9), 42), np.full(5, 99)], 4, speakers_cover_classes=True)
    assert "at least 8 utterances" in speaker_guard(CANDIDATES[0], few)
    assert speaker_guard(CANDIDATES[1], None) is None


def test_loco_mode_trains_on_the_other_corpora_together():
    assert lto_pairs(CORPORA, "target", mode="loco") == [(("b", "c"), "a"), (("a", "c"), "b"), (("a", "b"), "c")]
    assert lto_pairs(CORPORA, "a", on=["c", "b"]) == [("c", "b"), ("b", "c")]
    selection = select_lto(CANDIDATES[1:], CORPORA, "target", table_scorer(SETTINGS), mode="loco")
    assert selection.to_dict()["pairs"][0] == [["b", "c"], "a"]


def test_bad_requests_are_refused_with_the_fix():
    score = table_scorer(SETTINGS)
    with pytest.raises(SelectionError, match="at least 2 corpora"):
        select_lto(CANDIDATES, ["a", "target"], "target", score)
    with pytest.raises(SelectionError, match="include the target"):
        select_lto(CANDIDATES, CORPORA, "target", score, on=["a", "target"])
    with pytest.raises(SelectionError, match="not among"):
        select_lto(CANDIDATES, CORPORA, "target", score, on=["a", "zz"])
    with pytest.raises(SelectionError, match="every candidate is excluded"):
        select_lto(CANDIDATES[:1], CORPORA, "target", score)
    with pytest.raises(SelectionError, match="distinct"):
        select_lto(CANDIDATES[1:2] * 2, CORPORA, "target", score)
    with pytest.raises(SelectionError, match="mode"):
        lto_pairs(CORPORA, "target", mode="all")
    with pytest.raises(SelectionError, match="hindsight"):
        rank_agreement({"x": 1.0}, {"y": 1.0})


def test_rank_agreement_measures_correlation_and_points_lost():
    rule = {"x": 0.9, "y": 0.5, "z": 0.1}
    out = rank_agreement(rule, {"x": 0.40, "y": 0.50, "z": 0.10, "excluded": 0.55})
    assert out["chosen"] == "x" and out["best_in_hindsight"] == "excluded"
    assert out["points_lost"] == pytest.approx(0.15) and out["n"] == 3
    assert out["spearman"] == pytest.approx(0.5)
    assert math.isnan(rank_agreement({"x": 1.0}, {"x": 1.0})["spearman"])
