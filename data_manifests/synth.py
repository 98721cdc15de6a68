"""Synthetic emotional-speech corpora in the native layouts of EMODB, EMOVO, URDU and IEMOCAP.

Everything is generated from a seed, so parsers, tests and ``fs demo`` run with no data to
fetch; the same seed gives byte-identical files. The audio comes from a small source-filter
vocoder: a glottal pulse train (with jitter, shimmer and aspiration noise) and frication
noise, shaped by a cascade of second-order formant resonators whose tracks follow the
phonemes. The resonators are applied frame by frame in the frequency domain (the transfer
function of the same IIR sections), so formants can glide between phonemes.

Emotions act through their known acoustic correlates: F0 level and range, speaking rate,
vocal effort, voice tension (spectral tilt) and breathiness. Each corpus has its own
"language" (vowel formants, consonants, syllable structure, stress) and its own recording
channel, and speakers and utterances vary at random, so emotions overlap and transfer
between corpora is neither trivial nor hopeless.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import soundfile as sf
import soxr
from numpy.lib.stride_tricks import sliding_window_view
from scipy import fft
from scipy.ndimage import uniform_filter1d
from scipy.signal import fftconvolve, lfilter

__all__ = ["DEMO_CORPORA", "DemoCorpus", "SIZES", "generate_corpus", "generate_demo_corpora"]


# --------------------------------------------------------------------------- emotions


class Emotion(NamedTuple):
    """Acoustic profile of an emotion; effects scale with expressiveness around NEUTRAL."""

    f0_st: float  # mean F0 shift, semitones
    range_st: float  # pitch-accent excursion, semitones
    rate: float  # syllable rate factor (> 1 faster)
    level_db: float  # vocal effort
    tension: float  # 0 lax .. 1 pressed voice (less spectral tilt)
    breath: float  # aspiration noise relative to the voice
    jitter: float  # cycle-to-cycle F0 perturbation
    final_st: float  # utterance-final pitch movement, semitones
    pause: float  # chance of a pause between words


NEUTRAL = Emotion(0.0, 3.0, 1.00, 0.0, 0.50, 0.12, 0.010, -2.0, 0.15)
EMOTIONS: dict[str, Emotion] = {
    "neutral": NEUTRAL,
    "anger": Emotion(4.0, 5.0, 1.15, 8.0, 0.90, 0.06, 0.015, -3.0, 0.10),
    "happiness": Emotion(4.0, 8.0, 1.10, 4.0, 0.60, 0.12, 0.010, -1.0, 0.10),
    "excited": Emotion(5.0, 8.0, 1.18, 6.0, 0.70, 0.08, 0.012, 0.0, 0.08),
    "sadness": Emotion(-2.0, 1.5, 0.75, -6.0, 0.20, 0.40, 0.015, -1.0, 0.35),
    "boredom": Emotion(-2.5, 1.2, 0.85, -3.0, 0.40, 0.20, 0.010, -1.5, 0.25),
    "disgust": Emotion(-1.0, 4.0, 0.80, 1.0, 0.60, 0.20, 0.020, -4.0, 0.25),
    "fear": Emotion(6.0, 4.0, 1.20, 1.0, 0.55, 0.30, 0.040, 1.0, 0.20),
    "surprise": Emotion(5.0, 9.0, 1.05, 3.0, 0.60, 0.15, 0.010, 5.0, 0.10),
    "frustration": Emotion(1.0, 3.0, 1.00, 3.0, 0.75, 0.15, 0.015, -3.0, 0.20),
}
MIXED = "mixed"  # no agreed emotion (IEMOCAP "xxx"): the average of two random profiles


# --------------------------------------------------------------------------- phonetics

# Vowel F1-F3 (Hz) of an adult male; F4 and F5 are shared. SAMPA-like keys.
GERMAN_VOWELS = {
    "i:": (280, 2250, 2950), "I": (360, 2000, 2600), "e:": (350, 2150, 2700), "E": (500, 1750, 2550),
    "a": (700, 1300, 2500), "a:": (750, 1250, 2500), "o:": (380, 800, 2450), "O": (520, 950, 2450),
    "u:": (300, 750, 2250), "U": (380, 950, 2300), "y:": (280, 1700, 2100), "2:": (370, 1450, 2150),
    "@": (450, 1500, 2500), "6": (600, 1350, 2450),
}
ITALIAN_VOWELS = {
    "i": (290, 2250, 2900), "e": (380, 2000, 2600), "E": (520, 1850, 2550), "a": (750, 1350, 2500),
    "O": (570, 950, 2500), "o": (420, 850, 2500), "u": (310, 750, 2400),
}
URDU_VOWELS = {
    "i:": (300, 2250, 2950), "I": (400, 1900, 2600), "e:": (420, 2050, 2700), "{": (600, 1800, 2550),
    "@": (520, 1350, 2500), "a:": (720, 1200, 2550), "O": (560, 900, 2450), "o:": (450, 850, 2450),
    "U": (420, 1050, 2350), "u:": (320, 800, 2350),
}
ENGLISH_VOWELS = {
    "i": (342, 2322, 3000), "I": (427, 2034, 2684), "eI": (476, 2089, 2691), "E": (580, 1799, 2605),
    "{": (588, 1952, 2601), "A": (768, 1333, 2522), "O": (652, 997, 2538), "oU": (497, 910, 2459),
    "U": (469, 1122, 2434), "u": (378, 997, 2343), "V": (623, 1200, 2550), "3`": (474, 1379, 1710),
    "@": (500, 1500, 2500),
}
HIGH_FORMANTS = (3500.0, 4500.0)
BANDWIDTHS = (70.0, 100.0, 150.0, 220.0, 300.0)
NASAL_BANDWIDTHS = (150.0, 250.0, 350.0, 400.0, 400.0)

# Formant loci (F1-F4) of the consonant's place of articulation; "glottal" follows the vowel.
LOCI = {
    "labial": (250, 900, 2200, 3300), "alveolar": (250, 1700, 2600, 3400),
    "palatal": (250, 2000, 2700, 3400), "velar": (250, 1900, 2300, 3300),
    "retroflex": (300, 1600, 1900, 3200), "uvular": (450, 1200, 2400, 3300),
}
# Own formants (F1-F4) of sonorant consonants.
SONORANTS = {
    "m": (280, 1000, 2200, 3300), "n": (280, 1500, 2500, 3400), "N": (280, 1800, 2400, 3300),
    "l": (360, 1300, 2700, 3500), "r": (420, 1400, 2400, 3400), "r\\": (400, 1150, 1550, 3300),
    "j": (280, 2150, 2900, 3500), "w": (300, 700, 2250, 3300),
}


class Consonant(NamedTuple):
    """How a consonant is made: its manner, place, length and noise (burst or frication)."""

    kind: str  # stop, fricative, affricate, nasal, liquid, aspirate
    place: str  # key of LOCI, or "glottal"
    dur_ms: float
    noise_hz: float = 4000.0  # centre of the burst / frication noise
    noise_bw: float = 2000.0
    noise_db: float = -99.0
    voiced: bool = False
    aspiration_ms: float = 0.0


CONSONANTS: dict[str, Consonant] = {
    "p": Consonant("stop", "labial", 75, 1200, 2000, -12, False, 30),
    "b": Consonant("stop", "labial", 65, 1200, 2000, -16, True),
    "t": Consonant("stop", "alveolar", 70, 4000, 2500, -8, False, 35),
    "d": Consonant("stop", "alveolar", 60, 3500, 2500, -12, True),
    "k": Consonant("stop", "velar", 80, 2200, 1500, -8, False, 40),
    "g": Consonant("stop", "velar", 65, 2200, 1500, -12, True),
    "T": Consonant("stop", "retroflex", 70, 2600, 1500, -10, False, 20),
    "D": Consonant("stop", "retroflex", 60, 2600, 1500, -14, True),
    "ph": Consonant("stop", "labial", 75, 1200, 2000, -12, False, 75),
    "th": Consonant("stop", "alveolar", 70, 4000, 2500, -8, False, 80),
    "kh": Consonant("stop", "velar", 80, 2200, 1500, -8, False, 85),
    "f": Consonant("fricative", "labial", 100, 5000, 5000, -18),
    "v": Consonant("fricative", "labial", 70, 4000, 4000, -22, True),
    "s": Consonant("fricative", "alveolar", 110, 6000, 2500, -4),
    "z": Consonant("fricative", "alveolar", 80, 5500, 2500, -10, True),
    "S": Consonant("fricative", "palatal", 110, 3300, 1800, -4),
    "x": Consonant("fricative", "velar", 100, 1800, 1200, -10),
    "R": Consonant("fricative", "uvular", 60, 1500, 1000, -20, True),
    "TH": Consonant("fricative", "alveolar", 90, 6000, 5000, -20),
    "h": Consonant("aspirate", "glottal", 70),
    "ts": Consonant("affricate", "alveolar", 110, 5800, 2500, -6),
    "tS": Consonant("affricate", "palatal", 110, 3300, 1800, -6),
    "m": Consonant("nasal", "labial", 70),
    "n": Consonant("nasal", "alveolar", 65),
    "N": Consonant("nasal", "velar", 70),
    "l": Consonant("liquid", "alveolar", 60),
    "r": Consonant("liquid", "alveolar", 55),
    "r\\": Consonant("liquid", "alveolar", 65),
    "j": Consonant("liquid", "palatal", 55),
    "w": Consonant("liquid", "labial", 55),
}


@dataclass(frozen=True)
class Language:
    """Phonetics of one corpus' language: inventories (with weights), syllables, stress."""

    vowels: dict[str, tuple[int, int, int]]
    onsets: dict[str, float]
    codas: dict[str, float]
    liquids: tuple[str, ...]  # second element of an onset cluster
    coda_p: float
    cluster_p: float
    syllable_s: float  # mean syllable duration at neutral rate
    stress: str  # which syllable of a word is stressed: initial, penult, final
    reduce_p: float  # chance an unstressed vowel becomes schwa
    accent: float  # strength of the pitch accent on stressed syllables
    geminate_p: float = 0.0
    long_p: float = 0.0
    word_syllables: tuple[int, int] = (1, 3)


