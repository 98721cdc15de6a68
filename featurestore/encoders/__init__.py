"""Speech encoders behind one contract (see :mod:`featurestore.encoders.base`).

``load_encoder(name)`` takes a registry alias (``list_encoders()``), ``<alias>-random``, a local
model directory or a Hugging Face model id. ``list_encoders`` needs neither torch nor
transformers; the other names import them on first use.
"""

from __future__ import annotations

from typing import Any

from .registry import list_encoders

__all__ = ["Encoder", "EncoderError", "EncoderInfo", "LayerStates", "list_encoders", "load_encoder"]

_LAZY = {"Encoder": "base", "EncoderError": "base", "EncoderInfo": "base", "LayerStates": "base",
         "load_encoder": "registry"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
