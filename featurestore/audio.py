"""Audio in: read, downmix to mono, resample with soxr (a proper band-limited resampler).

The header and plausibility checks ``fs corpus add`` runs (:func:`audio_info`, :func:`check_audio`)
live one floor down in :mod:`data_manifests.audio`; they are re-exported here.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from data_manifests.audio import AudioCheck, AudioError, AudioInfo, audio_info, check_audio

__all__ = ["AudioCheck", "AudioError", "AudioInfo", "audio_info", "check_audio", "decode_audio", "load_audio",
           "resample"]


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
    return decode_audio(path.read_bytes(), path, target_sr)


def decode_audio(raw: bytes, path: str | Path, target_sr: int | None = None) -> tuple[np.ndarray, int]:
    """Decode the bytes ``raw`` of file ``path`` (named in errors) like :func:`load_audio`."""
    try:
        data, sr = sf.read(io.BytesIO(raw), dtype="float32", always_2d=True)
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