LANGUAGES: dict[str, Language] = {
    "de": Language(
        GERMAN_VOWELS,
        onsets={"t": 9, "n": 8, "d": 6, "s": 4, "z": 4, "R": 7, "l": 5, "m": 5, "k": 5, "g": 4,
                "b": 4, "f": 3, "v": 4, "S": 3, "h": 3, "ts": 2, "p": 2, "j": 1},
        codas={"n": 10, "t": 6, "s": 5, "x": 4, "l": 3, "m": 3, "k": 2, "N": 2, "f": 1, "S": 1},
        liquids=("R", "l"), coda_p=0.55, cluster_p=0.2, syllable_s=0.20, stress="initial",
        reduce_p=0.4, accent=1.0,
    ),
    "it": Language(
        ITALIAN_VOWELS,
        onsets={"t": 7, "n": 7, "d": 6, "r": 8, "l": 7, "s": 5, "m": 6, "k": 6, "p": 5, "v": 4,
                "tS": 3, "g": 3, "b": 3, "f": 3, "ts": 2, "j": 1, "w": 1},
        codas={"n": 6, "r": 4, "l": 3, "s": 2},
        liquids=("r", "l"), coda_p=0.15, cluster_p=0.1, syllable_s=0.19, stress="penult",
        reduce_p=0.0, accent=1.1, geminate_p=0.15, word_syllables=(2, 4),
    ),
    "ur": Language(
        URDU_VOWELS,
        onsets={"k": 7, "m": 6, "n": 5, "h": 5, "t": 5, "T": 3, "D": 3, "d": 4, "b": 5, "p": 3,
                "ph": 2, "th": 2, "kh": 2, "s": 5, "S": 2, "r": 6, "l": 4, "j": 3, "g": 3,
                "tS": 2, "z": 2},
        codas={"n": 6, "r": 5, "k": 3, "t": 3, "l": 2, "m": 3, "s": 2},
        liquids=("r",), coda_p=0.4, cluster_p=0.05, syllable_s=0.21, stress="final",
        reduce_p=0.0, accent=0.6, long_p=0.3,
    ),
    "en": Language(
        ENGLISH_VOWELS,
        onsets={"t": 6, "d": 5, "n": 6, "s": 6, "r\\": 5, "l": 5, "m": 5, "k": 5, "w": 4,
                "h": 4, "b": 4, "p": 4, "f": 3, "TH": 2, "g": 2, "S": 2, "j": 1, "v": 2, "tS": 1},
        codas={"n": 6, "t": 6, "d": 4, "s": 5, "z": 4, "r\\": 3, "l": 3, "k": 3, "N": 2, "m": 2},
        liquids=("r\\", "l"), coda_p=0.5, cluster_p=0.2, syllable_s=0.18, stress="initial",
        reduce_p=0.7, accent=1.2,
    ),
}


