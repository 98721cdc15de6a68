"""Acoustic conditions: parsing and its errors, seeded draws, records and replay, what each kind does."""

from __future__ import annotations

import hashlib
import json
import math
import pickle
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from featurestore.conditions import (
    KINDS,
    ConditionAudioError,
    ConditionChain,
    ConditionError,
    ConditionSpec,
    clipping_threshold,
    columns_to_records,
    condition_key,
    parse_condition,
    record_json,
    records_to_columns,
    synthetic_rir,
)
from featurestore.errors import FsError
from featurestore.noise import NoiseBank, NoiseSpec

SR = 16000
PROJECT_ROOT = Path(__file__).resolve().parents[1]


def _speech(seconds: float = 1.0, amp: float = 0.2, seed: int = 7) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    rng = np.random.default_rng(seed)
    wave = amp * np.sin(2 * np.pi * 220 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
    return (wave + 0.02 * rng.standard_normal(t.size)).astype(np.float32)


def _white(seconds: float = 4.0, amp: float = 0.1, seed: int = 0) -> np.ndarray:
    return (amp * np.random.default_rng(seed).standard_normal(int(seconds * SR))).astype(np.float32)


@pytest.fixture
def noise_dir(tmp_path: Path) -> Path:
    root = tmp_path / "babble"
    root.mkdir()
    for i, (name, secs) in enumerate([("cafe", 1.0), ("street", 1.5), ("train", 0.7)]):
        rng = np.random.default_rng(i)
        sf.write(root / f"{name}.wav", ((0.1 + 0.1 * i) * rng.standard_normal(int(secs * SR))).clip(-1, 1), SR,
                 subtype="FLOAT")
    return root


# --- parsing ----------------------------------------------------------------------------------

def test_parse_fills_defaults_and_round_trips() -> None:
    spec = parse_condition("reverb:rt60=0.3-0.9")
    assert spec.kind == "reverb" and spec["rt60"] == (0.3, 0.9) and spec["drr"] == (0.0, 0.0)
    assert spec.text == "reverb:drr=0,rt60=0.3-0.9"
    assert parse_condition(spec.text) == spec
    assert ConditionSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    assert parse_condition(" Reverb : RT60=0.5 ") == parse_condition("reverb:rt60=0.5-0.5")
    assert parse_condition("gain:db=-12--6")["db"] == (-12.0, -6.0)
    assert parse_condition("gain:db=-3")["db"] == (-3.0, -3.0)
    assert parse_condition("noise:snr=-5")["snr"] == -5.0
    tel = parse_condition("telephone")
    assert (tel["band"], tel["rate"], tel["codec"], tel["bitrate"]) == ((300.0, 3400.0), 8000, "none", None)
    mp3 = parse_condition("telephone:codec=mp3")
    assert mp3["bitrate"] == (16.0, 16.0) and parse_condition(mp3.text) == mp3
    assert parse_condition("clipping:percent=1-5")["percent"] == (1.0, 5.0)
    assert parse_condition("noise:snr=5,env=PARK+KITCHEN")["env"] == ("KITCHEN", "PARK")


def test_chain_text_key_and_serialisation() -> None:
    chain = ConditionChain.parse(["reverb:rt60=0.3-0.9", "gain:db=-6"], seed=3)
    assert chain.text == "reverb:drr=0,rt60=0.3-0.9 > gain:db=-6"
    assert ConditionChain.parse(chain.text, seed=3) == chain
    assert ConditionChain.from_dict(json.loads(json.dumps(chain.to_dict()))) == chain
    assert chain.key.startswith("reverb-drr_0-rt60_0.3-0.9__gain-db_-6-seed3-")
    assert ConditionChain.parse(chain.text, seed=3).key == chain.key
    assert ConditionChain.parse(chain.text, seed=4).key != chain.key
    assert ConditionChain.parse(["reverb:rt60=0.3-0.8", "gain:db=-6"], seed=3).key != chain.key
    assert all(c.isalnum() or c in "-_." for c in chain.key)
    assert ConditionChain().key == condition_key(None) == condition_key(ConditionChain.parse("clean")) == "clean"


BAD = [
    ("echo", "unknown condition 'echo'; valid: " + ", ".join(KINDS)),
    ("reverb:rt=1", "unknown parameter 'rt' for reverb; valid: drr, ir, rt60"),
    ("reverb:rt60=-0.5", "rt60=-0.5 must be above 0 s"),
    ("reverb:rt60=0", "rt60=0 must be above 0 s"),
    ("reverb:rt60=0.9-0.3", "min > max; write rt60=0.3-0.9"),
    ("reverb:rt60=fast", "rt60='fast' must be a number or a LO-HI range (s)"),
    ("noise:snr=inf", "snr=inf must be finite"),
    ("noise:snr=nan", "snr=nan must be finite"),
    ("noise:snr=0-20", "snr takes one value per condition"),
    ("noise", "noise needs snr=VALUE (dB)"),
    ("noise:snr=5,layout=zip", "layout='zip' is not valid; valid: auto, folder, demand, file"),
    ("telephone:band=300-5000", "band=300-5000 reaches the Nyquist frequency 4000 Hz of rate=8000"),
    ("telephone:band=300-3400,rate=6000", "reaches the Nyquist frequency 3000 Hz"),
    ("telephone:rate=8000.5", "rate=8000.5 must be a whole number"),
    ("telephone:bitrate=16", "bitrate needs codec=mp3"),
    ("telephone:codec=mp3,bitrate=80-128", "no MP3 bitrate in 80-128 kbps at rate=8000; valid: 8, 16"),
    ("telephone:codec=aac", "codec='aac' is not valid; valid: none, mp3"),
    ("gain", "gain needs db=VALUE (dB)"),
    ("clipping:percent=100", "percent=100 must be below 100%"),
    ("clipping:percent=0", "percent=0 must be above 0%"),
    ("gain:db=1,db=2", "parameter 'db' given twice"),
    ("gain:db", "'db' is not NAME=VALUE"),
    ("", "empty condition"),
]


@pytest.mark.parametrize("text, message", BAD)
def test_bad_conditions_are_refused_at_parse_time(text: str, message: str) -> None:
    with pytest.raises(ConditionError) as info:
        parse_condition(text)
    assert message in str(info.value)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, FsError) and isinstance(info.value, ValueError)


