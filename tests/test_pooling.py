"""Pooling module: bit-identical to the extraction's pooling, padding ignored, finite gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from featurestore.extract import pool_states
from featurestore.pooling import MaskedStatsPooling, masked_mean, masked_mean_std


def batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(L=3, B=4, T=9, D=5) states with garbage in the padding, lengths (4,) incl. a one-frame one."""
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(3, 4, 9, 5, generator=gen) * 3 + 1
    return hidden, torch.tensor([9, 4, 1, 6])


def reference_pool(hidden: torch.Tensor, lengths: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """The extraction's pooling as stores of format 1-2 were written with it: (B, L, D) mean, std."""
    steps = torch.arange(hidden.shape[2], device=hidden.device)
    mask = (steps[None, :] < lengths.to(hidden.device)[:, None]).to(hidden.dtype)[None, :, :, None]
    count = lengths.to(hidden.device).clamp(min=1).to(hidden.dtype)[None, :, None]
    mean = (hidden * mask).sum(2) / count
    var = (((hidden - mean[:, :, None]) * mask) ** 2).sum(2) / count
    std = var.clamp_min(0).sqrt()
    return mean.transpose(0, 1).float().cpu().numpy(), std.transpose(0, 1).float().cpu().numpy()


def test_bit_identical_to_extraction_pooling() -> None:
    hidden, lengths = batch()
    want_mean, want_std = reference_pool(hidden, lengths)  # (B, L, D) numpy
    mean, std = masked_mean_std(hidden, lengths)  # (L, B, D)
    assert np.array_equal(mean.transpose(0, 1).numpy(), want_mean)
    assert np.array_equal(std.transpose(0, 1).numpy(), want_std)
    assert np.array_equal(masked_mean(hidden, lengths).transpose(0, 1).numpy(), want_mean)
    got_mean, got_std = pool_states(hidden, lengths)  # what extraction writes today
    assert np.array_equal(got_mean, want_mean) and np.array_equal(got_std, want_std)


def test_single_layer_input_matches_each_layer() -> None:
    hidden, lengths = batch(1)
    mean, std = masked_mean_std(hidden, lengths)
    for layer in range(hidden.shape[0]):
        m, s = masked_mean_std(hidden[layer], lengths)
        assert m.shape == (4, 5)
        assert torch.equal(m, mean[layer]) and torch.equal(s, std[layer])


def test_padding_is_ignored() -> None:
    hidden, lengths = batch(2)
    changed = hidden.clone()
    for b, n in enumerate(lengths.tolist()):
        changed[:, b, n:] = 1e6
    for a, b in zip(masked_mean_std(hidden, lengths), masked_mean_std(changed, lengths)):
        assert torch.equal(a, b)
    one = hidden[:, 1:2, :4]
    assert torch.allclose(masked_mean(hidden, lengths)[:, 1], one.mean(dim=2)[:, 0], atol=1e-6)
    assert torch.allclose(masked_mean_std(hidden, lengths)[1][:, 1],
                          one.std(dim=2, unbiased=False)[:, 0], atol=1e-5)


def test_gradients_are_finite_and_zero_on_padding() -> None:
    hidden, lengths = batch(3)
    hidden.requires_grad_(True)
    pooled = MaskedStatsPooling("mean+std")(hidden, lengths)
    pooled.sum().backward()
    grad = hidden.grad
    assert torch.isfinite(grad).all()  # the one-frame utterance has var = 0
    for b, n in enumerate(lengths.tolist()):
        assert torch.all(grad[:, b, n:] == 0)
        assert torch.any(grad[:, b, :n] != 0)


def test_module_modes_and_shapes() -> None:
    hidden, lengths = batch(4)
    mean_only = MaskedStatsPooling("mean")
    both = MaskedStatsPooling("mean+std")
    assert mean_only(hidden[0], lengths).shape == (4, 5) and mean_only.factor == 1
    out = both(hidden[0], lengths)
    assert out.shape == (4, 10) and both.factor == 2
    m, s = masked_mean_std(hidden[0], lengths)
    assert torch.equal(out, torch.cat([m, s], dim=-1))
    assert both(hidden, lengths).shape == (3, 4, 10)
    with pytest.raises(ValueError, match="pooling mode"):
        MaskedStatsPooling("max")
    with pytest.raises(ValueError, match="hidden must be"):
        masked_mean(hidden[0, 0], lengths)