# --------------------------------------------------------------------------- corpora


class Corpus(NamedTuple):
    """Language and recording channel of one synthetic corpus."""

    language: str
    sample_rate: int
    channels: int
    expressiveness: float  # acted corpora exaggerate, natural ones less so
    eq: tuple[tuple[float, float], ...]  # (Hz, dB) points of the channel response
    noise_db: float  # noise floor, dBFS
    reverb_s: float  # decay time of the room; 0 for none
    reverb_mix: float
    gain_db: float  # recording level
    hum_db: float | None = None


CORPORA: dict[str, Corpus] = {
    "emodb": Corpus("de", 16000, 1, 1.1, ((50, -20), (90, 0), (7000, 0), (7900, -6)), -68, 0.0, 0.0, 0.0),
    "emovo": Corpus("it", 48000, 2, 1.0,
                    ((40, -20), (80, 0), (250, 2), (1000, 0), (8000, -2), (16000, -8), (23000, -20)),
                    -62, 0.12, 0.06, -2.0),
    "urdu": Corpus("ur", 16000, 1, 0.95,
                   ((100, -25), (180, 0), (3000, 3), (5500, 0), (7000, -25), (7900, -40)),
                   -44, 0.2, 0.1, -1.0, -58.0),
    "iemocap": Corpus("en", 16000, 1, 0.9, ((60, -20), (150, -2), (400, 0), (6000, -1), (7900, -4)),
                      -54, 0.35, 0.15, -3.0),
}


class DemoCorpus(NamedTuple):
    """A demo corpus: the native layout it is written in and its language (ISO 639-1)."""

    layout: str
    language: str


DEMO_CORPORA: dict[str, DemoCorpus] = {
    "iemocap": DemoCorpus("iemocap", "en"),
    "emodb": DemoCorpus("emodb", "de"),
    "emovo": DemoCorpus("emovo", "it"),
    "urdu": DemoCorpus("urdu", "ur"),
}


class Size(NamedTuple):
    """Utterance lengths of a corpus size; text lengths are in syllables."""

    min_s: float
    max_s: float
    silence_s: tuple[float, float]  # leading / trailing silence range
    short_text: tuple[int, int]
    long_text: tuple[int, int]


SIZES: dict[str, Size] = {
    "demo": Size(1.0, 3.0, (0.08, 0.2), (5, 8), (8, 12)),
    "tiny": Size(0.4, 0.9, (0.03, 0.06), (2, 3), (3, 4)),
}


# --------------------------------------------------------------------------- speakers


@dataclass(frozen=True)
class Speaker:
    """A synthetic voice: its physiology, habits and how strongly it shows each emotion."""

    id: str
    gender: str
    f0_hz: float
    vtl: float  # formant scale (shorter vocal tract -> higher formants)
    tension: float
    breath: float
    rate: float
    level_db: float
    style: dict[str, float] = field(default_factory=dict)


def _make_speaker(rng: np.random.Generator, speaker_id: str, gender: str) -> Speaker:
    base_f0, base_vtl = (210.0, 1.17) if gender == "F" else (115.0, 1.0)
    return Speaker(
        id=speaker_id,
        gender=gender,
        f0_hz=base_f0 * rng.lognormal(0.0, 0.1),
        vtl=base_vtl * rng.lognormal(0.0, 0.04),
        tension=rng.normal(0.0, 0.08),
        breath=abs(rng.normal(0.0, 0.05)),
        rate=rng.lognormal(0.0, 0.08),
        level_db=rng.normal(0.0, 2.0),
        style={name: rng.lognormal(0.0, 0.2) for name in EMOTIONS},
    )


class Voice(NamedTuple):
    """One utterance's realised prosody and voice quality."""

    f0_hz: float
    range_st: float
    rate: float
    level_db: float
    tension: float
    breath: float
    jitter: float
    shimmer: float
    final_st: float
    pause: float
    vtl: float


def _profile(emotion: str, rng: np.random.Generator) -> Emotion:
    if emotion != MIXED:
        return EMOTIONS[emotion]
    a, b = rng.choice(list(EMOTIONS), size=2, replace=False)
    return Emotion(*((x + y) / 2 for x, y in zip(EMOTIONS[a], EMOTIONS[b])))


def _realise(speaker: Speaker, emotion: str, corpus: Corpus, rng: np.random.Generator) -> Voice:
    """Draw an utterance's voice: emotion scaled by expressiveness, plus speaker and random offsets."""
    expr = corpus.expressiveness * speaker.style.get(emotion, 1.0) * rng.lognormal(0.0, 0.15)
    emo = Emotion(*(n + (e - n) * expr for n, e in zip(NEUTRAL, _profile(emotion, rng))))
    return Voice(
        f0_hz=speaker.f0_hz * 2 ** ((emo.f0_st + rng.normal(0.0, 1.2)) / 12),
        range_st=max(0.5, emo.range_st * rng.lognormal(0.0, 0.2)),
        rate=max(0.5, emo.rate) * speaker.rate * rng.lognormal(0.0, 0.07),
        level_db=emo.level_db + speaker.level_db + rng.normal(0.0, 1.5) + corpus.gain_db,
        tension=float(np.clip(emo.tension + speaker.tension + rng.normal(0.0, 0.08), 0.02, 0.98)),
        breath=float(np.clip(max(emo.breath, 0.01) * rng.lognormal(0.0, 0.25) + speaker.breath, 0.01, 0.8)),
        jitter=max(emo.jitter, 0.002) * rng.lognormal(0.0, 0.2),
        shimmer=0.04 + 2 * max(emo.jitter, 0.0),
        final_st=emo.final_st + rng.normal(0.0, 1.0),
        pause=float(np.clip(emo.pause, 0.0, 0.8)),
        vtl=speaker.vtl * rng.lognormal(0.0, 0.01),
    )


