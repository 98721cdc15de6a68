"""Conditions in extraction: store key, records beside the features, verify, printed commands, CLI, Ray worker."""

from __future__ import annotations

import json
import pickle
import shlex
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import zarr
from click.testing import CliRunner

from cli.extract import extract as extract_cli
from cli.main import fs
from data_manifests.manifest import Manifest, build_manifest
from data_manifests.synth import generate_corpus
from featurestore.audio import load_audio
from featurestore.conditions import ConditionChain, columns_to_records, record_json
from featurestore.encoders import load_encoder
from featurestore.extract import ExtractOptions, compute_block, decode_row, extract
from featurestore.hints import command_for_group
from featurestore.noise import NoiseBank, NoiseSpec
from featurestore.store import FeatureStore, StoreGroup
from featurestore.verify import verify_group
from featurestore.workspace import Workspace

OPTIONS = ExtractOptions(progress=False, batch_size=4)
CHAIN = ["reverb:rt60=0.2-0.6", "telephone:codec=mp3,bitrate=8-32", "gain:db=-6-0", "noise:snr=5"]


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cond")


@pytest.fixture(scope="module")
def manifest(work: Path) -> Manifest:
    return build_manifest("urdu", "urdu", generate_corpus("urdu", work / "urdu", size="tiny"))


@pytest.fixture(scope="module")
def noise_dir(work: Path) -> Path:
    folder = work / "noise"
    folder.mkdir()
    for i, name in enumerate(("hum", "babble")):
        sf.write(folder / f"{name}.wav", np.random.default_rng(i).normal(0, 0.2, 16000 * 2).astype(np.float32), 16000)
    return folder


@pytest.fixture(scope="module")
def encoder():
    return load_encoder("tiny-wav2vec2", seed=0)


@pytest.fixture(scope="module")
def chained(work: Path, manifest: Manifest, encoder, noise_dir: Path) -> tuple[FeatureStore, StoreGroup, ConditionChain]:
    store = FeatureStore(work / "s.zarr")
    chain = ConditionChain.parse(CHAIN, seed=2, noise=str(noise_dir))
    result = extract(manifest, encoder, store, condition=chain, options=OPTIONS)
    return store, store.open(result.key), chain


def _clean(manifest: Manifest, utt_id: str) -> np.ndarray:
    row = next(r for r in manifest.rows if r["utt_id"] == utt_id)
    return load_audio(row["path"], 16000)[0]


def test_group_is_keyed_by_the_chain_and_records_replay_exactly(chained, manifest: Manifest) -> None:
    store, group, chain = chained
    assert group.key.condition == chain.key and group.is_complete
    columns = group.condition_columns()
    assert sorted({name.split(".")[1] for name in columns}) == ["gain", "noise", "reverb", "telephone"]
    records = columns_to_records(columns)
    ids = group.utt_ids()
    assert len(records) == ids.size == len(manifest)
    fresh = ConditionChain.from_dict(group.attrs["condition"])
    for utt, record in zip(ids.tolist(), records):
        clean = _clean(manifest, utt)
        out, again = fresh.apply(clean, 16000, utt)
        assert record_json(again) == record_json(record)
        assert np.array_equal(fresh.replay(clean, 16000, record), out)
    # format 3's noise columns are still written, from the noise step's records
    mix = group.noise_mix()
    assert np.array_equal(mix["offset"], columns["3.noise.offset"]) and np.allclose(mix["snr_db"], 5.0, atol=1e-6)


def test_provenance_names_the_chain_and_keeps_the_noise_bank(chained, noise_dir: Path) -> None:
    _, group, chain = chained
    condition = group.attrs["condition"]
    assert condition["key"] == chain.key and condition["text"] == chain.text and condition["seed"] == 2
    assert ConditionChain.from_dict(condition) == chain == group.condition_chain()
    bank = NoiseBank(chain.noise_spec(), 16000)
    assert json.loads(json.dumps(bank.describe())) == condition["noise"]


def test_printed_command_reproduces_the_group(chained, manifest: Manifest, encoder) -> None:
    store, group, chain = chained
    command = group.extract_command()
    assert command == command_for_group(group.provenance, "urdu")
    args = shlex.split(command)
    assert args.count("--condition") == 4 and "--snr" not in args
    with extract_cli.make_context("extract", args[2:]) as ctx:
        params = ctx.params
    again = ConditionChain.parse(list(params["conditions"]), seed=params["noise_seed"])
    assert again.key == chain.key
    assert extract(manifest, encoder, store, condition=again, options=OPTIONS).already_done


