"""Pooling over real frames, in one torch module: what the store records and what heads train on.

:func:`masked_mean_std` is the arithmetic of the extraction's pooling (same operations in the same
order, so the stored mean and std are reproduced bit for bit), written so that gradients flow:
LoRA and the heads pool exactly as the store did.
"""

from __future__ import annotations

import torch
from torch import nn

POOLING_MODES = ("mean", "mean+std")


def _mask_and_count(hidden: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(1, B, T, 1) real-frame mask and (1, B, 1) frame counts (>= 1), in ``hidden``'s dtype."""
    steps = torch.arange(hidden.shape[2], device=hidden.device)
    mask = (steps[None, :] < lengths.to(hidden.device)[:, None]).to(hidden.dtype)[None, :, :, None]
    count = lengths.to(hidden.device).clamp(min=1).to(hidden.dtype)[None, :, None]
    return mask, count


def _as_layers(hidden: torch.Tensor) -> tuple[torch.Tensor, bool]:
    if hidden.dim() == 3:
        return hidden[None], True
    if hidden.dim() != 4:
        raise ValueError(f"hidden must be (B, T, D) or (L, B, T, D), got shape {tuple(hidden.shape)}")
    return hidden, False


def masked_mean(hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Mean over each utterance's real frames.

    hidden: (L, B, T, D) or (B, T, D); lengths: (B,) real frame counts (frames past them are
    ignored). Returns (L, B, D) or (B, D), in ``hidden``'s dtype.
    """
    layers, squeeze = _as_layers(hidden)
    mask, count = _mask_and_count(layers, lengths)
    mean = (layers * mask).sum(2) / count
    return mean[0] if squeeze else mean


def masked_mean_std(hidden: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and (population) std over each utterance's real frames.

    hidden: (L, B, T, D) or (B, T, D); lengths: (B,). Returns two (L, B, D) or (B, D) tensors.
    Values are bit-identical to the extraction's pooling; the std's gradient is 0 (not NaN) where
    the variance is 0 (a one-frame utterance).
    """
    layers, squeeze = _as_layers(hidden)
    mask, count = _mask_and_count(layers, lengths)
    mean = (layers * mask).sum(2) / count
    var = (((layers - mean[:, :, None]) * mask) ** 2).sum(2) / count
    var = var.clamp_min(0)
    positive = var > 0
    # sqrt has an infinite slope at 0: take it only where var > 0 (same values, finite gradient)
    std = torch.where(positive, torch.where(positive, var, torch.ones_like(var)).sqrt(),
                      torch.zeros_like(var))
    return (mean[0], std[0]) if squeeze else (mean, std)


class MaskedStatsPooling(nn.Module):
    """Pool (B, T, D) or (L, B, T, D) frame states over real frames.

    mode "mean" gives (..., D); "mean+std" gives (..., 2 D) = [mean, std] on the last axis.
    """

    def __init__(self, mode: str = "mean"):
        super().__init__()
        if mode not in POOLING_MODES:
            raise ValueError(f"pooling mode must be one of {POOLING_MODES}, got {mode!r}")
        self.mode = mode

    @property
    def factor(self) -> int:
        """Output width as a multiple of the frame dimension D."""
        return 2 if self.mode == "mean+std" else 1

    def forward(self, hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if self.mode == "mean":
            return masked_mean(hidden, lengths)
        return torch.cat(masked_mean_std(hidden, lengths), dim=-1)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}"
