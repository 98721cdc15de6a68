"""``fs corpus add`` reads every file whole: content hashes, and implausible audio is reported."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from cli.main import fs
from data_manifests.audio import AudioError, check_audio
from data_manifests.manifest import ManifestError, build_manifest


def _corpus(root: Path) -> dict[str, Path]:
    """A URDU-layout corpus of four plausible clips plus a truncated, a 10 ms and a silent one."""
    rng = np.random.default_rng(0)
    paths = {}
    for i, label in enumerate(["Angry", "Happy", "Neutral", "Sad"]):
        (root / label).mkdir(parents=True, exist_ok=True)
        paths[label] = root / label / f"SM{i + 1}_F1_{label[0]}001.wav"
        sf.write(paths[label], rng.normal(0, 0.1, 16000).astype(np.float32), 16000, subtype="PCM_16")
    whole = paths["Angry"].with_name("SM1_F2_A002.wav")
    sf.write(whole, rng.normal(0, 0.1, 16000).astype(np.float32), 16000, subtype="PCM_16")
    raw = whole.read_bytes()
    whole.write_bytes(raw[: len(raw) // 2])
    paths["truncated"] = whole
    paths["short"] = root / "Happy" / "SM2_F2_H002.wav"
    sf.write(paths["short"], rng.normal(0, 0.1, 160).astype(np.float32), 16000, subtype="PCM_16")
    paths["silent"] = root / "Sad" / "SM4_F2_S002.wav"
    sf.write(paths["silent"], np.zeros(16000, np.float32), 16000, subtype="PCM_16")
    return paths


def test_check_audio_hashes_and_flags(tmp_path: Path) -> None:
    paths = _corpus(tmp_path / "urdu")
    good = check_audio(paths["Neutral"])
    assert good.problems == [] and good.sha256 == hashlib.sha256(paths["Neutral"].read_bytes()).hexdigest()
    assert "truncated" in check_audio(paths["truncated"]).problems[0]
    assert "implausibly short" in check_audio(paths["short"]).problems[0]
    assert "silent" in check_audio(paths["silent"]).problems[0]
    nan = tmp_path / "nan.wav"
    sf.write(nan, np.array([0.1, np.nan, 0.2] * 100, np.float32), 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN"):
        check_audio(nan)


def test_corpus_add_warns_and_strict_refuses(tmp_path: Path) -> None:
    paths = _corpus(tmp_path / "urdu")
    manifest = build_manifest("urdu", "urdu", tmp_path / "urdu")
    assert len(manifest) == 7 and len(manifest.suspicious_audio) == 3
    assert all(len(r["audio_sha256"]) == 64 for r in manifest.rows)
    with pytest.raises(ManifestError, match="3 implausible audio file"):
        build_manifest("urdu", "urdu", tmp_path / "urdu", strict=True)
    res = CliRunner().invoke(fs, ["--workspace", str(tmp_path / "ws"), "corpus", "add", "urdu", "--layout", "urdu",
                                  "--root", str(tmp_path / "urdu")])
    assert res.exit_code == 0 and "3 implausible audio file(s) kept" in res.output
    assert str(paths["truncated"]) in res.output
    res = CliRunner().invoke(fs, ["--workspace", str(tmp_path / "ws2"), "corpus", "add", "urdu", "--layout", "urdu",
                                  "--root", str(tmp_path / "urdu"), "--strict"])
    assert res.exit_code == 1 and "implausible" in res.output and "Traceback" not in res.output


def test_one_copy_of_the_checks_featurestore_reexports_them() -> None:
    """The checks live on the manifest floor; featurestore.audio re-exports the same objects (one copy)."""
    import data_manifests.audio
    import featurestore.audio

    for name in ("AudioError", "AudioInfo", "AudioCheck", "audio_info", "check_audio"):
        assert getattr(featurestore.audio, name) is getattr(data_manifests.audio, name)
