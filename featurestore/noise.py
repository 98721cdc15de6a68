"""Noise-mixed conditions: seeded, deterministic, serialisable, exact-SNR additive noise.

A :class:`NoiseSpec` names a condition (noise source, SNR, seed); a :class:`NoiseBank` loads its
recordings and mixes them into utterances. The choice of recording and offset depends only on
``sha256(f"{seed}:{utt_id}")``, so results do not depend on call order, process or batch.
The clean condition is ``None``; :func:`condition_key` maps it to ``"clean"``.
"""

from __future__ import annotations

import functools
import hashlib
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from audiomentations.core.utils import calculate_desired_noise_rms, calculate_rms

from featurestore.audio import AudioError, load_audio
from featurestore.errors import FsError

LAYOUTS = ("auto", "folder", "demand", "file")
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".aif", ".aiff")
_DEMAND_CHANNEL = re.compile(r"ch\d\d\.wav")
_MAX_DRAWS = 16  # redraws when a chosen noise window is all zeros


class NoiseError(FsError, ValueError):
    """A noise condition that cannot be built or applied."""


@dataclass(frozen=True)
class NoiseSpec:
    """A noise condition: where the noise comes from, at what SNR, with which seed."""

    source: str
    snr_db: float
    seed: int = 0
    layout: str = "auto"
    environments: tuple[str, ...] = field(default=())
    channel: str = "ch01"

    def __post_init__(self) -> None:
        if isinstance(self.snr_db, bool) or not isinstance(self.snr_db, (int, float)):
            raise NoiseError(f"snr_db must be a number, got {self.snr_db!r}")
        if not math.isfinite(self.snr_db):
            raise NoiseError(f"snr_db must be finite, got {self.snr_db!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise NoiseError(f"seed must be an int, got {self.seed!r}")
        if self.layout not in LAYOUTS:
            raise NoiseError(f"unknown layout {self.layout!r}; expected one of {LAYOUTS}")
        if isinstance(self.environments, str):
            raise NoiseError("environments must be a sequence of names, not a string")
        object.__setattr__(self, "source", str(self.source))
        object.__setattr__(self, "snr_db", float(self.snr_db))
        object.__setattr__(self, "environments", tuple(str(e) for e in self.environments))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; inverse of :meth:`from_dict`."""
        d = asdict(self)
        d["environments"] = list(self.environments)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NoiseSpec:
        """Rebuild a spec from :meth:`to_dict` output."""
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise NoiseError(f"unknown NoiseSpec fields: {sorted(unknown)}")
        try:
            return cls(**{**d, "environments": tuple(d.get("environments", ()))})
        except TypeError as exc:
            raise NoiseError(f"incomplete NoiseSpec dict: {exc}") from None

    def key(self) -> str:
        """Condition key ``noise-<source>-<fp8>-snr<snr>-seed<seed>`` (hashes the recordings)."""
        layout, root, recs = _resolve(self)
        return _format_key(self, _source_name(root, layout), _fingerprint(recs)[0])


def condition_key(spec: NoiseSpec | None) -> str:
    """``"clean"`` for None, else ``spec.key()``."""
    return "clean" if spec is None else spec.key()


def achieved_snr(speech: np.ndarray, noise: np.ndarray) -> float:
    """SNR in dB between a speech component and a noise component (float64 RMS)."""
    s = calculate_rms(np.asarray(speech, dtype=np.float64))
    n = calculate_rms(np.asarray(noise, dtype=np.float64))
    if n == 0:
        return math.inf
    if s == 0:
        return -math.inf
    return float(20.0 * math.log10(s / n))


class NoiseBank:
    """The recordings of a :class:`NoiseSpec`, loaded mono at ``sample_rate``, ready to mix."""

    def __init__(self, spec: NoiseSpec, sample_rate: int) -> None:
        if int(sample_rate) <= 0:
            raise NoiseError(f"sample_rate must be positive, got {sample_rate!r}")
        self.spec = spec
        self.sample_rate = int(sample_rate)
        self.layout, self.root, recs = _resolve(spec)
        self._fingerprint, self._entries = _fingerprint(recs)
        self.names = [name for name, _ in recs]
        self._waves: list[np.ndarray] = []
        for name, path in recs:
            try:
                wave, _ = load_audio(path, self.sample_rate)
            except AudioError as exc:
                raise NoiseError(f"noise recording {name} is unusable: {exc}") from None
            if not np.any(wave):
                raise NoiseError(f"noise recording {name} is silent (all zeros)")
            self._waves.append(wave.astype(np.float64))

    @property
    def fingerprint(self) -> str:
        """sha256 hex over the recordings' relative names, sizes and content hashes."""
        return self._fingerprint

    @property
    def key(self) -> str:
        """Same as ``spec.key()``, without re-hashing the files."""
        return _format_key(self.spec, _source_name(self.root, self.layout), self._fingerprint)

    def describe(self) -> dict[str, Any]:
        """Provenance for the store: spec, resolved layout, recordings and fingerprint."""
        recordings = [
            {**entry, "seconds": len(w) / self.sample_rate}
            for entry, w in zip(self._entries, self._waves)
        ]
        return {"spec": self.spec.to_dict(), "key": self.key, "layout": self.layout,
                "sample_rate": self.sample_rate, "fingerprint": self._fingerprint,
                "recordings": recordings}

    def mix(self, wave: np.ndarray, utt_id: str) -> tuple[np.ndarray, dict[str, Any]]:
        """Add noise at exactly ``spec.snr_db`` over the whole utterance.

        Returns the noisy float32 wave and details: recording, offset (samples), noise_gain
        (total factor on the raw noise), output_gain (common factor on speech and noise, < 1
        only when the mix would leave [-1, 1]), tiled, draw, snr_db (achieved).
        """
        speech = np.asarray(wave, dtype=np.float64)
        if speech.ndim != 1 or speech.size == 0:
            raise NoiseError(f"{utt_id}: expected a non-empty mono 1-D wave, got {speech.shape}")
        if not np.all(np.isfinite(speech)):
            raise NoiseError(f"{utt_id}: wave contains NaN or infinite samples")
        speech_rms = calculate_rms(speech)
        if speech_rms == 0:
            raise NoiseError(f"{utt_id}: speech is silent (all zeros); SNR is undefined")

        for draw in range(_MAX_DRAWS):
            index, offset = self._draw(utt_id, draw)
            rec = self._waves[index]
            segment = rec[(offset + np.arange(speech.size)) % rec.size]
            noise_rms = calculate_rms(segment)
            if noise_rms > 0:
                break
        else:
            raise NoiseError(f"{utt_id}: every drawn noise window was all zeros")
        return self._mix_window(speech, speech_rms, index, offset, draw)

    def replay(self, wave: np.ndarray, details: dict[str, Any]) -> np.ndarray:
        """The noisy float32 wave that :meth:`mix` gave for ``details`` (its recording, offset and draw),
        rebuilt from the record alone: bit for bit the same as the original mix of ``wave``."""
        speech = np.asarray(wave, dtype=np.float64)
        if speech.ndim != 1 or speech.size == 0 or not np.all(np.isfinite(speech)):
            raise NoiseError(f"replay needs a non-empty, finite mono 1-D wave, got shape {speech.shape}")
        speech_rms = calculate_rms(speech)
        if speech_rms == 0:
            raise NoiseError("replay: speech is silent (all zeros); SNR is undefined")
        if details.get("recording") not in self.names:
            raise NoiseError(f"noise record names recording {details.get('recording')!r}, which is not in "
                             f"{self.key}; available: {self.names}")
        index = self.names.index(details["recording"])
        offset = int(details["offset"])
        if not 0 <= offset < self._waves[index].size:
            raise NoiseError(f"noise record offset {offset} is outside recording {details['recording']!r}")
        return self._mix_window(speech, speech_rms, index, offset, int(details.get("draw", 0)))[0]

    def _mix_window(self, speech: np.ndarray, speech_rms: float, index: int, offset: int,
                    draw: int) -> tuple[np.ndarray, dict[str, Any]]:
        """Mix the window of recording ``index`` starting at ``offset`` into float64 ``speech`` (n,)."""
        rec = self._waves[index]
        segment = rec[(offset + np.arange(speech.size)) % rec.size]
        noise_rms = calculate_rms(segment)
        if noise_rms == 0:
            raise NoiseError(f"noise window at offset {offset} of {self.names[index]} is all zeros")
        gain = calculate_desired_noise_rms(speech_rms, self.spec.snr_db) / noise_rms
        noise = segment * gain
        peak = float(np.max(np.abs(speech + noise)))
        output_gain = 1.0 / peak if peak > 1.0 else 1.0
        speech, noise = speech * output_gain, noise * output_gain
        details = {
            "recording": self.names[index],
            "offset": int(offset),
            "noise_gain": float(gain * output_gain),
            "output_gain": float(output_gain),
            "tiled": bool(offset + speech.size > rec.size),
            "draw": draw,
            "snr_db": achieved_snr(speech, noise),
        }
        return (speech + noise).astype(np.float32), details

    def _draw(self, utt_id: str, draw: int) -> tuple[int, int]:
        text = f"{self.spec.seed}:{utt_id}" if draw == 0 else f"{self.spec.seed}:{utt_id}:{draw}"
        h = hashlib.sha256(text.encode("utf-8")).digest()
        index = int.from_bytes(h[:8], "big") % len(self._waves)
        return index, int.from_bytes(h[8:16], "big") % self._waves[index].size


def _resolve(spec: NoiseSpec) -> tuple[str, Path, list[tuple[str, Path]]]:
    """(layout, root, sorted [(relative name, path)]) for a spec; NoiseError when unusable."""
    root = Path(spec.source).expanduser()
    if not root.exists():
        raise NoiseError(f"noise source not found: {root}")
    layout = spec.layout
    if layout == "auto":
        layout = "file" if root.is_file() else "demand" if _is_demand(root) else "folder"
    if layout == "file":
        if not root.is_file():
            raise NoiseError(f"noise source {root} is not a file (layout 'file')")
        recs = {root.stem: (root.name, root)}
    else:
        if not root.is_dir():
            raise NoiseError(f"noise source {root} is not a folder (layout {layout!r})")
        if not any(root.iterdir()):
            raise NoiseError(f"noise folder {root} is empty")
        if layout == "demand":
            recs = {d.name: (f"{d.name}/{spec.channel}.wav", d / f"{spec.channel}.wav")
                    for d in root.iterdir() if d.is_dir() and (d / f"{spec.channel}.wav").is_file()}
        else:
            files = sorted(p for p in root.iterdir() if p.is_file() and not p.name.startswith(".")
                           and p.suffix.lower() in AUDIO_SUFFIXES)
            recs = {p.stem: (p.name, p) for p in files}
            if len(recs) < len(files):
                raise NoiseError(f"noise files in {root} share a name stem; keep one per stem")
    if not recs:
        what = f"environments with {spec.channel}.wav" if layout == "demand" else "audio files"
        raise NoiseError(f"no usable noise recordings in {root} (no {what})")
    if spec.environments:
        unknown = sorted(set(spec.environments) - set(recs))
        if unknown:
            raise NoiseError(f"unknown noise environments {unknown} in {root}; "
                             f"available: {sorted(recs)}")
        recs = {k: v for k, v in recs.items() if k in spec.environments}
    return layout, root, [recs[k] for k in sorted(recs)]


def _is_demand(root: Path) -> bool:
    """A DEMAND root: subfolders holding chNN.wav files."""
    return root.is_dir() and any(
        d.is_dir() and any(_DEMAND_CHANNEL.fullmatch(p.name) for p in d.iterdir())
        for d in root.iterdir())


def recordings_fingerprint(source: str | Path, *, layout: str = "auto", environments: tuple[str, ...] = (),
                           channel: str = "ch01") -> str:
    """The fingerprint (sha256 hex) of the recordings a noise condition on ``source`` would mix, read
    with ``layout``/``environments``/``channel``: what a store query for noise folder ``source`` compares
    with each group's recorded fingerprint (the part of the condition key that names the content).
    Hashes are cached per (path, size, mtime) of each file, so repeated queries do not re-read the folder."""
    _, _, recs = _resolve(NoiseSpec(str(source), 0.0, layout=layout, environments=tuple(environments), channel=channel))
    stamp = tuple((name, str(path.resolve()), path.stat().st_size, path.stat().st_mtime_ns) for name, path in recs)
    return _cached_fingerprint(stamp)


@functools.lru_cache(maxsize=64)
def _cached_fingerprint(stamp: tuple[tuple[str, str, int, int], ...]) -> str:
    return _fingerprint([(name, Path(path)) for name, path, _, _ in stamp])[0]


def fingerprint_files(recs: list[tuple[str, Path]]) -> tuple[str, list[dict[str, Any]]]:
    """Combined sha256 hex over ``[(relative name, path)]`` and per-file entries (name, bytes, sha256):
    the content fingerprint that noise keys use, for other recorded inputs (impulse responses)."""
    return _fingerprint(recs)


def _fingerprint(recs: list[tuple[str, Path]]) -> tuple[str, list[dict[str, Any]]]:
    """Combined sha256 hex and per-recording entries (name, bytes, sha256)."""
    entries, total = [], hashlib.sha256()
    for name, path in recs:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        entry = {"name": name, "bytes": path.stat().st_size, "sha256": h.hexdigest()}
        entries.append(entry)
        total.update(f"{name}\t{entry['bytes']}\t{entry['sha256']}\n".encode())
    return total.hexdigest(), entries


def _source_name(root: Path, layout: str) -> str:
    name = root.stem if layout == "file" else root.resolve().name
    return (re.sub(r"[^a-z0-9_.-]+", "_", name.lower()).strip("._") or "source")[:40]


def _format_key(spec: NoiseSpec, source_name: str, fingerprint: str) -> str:
    snr = spec.snr_db
    snr_text = str(int(snr)) if snr.is_integer() else repr(snr)
    return f"noise-{source_name}-{fingerprint[:8]}-snr{snr_text}-seed{spec.seed}"
