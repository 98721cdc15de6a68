"""Choosing a setting for a target without its labels: leave-target-out (LTO) over the other corpora.

Pure logic over a score function ``score(setting, source, target) -> UAR``: the caller trains and
tests (a probe, a sweep); this module decides which pairs to score, which candidates a target
rules out, and which candidate wins.

**LTO.** Each candidate's score is its mean UAR over every ordered pair ``(a, b)`` of the
corpora other than the target (``mode="loco"``: each other corpus as target, all the remaining
others together as the source). At least two other corpora are needed. The target's features
and labels are never scored; ties go to the first candidate in the given order.

**The speaker guard.** Some settings are only sound if the target has a property its labels
would show, which a selection must not read. Speaker normalisation removes each speaker's mean:
when a speaker utters one emotion only (URDU: 26 of 29 speakers), that mean *is* the emotion and
normalising erases it. Whether speakers vary in emotion cannot be counted without labels, so
the rule uses only label-free facts (:class:`TargetFacts`): a candidate flagged
``needs_speaker_variety`` is allowed only when

1. the target's speaker ids are known,
2. the caller declares that the corpus was *designed* with every speaker in every class
   (``speakers_cover_classes``: a property of how the corpus was recorded, e.g. acted corpora
   such as EMODB, RAVDESS, EMOVO, IEMOCAP, known like the label set is known; default
   ``False``: unknown), and
3. every speaker has at least ``2 x n_classes`` utterances (``n_classes`` of the task's label
   set), so each speaker's mean is estimated over the classes more than once.

Otherwise the candidate is excluded and the reason recorded. Utterance counts alone cannot show
variety (29 speakers x 14 utterances look the same either way), hence the declaration.

**Target-aware rules** (:func:`select_target_aware`): ``entropy``, ``snd`` and ``iwcv`` score each
candidate trained on the source by what it does on the target's *features* (its predictions, or its
feature distribution), never its labels (:mod:`classifiers.learners.target_scores`). Every score is
higher-is-better; :data:`SCORE_NAMES` says what each rule's score is.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.stats import spearmanr

from featurestore.errors import FsError

Score = Callable[[Hashable, Any, str], float]


class SelectionError(FsError):
    """A selection that cannot be made as asked (too few corpora, the target among them, no candidate left)."""


@dataclass(frozen=True)
class Candidate:
    """One setting to choose from (hashable: a tuple, a frozen dataclass, a string) and what it needs of the target."""

    setting: Hashable
    needs_speaker_variety: bool = False


@dataclass(frozen=True)
class TargetFacts:
    """Label-free facts about the target (from its manifest without labels, and the corpus design)."""

    n_classes: int
    n_speakers: int | None = None
    min_utterances_per_speaker: int | None = None
    speakers_cover_classes: bool = False

    @classmethod
    def from_speakers(cls, speakers: Sequence | None, n_classes: int, speakers_cover_classes: bool = False) -> TargetFacts:
        """Facts from the target's speaker ids ``(n,)`` (``None``: unknown) and the task's number of classes."""
        if speakers is None:
            return cls(n_classes=n_classes, speakers_cover_classes=speakers_cover_classes)
        counts = np.unique(np.asarray(speakers), return_counts=True)[1]
        return cls(n_classes, int(counts.size), int(counts.min()) if counts.size else 0, speakers_cover_classes)


def speaker_guard(candidate: Candidate, facts: TargetFacts | None) -> str | None:
    """Why ``candidate`` is unsafe for a target with ``facts`` (``None``: allowed); see the module docstring."""
    if not candidate.needs_speaker_variety:
        return None
    if facts is None or facts.n_speakers is None:
        return "needs speakers who show several emotions; the target's speakers are unknown"
    if not facts.speakers_cover_classes:
        return ("needs speakers who show several emotions; the target's corpus is not declared to have every "
                "speaker in every class (labels are not read to check)")
    if facts.min_utterances_per_speaker is None or facts.min_utterances_per_speaker < 2 * facts.n_classes:
        return (f"needs at least {2 * facts.n_classes} utterances per target speaker ({facts.n_classes} classes), "
                f"the smallest speaker has {facts.min_utterances_per_speaker}")
    return None


@dataclass
class Selection:
    """What a rule chose and why: ``mean_scores`` per scored candidate, ``pair_scores[setting][(source, target)]``,
    the ``pairs`` scored, ``excluded`` candidates with the reason."""

    rule: str
    target: str
    chosen: Hashable
    mean_scores: dict[Hashable, float]
    pair_scores: dict[Hashable, dict[tuple[Any, str], float]]
    pairs: list[tuple[Any, str]]
    excluded: dict[Hashable, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    grid: dict[str, Any] | None = None  # the declared candidate grid (Grid.to_dict), when chosen from one

    @property
    def score_name(self) -> str:
        """What ``mean_scores`` are (:data:`SCORE_NAMES`): a UAR for ``lto`` and ``source``."""
        return SCORE_NAMES.get(self.rule, "score")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able record for a result (settings as ``repr`` strings unless plain JSON values)."""
        def name(setting: Hashable) -> Any:
            return setting if isinstance(setting, (str, int, float, bool)) or setting is None else repr(setting)

        def source(a: Any) -> Any:
            return list(a) if isinstance(a, tuple) else a

        return {
            "rule": self.rule, "target": self.target, "chosen": name(self.chosen),
            "pairs": [[source(a), b] for a, b in self.pairs],
            "candidates": [{"setting": name(s), "mean_uar": m,
                            "pair_uar": [float(self.pair_scores[s][p]) for p in self.pairs]}
                           for s, m in self.mean_scores.items()],
            "excluded": [{"setting": name(s), "reason": r} for s, r in self.excluded.items()],
            "warnings": list(self.warnings), "grid": self.grid, "score": self.score_name,
        }


