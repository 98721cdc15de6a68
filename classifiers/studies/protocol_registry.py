"""The study protocols as a registry: each one class that turns two sides and a seed into index splits.

A side is one corpus as a runner reads it: anything with ``corpus``, ``labels`` ``(n,)``, ``groups``
``(n,)`` (``corpus:speaker``, unique across corpora), ``view`` (a :class:`~featurestore.view.FeatureView`
with ``ids``) and ``subset(rows)``. Both runners read the same splits: the pooled-feature runner
(:func:`classifiers.studies.protocols.run_probe`) and the frame-trained one
(:func:`classifiers.studies.finetune.run_finetune`: head, CNN-LSTM, LoRA).

A configuration's ``protocol`` setting names its protocol; left unset it is derived from the sides
(:func:`derived_protocol`: ``within-corpus`` when source = target, ``few-shot`` with shots, else
``cross-language``), and a configuration records it only when it differs from the derived one (so the
keys of existing configurations do not change).

A :class:`SeedSplits` is one seed's folds (each: the training parts ``[(side, rows), ...]`` and the
test part ``(side, rows)``; ``rows`` None means every row of the side) and, for few-shot, the
target-only baseline's training parts and the shot record. A new protocol is one :class:`Protocol`
subclass decorated with :func:`register` (its ``name`` is the ``protocol`` setting's value; its
:meth:`~Protocol.problem` refuses configurations it cannot run) plus its tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from classifiers.learners.splits import SplitError, few_shot_split, speaker_dev_split, speaker_folds
from featurestore.errors import FsError

N_FOLDS = 5
WITHIN_TEST_FRACTION = 0.2  # the frame-trained runner's single within-corpus split: share of speakers tested
_WITHIN_SPLIT_SEED = 104729  # offsets the single split's seed from the dev split's (kept: same numbers as before)

Rows = np.ndarray | None  # (m,) int row indices of a side, or None for all of its rows
Part = tuple[Any, Rows]  # (side, rows)


class ProtocolError(FsError):
    """A probe or fine-tuning run that cannot be run as configured (settings, mismatched data, impossible splits)."""


class UnknownProtocolError(ProtocolError):
    """A protocol name that no registered protocol has."""


@dataclass
class Fold:
    """One training/test split: ``train`` parts (their rows concatenated) and the ``test`` part."""

    train: list[Part]
    test: Part

    @property
    def n_train(self) -> int:
        return int(sum(len(side.labels) if rows is None else rows.size for side, rows in self.train))


@dataclass
class SeedSplits:
    """One seed's splits. ``pooled``: the folds' test parts partition the target, their predictions are
    pooled into one score (and a best layer is chosen per fold); else there is one fold. For few-shot,
    ``baseline_train`` (the shots alone, tested on ``folds[0].test``) and ``shots`` (the shot record:
    seed, shot ids, counts, capped classes)."""

    seed: int
    folds: list[Fold]
    pooled: bool = False
    baseline_train: list[Part] | None = None
    shots: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)


class Protocol:
    """A study protocol: :meth:`splits` gives one seed's :class:`SeedSplits` of a source and a target side.

    ``single_split``: the frame-trained runner asks for one split where the protocol would make
    several folds (cheaper for trained models); protocols with one split ignore it."""

    name: ClassVar[str] = ""
    derived: ClassVar[bool] = False  # picked from source, target and shots (never named in a configuration)

    def __init__(self, config: Any):
        self.config = config

    def splits(self, src: Any, tgt: Any, seed: int, *, single_split: bool = False) -> SeedSplits:  # pragma: no cover
        raise NotImplementedError

    baseline: ClassVar[bool] = False  # whether each seed also trains a baseline (few-shot: the shots alone)

    @classmethod
    def problem(cls, config: Any) -> str | None:
        """Why ``config`` cannot run this protocol (checked when the configuration is made), else None."""
        return None

    def folds_per_seed(self, src: Any) -> int:
        """Folds one seed makes (a progress total)."""
        return 1


PROTOCOLS: dict[str, type[Protocol]] = {}


def register(cls: type[Protocol]) -> type[Protocol]:
    """Class decorator: add a protocol to :data:`PROTOCOLS` under its ``name``."""
    if not cls.name or cls.name in PROTOCOLS:
        raise ValueError(f"protocol {cls.__name__}: name {cls.name!r} is empty or taken")
    PROTOCOLS[cls.name] = cls
    return cls


def protocol_names() -> tuple[str, ...]:
    """Every registered protocol's name (the choices of the ``protocol`` setting)."""
    return tuple(sorted(PROTOCOLS))


