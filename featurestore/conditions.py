"""Acoustic conditions: seeded, recorded transformations of the audio before the encoder.

A condition is never stored as audio. A :class:`ConditionChain` is an ordered list of
:class:`ConditionSpec` steps and one seed; for each utterance, every step draws what it needs from
``sha256(f"{seed}:{position}:{kind}:{utt_id}")`` (the ``noise`` step keeps :class:`NoiseBank`'s own
draw from ``(seed, utt_id)``), so a rerun, another process or a Ray worker gets the same draws bit
for bit. :meth:`ConditionChain.apply` returns the transformed wave and a small JSON-able record of
what was applied; :meth:`ConditionChain.replay` rebuilds the identical wave from that record alone.

Written as ``KIND[:NAME=VALUE[,NAME=VALUE...]]``; a range is ``LO-HI`` (``rt60=0.3-0.9``,
``db=-12--6``) and is drawn uniformly per utterance; a chain lists steps in order of application,
joined by `` > `` in its text form (on the command line: one ``--condition`` per step).

============  ==============================================================================
noise         ``snr=DB`` (one value), ``source=PATH`` (or ``--noise``), ``env=A+B``, ``layout``,
              ``channel``: today's exact-SNR mixer (:mod:`featurestore.noise`), unchanged
reverb        ``rt60=S`` (default 0.3-0.9 s), ``drr=DB`` (direct-to-reverberant ratio, default 0):
              a synthetic room impulse response (direct path + exponentially decaying Gaussian
              tail that falls 60 dB in RT60), unit energy, output as long as the input;
              or ``ir=PATH``: recorded impulse responses (a file or a folder, searched recursively),
              one drawn per utterance, through audiomentations ``ApplyImpulseResponse`` (which
              scales the output to a peak of 0.5)
telephone     ``band=LO-HI`` Hz (default 300-3400), ``rate=HZ`` (default 8000), ``codec=none|mp3``,
              ``bitrate=KBPS``: resample to ``rate``, band-pass (Butterworth, zero phase), optional
              MP3 round trip (audiomentations ``Mp3Compression``, fast-mp3-augment), resample back
gain          ``db=DB``: the wave times ``10**(db/20)``, exactly (may leave [-1, 1])
clipping      ``percent=P``: hard clipping at the ``1 - P/100`` quantile of ``|wave|``
============  ==============================================================================

Reverb and telephone scale their output down when it would leave [-1, 1] (``output_gain`` in
the record), as the noise mixer does.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from featurestore.errors import FsError
from featurestore.noise import LAYOUTS, NoiseBank, NoiseError, NoiseSpec, fingerprint_files

STEP_SEPARATOR = " > "
MP3_BITRATES = (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160, 192, 224, 256, 320)
MP3_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
TELEPHONE_ORDER = 8          # Butterworth band-pass order (applied forward and backward)
_MAX_RT60 = 10.0             # seconds; longer is no room
_VERSIONS = {"noise": 1, "reverb": 1, "telephone": 1, "gain": 1, "clipping": 1}  # bump when a step's output changes
_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_RANGE = re.compile(rf"({_NUMBER})-({_NUMBER})")


class ConditionError(FsError, ValueError):
    """A condition that cannot be parsed, built or replayed; the message names the valid choices."""


class ConditionAudioError(ConditionError):
    """One utterance cannot take a condition (silent speech for an SNR, NaN samples): skip that utterance."""


Range = tuple[float, float]


@dataclass(frozen=True)
class _Param:
    """One parameter of a condition kind: its type, default (None: required) and bounds."""

    type: str                                # "number" | "range" | "int" | "choice" | "names" | "text"
    default: Any = None
    low: float | None = None                 # smallest allowed value
    low_open: bool = False                   # the value must exceed ``low``
    high: float | None = None                # largest allowed value
    high_open: bool = False                  # the value must stay below ``high``
    choices: tuple[str, ...] = ()
    unit: str = ""


_PARAMS: dict[str, dict[str, _Param]] = {
    "noise": {"snr": _Param("number", unit="dB"), "source": _Param("text", ""), "env": _Param("names", ()),
              "layout": _Param("choice", "auto", choices=LAYOUTS), "channel": _Param("text", "ch01")},
    "reverb": {"rt60": _Param("range", (0.3, 0.9), low=0.0, low_open=True, high=_MAX_RT60, unit="s"),
               "drr": _Param("range", (0.0, 0.0), low=-40.0, high=40.0, unit="dB"), "ir": _Param("text", "")},
    "telephone": {"band": _Param("range", (300.0, 3400.0), low=0.0, low_open=True, unit="Hz"),
                  "rate": _Param("int", 8000, low=1000, high=192000, unit="Hz"),
                  "codec": _Param("choice", "none", choices=("none", "mp3")),
                  "bitrate": _Param("range", None, low=8, high=320, unit="kbps")},
    "gain": {"db": _Param("range", low=-120.0, high=120.0, unit="dB")},
    "clipping": {"percent": _Param("range", low=0.0, low_open=True, high=100.0, high_open=True, unit="%")},
}
KINDS = tuple(sorted(_PARAMS))
_OPTIONAL_WITHOUT_DEFAULT = {("telephone", "bitrate")}   # None unless codec=mp3


# --- specs and parsing ------------------------------------------------------------------------

@dataclass(frozen=True)
class ConditionSpec:
    """One step: a kind and every one of its parameters (defaults filled in, values normalised).

    Ranges are ``(lo, hi)`` float tuples (one value ``v`` is ``(v, v)``); ``env`` a tuple of names.
    """

    kind: str
    params: tuple[tuple[str, Any], ...]

    def __getitem__(self, name: str) -> Any:
        return dict(self.params)[name]

    @property
    def text(self) -> str:
        """Canonical text, ``kind:name=value,...`` over every parameter in name order; parses back to self."""
        shown = [f"{name}={_value_text(value)}" for name, value in self.params if value not in (None, "", ())]
        return self.kind + (":" + ",".join(shown) if shown else "")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready ``{"kind", "params"}``; inverse of :meth:`from_dict`."""
        return {"kind": self.kind, "params": {name: list(v) if isinstance(v, tuple) else v for name, v in self.params}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ConditionSpec:
        """Rebuild (and re-check) a spec from :meth:`to_dict` output."""
        try:
            kind, params = d["kind"], dict(d["params"])
        except (KeyError, TypeError):
            raise ConditionError(f"a condition spec needs 'kind' and 'params', got {d!r}") from None
        return _make_spec(kind, {name: _value_text(tuple(v) if isinstance(v, list) else v)
                                 for name, v in params.items() if v not in (None, "", [], ())})

    def __str__(self) -> str:
        return self.text


def parse_condition(text: str) -> ConditionSpec:
    """``"reverb:rt60=0.3-0.9"`` → a checked :class:`ConditionSpec`; ConditionError (one line naming the
    valid kinds or parameters) for anything unknown, malformed or impossible."""
    if not isinstance(text, str) or not text.strip():
        raise ConditionError(f"empty condition; write KIND[:NAME=VALUE,...] with KIND one of {', '.join(KINDS)}")
    kind, _, rest = text.strip().partition(":")
    kind = kind.strip().lower()
    raw: dict[str, str] = {}
    for item in (p.strip() for p in rest.split(",") if p.strip()):
        name, eq, value = item.partition("=")
        name = name.strip().lower()
        if not eq or not name or not value.strip():
            raise ConditionError(f"condition {text!r}: {item!r} is not NAME=VALUE")
        if name in raw:
            raise ConditionError(f"condition {text!r}: parameter {name!r} given twice")
        raw[name] = value.strip()
    return _make_spec(kind, raw, text)


def _make_spec(kind: str, raw: dict[str, str], text: str | None = None) -> ConditionSpec:
    where = f"condition {text!r}" if text is not None else f"condition {kind!r}"
    if kind not in _PARAMS:
        raise ConditionError(f"unknown condition {kind!r}; valid: {', '.join(KINDS)}")
    schema = _PARAMS[kind]
    unknown = sorted(set(raw) - set(schema))
    if unknown:
        raise ConditionError(f"{where}: unknown parameter {unknown[0]!r} for {kind}; valid: {', '.join(sorted(schema))}")
    values: dict[str, Any] = {}
    for name, param in schema.items():
        if name in raw:
            values[name] = _parse_value(where, name, param, raw[name])
        elif param.default is None and (kind, name) not in _OPTIONAL_WITHOUT_DEFAULT:
            raise ConditionError(f"{where}: {kind} needs {name}=VALUE{' (' + param.unit + ')' if param.unit else ''}")
        else:
            values[name] = param.default
    _check_kind(where, kind, values, raw)
    return ConditionSpec(kind, tuple(sorted(values.items())))


def _parse_value(where: str, name: str, param: _Param, text: str) -> Any:
    """One parameter value from its text, checked against ``param``'s type and bounds."""
    if param.type == "text":
        return text
    if param.type == "names":
        names = tuple(n.strip() for n in text.split("+"))
        if not all(names):
            raise ConditionError(f"{where}: {name}={text!r} must be names joined by '+'")
        return tuple(sorted(set(names)))
    if param.type == "choice":
        if text.lower() not in param.choices:
            raise ConditionError(f"{where}: {name}={text!r} is not valid; valid: {', '.join(param.choices)}")
        return text.lower()
    if param.type == "int":
        value = _number(where, name, text, param)
        if not value.is_integer():
            raise ConditionError(f"{where}: {name}={text} must be a whole number")
        _check_bounds(where, name, param, value)
        return int(value)
    match = _RANGE.fullmatch(text)
    if match is None:
        lo = hi = _number(where, name, text, param)
    elif param.type == "number":
        raise ConditionError(f"{where}: {name} takes one value per condition (one store group each), got {text}; "
                             "run once per value")
    else:
        lo, hi = _number(where, name, match.group(1), param), _number(where, name, match.group(2), param)
        if lo > hi:
            raise ConditionError(f"{where}: {name}={text} has min > max; write {name}={match.group(2)}-{match.group(1)}")
    for value in (lo, hi):
        _check_bounds(where, name, param, value)
    return lo if param.type == "number" else (lo, hi)


def _number(where: str, name: str, text: str, param: _Param | None = None) -> float:
    try:
        value = float(text)
    except ValueError:
        what = "a number or a LO-HI range" if param is not None and param.type == "range" else "a number"
        unit = f" ({param.unit})" if param is not None and param.unit else ""
        raise ConditionError(f"{where}: {name}={text!r} must be {what}{unit}") from None
    if not math.isfinite(value):
        raise ConditionError(f"{where}: {name}={text} must be finite")
    return value + 0.0  # -0.0 → 0.0: one text per value


def _check_bounds(where: str, name: str, param: _Param, value: float) -> None:
    unit = f" {param.unit}" if param.unit and param.unit != "%" else param.unit
    if param.low is not None and (value < param.low or (param.low_open and value == param.low)):
        raise ConditionError(f"{where}: {name}={_num_text(value)} must be {'above' if param.low_open else 'at least'} "
                             f"{_num_text(param.low)}{unit}")
    if param.high is not None and (value > param.high or (param.high_open and value == param.high)):
        raise ConditionError(f"{where}: {name}={_num_text(value)} must be {'below' if param.high_open else 'at most'} "
                             f"{_num_text(param.high)}{unit}")


def _check_kind(where: str, kind: str, values: dict[str, Any], raw: dict[str, str]) -> None:
    """Checks across parameters of one kind (Nyquist, codec settings, one reverb model)."""
    if kind == "reverb" and values["ir"]:
        if "rt60" in raw or "drr" in raw:
            raise ConditionError(f"{where}: reverb takes ir=PATH (recorded impulse responses) or rt60/drr "
                                 "(synthetic room), not both")
        values["rt60"] = values["drr"] = None
    if kind != "telephone":
        return
    rate, (low, high) = values["rate"], values["band"]
    if high >= rate / 2:
        raise ConditionError(f"{where}: band={_value_text(values['band'])} reaches the Nyquist frequency "
                             f"{_num_text(rate / 2)} Hz of rate={rate}; lower the band's top or raise the rate")
    if low >= high:
        raise ConditionError(f"{where}: band={_value_text(values['band'])} is empty; write band=LO-HI with LO < HI")
    if values["codec"] == "none":
        if "bitrate" in raw:
            raise ConditionError(f"{where}: bitrate needs codec=mp3")
        return
    if rate not in MP3_RATES:
        raise ConditionError(f"{where}: codec=mp3 needs rate in {', '.join(map(str, MP3_RATES))}, got {rate}")
    if values["bitrate"] is None:
        values["bitrate"] = (16.0, 16.0)
    if not _mp3_bitrates(values["bitrate"], rate):
        raise ConditionError(f"{where}: no MP3 bitrate in {_value_text(values['bitrate'])} kbps at rate={rate}; "
                             f"valid: {', '.join(map(str, _mp3_bitrates((0, 1e9), rate)))}")


def _mp3_bitrates(bounds: Range, rate: int) -> list[int]:
    """The MP3 bitrates (kbps) within ``bounds`` that the MPEG layer for ``rate`` allows."""
    lowest, highest = (8, 64) if rate < 16000 else (8, 160) if rate < 32000 else (32, 320)
    return [b for b in MP3_BITRATES if lowest <= b <= highest and bounds[0] <= b <= bounds[1]]


def _num_text(value: float) -> str:
    value = float(value)
    return str(int(value)) if value.is_integer() else repr(value)


def _value_text(value: Any) -> str:
    if isinstance(value, tuple) and value and isinstance(value[0], str):
        return "+".join(value)
    if isinstance(value, tuple):
        return _num_text(value[0]) if value[0] == value[1] else f"{_num_text(value[0])}-{_num_text(value[1])}"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return _num_text(value)
    return str(value)


# --- the chain --------------------------------------------------------------------------------

@dataclass(frozen=True)
class ConditionChain:
    """Steps applied in order, with one seed. The empty chain is the clean condition."""

    steps: tuple[ConditionSpec, ...] = ()
    seed: int = 0
    _built: dict[int, list[_Step]] = field(default_factory=dict, init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ConditionError(f"condition seed must be an int, got {self.seed!r}")
        object.__setattr__(self, "steps", tuple(self.steps))
        if not all(isinstance(s, ConditionSpec) for s in self.steps):
            raise ConditionError("a condition chain holds ConditionSpec steps (see parse_condition)")
        if sum(s.kind == "noise" for s in self.steps) > 1:
            raise ConditionError("a condition chain takes at most one noise step (one --noise source)")

    def __getstate__(self) -> dict[str, Any]:
        """Pickles (DataLoader and Ray workers) carry the spec, not built steps; each worker builds its own."""
        return {**self.__dict__, "_built": {}}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    @classmethod
    def parse(cls, texts: str | list[str] | tuple[str, ...], seed: int = 0, *, noise: str | None = None,
              noise_layout: str | None = None, noise_env: tuple[str, ...] = ()) -> ConditionChain:
        """Steps from ``--condition`` texts (or one text joined by `` > ``). ``noise``/``noise_layout``/``noise_env``
        (``--noise DIR``, ``--noise-env``) fill a noise step that names no source; a noise step without one fails."""
        if isinstance(texts, str):
            texts = [t for t in texts.split(STEP_SEPARATOR.strip())] if texts.strip() not in ("", "clean") else []
        steps = []
        for text in texts:
            spec = parse_condition(text)
            if spec.kind == "noise":
                spec = _bind_noise(spec, noise, noise_layout, noise_env)
            steps.append(spec)
        return cls(tuple(steps), seed)

    @classmethod
    def from_noise(cls, spec: NoiseSpec | None) -> ConditionChain:
        """Today's ``--noise DIR --snr S --noise-seed K`` as a one-step chain (same store key)."""
        if spec is None:
            return cls()
        raw = {"snr": _num_text(spec.snr_db), "source": spec.source, "layout": spec.layout, "channel": spec.channel}
        if spec.environments:
            raw["env"] = "+".join(spec.environments)
        return cls((_make_spec("noise", raw),), spec.seed)

    @property
    def text(self) -> str:
        """Canonical text: the steps' canonical texts joined by `` > `` (``clean`` when empty)."""
        return STEP_SEPARATOR.join(s.text for s in self.steps) if self.steps else "clean"

    @property
    def label(self) -> str:
        """Short text for tables and plots: the canonical text without a noise step's source, layout, channel
        and environments (``reverb:drr=0,rt60=0.3 > noise:snr=5``)."""
        hidden = {"source", "layout", "channel", "env"}
        steps = [ConditionSpec(s.kind, tuple((n, v) for n, v in s.params if s.kind != "noise" or n not in hidden)).text
                 for s in self.steps]
        return STEP_SEPARATOR.join(steps) if steps else "clean"

    def snr_db(self) -> float | None:
        """The SNR of the noise step (None without one)."""
        return next((float(s["snr"]) for s in self.steps if s.kind == "noise"), None)

    def noise_spec(self) -> NoiseSpec | None:
        """The :class:`NoiseSpec` of the noise step (None without one)."""
        for spec in self.steps:
            if spec.kind == "noise":
                return _noise_spec(spec, self.seed)
        return None

    @cached_property
    def fingerprint(self) -> str:
        """sha256 hex over seed, steps, step versions and the noise recordings (not their folder)."""
        steps = []
        for spec in self.steps:
            params = spec.to_dict()["params"]
            if spec.kind == "noise":  # the recordings' fingerprint, wherever the folder lives
                params["source"] = _noise_spec(spec, self.seed).key()
            if spec.kind == "reverb" and spec["ir"]:
                params["ir"] = _impulse_responses(spec)[0]
            steps.append({"kind": spec.kind, "version": _VERSIONS[spec.kind], "params": params})
        body = {"seed": self.seed, "steps": steps}
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()

    @cached_property
    def key(self) -> str:
        """The condition part of a store key: ``clean``; a lone noise step keeps ``noise.condition_key``'s
        key; otherwise the steps' short labels joined by ``__``, then ``-seed<seed>-<fingerprint[:8]>``."""
        if not self.steps:
            return "clean"
        if len(self.steps) == 1 and self.steps[0].kind == "noise":
            return _noise_spec(self.steps[0], self.seed).key()
        labels = [_noise_spec(s, self.seed).key() if s.kind == "noise" else _label(s) for s in self.steps]
        return f"{'__'.join(labels)}-seed{self.seed}-{self.fingerprint[:8]}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; inverse of :meth:`from_dict`."""
        return {"seed": self.seed, "steps": [s.to_dict() for s in self.steps], "text": self.text}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ConditionChain:
        try:
            return cls(tuple(ConditionSpec.from_dict(s) for s in d["steps"]), d["seed"])
        except (KeyError, TypeError):
            raise ConditionError(f"a condition chain dict needs 'steps' and 'seed', got {d!r}") from None

    def describe(self, sample_rate: int) -> dict[str, Any]:
        """Provenance for a store group: the chain, its key and, with a noise step, the noise bank."""
        steps = self.prepare(sample_rate)
        noise = next((s.bank.describe() for s in steps if isinstance(s, _NoiseStep)), None)
        return {**self.to_dict(), "key": self.key, "fingerprint": self.fingerprint, "noise": noise,
                "versions": {s.kind: _VERSIONS[s.kind] for s in self.steps}, "texts": [s.text for s in self.steps]}

    def record_columns(self, sample_rate: int) -> dict[str, tuple[Any, Any]]:
        """``{"<position>.<kind>.<field>": (dtype, empty value)}`` of this chain's records (what
        :func:`records_to_columns` makes of them), from the record of a one-second probe tone: every record
        of a chain has the same fields and types. Empty for the clean chain."""
        t = np.arange(int(sample_rate)) / sample_rate
        probe = (0.1 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32)
        return {name: column_type(value) for name, value in _flat(self.apply(probe, sample_rate, "probe")[1])}

    def prepare(self, sample_rate: int) -> list[_Step]:
        """Build every step for ``sample_rate`` (loads noise recordings, designs filters); ConditionError when
        a step cannot run at that rate. Call before any audio is processed; apply/replay reuse the result."""
        if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
            raise ConditionError(f"sample_rate must be a positive int, got {sample_rate!r}")
        sample_rate = int(sample_rate)
        if sample_rate not in self._built:
            self._built[sample_rate] = [_build(spec, sample_rate, self.seed) for spec in self.steps]
        return self._built[sample_rate]

    def apply(self, wave: np.ndarray, sample_rate: int, utt_id: str) -> tuple[np.ndarray, dict[str, Any]]:
        """Transform one utterance: ``wave`` (n,) float → (float32 (n,), record ``{"steps": [...]}``).

        The record holds, per step, its kind and the values drawn for this utterance (plus a few
        informative numbers such as the achieved SNR); it is JSON-able and a few hundred bytes at most.
        """
        out = _checked_wave(wave, utt_id)
        records = []
        for position, step in enumerate(self.prepare(sample_rate)):
            rng = _rng(self.seed, position, step.kind, utt_id)
            try:
                out, record = step.apply(out, utt_id, rng)
            except NoiseError as exc:
                raise ConditionAudioError(f"{utt_id}: {exc}") from None
            records.append({"kind": step.kind, **record})
        return out, {"steps": records}

    def replay(self, wave: np.ndarray, sample_rate: int, record: dict[str, Any]) -> np.ndarray:
        """Rebuild the output of :meth:`apply` from its record alone (no utterance id, no draws): float32 (n,)."""
        out = _checked_wave(wave, "replay")
        steps = self.prepare(sample_rate)
        kinds = [r.get("kind") for r in record.get("steps", [])] if isinstance(record, dict) else None
        if kinds != [s.kind for s in steps]:
            raise ConditionError(f"record steps {kinds} do not match condition {self.text!r}; "
                                 "replay with the chain that wrote the record")
        for step, step_record in zip(steps, record["steps"]):
            try:
                out = step.replay(out, step_record)
            except NoiseError as exc:
                raise ConditionError(f"replay: {exc}") from None
        return out


def condition_key(chain: ConditionChain | None) -> str:
    """``"clean"`` for None or the empty chain, else ``chain.key``."""
    return "clean" if chain is None else chain.key


def record_json(record: dict[str, Any]) -> str:
    """Compact, key-sorted JSON of a record (what phase 2 stores per utterance)."""
    return json.dumps(record, sort_keys=True, separators=(",", ":"), allow_nan=False)


def records_to_columns(records: list[dict[str, Any] | None]) -> dict[str, np.ndarray]:
    """Records of one chain, one per row (None for a row that has none, e.g. skipped audio), as column arrays
    ``"<position>.<kind>.<field>"`` (n,): float64, int64, bool or str (object); None rows hold NaN, -1,
    False or "". Numbers stay exact, so :func:`columns_to_records` gives back records that replay identically."""
    template = next((r for r in records if r is not None), None)
    if template is None:
        return {}
    columns: dict[str, np.ndarray] = {}
    for key, value in _flat(template):
        dtype, empty = column_type(value)
        column = np.full(len(records), empty, dtype=dtype)
        position, _, name = key.split(".", 2)
        for row, record in enumerate(records):
            if record is not None:
                column[row] = record["steps"][int(position)][name]
        columns[key] = column
    return columns


def column_type(value: Any) -> tuple[Any, Any]:
    """(numpy dtype, empty value) of the column holding record field ``value``: bool/False, int64/-1,
    float64/NaN, else str (object)/""."""
    if isinstance(value, bool):
        return bool, False
    if isinstance(value, int):
        return np.int64, -1
    return (np.float64, np.nan) if isinstance(value, float) else (object, "")


def _flat(record: dict[str, Any]) -> list[tuple[str, Any]]:
    """A record's fields as ``("<position>.<kind>.<field>", value)``, in step then field order."""
    return [(f"{position}.{step['kind']}.{name}", value) for position, step in enumerate(record["steps"])
            for name, value in step.items() if name != "kind"]


def columns_to_records(columns: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """Inverse of :func:`records_to_columns`: one record per row (rows that had none come back filled)."""
    steps: dict[int, tuple[str, dict[str, np.ndarray]]] = {}
    for key, column in columns.items():
        position, kind, name = key.split(".", 2)
        steps.setdefault(int(position), (kind, {}))[1][name] = column
    n = len(next(iter(columns.values()))) if columns else 0
    return [{"steps": [{"kind": kind, **{name: column[row].item() if isinstance(column[row], np.generic) else column[row]
                                        for name, column in fields.items()}}
                       for _, (kind, fields) in sorted(steps.items())]} for row in range(n)]


def _bind_noise(spec: ConditionSpec, noise: str | None, layout: str | None, env: tuple[str, ...]) -> ConditionSpec:
    raw = {name: _value_text(v) for name, v in spec.params if v not in (None, "", ())}
    if not raw.get("source"):
        if not noise:
            raise ConditionError(f"condition {spec.text!r} needs a noise source: --noise DIR or noise:source=DIR")
        raw["source"] = str(noise)
    if layout and "layout" in raw and raw["layout"] == "auto":
        raw["layout"] = layout
    if env and "env" not in raw:
        raw["env"] = "+".join(env)
    return _make_spec("noise", raw)


def _noise_spec(spec: ConditionSpec, seed: int) -> NoiseSpec:
    if not spec["source"]:
        raise ConditionError(f"condition {spec.text!r} needs a noise source: --noise DIR or noise:source=DIR")
    try:
        return NoiseSpec(spec["source"], spec["snr"], seed, spec["layout"], spec["env"], spec["channel"])
    except NoiseError as exc:
        raise ConditionError(str(exc)) from None


def _label(spec: ConditionSpec) -> str:
    """Short store-safe label of a non-noise step: ``reverb-drr_0-rt60_0.3-0.9``; recorded impulse responses
    by folder name and content fingerprint, ``reverb-ir_rooms-1a2b3c4d``."""
    if spec.kind == "reverb" and spec["ir"]:
        fingerprint = _impulse_responses(spec)[0]
        return re.sub(r"[^A-Za-z0-9._-]+", "-", f"reverb-ir_{Path(spec['ir']).stem[:40]}-{fingerprint[:8]}")
    parts = [f"{name}_{_value_text(v)}" for name, v in spec.params if v not in (None, "", ())]
    return re.sub(r"[^A-Za-z0-9._-]+", "-", "-".join([spec.kind, *parts]))


def _rng(seed: int, position: int, kind: str, utt_id: str) -> np.random.Generator:
    digest = hashlib.sha256(f"{seed}:{position}:{kind}:{utt_id}".encode()).digest()
    return np.random.Generator(np.random.PCG64(int.from_bytes(digest[:16], "big")))


def _uniform(rng: np.random.Generator, bounds: Range) -> float:
    """A value drawn uniformly in ``bounds``; exactly the value when the range is one point."""
    lo, hi = bounds
    return float(lo) if lo == hi else float(rng.uniform(lo, hi))


def _checked_wave(wave: np.ndarray, utt_id: str) -> np.ndarray:
    x = np.asarray(wave, dtype=np.float32)
    if x.ndim != 1 or x.size == 0:
        raise ConditionAudioError(f"{utt_id}: expected a non-empty mono 1-D wave, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ConditionAudioError(f"{utt_id}: wave contains NaN or infinite samples")
    return x


def _fit(wave: np.ndarray) -> tuple[np.ndarray, float]:
    """float64 (n,) → float32 (n,) scaled by ``1/peak`` when its peak exceeds 1; and that factor."""
    peak = float(np.max(np.abs(wave))) if wave.size else 0.0
    gain = 1.0 / peak if peak > 1.0 else 1.0
    return (wave * gain).astype(np.float32), gain


# --- steps ------------------------------------------------------------------------------------

class _Step:
    """A step built for one sample rate. ``drawn`` names the record fields replay reads."""

    kind = ""
    drawn: tuple[str, ...] = ()

    def __init__(self, spec: ConditionSpec, sample_rate: int) -> None:
        self.spec, self.sample_rate = spec, sample_rate

    def draw(self, rng: np.random.Generator) -> dict[str, Any]:
        """The per-utterance values (JSON scalars) from this utterance's generator."""
        return {}

    def render(self, wave: np.ndarray, drawn: dict[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
        """float32 (n,) → (float32 (n,), informative record fields); depends only on ``wave`` and ``drawn``."""
        raise NotImplementedError

    def apply(self, wave: np.ndarray, utt_id: str, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
        drawn = self.draw(rng)
        out, info = self.render(wave, drawn)
        return out, {**drawn, **info}

    def replay(self, wave: np.ndarray, record: dict[str, Any]) -> np.ndarray:
        missing = [name for name in self.drawn if name not in record]
        if missing:
            raise ConditionError(f"{self.kind} record lacks {missing}; it was not written by this condition")
        return self.render(wave, {name: record[name] for name in self.drawn})[0]


class _NoiseStep(_Step):
    kind = "noise"

    def __init__(self, spec: ConditionSpec, sample_rate: int, seed: int) -> None:
        super().__init__(spec, sample_rate)
        try:
            self.bank = NoiseBank(_noise_spec(spec, seed), sample_rate)
        except NoiseError as exc:
            raise ConditionError(str(exc)) from None

    def apply(self, wave: np.ndarray, utt_id: str, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
        return self.bank.mix(wave, utt_id)

    def replay(self, wave: np.ndarray, record: dict[str, Any]) -> np.ndarray:
        return self.bank.replay(wave, record)


class _ReverbStep(_Step):
    kind = "reverb"
    drawn = ("rt60", "drr_db", "ir_seed")

    def draw(self, rng: np.random.Generator) -> dict[str, Any]:
        return {"rt60": _uniform(rng, self.spec["rt60"]), "drr_db": _uniform(rng, self.spec["drr"]),
                "ir_seed": int(rng.integers(0, 2**63 - 1))}

    def render(self, wave: np.ndarray, drawn: dict[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
        from scipy.signal import oaconvolve

        ir = synthetic_rir(float(drawn["rt60"]), float(drawn["drr_db"]), self.sample_rate, int(drawn["ir_seed"]))
        out, gain = _fit(oaconvolve(wave.astype(np.float64), ir)[: wave.size])
        return out, {"output_gain": gain}


def synthetic_rir(rt60: float, drr_db: float, sample_rate: int, seed: int) -> np.ndarray:
    """A room impulse response, float64 (ceil(rt60 * sample_rate),), unit energy: a direct-path impulse
    then a Gaussian tail whose amplitude falls 60 dB in ``rt60`` seconds, with tail energy
    ``10**(-drr_db/10)`` times the direct path's."""
    n = max(2, math.ceil(rt60 * sample_rate))
    tail = np.random.Generator(np.random.PCG64(seed)).standard_normal(n)
    tail *= np.exp(-3.0 * math.log(10.0) * np.arange(n) / (rt60 * sample_rate))
    tail[0] = 0.0
    tail *= math.sqrt(10.0 ** (-drr_db / 10.0) / float(np.sum(tail**2)))
    tail[0] = 1.0
    return tail / math.sqrt(float(np.sum(tail**2)))


class _TelephoneStep(_Step):
    kind = "telephone"
    drawn = ("bitrate",)

    def __init__(self, spec: ConditionSpec, sample_rate: int) -> None:
        from scipy.signal import butter

        super().__init__(spec, sample_rate)
        self.rate = spec["rate"]
        if self.rate > sample_rate:
            raise ConditionError(f"condition {spec.text!r}: rate={self.rate} is above the audio's sample rate "
                                 f"{sample_rate} Hz; use rate={sample_rate} or lower")
        self.sos = butter(TELEPHONE_ORDER // 2, spec["band"], btype="bandpass", fs=self.rate, output="sos")
        self.bitrates = _mp3_bitrates(spec["bitrate"], self.rate) if spec["codec"] == "mp3" else []

    def draw(self, rng: np.random.Generator) -> dict[str, Any]:
        return {"bitrate": int(self.bitrates[rng.integers(len(self.bitrates))]) if self.bitrates else 0}

    def render(self, wave: np.ndarray, drawn: dict[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
        import soxr
        from scipy.signal import sosfiltfilt

        narrow = soxr.resample(wave, self.sample_rate, self.rate) if self.rate != self.sample_rate else wave
        if narrow.size < 2:  # no band fits in under two samples
            filtered = np.zeros(narrow.size)
        else:
            padlen = min(3 * (2 * len(self.sos) + 1), narrow.size - 1)  # scipy's default, shortened for tiny waves
            filtered = sosfiltfilt(self.sos, narrow.astype(np.float64), padlen=padlen)
        narrow, gain = _fit(filtered)
        if drawn["bitrate"]:
            narrow = _mp3_round_trip(narrow, self.rate, int(drawn["bitrate"]))
        wide = soxr.resample(narrow, self.rate, self.sample_rate) if self.rate != self.sample_rate else narrow
        wide = np.pad(wide[: wave.size], (0, max(0, wave.size - wide.size)))
        out, gain_after = _fit(wide.astype(np.float64))
        return out, {"output_gain": gain * gain_after}


def _mp3_round_trip(wave: np.ndarray, sample_rate: int, bitrate: int) -> np.ndarray:
    """Encode and decode float32 (n,) as MP3 at ``bitrate`` kbps (audiomentations, frozen parameters).
    Waves under the encoder's 100 ms minimum are padded with silence for the round trip, then cut back."""
    from audiomentations import Mp3Compression

    codec = Mp3Compression(min_bitrate=bitrate, max_bitrate=bitrate, backend="fast-mp3-augment", p=1.0)
    codec.parameters = {"should_apply": True, "bitrate": bitrate}
    codec.freeze_parameters()
    padded = np.zeros(max(wave.size, math.ceil(sample_rate / 10)), np.float32)
    padded[: wave.size] = wave
    try:
        return codec(padded, sample_rate)[: wave.size]
    except ImportError:
        raise ConditionError("telephone codec=mp3 needs fast-mp3-augment: pip install fast-mp3-augment") from None


class _GainStep(_Step):
    kind = "gain"
    drawn = ("db",)

    def draw(self, rng: np.random.Generator) -> dict[str, Any]:
        return {"db": _uniform(rng, self.spec["db"])}

    def render(self, wave: np.ndarray, drawn: dict[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
        return (wave.astype(np.float64) * 10.0 ** (float(drawn["db"]) / 20.0)).astype(np.float32), {}


class _ClippingStep(_Step):
    kind = "clipping"
    drawn = ("percent",)

    def draw(self, rng: np.random.Generator) -> dict[str, Any]:
        return {"percent": _uniform(rng, self.spec["percent"])}

    def render(self, wave: np.ndarray, drawn: dict[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
        threshold = clipping_threshold(wave, float(drawn["percent"]))
        return np.clip(wave, -threshold, threshold), {"threshold": float(threshold)}


def clipping_threshold(wave: np.ndarray, percent: float) -> np.float32:
    """The level (float32) above which ``percent`` % of ``|wave|`` lies: the ``1 - percent/100`` quantile."""
    return np.float32(np.quantile(np.abs(wave.astype(np.float64)), 1.0 - percent / 100.0))


class _ImpulseResponseStep(_Step):
    kind = "reverb"
    drawn = ("ir",)

    def __init__(self, spec: ConditionSpec, sample_rate: int) -> None:
        from audiomentations import ApplyImpulseResponse

        super().__init__(spec, sample_rate)
        self.fingerprint, self.files = _impulse_responses(spec)
        self.transform = ApplyImpulseResponse([str(p) for p in self.files.values()], p=1.0, leave_length_unchanged=True)

    def draw(self, rng: np.random.Generator) -> dict[str, Any]:
        return {"ir": sorted(self.files)[int(rng.integers(len(self.files)))]}

    def render(self, wave: np.ndarray, drawn: dict[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
        if drawn["ir"] not in self.files:
            raise ConditionError(f"reverb record names impulse response {drawn['ir']!r}, which is not in "
                                 f"{self.spec['ir']}; available: {sorted(self.files)}")
        self.transform.parameters = {"should_apply": True, "ir_file_path": str(self.files[drawn["ir"]])}
        self.transform.freeze_parameters()
        return np.asarray(self.transform(wave, self.sample_rate), dtype=np.float32), {}


def _impulse_responses(spec: ConditionSpec) -> tuple[str, dict[str, Path]]:
    """(content fingerprint, {relative name: path}) of the impulse-response files of ``reverb:ir=PATH``."""
    from audiomentations.core.utils import find_audio_files_in_paths

    root = Path(spec["ir"]).expanduser().resolve()
    if not root.exists():
        raise ConditionError(f"impulse responses not found: {root} (reverb:ir= takes an audio file or a folder)")
    found = sorted(Path(f).resolve() for f in find_audio_files_in_paths(root))
    files = {(p.relative_to(root).as_posix() if root.is_dir() else p.name): p for p in found}
    if not files:
        raise ConditionError(f"no audio files under {root} for reverb:ir= (wav, flac, ...)")
    return fingerprint_files(sorted(files.items()))[0], files


def _build(spec: ConditionSpec, sample_rate: int, seed: int) -> _Step:
    if spec.kind == "noise":
        return _NoiseStep(spec, sample_rate, seed)
    if spec.kind == "reverb" and spec["ir"]:
        return _ImpulseResponseStep(spec, sample_rate)
    return {"reverb": _ReverbStep, "telephone": _TelephoneStep, "gain": _GainStep, "clipping": _ClippingStep}[spec.kind](
        spec, sample_rate)
