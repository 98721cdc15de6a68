"""A stable fingerprint of the weights an encoder actually runs with."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import torch
from torch import nn


def named_tensors(modules: Mapping[str, nn.Module]) -> dict[str, torch.Tensor]:
    """All parameters and buffers of ``modules``, keyed ``<module>.<tensor name>``."""
    tensors: dict[str, torch.Tensor] = {}
    for prefix, module in modules.items():
        for name, tensor in module.named_parameters():
            tensors[f"{prefix}.{name}"] = tensor
        for name, tensor in module.named_buffers():
            tensors[f"{prefix}.{name}"] = tensor
    return tensors


def weights_hash(modules: Mapping[str, nn.Module]) -> str:
    """sha256 over name, dtype, shape and raw bytes of every tensor, sorted by name."""
    digest = hashlib.sha256()
    for name, tensor in sorted(named_tensors(modules).items()):
        data = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}|{data.dtype}|{tuple(tensor.shape)}\n".encode())
        digest.update(data.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
