"""Adversarial store cases (issue 14): names that reach outside their home, lost index chunks, lost
root metadata, corrupt status, fully skipped groups and malformed inputs all end in one clear line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from cli.main import fs
from data_manifests.manifest import Manifest, ManifestError, build_manifest
from data_manifests.synth import generate_corpus
from featurestore.encoders import load_encoder
from featurestore.extract import ExtractOptions, extract
from featurestore.store import STATUS_SKIPPED, FeatureStore, StoreError, StoreKey
from featurestore.verify import verify_group, verify_store
from featurestore.workspace import Workspace

OPTIONS = ExtractOptions(batch_size=2, frame_layers=(1,), progress=False, commit_rows=4)
REPAIR = ExtractOptions(**{**OPTIONS.__dict__, "repair": True})
MODEL_ARGS = ("--model", "tiny-wav2vec2", "--corpus", "urdu", "--frames", "1", "--batch-size", "2",
              "--commit-rows", "4")


@pytest.fixture(scope="module")
def urdu_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_corpus("urdu", tmp_path_factory.mktemp("synth") / "urdu", size="tiny")


@pytest.fixture(scope="module")
def manifest(urdu_root: Path) -> Manifest:
    return build_manifest("urdu", "urdu", urdu_root)


@pytest.fixture(scope="module")
def encoder():
    return load_encoder("tiny-wav2vec2")


def _workspace(tmp_path: Path, manifest: Manifest, encoder) -> tuple[Workspace, FeatureStore, StoreKey]:
    """A workspace with corpus urdu added and its tiny-wav2vec2 group (frames of layer 1) extracted."""
    ws = Workspace.open(tmp_path / "ws")
    ws.save_manifest(manifest)
    store = FeatureStore(ws.store_url)
    return ws, store, extract(manifest, encoder, store, options=OPTIONS).key


def _cli(ws: Workspace, *args: str, store: str | None = None):
    return CliRunner().invoke(fs, ["--workspace", str(ws.root), "--store", store or ws.store_url, *args])


def _chunk(store: FeatureStore, key: StoreKey, array: str, coord: str) -> Path:
    return Path(store.url) / key.path / array / "c" / coord


def _corrupt(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))


def _one_line_error(res, *needles: str) -> None:
    """A clean failure: exit 1, an ``error:`` line holding ``needles``, never the 'bug in fs' line."""
    assert res.exit_code == 1, res.output
    assert "error:" in res.output and "bug in fs" not in res.output and "Traceback" not in res.output, res.output
    for needle in needles:
        assert needle in res.output, (needle, res.output)


def test_keys_and_corpus_names_never_leave_their_store_or_workspace(tmp_path: Path, manifest: Manifest,
                                                                     encoder) -> None:
    ws, store, key = _workspace(tmp_path, manifest, encoder)
    sibling = FeatureStore(tmp_path / "B.zarr")
    extract(manifest, encoder, sibling, options=OPTIONS)
    escape = f"../B.zarr/{key.corpus}"  # resolved under store A's root, this is store B's corpus folder
    for args in (("store", "rm", escape, "--yes"), ("store", "info", escape), ("store", "export", escape),
                 ("store", "verify", escape)):
        _one_line_error(_cli(ws, *args), "not a plain name")
    assert sibling.keys() == [key] and sibling.open(key).is_complete  # the sibling store is untouched
    with pytest.raises(StoreError, match="not a plain name"):
        StoreKey("urdu", "..", "x")
    victim = tmp_path / "x.json"  # reachable from the workspace as ../../x
    victim.write_text("{}")
    for args in (("corpus", "rm", "../../x", "--yes"), ("corpus", "show", "../../x"), ("corpus", "export", "../x"),
                 ("extract", "--model", "tiny-wav2vec2", "--corpus", "../../x")):
        _one_line_error(_cli(ws, *args), "corpus name", "must be letters")
    assert victim.read_text() == "{}"
    with pytest.raises(ManifestError):
        ws.manifest_path("a/b")
    assert _cli(ws, "corpus", "show", "urdu").exit_code == 0  # plain names still work


def test_lost_frame_offsets_are_damage_not_empty_frames(tmp_path: Path, manifest: Manifest, encoder) -> None:
    ws, store, key = _workspace(tmp_path, manifest, encoder)
    ids, before = store.open(key).frames(1)
    _chunk(store, key, "frames/layer_1/offsets", "0").unlink()
    group = store.open(key)
    with pytest.raises(StoreError, match="offsets.*missing"):
        group.frames(1)
    with pytest.raises(StoreError, match="offsets.*missing"):
        group.frame_rows(1, [0, 1])
    report = verify_group(group, manifest)
    assert not report.ok and "frames/layer_1/offsets: chunk 0 is missing" in report.errors[0]
    again = extract(manifest, encoder, store, options=OPTIONS)  # the fix verify names
    assert again.repaired and verify_group(store.open(key), manifest).ok
    _, after = store.open(key).frames(1)
    assert all(np.array_equal(a, b) for a, b in zip(before, after)) and all(f.shape[0] > 0 for f in after)


def test_lost_root_metadata_is_restored_not_an_empty_store(tmp_path: Path, manifest: Manifest, encoder) -> None:
    ws, store, key = _workspace(tmp_path, manifest, encoder)
    (Path(store.url) / "zarr.json").unlink()
    res = _cli(ws, "store", "ls")
    assert res.exit_code == 0 and key.path in res.output and "is empty" not in res.output, res.output
    assert "lost its root metadata" in res.output and (Path(store.url) / "zarr.json").exists()
    assert FeatureStore(store.url).keys() == [key]
    assert _cli(ws, "store", "verify").exit_code == 0


def test_corrupt_status_and_commit_markers_are_mended_by_repair(tmp_path: Path, manifest: Manifest,
                                                                encoder) -> None:
    ws, store, key = _workspace(tmp_path, manifest, encoder)
    reference = np.asarray(store.open(key).group["mean"][:])
    for array in ("status", "batch_done"):
        _corrupt(_chunk(store, key, array, "0"))
        res = _cli(ws, "store", "verify")
        _one_line_error(res, f"{array}: chunk 0 is corrupt", "--repair")
        res = _cli(ws, "extract", *MODEL_ARGS, "--repair")
        assert res.exit_code == 0 and f"repaired: {array}: chunk 0 is corrupt" in res.output, res.output
        assert verify_group(store.open(key), manifest).ok
        assert np.array_equal(np.asarray(store.open(key).group["mean"][:]), reference)


def test_fully_skipped_group_verifies_ok_and_every_chunk_is_written(tmp_path: Path, urdu_root: Path,
                                                                    encoder) -> None:
    root = tmp_path / "urdu"
    shutil.copytree(urdu_root, root)
    manifest = build_manifest("urdu", "urdu", root)
    for row in manifest.rows:
        Path(row["path"]).write_bytes(b"RIFF not audio")
    store = FeatureStore(tmp_path / "s.zarr")
    key = extract(manifest, encoder, store, options=ExtractOptions(**{**OPTIONS.__dict__,
                                                                      "on_bad_audio": "skip"})).key
    group = store.open(key)
    assert (group.status() == STATUS_SKIPPED).all() and group.is_complete
    for array in ("n_frames", "frames/layer_1/offsets"):  # all fill value, written all the same
        assert _chunk(store, key, array, "0").exists(), array
    assert group.damage(checksums=True)[1] == []
    report = verify_group(group, manifest)
    assert report.ok, report.errors
    assert report.facts["skipped"] == len(manifest) and report.facts["stored"] == 0
    assert any("skipped with recorded reasons" in w for w in report.warnings)


def test_export_of_a_corrupt_chunk_is_one_clear_line(tmp_path: Path, manifest: Manifest, encoder) -> None:
    ws, store, key = _workspace(tmp_path, manifest, encoder)
    _corrupt(_chunk(store, key, "mean", "0/0/0"))
    out = tmp_path / "g.h5"
    _one_line_error(_cli(ws, "store", "export", key.path, "--out", str(out)), "mean: chunk 0.0.0 is corrupt",
                    "nothing exported", "--repair")
    assert not out.exists() and not list(tmp_path.glob(".g.h5*"))


def test_lost_batch_start_says_overwrite_everywhere(tmp_path: Path, manifest: Manifest, encoder) -> None:
    ws, store, key = _workspace(tmp_path, manifest, encoder)
    _chunk(store, key, "batch_start", "0").unlink()
    for args in (("store", "export", key.path), ("store", "verify"), ("extract", *MODEL_ARGS)):
        _one_line_error(_cli(ws, *args), "batch_start", "--overwrite")
    assert _cli(ws, "extract", *MODEL_ARGS, "--overwrite").exit_code == 0
    assert _cli(ws, "store", "verify").exit_code == 0


@pytest.mark.parametrize("text", ['{"format": 2, "name": 3}', '[1, 2]', '{"format": 2, "name": ', "\udcff"])
def test_malformed_manifest_fails_its_group_only(tmp_path: Path, manifest: Manifest, urdu_root: Path,
                                                 text: str) -> None:
    ws = Workspace.open(tmp_path / "ws")
    store = FeatureStore(ws.store_url)
    other = build_manifest("other", "urdu", urdu_root)
    keys = {}
    for m in (manifest, other):
        ws.save_manifest(m)
        keys[m.name] = extract(m, load_encoder("logmel"), store, options=ExtractOptions(progress=False)).key
    ws.manifest_path("urdu").write_bytes(text.encode("utf-8", "surrogateescape"))
    with pytest.raises(ManifestError, match="manifest"):
        ws.load_manifest("urdu")
    reports = {r.key: r for r in verify_store(store, ws)}
    assert reports[keys["other"].path].ok  # the next group is still checked
    assert not reports[keys["urdu"].path].ok and "manifest" in reports[keys["urdu"].path].errors[0]
    res = _cli(ws, "store", "verify")
    assert res.exit_code == 1 and "bug in fs" not in res.output and f"OK   {keys['other'].path}" in res.output
    res = _cli(ws, "store", "export", keys["urdu"].path, "--out", str(tmp_path / "u.h5"))
    assert res.exit_code == 0 and "exporting without labels" in res.output, res.output
    assert json.loads(json.dumps(ws.corpus_names())) == ["other", "urdu"]
