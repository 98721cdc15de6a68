"""Noise conditions: keys, serialisation, determinism, exact SNR, layouts, errors."""

from __future__ import annotations

import json
import math
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from featurestore.noise import NoiseBank, NoiseError, NoiseSpec, achieved_snr, condition_key

SR = 16000


def _write(path: Path, seconds: float, seed: int, amp: float = 0.3, sr: int = SR) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sf.write(path, (amp * rng.standard_normal(int(seconds * sr))).clip(-1, 1), sr,
             subtype="FLOAT")
    return path


def _speech(seconds: float = 1.0, amp: float = 0.2, seed: int = 7) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    rng = np.random.default_rng(seed)
    wave = amp * np.sin(2 * np.pi * 220 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
    return (wave + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-6 * max(1.0, abs(b))


def _snr_from_output(clean: np.ndarray, noisy: np.ndarray, details: dict) -> float:
    speech = details["output_gain"] * clean.astype(np.float64)
    return achieved_snr(speech, noisy.astype(np.float64) - speech)


@pytest.fixture
def noise_dir(tmp_path: Path) -> Path:
    root = tmp_path / "babble"
    for i, (name, secs) in enumerate([("cafe", 1.0), ("street", 1.5), ("train", 0.7)]):
        _write(root / f"{name}.wav", secs, seed=i, amp=0.1 + 0.1 * i)
    return root


@pytest.fixture
def demand_root(tmp_path: Path) -> Path:
    root = tmp_path / "DEMAND"
    for e, env in enumerate(["KITCHEN", "PARK", "STATION"]):
        for ch in range(1, 17):
            _write(root / env / f"ch{ch:02d}.wav", 0.5, seed=100 * e + ch)
    return root


# --- keys and serialisation ---------------------------------------------------------------

def test_key_format_and_stability(noise_dir: Path, tmp_path: Path) -> None:
    key = NoiseSpec(str(noise_dir), 10).key()
    assert re.fullmatch(r"noise-babble-[0-9a-f]{8}-snr10-seed0", key)
    assert NoiseSpec(str(noise_dir), 10.0).key() == key
    assert NoiseSpec(str(noise_dir), 7.5, seed=3).key().endswith("-snr7.5-seed3")
    assert NoiseSpec(str(noise_dir), -5).key().endswith("-snr-5-seed0")
    assert NoiseBank(NoiseSpec(str(noise_dir), 10), SR).key == key
    assert condition_key(None) == "clean"
    assert condition_key(NoiseSpec(str(noise_dir), 10)) == key
    # the fingerprint ignores where the folder lives, but follows the content
    moved = shutil.copytree(noise_dir, tmp_path / "elsewhere" / "babble")
    assert NoiseSpec(str(moved), 10).key() == key
    _write(moved / "train.wav", 0.7, seed=99)
    assert NoiseSpec(str(moved), 10).key() != key
    assert NoiseSpec(str(noise_dir), 10, environments=("cafe",)).key() != key


def test_spec_roundtrip(noise_dir: Path) -> None:
    spec = NoiseSpec(str(noise_dir), 7.5, seed=4, layout="folder", environments=("cafe", "train"))
    d = json.loads(json.dumps(spec.to_dict()))
    assert NoiseSpec.from_dict(d) == spec
    assert NoiseSpec(str(noise_dir), 5, environments=["cafe"]).environments == ("cafe",)
    with pytest.raises(NoiseError, match="unknown NoiseSpec fields"):
        NoiseSpec.from_dict({**d, "bogus": 1})


# --- determinism --------------------------------------------------------------------------

def test_mix_is_deterministic(noise_dir: Path) -> None:
    spec = NoiseSpec(str(noise_dir), 10, seed=1)
    a, b = NoiseBank(spec, SR), NoiseBank(spec, SR)
    x, y = _speech(), _speech(0.5, seed=8)
    ax, ad = a.mix(x, "utt-1")
    b.mix(y, "utt-2")  # call order and other utterances do not matter
    bx, bd = b.mix(x, "utt-1")
    assert np.array_equal(ax, bx) and ad == bd
    draws = {a.mix(x, f"utt-{i}")[1]["offset"] for i in range(20)}
    recs = {a.mix(x, f"utt-{i}")[1]["recording"] for i in range(20)}
    assert len(draws) >= 18 and len(recs) > 1
    other = NoiseBank(NoiseSpec(str(noise_dir), 10, seed=2), SR).mix(x, "utt-1")
    assert not np.array_equal(other[0], ax)


# --- exact SNR ----------------------------------------------------------------------------

@pytest.mark.parametrize("snr", [0, 5, 10, 20, -5, 7.5])
def test_exact_snr(noise_dir: Path, snr: float) -> None:
    bank = NoiseBank(NoiseSpec(str(noise_dir), snr), SR)
    clean = _speech()
    noisy, d = bank.mix(clean, "spk1_utt3")
    assert noisy.dtype == np.float32 and noisy.shape == clean.shape
    assert _close(d["snr_db"], snr)
    assert _close(_snr_from_output(clean, noisy, d), snr)


def test_tiling_when_speech_outlasts_noise(noise_dir: Path) -> None:
    spec = NoiseSpec(str(noise_dir), 10, environments=("train",))  # 0.7 s of noise
    bank = NoiseBank(spec, SR)
    clean = _speech(3.0)
    noisy, d = bank.mix(clean, "long")
    assert d["tiled"] and d["recording"] == "train.wav"
    assert _close(d["snr_db"], 10) and _close(_snr_from_output(clean, noisy, d), 10)
    noise = noisy.astype(np.float64) - d["output_gain"] * clean
    period = int(0.7 * SR)
    np.testing.assert_allclose(noise[:-period], noise[period:], atol=1e-6)


def test_clipping_protection_keeps_snr(noise_dir: Path) -> None:
    bank = NoiseBank(NoiseSpec(str(noise_dir), 0), SR)
    clean = np.clip(_speech(amp=0.95), -1, 1)
    noisy, d = bank.mix(clean, "loud")
    assert d["output_gain"] < 1
    assert np.max(np.abs(noisy)) <= 1.0
    assert _close(d["snr_db"], 0) and _close(_snr_from_output(clean, noisy, d), 0)
    quiet = bank.mix(_speech(amp=0.05), "quiet")[1]
    assert quiet["output_gain"] == 1.0


# --- layouts ------------------------------------------------------------------------------

def test_folder_layout(noise_dir: Path) -> None:
    (noise_dir / "notes.txt").write_text("not audio")
    bank = NoiseBank(NoiseSpec(str(noise_dir), 5), SR)
    assert bank.layout == "folder" and bank.names == ["cafe.wav", "street.wav", "train.wav"]
    desc = bank.describe()
    assert desc["fingerprint"] == bank.fingerprint and len(desc["recordings"]) == 3
    assert desc["recordings"][0]["name"] == "cafe.wav" and desc["spec"]["snr_db"] == 5.0
    json.dumps(desc)
    restricted = NoiseBank(NoiseSpec(str(noise_dir), 5, environments=("street",)), SR)
    assert restricted.names == ["street.wav"]


def test_single_file_layout(noise_dir: Path) -> None:
    spec = NoiseSpec(str(noise_dir / "street.wav"), 10)
    bank = NoiseBank(spec, SR)
    assert bank.layout == "file" and bank.names == ["street.wav"]
    assert re.fullmatch(r"noise-street-[0-9a-f]{8}-snr10-seed0", spec.key())
    noisy, d = bank.mix(_speech(), "u")
    assert d["recording"] == "street.wav" and _close(d["snr_db"], 10)


def test_resamples_noise(tmp_path: Path) -> None:
    path = _write(tmp_path / "n8k" / "hum.wav", 1.0, seed=3, sr=8000)
    bank = NoiseBank(NoiseSpec(str(path.parent), 10), SR)
    assert bank.describe()["recordings"][0]["seconds"] == pytest.approx(1.0)
    assert _close(bank.mix(_speech(), "u")[1]["snr_db"], 10)


def test_demand_layout(demand_root: Path) -> None:
    bank = NoiseBank(NoiseSpec(str(demand_root), 10), SR)
    assert bank.layout == "demand"
    assert bank.names == ["KITCHEN/ch01.wav", "PARK/ch01.wav", "STATION/ch01.wav"]
    only = NoiseBank(NoiseSpec(str(demand_root), 10, environments=("PARK", "KITCHEN")), SR)
    assert only.names == ["KITCHEN/ch01.wav", "PARK/ch01.wav"]
    assert {only.mix(_speech(0.2), f"u{i}")[1]["recording"] for i in range(12)} <= set(only.names)
    ch2 = NoiseBank(NoiseSpec(str(demand_root), 10, channel="ch02", layout="demand"), SR)
    assert ch2.names[0] == "KITCHEN/ch02.wav" and ch2.fingerprint != bank.fingerprint
    assert _close(bank.mix(_speech(), "x")[1]["snr_db"], 10)


# --- errors -------------------------------------------------------------------------------

def test_errors(tmp_path: Path, noise_dir: Path, demand_root: Path) -> None:
    with pytest.raises(NoiseError, match="not found"):
        NoiseBank(NoiseSpec(str(tmp_path / "missing"), 10), SR)
    (tmp_path / "empty").mkdir()
    with pytest.raises(NoiseError, match="empty"):
        NoiseBank(NoiseSpec(str(tmp_path / "empty"), 10), SR)
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "a.txt").write_text("x")
    with pytest.raises(NoiseError, match="no usable"):
        NoiseBank(NoiseSpec(str(tmp_path / "texts"), 10), SR)
    with pytest.raises(NoiseError, match=r"unknown noise environments \['GARAGE'\].*KITCHEN"):
        NoiseBank(NoiseSpec(str(demand_root), 10, environments=("GARAGE",)), SR)
    with pytest.raises(NoiseError, match="available: \\['cafe', 'street', 'train'\\]"):
        NoiseBank(NoiseSpec(str(noise_dir), 10, environments=("tram",)), SR)
    for bad in (math.nan, math.inf):
        with pytest.raises(NoiseError, match="finite"):
            NoiseSpec(str(noise_dir), bad)
    with pytest.raises(NoiseError, match="layout"):
        NoiseSpec(str(noise_dir), 10, layout="tree")
    bank = NoiseBank(NoiseSpec(str(noise_dir), 10), SR)
    with pytest.raises(NoiseError, match="utt-silent.*silent"):
        bank.mix(np.zeros(SR, dtype=np.float32), "utt-silent")
    with pytest.raises(NoiseError, match="mono"):
        bank.mix(np.zeros((2, SR), dtype=np.float32), "stereo")
    sf.write(noise_dir / "zeros.wav", np.zeros(SR), SR)
    with pytest.raises(NoiseError, match="zeros.wav is silent"):
        NoiseBank(NoiseSpec(str(noise_dir), 10), SR)
    (noise_dir / "broken.wav").write_bytes(b"RIFF garbage")
    with pytest.raises(NoiseError, match="broken.wav is unusable"):
        NoiseBank(NoiseSpec(str(noise_dir), 10, environments=("broken",)), SR)


# --- real data ----------------------------------------------------------------------------

@pytest.mark.shared
def test_real_noise_folder(shared_dir: Path) -> None:
    folder = shared_dir / "noise"
    if not folder.is_dir():
        pytest.skip(f"no noise folder at {folder}")
    spec = NoiseSpec(str(folder), 10)
    t0 = time.perf_counter()
    key = spec.key()
    t_key = time.perf_counter() - t0
    t0 = time.perf_counter()
    bank = NoiseBank(spec, SR)
    t_bank = time.perf_counter() - t0
    assert len(bank.names) == 10 and bank.key == key
    clean = _speech(3.0)
    noisy, d = bank.mix(clean, "real-utt-0001")
    assert _close(d["snr_db"], 10) and _close(_snr_from_output(clean, noisy, d), 10)
    size = sum(r["bytes"] for r in bank.describe()["recordings"]) / 1e6
    print(f"\n{key}: fingerprint {t_key:.3f} s ({size:.1f} MB), bank load {t_bank:.3f} s, "
          f"mixed {d['recording']} @ {d['offset']}")
    assert t_key < 3.0
