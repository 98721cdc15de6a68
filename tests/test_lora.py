"""LoRA (peft): identity at initialisation, training, streaming from a frame source, checkpoints, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn.functional import cosine_similarity

from classifiers.learners.lora import LoRAError, LoRAFineTuner, TopLayerLoRA
from classifiers.learners.training import TrainingError
from featurestore.encoders import load_encoder
from featurestore.pooling import masked_mean

SR = 16000


def tones(n: int = 16, seed: int = 0) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Two classes (low vs high tone in noise), 0.3-0.7 s, 4 speakers."""
    rng = np.random.default_rng(seed)
    waves, y, groups = [], [], []
    for i in range(n):
        c = i % 2
        t = np.arange(int(rng.uniform(0.3, 0.7) * SR)) / SR
        w = 0.05 * rng.standard_normal(t.size) + 0.3 * np.sin(2 * np.pi * (300 if c == 0 else 2500) * t)
        waves.append(w.astype(np.float32))
        y.append("ab"[c])
        groups.append(f"spk{i % 4}")
    return waves, np.array(y), np.array(groups)


def stored_frames(enc, waves: list[np.ndarray], layer: int) -> list[np.ndarray]:
    """What the store keeps for ``--frames layer``: fp16 (T_i, D) real frames."""
    states = enc.embed(waves)
    return [states.hidden[layer, b, :n].half().numpy() for b, n in enumerate(states.lengths.tolist())]


def lora_b(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p for n, p in model.named_parameters() if "lora_B" in n]


@pytest.mark.parametrize(("name", "kwargs", "k"), [("tiny-wav2vec2", {}, 1), ("tiny-xlsr", {}, 0),
                                                   ("tiny-wavlm", {}, 1),
                                                   ("tiny-whisper", {"whisper_input": "trim"}, 1)])
def test_top_layer_lora_at_init_is_the_frozen_model(name: str, kwargs: dict, k: int) -> None:
    enc = load_encoder(name, **kwargs)
    waves, _, _ = tones(4)
    states = enc.embed(waves)
    est = TopLayerLoRA(enc, from_layer=k).setup(["a", "b"])
    assert all(torch.all(b == 0) for b in lora_b(est.model_)) and lora_b(est.model_)
    got = torch.from_numpy(est.transform(stored_frames(enc, waves, k)))
    want = masked_mean(states.hidden[-1], states.lengths)
    assert cosine_similarity(got, want, dim=1).min() >= 0.999


def test_full_lora_at_init_is_the_frozen_model() -> None:
    enc = load_encoder("tiny-hubert")
    waves, _, _ = tones(4)
    states = enc.embed(waves)
    for layer in ("last", 1):
        est = LoRAFineTuner(enc, layer=layer).setup(["a", "b"])
        j = -1 if layer == "last" else layer
        want = masked_mean(states.hidden[j], states.lengths)
        assert torch.allclose(torch.from_numpy(est.transform(waves)), want, atol=1e-5)


def test_top_layer_lora_trains_adapters_and_head_only() -> None:
    enc = load_encoder("tiny-wav2vec2")
    waves, y, groups = tones(16)
    frames = stored_frames(enc, waves, 1)
    before = enc.embed(waves[:3]).hidden
    est = TopLayerLoRA(enc, from_layer=1, epochs=3, lr=5e-3, batch_size=4).fit(frames, y, groups)
    assert est.dev_split_ == "speaker" and len(est.history_) == 3
    assert est.history_[-1]["train_loss"] < est.history_[0]["train_loss"]
    assert any(torch.any(b != 0) for b in lora_b(est.model_))
    assert torch.equal(enc.embed(waves[:3]).hidden, before)  # the encoder passed in is untouched
    trainable = {n for n, p in est.model_.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or n.startswith("head.") for n in trainable)
    assert est.targets_ == ["layers.0.attention.v_proj", "layers.0.attention.q_proj"]
    assert est.score(frames, y) >= 0.75
    assert est.predict_proba(frames).shape == (16, 2)


def test_streaming_source_gives_the_same_model() -> None:
    enc = load_encoder("tiny-whisper", whisper_input="trim")
    waves, y, groups = tones(12, seed=1)
    frames = stored_frames(enc, waves, 1)
    requests: list[int] = []

    def rows(indices: np.ndarray) -> list[np.ndarray]:
        requests.append(len(indices))
        return [frames[i] for i in indices]

    options = dict(from_layer=1, epochs=2, lr=5e-3, batch_size=4)
    listed = TopLayerLoRA(enc, **options).fit(frames, y, groups)
    streamed = TopLayerLoRA(enc, **options).fit(rows, y, groups, lengths=[len(f) for f in frames])
    assert max(requests) <= 4  # never the whole corpus at once
    assert np.allclose(listed.predict_proba(frames), streamed.predict_proba(rows, n=12), atol=1e-6)
    with pytest.raises(TrainingError, match="n="):
        streamed.predict_proba(rows)


