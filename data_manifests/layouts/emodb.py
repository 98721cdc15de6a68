"""EMODB (Berlin): ``wav/03a01Fa.wav``: speaker, text, emotion letter, version."""

from __future__ import annotations

import re
from pathlib import Path

from data_manifests.layouts._common import collect_wavs, finish, require_dir
from data_manifests.layouts.base import LayoutError, ScanResult, ScanRow

EXPECTED = "wav/<speaker><text><emotion><version>.wav, e.g. wav/03a01Fa.wav"
NAME = re.compile(r"^(?P<speaker>\d{2})(?P<text>[ab]\d{2})(?P<emotion>[WLEAFTN])(?P<version>[a-z])$")
GENDER = {"03": "M", "08": "F", "09": "F", "10": "M", "11": "M",
          "12": "M", "13": "F", "14": "F", "15": "M", "16": "F"}


def scan(root: Path) -> ScanResult:
    """Scan ``root/wav`` (or ``root`` itself when it is the wav folder); companion folders are not read."""
    root = require_dir(root, "emodb", EXPECTED)
    wav_dir = root / "wav" if (root / "wav").is_dir() else root
    if not any(p.suffix.lower() == ".wav" for p in wav_dir.iterdir()):
        raise LayoutError(f"no wav/ folder or .wav files under {root}: is this an EMODB root? expected {EXPECTED}")
    result = ScanResult(layout="emodb", language="de")

    def why_not(path: Path, m: re.Match[str] | None) -> str | None:
        return "in a subfolder of the wav folder" if path.parent != wav_dir else _why_not(m)

    def row(path: Path, m: re.Match[str]) -> ScanRow:
        return ScanRow(utt_id=path.stem, path=path, speaker=m["speaker"], raw_label=m["emotion"],
                       gender=GENDER[m["speaker"]])

    return finish(collect_wavs(result, wav_dir, NAME, why_not, row), root, EXPECTED)


def _why_not(m: re.Match[str] | None) -> str | None:
    if m is None:
        return "name is not EMODB's <speaker 2 digits><text a01-b10><emotion WLEAFTN><version>, e.g. 03a01Fa"
    if m["speaker"] not in GENDER:
        return f"speaker {m['speaker']} is not one of EMODB's ten speakers"
    return None