def lto_pairs(corpora: Sequence[str], target: str, on: Sequence[str] | None = None,
              mode: str = "pairs") -> list[tuple[Any, str]]:
    """The (source, target) pairs LTO scores: ordered pairs among the non-target corpora (``on`` names them),
    or with ``mode="loco"`` each as target with a tuple of all the remaining ones as source."""
    if mode not in ("pairs", "loco"):
        raise SelectionError(f"unknown LTO mode {mode!r}; choose 'pairs' or 'loco'")
    if on is None:
        others = [c for c in dict.fromkeys(corpora) if c != target]
    else:
        others = list(dict.fromkeys(on))
        if target in others:
            raise SelectionError(f"the corpora to select on include the target {target!r}; leave it out")
        unknown = [c for c in others if c not in corpora]
        if unknown:
            raise SelectionError(f"corpora {unknown} to select on are not among {list(corpora)}")
    if len(others) < 2:
        raise SelectionError(f"leave-target-out selection needs at least 2 corpora besides the target {target!r}, "
                             f"got {others}; add corpora to the workspace or name them (--select-on a,b)")
    if mode == "loco":
        return [(tuple(c for c in others if c != b), b) for b in others]
    return [(a, b) for a in others for b in others if a != b]


def _guarded(candidates: Sequence[Candidate], facts: TargetFacts | None, target: str) -> tuple[list[Hashable], dict]:
    """``(allowed settings in order, excluded {setting: why})`` after :func:`speaker_guard`; none allowed is an error."""
    excluded = {c.setting: why for c in candidates if (why := speaker_guard(c, facts)) is not None}
    allowed = [c.setting for c in candidates if c.setting not in excluded]
    if not allowed:
        where = f" for target {target!r}" if target else ""
        raise SelectionError(f"every candidate is excluded{where}: {excluded}")
    return allowed, excluded


