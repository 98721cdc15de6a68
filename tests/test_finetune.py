"""``fs finetune``: head, CNN-LSTM and top-layer LoRA from a tiny store, in the probe's record, ledger and errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import click
import numpy as np
import pytest
from click.testing import CliRunner

from classifiers.studies import finetune as finetune_module
from classifiers.studies.engine import run as engine_run
from classifiers.studies.finetune import FinetuneConfig, FinetuneError, FrameCache, checkpoint_root
from classifiers.studies.ledger import Ledger
from classifiers.studies.protocols import ProbeConfig, run_probe
from cli.main import fs
from data_manifests.manifest import build_manifest
from data_manifests.synth import generate_corpus
from featurestore.encoders import load_encoder
from featurestore.extract import ExtractOptions, extract
from featurestore.store import FeatureStore
from featurestore.workspace import Workspace


def run_finetune(*args, **kwargs) -> dict:
    """:func:`classifiers.studies.finetune.run_finetune`'s result as its record."""
    return finetune_module.run_finetune(*args, **kwargs).to_record()


def finetune(*args, **kwargs) -> dict:
    """A fine-tuning run through the ledger (:func:`classifiers.studies.engine.run`), as its record."""
    result = engine_run(*args, **kwargs)
    return {**result.to_record(), "from_ledger": result.from_ledger}


W2V = "tiny-wav2vec2"  # layers 0..2, 32 wide
EXTRA_KEYS = {"method", "checkpoints", "train_seconds", "training", "dev_uar_per_epoch"}


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Workspace, FeatureStore]:
    """Tiny EMODB (15 utterances) and URDU (12), 3 speakers each: log-mel frames, tiny-wav2vec2 frames of
    layer 1, tiny-whisper trim frames of layer 1; EMODB also tiny-whisper full with frames of layer 1."""
    tmp = tmp_path_factory.mktemp("finetune")
    ws = Workspace.open(tmp / "ws")
    store = FeatureStore(ws.store_url)
    for name in ("emodb", "urdu"):
        manifest = build_manifest(name, name, generate_corpus(name, tmp / name, size="tiny"))
        ws.save_manifest(manifest)
        for model, kw, layers in (("logmel", {}, (0,)), (W2V, {}, (1,)),
                                  ("tiny-whisper", {"whisper_input": "trim"}, (1,))):
            extract(manifest, load_encoder(model, **kw), store,
                    options=ExtractOptions(progress=False, frame_layers=layers))
        if name == "emodb":
            extract(manifest, load_encoder("tiny-whisper", whisper_input="full"), store,
                    options=ExtractOptions(progress=False, frame_layers=(1,)))
    return ws, store


def run(ws: Workspace, *args: str) -> click.testing.Result:
    return CliRunner().invoke(fs, ["--workspace", str(ws.root), "finetune", "--epochs", "1", *args])


def probe_keys(ws: Workspace, store: FeatureStore) -> set[str]:
    return set(run_probe(ProbeConfig(source="emodb", target="urdu", model=W2V, seeds=1), store, ws).to_dict())


@pytest.mark.parametrize("args", [
    ("--method", "cnn-lstm"),
    ("--method", "cnn-lstm", "--norm", "corpus"),
    ("--method", "lora", "--model", W2V, "--from-layer", "1"),
    ("--method", "lora", "--model", "tiny-whisper", "--whisper-input", "trim", "--from-layer", "1", "--rank", "2"),
])
def test_each_method_end_to_end_in_the_ledger(setup, args: tuple[str, ...]) -> None:
    ws, store = setup
    common = ("--source", "emodb", "--target", "urdu", "--seeds", "2", "--json")
    first = run(ws, *args, *common)
    assert first.exit_code == 0, first.output
    result = json.loads(first.stdout)
    assert set(result) - {"from_ledger"} == probe_keys(ws, store) | EXTRA_KEYS
    assert not result["from_ledger"] and len(result["uar_per_seed"]) == 2 and 0 <= result["uar_mean"] <= 1
    assert result["chance"] == 0.25 and result["protocol"] == "cross-language" and result["metrics"][0]["n"] == 12
    assert [t["seed"] for t in result["training"]] == [0, 1] and result["train_seconds"] > 0
    assert all(t["dev_split"] in ("speaker", "none") and 1 <= t["best_epoch"] for t in result["training"])
    for path in result["checkpoints"]:
        record = json.loads((Path(path) / "run.json").read_text())
        assert record["store_keys"] == sorted(result["provenance"][s]["store_key"] for s in ("source", "target"))
    assert Path(result["checkpoints"][0]).parent == checkpoint_root(ws, FinetuneConfig.from_dict(result["config"]))
    assert result["transductive"] == ("corpus" in args)
    assert result["whisper_input"] == ("trim" if "tiny-whisper" in args else None)  # the mode of the groups read
    assert result["dev_uar_per_epoch"] == [[h["dev_uar"] for h in t["history"]] for t in result["training"]]
    if "lora" in args:
        assert result["layer"] == 2 and result["provenance"]["classifier"]["params"]["from_layer"] == 1
    rows = Ledger.open(ws).rows(config_key=result["config_key"])
    assert len(rows) == 1 and rows[0]["uar_per_seed"] == result["uar_per_seed"]
    again = json.loads(run(ws, *args, *common).stdout)
    assert again["from_ledger"] and again["uar_per_seed"] == result["uar_per_seed"]


