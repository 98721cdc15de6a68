"""wav2vec2-like encoders: wav2vec2 / XLSR / MMS, HuBERT, WavLM, data2vec-audio, wav2vec2-conformer.

Batching is exact: the CNN runs per utterance when it uses group norm (group norm over zero
padding changes the statistics), the projected frames are padded and the transformer runs batched
with a frame mask (HF zeroes padded frames before the positional conv and masks them in
attention). Models whose positional stack leaks padding (data2vec-audio's conv stack, the
conformer's depthwise conv, HuBERT's optional positional batch norm) run one segment at a time.

Hidden states follow transformers 5: the input of the first layer (CNN + projection + positional
conv), then every layer's output; for stable-layer-norm models (XLSR, MMS) the last one is *before*
the encoder's final layer_norm.

Fine-tuning: ``front(waves)`` gives hidden_states[0] (no gradients; stopped at the first layer's
input, so it is exactly what ``embed`` records), ``top_layers(k)`` runs layers k+1..L on stored
hidden_states[k] with the padding mask the HF encoder builds (WavLM: its first layer's relative
position bias is rebuilt and handed on, as in HF).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import AutoFeatureExtractor, AutoModel, PretrainedConfig, PreTrainedModel
from transformers.masking_utils import create_bidirectional_mask
from transformers.models.wavlm.modeling_wavlm import WavLMAttention

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

FAMILY = "wav2vec2"
MODEL_TYPES = ("wav2vec2", "hubert", "wavlm", "data2vec-audio", "wav2vec2-conformer")
_BATCH_EXACT = {"wav2vec2", "hubert", "wavlm"}
_RESUMABLE = {"wav2vec2", "hubert", "wavlm"}  # layer types whose inputs are (states, padding mask)
_USED_MODULES = ("feature_extractor", "feature_projection", "encoder")


class Wav2Vec2LikeEncoder(SegmentEncoder):
    """Layer-wise frame states of a HF wav2vec2-style model."""

    def __init__(self, model: PreTrainedModel, opts: LoadOptions, *, model_id: str, pretrained: bool,
                 do_normalize: bool, sample_rate: int = 16000, extra: dict[str, Any] | None = None):
        config = model.config
        if config.model_type not in MODEL_TYPES:
            raise EncoderError(f"{model_id}: model_type {config.model_type!r} is not wav2vec2-like")
        self.model = model.eval().requires_grad_(False)
        digest = weights_hash({m: getattr(model, m) for m in _USED_MODULES})
        self.device = opts.device
        self.model.to(self.device)
        self.do_normalize = do_normalize
        # a batch norm before the positional conv would turn zero padding into signal
        self.batch_exact = (config.model_type in _BATCH_EXACT
                            and not getattr(config, "conv_pos_batch_norm", False))
        self.per_utterance_cnn = getattr(config, "feat_extract_norm", "group") == "group"
        self.min_samples = receptive_field(config)
        self.chunk_samples = chunk_samples(opts.chunk_seconds, sample_rate)
        settings = {
            "model_type": config.model_type,
            "do_normalize": do_normalize,
            "feat_extract_norm": getattr(config, "feat_extract_norm", None),
            "do_stable_layer_norm": bool(getattr(config, "do_stable_layer_norm", False)),
            "final_layer_norm_on_last": False,
            "cnn": "per-utterance" if self.per_utterance_cnn else "batched",
            "transformer": "batched+mask" if self.batch_exact else "per-utterance",
            "min_samples": self.min_samples,
            "chunk_seconds": opts.chunk_seconds,
            "dtype": run_dtype(self.device),
            **(extra or {}),
        }
        self.info = EncoderInfo(
            name=opts.name, model_id=model_id, family=FAMILY, sample_rate=sample_rate,
            num_layers=config.num_hidden_layers + 1, dim=config.hidden_size,
            frame_rate=sample_rate / math.prod(config.conv_stride), weights_hash=digest,
            pretrained=pretrained, settings=settings)

    def _prepare(self, wave: np.ndarray) -> np.ndarray:
        if not self.do_normalize:
            return wave
        # Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm, over the whole utterance
        return ((wave - wave.mean()) / np.sqrt(wave.var() + 1e-7)).astype(np.float32)

    def _segment_frames(self, num_samples: int) -> int:
        # the CNN formula of _get_feat_extract_output_lengths, without the (unused) adapter
        for kernel, stride in zip(self.model.config.conv_kernel, self.model.config.conv_stride):
            num_samples = (num_samples - kernel) // stride + 1
        return num_samples

    def _embed_segments(self, segments: list[np.ndarray]) -> torch.Tensor:
        if self.batch_exact or len(segments) == 1:
            return self._embed_batch(segments)
        outs = [self._embed_batch([seg]) for seg in segments]
        longest = max(o.shape[2] for o in outs)
        return torch.cat([torch.nn.functional.pad(o, (0, 0, 0, longest - o.shape[2])) for o in outs], dim=1)

    def _embed_batch(self, segments: list[np.ndarray]) -> torch.Tensor:
        lengths = torch.tensor([self._segment_frames(s.size) for s in segments], device=self.device)
        feats = self._project(segments)
        mask = frame_mask(lengths, feats.shape[1])
        return torch.stack(self._encode(feats, mask))

    def _project(self, segments: list[np.ndarray]) -> torch.Tensor:
        """CNN + feature projection: (S, T, hidden) padded with zeros."""
        waves = to_device(segments, self.device)
        if self.per_utterance_cnn:
            feats = pad_frames([self._cnn(w[None])[0] for w in waves])
        else:
            feats = self._cnn(pad_frames(waves))
        out = self.model.feature_projection(feats)
        return out[0] if isinstance(out, tuple) else out

    def _cnn(self, waves: torch.Tensor) -> torch.Tensor:
        return self.model.feature_extractor(waves).transpose(1, 2)

    def _encode(self, feats: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
        """Run the encoder; collect the first layer's input and every layer's output."""
        states: list[torch.Tensor] = []

        def record(module: torch.nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
            if not states:
                states.append(args[0] if args else kwargs["hidden_states"])
            states.append(output[0] if isinstance(output, tuple) else output)

        layers = self.model.encoder.layers
        handles = [layer.register_forward_hook(record, with_kwargs=True) for layer in layers]
        try:
            with warnings.catch_warnings():
                # WavLM mixes a bool padding mask with its float position bias; harmless
                warnings.filterwarnings("ignore", message="Support for mismatched key_padding_mask")
                self.model.encoder(feats, attention_mask=mask)
        finally:
            for handle in handles:
                handle.remove()
        if len(states) != len(layers) + 1:
            raise EncoderError(f"{self.info.name}: captured {len(states)} hidden states, "
                               f"expected {len(layers) + 1}")
        return states

    # --- fine-tuning ---------------------------------------------------------------------------

    def top_layers(self, k: int, last: int | None = None) -> Wav2Vec2TopLayers:
        """Layers k+1..last (default L) resumed from hidden_states[k] (see :class:`Wav2Vec2TopLayers`).

        The module shares its weights with this encoder (copy it before injecting adapters).
        """
        model_type = self.model.config.model_type
        if model_type not in _RESUMABLE:
            raise EncoderError(f"{self.info.name}: resuming from a layer is implemented for "
                               f"{', '.join(sorted(_RESUMABLE))}, not {model_type!r}; fine-tune it "
                               "from waveforms instead")
        k, last = self.layer_range(k, last)
        return Wav2Vec2TopLayers(self.model, k, last)

    def _front_segments(self, segments: list[np.ndarray]) -> torch.Tensor:
        if self.batch_exact or len(segments) == 1:
            return self._front_batch(segments)
        outs = [self._front_batch([seg]) for seg in segments]
        return pad_frames([o[0] for o in outs])

    def _front_batch(self, segments: list[np.ndarray]) -> torch.Tensor:
        """(S, T, D) input of the first transformer layer: the encoder run up to that layer."""
        lengths = torch.tensor([self._segment_frames(s.size) for s in segments], device=self.device)
        feats = self._project(segments)
        mask = frame_mask(lengths, feats.shape[1])
        captured: list[torch.Tensor] = []

        def grab(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
            captured.append(args[0] if args else kwargs["hidden_states"])
            raise _FirstLayerReached

        handle = self.model.encoder.layers[0].register_forward_pre_hook(grab, with_kwargs=True)
        try:
            self.model.encoder(feats, attention_mask=mask)
        except _FirstLayerReached:
            pass
        finally:
            handle.remove()
        return captured[0]


class _FirstLayerReached(Exception):
    """Stops the encoder's forward once the first layer's input is known."""


class _WavLMPositionBias(nn.Module):
    """WavLM's relative position bias, which its first layer computes and hands to the others."""

    compute_bias = WavLMAttention.compute_bias
    _relative_positions_bucket = WavLMAttention._relative_positions_bucket

    def __init__(self, first_attention: WavLMAttention):
        super().__init__()
        self.rel_attn_embed = first_attention.rel_attn_embed
        self.num_heads = first_attention.num_heads
        self.num_buckets = first_attention.num_buckets
        self.max_distance = first_attention.max_distance

    def forward(self, batch: int, frames: int) -> torch.Tensor:
        """(batch * heads, frames, frames), as WavLMAttention builds it in the first layer."""
        bias = self.compute_bias(frames, frames)
        return bias.unsqueeze(0).repeat(batch, 1, 1, 1).view(batch * self.num_heads, frames, frames)