# --------------------------------------------------------------------------- text


class Syllable(NamedTuple):
    """Phonemes of one syllable (SAMPA-like keys of the language's tables) and its prominence."""

    onset: tuple[str, ...]
    vowel: str
    coda: tuple[str, ...]
    stressed: bool
    long: bool


def _pick(rng: np.random.Generator, weights: dict[str, float]) -> str:
    keys = list(weights)
    p = np.array([weights[k] for k in keys], dtype=float)
    return keys[rng.choice(len(keys), p=p / p.sum())]


def _plan_word(lang: Language, rng: np.random.Generator, n: int) -> list[Syllable]:
    stressed_at = {"initial": 0, "penult": max(n - 2, 0), "final": n - 1}[lang.stress]
    vowels = list(lang.vowels)
    word = []
    for i in range(n):
        stressed = i == stressed_at
        vowel = vowels[int(rng.integers(len(vowels)))]
        if not stressed and "@" in lang.vowels and rng.random() < lang.reduce_p:
            vowel = "@"
        onset: tuple[str, ...] = ()
        if i > 0 or rng.random() < 0.85:
            onset = (_pick(rng, lang.onsets),)
            if rng.random() < lang.cluster_p and CONSONANTS[onset[0]].kind in ("stop", "fricative"):
                onset += (lang.liquids[int(rng.integers(len(lang.liquids)))],)
        coda = (_pick(rng, lang.codas),) if rng.random() < lang.coda_p else ()
        word.append(Syllable(onset, vowel, coda, stressed, rng.random() < lang.long_p))
    return word


def _plan_text(lang: Language, rng: np.random.Generator, n_syllables: int) -> list[list[Syllable]]:
    """Words of a text with ``n_syllables`` syllables in all."""
    words = []
    lo, hi = lang.word_syllables
    while n_syllables > 0:
        n = min(n_syllables, int(rng.integers(lo, hi + 1)))
        words.append(_plan_word(lang, rng, n))
        n_syllables -= n
    return words


# --------------------------------------------------------------------------- segments


@dataclass
class _Segments:
    """Piecewise-constant control values (one row per phone part) and F0 anchor points."""

    rows: list[tuple] = field(default_factory=list)
    anchors: list[tuple[float, float]] = field(default_factory=list)
    t: float = 0.0

    def add(self, dur: float, formants: np.ndarray, *, voice: float = 0.0, asp: float = 0.0,
            fric: float = 0.0, fc: float = 4000.0, bw: float = 2000.0, gain_db: float = 0.0,
            bandwidths: tuple[float, ...] = BANDWIDTHS) -> None:
        self.rows.append((dur, voice, asp, fric, fc, bw, gain_db, formants, bandwidths))
        self.t += dur


def _formants(row: tuple, vtl: float, rng: np.random.Generator | None = None) -> np.ndarray:
    """F1-F5 in Hz for this vocal tract; a table row gives F1-F3 or F1-F4, the rest are shared."""
    f = np.array([*row, *HIGH_FORMANTS[len(row) - 3:]], dtype=float) * vtl
    return f if rng is None else f * rng.lognormal(0.0, 0.04, size=5)


def _add_consonant(segs: _Segments, name: str, vowel_f: np.ndarray, voice: Voice, gain_db: float,
                   rng: np.random.Generator, geminate: bool = False) -> None:
    c = CONSONANTS[name]
    dur = c.dur_ms / 1000 / voice.rate ** 0.6 * rng.lognormal(0.0, 0.1)
    locus = vowel_f if c.place == "glottal" else _formants(LOCI[c.place], voice.vtl)
    noise = 10 ** (c.noise_db / 20)
    kw = dict(fc=c.noise_hz, bw=c.noise_bw, gain_db=gain_db)
    if c.kind == "stop":
        closure = dur * (2.0 if geminate else 1.0)
        segs.add(closure, locus, voice=0.06 if c.voiced else 0.0, **kw)
        segs.add(0.012, locus, fric=noise * 2.0, **kw)
        if c.aspiration_ms:
            segs.add(c.aspiration_ms / 1000 / voice.rate ** 0.5, vowel_f, asp=0.5, **kw)
    elif c.kind == "affricate":
        segs.add(dur * 0.4, locus, **kw)
        segs.add(dur * 0.6, locus, fric=noise, **kw)
    elif c.kind == "fricative":
        segs.add(dur, locus, fric=noise, voice=0.35 if c.voiced else 0.0, **kw)
    elif c.kind == "aspirate":
        segs.add(dur, vowel_f, asp=0.6, **kw)
    else:
        nasal = c.kind == "nasal"
        segs.add(dur, _formants(SONORANTS[name], voice.vtl), voice=0.45 if nasal else 0.7,
                 bandwidths=NASAL_BANDWIDTHS if nasal else BANDWIDTHS, **kw)


def _segments(words: list[list[Syllable]], lang: Language, voice: Voice, size: Size,
              rng: np.random.Generator, stop_s: float) -> _Segments:
    """Phone-level plan of an utterance, cut at the syllable that would pass ``stop_s``."""
    segs = _Segments()
    segs.add(rng.uniform(*size.silence_s), _formants(LOCI["alveolar"], voice.vtl))
    syl_s = lang.syllable_s / voice.rate
    for w, word in enumerate(words):
        if w and rng.random() < voice.pause:
            segs.add(rng.uniform(0.08, 0.25) / voice.rate ** 0.5, _formants(LOCI["alveolar"], voice.vtl))
        for syl in word:
            dur = syl_s * (1.35 if syl.stressed else 0.85) * (1.4 if syl.long else 1.0)
            dur *= rng.lognormal(0.0, 0.12)
            if segs.t + dur > stop_s and segs.anchors:
                return segs
            _add_syllable(segs, syl, lang, voice, rng, dur)
    return segs


