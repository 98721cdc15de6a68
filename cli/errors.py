"""The library errors that the CLI reports as a clear message and a non-zero exit."""

from data_manifests.labelmaps import LabelMapError
from data_manifests.layouts import LayoutError
from data_manifests.manifest import ManifestError
from featurestore.audio import AudioError
from featurestore.encoders.base import EncoderError
from featurestore.extract import ExtractError
from featurestore.noise import NoiseError
from featurestore.store import StoreError

KNOWN_ERRORS = (LabelMapError, LayoutError, ManifestError, AudioError, EncoderError, ExtractError,
                NoiseError, StoreError, OSError)
