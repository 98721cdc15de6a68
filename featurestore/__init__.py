"""fs feature store: extract speech-encoder embeddings once, layer-wise, into Zarr."""

from data_manifests import __version__

__all__ = ["__version__"]
