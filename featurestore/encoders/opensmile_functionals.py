"""The hand-crafted baselines the SER field expects: openSMILE functionals (eGeMAPS, ComParE).

One "layer" of functionals per utterance (88 dims for eGeMAPSv02, 6373 for ComParE_2016), computed
by the ``opensmile`` package (its binary ships in the wheel) at 16 kHz. Each segment yields one
frame, so the store's mean over frames is the functionals themselves (the mean over segments when
``--chunk-seconds`` cuts long audio) and the std is zero. Segments shorter than 0.1 s are
zero-padded (openSMILE fills NaN below that).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .base import EncoderError, EncoderInfo
from .common import LoadOptions, SegmentEncoder, chunk_samples

FAMILY = "opensmile"
SAMPLE_RATE = 16000
MIN_SAMPLES = SAMPLE_RATE // 10
FEATURE_SETS = {"egemaps": "eGeMAPSv02", "compare": "ComParE_2016"}


def _smile(feature_set: str) -> Any:
    try:
        import opensmile
    except ImportError:
        raise EncoderError("the openSMILE baselines need the opensmile package: "
                           "pip install 'fs-ser[opensmile]' (or pip install opensmile)") from None
    return opensmile.Smile(feature_set=getattr(opensmile.FeatureSet, feature_set),
                           feature_level=opensmile.FeatureLevel.Functionals), opensmile.__version__


class OpenSmileEncoder(SegmentEncoder):
    """openSMILE functionals as a single-layer, one-frame-per-segment encoder."""

    def __init__(self, opts: LoadOptions, *, feature_set: str, model_id: str):
        self.device = opts.device
        self.smile, version = _smile(feature_set)
        self.min_samples = MIN_SAMPLES
        self.chunk_samples = chunk_samples(opts.chunk_seconds, SAMPLE_RATE)
        dim = len(self.smile.feature_names)
        settings = {"feature_set": feature_set, "feature_level": "Functionals", "opensmile_version": version,
                    "min_samples": MIN_SAMPLES, "chunk_seconds": opts.chunk_seconds, "dtype": "float32"}
        self.info = EncoderInfo(
            name=opts.name, model_id=model_id, family=FAMILY, sample_rate=SAMPLE_RATE, num_layers=1,
            dim=dim, frame_rate=0.0, weights_hash="none", pretrained=False, settings=settings)

    def _segment_frames(self, num_samples: int) -> int:
        return 1

    def _embed_segments(self, segments: list[np.ndarray]) -> torch.Tensor:
        """``(1, n_segments, 1, dim)`` functionals of each segment."""
        rows = [self.smile.process_signal(np.asarray(s, dtype=np.float32), SAMPLE_RATE).to_numpy()[0]
                for s in segments]
        values = np.stack(rows).astype(np.float32)
        if not np.isfinite(values).all():
            raise EncoderError("openSMILE returned NaN or inf functionals for a segment (audio too short or "
                               "corrupt); check the audio or use --on-bad-audio skip")
        return torch.as_tensor(values, device=self.device)[None, :, None, :]


def build(opts: LoadOptions) -> OpenSmileEncoder:
    """The functionals named by ``opts.defaults['feature_set']`` (an :data:`FEATURE_SETS` value)."""
    return OpenSmileEncoder(opts, feature_set=str(opts.defaults["feature_set"]), model_id=f"builtin:{opts.name}")
