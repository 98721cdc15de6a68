"""Whisper encoders: Whisper's log-mel front end and the encoder half of a Whisper checkpoint.

``whisper_input="full"`` pads every segment (<= 30 s) to 30 s as in training: 3000 mel frames,
1500 encoder frames, of which ``lengths`` counts only those of real audio.
``whisper_input="trim"`` computes the log-mel of the real samples only and runs conv front end,
``embed_positions[:T]`` and the layers on that length with an attention mask against batch
padding. HF's ``WhisperEncoder.forward`` refuses anything but 3000 mel frames, hence the manual
path; it reproduces the HF forward exactly on a 30 s input.

Hidden states: the first layer's input (conv + positions), then every layer's output, the last one
through the encoder's final layer_norm, as HF reports them.

Fine-tuning: ``top_layers(k)`` replays layers k+1..L on stored ``trim`` states with the same mask;
``full`` states are refused (the layers attended to 30 s of padding the store does not keep).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from transformers import PretrainedConfig, WhisperFeatureExtractor
from transformers.masking_utils import create_bidirectional_mask
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from .base import EncoderError, EncoderInfo
from .common import (
    LoadOptions,
    SegmentEncoder,
    chunk_samples,
    frame_mask,
    pad_frames,
    resume_dtype,
    run_dtype,
    run_layer,
    seeded,
    to_device,
)
from .sources import Source, fetch
from .weights import weights_hash

FAMILY = "whisper"
MODEL_TYPES = ("whisper",)
WHISPER_INPUTS = ("full", "trim")
# checkpoints store the encoder as model.encoder.* (WhisperForConditionalGeneration) or encoder.*
_ENCODER_KEYS = {r"^(model\.)?encoder\.": ""}


class WhisperLikeEncoder(SegmentEncoder):
    """Layer-wise frame states of a Whisper encoder."""

    def __init__(self, encoder: WhisperEncoder, fe: WhisperFeatureExtractor, opts: LoadOptions, *,
                 model_id: str, pretrained: bool, extra: dict[str, Any] | None = None):
        config = encoder.config
        if opts.whisper_input not in WHISPER_INPUTS:
            raise EncoderError(f"whisper_input must be one of {WHISPER_INPUTS}, got {opts.whisper_input!r}")
        if fe.feature_size != config.num_mel_bins:
            raise EncoderError(f"{model_id}: feature extractor has {fe.feature_size} mel bins, "
                               f"the model expects {config.num_mel_bins}")
        if fe.n_samples // fe.hop_length != 2 * config.max_source_positions:
            raise EncoderError(f"{model_id}: {fe.chunk_length} s windows do not fit "
                               f"{config.max_source_positions} encoder positions")
        self.model = encoder.eval().requires_grad_(False)
        digest = weights_hash({"encoder": encoder})
        self.device = opts.device
        self.model.to(self.device)
        self.mode = opts.whisper_input
        self.n_fft, self.hop, self.window_samples = fe.n_fft, fe.hop_length, fe.n_samples
        self.mel_filters = torch.as_tensor(fe.mel_filters, dtype=torch.float32, device=self.device)
        self.window = torch.hann_window(fe.n_fft, device=self.device)
        self.min_samples = fe.n_fft
        self.chunk_samples = chunk_samples(opts.chunk_seconds, fe.sampling_rate) or fe.n_samples
        if self.chunk_samples > fe.n_samples:
            raise EncoderError(f"Whisper sees at most {fe.chunk_length} s; chunk_seconds must not exceed it")
        settings = {
            "model_type": config.model_type,
            "whisper_input": self.mode,
            "num_mel_bins": config.num_mel_bins,
            "n_fft": fe.n_fft,
            "hop_length": fe.hop_length,
            "pad_to_seconds": fe.chunk_length if self.mode == "full" else None,
            "chunk_seconds": self.chunk_samples / fe.sampling_rate,
            "final_layer_norm_on_last": True,
            "min_samples": self.min_samples,
            "dtype": run_dtype(self.device),
            **(extra or {}),
        }
        self.info = EncoderInfo(
            name=opts.name, model_id=model_id, family=FAMILY, sample_rate=fe.sampling_rate,
            num_layers=config.encoder_layers + 1, dim=config.d_model,
            frame_rate=fe.sampling_rate / (2 * fe.hop_length), weights_hash=digest,
            pretrained=pretrained, settings=settings)

    def _segment_frames(self, num_samples: int) -> int:
        mel_frames = num_samples // self.hop
        return (mel_frames - 1) // 2 + 1  # conv2: kernel 3, stride 2, padding 1

    def _embed_segments(self, segments: list[np.ndarray]) -> torch.Tensor:
        return self._full(segments) if self.mode == "full" else self._trim(segments)

    def log_mel(self, waves: torch.Tensor) -> torch.Tensor:
        """(S, N) waves -> (S, n_mels, N // hop) log-mel, as WhisperFeatureExtractor computes it."""
        with torch.autocast(self.device.type, enabled=False):
            stft = torch.stft(waves.float(), self.n_fft, self.hop, window=self.window, return_complex=True)
            power = stft[..., :-1].abs() ** 2
            log_spec = (self.mel_filters.T @ power).clamp(min=1e-10).log10()
            log_spec = torch.maximum(log_spec, log_spec.amax(dim=(1, 2), keepdim=True) - 8.0)
            return (log_spec + 4.0) / 4.0

    def _windows(self, segments: list[np.ndarray]) -> torch.Tensor:
        """(S, window_samples) segments zero-padded to Whisper's 30 s window."""
        waves = torch.zeros(len(segments), self.window_samples, device=self.device)
        for i, seg in enumerate(to_device(segments, self.device)):
            waves[i, :seg.numel()] = seg
        return waves

    def _full(self, segments: list[np.ndarray]) -> torch.Tensor:
        waves = self._windows(segments)
        out = self.model(self.log_mel(waves), output_hidden_states=True)
        # keep only frames some segment really has: padding frames are never read, so never copied
        real = max(self._segment_frames(seg.size) for seg in segments)
        return torch.stack([h[:, :real] for h in out.hidden_states])

    def _trim(self, segments: list[np.ndarray]) -> torch.Tensor:
        enc = self.model
        h, lengths = self._trim_front(segments)
        mask = create_bidirectional_mask(config=enc.config, inputs_embeds=h,
                                         attention_mask=frame_mask(lengths, h.shape[1]))
        states = [h]
        for layer in enc.layers:
            h = layer(h, mask)
            states.append(h)
        states[-1] = enc.layer_norm(h)
        return torch.stack(states)

    def _trim_front(self, segments: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """(S, T, D) first-layer input (conv front end + positions) of the real frames, and (S,) T_s."""
        enc = self.model
        mels = [self.log_mel(seg[None])[0] for seg in to_device(segments, self.device)]
        mel_len = torch.tensor([m.shape[1] for m in mels], device=self.device)
        x = pad_frames([m.T for m in mels]).transpose(1, 2)
        h = F.gelu(enc.conv1(x))
        # alone, an utterance's conv2 sees zero padding right after its last mel frame
        h = h * frame_mask(mel_len, h.shape[2])[:, None, :]
        h = F.gelu(enc.conv2(h)).permute(0, 2, 1)
        h = h + enc.embed_positions.weight[:h.shape[1]]
        lengths = (mel_len - 1) // 2 + 1
        return h, lengths

    # --- fine-tuning ---------------------------------------------------------------------------

    def top_layers(self, k: int, last: int | None = None) -> WhisperTopLayers:
        """Layers k+1..last (default L) resumed from stored ``trim`` states (see :class:`WhisperTopLayers`).

        Refused in ``full`` mode: there the layers attended to the 30 s padding, which the store
        does not keep. The module shares its weights with this encoder.
        """
        if self.mode == "full":
            raise EncoderError(
                f"{self.info.name}: cannot resume Whisper 'full' states from layer {k}: in 'full' mode "
                "every layer attended to the 30 s zero padding too, and the store keeps only the real "
                "frames, so replaying the top layers on them is not the model's own computation. "
                "Extract the frames with --whisper-input trim (e.g. fs extract --model "
                f"{self.info.name} --whisper-input trim --frames {k} ...) and load the encoder with "
                "whisper_input='trim', or fine-tune from waveforms instead.")
        k, last = self.layer_range(k, last)
        return WhisperTopLayers(self.model, k, last, masked=True)

    def trainable_layers(self, last: int | None = None) -> WhisperTopLayers:
        """Layers 1..last on :meth:`front` output; in ``full`` mode over the whole 30 s window, unmasked."""
        k, last = self.layer_range(0, last)
        return WhisperTopLayers(self.model, k, last, masked=self.mode == "trim")

    def _front_segments(self, segments: list[np.ndarray]) -> torch.Tensor:
        if self.mode == "trim":
            return self._trim_front(segments)[0]
        waves = self._windows(segments)
        captured: list[torch.Tensor] = []

        def grab(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
            captured.append(args[0] if args else kwargs["hidden_states"])
            raise _FirstLayerReached

        handle = self.model.layers[0].register_forward_pre_hook(grab, with_kwargs=True)
        try:
            self.model(self.log_mel(waves))
        except _FirstLayerReached:
            pass
        finally:
            handle.remove()
        return captured[0]


class _FirstLayerReached(Exception):
    """Stops the encoder's forward once the first layer's input is known."""


class WhisperTopLayers(nn.Module):
    """Encoder layers k+1..last of Whisper, the last one through the final layer_norm when last = L.

    forward(states (B, T, D) = hidden_states[k], lengths (B,)) -> [hidden_states[k+1..last]], each
    (B, T, D). ``masked``: attend only to real frames (``trim``, the mask extraction builds);
    unmasked runs over the whole padded window as in ``full`` mode. Gradients flow; set
    ``checkpointing`` to recompute layer activations in the backward pass.
    """

    def __init__(self, encoder: WhisperEncoder, k: int, last: int, *, masked: bool):
        super().__init__()
        self.config = encoder.config
        self.first = k
        self.masked = masked
        self.layers = nn.ModuleList(list(encoder.layers[k:last]))
        self.layer_norm = encoder.layer_norm if last == encoder.config.encoder_layers else None
        self.checkpointing = False

    def forward(self, states: torch.Tensor, lengths: torch.Tensor) -> list[torch.Tensor]:
        h = states.to(resume_dtype(self.layers))
        mask = None
        if self.masked:
            mask = create_bidirectional_mask(config=self.config, inputs_embeds=h,
                                             attention_mask=frame_mask(lengths.to(h.device), h.shape[1]))
        out = []
        for layer in self.layers:
            h = run_layer(layer, self.checkpointing, h, mask)
            out.append(h)
        if self.layer_norm is not None:
            out[-1] = self.layer_norm(out[-1])
        return out


def from_pretrained(src: Source, opts: LoadOptions, model_id: str) -> WhisperLikeEncoder:
    """Load only the encoder of a Whisper checkpoint (local directory or hub id), in float32."""
    encoder, loading = fetch(WhisperEncoder.from_pretrained, src, opts.name, key_mapping=_ENCODER_KEYS,
                             dtype=torch.float32, output_loading_info=True)
    if loading.get("missing_keys"):
        missing = sorted(loading["missing_keys"])
        raise EncoderError(f"{model_id}: checkpoint lacks {len(missing)} encoder weights, "
                           f"e.g. {missing[:3]}")
    try:
        fe = fetch(WhisperFeatureExtractor.from_pretrained, src, opts.name)
    except EncoderError:
        fe = WhisperFeatureExtractor(feature_size=encoder.config.num_mel_bins)
    return WhisperLikeEncoder(encoder, fe, opts, model_id=model_id, pretrained=True)


def from_config(config: PretrainedConfig, opts: LoadOptions, model_id: str,
                **extra: Any) -> WhisperLikeEncoder:
    """The encoder architecture of ``config``, randomly initialised from ``opts.seed``."""
    with seeded(opts.seed):
        encoder = WhisperEncoder(config)
    fe = WhisperFeatureExtractor(feature_size=config.num_mel_bins)
    return WhisperLikeEncoder(encoder, fe, opts, model_id=model_id, pretrained=False,
                              extra={"seed": opts.seed, **extra})
