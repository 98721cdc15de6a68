"""Layer choices and cached views: what a probe trains on, read once."""

from __future__ import annotations

import os

import numpy as np
import pytest

from classifiers.studies import views as views_module
from classifiers.studies.views import (
    ViewError,
    cached_digest,
    cached_manifest,
    canonical_layer,
    get_view,
    layer_indices,
    layer_matrix,
    noise_filters,
    resolve_group,
)
from data_manifests.manifest import build_manifest
from data_manifests.synth import generate_corpus
from featurestore.encoders import load_encoder
from featurestore.extract import ExtractOptions, extract
from featurestore.layers import LayerError
from featurestore.store import FeatureStore
from featurestore.workspace import Workspace

MODEL = "tiny-wav2vec2"  # layers 0..2, 32 wide


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("views")
    ws = Workspace.open(tmp / "ws")
    manifest = build_manifest("emodb", "emodb", generate_corpus("emodb", tmp / "emodb", size="tiny"))
    ws.save_manifest(manifest)
    store = FeatureStore(ws.store_url)
    extract(manifest, load_encoder(MODEL), store, options=ExtractOptions(progress=False))
    return ws, store


def test_canonical_layer_choices() -> None:
    assert [canonical_layer(v) for v in ("last", "BEST", " mean ", 3, "-1", "concat:3, 6")] == \
        ["last", "best", "mean", 3, -1, "concat:3,6"]
    for bad in ("middle", "concat:3", "concat:3,3", "concat:a,b", True, 2.5):
        with pytest.raises(LayerError):
            canonical_layer(bad)


def test_layer_indices_and_range() -> None:
    assert layer_indices("last", 13) == [12]
    assert layer_indices("best", 3) == layer_indices("mean", 3) == [0, 1, 2]
    assert layer_indices(-1, 13) == [12] and layer_indices("concat:0,-1", 13) == [0, 12]
    with pytest.raises(LayerError, match="out of range.*0..12"):
        layer_indices(13, 13)


def test_layer_matrix_shapes(setup) -> None:
    ws, store = setup
    manifest = ws.load_manifest("emodb")
    group = resolve_group(store, "emodb", MODEL)
    every = get_view(store, manifest, group, [0, 1, 2], stat="mean+std")
    n = len(every)
    assert every.X.shape == (n, 3, 64)
    assert layer_matrix(every, 1).shape == (n, 64)
    assert np.allclose(layer_matrix(every, "mean"), every.X.mean(axis=1), atol=1e-6)
    both = layer_matrix(every, "concat:2,0")
    assert both.shape == (n, 128) and np.array_equal(both[:, :64], every.X[:, 2])
    single = get_view(store, manifest, group, [2])
    assert np.array_equal(layer_matrix(single, 2), single.X)
    with pytest.raises(ViewError):
        layer_matrix(single, 1)


def test_cache_reads_each_group_once(setup, monkeypatch) -> None:
    ws, store = setup
    cache: dict = {}
    manifest = cached_manifest(ws, "emodb", cache)
    assert cached_manifest(ws, "emodb", cache) is manifest  # not re-read
    group = resolve_group(store, "emodb", MODEL, cache=cache)
    assert resolve_group(store, "emodb", MODEL, cache=cache) is group
    every = get_view(store, manifest, group, [0, 1, 2], cache=cache)
    assert get_view(store, manifest, group, [0, 1, 2], cache=cache) is every

    def no_read(*args, **kwargs):
        raise AssertionError("the store was read again")

    monkeypatch.setattr(views_module, "view_group", no_read)
    last = get_view(store, manifest, group, [2], cache=cache)  # served from the all-layers view
    assert last.layers == [2] and np.array_equal(last.X, every.X[:, 2]) and last.provenance["layers"] == [2]


def test_cached_manifest_follows_the_file(setup) -> None:
    ws, _ = setup
    cache: dict = {}
    first = cached_manifest(ws, "emodb", cache)
    digest = cached_digest(ws, "emodb", cache)
    assert digest == first.digest()
    relabelled = ws.load_manifest("emodb")
    relabelled.rows = [{**r, "label": "angry"} for r in relabelled.rows]
    ws.save_manifest(relabelled, force=True)
    path = ws.manifest_path("emodb")
    os.utime(path, ns=(os.stat(path).st_atime_ns, os.stat(path).st_mtime_ns + 10**9))
    try:
        again = cached_manifest(ws, "emodb", cache)
        assert again is not first and set(again.column("label")) == {"angry"}
        assert cached_digest(ws, "emodb", cache) != digest
    finally:
        ws.save_manifest(first, force=True)


def test_noise_filters() -> None:
    assert noise_filters(None) == ("clean", {"whisper_input": None, "seed": None})
    condition, filters = noise_filters({"noise": "/n/demand", "snr_db": 10.0, "noise_seed": 2}, "trim", 1)
    assert condition is None
    assert filters == {"whisper_input": "trim", "seed": 1, "noise": "/n/demand", "snr_db": 10.0, "noise_seed": 2}