def _select_on_one_pair(rule: str, candidates: Sequence[Candidate], pair: tuple[Any, str], target: str,
                        score: Callable[[Hashable], float], facts: TargetFacts | None) -> Selection:
    """Choose by ``score(setting)`` on one scored ``pair`` (higher is better; ties: the first candidate)."""
    allowed, excluded = _guarded(candidates, facts, target)
    pair_scores = {s: {pair: float(score(s))} for s in allowed}
    means = {s: pair_scores[s][pair] for s in allowed}
    bad = [s for s in allowed if not np.isfinite(means[s])]
    if bad:
        raise SelectionError(f"{rule}: no finite score for candidate(s) {bad}")
    chosen = max(allowed, key=lambda s: means[s])
    return Selection(rule, target, chosen, means, pair_scores, [pair], excluded)


def select_lto(candidates: Sequence[Candidate], corpora: Sequence[str], target: str, score: Score,
               on: Sequence[str] | None = None, facts: TargetFacts | None = None, mode: str = "pairs") -> Selection:
    """Choose among ``candidates`` by mean ``score`` over :func:`lto_pairs`, after :func:`speaker_guard`.

    ``score(setting, source, target)`` returns a UAR (``source`` a corpus name, or a tuple of names with
    ``mode="loco"``); it is never called with ``target`` on either side. ``facts=None`` counts as a target
    whose speakers are unknown.
    """
    settings = [c.setting for c in candidates]
    if not settings:
        raise SelectionError("no candidate settings to select from")
    if len(set(settings)) != len(settings):
        raise SelectionError("candidate settings must be distinct")
    pairs = lto_pairs(corpora, target, on, mode)
    allowed, excluded = _guarded(candidates, facts, target)
    pair_scores = {s: {p: float(score(s, *p)) for p in pairs} for s in allowed}
    means = {s: float(np.mean(list(pair_scores[s].values()))) for s in allowed}
    chosen = max(allowed, key=lambda s: means[s])  # first of equals: max keeps the earliest
    return Selection("lto", target, chosen, means, pair_scores, pairs, excluded)


def select_source(candidates: Sequence[Candidate], source: Any, dev_score: Callable[[Hashable], float],
                  facts: TargetFacts | None = None) -> Selection:
    """Choose among ``candidates`` by ``dev_score(setting)``, the UAR on a speaker-independent dev split of the
    ``source`` (today's ``--layer best``, over the whole grid), after :func:`speaker_guard`. The target is
    never read; the scored "pair" is ``(source, "dev")``."""
    return _select_on_one_pair("source", candidates, (source, "dev"), "", dev_score, facts)


# --------------------------------------------------------------------------- label-free target-aware rules
TARGET_RULES: tuple[str, ...] = ("entropy", "snd", "iwcv")
SCORE_NAMES: dict[str, str] = {
    "lto": "UAR", "source": "UAR",
    "entropy": "minus mean prediction entropy on the target (per class)",
    "snd": "soft neighbourhood density of the target predictions",
    "iwcv": "importance-weighted source dev UAR",
}


def select_target_aware(rule: str, candidates: Sequence[Candidate], source: Any, target: str,
                        score: Callable[[Hashable], float], facts: TargetFacts | None = None) -> Selection:
    """Choose among ``candidates`` by ``score(setting)`` (higher is better), a label-free score of the probe
    trained on ``source`` with that setting, read on ``target``'s features (``rule`` one of :data:`TARGET_RULES`),
    after :func:`speaker_guard`. The scored "pair" is ``(source, target)``; ties go to the first candidate."""
    if rule not in TARGET_RULES:
        raise SelectionError(f"unknown target-aware rule {rule!r}; choose {', '.join(TARGET_RULES)}")
    return _select_on_one_pair(rule, candidates, (source, target), target, score, facts)


# --------------------------------------------------------------------------- the declared candidate grid
DEFAULT_NORMS: tuple[str, ...] = ("none", "corpus", "speaker")
LAYER_MEAN = "mean"  # the average of every layer: a candidate beside the single layers
SPEAKER_NORMS = frozenset({"speaker"})  # settings that need target speakers who show several classes
GRID_KEYS: tuple[str, ...] = ("layers", "norms", "classifiers")