def derived_protocol(config: Any) -> str:
    """The protocol that source, target and shots make: ``within-corpus``, ``few-shot`` or ``cross-language``."""
    return "within-corpus" if config.source == config.target else "few-shot" if config.shots else "cross-language"


def resolve_protocol(config: Any) -> str:
    """``config``'s protocol name: its ``protocol`` setting, or the derived one when unset. A derived
    protocol named where another is derived, or a protocol that cannot run ``config``, is refused
    (:class:`ProtocolError`)."""
    derived = derived_protocol(config)
    name = getattr(config, "protocol", None) or derived
    if name not in PROTOCOLS:
        raise UnknownProtocolError(f"unknown protocol {name!r}; registered: {', '.join(protocol_names())}")
    cls = PROTOCOLS[name]
    if cls.derived and name != derived:
        raise ProtocolError(f"protocol {name} is what source, target and shots make (here they make {derived}); "
                            "leave protocol unset, or set source, target and shots for it")
    problem = cls.problem(config)
    if problem:
        raise ProtocolError(f"protocol {name}: {problem}")
    return name


def protocol_for(config: Any) -> Protocol:
    """The registered protocol that ``config.protocol`` names, bound to ``config``."""
    try:
        return PROTOCOLS[config.protocol](config)
    except KeyError:
        raise UnknownProtocolError(f"unknown protocol {config.protocol!r}; registered: "
                                   f"{', '.join(sorted(PROTOCOLS))}") from None


@register
class Transfer(Protocol):
    """Cross-language: train on all of the source, test on all of the target."""

    name = "cross-language"
    derived = True

    def splits(self, src: Any, tgt: Any, seed: int, *, single_split: bool = False) -> SeedSplits:
        return SeedSplits(seed, [Fold([(src, None)], (tgt, None))])


@register
class WithinCorpus(Protocol):
    """Within one corpus: leave-speakers-out folds (``N_FOLDS``, capped at the speakers), every utterance
    tested once; with ``single_split`` one speaker-independent split holding out about
    ``WITHIN_TEST_FRACTION`` of the utterances (whole speakers)."""

    name = "within-corpus"
    derived = True

    def splits(self, src: Any, tgt: Any, seed: int, *, single_split: bool = False) -> SeedSplits:
        try:
            if single_split:
                train, test = speaker_dev_split(src.groups, src.labels, WITHIN_TEST_FRACTION, seed + _WITHIN_SPLIT_SEED)
                return SeedSplits(seed, [Fold([(src, train)], (tgt, test))])
            folds = speaker_folds(src.groups, src.labels, N_FOLDS, seed)
        except SplitError as exc:
            raise ProtocolError(f"within-corpus {src.corpus!r}: {exc}") from None
        return SeedSplits(seed, [Fold([(src, tr)], (tgt, te)) for tr, te in folds], pooled=True)

    def folds_per_seed(self, src: Any) -> int:
        return min(N_FOLDS, int(np.unique(src.groups).size))


@register
class FewShot(Protocol):
    """Few-shot: ``config.shots`` target utterances per class join all of the source in training and never
    the test set (``config.shots_speaker_disjoint``: tested only on speakers who gave no shot); the
    target-only baseline trains on the shots alone, tested on the same utterances."""

    name = "few-shot"
    derived = True
    baseline = True

    def take_shots(self, tgt: Any, seed: int) -> tuple[np.ndarray, np.ndarray, dict[str, Any], list[str]]:
        """(shot rows, test rows, shot record, capping warnings) of the target for ``seed``."""
        config = self.config
        try:
            split = few_shot_split(tgt.labels, tgt.groups, config.shots, seed, config.shots_speaker_disjoint)
        except SplitError as exc:
            raise ProtocolError(f"few-shot on target {config.target!r}: {exc}") from None
        warnings = [f"shots: class {label!r} of {config.target!r} has too few utterances for {asked} shots; took "
                    f"{took} (at least {split.min_test} kept for testing)" for label, (asked, took) in split.capped.items()]
        record = {"seed": seed, "ids": tgt.view.ids[split.train_idx].tolist(), **split.to_dict(indices=False)}
        return split.train_idx, split.test_idx, record, warnings

    def splits(self, src: Any, tgt: Any, seed: int, *, single_split: bool = False) -> SeedSplits:
        shots, test, record, warnings = self.take_shots(tgt, seed)
        for label, (_, took) in record.get("capped", {}).items():
            if took == 0:
                warnings.append(f"shots: class {label!r} of {self.config.target!r} gave no shot; the target-only "
                                "baseline never sees it")
        return SeedSplits(seed, [Fold([(src, None), (tgt, shots)], (tgt, test))], baseline_train=[(tgt, shots)],
                          shots=record, warnings=warnings)


