"""``fs probe``: JSON and human output, the results ledger, clear errors that leave the ledger untouched."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from test_protocols import MODEL, build_workspace

from classifiers.studies.ledger import Ledger
from cli.main import fs
from featurestore.workspace import Workspace


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Workspace, Path]:
    ws, _, noise = build_workspace(tmp_path_factory.mktemp("probe_cli"))
    return ws, noise


def run(ws: Workspace, *args: str) -> click.testing.Result:
    return CliRunner().invoke(fs, ["--workspace", str(ws.root), "probe", "--model", MODEL, *args])


def test_json_result_goes_to_the_ledger_and_answers_again(setup) -> None:
    ws, _ = setup
    args = ("--source", "emodb", "--target", "urdu", "--seeds", "2", "--json")
    first = run(ws, *args)
    assert first.exit_code == 0, first.output
    result = json.loads(first.stdout)
    for key in ("uar_mean", "uar_std", "uar_per_seed", "layer", "config", "chance", "config_key"):
        assert key in result
    assert result["config"]["source"] == "emodb" and result["layer"] == 2 and not result["from_ledger"]
    assert len(Ledger.open(ws)) == 1
    again = json.loads(run(ws, *args).stdout)
    assert again["from_ledger"] and again["uar_per_seed"] == result["uar_per_seed"]
    rerun = json.loads(run(ws, *args, "--rerun").stdout)
    assert not rerun["from_ledger"] and len(Ledger.open(ws)) == 1


def test_human_output_with_shots_and_baseline(setup) -> None:
    ws, _ = setup
    out = run(ws, "--source", "emodb", "--target", "urdu", "--seeds", "1", "--shots", "0,1", "--layer", "best")
    assert out.exit_code == 0, out.output
    text = out.output
    assert text.count("UAR ") >= 2 and "chance 25.0 %" in text and "per-class recall: angry" in text
    assert "target-only baseline (shots alone)" in text and "best on a source-only dev split, per seed: " in text
    assert "dev UAR by layer (mean over seeds): 0 " in text and f"model {MODEL}  logreg" in text  # no Whisper mode
    listed = run(ws, "--source", "emodb", "--target", "urdu", "--seeds", "1", "--shots", "0,1", "--layer",
                 "best", "--json")
    assert [r["config"]["shots"] for r in json.loads(listed.stdout)] == [0, 1]


def test_errors_are_one_line_and_leave_the_ledger_alone(setup) -> None:
    ws, noise = setup
    before = len(Ledger.open(ws))
    missing = run(ws, "--source", "emodb", "--target", "urdu", "--target-noise", str(noise), "--snr", "5")
    assert missing.exit_code == 1 and "Traceback" not in missing.output
    assert f"fs extract --model {MODEL} --corpus urdu --noise {noise} --snr 5" in missing.output
    mismatch = run(ws, "--source", "emodb", "--target", "emovo")
    assert mismatch.exit_code == 1 and "different weights" in mismatch.output
    layer = run(ws, "--source", "emodb", "--target", "urdu", "--layer", "9")
    assert layer.exit_code == 1 and "out of range" in layer.output
    usage = run(ws, "--source", "emodb", "--target", "urdu", "--snr", "5")
    assert usage.exit_code == 2 and "--snr needs --target-noise" in usage.output
    within = run(ws, "--source", "emodb", "--target", "emodb", "--shots", "5")
    assert within.exit_code == 2 and "--shots needs a target other than the source" in within.output
    assert len(Ledger.open(ws)) == before


def test_noisy_target_within_corpus(setup) -> None:
    ws, noise = setup
    out = run(ws, "--source", "urdu", "--target", "urdu", "--target-noise", str(noise), "--seeds", "1")
    assert out.exit_code == 0, out.output
    assert "[within-corpus]" in out.output and "target + " in out.output and "10 dB" in out.output


def test_best_layer_within_corpus_is_one_readable_line_per_kind(setup) -> None:
    ws, _ = setup
    out = run(ws, "--source", "emodb", "--target", "emodb", "--seeds", "2", "--layer", "best")
    assert out.exit_code == 0, out.output
    result = json.loads(run(ws, "--source", "emodb", "--target", "emodb", "--seeds", "2", "--layer", "best",
                            "--json").stdout)
    choice = result["layer_choice"]
    assert choice["per_seed"] == result["layer"] and choice["choices"] == 6  # 2 seeds x 3 folds
    picks = " · ".join(f"seed {i}: {','.join(map(str, seed))}" for i, seed in enumerate(result["layer"]))
    layer_line = next(line for line in out.stdout.splitlines() if line.startswith("  layer: "))
    assert picks in layer_line and f"layer used: {choice['most_chosen']} (most chosen, " in layer_line
    assert "[[" not in out.stdout  # no list of lists
    curve = next(line for line in out.stdout.splitlines() if line.startswith("  dev UAR by layer"))
    assert curve.count("*") == 2 and f"(* highest: layer {choice['best_mean_dev']}" in curve
    best = result["layer_dev_uar"][str(choice["best_mean_dev"])]
    assert f"{choice['best_mean_dev']} {100 * best:.1f}*" in curve


def test_the_most_chosen_layer_and_the_best_dev_layer_are_told_apart() -> None:
    from cli.probe import describe

    result = json.loads(json.dumps({
        "config": {"source": "a", "target": "b", "model": "m", "classifier": "logreg", "norm": "none",
                   "stat": "mean", "seeds": 3, "layer": "best"},
        "protocol": "cross-language", "seconds": 1.0, "uar_mean": 0.5, "uar_std": 0.0, "chance": 0.25,
        "uar_per_seed": [0.5, 0.5, 0.5], "per_class_recall": {"x": 0.5}, "layer": [2, 2, 3],
        "layer_dev_uar": {"0": 0.412, "1": 0.44, "2": 0.479, "3": 0.481}}))  # a result stored without layer_choice
    text = describe(result)
    assert "per seed: 2,2,3; layer used: 2 (most chosen, 2 of 3;" in text
    assert "0 41.2 · 1 44.0 · 2 47.9 · 3 48.1*  (* highest: layer 3, not the most chosen 2)" in text


def test_progress_lines_on_stderr_when_not_a_terminal(setup) -> None:
    ws, _ = setup
    out = run(ws, "--source", "emodb", "--target", "emodb", "--seeds", "2", "--layer", "best", "--rerun", "--json")
    assert out.exit_code == 0, out.output
    json.loads(out.stdout)  # progress never mixes into stdout
    lines = out.stderr.splitlines()
    assert lines[0] == f"probe emodb->emodb {MODEL} layer best: started, 24 fit to do"  # 2 seeds x 3 folds x (3 + 1)
    assert lines[-1].startswith(f"probe emodb->emodb {MODEL} layer best: finished 24/24 fit in ")
    quiet = run(ws, "--source", "emodb", "--target", "emodb", "--seeds", "2", "--layer", "best", "--rerun",
                "--no-progress")
    assert quiet.exit_code == 0 and quiet.stderr == ""