class Wav2Vec2TopLayers(nn.Module):
    """Transformer layers k+1..last of a wav2vec2 / HuBERT / WavLM encoder.

    forward(states (B, T, D) = hidden_states[k], lengths (B,)) -> [hidden_states[k+1..last]], each
    (B, T, D), with the padding mask the HF encoder builds. For stable-layer-norm models the last
    state is before the encoder's final layer_norm, as :meth:`Wav2Vec2LikeEncoder.embed` records it.
    Gradients flow; set ``checkpointing`` to recompute layer activations in the backward pass.
    """

    def __init__(self, model: PreTrainedModel, k: int, last: int):
        super().__init__()
        self.config = model.config
        self.first = k
        self.layers = nn.ModuleList(list(model.encoder.layers[k:last]))
        is_wavlm = model.config.model_type == "wavlm"
        self.position_bias = _WavLMPositionBias(model.encoder.layers[0].attention) if is_wavlm else None
        self.checkpointing = False

    def forward(self, states: torch.Tensor, lengths: torch.Tensor) -> list[torch.Tensor]:
        h = states.to(resume_dtype(self.layers))
        valid = frame_mask(lengths.to(h.device), h.shape[1])
        kwargs: dict[str, Any] = {}
        if self.position_bias is not None:
            # WavLM's layers take the bool padding mask itself
            mask = valid
            kwargs["position_bias"] = self.position_bias(h.shape[0], h.shape[1])
        else:
            mask = create_bidirectional_mask(config=self.config, inputs_embeds=h, attention_mask=valid)
        out = []
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Support for mismatched key_padding_mask")
            for layer in self.layers:
                result = run_layer(layer, self.checkpointing, h, attention_mask=mask, **kwargs)
                h = result[0] if isinstance(result, tuple) else result
                out.append(h)
        return out


