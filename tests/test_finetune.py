"""``fs finetune``: head, CNN-LSTM and top-layer LoRA from a tiny store, in the probe's record, ledger and errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import click
import numpy as np
import pytest
from click.testing import CliRunner

from classifiers.finetune import FinetuneConfig, FinetuneError, FrameCache, checkpoint_root, run_finetune
from classifiers.ledger import Ledger
from classifiers.protocols import ProbeConfig, run_probe
from cli.main import fs
from data_manifests.manifest import build_manifest
from data_manifests.synth import generate_corpus
from featurestore.encoders import load_encoder
from featurestore.extract import ExtractOptions, extract
from featurestore.store import FeatureStore
from featurestore.workspace import Workspace

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