def _add_syllable(segs: _Segments, syl: Syllable, lang: Language, voice: Voice,
                  rng: np.random.Generator, dur: float) -> None:
    gain = 2.5 if syl.stressed else 0.0
    vowel_f = _formants(lang.vowels[syl.vowel], voice.vtl, rng)
    start = segs.t
    geminate = rng.random() < lang.geminate_p
    for i, c in enumerate(syl.onset):
        _add_consonant(segs, c, vowel_f, voice, gain, rng, geminate and i == 0)
    vowel_s = max(0.045, dur - (segs.t - start) - 0.06 * len(syl.coda))
    if syl.stressed:
        accent = voice.range_st * rng.uniform(0.5, 1.0) * lang.accent
    else:
        accent = voice.range_st * rng.uniform(-0.35, 0.1)
    segs.anchors.append((segs.t + vowel_s / 2, accent))
    bws = tuple(b + (150 * voice.breath if i == 0 else 0.0) for i, b in enumerate(BANDWIDTHS))
    segs.add(vowel_s, vowel_f, voice=1.0, gain_db=gain, bandwidths=bws)
    for c in syl.coda:
        _add_consonant(segs, c, vowel_f, voice, gain - 2.0, rng)


# --------------------------------------------------------------------------- vocoder

HOP_S = 0.01  # control frame hop
WIN_HOPS, FFT_HOPS = 2, 4  # filter window and FFT length, in hops


class _Tracks(NamedTuple):
    f0: np.ndarray  # per sample, Hz
    voice: np.ndarray  # per sample amplitudes
    asp: np.ndarray
    fric: np.ndarray
    formants: np.ndarray  # per frame, (frames, 5)
    bandwidths: np.ndarray
    fric_fc: np.ndarray  # per frame
    fric_bw: np.ndarray


def _frame_count(n: int, hop: int) -> int:
    return n // hop + 3


def _tracks(segs: _Segments, voice: Voice, sr: int, rng: np.random.Generator) -> _Tracks:
    """Sample- and frame-rate control tracks from the piecewise-constant segments."""
    dur, v, asp, fric, fc, bw, gain_db, formants, bandwidths = zip(*segs.rows)
    edges = np.round(np.cumsum([0.0, *dur]) * sr).astype(int)
    idx = np.repeat(np.arange(len(dur)), np.diff(edges))
    n = idx.size
    gain = 10 ** (np.array(gain_db) / 20)
    smooth = max(1, int(0.004 * sr))

    def per_sample(values: tuple) -> np.ndarray:
        return uniform_filter1d((np.array(values) * gain)[idx], smooth, mode="nearest")

    hop = round(HOP_S * sr)
    frames = _frame_count(n, hop)
    fidx = idx[np.minimum(np.arange(frames) * hop, n - 1)]
    coartic = 4  # frames (40 ms) over which formants glide between phones
    frame_t = np.arange(frames) * HOP_S
    return _Tracks(
        f0=np.interp(np.arange(n) / sr, frame_t, _f0_frames(segs, voice, frame_t, rng)),
        voice=per_sample(v),
        asp=per_sample(asp),
        fric=per_sample(fric),
        formants=uniform_filter1d(np.array(formants)[fidx], coartic, axis=0, mode="nearest"),
        bandwidths=uniform_filter1d(np.array(bandwidths)[fidx], coartic, axis=0, mode="nearest"),
        fric_fc=np.array(fc)[fidx],
        fric_bw=np.array(bw)[fidx],
    )


