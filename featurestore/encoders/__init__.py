"""Speech encoders behind one contract (see :mod:`featurestore.encoders.base`).

``load_encoder(name)`` takes a registry alias (``list_encoders()``), ``<alias>-random``, a local
model directory or a Hugging Face model id.
"""

from .base import Encoder, EncoderError, EncoderInfo, LayerStates
from .registry import list_encoders, load_encoder

__all__ = ["Encoder", "EncoderError", "EncoderInfo", "LayerStates", "list_encoders", "load_encoder"]
