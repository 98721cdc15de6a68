"""The provenance of a store group, typed: parsed once from the group's attributes.

A group's attributes (written by :mod:`featurestore.extract`) are nested JSON: ``model`` (the
encoder's ``EncoderInfo``), ``condition`` (the condition chain with its key, fingerprint and, for a
noise step, the noise bank's spec and recordings), ``corpus`` (the manifest it was made from) and
the run's facts. :meth:`Provenance.from_attrs` is the one place that walks that dict; every reader
(verify, export, views, ``fs store`` listings, hints) uses the typed accessors. No torch, no zarr:
any floor at or above the store may import it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _int_or_none(value: Any) -> int | None:
    return None if value is None or isinstance(value, bool) else int(value)


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)


@dataclass(frozen=True)
class ModelInfo:
    """The encoder a group was extracted with (``EncoderInfo`` as recorded)."""

    name: str = ""  # registry alias or the id/path the user gave
    model_id: str = ""  # HF id, local path, or "builtin:<name>"
    family: str = ""
    weights_hash: str = ""
    pretrained: bool = True
    sample_rate: int | None = None
    num_layers: int | None = None
    dim: int | None = None
    frame_rate: float | None = None
    settings: Mapping[str, Any] = field(default_factory=dict)  # feature-extractor and run options

    @classmethod
    def from_attrs(cls, model: Mapping[str, Any]) -> ModelInfo:
        return cls(name=_text(model.get("name")), model_id=_text(model.get("model_id")),
                   family=_text(model.get("family")), weights_hash=_text(model.get("weights_hash")),
                   pretrained=bool(model.get("pretrained", True)), sample_rate=_int_or_none(model.get("sample_rate")),
                   num_layers=_int_or_none(model.get("num_layers")), dim=_int_or_none(model.get("dim")),
                   frame_rate=_float_or_none(model.get("frame_rate")), settings=dict(_mapping(model.get("settings"))))

    @property
    def whisper_input(self) -> str | None:
        value = self.settings.get("whisper_input")
        return None if value is None else str(value)

    @property
    def seed(self) -> int | None:
        """The weight seed recorded for the model (meaningful for a random-weights model)."""
        return _int_or_none(self.settings.get("seed"))

    @property
    def chunk_seconds(self) -> float | None:
        return _float_or_none(self.settings.get("chunk_seconds"))

    def as_dict(self) -> dict[str, Any]:
        """The ``EncoderInfo``-shaped dict (what :func:`featurestore.hints.model_flags` reads)."""
        return {"name": self.name, "model_id": self.model_id, "family": self.family, "weights_hash": self.weights_hash,
                "pretrained": self.pretrained, "sample_rate": self.sample_rate, "num_layers": self.num_layers,
                "dim": self.dim, "frame_rate": self.frame_rate, "settings": dict(self.settings)}


@dataclass(frozen=True)
class NoiseInfo:
    """The noise step of a group's condition: its spec (source, SNR, seed, layout, environments, channel)
    and the fingerprint of the recordings it mixed (what tells two noise folders apart)."""

    source: str
    snr_db: float | None = None
    seed: int = 0
    layout: str = "auto"
    environments: tuple[str, ...] = ()
    channel: str = "ch01"
    fingerprint: str = ""  # sha256 hex over the recordings' names, sizes and content hashes
    key: str = ""
    spec: Mapping[str, Any] = field(default_factory=dict)  # as recorded: NoiseSpec.to_dict()

    @classmethod
    def from_attrs(cls, noise: Mapping[str, Any]) -> NoiseInfo | None:
        spec = _mapping(noise.get("spec"))
        if not spec:
            return None
        return cls(source=_text(spec.get("source")), snr_db=_float_or_none(spec.get("snr_db")),
                   seed=int(spec.get("seed") or 0), layout=_text(spec.get("layout") or "auto"),
                   environments=tuple(str(e) for e in spec.get("environments") or ()),
                   channel=_text(spec.get("channel") or "ch01"), fingerprint=_text(noise.get("fingerprint")),
                   key=_text(noise.get("key")), spec=dict(spec))

    @property
    def source_name(self) -> str:
        """The noise folder's (or file's) name, for display only: it never selects a group."""
        return Path(self.source).name


@dataclass(frozen=True)
class ConditionInfo:
    """The acoustic condition of a group: its key (the store key's middle part), canonical text,
    fingerprint and, with a noise step, :class:`NoiseInfo`. ``chain`` is the recorded chain dict
    (``ConditionChain.to_dict()``; empty for groups written before chains were recorded)."""

    key: str = "clean"
    text: str = "clean"
    fingerprint: str = ""
    noise: NoiseInfo | None = None
    chain: Mapping[str, Any] = field(default_factory=dict)
    seed: int = 0  # the chain's seed
    texts: tuple[str, ...] = ()  # each step's canonical text (``--condition`` values), in order

    @classmethod
    def from_attrs(cls, condition: Mapping[str, Any]) -> ConditionInfo:
        noise = NoiseInfo.from_attrs(_mapping(condition.get("noise")))
        chain = {k: condition[k] for k in ("seed", "steps", "text") if k in condition} if "steps" in condition else {}
        text = _text(condition.get("text")) or ("clean" if noise is None else f"noise:{noise.source}")
        return cls(key=_text(condition.get("key") or "clean"), text=text, fingerprint=_text(condition.get("fingerprint")),
                   noise=noise, chain=chain, seed=int(condition.get("seed") or 0),
                   texts=tuple(str(t) for t in condition.get("texts") or ()))

    @property
    def is_lone_noise(self) -> bool:
        """A noise step alone (or a group written before chains): made by ``--noise/--snr/--noise-seed``."""
        return self.noise is not None and len(self.texts) <= 1

    @property
    def is_clean(self) -> bool:
        return self.key == "clean"


@dataclass(frozen=True)
class CorpusInfo:
    """The manifest a group was extracted from."""

    name: str = ""
    layout: str = ""
    root: str = ""
    manifest_digest: str = ""
    audio_digest: str = ""
    label_map: str = ""
    utterances: int | None = None

    @classmethod
    def from_attrs(cls, corpus: Mapping[str, Any]) -> CorpusInfo:
        return cls(name=_text(corpus.get("name")), layout=_text(corpus.get("layout")), root=_text(corpus.get("root")),
                   manifest_digest=_text(corpus.get("manifest_digest")), audio_digest=_text(corpus.get("audio_digest")),
                   label_map=_text(corpus.get("label_map")), utterances=_int_or_none(corpus.get("utterances")))


@dataclass(frozen=True)
class Provenance:
    """Everything a group records about how it was made, typed. Build with :meth:`from_attrs`."""

    model: ModelInfo
    condition: ConditionInfo
    corpus: CorpusInfo
    layers: int | None = None
    dim: int | None = None
    frame_layers: tuple[int, ...] = ()
    aliases: tuple[str, ...] = ()  # other names the same weights were extracted under
    state: str = ""  # "complete" or "incomplete"
    format_version: int | None = None
    fs_version: str = ""
    sample_rate: int | None = None
    command: str = ""  # the `fs extract` command that makes the group
    device: str = ""
    created: str = ""
    torch: str = ""
    python: str = ""
    audio: Mapping[str, Any] = field(default_factory=dict)  # decoder / downmix / resampler
    pooling: Mapping[str, Any] = field(default_factory=dict)
    plan: Mapping[str, Any] = field(default_factory=dict)
    skipped: Mapping[str, str] = field(default_factory=dict)  # utt_id -> why it was skipped

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]) -> Provenance:
        """Parse a group's attribute dict (``zarr`` attrs, or the JSON ``fs store info --json`` prints)."""
        return cls(model=ModelInfo.from_attrs(_mapping(attrs.get("model"))),
                   condition=ConditionInfo.from_attrs(_mapping(attrs.get("condition"))),
                   corpus=CorpusInfo.from_attrs(_mapping(attrs.get("corpus"))),
                   layers=_int_or_none(attrs.get("layers")), dim=_int_or_none(attrs.get("dim")),
                   frame_layers=tuple(int(k) for k in attrs.get("frame_layers") or ()),
                   aliases=tuple(str(a) for a in attrs.get("aliases") or ()), state=_text(attrs.get("state")),
                   format_version=_int_or_none(attrs.get("format_version")), fs_version=_text(attrs.get("fs_version")),
                   sample_rate=_int_or_none(attrs.get("sample_rate")), command=_text(attrs.get("command")),
                   device=_text(attrs.get("device")), created=_text(attrs.get("created")), torch=_text(attrs.get("torch")),
                   python=_text(attrs.get("python")), audio=dict(_mapping(attrs.get("audio"))),
                   pooling=dict(_mapping(attrs.get("pooling"))), plan=dict(_mapping(attrs.get("plan"))),
                   skipped={str(k): str(v) for k, v in _mapping(attrs.get("skipped")).items()})

    @property
    def noise(self) -> NoiseInfo | None:
        return self.condition.noise

    @property
    def is_complete(self) -> bool:
        """Marked complete (the store also checks every batch's commit marker)."""
        return self.state == "complete"

    def model_names(self) -> set[str]:
        """Every name the group's model answers to: its name, model id and aliases (no model key)."""
        return {n for n in (self.model.name, self.model.model_id, *self.aliases) if n}