def _f0_frames(segs: _Segments, voice: Voice, t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """F0 contour: accents on syllables, declination, a final movement and slow wobble."""
    at, st = zip(*segs.anchors)
    end = at[-1]
    contour = np.interp(t, at, st) - 2.0 * t / max(end, 1e-3)
    contour += voice.final_st * np.clip((t - (end - 0.3)) / 0.3, 0.0, 1.0)
    contour += uniform_filter1d(rng.normal(0.0, 2.0, t.size), 10, mode="nearest")
    contour = uniform_filter1d(contour, 3, mode="nearest")
    return np.clip(voice.f0_hz * 2 ** (contour / 12), 50.0, 700.0)


def _glottal(tr: _Tracks, voice: Voice, sr: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Rosenberg-style glottal flow derivative with jitter and shimmer; also the open-phase mask."""
    n_cycles = int(np.sum(tr.f0) / sr) + 2
    cycle = (np.cumsum(tr.f0) / sr).astype(int)
    f0 = tr.f0 * (1 + voice.jitter * rng.standard_normal(n_cycles))[cycle]
    phase = np.cumsum(f0) / sr
    cycle = np.minimum(phase.astype(int), n_cycles - 1)
    frac = phase - cycle
    oq = 0.85 - 0.4 * voice.tension  # open quotient
    tn = oq * (0.45 - 0.3 * voice.tension)  # closing phase: short when tense
    tp = oq - tn
    rising = np.where(frac < tp, 0.5 * np.pi / tp * np.sin(np.pi * frac / tp), 0.0)
    closing = (frac >= tp) & (frac < oq)
    falling = np.where(closing, -0.5 * np.pi / tn * np.sin(0.5 * np.pi * (frac - tp) / tn), 0.0)
    shimmer = np.maximum(0.2, 1 + voice.shimmer * rng.standard_normal(n_cycles))[cycle]
    pulse = (rising + falling) * shimmer * tn / (0.5 * np.pi) * np.sqrt(100.0 / f0)
    return pulse, frac < oq


def _resonators(formants: np.ndarray, bandwidths: np.ndarray, sr: int, nfft: int) -> np.ndarray:
    """Frequency response of cascaded second-order resonators (unity gain at DC), per frame.

    The sections' denominators are multiplied into one polynomial in z^-1 whose response
    on the FFT grid is the FFT of its coefficients.
    """
    r = np.exp(-np.pi * bandwidths / sr)
    c = 2 * r * np.cos(2 * np.pi * np.minimum(formants, 0.45 * sr) / sr)
    poly = np.zeros((formants.shape[0], 2 * formants.shape[1] + 1))
    poly[:, 0] = 1.0
    for k in range(formants.shape[1]):
        shifted1 = np.pad(poly[:, :-1], ((0, 0), (1, 0)))
        shifted2 = np.pad(poly[:, :-2], ((0, 0), (2, 0)))
        poly = poly - c[:, k:k + 1] * shifted1 + (r[:, k:k + 1] ** 2) * shifted2
    gain = np.prod(1 - c + r * r, axis=1, keepdims=True)
    return gain / fft.rfft(poly, nfft)


def _channel_response(eq: tuple[tuple[float, float], ...], freqs: np.ndarray) -> np.ndarray:
    hz, db = np.array(eq, dtype=float).T
    return 10 ** (np.interp(np.log(np.maximum(freqs, 1.0)), np.log(hz), db) / 20)


def _filter_frames(signals: tuple[np.ndarray, ...], responses: tuple[np.ndarray, ...],
                   hop: int) -> np.ndarray:
    """Time-varying filtering by overlap-add: frame i (Hann, centred at i*hop) times response i."""
    win, nfft = WIN_HOPS * hop, FFT_HOPS * hop
    n = signals[0].size
    frames = responses[0].shape[0]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win) / win)  # sums to 1 at 50 % overlap
    spectrum = 0
    for x, h in zip(signals, responses):
        padded = np.pad(x, (win // 2, win + nfft))
        spectrum = spectrum + fft.rfft(sliding_window_view(padded, win)[::hop][:frames] * window, nfft) * h
    blocks = fft.irfft(spectrum, nfft).reshape(frames, FFT_HOPS, hop)
    out = np.zeros((frames + FFT_HOPS, hop))
    for j in range(FFT_HOPS):
        out[j:j + frames] += blocks[:, j]
    return out.ravel()[win // 2: win // 2 + n]


def _vocode(tr: _Tracks, voice: Voice, corpus: Corpus, sr: int, rng: np.random.Generator) -> np.ndarray:
    n = tr.f0.size
    hop = round(HOP_S * sr)
    pulse, open_phase = _glottal(tr, voice, sr, rng)
    a = np.exp(-2 * np.pi * (300 + 3000 * voice.tension) / sr)  # lax voices: steeper spectral tilt
    voiced = lfilter([1 - a], [1, -a], pulse * tr.voice)
    density = np.sqrt(sr / 16000)  # same noise level per Hz at every sample rate
    breath = (tr.asp + voice.breath * tr.voice) * (0.5 + 0.5 * open_phase)
    source = voiced + 0.4 * density * breath * rng.standard_normal(n)
    frication = 0.5 * density * tr.fric * rng.standard_normal(n)

    freqs = fft.rfftfreq(FFT_HOPS * hop, 1 / sr)
    chan = _channel_response(corpus.eq, freqs)
    h_tract = _resonators(tr.formants, tr.bandwidths, sr, FFT_HOPS * hop) * chan
    return _filter_frames((source, frication), (h_tract, _noise_bands(tr, freqs) * chan), hop)


def _noise_bands(tr: _Tracks, freqs: np.ndarray) -> np.ndarray:
    """Gaussian band shape of the frication noise per frame (computed once per distinct band)."""
    bands, frame_band = np.unique(np.stack([tr.fric_fc, tr.fric_bw], axis=1), axis=0, return_inverse=True)
    shapes = np.exp(-0.5 * ((freqs - bands[:, :1]) / bands[:, 1:]) ** 2)
    return shapes[frame_band.ravel()]


# --------------------------------------------------------------------------- channel

MAX_SYNTH_RATE = 24000  # higher file rates are upsampled from here (speech has little above 12 kHz)
CALIBRATION = 0.1  # puts neutral speech near -27 dBFS


def _room(speech: np.ndarray, voice: Voice, corpus: Corpus, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Speaking level and room reverberation."""
    y = speech * CALIBRATION * 10 ** (voice.level_db / 20)
    if not corpus.reverb_s:
        return y
    t = np.arange(int(corpus.reverb_s * sr)) / sr
    ir = rng.standard_normal(t.size) * np.exp(-6.9 * t / corpus.reverb_s)
    return y + corpus.reverb_mix * fftconvolve(y, ir / np.sqrt(np.sum(ir ** 2)))[: y.size]


def _microphones(y: np.ndarray, corpus: Corpus, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Channel count and noise floor of the recordings: (samples, channels)."""
    chans = [y] + [0.93 * np.roll(y, 2) for _ in range(corpus.channels - 1)]
    out = np.stack([c + _noise_floor(c.size, corpus, sr, rng) for c in chans], axis=1)
    peak = np.max(np.abs(out))
    return out * (0.99 / peak) if peak > 0.99 else out


def _noise_floor(n: int, corpus: Corpus, sr: int, rng: np.random.Generator) -> np.ndarray:
    pink = lfilter([1.0], [1.0, -0.95], rng.standard_normal(n))
    noise = pink / np.std(pink) * 10 ** (corpus.noise_db / 20) * rng.lognormal(0.0, 0.3)
    if corpus.hum_db is not None:
        t = np.arange(n) / sr
        hum = sum(np.sin(2 * np.pi * 50 * k * t) / k for k in (1, 2, 3))
        noise = noise + 10 ** (corpus.hum_db / 20) * hum
    return noise


def _write_wav(path: Path, wave: np.ndarray, sr: int) -> None:
    """16-bit PCM WAV; encoded in memory first (libsndfile writes to disk in small pieces)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pcm = np.round(np.clip(wave, -1.0, 1.0) * 32767).astype(np.int16)
    buffer = io.BytesIO()
    sf.write(buffer, pcm, sr, subtype="PCM_16", format="WAV")
    path.write_bytes(buffer.getvalue())


# --------------------------------------------------------------------------- rendering


def _rng(*keys: object) -> np.random.Generator:
    """A generator seeded by a stable hash of ``keys`` (independent of call order)."""
    return np.random.default_rng([zlib.crc32(str(k).encode()) for k in keys])


@dataclass
class _Writer:
    """Renders utterances of one corpus into ``root``; remembers speakers and texts."""

    layout: str
    root: Path
    seed: int
    size_name: str
    speakers: dict[str, Speaker] = field(default_factory=dict)

    @property
    def corpus(self) -> Corpus:
        return CORPORA[self.layout]

    @property
    def size(self) -> Size:
        return SIZES[self.size_name]

    def speaker(self, speaker_id: str, gender: str) -> Speaker:
        if speaker_id not in self.speakers:
            rng = _rng(self.seed, self.layout, "speaker", speaker_id)
            self.speakers[speaker_id] = _make_speaker(rng, speaker_id, gender)
        return self.speakers[speaker_id]

    def text(self, text_id: str, long: bool) -> list[list[Syllable]]:
        """The same words whenever ``text_id`` comes back (acted corpora repeat fixed texts)."""
        rng = _rng(self.seed, self.layout, self.size_name, "text", text_id)
        lo, hi = self.size.long_text if long else self.size.short_text
        return _plan_text(LANGUAGES[self.corpus.language], rng, int(rng.integers(lo, hi + 1)))

    def utterance(self, relpath: str, speaker: Speaker, emotion: str,
                  words: list[list[Syllable]] | None = None) -> float:
        """Render and write one file; return its duration in seconds."""
        rng = _rng(self.seed, self.layout, self.size_name, relpath)
        corpus, size = self.corpus, self.size
        lang, sr = LANGUAGES[corpus.language], min(corpus.sample_rate, MAX_SYNTH_RATE)
        voice = _realise(speaker, emotion, corpus, rng)
        trail = rng.uniform(*size.silence_s)
        if words is None:
            words = _plan_text(lang, rng, 40)
            stop = rng.uniform(size.min_s, size.max_s) - trail
        else:
            stop = size.max_s - trail
        segs = _segments(words, lang, voice, size, rng, stop)
        segs.add(max(trail, size.min_s - segs.t), _formants(LOCI["alveolar"], voice.vtl))
        speech = _vocode(_tracks(segs, voice, sr, rng), voice, corpus, sr, rng)
        speech = _room(_fit_length(speech, sr, size), voice, corpus, sr, rng)
        if sr != corpus.sample_rate:
            speech = soxr.resample(speech, sr, corpus.sample_rate, quality="HQ")
        wave = _microphones(speech, corpus, corpus.sample_rate, rng)
        _write_wav(self.root / relpath, wave, corpus.sample_rate)
        return wave.shape[0] / corpus.sample_rate


def _fit_length(x: np.ndarray, sr: int, size: Size) -> np.ndarray:
    """Cut to the size's maximum length with a 10 ms fade (a long first syllable can overrun)."""
    n = int(size.max_s * sr)
    if x.size <= n:
        return x
    fade = int(0.01 * sr)
    x = x[:n].copy()
    x[-fade:] *= np.linspace(1.0, 0.0, fade)
    return x


# --------------------------------------------------------------------------- layouts

EMODB_SPEAKERS = {"03": "M", "08": "F", "09": "F", "10": "M", "11": "M",
                  "12": "M", "13": "F", "14": "F", "15": "M", "16": "F"}
EMODB_TEXTS = ("a01", "a02", "a04", "a05", "a07", "b01", "b02", "b03", "b09", "b10")
EMODB_EMOTIONS = {"W": "anger", "L": "boredom", "E": "disgust", "A": "fear",
                  "F": "happiness", "T": "sadness", "N": "neutral"}

EMOVO_ACTORS = ("f1", "f2", "f3", "m1", "m2", "m3")
EMOVO_SENTENCES = ("b1", "b2", "b3", "d1", "d2", "l1", "l2", "l3", "l4", "n1", "n2", "n3", "n4", "n5")
EMOVO_EMOTIONS = {"dis": "disgust", "gio": "happiness", "neu": "neutral", "pau": "fear",
                  "rab": "anger", "sor": "surprise", "tri": "sadness"}

URDU_EMOTIONS = {"Angry": "anger", "Happy": "happiness", "Neutral": "neutral", "Sad": "sadness"}

IEMOCAP_EMOTIONS = {"ang": "anger", "hap": "happiness", "exc": "excited", "neu": "neutral",
                    "sad": "sadness", "fru": "frustration", "sur": "surprise", "xxx": MIXED}

# Who takes part and how many utterances each (speaker, emotion) cell gets, per size.
CAST = {
    "demo": {"emodb": (tuple(EMODB_SPEAKERS), 2), "emovo": (EMOVO_ACTORS, 3),
             "urdu": (("SM1", "SM2", "SM3", "SM4", "SF1", "SF2", "SF3", "SF4"), 3)},
    "tiny": {"emodb": (("03", "08", "10"), 1), "emovo": (("f1", "m1", "m2"), 1),
             "urdu": (("SM1", "SF1", "SM2"), 1)},
}
# IEMOCAP: sessions, dialogs per session and label counts per session.
IEMOCAP_PLAN = {
    "demo": (5, 2, {"ang": 4, "hap": 2, "exc": 2, "neu": 4, "sad": 4, "fru": 2, "sur": 1, "xxx": 2}),
    "tiny": (2, 1, {"ang": 1, "hap": 1, "exc": 1, "neu": 1, "sad": 1, "fru": 1, "sur": 1, "xxx": 1}),
}


def _write_emodb(w: _Writer) -> None:
    speakers, reps = CAST[w.size_name]["emodb"]
    for i, spk in enumerate(speakers):
        speaker = w.speaker(spk, EMODB_SPEAKERS[spk])
        for j, (letter, emotion) in enumerate(EMODB_EMOTIONS.items()):
            seen: dict[str, int] = {}
            for k in range(reps):
                # Every fifth cell says its first text twice, giving versions "a" and "b".
                text = EMODB_TEXTS[(i + 3 * j + (0 if (i + j) % 5 == 0 else 7 * k)) % len(EMODB_TEXTS)]
                version = "abcdefg"[seen.get(text, 0)]
                seen[text] = seen.get(text, 0) + 1
                words = w.text(text, long=text.startswith("b"))
                w.utterance(f"wav/{spk}{text}{letter}{version}.wav", speaker, emotion, words)


def _write_emovo(w: _Writer) -> None:
    actors, reps = CAST[w.size_name]["emovo"]
    for i, actor in enumerate(actors):
        speaker = w.speaker(actor, actor[0].upper())
        for j, (code, emotion) in enumerate(EMOVO_EMOTIONS.items()):
            for k in range(reps):
                sentence = EMOVO_SENTENCES[(7 * i + 3 * j + 5 * k) % len(EMOVO_SENTENCES)]
                words = w.text(sentence, long=not sentence.startswith("b"))
                w.utterance(f"{actor}/{code}-{actor}-{sentence}.wav", speaker, emotion, words)


def _write_urdu(w: _Writer) -> None:
    speakers, reps = CAST[w.size_name]["urdu"]
    running = {folder: 0 for folder in URDU_EMOTIONS}
    for spk in speakers:
        speaker = w.speaker(spk, spk[1])
        file_no = 0
        for _ in range(reps):
            for folder, emotion in URDU_EMOTIONS.items():
                file_no += 1
                running[folder] += 1
                name = f"{spk}_F{file_no}_{folder[0]}{running[folder]:03d}.wav"
                w.utterance(f"{folder}/{name}", speaker, emotion, None)


def _iemocap_dialogs(session: int, count: int) -> list[str]:
    marked = "FM" if session % 2 else "MF"  # which actor wore the markers
    names = [f"Ses{session:02d}{marked[0]}_impro{(session - 1) % 7 + 1:02d}",
             f"Ses{session:02d}{marked[1]}_script{(session - 1) % 3 + 1:02d}_{session % 3 + 1}"]
    return names[:count]


def _write_iemocap(w: _Writer) -> None:
    sessions, n_dialogs, labels = IEMOCAP_PLAN[w.size_name]
    for s in range(1, sessions + 1):
        rng = _rng(w.seed, w.layout, w.size_name, "session", s)
        pool = [label for label, count in labels.items() for _ in range(count)]
        order = [pool[i] for i in rng.permutation(len(pool))]
        dialogs = _iemocap_dialogs(s, n_dialogs)
        for d, dialog in enumerate(dialogs):
            turns = order[d::len(dialogs)]
            _write_iemocap_dialog(w, s, dialog, turns, rng)


def _write_iemocap_dialog(w: _Writer, session: int, dialog: str, labels: list[str],
                          rng: np.random.Generator) -> None:
    counters = {"F": 0, "M": 0}
    lines = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
    t = rng.uniform(2.0, 6.0)
    first = int(rng.integers(2))
    for i, label in enumerate(labels):
        gender = "FM"[(i + first) % 2]
        utt = f"{dialog}_{gender}{counters[gender]:03d}"
        counters[gender] += 1
        speaker = w.speaker(f"Ses{session:02d}{gender}", gender)
        dur = w.utterance(f"Session{session}/sentences/wav/{dialog}/{utt}.wav", speaker,
                          IEMOCAP_EMOTIONS[label])
        lines += _evaluation_block(t, t + dur, utt, label, gender, rng)
        t += dur + rng.uniform(0.2, 2.5)
    path = w.root / f"Session{session}/dialog/EmoEvaluation/{dialog}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


CATEGORY_NAMES = {"ang": "Anger", "hap": "Happiness", "exc": "Excited", "neu": "Neutral",
                  "sad": "Sadness", "fru": "Frustration", "sur": "Surprise", "fea": "Fear",
                  "dis": "Disgust", "oth": "Other"}
VAD_MEANS = {"ang": (2.0, 4.0, 4.0), "hap": (4.0, 3.0, 3.0), "exc": (4.0, 4.0, 3.0),
             "neu": (3.0, 2.5, 3.0), "sad": (2.0, 2.0, 2.0), "fru": (2.0, 3.0, 3.0),
             "sur": (3.5, 3.5, 3.0), "xxx": (3.0, 3.0, 3.0)}


def _evaluation_block(start: float, end: float, utt: str, label: str, gender: str,
                      rng: np.random.Generator) -> list[str]:
    """One turn of an EmoEvaluation file: the summary line, categorical and dimensional ratings."""
    ratings = np.clip(np.round(np.array(VAD_MEANS[label]) + rng.normal(0.0, 0.7, (3, 3))), 1, 5)
    v, a, d = ratings.mean(axis=0)
    lines = [f"[{start:.4f} - {end:.4f}]\t{utt}\t{label}\t[{v:.4f}, {a:.4f}, {d:.4f}]"]
    others = [c for c in CATEGORY_NAMES if c != label]
    evaluators = sorted(rng.choice(4, size=3, replace=False) + 1)
    for k, e in enumerate(evaluators):
        agree = label != "xxx" and k < 2
        name = CATEGORY_NAMES[label if agree else others[int(rng.integers(len(others)))]]
        lines.append(f"C-E{e}:\t{name};\t()")
    lines.append(f"C-{gender}1:\t{CATEGORY_NAMES.get(label, 'Other')};\t()")
    for e, (rv, ra, rd) in zip(evaluators, ratings):
        lines.append(f"A-E{e}:\tval {rv:.0f}; act {ra:.0f}; dom  {rd:.0f};\t()")
    return lines + [""]


_LAYOUT_WRITERS: dict[str, Callable[[_Writer], None]] = {
    "emodb": _write_emodb, "emovo": _write_emovo, "urdu": _write_urdu, "iemocap": _write_iemocap,
}


# --------------------------------------------------------------------------- public API


def generate_corpus(layout: str, root: str | Path, *, seed: int = 0, size: str = "demo") -> Path:
    """Write a synthetic corpus in ``layout``'s native layout into ``root`` and return ``root``.

    ``size`` is "demo" (60-120 four-class utterances of 1-3 s) or "tiny" (a few per emotion,
    under 1 s). The same seed gives byte-identical files.
    """
    if layout not in _LAYOUT_WRITERS:
        raise ValueError(f"unknown layout {layout!r}; known: {', '.join(sorted(_LAYOUT_WRITERS))}")
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; known: {', '.join(SIZES)}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    _LAYOUT_WRITERS[layout](_Writer(layout, root, seed, size))
    return root


def generate_demo_corpora(root: str | Path, *, seed: int = 0, size: str = "demo") -> dict[str, tuple[str, Path]]:
    """Write every corpus of DEMO_CORPORA into ``root/<name>``; return name -> (layout, path)."""
    root = Path(root)
    return {name: (info.layout, generate_corpus(info.layout, root / name, seed=seed, size=size))
            for name, info in DEMO_CORPORA.items()}