def test_chain_errors_before_any_audio(noise_dir: Path) -> None:
    with pytest.raises(ConditionError, match="needs a noise source: --noise DIR or noise:source=DIR"):
        ConditionChain.parse(["noise:snr=5"])
    with pytest.raises(ConditionError, match="at most one noise step"):
        ConditionChain.parse(["noise:snr=5", "noise:snr=0"], noise=str(noise_dir))
    with pytest.raises(ConditionError, match="noise source not found"):
        ConditionChain.parse(["noise:snr=5"], noise=str(noise_dir / "nope")).prepare(SR)
    with pytest.raises(ConditionError, match="rate=8000 is above the audio's sample rate 4000 Hz"):
        ConditionChain.parse(["telephone"]).prepare(4000)
    with pytest.raises(ConditionError, match="seed must be an int"):
        ConditionChain((), seed="1")  # type: ignore[arg-type]


# --- determinism, records, replay -------------------------------------------------------------

ALL_STEPS = ["reverb:rt60=0.2-0.8,drr=-3-6", "telephone:codec=mp3,bitrate=8-32", "gain:db=-6-3", "clipping:percent=0.5-4"]


def test_same_utterance_and_seed_give_identical_output_and_record(noise_dir: Path) -> None:
    texts = [*ALL_STEPS, "noise:snr=5"]
    wave = _speech()
    first = ConditionChain.parse(texts, seed=2, noise=str(noise_dir)).apply(wave, SR, "spk1/utt1")
    again = ConditionChain.parse(texts, seed=2, noise=str(noise_dir)).apply(wave.copy(), SR, "spk1/utt1")
    assert np.array_equal(first[0], again[0]) and first[0].dtype == np.float32 and first[0].shape == wave.shape
    assert record_json(first[1]) == record_json(again[1])
    assert [s["kind"] for s in first[1]["steps"]] == ["reverb", "telephone", "gain", "clipping", "noise"]