def test_records_add_under_one_percent_to_the_group(chained) -> None:
    """The records against the pooled features the same rows take in whisper-base (7 x 512, the smallest real
    encoder) at the compression measured here (features grow with layers x dim, records do not): per row, and
    in all (the columns' metadata, a few hundred bytes each, included) for a corpus of URDU's 400 utterances.
    bench/bench_conditions.py measures it on real URDU with real whisper-base."""
    store, group, _ = chained
    root = Path(store.url) / group.key.path
    n = group.utt_ids().size
    files = [p for p in (root / "condition").rglob("*") if p.is_file()]
    chunks = sum(p.stat().st_size for p in files if "/c/" in p.as_posix())
    metadata = sum(p.stat().st_size for p in files) - chunks
    features = sum(p.stat().st_size for stat in ("mean", "std") for p in (root / stat).rglob("*") if p.is_file())
    whisper_row = 2 * 7 * 512 * features / (2 * n * group.num_layers * group.dim)
    assert chunks / n < 0.01 * whisper_row, (chunks / n, whisper_row)
    assert metadata + 400 * chunks / n < 0.01 * 400 * whisper_row, (metadata, chunks / n, whisper_row)


def test_verify_rederives_records_and_replays_features(chained, manifest: Manifest, encoder, work: Path) -> None:
    store, group, _ = chained
    report = verify_group(group, manifest, replay=2, encoder=encoder)
    assert report.ok, report.errors
    assert report.facts["condition_records_checked"] == 8 and report.facts["replay_rows"] == 2
    assert report.facts["replay_min_cosine"] >= 0.999
    # a tampered record (another rt60 than (seed, utterance id) draws) fails verification
    copy = work / "tampered.zarr"
    import shutil

    shutil.copytree(store.url, copy)
    tampered = FeatureStore(copy).open(group.key)
    array = zarr.open_group(str(copy), path=group.key.path)["condition/0.reverb.rt60"]
    array[:] = np.asarray(array[:]) + 0.01
    errors = verify_group(tampered, manifest).errors
    assert any("condition record(s) differ from conditioning the audio again" in e for e in errors), errors


def test_noise_flags_keep_todays_key_and_old_stores_stay_valid(work: Path, manifest: Manifest, encoder,
                                                               noise_dir: Path) -> None:
    spec = NoiseSpec(str(noise_dir), 10.0, seed=3)
    store = FeatureStore(work / "old.zarr")
    old = extract(manifest, encoder, store, noise=spec, options=OPTIONS)
    assert old.key.condition == spec.key() == ConditionChain.from_noise(spec).key
    group = store.open(old.key)
    # make it a group written before chains were recorded: provenance {key, noise}, no condition/ columns
    raw = zarr.open_group(str(store.url), path=old.key.path, mode="a")
    attrs = dict(raw.attrs)
    attrs["condition"] = {"key": attrs["condition"]["key"], "noise": attrs["condition"]["noise"]}
    raw.attrs.put(attrs)
    del raw["condition"]
    assert group.condition_columns() == {} and group.condition_chain().key == old.key.condition
    again = extract(manifest, encoder, store, condition=ConditionChain.from_noise(spec), options=OPTIONS)
    assert again.key == old.key and again.already_done
    report = verify_group(store.open(old.key), manifest)
    assert report.ok and any("before condition records were kept" in w for w in report.warnings)


def test_ray_worker_reproduces_the_records(chained, manifest: Manifest, encoder) -> None:
    """A worker gets the chain pickled (no built steps), rebuilds it and computes the same block."""
    from featurestore.distributed import EncoderSpec, _Worker

    _, group, chain = chained
    by_id = {r["utt_id"]: r for r in manifest.rows}
    rows = [by_id[u] for u in group.utt_ids()[:4].tolist()]
    worker = _Worker(EncoderSpec("tiny-wav2vec2", seed=0), threads=1)
    remote, _, _ = worker.run(0, 0, rows, pickle.loads(pickle.dumps(chain)), (), "fail")
    local_items = [decode_row(i, row, 16000, chain) for i, row in enumerate(rows)]
    local = compute_block(0, 0, local_items, rows, encoder, conditioned=True)
    assert [record_json(r) for r in remote.records] == [record_json(r) for r in local.records]
    assert np.array_equal(remote.mean, local.mean)



