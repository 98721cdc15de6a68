"""Extraction into the store: batching, resumability, idempotence, noise, bad input."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import zarr
from click.testing import CliRunner

from cli.main import fs
from data_manifests.manifest import Manifest, build_manifest
from data_manifests.synth import generate_corpus
from featurestore.audio import load_audio
from featurestore.encoders import load_encoder
from featurestore.errors import Interrupted
from featurestore.extract import ExtractError, ExtractOptions, extract, pool_states
from featurestore.noise import NoiseSpec
from featurestore.store import STATUS_SKIPPED, STATUS_STORED, FeatureStore, StoreError, StoreGroup
from featurestore.verify import verify_group
from featurestore.workspace import Workspace


@pytest.fixture(scope="module")
def urdu_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_corpus("urdu", tmp_path_factory.mktemp("synth") / "urdu", size="tiny")


@pytest.fixture(scope="module")
def emovo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_corpus("emovo", tmp_path_factory.mktemp("synth") / "emovo", size="tiny")


@pytest.fixture(scope="module")
def manifest(urdu_root: Path) -> Manifest:
    return build_manifest("urdu", "urdu", urdu_root)


@pytest.fixture(scope="module")
def encoder():
    return load_encoder("tiny-wav2vec2", seed=0)


@pytest.fixture
def noise_dir(tmp_path: Path) -> Path:
    rng = np.random.default_rng(1)
    folder = tmp_path / "noise"
    folder.mkdir()
    for name in ("hum", "babble"):
        sf.write(folder / f"{name}.wav", rng.normal(0, 0.2, 16000 * 3).astype(np.float32), 16000)
    return folder


def _arrays(group: StoreGroup) -> dict[str, np.ndarray]:
    out = {name: np.asarray(group.group[name][:]) for name in ("utt_ids", "mean", "std", "n_frames", "status")}
    for layer in group.frame_layers:
        node = group.group[f"frames/layer_{layer}"]
        out[f"f{layer}o"] = np.asarray(node["offsets"][:])
        out[f"f{layer}v"] = np.asarray(node["values"][:])
    return out


def _assert_same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert np.array_equal(a[name], b[name]), name


def test_extract_matches_one_at_a_time_and_verifies(tmp_path: Path, manifest: Manifest, encoder) -> None:
    store = FeatureStore(tmp_path / "s.zarr")
    result = extract(manifest, encoder, store, options=ExtractOptions(batch_size=4, frame_layers=(1, 2), progress=False))
    group = store.open(result.key)
    assert group.is_complete and result.processed == len(manifest)
    assert verify_group(group, manifest).ok
    ids, pooled = group.pooled()
    assert sorted(ids) == sorted(manifest.column("utt_id"))
    assert pooled.shape == (len(manifest), encoder.info.num_layers, encoder.info.dim)
    rows = {r["utt_id"]: r for r in manifest.rows}
    for utt, stored in zip(ids, pooled):
        wave, _ = load_audio(rows[utt]["path"], encoder.info.sample_rate)
        states = encoder.embed([wave])
        single, _ = pool_states(states.hidden, states.lengths)
        cos = (single[0] * stored).sum(-1) / (np.linalg.norm(single[0], axis=-1) * np.linalg.norm(stored, axis=-1))
        assert cos.min() >= 0.999, (utt, cos)
    f_ids, frames = group.frames(2)
    assert list(f_ids) == list(ids)
    for f, mean, n in zip(frames, pooled[:, 2], group.n_frames()):
        assert f.shape == (n, encoder.info.dim) and f.dtype == np.float16
        np.testing.assert_allclose(f.astype(np.float32).mean(0), mean, atol=2e-2, rtol=1e-2)
    prov = group.attrs
    assert prov["model"]["weights_hash"] == encoder.info.weights_hash
    assert prov["corpus"]["manifest_digest"] == manifest.digest()
    assert (prov["condition"]["key"], prov["condition"]["noise"], prov["condition"]["steps"]) == ("clean", None, [])
    assert prov["sample_rate"] == encoder.info.sample_rate and prov["fs_version"]


def test_rerun_is_idempotent(tmp_path: Path, manifest: Manifest, encoder) -> None:
    store = FeatureStore(tmp_path / "s.zarr")
    first = extract(manifest, encoder, store, options=ExtractOptions(progress=False))
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "s.zarr").rglob("*") if p.is_file() and ".locks" not in str(p)}
    again = extract(manifest, encoder, store, options=ExtractOptions(progress=False))
    assert again.already_done and again.processed == 0 and again.key == first.key
    after = {p: p.stat().st_mtime_ns for p in (tmp_path / "s.zarr").rglob("*") if p.is_file() and ".locks" not in str(p)}
    assert before == after


def test_interrupted_mid_batch_resumes_to_identical_values(tmp_path: Path, manifest: Manifest, encoder,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    options = ExtractOptions(batch_size=2, frame_layers=(1,), progress=False, commit_rows=1)
    clean = FeatureStore(tmp_path / "clean.zarr")
    reference = _arrays(clean.open(extract(manifest, encoder, clean, options=options).key))

    calls = {"n": 0}
    original = StoreGroup.commit

    def dying_write(self, batches, start, mean, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # half-written commit: rows land, the commit marker never does
            self.group["mean"][start:start + len(mean)] = mean
            raise OSError("the process dies here")
        return original(self, batches, start, mean, *args, **kwargs)

    monkeypatch.setattr(StoreGroup, "commit", dying_write)
    store = FeatureStore(tmp_path / "s.zarr")
    with pytest.raises(OSError, match="dies"):
        extract(manifest, encoder, store, options=options)
    monkeypatch.setattr(StoreGroup, "commit", original)
    key = store.keys()[0]
    assert not store.open(key).is_complete
    assert not verify_group(store.open(key), manifest).ok
    resumed = extract(manifest, encoder, store, options=options)
    assert resumed.processed == len(manifest) - 4
    _assert_same(_arrays(store.open(key)), reference)


# A real `fs extract` process that SIGKILLs itself in the middle of its third commit: the mean of
# those rows is written, the rest of the commit and its marker never are.
_DIE_MID_COMMIT = """
import os, signal, sys
from featurestore.store import StoreGroup
original, calls = StoreGroup.commit, []
def commit(self, batches, start, mean, *args, **kwargs):
    calls.append(1)
    if len(calls) == 3:
        self.group["mean"][start:start + len(mean)] = mean
        os.kill(os.getpid(), signal.SIGKILL)
    return original(self, batches, start, mean, *args, **kwargs)
