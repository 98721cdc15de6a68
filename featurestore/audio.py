"""Audio in: read, downmix to mono, resample with soxr (a proper band-limited resampler)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from featurestore.errors import FsError


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


def resample(wave: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resample a mono float32 waveform; identity when the rates agree."""
    if orig_sr == target_sr:
        return wave.astype(np.float32, copy=False)
    return soxr.resample(wave, orig_sr, target_sr, quality="HQ").astype(np.float32, copy=False)


def load_audio(path: str | Path, target_sr: int | None = None) -> tuple[np.ndarray, int]:
    """Load ``path`` as mono float32 in [-1, 1], resampled to ``target_sr`` when given.

    Returns ``(wave, sample_rate)``. Raises AudioError for missing, corrupt or empty audio.
    """
    path = Path(path)
    audio_info(path)
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:
        raise AudioError(f"{path}: cannot decode audio ({exc})") from None
    if data.shape[0] == 0:
        raise AudioError(f"{path}: audio has no samples")
    wave = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if not np.all(np.isfinite(wave)):
        raise AudioError(f"{path}: audio contains NaN or infinite samples")
    if target_sr is not None:
        wave = resample(wave, sr, target_sr)
        sr = target_sr
    return np.ascontiguousarray(wave, dtype=np.float32), int(sr)
