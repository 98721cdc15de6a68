"""Conditions on the reading side: probes and studies select a condition group by its key, the shipped
robustness study, and the report's UAR-against-SNR figure and condition x model table."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from classifiers.reports.report import plot_snr, target_snr, write_report
from classifiers.studies.ledger import Ledger, condition_of
from classifiers.studies.protocols import ProbeConfig, ProtocolError, run_probe
from classifiers.studies.sweep import StudyError, SweepError, expand_study, load_study, parse_study, run_sweep
from cli.extract import extract as extract_cli
from cli.main import fs
from data_manifests.manifest import build_manifest
from data_manifests.synth import generate_corpus
from featurestore.conditions import ConditionChain
from featurestore.encoders import load_encoder
from featurestore.extract import ExtractOptions, extract
from featurestore.store import FeatureStore, GroupNotFoundError
from featurestore.workspace import Workspace

MODEL = "tiny-wav2vec2"


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Workspace, FeatureStore, Path]:
    """Tiny EMODB and URDU, tiny-wav2vec2 clean; URDU also through the telephone and at 10 dB (noise:snr=10)."""
    tmp = tmp_path_factory.mktemp("condstudies")
    ws = Workspace.open(tmp / "ws")
    store = FeatureStore(ws.store_url)
    noise = tmp / "noise"
    noise.mkdir()
    sf.write(noise / "hum.wav", np.random.default_rng(0).normal(0, 0.1, 48000).astype(np.float32), 16000)
    encoder = load_encoder(MODEL, seed=0)
    options = ExtractOptions(progress=False)
    for name in ("emodb", "urdu"):
        manifest = build_manifest(name, name, generate_corpus(name, tmp / name, size="tiny"))
        ws.save_manifest(manifest)
        extract(manifest, encoder, store, options=options)
        if name == "urdu":
            extract(manifest, encoder, store, condition=ConditionChain.parse("telephone"), options=options)
            extract(manifest, encoder, store, condition=ConditionChain.parse("noise:snr=10", noise=str(noise)),
                    options=options)
    return ws, store, noise


def config(**kw) -> ProbeConfig:
    return ProbeConfig(**{"source": "emodb", "target": "urdu", "model": MODEL, "seeds": 1, **kw})


def test_probe_reads_the_condition_group_by_its_key(setup) -> None:
    ws, store, _ = setup
    result = run_probe(config(target_noise={"condition": "telephone"}), store, ws).to_dict()
    key = ConditionChain.parse("telephone").key
    assert result["provenance"]["target"]["store_key"].split("/")[1] == key
    assert result["provenance"]["source"]["store_key"].split("/")[1] == "clean"
    spelled = config(target_noise={"condition": "telephone:band=300-3400,rate=8000", "noise_seed": 0})
    assert spelled.key() == config(target_noise={"condition": "telephone"}).key()
    assert condition_of(result["config"]) == "target:telephone:band=300-3400,codec=none,rate=8000"


def test_a_lone_noise_condition_is_todays_noise_configuration(setup) -> None:
    ws, store, noise = setup
    as_condition = config(target_noise={"condition": "noise:snr=10", "noise": str(noise)})
    assert as_condition.key() == config(target_noise={"noise": str(noise), "snr_db": 10}).key()
    assert run_probe(as_condition, store, ws).to_dict()["provenance"]["target"]["store_key"].split("/")[1] == \
        ConditionChain.parse("noise:snr=10", noise=str(noise)).key


def test_missing_condition_group_prints_the_command_that_makes_it(setup) -> None:
    ws, store, _ = setup
    with pytest.raises(GroupNotFoundError) as err:
        run_probe(config(target_noise={"condition": "reverb:rt60=0.5"}), store, ws)
    command = str(err.value).split("Make it with: ")[1]
    args = shlex.split(command)
    with extract_cli.make_context("extract", args[2:]) as ctx:
        params = ctx.params
    assert params["corpora"] == ("urdu",) and params["model_name"] == MODEL
    assert ConditionChain.parse(list(params["conditions"]), seed=params["noise_seed"]).key == \
        ConditionChain.parse("reverb:rt60=0.5").key
    with pytest.raises(ProtocolError, match="unknown condition 'echo'; valid: clipping, gain, noise, reverb, telephone"):
        config(target_noise={"condition": "echo"})
    with pytest.raises(ProtocolError, match="valid keys: condition, noise, noise_seed"):
        config(target_noise={"condition": "telephone", "snr_db": 5})


def test_cli_probe_target_condition(setup) -> None:
    ws, _, _ = setup
    base = ["--workspace", str(ws.root), "probe", "--source", "emodb", "--target", "urdu", "--model", MODEL,
            "--seeds", "1", "--no-progress"]
    res = CliRunner().invoke(fs, [*base, "--target-condition", "telephone"])
    assert res.exit_code == 0, res.output
    assert "target under telephone:band=300-3400,codec=none,rate=8000 (seed 0)" in res.output
    usage = CliRunner().invoke(fs, [*base, "--target-condition", "telephone", "--snr", "5"])
    assert usage.exit_code == 2 and "--snr goes with --target-noise/--source-noise alone" in usage.output


def test_robustness_study_holds_the_paper_studys_10_db_point() -> None:
    study = load_study("robustness")
    assert [e.name for e in study.experiments] == ["snr-0", "snr-5", "snr-10", "snr-20", "reverb", "telephone"]
    cells = expand_study(study)
    paper = {c.key for c in expand_study(load_study("paper")) if "noise" in c.experiments}
    assert paper == {c.key for c in cells if "snr-10" in c.experiments}
    snrs = {c.config.target_noise["snr_db"] for c in cells if c.config.target_noise and "snr_db" in c.config.target_noise}
    assert snrs == {0.0, 5.0, 10.0, 20.0}
    chains = {c.config.target_noise["condition"] for c in cells if c.config.target_noise
              and "condition" in c.config.target_noise}
    assert chains == {"reverb:drr=0,rt60=0.3-0.9", "telephone:band=300-3400,bitrate=8-16,codec=mp3,rate=8000"}
    assert len(cells) == 3 * 4 * 7  # pairs x models x (clean + six conditions)


def test_study_condition_is_checked_and_swept(setup) -> None:
    ws, store, _ = setup
    bad = {"name": "b", "experiments": [{"name": "e", "pairs": ["emodb->urdu"], "models": MODEL,
                                         "conditions": ["clean", "target"], "condition": "reverb:rt60=-1"}]}
    with pytest.raises(StudyError, match="experiment 'e': .*rt60=-1 must be above 0 s"):
        parse_study(bad)
    study = {"name": "tel", "defaults": {"classifiers": "logreg", "seeds": 1, "models": MODEL},
             "experiments": [{"name": "tel", "pairs": ["emodb->urdu"], "conditions": ["clean", "target"],
                              "condition": "telephone"}]}
    run_sweep(parse_study(study), store, ws, n_jobs=1, progress=False)
    rows = Ledger.open(ws).rows(study="tel")
    assert sorted(condition_of(r["config"]) for r in rows) == ["clean", "target:telephone:band=300-3400,codec=none,rate=8000"]
    missing = {**study, "name": "rev", "experiments": [{**study["experiments"][0], "condition": "reverb:rt60=0.4"}]}
    with pytest.raises(SweepError, match=r"--condition reverb:drr=0,rt60=0\.4 --noise-seed 0"):
        run_sweep(parse_study(missing), store, ws, n_jobs=1, progress=False)


def _row(model: str, snr: float | None, uar: float, condition: str | None = None) -> dict:
    side = ({"condition": condition, "noise_seed": 0} if condition else
            {"noise": "/n", "snr_db": snr, "noise_seed": 0} if snr is not None else None)
    config = {"source": "emodb", "target": "urdu", "model": model, "layer": "last", "classifier": "logreg",
              "norm": "none", "stat": "mean", "seeds": 2, "shots": 0, "target_noise": side}
    key = json.dumps(config, sort_keys=True)
    return {"config_key": key, "config": config, "uar_mean": uar, "uar_std": 0.01,
            "uar_ci95": [uar - 0.05, uar + 0.04], "layer_used": 2, "chance": 0.25, "uar_per_seed": [uar, uar]}


def test_report_draws_uar_against_snr_and_a_condition_by_model_table(tmp_path: Path) -> None:
    rows = [_row(m, snr, base - drop) for m, base in (("whisper", 0.6), ("xlsr", 0.5))
            for snr, drop in ((None, 0.0), (20.0, 0.02), (10.0, 0.05), (5.0, 0.1), (0.0, 0.2))]
    rows += [_row("whisper", None, 0.45, "telephone:band=300-3400,codec=none,rate=8000")]
    assert [target_snr(r) for r in rows[:5]] == [None, 20.0, 10.0, 5.0, 0.0] and target_snr(rows[-1]) is None
    assert plot_snr(rows, tmp_path / "snr.png").read_bytes()[:4] == b"\x89PNG"
    assert plot_snr(rows[:1] + rows[-1:], tmp_path / "none.png") is None  # no line with two SNRs
    ws = Workspace.open(tmp_path / "ws")
    folder = write_report(rows, ws, name="robust")
    text = (folder / "report.md").read_text()
    assert (folder / "snr.png").exists() and "![UAR against SNR](snr.png)" in text
    table = text[text.index("## Conditions × models"):]
    assert "| condition | whisper | xlsr |" in table
    order = [line.split("|")[1].strip() for line in table.splitlines() if line.startswith("| ")][1:7]
    assert order == ["clean", "target@20dB", "target@10dB", "target@5dB", "target@0dB",
                     "target:telephone:band=300-3400,codec=none,rate=8000"]
    assert "45.0 [40.0, 49.0]" in table and "| – |" in table  # xlsr has no telephone result
