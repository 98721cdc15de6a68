"""Encoder registry: shapes, lengths, batching invariance, determinism, offline behaviour."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn.functional import cosine_similarity
from transformers import Wav2Vec2FeatureExtractor, WhisperFeatureExtractor

from featurestore.encoders import EncoderError, LayerStates, list_encoders, load_encoder
from featurestore.encoders.registry import ENTRIES

SR = 16000
DURATIONS = (0.3, 1.1, 2.5)


def waves(durations: tuple[float, ...] = DURATIONS, seed: int = 0) -> list[np.ndarray]:
    """Noise with a slow envelope, so frames differ along time."""
    rng = np.random.default_rng(seed)
    out = []
    for d in durations:
        n = int(d * SR)
        env = 0.5 + 0.5 * np.sin(np.linspace(0, 7 * d, n))
        out.append((0.1 * env * rng.standard_normal(n)).astype(np.float32))
    return out


def pooled(states: LayerStates, b: int) -> torch.Tensor:
    """(L, D) mean over the real frames of utterance ``b``."""
    return states.hidden[:, b, :int(states.lengths[b])].mean(dim=1)


def min_batch_cosine(enc, ws: list[np.ndarray]) -> float:
    batch = enc.embed(ws)
    worst = 1.0
    for b, w in enumerate(ws):
        one = enc.embed([w])
        assert int(one.lengths[0]) == int(batch.lengths[b])
        worst = min(worst, cosine_similarity(pooled(batch, b), pooled(one, 0), dim=-1).min().item())
    return worst


TINY = [("tiny-wav2vec2", {}), ("tiny-xlsr", {}), ("tiny-hubert", {}), ("tiny-wavlm", {}),
        ("tiny-whisper", {"whisper_input": "full"}), ("tiny-whisper", {"whisper_input": "trim"}),
        ("logmel", {})]


@pytest.mark.parametrize(("name", "kwargs"), TINY,
                         ids=[f"{n}-{k.get('whisper_input', '')}" for n, k in TINY])
def test_tiny_shapes_lengths_and_batching(name: str, kwargs: dict) -> None:
    enc = load_encoder(name, **kwargs)
    ws = waves()
    states = enc.embed(ws)
    info = enc.info
    assert states.lengths.dtype == torch.int64
    assert states.lengths.tolist() == [enc.num_frames(len(w)) for w in ws]
    assert states.hidden.shape == (info.num_layers, len(ws), int(states.lengths.max()), info.dim)
    assert states.hidden.dtype == torch.float32 and torch.isfinite(states.hidden).all()
    assert abs(enc.num_frames(SR) - info.frame_rate) <= 2
    assert min_batch_cosine(enc, ws) >= 0.999


def test_layer_counts_and_families() -> None:
    assert load_encoder("tiny-wav2vec2").info.num_layers == 3  # embeddings + 2 layers
    assert load_encoder("tiny-whisper").info.family == "whisper"
    lm = load_encoder("logmel")
    assert (lm.info.num_layers, lm.info.dim, lm.info.weights_hash, lm.info.frame_rate) == (1, 64, "none", 100.0)
    assert load_encoder("logmel-80").info.dim == 80


@pytest.mark.parametrize("name", ["tiny-wav2vec2", "tiny-xlsr", "tiny-wavlm"])
def test_wav2vec2_matches_hf_forward(name: str) -> None:
    enc = load_encoder(name)
    w = waves((1.3,))[0]
    with torch.inference_mode():
        ref = enc.model(torch.from_numpy(enc._prepare(w))[None], output_hidden_states=True).hidden_states
        assert enc.num_frames(len(w)) == int(enc.model._get_feat_extract_output_lengths(len(w)))
    mine = enc.embed([w]).hidden
    assert len(ref) == mine.shape[0]
    for layer, r in enumerate(ref):
        torch.testing.assert_close(mine[layer, 0], r[0], atol=1e-5, rtol=1e-5)


def test_whisper_matches_hf_extractor_and_forward() -> None:
    enc = load_encoder("tiny-whisper")
    w = waves((1.3,))[0]
    feats = WhisperFeatureExtractor(feature_size=80)(w, sampling_rate=SR, return_tensors="pt").input_features
    mine = enc.log_mel(torch.nn.functional.pad(torch.from_numpy(w), (0, 30 * SR - len(w)))[None])
    torch.testing.assert_close(mine, feats, atol=1e-4, rtol=1e-4)
    with torch.inference_mode():
        ref = enc.model(feats, output_hidden_states=True).hidden_states
    states = enc.embed([w])
    n = int(states.lengths[0])
    for layer, r in enumerate(ref):
        torch.testing.assert_close(states.hidden[layer, 0], r[0, :n], atol=1e-5, rtol=1e-5)


def test_whisper_trim_equals_full_on_30s() -> None:
    w = waves((30.0,))[0]
    full = load_encoder("tiny-whisper").embed([w])
    trim = load_encoder("tiny-whisper", whisper_input="trim").embed([w])
    assert full.lengths.tolist() == trim.lengths.tolist() == [1500]
    torch.testing.assert_close(full.hidden, trim.hidden, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mode", ["full", "trim"])
def test_whisper_chunks_long_audio(mode: str) -> None:
    enc = load_encoder("tiny-whisper", whisper_input=mode)
    ws = waves((65.0, 2.0))
    states = enc.embed(ws)
    assert enc.num_frames(65 * SR) == 1500 + 1500 + 250
    assert states.lengths.tolist() == [3250, 100]
    assert states.hidden.shape[2] == 3250


def test_wav2vec2_chunking_is_batch_invariant() -> None:
    enc = load_encoder("tiny-xlsr", chunk_seconds=1.0)
    ws = waves()
    assert enc.num_frames(int(2.5 * SR)) == 49 + 49 + 24
    assert enc.embed(ws).lengths.tolist() == [enc.num_frames(len(w)) for w in ws]
    assert min_batch_cosine(enc, ws) >= 0.999


def test_short_and_bad_inputs() -> None:
    enc = load_encoder("tiny-wav2vec2")
    assert enc.embed([np.zeros(100, np.float32)]).lengths.tolist() == [1] == [enc.num_frames(100)]
    for bad in (np.zeros(0, np.float32), np.zeros((2, 800), np.float32), np.full(800, np.nan, np.float32)):
        with pytest.raises(EncoderError):
            enc.embed([bad])
    with pytest.raises(EncoderError):
        enc.embed([])


def test_random_twins_are_seeded() -> None:
    state = torch.random.get_rng_state()
    for name in ("tiny-whisper", "tiny-wav2vec2"):
        a, b = load_encoder(name, seed=1), load_encoder(name, seed=1)
        c = load_encoder(name, seed=2)
        assert a.info.weights_hash == b.info.weights_hash != c.info.weights_hash
        assert a.info.settings["seed"] == 1 and not a.info.pretrained
    assert torch.equal(state, torch.random.get_rng_state())


def test_wav2vec2_random_builds_offline() -> None:
    enc = load_encoder("wav2vec2-random")
    assert (enc.info.num_layers, enc.info.dim, enc.info.pretrained) == (13, 768, False)
    assert enc.info.settings["architecture_of"] == "facebook/wav2vec2-base"
    states = enc.embed(waves((0.5,)))
    assert states.hidden.shape == (13, 1, 24, 768)


def test_large_architectures() -> None:
    for alias in ("xlsr", "mms"):
        c = ENTRIES[alias].arch()
        arch = (c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.intermediate_size)
        assert arch == (1024, 24, 16, 4096)
        assert (c.feat_extract_norm, c.do_stable_layer_norm, c.conv_bias) == ("layer", True, True)
    base = ENTRIES["whisper"].arch()
    assert (base.d_model, base.encoder_layers, base.encoder_attention_heads, base.encoder_ffn_dim,
            base.num_mel_bins) == (512, 6, 8, 2048, 80)
    assert ENTRIES["whisper-large-v3"].arch().num_mel_bins == 128
    aliases = {r["alias"] for r in list_encoders()}
    assert {"wav2vec2", "xlsr", "mms", "whisper", "whisper-large-v3", "xlsr-random", "logmel"} <= aliases


@pytest.mark.parametrize("name", ["wav2vec2", "someorg/not-cached-model"])
def test_unreachable_weights_explain_how_to_supply_them(name: str) -> None:
    with pytest.raises(EncoderError) as err:
        load_encoder(name)
    msg = str(err.value)
    model_id = ENTRIES[name].model_id if name in ENTRIES else name
    assert model_id in msg and "--model" in msg and "HF_HUB_OFFLINE" in msg and "HF_HOME" in msg


def test_unknown_names() -> None:
    with pytest.raises(EncoderError, match="tiny-whisper"):
        load_encoder("no-such-encoder")
    with pytest.raises(EncoderError, match="no such model directory"):
        load_encoder("/nonexistent/model/dir")
    with pytest.raises(EncoderError):
        load_encoder("tiny-whisper", whisper_input="half")


def test_local_directories_dispatch_on_model_type(tmp_path: Path) -> None:
    xlsr = load_encoder("tiny-xlsr")
    xlsr.model.save_pretrained(tmp_path / "w2v")
    Wav2Vec2FeatureExtractor(do_normalize=False).save_pretrained(tmp_path / "w2v")
    whisper = load_encoder("tiny-whisper")
    whisper.model.save_pretrained(tmp_path / "whisper")
    w = waves((0.8,))
    for builtin, path in ((xlsr, tmp_path / "w2v"), (whisper, tmp_path / "whisper")):
        local = load_encoder(str(path))
        assert local.info.pretrained and local.info.family == builtin.info.family
        assert local.info.weights_hash == builtin.info.weights_hash
    local = load_encoder(str(tmp_path / "w2v"))
    assert local.info.settings["do_normalize"] is False
    assert not torch.allclose(local.embed(w).hidden, xlsr.embed(w).hidden)  # input not normalised


def test_real_whisper_base(shared_dir: Path) -> None:
    from featurestore.audio import load_audio

    model_dir = shared_dir / "models" / "whisper-base-encoder"
    wavs = sorted((shared_dir / "corpora" / "URDU" / "Angry").glob("*.wav"))[:2]
    if not model_dir.is_dir() or not wavs:
        pytest.skip("whisper-base-encoder or URDU corpus not in the shared folder")
    ws = [load_audio(p, SR)[0] for p in wavs]
    pooled_last = {}
    for mode in ("full", "trim"):
        enc = load_encoder(str(model_dir), whisper_input=mode)
        assert (enc.info.num_layers, enc.info.dim, enc.info.pretrained) == (7, 512, True)
        states = enc.embed(ws)
        assert states.lengths.tolist() == [enc.num_frames(len(w)) for w in ws]
        assert states.hidden.shape[:2] == (7, len(ws)) and torch.isfinite(states.hidden).all()
        pooled_last[mode] = torch.stack([pooled(states, b)[-1] for b in range(len(ws))])
    cos = cosine_similarity(pooled_last["full"], pooled_last["trim"], dim=-1)
    assert torch.isfinite(cos).all()
    print(f"whisper-base full vs trim, last layer, mean pooled cosine: {cos.mean().item():.4f}")


_LOAD_AND_TIME = """
import sys, time
from featurestore.encoders import EncoderError, load_encoder
import featurestore.encoders.hf_whisper  # imports done before the clock starts
began = time.perf_counter()
try:
    load_encoder(sys.argv[1])