def test_head_is_the_probe_with_the_mlp(setup) -> None:
    ws, store = setup
    out = run(ws, "--method", "head", "--model", W2V, "--source", "emodb", "--target", "urdu", "--seeds", "1")
    assert out.exit_code == 0, out.output
    assert "method head" in out.output and "UAR " in out.output and "chance 25.0 %" in out.output
    config = FinetuneConfig(method="head", source="emodb", target="urdu", model=W2V, seeds=1, epochs=1)
    probe = ProbeConfig(source="emodb", target="urdu", model=W2V, seeds=1, classifier="mlp",
                        classifier_params={"epochs": 1})
    assert config.key() == probe.key()
    assert Ledger.open(ws).get(probe.key())["method"] == "head"


def test_checkpoints_resume_a_longer_run_and_give_the_same_model(setup) -> None:
    ws, store = setup
    one = FinetuneConfig(method="cnn-lstm", source="urdu", target="emodb", seeds=1, epochs=1)
    first = run_finetune(one, store, ws)
    two = run_finetune(FinetuneConfig(method="cnn-lstm", source="urdu", target="emodb", seeds=2, epochs=1), store, ws)
    assert [t["resumed"] for t in two["training"]] == [True, False]
    assert two["uar_per_seed"][0] == first["uar_per_seed"][0] and two["metrics"][0] == first["metrics"][0]
    lora = FinetuneConfig(method="lora", source="urdu", target="emodb", model=W2V, from_layer=1, seeds=1, epochs=1)
    a, b = run_finetune(lora, store, ws), run_finetune(lora, store, ws)
    assert b["training"][0]["resumed"] and b["metrics"] == a["metrics"]
    fresh = run_finetune(lora, store, ws, rerun=True)
    assert not fresh["training"][0]["resumed"] and fresh["metrics"] == a["metrics"]  # seeded: same weights


def test_few_shot_with_target_only_baseline_and_within_corpus(setup) -> None:
    ws, store = setup
    out = run(ws, "--method", "lora", "--model", W2V, "--from-layer", "1", "--source", "emodb", "--target", "urdu",
              "--seeds", "1", "--shots", "0,1", "--json")
    assert out.exit_code == 0, out.output
    zero, one = json.loads(out.stdout)
    assert zero["baseline"] is None and one["protocol"] == "few-shot"
    assert one["baseline"]["uar_per_seed"] and len(one["shots"][0]["ids"]) == 4
    assert one["metrics"][0]["n"] == 12 - 4 and one["n_train"] == [15 + 4]
    assert {Path(p).name for p in one["checkpoints"]} == {"seed0", "seed0-baseline"}
    within = run_finetune(FinetuneConfig(method="cnn-lstm", source="emodb", target="emodb", seeds=1, epochs=1),
                          store, ws)
    assert within["protocol"] == "within-corpus" and any("one speaker-independent" in w for w in within["warnings"])
    assert 0 < within["metrics"][0]["n"] < 15


def test_frames_are_streamed_through_a_bounded_cache(setup) -> None:
    ws, store = setup
    group = store.open(store.resolve("emodb", W2V))
    whole = group.frame_rows(1, np.arange(15))
    cache = FrameCache(group, 1, max_bytes=3 * whole[0].nbytes)
    got = cache(np.array([4, 2, 4]))
    assert all(np.array_equal(g, whole[i]) for g, i in zip(got, (4, 2, 4))) and cache.reads == 2
    cache(np.arange(15))
    assert cache._bytes <= 3 * whole[0].nbytes and cache.reads == 2 + 13