@dataclass(frozen=True)
class Grid:
    """The candidates of ``--select``: ``layers`` (None: every stored layer and their average, ``mean``) x
    ``norms`` x ``classifiers`` (None: the configured one). The one place the default grid is declared.

    Why ``mean`` is in the default grid: averaging the layers needs no choice of layer and is rarely far
    from the best one. On URDU, EMODB and RAVDESS (Whisper-base, trim input) leave-target-out's choice
    lost 2.2 points to the best fixed setting in hindsight over the single layers, 1.4 with ``mean``
    among them (``bench/bench_selection.py``)."""

    layers: tuple[int | str, ...] | None = None
    norms: tuple[str, ...] = DEFAULT_NORMS
    classifiers: tuple[str, ...] | None = None

    @classmethod
    def parse(cls, data: dict[str, Any] | None) -> Grid:
        """A grid from ``{layers: [..], norms: [..], classifiers: [..]}`` (each optional; the setting
        ``select_grid``); values checked by the settings table."""
        from classifiers.studies import settings

        data = dict(data or {})
        unknown = sorted(set(data) - set(GRID_KEYS))
        if unknown:
            raise SelectionError(f"select grid keys {unknown} are not valid; use {', '.join(GRID_KEYS)}")

        def values(key: str, setting: str) -> tuple[Any, ...] | None:
            if key not in data:
                return None
            items = data[key] if isinstance(data[key], (list, tuple)) else [data[key]]
            try:
                return tuple(dict.fromkeys(settings.check(setting, v, f"select grid {key}") for v in items)) or None
            except FsError as exc:
                raise SelectionError(str(exc)) from None

        layers = values("layers", "layer")
        if layers is not None and not all(isinstance(k, int) or k == LAYER_MEAN for k in layers):
            raise SelectionError(f"select grid layers {list(layers)} must be layer numbers or {LAYER_MEAN}")
        return cls(layers, values("norms", "norm") or DEFAULT_NORMS, values("classifiers", "classifier"))

    def resolved_layers(self, num_layers: int) -> tuple[int | str, ...]:
        """The layer candidates for a model of ``num_layers`` stored layers."""
        return self.layers if self.layers is not None else (*range(num_layers), LAYER_MEAN)

    def candidates(self, num_layers: int, classifier: str) -> list[Candidate]:
        """Every ``(layer, norm, classifier)`` setting, speaker norms flagged for the guard."""
        layers = self.resolved_layers(num_layers)
        return [Candidate((layer, norm, clf), needs_speaker_variety=norm in SPEAKER_NORMS)
                for clf in (self.classifiers or (classifier,)) for norm in self.norms for layer in layers]

    def to_dict(self, num_layers: int, classifier: str) -> dict[str, Any]:
        """The grid as resolved for a model and configuration (what a result records)."""
        return {"layers": list(self.resolved_layers(num_layers)),
                "norms": list(self.norms), "classifiers": list(self.classifiers or (classifier,))}


def rank_agreement(rule_scores: dict[Hashable, float], hindsight_scores: dict[Hashable, float]) -> dict[str, Any]:
    """How well a rule's scores track the target's scores seen in hindsight (for reports, never for choosing).

    ``spearman``: rank correlation over the settings in both (NaN below 2 or when constant); ``chosen``:
    the rule's best; ``best_in_hindsight``: the best of ``hindsight_scores`` (all of them, excluded ones
    too); ``points_lost``: hindsight of the best minus hindsight of the chosen (same scale as the scores).
    """
    if not rule_scores or any(s not in hindsight_scores for s in rule_scores):
        raise SelectionError("every setting the rule scored needs a hindsight score")
    common = list(rule_scores)
    chosen = max(common, key=lambda s: rule_scores[s])
    best = max(hindsight_scores, key=lambda s: hindsight_scores[s])
    rule, hind = [rule_scores[s] for s in common], [hindsight_scores[s] for s in common]
    constant = len(common) < 2 or np.ptp(rule) == 0 or np.ptp(hind) == 0
    rho = float("nan") if constant else float(spearmanr(rule, hind).statistic)
    return {"spearman": rho, "n": len(common), "chosen": chosen, "best_in_hindsight": best,
            "points_lost": float(hindsight_scores[best] - hindsight_scores[chosen])}