StoreGroup.commit = commit
from cli.main import main
sys.argv = ["fs", *sys.argv[1:]]
main()
"""


def test_killed_process_resumes_to_identical_values(tmp_path: Path, urdu_root: Path) -> None:
    ws = tmp_path / "ws"
    # one torch thread in the processes and the reference: float sums differ in the last bits across
    # thread counts, and an earlier test may have changed this process's count
    env = {**os.environ, "FS_WORKSPACE": str(ws), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    args = ["extract", "--model", "tiny-wav2vec2", "--corpus", "urdu", "--batch-size", "2", "--frames", "2",
            "--commit-rows", "1"]
    manifest = build_manifest("urdu", "urdu", urdu_root)
    Workspace.open(ws).save_manifest(manifest)
    killed = subprocess.run([sys.executable, "-c", _DIE_MID_COMMIT, *args], env=env, capture_output=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()
    store = FeatureStore(ws / "store.zarr")
    key = store.keys()[0]
    group = store.open(key)
    assert not group.is_complete and int(group.batches_done().sum()) == 2
    resumed = subprocess.run([sys.executable, "-m", "cli.main", *args], env=env, capture_output=True, text=True)
    assert resumed.returncode == 0 and "resumed" in resumed.stdout + resumed.stderr, resumed.stderr
    assert not list((ws / "store.zarr" / key.path).rglob("*.partial"))
    reference = FeatureStore(tmp_path / "ref.zarr")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        extract(manifest, load_encoder("tiny-wav2vec2"), reference,
                options=ExtractOptions(batch_size=2, frame_layers=(2,), commit_rows=1, progress=False))
    finally:
        torch.set_num_threads(threads)
    _assert_same(_arrays(store.open(key)), _arrays(reference.open(key)))


def test_two_processes_two_models_one_store(tmp_path: Path, urdu_root: Path) -> None:
    ws = tmp_path / "ws"
    env = {**os.environ, "FS_WORKSPACE": str(ws), "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "cli.main"]
    subprocess.run([*cmd, "corpus", "add", "urdu", "--layout", "urdu", "--root", str(urdu_root)], env=env, check=True)
    procs = [subprocess.Popen([*cmd, "extract", "--model", m, "--corpus", "urdu", "--batch-size", "1"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for m in ("tiny-wav2vec2", "logmel")]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()
    res = CliRunner().invoke(fs, ["--workspace", str(ws), "store", "verify"])
    assert res.exit_code == 0, res.output
    assert sum(line.startswith("OK ") for line in res.output.splitlines()) == 2


def test_same_group_locked(tmp_path: Path, manifest: Manifest, encoder) -> None:
    from featurestore.extract import model_key
    from featurestore.store import StoreKey

    store = FeatureStore(tmp_path / "s.zarr")
    key = StoreKey(manifest.name, "clean", model_key(encoder.info))
    with store.lock(key):
        with pytest.raises(StoreError, match="another process"):
            extract(manifest, encoder, store, options=ExtractOptions(progress=False))


def test_noise_condition_is_keyed_deterministic_and_differs(tmp_path: Path, manifest: Manifest, encoder,
                                                            noise_dir: Path) -> None:
    spec = NoiseSpec(source=str(noise_dir), snr_db=10, seed=0)
    a = FeatureStore(tmp_path / "a.zarr")
    b = FeatureStore(tmp_path / "b.zarr")
    ka = extract(manifest, encoder, a, noise=spec, options=ExtractOptions(progress=False)).key
    kb = extract(manifest, encoder, b, noise=spec, options=ExtractOptions(progress=False)).key
    kc = extract(manifest, encoder, a, options=ExtractOptions(progress=False)).key
    assert ka == kb and ka.condition.startswith("noise-") and "snr10" in ka.condition and kc.condition == "clean"
    _assert_same(_arrays(a.open(ka)), _arrays(b.open(kb)))
    assert not np.allclose(a.open(ka).pooled()[1], a.open(kc).pooled()[1])
    assert a.open(ka).attrs["condition"]["noise"]["spec"]["snr_db"] == 10
    mix = a.open(ka).noise_mix()
    assert np.allclose(mix["snr_db"], 10, atol=1e-6) and set(mix["recording"]) <= {"hum.wav", "babble.wav"}
    assert (mix["offset"] >= 0).all() and a.open(kc).noise_mix() is None
    report = verify_group(a.open(ka), manifest)
    assert report.ok and report.facts["max_snr_error_db"] < 1e-6
    zarr.open_group(str(tmp_path / "b.zarr"), path=kb.path)["noise/snr_db"][0] = 3.0
    assert any("achieved SNR" in e for e in verify_group(b.open(kb), manifest).errors)
    other_seed = extract(manifest, encoder, a, noise=NoiseSpec(source=str(noise_dir), snr_db=10, seed=1),
                         options=ExtractOptions(progress=False)).key
    assert other_seed.condition != ka.condition


def test_resampling_and_downmix_48k_stereo(tmp_path: Path, emovo_root: Path) -> None:
    m = build_manifest("emovo", "emovo", emovo_root)
    enc = load_encoder("logmel")
    store = FeatureStore(tmp_path / "s.zarr")
    group = store.open(extract(m, enc, store, options=ExtractOptions(progress=False)).key)
    rows = {r["utt_id"]: r for r in m.rows}
    for utt, n in zip(group.utt_ids(), group.n_frames()):
        assert n == enc.num_frames(round(rows[utt]["duration"] * 16000))


def test_corrupt_audio_fail_or_skip(tmp_path: Path, urdu_root: Path, encoder) -> None:
    root = tmp_path / "urdu"
    shutil.copytree(urdu_root, root)
    m = build_manifest("urdu", "urdu", root)
    bad = Path(m.rows[3]["path"])
    bad.write_bytes(b"\x00corrupted after the corpus was added" * 50)
    store = FeatureStore(tmp_path / "s.zarr")
    with pytest.raises(ExtractError, match="--on-bad-audio skip") as info:
        extract(m, encoder, store, options=ExtractOptions(progress=False, batch_size=2))
    assert bad.name in str(info.value)
    result = extract(m, encoder, store, options=ExtractOptions(progress=False, batch_size=2, on_bad_audio="skip"))
    group = store.open(result.key)
    assert group.is_complete
    utt = m.rows[3]["utt_id"]
    assert utt in group.skipped() and bad.name in group.skipped()[utt]
    status = dict(zip(group.utt_ids(), group.status()))
    assert status[utt] == STATUS_SKIPPED and sum(s == STATUS_STORED for s in status.values()) == len(m) - 1
    assert utt not in group.pooled(0)[0]
    report = verify_group(group, m)
    assert report.ok and any("skipped" in w for w in report.warnings)


def test_disk_full_keeps_committed_work(tmp_path: Path, manifest: Manifest, encoder,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    options = ExtractOptions(batch_size=2, progress=False, commit_rows=1)
    ref_store = FeatureStore(tmp_path / "ref.zarr")
    reference = _arrays(ref_store.open(extract(manifest, encoder, ref_store, options=options).key))
    original = StoreGroup.commit
    calls = {"n": 0}

    def full_disk(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(StoreGroup, "commit", full_disk)
    store = FeatureStore(tmp_path / "s.zarr")
    with pytest.raises(ExtractError, match="disk full"):
        extract(manifest, encoder, store, options=options)
    monkeypatch.setattr(StoreGroup, "commit", original)
    key = store.keys()[0]
    assert store.open(key).batches_done().sum() == 1
    extract(manifest, encoder, store, options=options)
    _assert_same(_arrays(store.open(key)), reference)


def test_other_code_version_and_format(tmp_path: Path, manifest: Manifest, encoder,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    store = FeatureStore(tmp_path / "s.zarr")
    original = StoreGroup.commit

    def stop_after_first(self, batches, *args, **kwargs):
        original(self, batches, *args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(StoreGroup, "commit", stop_after_first)
    with pytest.raises(Interrupted) as stopped:
        extract(manifest, encoder, store, options=ExtractOptions(batch_size=2, progress=False, commit_rows=1))
    assert stopped.value.exit_code == 130 and "re-run the same command" in str(stopped.value)
    monkeypatch.setattr(StoreGroup, "commit", original)
    key = store.keys()[0]
    zarr.open_group(str(tmp_path / "s.zarr"), path=key.path).attrs["fs_version"] = "0.0.1"
    with pytest.raises(ExtractError, match="fs 0.0.1"):
        extract(manifest, encoder, store, options=ExtractOptions(batch_size=2, progress=False))
    zarr.open_group(str(tmp_path / "s.zarr"), path=key.path).attrs["format_version"] = 999
    with pytest.raises(StoreError, match="format 999"):
        store.open(key)
    done = extract(manifest, encoder, store, options=ExtractOptions(batch_size=2, progress=False, overwrite=True))
    assert store.open(done.key).is_complete


def test_identity_is_audio_not_paths_or_labels(tmp_path: Path, urdu_root: Path, encoder) -> None:
    """Moving, relabelling or shrinking a corpus keeps its groups valid; changed audio does not."""
    store = FeatureStore(tmp_path / "s.zarr")
    options = ExtractOptions(progress=False)
    first = build_manifest("urdu", "urdu", urdu_root)
    key = extract(first, encoder, store, options=options).key
    reference = _arrays(store.open(key))
    moved = tmp_path / "moved"
    shutil.copytree(urdu_root, moved)
    moved_manifest = build_manifest("urdu", "urdu", moved, labels="strict")
    report = verify_group(store.open(key), moved_manifest)
    assert report.ok, report.errors
    assert any("moved" in w for w in report.warnings) and any("relabelled" in w for w in report.warnings)
    assert extract(moved_manifest, encoder, store, options=options).already_done
    next(moved.rglob("*.wav")).unlink()  # one utterance fewer: the group still covers the corpus
    shrunk = build_manifest("urdu", "urdu", moved)
    report = verify_group(store.open(key), shrunk)
    assert report.ok and any("not in the current manifest" in w for w in report.warnings)
    assert extract(shrunk, encoder, store, options=options).already_done
    _assert_same(_arrays(store.open(key)), reference)
    victim = sorted(moved.rglob("*.wav"))[0]  # new audio under an old id: values are stale
    wave, sr = sf.read(victim)
    sf.write(victim, wave * 0.5, sr)
    changed = build_manifest("urdu", "urdu", moved)
    report = verify_group(store.open(key), changed)
    assert not report.ok and any("audio changed" in e for e in report.errors)
    with pytest.raises(ExtractError, match="audio of 1 stored utterance"):
        extract(changed, encoder, store, options=options)
    assert extract(changed, encoder, store, options=ExtractOptions(progress=False, overwrite=True)).processed
    assert verify_group(store.open(key), changed).ok


def test_audio_changed_after_corpus_add_is_refused(tmp_path: Path, urdu_root: Path, encoder) -> None:
    root = tmp_path / "urdu"
    shutil.copytree(urdu_root, root)
    manifest = build_manifest("urdu", "urdu", root)
    victim = sorted(root.rglob("*.wav"))[0]
    wave, sr = sf.read(victim)
    sf.write(victim, wave * 0.5, sr)
    with pytest.raises(ExtractError, match="changed since `fs corpus add`"):
        extract(manifest, encoder, FeatureStore(tmp_path / "s.zarr"), options=ExtractOptions(progress=False))


def test_cli_errors_unknown_model_and_corpus(tmp_path: Path, urdu_root: Path) -> None:
    runner = CliRunner()
    base = ["--workspace", str(tmp_path)]
    res = runner.invoke(fs, [*base, "extract", "--model", "tiny-wav2vec2", "--corpus", "nope"])
    assert res.exit_code != 0 and "not added" in res.output
    runner.invoke(fs, [*base, "corpus", "add", "urdu", "--layout", "urdu", "--root", str(urdu_root)])
    res = runner.invoke(fs, [*base, "extract", "--model", "no-such-model-xyz", "--corpus", "urdu"])
    assert res.exit_code != 0 and "no-such-model-xyz" in res.output
    res = runner.invoke(fs, [*base, "extract", "--model", "tiny-wav2vec2", "--corpus", "urdu", "--frames", "99"])
    assert res.exit_code != 0 and "99" in res.output
    assert not any((tmp_path / "store.zarr").rglob("mean")) if (tmp_path / "store.zarr").exists() else True


def test_store_ls_info_export(tmp_path: Path, urdu_root: Path) -> None:
    runner = CliRunner()
    base = ["--workspace", str(tmp_path)]
    runner.invoke(fs, [*base, "corpus", "add", "urdu", "--layout", "urdu", "--root", str(urdu_root)])
    assert runner.invoke(fs, [*base, "extract", "--model", "logmel", "--corpus", "urdu", "--frames", "0"]).exit_code == 0
    assert runner.invoke(fs, [*base, "store", "ls"]).exit_code == 0
    key = FeatureStore(tmp_path / "store.zarr").keys()[0].path
    assert key.startswith("urdu/clean/logmel-")
    info = runner.invoke(fs, [*base, "store", "info", key])
    assert info.exit_code == 0 and "weights_hash" in info.output
    out = tmp_path / "x.h5"
    res = runner.invoke(fs, [*base, "store", "export", key, "--format", "h5", "--out", str(out)])
    assert res.exit_code == 0, res.output
    import h5py

    group = FeatureStore(tmp_path / "store.zarr").open(key)
    with h5py.File(out) as h5:
        assert np.array_equal(h5["mean"][:], group.group["mean"][:])
        assert [u.decode() for u in h5["utt_ids"][:]] == list(group.utt_ids())
        assert np.array_equal(h5["frames/layer_0/offsets"][:], group.group["frames/layer_0/offsets"][:])
        assert "manifest_digest" in h5.attrs["provenance"]
    res = runner.invoke(fs, [*base, "store", "rm", key], input="n\n")
    assert res.exit_code != 0 and FeatureStore(tmp_path / "store.zarr").keys()
    res = runner.invoke(fs, [*base, "store", "rm", key, "--yes"])
    assert res.exit_code == 0 and FeatureStore(tmp_path / "store.zarr").keys() == []
    res = runner.invoke(fs, [*base, "store", "rm", key, "--yes"])
    assert res.exit_code != 0 and "no group" in res.output


def test_cli_several_snrs_and_find(tmp_path: Path, urdu_root: Path, noise_dir: Path) -> None:
    runner = CliRunner()
    base = ["--workspace", str(tmp_path / "ws")]
    runner.invoke(fs, [*base, "corpus", "add", "urdu", "--layout", "urdu", "--root", str(urdu_root)])
    res = runner.invoke(fs, [*base, "extract", "--model", "logmel", "--corpus", "urdu", "--noise", str(noise_dir),
                             "--snr", "0", "--snr", "10"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(fs, [*base, "extract", "--model", "logmel", "--corpus", "urdu"])
    assert res.exit_code == 0, res.output
    store = FeatureStore(tmp_path / "ws" / "store.zarr")
    conditions = sorted(k.condition for k in store.find(corpus="urdu", model="logmel"))
    assert len(conditions) == 3 and conditions[0] == "clean"
    assert any(c.endswith("snr0-seed0") for c in conditions) and any(c.endswith("snr10-seed0") for c in conditions)
    assert store.find(corpus="urdu", model="tiny-wav2vec2") == []
    assert len(store.find(condition="clean")) == 1


def test_cli_models_lists_registry() -> None:
    res = CliRunner().invoke(fs, ["models"])
    assert res.exit_code == 0
    for alias in ("wav2vec2", "xlsr", "whisper", "mms", "logmel", "wav2vec2-random"):
        assert alias in res.output
    assert "facebook/mms-300m" in res.output


def test_real_whisper_base_on_urdu_clean_and_noisy(tmp_path: Path, shared_dir: Path) -> None:
    """The real pretrained Whisper-base encoder (trim mode, for speed) on 8 real URDU files, clean and 10 dB."""
    m = build_manifest("urdu", "urdu", shared_dir / "corpora" / "URDU")
    m.rows = [r for r in m.rows if r["label"] in ("angry", "sad")][::25][:8]
    enc = load_encoder(str(shared_dir / "models" / "whisper-base-encoder"), whisper_input="trim")
    store = FeatureStore(tmp_path / "s.zarr")
    clean = store.open(extract(m, enc, store, options=ExtractOptions(batch_size=4, progress=False)).key)
    noisy = store.open(extract(m, enc, store, noise=NoiseSpec(str(shared_dir / "noise"), snr_db=10),
                               options=ExtractOptions(batch_size=4, progress=False)).key)
    for group in (clean, noisy):
        assert verify_group(group, m).ok
        assert group.attrs["model"]["pretrained"] and group.num_layers == 7 and group.dim == 512
    ids, a = clean.pooled(6)
    ids_n, b = noisy.pooled(6)
    assert list(ids) == list(ids_n)
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert 0.5 < cos.mean() < 0.9999  # noise moves the embedding, but it is the same speech
    rows = {r["utt_id"]: r for r in m.rows}
    assert list(clean.n_frames()) == [enc.num_frames(round(rows[u]["duration"] * 16000)) for u in ids]


def test_dataloader_workers_give_identical_values(tmp_path: Path, manifest: Manifest, encoder, noise_dir: Path) -> None:
    spec = NoiseSpec(source=str(noise_dir), snr_db=5, seed=3)
    a, b = FeatureStore(tmp_path / "a.zarr"), FeatureStore(tmp_path / "b.zarr")
    ka = extract(manifest, encoder, a, noise=spec, options=ExtractOptions(progress=False, num_workers=0)).key
    kb = extract(manifest, encoder, b, noise=spec, options=ExtractOptions(progress=False, num_workers=2)).key
    _assert_same(_arrays(a.open(ka)), _arrays(b.open(kb)))


def test_buffered_commits_store_the_same_bytes(tmp_path: Path, manifest: Manifest, encoder) -> None:
    a, b = FeatureStore(tmp_path / "a.zarr"), FeatureStore(tmp_path / "b.zarr")
    ka = extract(manifest, encoder, a, options=ExtractOptions(batch_size=2, commit_rows=1, frame_layers=(0,),
                                                               progress=False)).key
    kb = extract(manifest, encoder, b, options=ExtractOptions(batch_size=2, commit_rows=5, frame_layers=(0,),
                                                               progress=False)).key
    _assert_same(_arrays(a.open(ka)), _arrays(b.open(kb)))
    assert a.open(ka).batches_done().all() and b.open(kb).batches_done().all()


def test_progress_lines_in_logs(tmp_path: Path, manifest: Manifest, encoder, capsys: pytest.CaptureFixture) -> None:
    """Off a terminal, extraction writes plain progress lines on stderr (counts, rate, ETA, the end)."""
    store = FeatureStore(tmp_path / "s.zarr")
    extract(manifest, encoder, store, options=ExtractOptions(batch_size=2, progress_interval_s=0))
    lines = capsys.readouterr().err.splitlines()
    n = len(manifest.rows)
    assert lines[0].startswith("urdu/clean tiny-wav2vec2: started") and f"{n} utt to do" in lines[0]
    assert any(f"/{n} utt (" in line and "utt/s" in line and "ETA" in line for line in lines[1:-1])
    assert lines[-1].startswith(f"urdu/clean tiny-wav2vec2: finished {n}/{n} utt in ")