def test_bad_input_is_one_clear_line_and_writes_nothing(setup) -> None:
    ws, store = setup
    before = len(Ledger.open(ws))
    roots = set((Path(ws.root) / "checkpoints").iterdir()) if (Path(ws.root) / "checkpoints").exists() else set()
    pair = ("--source", "emodb", "--target", "urdu", "--seeds", "1")
    cases = {
        "no frames": (("--method", "lora", "--model", W2V, "--from-layer", "0"),
                      f"fs extract --model {W2V} --corpus emodb --seed 0 --frames 0,1 --overwrite"),
        "out of range": (("--method", "lora", "--model", W2V, "--from-layer", "2"), "out of range"),
        "no modules": (("--method", "lora", "--model", W2V, "--from-layer", "1", "--target-modules", "foo_proj"),
                       "no module named ['foo_proj']"),
        "whisper full": (("--method", "lora", "--model", "tiny-whisper", "--whisper-input", "full", "--from-layer",
                          "1"), "--whisper-input trim"),
        "needs a layer": (("--method", "lora", "--model", W2V), "--from-layer K"),
        "not log-mel": (("--method", "cnn-lstm", "--model", W2V), "--model logmel"),
    }
    for name, (args, message) in cases.items():
        out = run(ws, *args, *pair)
        assert out.exit_code == 1, (name, out.output)
        assert message in out.output and "Traceback" not in out.output, (name, out.output)
    usage = run(ws, "--method", "cnn-lstm", "--rank", "4", *pair)
    assert usage.exit_code == 2 and "--rank is for --method lora" in usage.output
    assert len(Ledger.open(ws)) == before
    after = set((Path(ws.root) / "checkpoints").iterdir()) if (Path(ws.root) / "checkpoints").exists() else set()
    assert after == roots


def test_a_checkpoint_of_another_configuration_is_refused(setup, tmp_path: Path) -> None:
    ws, store = setup
    config = FinetuneConfig(method="cnn-lstm", source="emodb", target="urdu", seeds=1, epochs=1, lr=3e-4)
    result = run_finetune(config, store, ws)
    seed0 = Path(result["checkpoints"][0])
    other = FinetuneConfig(method="cnn-lstm", source="emodb", target="urdu", seeds=1, epochs=1, lr=5e-4)
    target = checkpoint_root(ws, other) / "seed0"
    shutil.copytree(seed0, target)  # a folder copied in by hand
    with pytest.raises(FinetuneError, match="comes from another configuration.*--rerun"):
        run_finetune(other, store, ws)
    assert run_finetune(other, store, ws, rerun=True)["training"][0]["resumed"] is False


def test_last_epoch_best_is_warned_with_the_flag_and_dev_uar_is_printed_per_epoch(setup) -> None:
    ws, store = setup
    args = ("--method", "cnn-lstm", "--source", "urdu", "--target", "emodb", "--seeds", "2", "--lr", "2e-4")
    out = run(ws, *args, "--json")  # one epoch: the best dev epoch is always the last
    assert out.exit_code == 0, out.output
    result = json.loads(out.stdout)
    assert [len(curve) for curve in result["dev_uar_per_epoch"]] == [1, 1]
    late = [w for w in result["warnings"] if "best dev epoch was the last" in w]
    assert len(late) == 1 and "seed(s) 0, 1" in late[0] and "--epochs 2" in late[0]
    text = run(ws, *args)
    assert "warning: the best dev epoch was the last one (1 of 1)" in text.stdout and "--epochs 2" in text.stdout
    curve = [line for line in text.stdout.splitlines() if "dev UAR % by epoch" in line]
    assert [line.split(":")[0].strip() for line in curve] == ["dev UAR % by epoch, seed 0", "dev UAR % by epoch, seed 1"]
    three = run_finetune(FinetuneConfig(method="cnn-lstm", source="urdu", target="emodb", seeds=2, epochs=3, lr=2e-4),
                         store, ws)
    assert [len(curve) for curve in three["dev_uar_per_epoch"]] == [3, 3]
    last = [t["seed"] for t in three["training"] if t["best_epoch"] == 3]
    warned = [w for w in three["warnings"] if "best dev epoch was the last" in w]
    assert bool(warned) == bool(last) and all("--epochs 6" in w for w in warned)


