"""What ``fs corpus add`` reads from an audio file: its header facts, content hash and doubts.

Decoding for extraction (downmix, resampling) is :mod:`featurestore.audio`, which builds on this.
"""

from __future__ import annotations

import hashlib
import io
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from data_manifests.errors import FsError

MIN_PLAUSIBLE_SECONDS = 0.1
SILENCE_PEAK = 1e-4


class AudioError(FsError, ValueError):
    """An audio file that cannot be used: unreadable, corrupt or empty."""


@dataclass(frozen=True)
class AudioInfo:
    duration: float
    sample_rate: int
    channels: int
    frames: int


def audio_info(path: str | Path) -> AudioInfo:
    """Read duration, rate and channels from the file header; raise AudioError when unusable."""
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: zero-length file")
    try:
        info = sf.info(str(path))
    except Exception as exc:  # soundfile raises several types for bad headers
        raise AudioError(f"{path}: unreadable audio ({exc})") from None
    if info.frames <= 0:
        raise AudioError(f"{path}: audio has no samples")
    return AudioInfo(duration=info.frames / info.samplerate, sample_rate=int(info.samplerate),
                     channels=int(info.channels), frames=int(info.frames))


@dataclass(frozen=True)
class AudioCheck:
    """What ``fs corpus add`` learns from reading a file whole: its header, content hash and doubts."""

    info: AudioInfo
    sha256: str  # of the file's bytes: the identity extraction results are keyed on
    problems: list[str] = field(default_factory=list)  # implausible but decodable (truncated, tiny, silent)


def check_audio(path: str | Path) -> AudioCheck:
    """Read ``path`` whole: hash its bytes, decode it and look for implausible audio.

    Raises AudioError for unusable audio (unreadable, empty, NaN/inf samples). Returns the
    problems of audio that decodes but is implausible: a WAV whose data chunk is shorter than its
    header says (truncated copy), a clip shorter than 100 ms, or silence.
    """
    path = Path(path)
    info = audio_info(path)
    raw = path.read_bytes()
    problems = []
    declared = wav_declared_bytes(raw)
    if declared is not None and declared[0] > declared[1]:
        problems.append(f"truncated: the WAV header declares {declared[0]} data bytes, the file holds {declared[1]}")
    try:
        data, _ = sf.read(io.BytesIO(raw), dtype="float32", always_2d=True)
    except Exception as exc:
        raise AudioError(f"{path}: cannot decode audio ({exc})") from None
    if not np.all(np.isfinite(data)):
        raise AudioError(f"{path}: audio contains NaN or infinite samples")
    if info.duration < MIN_PLAUSIBLE_SECONDS:
        problems.append(f"implausibly short: {info.duration * 1000:.1f} ms")
    if data.size and float(np.abs(data).max()) < SILENCE_PEAK:
        problems.append("silent: peak amplitude below 1e-4")
    return AudioCheck(info=info, sha256=hashlib.sha256(raw).hexdigest(), problems=problems)


def wav_declared_bytes(raw: bytes) -> tuple[int, int] | None:
    """(declared, available) bytes of a RIFF/WAVE file's data chunk; None for other formats."""
    if len(raw) < 12 or raw[:4] != b"RIFF" or raw[8:12] != b"WAVE":
        return None
    pos = 12
    while pos + 8 <= len(raw):
        chunk_id, size = raw[pos:pos + 4], struct.unpack("<I", raw[pos + 4:pos + 8])[0]
        if chunk_id == b"data":
            return size, len(raw) - pos - 8
        pos += 8 + size + (size & 1)
    return None
