"""The one join from store to labels."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from data_manifests.manifest import build_manifest
from data_manifests.synth import generate_corpus
from featurestore.encoders import load_encoder
from featurestore.extract import ExtractOptions, extract
from featurestore.layers import LayerError
from featurestore.noise import NoiseSpec
from featurestore.store import FeatureStore, StoreError
from featurestore.view import load_view


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("view")
    root = generate_corpus("emodb", tmp / "emodb", size="tiny")
    manifest = build_manifest("emodb", "emodb", root)
    noise = tmp / "noise"
    noise.mkdir()
    sf.write(noise / "hum.wav", np.random.default_rng(0).normal(0, 0.1, 48000).astype(np.float32), 16000)
    store = FeatureStore(tmp / "s.zarr")
    encoder = load_encoder("tiny-wav2vec2")
    extract(manifest, encoder, store, options=ExtractOptions(progress=False))
    extract(manifest, encoder, store, noise=NoiseSpec(str(noise), 10.0), options=ExtractOptions(progress=False))
    return root, manifest, store, noise


def test_view_joins_labels_speakers_and_provenance(setup) -> None:
    root, manifest, store, _ = setup
    view = load_view(store, manifest, "tiny-wav2vec2", layers="last")
    rows = {r["utt_id"]: r for r in manifest.rows}
    assert len(view) == len(manifest) and view.X.shape == (len(manifest), 32) and view.layers == [2]
    assert [rows[u]["label"] for u in view.ids] == view.labels.tolist()
    assert [rows[u]["speaker"] for u in view.ids] == view.speakers.tolist()
    assert view.provenance["weights_hash"] and view.provenance["label_map"] == "paper"
    assert view.provenance["whisper_input"] is None  # not a Whisper group (trim/full: tests/test_protocols.py)
    both = load_view(store, manifest, "tiny-wav2vec2", layers=[0, 2], stat="mean+std")
    assert both.X.shape == (len(manifest), 2, 64)
    assert np.allclose(both.X[:, 1, :32], view.X)


def test_view_carries_the_typed_store_provenance(setup) -> None:
    _, manifest, store, noise = setup
    view = load_view(store, manifest, "tiny-wav2vec2", condition=None, noise=str(noise), snr_db=10.0)
    prov = view.store_provenance
    assert prov is not None and prov == store.open(view.key).provenance
    assert prov.model.name == "tiny-wav2vec2" and prov.noise is not None and prov.noise.snr_db == 10.0
    assert view.provenance["weights_hash"] == prov.model.weights_hash and view.provenance["noise"] == dict(prov.noise.spec)
    assert view.subset(np.arange(3)).store_provenance is prov
    clean = load_view(store, manifest, "tiny-wav2vec2")
    assert clean.store_provenance is not None and clean.store_provenance.condition.is_clean


def test_view_relabelled_corpus_reuses_vectors(setup) -> None:
    root, manifest, store, _ = setup
    strict = build_manifest("emodb", "emodb", root, labels="strict")
    view = load_view(store, strict, "tiny-wav2vec2")
    assert len(view) == len(strict) < len(manifest) and "boredom" not in view.labels.tolist()


def test_view_noisy_condition_and_errors(setup) -> None:
    root, manifest, store, noise = setup
    noisy = load_view(store, manifest, "tiny-wav2vec2", condition=None, snr_db=10.0)
    assert noisy.key.condition.startswith("noise-") and noisy.provenance["noise"]["snr_db"] == 10.0
    with pytest.raises(StoreError, match="2 groups match"):
        load_view(store, manifest, "tiny-wav2vec2", condition=None)
    with pytest.raises(StoreError, match="--snr 5"):
        load_view(store, manifest, "tiny-wav2vec2", condition=None, snr_db=5.0, noise=str(noise))
    with pytest.raises(LayerError, match="out of range"):
        load_view(store, manifest, "tiny-wav2vec2", layers=7)
    every = load_view(store, manifest, "tiny-wav2vec2", layers="mean")  # the probe's vocabulary: every layer
    assert every.layers == [0, 1, 2] and every.X.ndim == 3
