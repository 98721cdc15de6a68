"""eGeMAPS / ComParE through openSMILE: one-layer encoders stored, verified and probed like any other."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from cli.main import fs
from data_manifests.synth import generate_corpus

opensmile = pytest.importorskip("opensmile", reason="the openSMILE baselines need `pip install opensmile`")


def test_egemaps_encoder_gives_the_88_functionals_of_opensmile() -> None:
    from featurestore.encoders import load_encoder

    encoder = load_encoder("egemaps")
    assert (encoder.info.family, encoder.info.num_layers, encoder.info.dim) == ("opensmile", 1, 88)
    assert encoder.info.settings["feature_set"] == "eGeMAPSv02"
    rng = np.random.default_rng(0)
    t = np.arange(16000 * 2) / 16000
    waves = [(0.3 * np.sin(2 * np.pi * 180 * t)).astype(np.float32), rng.normal(0, 0.05, 8000).astype(np.float32)]
    states = encoder.embed(waves)
    assert tuple(states.hidden.shape) == (1, 2, 1, 88) and states.lengths.tolist() == [1, 1]
    smile = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                            feature_level=opensmile.FeatureLevel.Functionals)
    for b, wave in enumerate(waves):
        expected = smile.process_signal(wave, 16000).to_numpy()[0]
        np.testing.assert_allclose(states.hidden[0, b, 0].numpy(), expected, rtol=1e-5, atol=1e-4)
    assert encoder.num_frames(123) == 1  # a too-short segment is padded to 0.1 s, never NaN
    assert np.isfinite(encoder.embed([np.zeros(100, np.float32)]).hidden.numpy()).all()


def test_egemaps_extract_verify_and_probe_from_the_cli(tmp_path: Path) -> None:
    ws = str(tmp_path / "ws")
    runner = CliRunner()

    def run(*args: str) -> str:
        res = runner.invoke(fs, ["--workspace", ws, *args], catch_exceptions=False)
        assert res.exit_code == 0, res.output
        return res.stdout

    for name in ("emodb", "urdu"):
        run("corpus", "add", name, "--layout", name, "--root", str(generate_corpus(name, tmp_path / name, size="tiny")))
        run("extract", "--model", "egemaps", "--corpus", name)
    listing = json.loads(run("store", "ls", "--json"))
    assert {(row["corpus"], row["layers"], row["dim"]) for row in listing} == {("emodb", 1, 88), ("urdu", 1, 88)}
    run("store", "verify")
    result = json.loads(run("probe", "--source", "emodb", "--target", "urdu", "--model", "egemaps",
                            "--norm", "corpus", "--seeds", "1", "--json"))
    assert 0.0 <= result["uar_mean"] <= 1.0 and result["provenance"]["model"]["settings"]["feature_set"] == "eGeMAPSv02"
