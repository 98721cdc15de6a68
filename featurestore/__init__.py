"""fs feature store: extract speech-encoder embeddings once, layer-wise, into Zarr."""

__version__ = "0.1.0"
