"""``fs probe``: JSON and human output, the results ledger, clear errors that leave the ledger untouched."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from test_protocols import MODEL, build_workspace

from classifiers.ledger import Ledger
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
    result = json.loads(first.output)
    for key in ("uar_mean", "uar_std", "uar_per_seed", "layer", "config", "chance", "config_key"):
        assert key in result
    assert result["config"]["source"] == "emodb" and result["layer"] == 2 and not result["from_ledger"]
    assert len(Ledger.open(ws)) == 1
    again = json.loads(run(ws, *args).output)
    assert again["from_ledger"] and again["uar_per_seed"] == result["uar_per_seed"]
    rerun = json.loads(run(ws, *args, "--rerun").output)
    assert not rerun["from_ledger"] and len(Ledger.open(ws)) == 1


def test_human_output_with_shots_and_baseline(setup) -> None:
    ws, _ = setup
    out = run(ws, "--source", "emodb", "--target", "urdu", "--seeds", "1", "--shots", "0,1", "--layer", "best")
    assert out.exit_code == 0, out.output
    text = out.output
    assert text.count("UAR ") >= 2 and "chance 25.0 %" in text and "per-class recall: angry" in text
    assert "target-only baseline (shots alone)" in text and "best on a source-only dev split" in text
    assert "dev UAR per layer: 0:" in text
    listed = run(ws, "--source", "emodb", "--target", "urdu", "--seeds", "1", "--shots", "0,1", "--layer",
                 "best", "--json")
    assert [r["config"]["shots"] for r in json.loads(listed.output)] == [0, 1]


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