def test_different_utterances_and_seeds_draw_differently() -> None:
    chain = ConditionChain.parse(ALL_STEPS, seed=0)
    wave = _speech()
    draws = {chain.apply(wave, SR, f"utt{i}")[1]["steps"][0]["rt60"] for i in range(20)}
    assert len(draws) == 20 and all(0.2 <= d <= 0.8 for d in draws)
    a = chain.apply(wave, SR, "utt0")[1]
    b = ConditionChain.parse(ALL_STEPS, seed=1).apply(wave, SR, "utt0")[1]
    assert a != b
    bitrates = {chain.apply(wave, SR, f"utt{i}")[1]["steps"][1]["bitrate"] for i in range(20)}
    assert bitrates <= {8, 16, 24, 32} and len(bitrates) > 1


def test_a_pickled_chain_carries_no_built_steps_and_applies_the_same(noise_dir: Path) -> None:
    chain = ConditionChain.parse([*ALL_STEPS, "noise:snr=5"], seed=2, noise=str(noise_dir))
    wave = _speech()
    out, record = chain.apply(wave, SR, "u")
    payload = pickle.dumps(chain)
    assert len(payload) < 4000
    copy = pickle.loads(payload)
    assert copy == chain and copy.key == chain.key
    again, again_record = copy.apply(wave, SR, "u")
    assert np.array_equal(again, out) and again_record == record


@pytest.mark.slow
def test_other_process_reproduces_output_and_record(noise_dir: Path) -> None:
    code = (
        "import hashlib, sys, numpy as np\n"
        "from featurestore.conditions import ConditionChain, record_json\n"
        f"chain = ConditionChain.parse({[*ALL_STEPS, 'noise:snr=5']!r}, seed=5, noise={str(noise_dir)!r})\n"
        "wave = np.load(sys.argv[1])\n"
        "out, record = chain.apply(wave, 16000, 'utt9')\n"
        "print(hashlib.sha256(out.tobytes()).hexdigest(), record_json(record))\n"
    )
    wave = _speech(1.3)
    np.save(noise_dir.parent / "wave.npy", wave)
    done = subprocess.run([sys.executable, "-c", code, str(noise_dir.parent / "wave.npy")], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=120, check=True)
    out, record = ConditionChain.parse([*ALL_STEPS, "noise:snr=5"], seed=5, noise=str(noise_dir)).apply(wave, SR, "utt9")
    assert done.stdout.strip() == f"{hashlib.sha256(out.tobytes()).hexdigest()} {record_json(record)}"


@pytest.mark.parametrize("texts", [[s] for s in ALL_STEPS] + [["telephone"], ["noise:snr=0"], [*ALL_STEPS, "noise:snr=10"],
                                   ["noise:snr=-5", "reverb:rt60=1.2"]])
def test_replay_from_record_is_bit_identical(texts: list[str], noise_dir: Path) -> None:
    chain = ConditionChain.parse(texts, seed=1, noise=str(noise_dir))
    replayer = ConditionChain.parse(texts, seed=1, noise=str(noise_dir))
    for i in range(3):
        wave = _speech(0.5 + 0.4 * i, seed=i)
        out, record = chain.apply(wave, SR, f"utt{i}")
        assert np.array_equal(replayer.replay(wave, SR, json.loads(record_json(record))), out)


def test_replay_refuses_a_record_of_another_chain(noise_dir: Path) -> None:
    wave = _speech()
    _, record = ConditionChain.parse(["gain:db=-6"]).apply(wave, SR, "u")
    with pytest.raises(ConditionError, match="do not match condition 'reverb:drr=0,rt60=0.5'"):
        ConditionChain.parse(["reverb:rt60=0.5"]).replay(wave, SR, record)
    with pytest.raises(ConditionError, match="record lacks"):
        ConditionChain.parse(["gain:db=-6"]).replay(wave, SR, {"steps": [{"kind": "gain"}]})


