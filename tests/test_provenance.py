"""The store's typed provenance, and noisy groups selected by the content of their noise, never its name."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from data_manifests.manifest import Manifest, build_manifest
from data_manifests.synth import generate_corpus
from featurestore.encoders import load_encoder
from featurestore.extract import ExtractOptions, extract
from featurestore.hints import command_for_group
from featurestore.noise import NoiseSpec
from featurestore.provenance import Provenance
from featurestore.store import AmbiguousGroupError, FeatureStore, GroupNotFoundError, StoreError, StoreGroup
from featurestore.view import view_group


def _noise_folder(folder: Path, seed: int) -> Path:
    folder.mkdir(parents=True)
    sf.write(folder / "hum.wav", np.random.default_rng(seed).normal(0, 0.1, 32000).astype(np.float32), 16000)
    return folder


@pytest.fixture(scope="module")
def noisy(tmp_path_factory: pytest.TempPathFactory) -> tuple[FeatureStore, Manifest, StoreGroup, Path, Path]:
    """Two noise folders both named ``noise`` (different recordings); only the first is extracted."""
    tmp = tmp_path_factory.mktemp("provenance")
    manifest = build_manifest("urdu", "urdu", generate_corpus("urdu", tmp / "urdu", size="tiny"))
    extracted, other = _noise_folder(tmp / "a" / "noise", 1), _noise_folder(tmp / "b" / "noise", 2)
    store = FeatureStore(tmp / "s.zarr")
    result = extract(manifest, load_encoder("logmel"), store, noise=NoiseSpec(str(extracted), 5.0, seed=1),
                     options=ExtractOptions(progress=False))
    return store, manifest, store.open(result.key), extracted, other


def test_same_basename_other_recordings_is_not_extracted(noisy) -> None:
    store, manifest, group, extracted, other = noisy
    assert extracted.name == other.name == "noise"
    assert store.resolve("urdu", "logmel", None, noise=str(extracted), snr_db=5.0, noise_seed=1) == group.key
    assert store.find("urdu", "logmel", None, noise=str(other)) == []
    with pytest.raises(GroupNotFoundError) as caught:
        store.resolve("urdu", "logmel", None, noise=str(other), snr_db=5.0, noise_seed=1)
    message = str(caught.value)
    assert f"--noise {other}" in message and "--snr 5" in message and "--noise-seed 1" in message


def test_noise_is_matched_by_content_wherever_the_folder_lives(noisy, tmp_path: Path) -> None:
    store, _, group, extracted, _ = noisy
    moved = tmp_path / "elsewhere" / "babble"
    shutil.copytree(extracted, moved)
    assert store.find("urdu", "logmel", None, noise=str(moved)) == [group.key]
    (moved / "hum.wav").write_bytes((moved / "hum.wav").read_bytes()[:-2] + b"\x01\x02")  # same name, new content
    assert store.find("urdu", "logmel", None, noise=str(moved)) == []


def test_a_bare_name_never_selects_a_group(noisy) -> None:
    store, _, _, _, _ = noisy
    assert store.find("urdu", "logmel", None, noise="noise") == []


def test_two_matching_groups_are_ambiguous(noisy) -> None:
    store, manifest, group, extracted, _ = noisy
    extract(manifest, load_encoder("logmel"), store, noise=NoiseSpec(str(extracted), 5.0, seed=2),
            options=ExtractOptions(progress=False))
    with pytest.raises(AmbiguousGroupError, match="2 groups match"):
        store.resolve("urdu", "logmel", None, noise=str(extracted))
    assert issubclass(AmbiguousGroupError, StoreError) and issubclass(GroupNotFoundError, StoreError)


def test_typed_provenance_of_a_noisy_group(noisy) -> None:
    _, manifest, group, extracted, _ = noisy
    prov = group.provenance
    assert isinstance(prov, Provenance) and prov == Provenance.from_attrs(group.attrs)
    assert prov.model.name == "logmel" and prov.model.family and prov.model.weights_hash
    assert prov.noise is not None and prov.noise.source == str(extracted) and prov.noise.snr_db == 5.0
    assert prov.noise.seed == 1 and len(prov.noise.fingerprint) == 64 and prov.noise.source_name == "noise"
    assert prov.condition.key == group.key.condition and not prov.condition.is_clean
    assert prov.corpus.name == "urdu" and prov.corpus.audio_digest == manifest.audio_digest()
    assert prov.layers == group.num_layers and prov.dim == group.dim and prov.is_complete
    summary = group.summary()
    assert (summary["model"], summary["snr_db"], summary["noise_seed"]) == ("logmel", 5.0, 1)
    view = view_group(group, manifest)
    assert view.store_provenance == prov and view.store_provenance.noise.fingerprint == prov.noise.fingerprint
    assert f"--noise {extracted}" in command_for_group(group.provenance, "urdu")


def test_provenance_of_old_and_partial_attributes() -> None:
    """Groups written before condition chains (condition = {key, noise}) and missing fields parse."""
    old = {"model": {"name": "xlsr", "model_id": "facebook/x", "family": "wav2vec2", "pretrained": False,
                     "settings": {"seed": 3, "whisper_input": None}},
           "condition": {"key": "noise-n-12345678-snr5-seed0",
                         "noise": {"spec": {"source": "/d/noise", "snr_db": 5, "seed": 0, "layout": "folder",
                                            "environments": ["cafe"], "channel": "ch01"},
                                   "fingerprint": "f" * 64}},
           "aliases": ["x"], "layers": 25, "frame_layers": [3]}
    prov = Provenance.from_attrs(old)
    assert prov.model.seed == 3 and not prov.model.pretrained and prov.model_names() == {"xlsr", "facebook/x", "x"}
    assert prov.noise is not None and prov.noise.environments == ("cafe",) and prov.noise.layout == "folder"
    assert prov.frame_layers == (3,) and prov.condition.chain == {}
    clean = Provenance.from_attrs({})
    assert clean.condition.is_clean and clean.noise is None and clean.model.name == "" and clean.layers is None


def test_store_info_lines_read_the_typed_provenance(noisy) -> None:
    from cli.store import info_lines

    _, _, group, extracted, _ = noisy
    prov = group.provenance
    lines = info_lines(group.key.path, prov, group.summary(), 1234)
    text = "\n".join(lines)
    assert lines[0] == group.key.path and "model         logmel (" in text
    assert f"condition     noise {extracted} at 5 dB, seed 1" in text and prov.noise.fingerprint in text
    assert f"layers        {group.num_layers} x {group.dim}" in text and f"command       {prov.command}" in text
