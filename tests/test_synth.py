"""Synthetic corpora: native naming, IEMOCAP label files, audio format, determinism, learnability."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from data_manifests.synth import DEMO_CORPORA, generate_corpus, generate_demo_corpora

NAME_PATTERNS = {
    "emodb": r"wav/(03|08|09|1[0-6])(a0[12457]|b0[123]|b09|b10)[WLEAFTN][a-z]\.wav",
    "emovo": r"([fm][123])/(dis|gio|neu|pau|rab|sor|tri)-\1-(b[1-3]|d[12]|l[1-4]|n[1-5])\.wav",
    "urdu": r"(Angry|Happy|Neutral|Sad)/S[MF]\d+_F\d+_[AHNS]\d{3}\.wav",
    "iemocap": r"Session([1-5])/sentences/wav/(Ses0\1[FM]_(impro\d\d|script\d\d_\d))/\2_[FM]\d{3}\.wav",
}
LABEL_LINE = re.compile(  # [START - END] <TAB> utt_id <TAB> label <TAB> [V, A, D]
    r"^\[(\d+\.\d{4}) - (\d+\.\d{4})\]\t(Ses0\d[FM]_\w+_[FM]\d{3})\t(\w{3})\t"
    r"\[(\d\.\d{4}), (\d\.\d{4}), (\d\.\d{4})\]$"
)
IEMOCAP_HEADER = "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]"

FOUR_CLASS = {
    "emodb": {"W": "angry", "F": "happy", "N": "neutral", "T": "sad"},
    "emovo": {"rab": "angry", "gio": "happy", "neu": "neutral", "tri": "sad"},
    "urdu": {"Angry": "angry", "Happy": "happy", "Neutral": "neutral", "Sad": "sad"},
    "iemocap": {"ang": "angry", "hap": "happy", "exc": "happy", "neu": "neutral", "sad": "sad"},
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, Path]]:
    return generate_demo_corpora(tmp_path_factory.mktemp("tiny"), size="tiny")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, Path]]:
    return generate_demo_corpora(tmp_path_factory.mktemp("demo"))


# --------------------------------------------------------------------------- reading the layouts


def iemocap_labels(root: Path) -> dict[str, str]:
    """utt_id -> raw label from every EmoEvaluation file."""
    labels = {}
    for txt in root.glob("Session*/dialog/EmoEvaluation/*.txt"):
        for line in txt.read_text().splitlines():
            if m := LABEL_LINE.match(line):
                labels[m.group(3)] = m.group(4)
    return labels


def utterances(layout: str, root: Path) -> list[tuple[Path, str, str]]:
    """(path, raw label, speaker-independent group) for every utterance."""
    wavs = sorted(root.rglob("*.wav"))
    if layout == "emodb":
        return [(p, p.name[5], p.name[:2]) for p in wavs]
    if layout == "emovo":
        return [(p, p.name.split("-")[0], p.parent.name) for p in wavs]
    if layout == "urdu":
        return [(p, p.parent.name, p.name.split("_")[0]) for p in wavs]
    labels = iemocap_labels(root)
    return [(p, labels[p.stem], p.stem[:5]) for p in wavs]  # group: session


def four_class(layout: str, root: Path) -> list[tuple[Path, str, str]]:
    mapping = FOUR_CLASS[layout]
    return [(p, mapping[raw], group) for p, raw, group in utterances(layout, root) if raw in mapping]


def sha256_tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------- layout and format


def test_demo_corpora_table_and_result(tiny: dict[str, tuple[str, Path]]) -> None:
    assert set(tiny) == set(DEMO_CORPORA) == {"iemocap", "emodb", "emovo", "urdu"}
    for name, (layout, path) in tiny.items():
        assert layout == DEMO_CORPORA[name].layout
        assert path.name == name and path.is_dir()
    assert {info.language for info in DEMO_CORPORA.values()} == {"en", "de", "it", "ur"}


@pytest.mark.parametrize("layout", sorted(NAME_PATTERNS))
def test_files_follow_native_naming(tiny: dict[str, tuple[str, Path]], layout: str) -> None:
    root = tiny[layout][1]
    wavs = [p.relative_to(root).as_posix() for p in root.rglob("*.wav")]
    assert wavs
    bad = [w for w in wavs if not re.fullmatch(NAME_PATTERNS[layout], w)]
    assert not bad, bad
    if layout == "urdu":
        assert all(Path(w).parent.name[0] == Path(w).stem.split("_")[2][0] for w in wavs)


@pytest.mark.parametrize("layout, rate, channels", [
    ("emodb", 16000, 1), ("emovo", 48000, 2), ("urdu", 16000, 1), ("iemocap", 16000, 1),
])
def test_audio_format_and_tiny_lengths(tiny: dict[str, tuple[str, Path]], layout: str, rate: int,
                                       channels: int) -> None:
    for wav in tiny[layout][1].rglob("*.wav"):
        info = sf.info(str(wav))
        assert (info.samplerate, info.channels, info.subtype) == (rate, channels, "PCM_16")
        assert 0.3 <= info.duration < 1.0


def test_emovo_stereo_channels_are_not_identical(tiny: dict[str, tuple[str, Path]]) -> None:
    data, _ = sf.read(str(next(tiny["emovo"][1].rglob("*.wav"))))
    assert data.shape[1] == 2 and not np.array_equal(data[:, 0], data[:, 1])
    assert np.corrcoef(data[:, 0], data[:, 1])[0, 1] > 0.9


def test_iemocap_label_files_parse(tiny: dict[str, tuple[str, Path]]) -> None:
    root = tiny["iemocap"][1]
    texts = sorted(root.glob("Session*/dialog/EmoEvaluation/*.txt"))
    assert texts
    seen: dict[str, str] = {}
    for txt in texts:
        lines = txt.read_text().splitlines()
        assert lines[0] == IEMOCAP_HEADER
        assert "" in lines and any(line.startswith("C-E") for line in lines)
        assert any(line.startswith("A-E") for line in lines)
        for line in lines:
            if not line.startswith("["):
                continue
            m = LABEL_LINE.match(line)
            assert m, line
            start, end, utt = float(m.group(1)), float(m.group(2)), m.group(3)
            assert utt.startswith(txt.stem + "_")
            wav = root / txt.parents[2].name / "sentences/wav" / txt.stem / f"{utt}.wav"
            assert abs((end - start) - sf.info(str(wav)).duration) < 1e-3
            assert all(1.0 <= float(m.group(i)) <= 5.0 for i in (5, 6, 7))
            seen[utt] = m.group(4)
    assert set(seen) == {p.stem for p in root.rglob("*.wav")}
    assert set(seen.values()) == {"ang", "hap", "exc", "neu", "sad", "fru", "sur", "xxx"}
    for session in {utt[:5] for utt in seen}:
        assert {utt[-4] for utt in seen if utt.startswith(session)} == {"F", "M"}


@pytest.mark.parametrize("layout, labels", [
    ("emodb", set("WLEAFTN")), ("emovo", {"dis", "gio", "neu", "pau", "rab", "sor", "tri"}),
    ("urdu", {"Angry", "Happy", "Neutral", "Sad"}),
])
def test_every_emotion_is_present(tiny: dict[str, tuple[str, Path]], layout: str, labels: set[str]) -> None:
    assert {raw for _, raw, _ in utterances(layout, tiny[layout][1])} == labels


def test_unknown_layout_or_size_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="layout"):
        generate_corpus("ravdess", tmp_path)
    with pytest.raises(ValueError, match="size"):
        generate_corpus("emodb", tmp_path, size="huge")


# --------------------------------------------------------------------------- determinism


def test_same_seed_gives_identical_bytes(tiny: dict[str, tuple[str, Path]], tmp_path: Path) -> None:
    again = generate_demo_corpora(tmp_path, size="tiny")
    for name, (_, path) in tiny.items():
        assert sha256_tree(again[name][1]) == sha256_tree(path), name


def test_other_seed_gives_other_audio(tiny: dict[str, tuple[str, Path]], tmp_path: Path) -> None:
    other = sha256_tree(generate_corpus("emodb", tmp_path, seed=1, size="tiny"))
    same_names = sha256_tree(tiny["emodb"][1])
    assert set(other) == set(same_names)
    assert all(other[name] != same_names[name] for name in other)


# --------------------------------------------------------------------------- demo size and learnability


def test_demo_sizes_and_lengths(demo: dict[str, tuple[str, Path]]) -> None:
    for name, (layout, root) in demo.items():
        rows = four_class(layout, root)
        counts = {c: sum(label == c for _, label, _ in rows) for c in ("angry", "happy", "neutral", "sad")}
        print(f"\n{name}: {counts}", end="")
        assert 60 <= len(rows) <= 120 and min(counts.values()) >= 15
        durations = [sf.info(str(p)).duration for p, _, _ in utterances(layout, root)]
        assert 1.0 <= min(durations) and max(durations) <= 3.0


BAND_EDGES = np.geomspace(60.0, 8000.0, 41)


def features(path: Path) -> np.ndarray:
    """Mean and std of log power in 40 bands, plus frame log-energy statistics, at 16 kHz mono."""
    wave, sr = sf.read(str(path), always_2d=True)
    wave = wave.mean(axis=1)
    if sr != 16000:
        wave = soxr.resample(wave, sr, 16000)
    frames = np.lib.stride_tricks.sliding_window_view(wave, 400)[::160] * np.hanning(400)
    power = np.abs(np.fft.rfft(frames, 512)) ** 2
    freqs = np.fft.rfftfreq(512, 1 / 16000)
    bands = np.stack([power[:, (freqs >= lo) & (freqs < hi)].sum(axis=1)
                      for lo, hi in zip(BAND_EDGES[:-1], BAND_EDGES[1:])], axis=1)
    log_bands = np.log(bands + 1e-10)
    energy = np.log(power.sum(axis=1) + 1e-10)
    return np.concatenate([log_bands.mean(axis=0), log_bands.std(axis=0),
                           [energy.mean(), energy.std(), *np.percentile(energy, [10, 50, 90])]])


def classifier():
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))


def within_uar(x: np.ndarray, y: np.ndarray, groups: np.ndarray) -> float:
    """UAR of 5-fold cross-validation with disjoint speaker groups."""
    pred = np.empty_like(y)
    for train, test in GroupKFold(n_splits=5).split(x, y, groups):
        pred[test] = classifier().fit(x[train], y[train]).predict(x[test])
    return balanced_accuracy_score(y, pred)


def cross_uar(source: tuple[np.ndarray, ...], target: tuple[np.ndarray, ...]) -> float:
    return balanced_accuracy_score(target[1], classifier().fit(source[0], source[1]).predict(target[0]))


def test_emotions_are_learnable_and_transfer_imperfectly(demo: dict[str, tuple[str, Path]]) -> None:
    data = {}
    for name, (layout, root) in demo.items():
        rows = four_class(layout, root)
        data[name] = (np.stack([features(p) for p, _, _ in rows]),
                      np.array([label for _, label, _ in rows]), np.array([group for _, _, group in rows]))

    with threadpool_limits(1):  # tiny problems: BLAS threads only add overhead
        within = {name: within_uar(*data[name]) for name in data}
        cross = {(source, target): cross_uar(data[source], data[target])
                 for source in data for target in data if target != source}

    print("\nwithin-corpus UAR (speaker-independent, 5 folds):",
          {k: round(v, 3) for k, v in within.items()})
    print("cross-corpus UAR (train -> test):")
    for (source, target), uar in cross.items():
        print(f"  {source:>8} -> {target:<8} {uar:.3f}")

    assert all(uar > 0.5 for uar in within.values()), within
    for pair in [("iemocap", "urdu"), ("emodb", "emovo")]:
        assert 0.3 < cross[pair] < 0.98, (pair, cross[pair])
    assert max(cross.values()) < 0.98
