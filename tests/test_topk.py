"""Encoders resume from a layer: top layers on stored states reproduce the stored top states."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn.functional import cosine_similarity

from featurestore.encoders import EncoderError, LayerStates, load_encoder

SR = 16000
DURATIONS = (0.4, 1.3, 2.2)
RESUMABLE = [("tiny-wav2vec2", {}), ("tiny-xlsr", {}), ("tiny-hubert", {}), ("tiny-wavlm", {}),
             ("tiny-whisper", {"whisper_input": "trim"})]
IDS = [name for name, _ in RESUMABLE]


def waves(durations: tuple[float, ...] = DURATIONS, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for d in durations:
        n = int(d * SR)
        env = 0.5 + 0.5 * np.sin(np.linspace(0, 5 * d, n))
        out.append((0.1 * env * rng.standard_normal(n)).astype(np.float32))
    return out


def worst_cosine(stored: LayerStates, k: int, replayed: list[torch.Tensor]) -> float:
    """Smallest per-utterance cosine (real frames only, flattened) over layers k+1..k+len(replayed)."""
    worst = 1.0
    for j, layer in enumerate(replayed, start=k + 1):
        for b, n in enumerate(stored.lengths.tolist()):
            want = stored.hidden[j, b, :n].reshape(-1)
            got = layer[b, :n].reshape(-1)
            worst = min(worst, cosine_similarity(want, got, dim=0).item())
    return worst


@pytest.mark.parametrize(("name", "kwargs"), RESUMABLE, ids=IDS)
@pytest.mark.parametrize("fp16", [False, True], ids=["fp32", "fp16-store"])
def test_top_layers_reproduce_stored_states(name: str, kwargs: dict, fp16: bool) -> None:
    enc = load_encoder(name, **kwargs)
    stored = enc.embed(waves())
    num = enc.info.num_layers - 1
    for k in range(num):
        states = stored.hidden[k]
        if fp16:
            states = states.half()  # the store keeps frames in fp16
        with torch.no_grad():
            out = enc.top_layers(k)(states, stored.lengths)
        assert len(out) == num - k
        assert all(o.shape == stored.hidden[0].shape for o in out)
        assert worst_cosine(stored, k, out) >= (0.999 if fp16 else 0.99999)


@pytest.mark.parametrize(("name", "kwargs"), RESUMABLE, ids=IDS)
def test_front_and_layers_from_zero_are_the_model(name: str, kwargs: dict) -> None:
    enc = load_encoder(name, **kwargs)
    ws = waves(seed=1)
    stored = enc.embed(ws)
    front = enc.front(ws)
    assert torch.equal(front.join(front.states).hidden[0], stored.hidden[0])
    with torch.no_grad():
        joined = front.join(torch.stack(enc.trainable_layers()(front.states, front.lengths)))
    assert torch.equal(joined.lengths, stored.lengths)
    assert torch.allclose(joined.hidden, stored.hidden[1:], atol=1e-5)


def test_whisper_full_trains_over_the_padded_window() -> None:
    enc = load_encoder("tiny-whisper", whisper_input="full")
    ws = waves(seed=2)
    stored = enc.embed(ws)
    front = enc.front(ws)
    assert front.states.shape[1] == 1500  # 30 s window, unmasked as the model runs it
    with torch.no_grad():
        joined = front.join(torch.stack(enc.trainable_layers()(front.states, front.lengths)))
    assert torch.allclose(joined.hidden, stored.hidden[1:], atol=1e-5)


def test_whisper_full_refuses_to_resume() -> None:
    enc = load_encoder("tiny-whisper", whisper_input="full")
    with pytest.raises(EncoderError, match="--whisper-input trim"):
        enc.top_layers(1)


def test_gradients_reach_the_top_layers_and_the_states() -> None:
    enc = load_encoder("tiny-wav2vec2")
    stored = enc.embed(waves())
    top = enc.top_layers(1)
    states = stored.hidden[1].clone().requires_grad_(True)
    weight = top.layers[0].attention.q_proj.weight
    weight.requires_grad_(True)
    try:
        out = top(states, stored.lengths)[-1]
        sum(out[b, :n].sum() for b, n in enumerate(stored.lengths.tolist())).backward()
    finally:
        weight.requires_grad_(False)
    assert weight.grad is not None and torch.isfinite(weight.grad).all() and weight.grad.abs().sum() > 0
    assert states.grad is not None and states.grad.abs().sum() > 0
    # padded frames never influence real ones
    for b, n in enumerate(stored.lengths.tolist()):
        assert torch.all(states.grad[b, n:] == 0)


def test_checkpointing_gives_the_same_gradients() -> None:
    enc = load_encoder("tiny-whisper", whisper_input="trim")
    stored = enc.embed(waves())
    grads = []
    for checkpointing in (False, True):
        top = enc.top_layers(0)
        top.checkpointing = checkpointing
        states = stored.hidden[0].clone().requires_grad_(True)
        top(states, stored.lengths)[-1].pow(2).sum().backward()
        grads.append(states.grad)
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_partial_stack_and_bad_layers() -> None:
    enc = load_encoder("tiny-hubert")
    stored = enc.embed(waves())
    with torch.no_grad():
        out = enc.top_layers(0, last=1)(stored.hidden[0], stored.lengths)
    assert len(out) == 1
    assert worst_cosine(stored, 0, out) >= 0.99999
    for k, last in [(-1, None), (2, None), (1, 1), (0, 3)]:
        with pytest.raises(EncoderError, match="layer"):
            enc.top_layers(k, last)
    with pytest.raises(EncoderError, match="no transformer layers"):
        load_encoder("logmel").top_layers(0)


def test_real_whisper_base_trim(shared_dir: Path) -> None:
    from featurestore.audio import load_audio

    model = shared_dir / "models" / "whisper-base-encoder"
    if not model.is_dir():
        pytest.skip(f"{model} not found")
    files = sorted((shared_dir / "corpora" / "URDU" / "Angry").glob("*.wav"))[:3]
    ws = [load_audio(f, SR)[0] for f in files]
    ws[1] = ws[1][: len(ws[1]) // 2]  # different lengths in one batch
    enc = load_encoder(str(model), whisper_input="trim")
    stored = enc.embed(ws)
    for k in (0, 3, 5):
        with torch.no_grad():
            out = enc.top_layers(k)(stored.hidden[k].half(), stored.lengths)
        assert worst_cosine(stored, k, out) >= 0.999