def test_ray_worker_refuses_other_noise_files(manifest: Manifest, tmp_path: Path) -> None:
    from featurestore.distributed import DistributedError, EncoderSpec, _Worker

    folder = tmp_path / "noise"
    folder.mkdir()
    sf.write(folder / "hum.wav", np.random.default_rng(0).normal(0, 0.2, 16000).astype(np.float32), 16000)
    chain = ConditionChain.parse(["gain:db=-3", "noise:snr=5"], noise=str(folder))
    assert chain.key  # the driver's key, computed from its files
    sf.write(folder / "hum.wav", np.random.default_rng(1).normal(0, 0.2, 16000).astype(np.float32), 16000)
    worker = _Worker(EncoderSpec("logmel"), threads=1)
    with pytest.raises(DistributedError, match="differ from the driver's"):
        worker.run(0, 0, manifest.rows[:2], pickle.loads(pickle.dumps(chain)), (), "fail")


def _workspace(work: Path, manifest: Manifest, name: str) -> Workspace:
    ws = Workspace.open(work / name)
    ws.save_manifest(manifest, force=True)
    return ws


def test_cli_extracts_a_chain_and_lists_its_text(work: Path, manifest: Manifest, noise_dir: Path) -> None:
    ws = _workspace(work, manifest, "ws")
    base = ["--workspace", str(ws.root), "extract", "--model", "logmel", "--corpus", "urdu", "--no-progress"]
    res = CliRunner().invoke(fs, [*base, "--condition", "reverb:rt60=0.3", "--condition", "noise:snr=5",
                                  "--noise", str(noise_dir), "--noise-seed", "4"])
    assert res.exit_code == 0, res.output
    chain = ConditionChain.parse(["reverb:rt60=0.3", "noise:snr=5"], seed=4, noise=str(noise_dir))
    assert chain.key in res.output
    listing = CliRunner().invoke(fs, ["--workspace", str(ws.root), "store", "ls"])
    assert "reverb:drr=0,rt60=0.3 > noise:" in listing.output, listing.output
    entries = json.loads(CliRunner().invoke(fs, ["--workspace", str(ws.root), "store", "ls", "--json"]).output)
    assert {e["condition_text"] for e in entries} == {chain.text}
    checked = CliRunner().invoke(fs, ["--workspace", str(ws.root), "store", "verify", "--replay", "2", "--json"])
    assert checked.exit_code == 0, checked.output
    facts = json.loads(checked.output)[0]["facts"]
    assert facts["condition_records_checked"] == 8 and facts["replay_rows"] == 2 and facts["replay_min_cosine"] > 0.999


@pytest.mark.parametrize("args, message", [
    (["--condition", "echo"], "error: unknown condition 'echo'; valid: clipping, gain, noise, reverb, telephone"),
    (["--condition", "reverb:rt=1"], "unknown parameter 'rt' for reverb; valid: drr, ir, rt60"),
    (["--condition", "reverb:rt60=-0.5"], "rt60=-0.5 must be above 0 s"),
    (["--condition", "noise:snr=nan", "--noise", "."], "snr=nan must be finite"),
    (["--condition", "telephone:band=300-5000"], "reaches the Nyquist frequency 4000 Hz"),
    (["--condition", "noise:snr=5"], "needs a noise source: --noise DIR or noise:source=DIR"),
    (["--condition", "telephone:rate=48000"], "rate=48000 is above the audio's sample rate 16000 Hz"),
])
def test_cli_bad_conditions_are_one_line_exit_1(work: Path, manifest: Manifest, args: list[str], message: str) -> None:
    ws = _workspace(work, manifest, "ws-bad")
    res = CliRunner().invoke(fs, ["--workspace", str(ws.root), "extract", "--model", "logmel", "--corpus", "urdu",
                                  "--no-progress", *args])
    assert res.exit_code == 1 and message in res.stderr and res.stderr.count("\n") == 1, res.stderr
    assert not FeatureStore(ws.store_url).keys()


@pytest.mark.parametrize("args, message", [
    (["--condition", "reverb:rt60=0.3", "--snr", "5", "--noise", "."], "--snr goes with --noise alone"),
    (["--condition", "reverb:rt60=0.3", "--noise", "."], "no --condition is a noise step"),
])
def test_cli_condition_flag_misuse_is_a_usage_error(work: Path, manifest: Manifest, args: list[str],
                                                    message: str) -> None:
    ws = _workspace(work, manifest, "ws-usage")
    res = CliRunner().invoke(fs, ["--workspace", str(ws.root), "extract", "--model", "logmel", "--corpus", "urdu",
                                  *args])
    assert res.exit_code == 2 and message in res.output
