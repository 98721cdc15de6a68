"""Named training recipes of ``fs finetune``: ``paper`` (the study's fixed one) and ``tuned`` (epochs and learning rate
chosen on the source's speaker-independent dev split, the choice recorded); the probe's MLP ``--tune`` grid."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from classifiers.learners import tuning
from classifiers.studies import settings
from classifiers.studies.finetune import FinetuneConfig, FinetuneError, run_finetune
from classifiers.studies.sweep import expand_study, parse_study
from cli.finetune import describe_finetune
from cli.main import fs
from data_manifests.manifest import build_manifest
from data_manifests.synth import generate_corpus
from featurestore.encoders import load_encoder
from featurestore.extract import ExtractOptions, extract
from featurestore.store import FeatureStore
from featurestore.workspace import Workspace
from tests.test_finetune import _relabel
from tests.test_protocols import MODEL, build_workspace


def cnn(**kw) -> FinetuneConfig:
    return FinetuneConfig(method="cnn-lstm", source="emodb", target="urdu", seeds=1, **kw)


def test_paper_is_the_study_recipe_and_keeps_the_default_key() -> None:
    assert settings.RECIPES["paper"] == {"epochs": 5, "batch_size": 16, "lr": 1e-4}
    plain, paper = cnn(), cnn(recipe="paper")
    assert paper.key() == plain.key() and "recipe" not in plain.to_dict()
    head = FinetuneConfig(method="head", source="emodb", target="urdu", model=MODEL, recipe="paper")
    assert head.key() == FinetuneConfig(method="head", source="emodb", target="urdu", model=MODEL).key()


def test_tuned_is_its_own_configuration_and_reads_back_from_its_dict() -> None:
    tuned = cnn(recipe="tuned")
    assert (tuned.epochs, tuned.lr, tuned.recipe) == (settings.RECIPES["tuned"]["epochs"], None, "tuned")
    assert tuned.key() != cnn().key() and tuned.train_key() != cnn().train_key()
    assert FinetuneConfig.from_dict(tuned.to_dict()) == tuned
    head = FinetuneConfig(method="head", source="emodb", target="urdu", model=MODEL, recipe="tuned").probe_config()
    assert head.tune and head.classifier == "mlp" and head.classifier_params == {}
    assert set(tuning.GRIDS["mlp"]) == {"lr", "epochs"}  # the head's --tune searches lr x epochs


@pytest.mark.parametrize("kw, message", [
    ({"recipe": "paper", "epochs": 3}, "drop --epochs"),
    ({"recipe": "tuned", "lr": 1e-3}, "drop --lr"),
    ({"recipe": "tunned"}, "did you mean 'tuned'"),
    ({"recipe": "tuned", "target": "emodb"}, "within a corpus"),
    ({"recipe": "tuned", "method": "lora", "model": MODEL, "from_layer": 1}, "head and cnn-lstm"),
])
def test_bad_recipes_are_refused_with_the_fix(kw: dict, message: str) -> None:
    with pytest.raises(FinetuneError, match=message):
        FinetuneConfig(**{"method": "cnn-lstm", "source": "emodb", "target": "urdu", **kw})


def test_study_files_take_a_recipe_and_the_cli_refuses_a_recipe_beside_its_values(tmp_path: Path) -> None:
    study = {"name": "r", "experiments": [{"name": "e", "pairs": ["emodb->urdu"], "models": "logmel",
                                           "method": "cnn-lstm", "recipe": "tuned"}]}
    cell, = expand_study(parse_study(study))
    assert cell.config.recipe == "tuned" and cell.config.lr is None
    out = CliRunner().invoke(fs, ["--workspace", str(tmp_path / "ws"), "finetune", "--method", "cnn-lstm",
                                  "--source", "emodb", "--target", "urdu", "--recipe", "paper", "--lr", "0.001"])
    assert out.exit_code == 2 and "--recipe paper sets epochs, batch size and lr; drop --lr" in out.output


@pytest.mark.slow
def test_tuned_cnn_lstm_chooses_lr_and_epoch_on_the_source_dev_split(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(settings.RECIPES, "tuned", {"epochs": 3, "batch_size": 16, "lr": None})
    monkeypatch.setitem(tuning.RECIPE_GRIDS, "cnn-lstm", {"lr": [1e-4, 3e-3]})
    ws = Workspace.open(tmp_path / "ws")
    store = FeatureStore(ws.store_url)
    for name in ("emodb", "urdu"):
        manifest = build_manifest(name, name, generate_corpus(name, tmp_path / name, size="tiny"))
        ws.save_manifest(manifest)
        extract(manifest, load_encoder("logmel"), store, options=ExtractOptions(progress=False, frame_layers=(0,)))
    config = cnn(recipe="tuned")
    result = run_finetune(config, store, ws)
    recipe = result.to_record()["recipe"]
    assert [c["lr"] for c in recipe["candidates"]] == [1e-4, 3e-3]
    assert all(len(c["dev_uar_per_epoch"]) == 3 for c in recipe["candidates"])
    best = max(recipe["candidates"], key=lambda c: c["dev_uar"])
    assert recipe["chosen"] == {"lr": best["lr"], "epochs": best["best_epoch"]}
    assert recipe["on"] == "emodb" and recipe["dev_split"] == "speaker" and recipe["max_epochs"] == 3
    params = json.loads((Path(result.checkpoints[0]) / "config.json").read_text())["params"]
    assert (params["lr"], params["epochs"]) == (best["lr"], best["best_epoch"])  # the final model uses the choice
    assert len(result.training[0]["history"]) == best["best_epoch"]
    assert "recipe tuned: lr" in describe_finetune(result.to_record())
    _relabel(ws, "urdu")  # the target's labels never reach the choice
    assert run_finetune(config, store, ws, rerun=True).extra["recipe"] == recipe


@pytest.mark.slow
def test_tuned_head_searches_lr_and_epochs_on_source_speaker_folds(tmp_path: Path) -> None:
    ws, store, _ = build_workspace(tmp_path)
    config = FinetuneConfig(method="head", source="emodb", target="urdu", model=MODEL, seeds=1, recipe="tuned",
                            head_hidden=8)
    record = run_finetune(config, store, ws).to_record()
    assert record["config"]["tune"] is True and record["recipe"]["name"] == "tuned"
    chosen, = record["recipe"]["chosen"][0]
    assert set(chosen) == {"lr", "epochs"}
    assert chosen["lr"] in tuning.GRIDS["mlp"]["lr"] and chosen["epochs"] in tuning.GRIDS["mlp"]["epochs"]
