"""The one contract every encoder meets, so the store never knows which framework made a vector.

An encoder is loaded once, then embeds batches of mono float32 waveforms that are already at
``encoder.sample_rate``. It returns per-layer frame states, padded, with the true frame count
of every utterance. Pooling and storage are the caller's job.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from featurestore.errors import FsError


class EncoderError(FsError, RuntimeError):
    """An encoder that cannot be loaded or run (unknown name, weights unavailable, ...)."""


@dataclass
class LayerStates:
    """Output of :meth:`Encoder.embed`.

    hidden:  (num_layers, batch, max_frames, dim) tensor on the encoder's device; frames past
             ``lengths[b]`` are padding and carry no meaning.
    lengths: (batch,) int64 tensor of real frame counts.
    """

    hidden: torch.Tensor
    lengths: torch.Tensor


@dataclass
class EncoderInfo:
    """What the store records about an encoder (provenance)."""

    name: str  # registry alias or the id/path the user gave
    model_id: str  # HF id, local path, or "builtin:<name>"
    family: str  # "wav2vec2", "whisper", "logmel", ...
    sample_rate: int
    num_layers: int  # entries in LayerStates.hidden (e.g. embeddings + 12 transformer layers = 13)
    dim: int
    frame_rate: float  # frames per second of audio
    weights_hash: str  # sha256 of the loaded parameters ("none" for parameter-free front ends)
    pretrained: bool
    settings: dict[str, Any] = field(default_factory=dict)  # feature-extractor and run options


@runtime_checkable
class Encoder(Protocol):
    info: EncoderInfo
    device: torch.device

    def embed(self, waves: list[np.ndarray]) -> LayerStates:
        """Embed a batch of mono float32 waveforms at ``info.sample_rate``."""
        ...

    def num_frames(self, num_samples: int) -> int:
        """Frames this encoder produces for ``num_samples`` samples (what ``lengths`` will say)."""
        ...
