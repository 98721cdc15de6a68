"""`fs store export`: HDF5 with features, labels/speakers/gender/language from the manifest, noise records."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from cli.main import fs
from data_manifests.manifest import Manifest, build_manifest
from data_manifests.synth import generate_corpus
from featurestore.encoders import load_encoder
from featurestore.export import export_h5
from featurestore.extract import ExtractOptions, extract
from featurestore.noise import NoiseSpec
from featurestore.store import FeatureStore, StoreGroup
from featurestore.workspace import Workspace


@pytest.fixture(scope="module")
def noisy(tmp_path_factory: pytest.TempPathFactory) -> tuple[Workspace, Manifest, StoreGroup]:
    """A workspace with corpus ``urdu`` and its logmel group at 0 dB (frames of layer 0)."""
    tmp = tmp_path_factory.mktemp("export")
    ws = Workspace.open(tmp / "ws")
    manifest = build_manifest("urdu", "urdu", generate_corpus("urdu", tmp / "urdu", size="tiny"))
    ws.save_manifest(manifest)
    (tmp / "noise").mkdir()
    sf.write(tmp / "noise" / "hum.wav", np.random.default_rng(2).normal(0, 0.1, 32000).astype(np.float32), 16000)
    store = FeatureStore(ws.store_url)
    result = extract(manifest, load_encoder("logmel"), store, noise=NoiseSpec(str(tmp / "noise"), 0.0, seed=1),
                     options=ExtractOptions(frame_layers=(0,), progress=False))
    return ws, manifest, store.open(result.key)


def test_h5_holds_features_labels_speakers_and_noise(noisy: tuple[Workspace, Manifest, StoreGroup],
                                                     tmp_path: Path) -> None:
    _, manifest, group = noisy
    path = export_h5(group, tmp_path / "g.h5", manifest=manifest)
    by_id = {r["utt_id"]: r for r in manifest.rows}
    ids, mean = group.pooled()
    with h5py.File(path) as h5:
        h5_ids = [u.decode() for u in h5["utt_ids"][:]]
        assert h5_ids == group.utt_ids().tolist()
        assert np.array_equal(h5["mean"][:], mean) and h5["std"].shape == mean.shape
        for name, column in (("labels", "label"), ("speakers", "speaker"), ("gender", "gender"),
                             ("language", "language")):
            assert [v.decode() for v in h5[name][:]] == [str(by_id[u][column]) for u in h5_ids], name
        mix = group.noise_mix()
        assert [v.decode() for v in h5["noise/recording"][:]] == mix["recording"].tolist()
        assert np.array_equal(h5["noise/offset"][:], mix["offset"])
        assert np.allclose(h5["noise/snr_db"][:], 0.0, atol=1e-3)
        assert h5.attrs["manifest_digest"] == manifest.digest() and h5.attrs["label_map"] == "paper"
        assert np.array_equal(h5["frames/layer_0/offsets"][:], np.concatenate([[0], np.cumsum(group.n_frames())]))


def test_export_is_atomic(noisy: tuple[Workspace, Manifest, StoreGroup], tmp_path: Path,
                          monkeypatch: pytest.MonkeyPatch) -> None:
    _, manifest, group = noisy
    path = tmp_path / "g.h5"
    path.write_bytes(b"previous export")

    def broken_replace(*_a, **_k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        export_h5(group, path, manifest=manifest)
    assert path.read_bytes() == b"previous export"
    assert [p.name for p in tmp_path.iterdir()] == ["g.h5"]


def test_damaged_group_is_not_exported(noisy: tuple[Workspace, Manifest, StoreGroup], tmp_path: Path) -> None:
    ws, _, group = noisy
    copy = tmp_path / "ws"
    shutil.copytree(ws.root, copy)
    next(p for p in (copy / "store.zarr" / group.key.path / "std" / "c").rglob("*") if p.is_file()).unlink()
    out = tmp_path / "x.h5"
    res = CliRunner().invoke(fs, ["--workspace", str(copy), "store", "export", group.key.path, "--out", str(out)])
    # a lost chunk is recomputed by re-running the group's own extract command (README: Integrity)
    assert res.exit_code == 1 and "damaged" in res.stderr and "chunk 0.0.0 is missing" in res.stderr
    assert "fs extract --model logmel --corpus urdu" in res.stderr and not out.exists()


def test_cli_export_overwrite_and_labels(noisy: tuple[Workspace, Manifest, StoreGroup], tmp_path: Path) -> None:
    ws, _, group = noisy
    base = ["--workspace", str(ws.root), "store", "export", group.key.path, "--out", str(tmp_path / "x.h5")]
    res = CliRunner().invoke(fs, base)
    assert res.exit_code == 0, res.output
    with h5py.File(tmp_path / "x.h5") as h5:
        assert {v.decode() for v in h5["labels"][:]} == {"angry", "happy", "neutral", "sad"}
    res = CliRunner().invoke(fs, base)
    assert res.exit_code == 1 and "--overwrite" in res.stderr
    assert CliRunner().invoke(fs, [*base, "--overwrite"]).exit_code == 0
