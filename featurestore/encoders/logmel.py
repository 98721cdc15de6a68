"""Parameter-free log-mel front end (input of the CNN-LSTM baseline).

16 kHz, 25 ms Hann window (n_fft 400), 10 ms hop, no centring, power spectrum, Slaney mel filters
0-8 kHz, ``log(mel + 1e-6)``. Without centring every frame lies inside the real samples, so batched
and one-at-a-time output agree exactly. One "layer" of ``n_mels`` dims.
"""

from __future__ import annotations

import numpy as np
import torch
from transformers.audio_utils import mel_filter_bank

from .base import EncoderInfo
from .common import LoadOptions, SegmentEncoder, chunk_samples, pad_frames

FAMILY = "logmel"
SAMPLE_RATE = 16000
WIN = 400
HOP = 160
LOG_OFFSET = 1e-6


class LogMelEncoder(SegmentEncoder):
    """Log-mel filterbank frames as a single-layer encoder."""

    def __init__(self, opts: LoadOptions, *, n_mels: int = 64, model_id: str = "builtin:logmel"):
        self.device = opts.device
        self.n_mels = int(n_mels)
        filters = mel_filter_bank(num_frequency_bins=WIN // 2 + 1, num_mel_filters=self.n_mels,
                                  min_frequency=0.0, max_frequency=SAMPLE_RATE / 2,
                                  sampling_rate=SAMPLE_RATE, norm="slaney", mel_scale="slaney")
        self.filters = torch.as_tensor(filters, dtype=torch.float32, device=self.device)
        self.window = torch.hann_window(WIN, device=self.device)
        self.min_samples = WIN
        self.chunk_samples = chunk_samples(opts.chunk_seconds, SAMPLE_RATE)
        settings = {"n_mels": self.n_mels, "n_fft": WIN, "win_length": WIN, "hop_length": HOP,
                    "window": "hann", "center": False, "fmin": 0.0, "fmax": SAMPLE_RATE / 2,
                    "mel_scale": "slaney", "mel_norm": "slaney", "power": 2.0, "log_offset": LOG_OFFSET,
                    "min_samples": WIN, "chunk_seconds": opts.chunk_seconds, "dtype": "float32"}
        self.info = EncoderInfo(
            name=opts.name, model_id=model_id, family=FAMILY, sample_rate=SAMPLE_RATE, num_layers=1,
            dim=self.n_mels, frame_rate=SAMPLE_RATE / HOP, weights_hash="none", pretrained=False,
            settings=settings)

    def _segment_frames(self, num_samples: int) -> int:
        return 1 + (num_samples - WIN) // HOP

    def _embed_segments(self, segments: list[np.ndarray]) -> torch.Tensor:
        waves = pad_frames([torch.as_tensor(np.ascontiguousarray(s), device=self.device) for s in segments])
        with torch.autocast(self.device.type, enabled=False):
            stft = torch.stft(waves, WIN, HOP, window=self.window, center=False, return_complex=True)
            mel = self.filters.T @ (stft.abs() ** 2)
            return torch.log(mel + LOG_OFFSET).transpose(1, 2)[None]


def build(opts: LoadOptions) -> LogMelEncoder:
    """The log-mel front end with ``opts.defaults['n_mels']`` bins (64 unless the entry says)."""
    return LogMelEncoder(opts, n_mels=int(opts.defaults.get("n_mels", 64)),
                         model_id=f"builtin:{opts.name}")