def receptive_field(config: PretrainedConfig) -> int:
    """Fewest samples that give one frame through the CNN feature extractor."""
    field = 1
    for kernel, stride in reversed(list(zip(config.conv_kernel, config.conv_stride))):
        field = (field - 1) * stride + kernel
    return field


def from_pretrained(src: Source, opts: LoadOptions, model_id: str) -> Wav2Vec2LikeEncoder:
    """Load a pretrained wav2vec2-like checkpoint (local directory or hub id) in float32."""
    model, loading = fetch(AutoModel.from_pretrained, src, opts.name, dtype=torch.float32,
                           output_loading_info=True)
    missing = [k for k in loading.get("missing_keys", []) if not k.startswith("masked_spec_embed")]
    if missing:
        raise EncoderError(f"{model_id}: checkpoint lacks {len(missing)} weights, e.g. {missing[:3]}")
    do_normalize, sample_rate = _preprocessor(src, opts, model.config)
    return Wav2Vec2LikeEncoder(model, opts, model_id=model_id, pretrained=True, do_normalize=do_normalize,
                               sample_rate=sample_rate)


def from_config(config: PretrainedConfig, opts: LoadOptions, model_id: str,
                **extra: Any) -> Wav2Vec2LikeEncoder:
    """The architecture of ``config``, randomly initialised from ``opts.seed`` (no download)."""
    with seeded(opts.seed):
        model = AutoModel.from_config(config)
    do_normalize = bool(opts.defaults.get("do_normalize", _normalize_rule(config)))
    return Wav2Vec2LikeEncoder(model, opts, model_id=model_id, pretrained=False, do_normalize=do_normalize,
                               extra={"seed": opts.seed, **extra})


def _preprocessor(src: Source, opts: LoadOptions, config: PretrainedConfig) -> tuple[bool, int]:
    """(do_normalize, sampling_rate): preprocessor_config.json, else registry default, else arch rule."""
    try:
        fe = fetch(AutoFeatureExtractor.from_pretrained, src, opts.name)
    except EncoderError:
        fe = None
    if fe is not None and hasattr(fe, "do_normalize"):
        return bool(fe.do_normalize), int(getattr(fe, "sampling_rate", 16000))
    return bool(opts.defaults.get("do_normalize", _normalize_rule(config))), 16000


def _normalize_rule(config: PretrainedConfig) -> bool:
    # fairseq pairs input normalisation with layer-norm CNNs and raw input with group norm
    return getattr(config, "feat_extract_norm", "group") == "layer"
