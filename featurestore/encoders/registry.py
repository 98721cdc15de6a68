"""The encoder registry: one small entry per model, and :func:`load_encoder` to resolve names.

A name is, in order: a registry alias (``wav2vec2``, ``whisper``, ``tiny-xlsr``, ``logmel``...),
``<alias>-random`` (the alias's architecture, randomly initialised from ``seed``, no download), a
local model directory, or a Hugging Face model id. Directories and ids are dispatched on
``config.model_type``. Adding a model means adding an entry below.

Importing this module loads neither torch nor transformers (``fs models`` lists the registry in a
fraction of a second): the architectures and the encoder code are imported when a model is built.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from types import ModuleType
from typing import TYPE_CHECKING, Any

from .sources import Source, source_for

if TYPE_CHECKING:
    import torch
    from transformers import PretrainedConfig

    from .base import Encoder
    from .common import LoadOptions

RANDOM_SUFFIX = "-random"

# family name -> module that builds it (imported when a model of that family is built)
FAMILY_MODULES = {"wav2vec2": "hf_wav2vec2", "whisper": "hf_whisper", "logmel": "logmel",
                  "opensmile": "opensmile_functionals"}
PRETRAINED_FAMILIES = ("wav2vec2", "whisper")  # families with weights to load (dispatched on model_type)


def family_module(family: str) -> ModuleType:
    """The code of a model family, e.g. ``featurestore.encoders.hf_whisper`` for ``whisper``."""
    return importlib.import_module(f"{__package__}.{FAMILY_MODULES[family]}")


@dataclass(frozen=True)
class Entry:
    """One registered model."""

    alias: str
    family: str
    description: str
    model_id: str | None = None  # HF id of the pretrained weights; None: built in, nothing to fetch
    arch: Callable[[], PretrainedConfig] | None = None  # architecture for -random twins and tiny models
    defaults: Mapping[str, Any] = field(default_factory=dict)  # preprocessing when the checkpoint has none


# --- architectures (embedded so that random twins need no download) ---------------------------

def _config(name: str, **kwargs: Any) -> Callable[[], PretrainedConfig]:
    """A transformers config class by name, built with ``kwargs`` on call (transformers imported then)."""
    def arch() -> PretrainedConfig:
        import transformers

        return getattr(transformers, name)(**kwargs)
    arch.__name__ = name
    return arch


def _w2v2_large() -> PretrainedConfig:
    """XLSR-53 / MMS-300m: wav2vec2 large with layer-norm CNN and stable layer norm."""
    return _config("Wav2Vec2Config", hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                          intermediate_size=4096, feat_extract_norm="layer", do_stable_layer_norm=True,
                          conv_bias=True)()


def _whisper(d_model: int, layers: int, heads: int, mels: int = 80) -> Callable[[], PretrainedConfig]:
    return _config("WhisperConfig", d_model=d_model, encoder_layers=layers, encoder_attention_heads=heads,
                   encoder_ffn_dim=4 * d_model, decoder_layers=layers, decoder_attention_heads=heads,
                   decoder_ffn_dim=4 * d_model, num_mel_bins=mels, max_source_positions=1500)


_TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
             conv_dim=(32,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)


def _tiny_wav2vec2() -> PretrainedConfig:
    return _config("Wav2Vec2Config", **_TINY, feat_extract_norm="group", do_stable_layer_norm=False,
                   conv_bias=False)()


def _tiny_xlsr() -> PretrainedConfig:
    return _config("Wav2Vec2Config", **_TINY, feat_extract_norm="layer", do_stable_layer_norm=True,
                   conv_bias=True)()


def _tiny_hubert() -> PretrainedConfig:
    return _config("HubertConfig", **_TINY, feat_extract_norm="group", do_stable_layer_norm=False,
                   conv_bias=False)()


def _tiny_wavlm() -> PretrainedConfig:
    return _config("WavLMConfig", **_TINY, feat_extract_norm="group", do_stable_layer_norm=False, conv_bias=False,
                   num_buckets=32, max_bucket_distance=100)()


# --- the entries ---------------------------------------------------------------------------------

W2V, WSP, LM, SMILE = "wav2vec2", "whisper", "logmel", "opensmile"  # each module's FAMILY

ENTRIES: dict[str, Entry] = {e.alias: e for e in [
    Entry("wav2vec2", W2V, "wav2vec2 base: 12 x 768, LibriSpeech 960 h, self-supervised",
          "facebook/wav2vec2-base", _config("Wav2Vec2Config"), {"do_normalize": True}),
    Entry("xlsr", W2V, "XLSR-53: wav2vec2 large 24 x 1024, 53 languages, self-supervised",
          "facebook/wav2vec2-large-xlsr-53", _w2v2_large, {"do_normalize": True}),
    Entry("mms", W2V, "MMS-300m: wav2vec2 large 24 x 1024, ~1400 languages, self-supervised",
          "facebook/mms-300m", _w2v2_large, {"do_normalize": True}),
    Entry("hubert", W2V, "HuBERT base: 12 x 768, LibriSpeech 960 h, self-supervised",
          "facebook/hubert-base-ls960", _config("HubertConfig"), {"do_normalize": False}),
    Entry("wavlm", W2V, "WavLM base+: 12 x 768, 94k h English, self-supervised",
          "microsoft/wavlm-base-plus", _config("WavLMConfig"), {"do_normalize": False}),
    # "whisper" is base: the real offline copy we test with (shared/models/whisper-base-encoder)
    # is whisper-base, so the alias and that directory have the same architecture.
    Entry("whisper", WSP, "Whisper base encoder: 6 x 512, 80 mels, multilingual ASR",
          "openai/whisper-base", _whisper(512, 6, 8)),
    Entry("whisper-tiny", WSP, "Whisper tiny encoder: 4 x 384, 80 mels",
          "openai/whisper-tiny", _whisper(384, 4, 6)),
    Entry("whisper-small", WSP, "Whisper small encoder: 12 x 768, 80 mels",
          "openai/whisper-small", _whisper(768, 12, 12)),
    Entry("whisper-medium", WSP, "Whisper medium encoder: 24 x 1024, 80 mels",
          "openai/whisper-medium", _whisper(1024, 24, 16)),
    Entry("whisper-large-v3", WSP, "Whisper large-v3 encoder: 32 x 1280, 128 mels",
          "openai/whisper-large-v3", _whisper(1280, 32, 20, mels=128)),
    Entry("tiny-wav2vec2", W2V, "tiny random wav2vec2 (group-norm CNN, base style), 2 x 32, for tests",
          arch=_tiny_wav2vec2, defaults={"do_normalize": True}),
    Entry("tiny-xlsr", W2V, "tiny random wav2vec2 (layer-norm CNN, stable layer norm), 2 x 32, for tests",
          arch=_tiny_xlsr, defaults={"do_normalize": True}),
    Entry("tiny-hubert", W2V, "tiny random HuBERT, 2 x 32, for tests",
          arch=_tiny_hubert, defaults={"do_normalize": False}),
    Entry("tiny-wavlm", W2V, "tiny random WavLM, 2 x 32, for tests",
          arch=_tiny_wavlm, defaults={"do_normalize": False}),
    Entry("tiny-whisper", WSP, "tiny random Whisper encoder, 2 x 32, 80 mels, for tests",
          arch=_whisper(32, 2, 2)),
    Entry("logmel", LM, "parameter-free log-mel front end: 64 mels, 25 ms / 10 ms (CNN-LSTM baseline)",
          defaults={"n_mels": 64}),
    Entry("logmel-80", LM, "parameter-free log-mel front end: 80 mels, 25 ms / 10 ms",
          defaults={"n_mels": 80}),
    Entry("egemaps", SMILE, "openSMILE eGeMAPSv02 functionals: 88 hand-crafted features (the classic SER baseline)",
          defaults={"feature_set": "eGeMAPSv02"}),
    Entry("compare", SMILE, "openSMILE ComParE_2016 functionals: 6373 hand-crafted features",
          defaults={"feature_set": "ComParE_2016"}),
]}


# --- lookup --------------------------------------------------------------------------------------

def list_encoders() -> list[dict[str, Any]]:
    """Every loadable alias with model id, family, pretrained flag and description."""
    rows = []
    for e in ENTRIES.values():
        rows.append({"alias": e.alias, "model_id": e.model_id or f"builtin:{e.alias}", "family": e.family,
                     "pretrained": e.model_id is not None, "description": e.description})
        if e.model_id is not None and e.arch is not None:
            rows.append({"alias": e.alias + RANDOM_SUFFIX, "model_id": f"builtin:{e.alias}{RANDOM_SUFFIX}",
                         "family": e.family, "pretrained": False,
                         "description": f"{e.model_id} architecture, randomly initialised from seed"})
    return rows


def random_twin(name: str) -> Entry | None:
    """The entry whose architecture ``<alias>-random`` names, if any."""
    base = ENTRIES.get(name.removesuffix(RANDOM_SUFFIX)) if name.endswith(RANDOM_SUFFIX) else None
    if base is None or base.model_id is None or base.arch is None:
        return None
    return base


def load_encoder(name: str, *, device: str | torch.device = "cpu", seed: int = 0,
                 whisper_input: str = "full", chunk_seconds: float | None = None) -> Encoder:
    """Load the encoder ``name``: alias, ``<alias>-random``, local directory or HF model id."""
    from .base import EncoderError
    from .common import LoadOptions
    from .hf_whisper import WHISPER_INPUTS
    from .sources import load_config

    if whisper_input not in WHISPER_INPUTS:
        raise EncoderError(f"--whisper-input must be one of {', '.join(WHISPER_INPUTS)}, not {whisper_input!r}")
    opts = LoadOptions(name=name, device=_device(device), seed=int(seed), whisper_input=whisper_input,
                       chunk_seconds=chunk_seconds)
    twin = random_twin(name)
    entry = twin or ENTRIES.get(name)
    if entry is not None:
        opts = replace(opts, defaults=entry.defaults)
        if twin is not None:
            return _build(twin, opts, architecture_of=twin.model_id)
        if entry.model_id is None:
            return _build(entry, opts)
        return family_module(entry.family).from_pretrained(Source(entry.model_id, False), opts, entry.model_id)
    src = source_for(name)
    if src is None:
        aliases = ", ".join(r["alias"] for r in list_encoders())
        raise EncoderError(f"unknown encoder {name!r}. Known aliases: {aliases}. "
                           "Or give a Hugging Face model id (org/name) or a local model directory.")
    config = load_config(src, name)
    return _family_of(config.model_type, name).from_pretrained(src, opts, src.ref)


def _build(entry: Entry, opts: LoadOptions, **extra: Any) -> Encoder:
    module = family_module(entry.family)
    if entry.family in (LM, SMILE):
        return module.build(opts)
    return module.from_config(entry.arch(), opts, f"builtin:{opts.name}", **extra)


def _family_of(model_type: str, name: str) -> ModuleType:
    """The module of the pretrained family whose MODEL_TYPES hold ``model_type``."""
    from .base import EncoderError

    modules = [family_module(f) for f in PRETRAINED_FAMILIES]
    for module in modules:
        if model_type in module.MODEL_TYPES:
            return module
    known = sorted(t for m in modules for t in m.MODEL_TYPES)
    raise EncoderError(f"{name}: model_type {model_type!r} is not supported "
                       f"(supported: {', '.join(known)})")


def _device(device: str | torch.device) -> torch.device:
    import torch

    from .base import EncoderError

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise EncoderError(f"bad device {device!r}: {exc}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise EncoderError(f"device {device!r} requested but CUDA is not available")
    return dev