def test_records_are_small() -> None:
    """A few numbers per utterance: well under 1% of one utterance's pooled features in the smallest real
    encoder (whisper-base: 7 layers x 512 x mean+std x float32 = 28,672 bytes)."""
    chain = ConditionChain.parse(["reverb:rt60=0.3-0.9", "telephone:codec=mp3,bitrate=8-32"], seed=0)
    size = len(record_json(chain.apply(_speech(), SR, "speaker_01/utterance_0001")[1]).encode())
    assert size < 0.01 * 7 * 512 * 2 * 4


def test_records_as_columns_round_trip_exactly(noise_dir: Path) -> None:
    chain = ConditionChain.parse([*ALL_STEPS, "noise:snr=5"], seed=4, noise=str(noise_dir))
    waves = [_speech(0.4 + 0.2 * i, seed=i) for i in range(4)]
    records = [chain.apply(w, SR, f"u{i}")[1] for i, w in enumerate(waves)]
    columns = records_to_columns([records[0], None, records[2], records[3]])
    assert columns["0.reverb.ir_seed"].dtype == np.int64 and columns["4.noise.recording"].dtype == object
    assert columns["0.reverb.rt60"].shape == (4,) and np.isnan(columns["0.reverb.rt60"][1])
    back = columns_to_records(columns)
    for row in (0, 2, 3):
        assert record_json(back[row]) == record_json(records[row])
        assert np.array_equal(chain.replay(waves[row], SR, back[row]), chain.apply(waves[row], SR, f"u{row}")[0])
    assert records_to_columns([None, None]) == {} and columns_to_records({}) == []


def test_bad_audio_is_an_utterance_error(noise_dir: Path) -> None:
    chain = ConditionChain.parse(["noise:snr=5"], noise=str(noise_dir))
    with pytest.raises(ConditionAudioError, match="u1: .*silent"):
        chain.apply(np.zeros(100, np.float32), SR, "u1")
    with pytest.raises(ConditionAudioError, match="NaN"):
        ConditionChain.parse(["gain:db=1"]).apply(np.array([0.1, np.nan], np.float32), SR, "u2")
    clean, record = ConditionChain().apply(_speech(), SR, "u3")
    assert np.array_equal(clean, _speech()) and record == {"steps": []}


# --- what each kind does ----------------------------------------------------------------------

def _band_db(before: np.ndarray, after: np.ndarray, lo: float, hi: float) -> float:
    """Energy change in dB of ``after`` against ``before`` between ``lo`` and ``hi`` Hz (FFT)."""
    freqs = np.fft.rfftfreq(before.size, 1 / SR)
    band = (freqs >= lo) & (freqs < hi)
    energy = [float(np.sum(np.abs(np.fft.rfft(w.astype(np.float64)))[band] ** 2)) for w in (before, after)]
    return 10 * math.log10(energy[1] / energy[0])


@pytest.mark.parametrize("text, passband_db", [("telephone", 0.5), ("telephone:codec=mp3,bitrate=16", 2.0)])
def test_telephone_removes_energy_outside_300_to_3400_hz(text: str, passband_db: float) -> None:
    wave = _white()
    out, record = ConditionChain.parse([text]).apply(wave, SR, "u")
    assert out.shape == wave.shape
    assert abs(_band_db(wave, out, 500, 3000)) < passband_db
    assert _band_db(wave, out, 3400, 8000) < -20
    assert _band_db(wave, out, 3700, 8000) < -50
    assert _band_db(wave, out, 0, 300) < -12
    assert _band_db(wave, out, 0, 200) < -30
    assert record["steps"][0]["bitrate"] == (16 if "mp3" in text else 0)


@pytest.mark.parametrize("samples, sample_rate", [(1, SR), (30, SR), (799, SR), (1601, SR), (1, 44100), (2, 44100)])
def test_telephone_takes_short_utterances(samples: int, sample_rate: int) -> None:
    chain = ConditionChain.parse(["telephone:codec=mp3,bitrate=8-64"], seed=2)
    wave = _white(1.0)[:samples]
    out, record = chain.apply(wave, sample_rate, "short")
    assert out.shape == wave.shape and np.all(np.isfinite(out))
    assert np.array_equal(chain.replay(wave, sample_rate, record), out)