def test_full_lora_trains_only_the_chosen_layers() -> None:
    enc = load_encoder("tiny-wav2vec2")
    waves, y, groups = tones(12, seed=2)
    est = LoRAFineTuner(enc, lora_layers=[2], epochs=2, lr=5e-3, batch_size=4)
    est.fit(waves, y, groups)
    assert est.targets_ == ["layers.1.attention.v_proj", "layers.1.attention.q_proj"]
    assert est.history_[-1]["train_loss"] < est.history_[0]["train_loss"]
    labels = est.predict(waves)
    assert labels.shape == (12,)
    assert np.array_equal(est.predict(lambda idx: [waves[i] for i in idx], n=12), labels)  # streamed audio
    with pytest.raises(LoRAError, match="lora_layers"):
        LoRAFineTuner(enc, lora_layers=[3])


def test_checkpoints_round_trip_and_refuse_other_configurations(tmp_path: Path) -> None:
    enc = load_encoder("tiny-wav2vec2")
    waves, y, groups = tones(12, seed=3)
    frames = stored_frames(enc, waves, 1)
    est = TopLayerLoRA(enc, from_layer=1, epochs=1, batch_size=4, rank=4).fit(frames, y, groups)
    path = est.save(tmp_path / "ckpt")
    est.save(path)  # saving again replaces it
    again = TopLayerLoRA(enc, from_layer=1, rank=4).load(path)
    assert np.array_equal(again.classes_, est.classes_)
    assert np.allclose(again.predict_proba(frames), est.predict_proba(frames), atol=1e-6)
    with pytest.raises(LoRAError, match="rank: checkpoint 4, this estimator 8"):
        TopLayerLoRA(enc, from_layer=1).load(path)
    with pytest.raises(LoRAError, match="from_layer"):
        TopLayerLoRA(enc, from_layer=0, rank=4).load(path)
    with pytest.raises(LoRAError, match="weights_hash"):
        TopLayerLoRA(load_encoder("tiny-wav2vec2", seed=1), from_layer=1, rank=4).load(path)
    with pytest.raises(LoRAError, match="method"):
        LoRAFineTuner(enc, rank=4).load(path)
    with pytest.raises(LoRAError, match="not a LoRA checkpoint"):
        TopLayerLoRA(enc, from_layer=1).load(tmp_path)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("keep me")
    with pytest.raises(LoRAError, match="not a checkpoint directory"):
        est.save(tmp_path / "other")
    assert (tmp_path / "other" / "notes.txt").read_text() == "keep me"

    full = LoRAFineTuner(enc, epochs=1, batch_size=4).fit(waves, y, groups)
    loaded = LoRAFineTuner(enc).load(full.save(tmp_path / "full"))
    assert np.allclose(loaded.predict_proba(waves[:3]), full.predict_proba(waves[:3]), atol=1e-6)


def test_bad_set_ups_are_refused_clearly() -> None:
    enc = load_encoder("tiny-wav2vec2")
    with pytest.raises(LoRAError, match=r"no module named \['nope'\].*q_proj"):
        TopLayerLoRA(enc, from_layer=1, target_modules=["nope"]).setup(["a", "b"])
    with pytest.raises(LoRAError, match="reads .* weights directly"):
        TopLayerLoRA(load_encoder("tiny-wavlm"), from_layer=0, target_modules=["q_proj"]).setup(["a", "b"])
    with pytest.raises(LoRAError, match="--whisper-input trim"):
        TopLayerLoRA(load_encoder("tiny-whisper", whisper_input="full"), from_layer=1)
    for k, layer in [(2, "last"), (-1, "last"), (1, 1), (0, 3)]:
        with pytest.raises(LoRAError, match="out of range"):
            TopLayerLoRA(enc, from_layer=k, layer=layer)
    with pytest.raises(LoRAError, match="no transformer layers|cannot be fine-tuned"):
        LoRAFineTuner("logmel").setup(["a", "b"])
    est = TopLayerLoRA(enc, from_layer=1, epochs=1)
    with pytest.raises(TrainingError, match=r"expected \(T, 32\) frames of layer 1"):
        est.fit([np.zeros((5, 16), np.float16)] * 8, ["a", "b"] * 4)
    with pytest.raises(TrainingError, match="not fitted"):
        est.predict([np.zeros((5, 32), np.float16)])
