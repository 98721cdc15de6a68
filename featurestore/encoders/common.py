"""Machinery every encoder shares: input checks, cutting long audio into segments, reassembly.

A :class:`SegmentEncoder` only knows how to embed a batch of *segments* (each no longer than
``chunk_samples``) and how many frames a segment yields. This base class splits utterances into
segments, runs them as one batch and concatenates each utterance's frames again.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.utils.checkpoint

from .base import EncoderError, EncoderInfo, LayerStates


@dataclass(frozen=True)
class LoadOptions:
    """What :func:`load_encoder` hands every family builder."""

    name: str  # alias, hub id or path as the user gave it
    device: torch.device
    seed: int = 0
    whisper_input: str = "full"
    chunk_seconds: float | None = None
    defaults: Mapping[str, Any] = field(default_factory=dict)  # registry preprocessing defaults


def split_lengths(num_samples: int, chunk: int | None) -> list[int]:
    """Segment lengths for ``num_samples`` cut into windows of ``chunk`` (None: one segment)."""
    if chunk is None or num_samples <= chunk:
        return [num_samples]
    full, rest = divmod(num_samples, chunk)
    return [chunk] * full + ([rest] if rest else [])


def chunk_samples(chunk_seconds: float | None, sample_rate: int) -> int | None:
    """Chunk length in samples; raise EncoderError for a non-positive length."""
    if chunk_seconds is None:
        return None
    if not chunk_seconds > 0:
        raise EncoderError(f"chunk_seconds must be positive, got {chunk_seconds}")
    return max(1, int(round(chunk_seconds * sample_rate)))


def check_wave(wave: np.ndarray, index: int) -> np.ndarray:
    """``wave`` as 1-D float32; raise EncoderError when empty, multi-channel or non-finite."""
    wave = np.asarray(wave, dtype=np.float32)
    if wave.ndim != 1:
        raise EncoderError(f"waveform {index}: expected mono 1-D audio, got shape {wave.shape}")
    if wave.size == 0:
        raise EncoderError(f"waveform {index}: empty")
    if not np.all(np.isfinite(wave)):
        raise EncoderError(f"waveform {index}: contains NaN or infinite samples")
    return wave


def frame_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """(B, max_len) bool mask, True on real frames."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


def to_device(waves: list[np.ndarray], device: torch.device) -> list[torch.Tensor]:
    """1-D float32 arrays as tensors on ``device`` (the arrays' memory is shared on the CPU).

    On CUDA the batch is packed into one pinned host buffer and moved with one asynchronous copy,
    not one blocking copy per utterance from pageable memory.
    """
    if device.type != "cuda":
        return [torch.from_numpy(np.ascontiguousarray(w, dtype=np.float32)) for w in waves]
    sizes = [int(w.size) for w in waves]
    host = torch.empty(sum(sizes), dtype=torch.float32, pin_memory=True)
    np.concatenate([np.asarray(w, dtype=np.float32).ravel() for w in waves], out=host.numpy())
    return list(host.to(device, non_blocking=True).split(sizes))


def pad_frames(seqs: list[torch.Tensor]) -> torch.Tensor:
    """Right-pad (T_i, D) tensors with zeros into (B, T_max, D)."""
    return torch.nn.utils.rnn.pad_sequence(seqs, batch_first=True)


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed torch for a model construction without disturbing the caller's RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def run_dtype(device: torch.device) -> str:
    """What ``settings['dtype']`` records: fp32 weights, bf16 autocast on CUDA."""
    return "float32+autocast-bfloat16" if device.type == "cuda" else "float32"