def test_progress_lines_on_stderr_when_not_a_terminal(setup) -> None:
    ws, _ = setup
    out = run(ws, "--method", "cnn-lstm", "--source", "urdu", "--target", "emodb", "--seeds", "2", "--lr", "3e-4",
              "--json")
    assert out.exit_code == 0, out.output
    lines = out.stderr.splitlines()
    assert lines[0] == "fine-tune cnn-lstm urdu -> emodb: started, 2 epochs to do"
    for seed in (0, 1):
        epoch = [x for x in lines if x.startswith(f"fine-tune cnn-lstm urdu -> emodb: seed {seed} epoch 1/1: ")]
        assert len(epoch) == 1 and "train loss" in epoch[0] and "dev UAR" in epoch[0] and "%" in epoch[0]
    assert lines[-1].startswith("fine-tune cnn-lstm urdu -> emodb: finished 2/2 epochs in")
    json.loads(out.stdout)  # stdout keeps the result alone


def _relabel(ws: Workspace, corpus: str) -> None:
    """Swap the labels of the first two utterances of different classes (a label fix)."""
    manifest = ws.load_manifest(corpus)
    rows = manifest.rows
    j = next(i for i, r in enumerate(rows) if r["label"] != rows[0]["label"])
    rows[0]["label"], rows[j]["label"] = rows[j]["label"], rows[0]["label"]
    ws.save_manifest(manifest, force=True)


@pytest.fixture()
def logmel_ws(tmp_path: Path) -> tuple[Workspace, FeatureStore, Path]:
    """A workspace of its own (it is relabelled and re-extracted): tiny EMODB and URDU log-mel frames."""
    ws = Workspace.open(tmp_path / "ws")
    store = FeatureStore(ws.store_url)
    for name in ("emodb", "urdu"):
        manifest = build_manifest(name, name, generate_corpus(name, tmp_path / name, size="tiny"))
        ws.save_manifest(manifest)
        extract(manifest, load_encoder("logmel"), store, options=ExtractOptions(progress=False, frame_layers=(0,)))
    return ws, store, tmp_path


def test_a_checkpoint_trained_on_other_labels_or_audio_is_never_reused(logmel_ws) -> None:
    ws, store, tmp = logmel_ws
    config = FinetuneConfig(method="cnn-lstm", source="emodb", target="urdu", seeds=1, epochs=1)
    first = run_finetune(config, store, ws)
    before = json.loads((Path(first["checkpoints"][0]) / "run.json").read_text())["data_digest"]
    assert run_finetune(config, store, ws)["training"][0]["resumed"]  # same data: reused
    _relabel(ws, "emodb")
    relabelled = finetune(config, store, ws)  # through the ledger, as `fs finetune` runs it
    assert not relabelled["from_ledger"] and not relabelled["training"][0]["resumed"]
    assert any("was trained on other labels" in w and "retrained" in w for w in relabelled["warnings"])
    record = json.loads((Path(relabelled["checkpoints"][0]) / "run.json").read_text())
    assert record["data_digest"] != before
    assert run_finetune(config, store, ws)["training"][0]["resumed"]  # the retrained one is reused
    # the audio of one training utterance changes; the corpus is re-added and its group re-extracted
    manifest = ws.load_manifest("emodb")
    wav = Path(manifest.rows[0]["path"])
    import soundfile as sf

    audio, rate = sf.read(wav)
    sf.write(wav, audio[::-1].copy(), rate)
    manifest = build_manifest("emodb", "emodb", tmp / "emodb")
    ws.save_manifest(manifest, force=True)
    extract(manifest, load_encoder("logmel"), store,
            options=ExtractOptions(progress=False, frame_layers=(0,), overwrite=True))
    after = run_finetune(config, store, ws, cache={})
    assert not after["training"][0]["resumed"]
    assert any("was trained on other labels, speakers, audio or store-group contents" in w for w in after["warnings"])