@register
class HeldOutTransfer(Protocol):
    """Zero-shot on the few-shot test set: train on all of the source only and test on the target less the
    ``config.shots`` utterances per class that the few-shot protocol of the same seed would take as shots
    (held out, never trained on). Its UAR compares with a few-shot result of the same shots on exactly the
    same test utterances; the held-out shots are recorded as the few-shot protocol records them."""

    name = "cross-language-heldout"

    @classmethod
    def problem(cls, config: Any) -> str | None:
        if config.source == config.target:
            return "needs a target other than the source (within a corpus, the folds test every utterance)"
        if not config.shots:
            return "needs shots > 0: the target utterances per class held out (the few-shot protocol's shots)"
        return None

    def splits(self, src: Any, tgt: Any, seed: int, *, single_split: bool = False) -> SeedSplits:
        _, test, record, warnings = FewShot(self.config).take_shots(tgt, seed)
        return SeedSplits(seed, [Fold([(src, None)], (tgt, test))], shots=record, warnings=warnings)


# --------------------------------------------------------------------------- shared by both runners


def align(a: Any, b: Any) -> tuple[Any, Any]:
    """Two sides of one corpus (clean and noisy) restricted to their common utterances, in one order."""
    if a.view is b.view or np.array_equal(a.view.ids, b.view.ids):
        return a, b
    common = np.intersect1d(a.view.ids, b.view.ids)

    def rows(ids: np.ndarray) -> np.ndarray:  # rows of ``common`` in ids, in sorted-id order
        order = np.argsort(ids)
        return order[np.searchsorted(ids[order], common)]

    return a.subset(rows(a.view.ids)), b.subset(rows(b.view.ids))


def check_compatible(config: Any, src: Any, tgt: Any, src_classes: list[str], tgt_classes: list[str],
                     src_map: str | None = None, tgt_map: str | None = None) -> None:
    """Refuse (:class:`ProtocolError`) a source and target that one model cannot be trained and tested on:
    other models, weights, layer counts, widths or extraction settings, other classes, or a source
    lacking a class."""
    ps, pt = src.view.provenance, tgt.view.provenance
    where = f"source {config.source!r} ({ps['store_key']}) and target {config.target!r} ({pt['store_key']})"
    if ps.get("model_id") != pt.get("model_id"):
        raise ProtocolError(f"{where} come from different models ({ps.get('model_id')} vs {pt.get('model_id')}); "
                            "extract both corpora with the same --model")
    if ps.get("weights_hash") != pt.get("weights_hash"):
        raise ProtocolError(f"{where} were extracted with different weights of {config.model!r} "
                            f"({str(ps.get('weights_hash'))[:12]} vs {str(pt.get('weights_hash'))[:12]}); re-extract "
                            f"one with `fs extract --model {config.model} --corpus C --overwrite`")
    if ps.get("num_layers") != pt.get("num_layers") or src.view.X.shape[-1] != tgt.view.X.shape[-1]:
        raise ProtocolError(f"{where} differ in layers or width ({ps.get('num_layers')}x{src.view.X.shape[-1]} vs "
                            f"{pt.get('num_layers')}x{tgt.view.X.shape[-1]}); use groups of one model")
    for name in ("whisper_input", "seed", "chunk_seconds"):
        a, b = ps.get("model_settings", {}).get(name), pt.get("model_settings", {}).get(name)
        if a != b:
            raise ProtocolError(f"{where} were extracted with different {name} ({a} vs {b}); pass --whisper-input / "
                                "--model-seed to pick groups with one setting")
    if set(src_classes) != set(tgt_classes):
        only_s = sorted(set(src_classes) - set(tgt_classes))
        only_t = sorted(set(tgt_classes) - set(src_classes))
        raise ProtocolError(f"source {config.source!r} (label map {src_map!r}: {src_classes}) and target "
                            f"{config.target!r} (label map {tgt_map!r}: {tgt_classes}) have different classes "
                            f"(only in source: {only_s}, only in target: {only_t}); re-add one corpus with "
                            "`fs corpus add ... --labels MAP --overwrite` so both give the same classes")
    absent = [c for c in src_classes if not np.any(src.labels == c)]
    if absent:
        raise ProtocolError(f"source {src.corpus!r} has no utterance of class(es) {absent} in the store group "
                            f"{ps['store_key']}; a model cannot learn them (re-extract the group, or use a "
                            "label map without them)")
