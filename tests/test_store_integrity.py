"""The store never returns wrong numbers silently: damage is found, reported and repaired."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from data_manifests.manifest import Manifest, build_manifest
from data_manifests.synth import generate_corpus
from featurestore.encoders import load_encoder
from featurestore.errors import Interrupted, Terminated
from featurestore.extract import ExtractOptions, extract, model_key, plan_batches
from featurestore.store import STATUS_SKIPPED, STATUS_STORED, FeatureStore, StoreError, StoreGroup, StoreKey
from featurestore.verify import verify_group, verify_store
from featurestore.workspace import Workspace

OPTIONS = ExtractOptions(batch_size=2, frame_layers=(1,), progress=False, commit_rows=4)


@pytest.fixture(scope="module")
def urdu_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_corpus("urdu", tmp_path_factory.mktemp("synth") / "urdu", size="tiny")


@pytest.fixture(scope="module")
def manifest(urdu_root: Path) -> Manifest:
    return build_manifest("urdu", "urdu", urdu_root)


@pytest.fixture(scope="module")
def encoder():
    return load_encoder("tiny-wav2vec2", seed=0)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, manifest: Manifest, encoder) -> dict[str, np.ndarray]:
    store = FeatureStore(tmp_path_factory.mktemp("ref") / "s.zarr")
    return _arrays(store.open(extract(manifest, encoder, store, options=OPTIONS).key))


def _arrays(group: StoreGroup) -> dict[str, np.ndarray]:
    out = {name: np.asarray(group.group[name][:]) for name in ("mean", "std", "n_frames", "status")}
    out["frames"] = np.asarray(group.group["frames/layer_1/values"][:])
    return out


def _same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    for name in a:
        assert np.array_equal(a[name], b[name], equal_nan=True), name


def _fresh(tmp_path: Path, manifest: Manifest, encoder) -> tuple[FeatureStore, StoreKey]:
    store = FeatureStore(tmp_path / "s.zarr")
    return store, extract(manifest, encoder, store, options=OPTIONS).key


def _chunk(store: FeatureStore, key: StoreKey, array: str, coord: str) -> Path:
    return Path(store.url) / key.path / array / "c" / coord


def test_missing_mean_chunk_is_found_refused_and_recomputed(tmp_path: Path, manifest: Manifest, encoder,
                                                            reference) -> None:
    store, key = _fresh(tmp_path, manifest, encoder)
    _chunk(store, key, "mean", "0/1/0").unlink()
    report = verify_group(store.open(key), manifest)
    assert not report.ok and "mean: chunk 0.1.0 is missing" in report.errors[0]
    assert "fs extract --model tiny-wav2vec2 --corpus urdu" in report.errors[0]
    with pytest.raises(StoreError, match="NaN"):
        store.open(key).pooled(layer=1)
    assert store.open(key).pooled(layer=0)[1].shape[0] == len(manifest)  # other layers stay readable
    again = extract(manifest, encoder, store, options=OPTIONS)
    assert not again.already_done and again.repaired
    assert verify_group(store.open(key), manifest).ok
    _same(_arrays(store.open(key)), reference)


def test_missing_status_and_frame_chunks(tmp_path: Path, manifest: Manifest, encoder, reference) -> None:
    store, key = _fresh(tmp_path, manifest, encoder)
    _chunk(store, key, "status", "0").unlink()
    with pytest.raises(StoreError, match="'status' is missing"):
        store.open(key).pooled(layer=0)
    assert not verify_group(store.open(key), manifest).ok
    _chunk(store, key, "frames/layer_1/values", "0/0").unlink()
    with pytest.raises(StoreError):
        store.open(key).frames(1)
    extract(manifest, encoder, store, options=OPTIONS)
    assert verify_group(store.open(key), manifest).ok
    _same(_arrays(store.open(key)), reference)


def test_corrupt_chunk_fails_verify_and_repair_recomputes(tmp_path: Path, manifest: Manifest, encoder,
                                                          reference) -> None:
    store, key = _fresh(tmp_path, manifest, encoder)
    other = extract(manifest, load_encoder("logmel"), store, options=ExtractOptions(progress=False)).key
    path = _chunk(store, key, "std", "0/2/0")
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    reports = {r.key: r for r in verify_store(store, Workspace.open(tmp_path / "ws"), [key, other])}
    assert not reports[key.path].ok and "corrupt" in reports[key.path].errors[0]
    assert "--repair" in reports[key.path].errors[0]
    assert reports[other.path].facts["stored"] == len(manifest)  # the next group is still checked
    with pytest.raises(StoreError, match="damaged"):
        store.open(key).pooled(layer=2, stat="std")
    assert extract(manifest, encoder, store, options=OPTIONS).already_done  # cheap re-run: no checksum pass
    repaired = extract(manifest, encoder, store, options=ExtractOptions(**{**OPTIONS.__dict__, "repair": True}))
    assert any("corrupt" in p for p in repaired.repaired)
    assert verify_group(store.open(key), manifest).ok
    _same(_arrays(store.open(key)), reference)


def test_deleted_metadata_is_reported_per_group(tmp_path: Path, manifest: Manifest, encoder) -> None:
    store, key = _fresh(tmp_path, manifest, encoder)
    other = extract(manifest, load_encoder("logmel"), store, options=ExtractOptions(progress=False)).key
    (Path(store.url) / key.path / "zarr.json").unlink()
    (Path(store.url) / other.path / "mean" / "zarr.json").unlink()
    ws = Workspace.open(tmp_path / "ws")
    ws.save_manifest(manifest)
    reports = {r.key: r for r in verify_store(store, ws)}
    assert set(reports) == {key.path, other.path}
    assert "metadata (zarr.json) is missing" in reports[key.path].errors[0]
    assert "fs store rm" in reports[key.path].errors[0]
    assert not reports[other.path].ok and "--overwrite" in " ".join(reports[other.path].errors)


def test_lost_commit_marker_is_resumed_not_a_dead_end(tmp_path: Path, manifest: Manifest, encoder,
                                                      reference) -> None:
    store, key = _fresh(tmp_path, manifest, encoder)
    group = store.open(key, mode="a")
    done = group.batches_done()
    done[1] = False
    group.group["batch_done"][:] = done
    report = verify_group(store.open(key), manifest)
    assert not report.ok and "commit markers" in report.errors[0] and "fs extract" in report.errors[0]
    resumed = extract(manifest, encoder, store, options=OPTIONS)
    assert resumed.resumed and not resumed.already_done and resumed.processed == 2
    assert verify_group(store.open(key), manifest).ok
    _same(_arrays(store.open(key)), reference)


def test_skipped_rows_are_retried_once_their_file_changes(tmp_path: Path, urdu_root: Path, encoder) -> None:
    root = tmp_path / "urdu"
    shutil.copytree(urdu_root, root)
    manifest = build_manifest("urdu", "urdu", root)
    victim = Path(manifest.rows[3]["path"])
    good = victim.read_bytes()
    victim.write_bytes(b"RIFF garbage")
    store = FeatureStore(tmp_path / "s.zarr")
    options = ExtractOptions(progress=False, on_bad_audio="skip")
    first = extract(manifest, encoder, store, options=options)
    assert list(first.skipped) == [manifest.rows[3]["utt_id"]]
    again = extract(manifest, encoder, store, options=options)
    assert again.already_done and again.retried == 0  # same bad bytes: nothing to retry
    victim.write_bytes(good)
    fixed = extract(manifest, encoder, store, options=options)
    assert fixed.retried == 1 and not fixed.skipped
    group = store.open(first.key)
    assert (group.status() == STATUS_STORED).all() and not group.skipped()
    assert verify_group(group, manifest).ok
    forced = extract(manifest, encoder, store, options=ExtractOptions(progress=False, retry_skipped=True))
    assert forced.already_done and forced.retried == 0
    assert STATUS_SKIPPED not in group.status()


def test_plan_batches_bounds_padded_seconds() -> None:
    durations = [180.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 1.0]
    bounds = plan_batches(durations, batch_size=8, batch_seconds=10.0)
    assert bounds[:2] == [0, 1]  # the long clip runs alone
    for a, b in zip(bounds, bounds[1:]):
        assert b - a <= 8 and (b - a == 1 or (b - a) * durations[a] <= 10.0)
    assert bounds[-1] == len(durations)
    assert plan_batches([3.0] * 5, batch_size=2, batch_seconds=1e9) == [0, 2, 4, 5]


def test_extraction_follows_the_seconds_budget(tmp_path: Path, manifest: Manifest, encoder) -> None:
    store = FeatureStore(tmp_path / "s.zarr")
    key = extract(manifest, encoder, store, options=ExtractOptions(batch_size=64, batch_seconds=2.5,
                                                                    progress=False)).key
    group = store.open(key)
    bounds = group.batch_bounds()
    duration = {r["utt_id"]: r["duration"] for r in manifest.rows}
    longest_first = [duration[u] for u in group.utt_ids()]
    assert len(bounds) - 1 > 1
    for a, b in zip(bounds, bounds[1:]):
        assert b - a == 1 or (b - a) * longest_first[a] <= 2.5
    assert verify_group(group, manifest).ok


def test_sigterm_commits_finished_rows_and_exits_143(tmp_path: Path, manifest: Manifest, encoder,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    original = StoreGroup.commit
    calls = {"n": 0}

    def terminated_after_two(self, *args, **kwargs):
        original(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 2:
            raise Terminated()

    monkeypatch.setattr(StoreGroup, "commit", terminated_after_two)
    store = FeatureStore(tmp_path / "s.zarr")
    options = ExtractOptions(batch_size=2, progress=False, commit_rows=1)
    with pytest.raises(Interrupted, match="SIGTERM") as stopped:
        extract(manifest, encoder, store, options=options)
    assert stopped.value.exit_code == 143
    monkeypatch.setattr(StoreGroup, "commit", original)
    key = store.keys()[0]
    assert int((store.open(key).status() == STATUS_STORED).sum()) == 4
    resumed = extract(manifest, encoder, store, options=options)
    assert resumed.resumed and resumed.rows_before == 4 and resumed.processed == len(manifest) - 4


def test_reads_of_incomplete_groups_refuse(tmp_path: Path, manifest: Manifest, encoder,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    original = StoreGroup.commit

    def stop(self, *args, **kwargs):
        original(self, *args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(StoreGroup, "commit", stop)
    store = FeatureStore(tmp_path / "s.zarr")
    with pytest.raises(Interrupted):
        extract(manifest, encoder, store, options=ExtractOptions(batch_size=2, frame_layers=(1,), progress=False,
                                                                 commit_rows=1))
    group = store.open(store.keys()[0])
    with pytest.raises(StoreError, match="incomplete"):
        group.pooled(layer=0)
    with pytest.raises(StoreError, match="incomplete"):
        group.frames(1)
    ids, X = group.pooled(layer=0, allow_incomplete=True)
    assert len(ids) == 2 and X.shape == (2, group.dim)
    ids, frames = group.frames(1, allow_incomplete=True)
    assert len(frames) == 2 and all(f.shape[0] > 0 for f in frames)


def test_find_is_exact_and_filters_settings(tmp_path: Path, manifest: Manifest) -> None:
    store = FeatureStore(tmp_path / "s.zarr")
    quiet = ExtractOptions(progress=False)
    for name in ("logmel", "logmel-80"):
        extract(manifest, load_encoder(name), store, options=quiet)
    for mode in ("full", "trim"):
        extract(manifest, load_encoder("tiny-whisper", whisper_input=mode), store, options=quiet)
    assert len(store.find(model="logmel")) == 1  # never the logmel-80 group
    assert len(store.find(model="tiny-whisper")) == 2
    with pytest.raises(StoreError, match="2 groups match.*input full.*input trim"):
        store.resolve("urdu", "tiny-whisper")
    trim = store.resolve("urdu", "tiny-whisper", whisper_input="trim")
    assert store.open(trim).summary()["whisper_input"] == "trim"
    assert trim.model.startswith("whisper-trim-")
    assert store.resolve("urdu", trim.model) == trim  # the model key works too
    with pytest.raises(StoreError, match="fs extract --model tiny-wav2vec2 --corpus urdu"):
        store.resolve("urdu", "tiny-wav2vec2")


def test_group_path_ignores_the_model_folder_name(tmp_path: Path) -> None:
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel

    config = WhisperConfig(d_model=32, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=64,
                           decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=64, num_mel_bins=80)
    first = tmp_path / "my-whisper"
    WhisperModel(config).save_pretrained(first)
    WhisperFeatureExtractor(feature_size=80).save_pretrained(first)
    second = tmp_path / "renamed copy"
    shutil.copytree(first, second)
    a, b = load_encoder(str(first)), load_encoder(str(second))
    assert model_key(a.info) == model_key(b.info)
    assert model_key(a.info).startswith("whisper-full-")


def test_frame_rows_any_order_equals_frames(tmp_path: Path, manifest: Manifest, encoder) -> None:
    store, key = _fresh(tmp_path, manifest, encoder)
    group = store.open(key)
    ids, frames = group.frames(1)
    rows = group.stored_rows()
    pick = np.random.default_rng(0).permutation(rows)[: len(rows) // 2].tolist() + [int(rows[0])]
    got = group.frame_rows(1, pick)
    position = {int(r): i for i, r in enumerate(rows)}
    assert [f.shape for f in got] == [frames[position[r]].shape for r in pick]
    assert all(np.array_equal(g, frames[position[r]]) for g, r in zip(got, pick))