except EncoderError as exc:
    print(f"{time.perf_counter() - began:.2f}")
    print(exc)
"""


@pytest.mark.slow
@pytest.mark.parametrize("env", [{"HF_HUB_OFFLINE": "1"}, {"HF_ENDPOINT": "http://127.0.0.1:9"}],
                         ids=["offline", "unreachable-endpoint"])
def test_uncached_hub_model_is_refused_at_once(tmp_path: Path, env: dict) -> None:
    """Not in the (empty) HF cache and no hub: the clear message within seconds, no retries."""
    import os
    import subprocess
    import sys

    clean = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_CACHE")}
    run = subprocess.run([sys.executable, "-c", _LOAD_AND_TIME, "whisper"], capture_output=True, text=True,
                         env={**clean, "HF_HOME": str(tmp_path / "hf"), **env}, timeout=120)
    seconds, _, message = run.stdout.partition("\n")
    assert message, run.stdout + run.stderr
    assert float(seconds) < 3.0, seconds
    assert "openai/whisper-base" in message and "--model /path/to/dir" in message and "HF_HUB_OFFLINE=1" in message
    assert "Retrying" not in run.stderr
    if "HF_ENDPOINT" in env:
        assert "http://127.0.0.1:9 cannot be reached" in message


def test_registry_listing_needs_no_torch() -> None:
    """`fs models` lists the registry without importing torch or transformers."""
    import subprocess
    import sys

    code = ("import sys; from cli.extract import models; from featurestore.encoders import list_encoders; "
            "assert len(list_encoders()) > 10; print('torch' in sys.modules, 'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["False", "False"], out.stderr