class SegmentEncoder(ABC):
    """Base of all encoders here; subclasses implement the three hooks below."""

    info: EncoderInfo
    device: torch.device
    chunk_samples: int | None = None  # segment length; None = whole utterance
    min_samples: int = 1  # shorter segments are zero-padded up to this
    autocast_dtype: torch.dtype | None = torch.bfloat16  # on CUDA (settings['dtype']); None: fp32, for references

    @abstractmethod
    def _segment_frames(self, num_samples: int) -> int:
        """Frames one segment of ``num_samples`` (already >= min_samples) produces."""

    @abstractmethod
    def _embed_segments(self, segments: list[np.ndarray]) -> torch.Tensor:
        """(L, S, T, D) states for ``segments``; frames past each segment's count are ignored."""

    def _prepare(self, wave: np.ndarray) -> np.ndarray:
        """Per-utterance preprocessing before segmentation (identity by default)."""
        return wave

    def num_frames(self, num_samples: int) -> int:
        """Frames this encoder produces for ``num_samples`` samples."""
        return sum(self._segment_frames(max(n, self.min_samples))
                   for n in split_lengths(int(num_samples), self.chunk_samples))

    def embed(self, waves: list[np.ndarray]) -> LayerStates:
        """Embed a batch of mono float32 waveforms at ``info.sample_rate``."""
        segments, owner = self.cut(waves)
        seg_lengths = [self._segment_frames(seg.size) for seg in segments]
        with torch.inference_mode(), self._autocast():
            hidden = self._embed_segments(segments)
        hidden = hidden.float()
        if hidden.shape[2] < max(seg_lengths):
            raise EncoderError(f"{self.info.name}: model produced {hidden.shape[2]} frames, "
                               f"expected {max(seg_lengths)}")
        return _reassemble(hidden, seg_lengths, owner, len(waves))

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.device.type == "cuda" and self.autocast_dtype is not None:
            return torch.autocast("cuda", dtype=self.autocast_dtype)
        return contextlib.nullcontext()

    @property
    def attention(self) -> str:
        """The attention kernel transformers runs ("sdpa" where it offers it, "eager", ...); "none" without one."""
        config = getattr(getattr(self, "model", None), "config", None)
        return str(getattr(config, "_attn_implementation", None) or "none")

    # --- fine-tuning: the frozen front end, then a trainable stack of layers -------------------

    def cut(self, waves: list[np.ndarray]) -> tuple[list[np.ndarray], list[int]]:
        """(segments, owner): ``waves`` cut and padded into segments exactly as :meth:`embed` does."""
        if len(waves) == 0:
            raise EncoderError("embed() needs at least one waveform")
        segments, owner = [], []
        for b, wave in enumerate(waves):
            wave = self._prepare(check_wave(wave, b))
            for seg in _cut(wave, self.chunk_samples):
                if seg.size < self.min_samples:
                    seg = np.pad(seg, (0, self.min_samples - seg.size))
                segments.append(seg)
                owner.append(b)
        return segments, owner

    def front(self, waves: list[np.ndarray]) -> FrontStates:
        """hidden_states[0] of every segment of ``waves``, without gradients (the front end is frozen).

        Feed ``states`` and ``lengths`` to :meth:`trainable_layers` and give its output to
        :meth:`FrontStates.join` to get per-utterance states, as :meth:`embed` would.
        """
        segments, owner = self.cut(waves)
        seg_lengths = [self._segment_frames(seg.size) for seg in segments]
        with torch.no_grad(), self._autocast():
            states = self._front_segments(segments)
        return FrontStates(states=states.float(), lengths=torch.tensor(seg_lengths, dtype=torch.int64),
                           owner=owner, batch=len(waves))

    def _front_segments(self, segments: list[np.ndarray]) -> torch.Tensor:
        """(S, T, D) hidden_states[0] of ``segments``; families with transformer layers override it."""
        raise EncoderError(f"{self.info.name}: a {self.info.family} encoder has no transformer layers "
                           "to fine-tune; use the CNN-LSTM on its frames instead")

    def top_layers(self, k: int, last: int | None = None) -> torch.nn.Module:
        """Layers k+1..last (default L) as a module: forward(states (B, T, D), lengths (B,)) returns
        the list of hidden states k+1..last, each (B, T, D); ``states`` are hidden_states[k]."""
        raise EncoderError(f"{self.info.name}: a {self.info.family} encoder has no transformer layers "
                           "to resume from; use the CNN-LSTM on its frames instead")

    def trainable_layers(self, last: int | None = None) -> torch.nn.Module:
        """Layers 1..last run on :meth:`front` output (the full model's computation)."""
        return self.top_layers(0, last)

    def layer_range(self, k: int, last: int | None) -> tuple[int, int]:
        """(k, last) checked against 0 <= k < last <= L; raise EncoderError naming the valid range."""
        num = self.info.num_layers - 1
        last = num if last is None else int(last)
        if not 0 <= int(k) < num:
            raise EncoderError(f"{self.info.name}: cannot resume from layer {k}; it has layers 0..{num} "
                               f"(hidden_states), so k must be in 0..{num - 1}")
        if not int(k) < last <= num:
            raise EncoderError(f"{self.info.name}: last layer {last} out of range; "
                               f"it must be in {int(k) + 1}..{num}")
        return int(k), last


@dataclass
class FrontStates:
    """Layer-0 states of a batch of utterances cut into segments (output of ``front``).

    states:  (S, T, D) float32 hidden_states[0] of every segment, padded; no gradient.
    lengths: (S,) int64 real frames per segment.
    owner:   utterance index of every segment; batch: number of utterances.
    """

    states: torch.Tensor
    lengths: torch.Tensor
    owner: list[int]
    batch: int

    def join(self, hidden: torch.Tensor) -> LayerStates:
        """Per-segment (S, T, D) or (L, S, T, D) states to per-utterance (L, B, T', D) + lengths."""
        hidden = hidden if hidden.dim() == 4 else hidden[None]
        return _reassemble(hidden, self.lengths.tolist(), self.owner, self.batch)


def resume_dtype(module: torch.nn.Module) -> torch.dtype:
    """The dtype cached states are cast to before running ``module``'s layers."""
    return next(module.parameters()).dtype


def run_layer(layer: torch.nn.Module, checkpoint: bool, *args: Any, **kwargs: Any) -> Any:
    """``layer(*args, **kwargs)``, through activation checkpointing when ``checkpoint`` and grads are on."""
    if checkpoint and torch.is_grad_enabled():
        return torch.utils.checkpoint.checkpoint(layer, *args, use_reentrant=False, **kwargs)
    return layer(*args, **kwargs)


def _cut(wave: np.ndarray, chunk: int | None) -> Iterator[np.ndarray]:
    start = 0
    for n in split_lengths(wave.size, chunk):
        yield wave[start:start + n]
        start += n


def _reassemble(hidden: torch.Tensor, seg_lengths: list[int], owner: list[int],
                batch: int) -> LayerStates:
    """Concatenate each utterance's segments along time and right-pad the batch."""
    if len(owner) == batch:
        lengths = torch.tensor(seg_lengths, dtype=torch.int64)
        return LayerStates(hidden=hidden[:, :, :max(seg_lengths)].contiguous(), lengths=lengths)
    parts: list[list[torch.Tensor]] = [[] for _ in range(batch)]
    for s, b in enumerate(owner):
        parts[b].append(hidden[:, s, :seg_lengths[s]])
    seqs = [torch.cat(p, dim=1) for p in parts]
    lengths = torch.tensor([x.shape[1] for x in seqs], dtype=torch.int64)
    out = hidden.new_zeros(hidden.shape[0], batch, int(lengths.max()), hidden.shape[3])
    for b, seq in enumerate(seqs):
        out[:, b, :seq.shape[1]] = seq
    return LayerStates(hidden=out, lengths=lengths)