def test_mp3_codec_changes_the_narrow_band_signal() -> None:
    wave = _white(1.0)
    plain = ConditionChain.parse(["telephone"]).apply(wave, SR, "u")[0]
    coded = ConditionChain.parse(["telephone:codec=mp3,bitrate=8"]).apply(wave, SR, "u")[0]
    error = float(np.sqrt(np.mean((plain - coded) ** 2)) / np.sqrt(np.mean(plain**2)))
    assert 0.05 < error < 1.5


def _tail_energy(rt60: float) -> float:
    burst = np.zeros(SR, np.float32)
    burst[: SR // 4] = _white(0.25)
    out, _ = ConditionChain.parse([f"reverb:rt60={rt60}"]).apply(burst, SR, "u")
    assert out.shape == burst.shape
    return float(np.sum(out[SR // 4 + 80:].astype(np.float64) ** 2))


def test_reverb_lengthens_decay() -> None:
    short, long = _tail_energy(0.2), _tail_energy(0.8)
    assert 0 < short < long
    # the impulse response falls 60 dB in rt60: Schroeder backward integration, T20 line extrapolated
    for rt60 in (0.3, 0.9):
        ir = synthetic_rir(rt60, 0.0, SR, seed=4)
        assert math.isclose(float(np.sum(ir**2)), 1.0, rel_tol=1e-9)
        edc = 10 * np.log10(np.cumsum(ir[::-1] ** 2)[::-1] / np.sum(ir[1:] ** 2))
        t5, t25 = np.argmax(edc < -5), np.argmax(edc < -25)
        assert math.isclose(3 * (t25 - t5) / SR, rt60, rel_tol=0.1)


def test_reverb_direct_to_reverberant_ratio() -> None:
    ir = synthetic_rir(0.5, 6.0, SR, seed=1)
    assert math.isclose(10 * math.log10(ir[0] ** 2 / np.sum(ir[1:] ** 2)), 6.0, abs_tol=1e-9)


@pytest.fixture
def ir_dir(tmp_path: Path) -> Path:
    root = tmp_path / "rooms"
    (root / "hall").mkdir(parents=True)
    sf.write(root / "small.wav", synthetic_rir(0.2, 3.0, SR, seed=1), SR, subtype="FLOAT")
    sf.write(root / "hall" / "big.wav", synthetic_rir(1.0, -3.0, SR, seed=2), SR, subtype="FLOAT")
    return root


def test_reverb_over_recorded_impulse_responses(ir_dir: Path, tmp_path: Path) -> None:
    from scipy.signal import convolve

    chain = ConditionChain.parse([f"reverb:ir={ir_dir}"], seed=0)
    wave = _speech()
    chosen = set()
    for i in range(12):
        out, record = chain.apply(wave, SR, f"utt{i}")
        name = record["steps"][0]["ir"]
        chosen.add(name)
        ir, _ = sf.read(ir_dir / name, dtype="float32")
        full = convolve(wave, ir)
        assert np.allclose(out, full[: wave.size] * (0.5 / np.max(np.abs(full))), atol=1e-6)
        assert np.array_equal(ConditionChain.parse([f"reverb:ir={ir_dir}"]).replay(wave, SR, record), out)
    assert chosen == {"small.wav", "hall/big.wav"}
    assert re.fullmatch(r"reverb-ir_rooms-[0-9a-f]{8}-seed0-[0-9a-f]{8}", chain.key)
    moved = shutil.copytree(ir_dir, tmp_path / "elsewhere" / "rooms")
    assert ConditionChain.parse([f"reverb:ir={moved}"]).key == chain.key
    sf.write(moved / "small.wav", synthetic_rir(0.3, 3.0, SR, seed=1), SR, subtype="FLOAT")
    assert ConditionChain.parse([f"reverb:ir={moved}"]).key != chain.key
    with pytest.raises(ConditionError, match="ir=PATH .* or rt60/drr .* not both"):
        parse_condition(f"reverb:ir={ir_dir},rt60=0.5")
    with pytest.raises(ConditionError, match="impulse responses not found"):
        ConditionChain.parse([f"reverb:ir={tmp_path / 'none'}"]).prepare(SR)
    with pytest.raises(ConditionError, match="which is not in"):
        chain.replay(wave, SR, {"steps": [{"kind": "reverb", "ir": "gone.wav"}]})


def test_gain_is_exact() -> None:
    wave = _speech()
    out, record = ConditionChain.parse(["gain:db=-12--3"]).apply(wave, SR, "u")
    db = record["steps"][0]["db"]
    assert -12 <= db <= -3
    assert np.array_equal(out, (wave.astype(np.float64) * 10 ** (db / 20)).astype(np.float32))
    loud, _ = ConditionChain.parse(["gain:db=20"]).apply(wave, SR, "u")
    assert np.array_equal(loud, (wave.astype(np.float64) * 10.0).astype(np.float32))


def test_clipping_is_exact() -> None:
    wave = _white(2.0)
    out, record = ConditionChain.parse(["clipping:percent=5"]).apply(wave, SR, "u")
    threshold = np.float32(np.quantile(np.abs(wave.astype(np.float64)), 0.95))
    assert record["steps"][0] == {"kind": "clipping", "percent": 5.0, "threshold": float(threshold)}
    assert threshold == clipping_threshold(wave, 5.0)
    assert np.array_equal(out, np.clip(wave, -threshold, threshold))
    assert math.isclose(np.mean(np.abs(wave) > threshold), 0.05, abs_tol=0.001)


def test_noise_condition_equals_noise_bank_bit_for_bit(noise_dir: Path) -> None:
    spec = NoiseSpec(str(noise_dir), 5.0, seed=3)
    bank = NoiseBank(spec, SR)
    chain = ConditionChain.parse(["noise:snr=5"], seed=3, noise=str(noise_dir))
    assert chain.key == spec.key() == ConditionChain.from_noise(spec).key
    assert ConditionChain.from_noise(spec) == chain and chain.noise_spec() == spec
    for i in range(5):
        wave = _speech(0.3 + 0.5 * i, seed=i)
        expected, details = bank.mix(wave, f"utt{i}")
        out, record = chain.apply(wave, SR, f"utt{i}")
        assert np.array_equal(out, expected)
        assert record == {"steps": [{"kind": "noise", **details}]}
    assert chain.describe(SR)["noise"] == bank.describe()


def test_noise_env_and_source_given_in_the_condition(noise_dir: Path) -> None:
    chain = ConditionChain.parse([f"noise:snr=0,source={noise_dir},env=cafe+train"], seed=1)
    spec = NoiseSpec(str(noise_dir), 0.0, seed=1, environments=("cafe", "train"))
    assert chain.key == spec.key()
    assert ConditionChain.parse(["noise:snr=0"], seed=1, noise=str(noise_dir), noise_env=("cafe", "train")) == chain
    _, record = chain.apply(_speech(), SR, "u")
    assert record["steps"][0]["recording"] in ("cafe.wav", "train.wav")


def test_chain_order_matters_and_is_recorded(noise_dir: Path) -> None:
    wave = _speech()
    first = ConditionChain.parse(["reverb:rt60=0.6", "noise:snr=5"], noise=str(noise_dir))
    second = ConditionChain.parse(["noise:snr=5", "reverb:rt60=0.6"], noise=str(noise_dir))
    out1, rec1 = first.apply(wave, SR, "u")
    out2, rec2 = second.apply(wave, SR, "u")
    assert [s["kind"] for s in rec1["steps"]] == ["reverb", "noise"]
    assert [s["kind"] for s in rec2["steps"]] == ["noise", "reverb"]
    assert not np.allclose(out1, out2, atol=1e-3)
    assert first.key != second.key and first.fingerprint != second.fingerprint
    # noise last: the SNR is exact against the reverberant speech
    assert math.isclose(rec1["steps"][1]["snr_db"], 5.0, abs_tol=1e-6)
    with pytest.raises(ConditionError, match="do not match"):
        second.replay(wave, SR, rec1)