def test_checkpoint_identity_follows_the_store_group_contents(logmel_ws) -> None:
    """An --overwrite re-extraction that gives other features (here: a group written by another extraction
    time and contents) gets another data digest, so its checkpoints are retrained."""
    ws, store, _ = logmel_ws
    config = FinetuneConfig(method="cnn-lstm", source="emodb", target="urdu", seeds=1, epochs=1)
    run_finetune(config, store, ws)
    group = store.open(store.resolve("emodb", "logmel"), mode="a")
    group.group.attrs["created"] = "2000-01-01T00:00:00Z"  # what a later extraction rewrites
    again = run_finetune(config, store, ws, cache={})
    assert not again["training"][0]["resumed"]


def test_local_model_and_noise_paths_give_one_configuration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "model").mkdir()
    (tmp_path / "noise").mkdir()
    monkeypatch.chdir(tmp_path)
    common = dict(method="lora", source="a", target="b", from_layer=1, seeds=1)
    rel = FinetuneConfig(model="./model", source_noise={"noise": "noise", "snr_db": 10}, **common)
    absolute = FinetuneConfig(model=str(tmp_path / "model"), source_noise={"noise": str(tmp_path / "noise"),
                                                                           "snr_db": 10.0}, **common)
    assert rel.model == str(tmp_path / "model") and rel.source_noise["noise"] == str(tmp_path / "noise")
    assert rel.key() == absolute.key() and rel.train_key() == absolute.train_key()
    assert FinetuneConfig(model="whisper", **common).model == "whisper"  # an alias is never a path


@pytest.mark.parametrize(("change", "message"), [
    ({"num_layers": 4}, "differ in layers or width"),
    ({"width": 16}, "differ in layers or width"),
    ({"chunk_seconds": 10.0}, "different chunk_seconds"),
])
def test_pair_check_refuses_other_layer_counts_widths_and_chunking(change: dict, message: str) -> None:
    from types import SimpleNamespace

    from classifiers.studies.protocol_registry import ProtocolError, check_compatible

    def side(corpus: str, num_layers: int = 3, width: int = 32, chunk_seconds: float | None = None) -> SimpleNamespace:
        provenance = {"store_key": f"{corpus}/clean/m", "model_id": "m", "weights_hash": "w", "num_layers": num_layers,
                      "model_settings": {"chunk_seconds": chunk_seconds}}
        view = SimpleNamespace(provenance=provenance, X=np.zeros((2, width), dtype=np.float32))
        return SimpleNamespace(view=view, labels=np.array(["a", "b"]), corpus=corpus)

    config = FinetuneConfig(method="cnn-lstm", source="a", target="b", seeds=1)
    check_compatible(config, side("a"), side("b"), ["a", "b"], ["a", "b"])  # same model, settings: accepted
    with pytest.raises(ProtocolError, match=message):
        check_compatible(config, side("a"), side("b", **change), ["a", "b"], ["a", "b"])


@pytest.mark.slow
def test_sigterm_stops_at_the_next_batch_keeps_finished_seeds_and_exits_143(setup) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    ws, store = setup
    config = FinetuneConfig(method="cnn-lstm", source="emodb", target="urdu", seeds=1, epochs=60, lr=7e-4)
    run_finetune(config, store, ws)  # seed 0 finished earlier
    args = ["--method", "cnn-lstm", "--source", "emodb", "--target", "urdu", "--seeds", "2", "--epochs", "60",
            "--lr", "7e-4"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "cli.main", "--workspace", str(ws.root), "finetune", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            cwd=Path(__file__).resolve().parents[1])
    lines = []
    for line in proc.stderr:  # progress lines: wait until seed 1 is training
        lines.append(line)
        if ": seed 1 epoch 2/60:" in line:
            break
    else:
        pytest.fail("".join(lines))
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    rest = proc.stderr.read()
    proc.wait(timeout=60)
    seconds = time.monotonic() - sent
    assert proc.returncode == 143, rest
    assert any("seed 0: loaded from its checkpoint" in line for line in lines)
    last = rest.strip().splitlines()[-1]
    assert last.startswith("SIGTERM: stopped fine-tuning cnn-lstm emodb -> urdu while training seed 1;") and \
        "1 finished model(s) kept in" in last and "re-run the same command to resume" in last, rest
    assert seconds < 2.5, seconds  # at the next batch, and no slow interpreter teardown (was 4-7 s under load)
    root = checkpoint_root(ws, config)
    assert sorted(p.name for p in root.iterdir()) == ["seed0"]  # no half-written seed 1
