"""URDU: ``{Angry,Happy,Neutral,Sad}/SGX_FYY_EZZ.wav``, e.g. ``Angry/SM1_F10_A010.wav``."""

from __future__ import annotations

import re
from pathlib import Path

from data_manifests.layouts._common import collect_wavs, finish, require_dir
from data_manifests.layouts.base import LayoutError, ScanResult, ScanRow

FOLDERS = {"Angry": "A", "Happy": "H", "Neutral": "N", "Sad": "S"}
EXPECTED = "{Angry,Happy,Neutral,Sad}/S<gender><n>_F<file>_<emotion letter><n>.wav, e.g. Angry/SM1_F10_A010.wav"
NAME = re.compile(r"^(?P<speaker>S(?P<gender>[MF])\d+)_F\d+_(?P<emotion>[AHNS])\d+$")


def scan(root: Path) -> ScanResult:
    """Scan a URDU root: the emotion folder is the label and must agree with the name's letter."""
    root = require_dir(root, "urdu", EXPECTED)
    if not any((root / f).is_dir() for f in FOLDERS):
        raise LayoutError(f"no Angry/Happy/Neutral/Sad folders under {root}: is this a URDU root? "
                          f"expected {EXPECTED}")
    result = ScanResult(layout="urdu", language="ur")

    def row(path: Path, m: re.Match[str]) -> ScanRow:
        return ScanRow(utt_id=path.stem, path=path, speaker=m["speaker"], raw_label=path.parent.name,
                       gender=m["gender"])

    result = collect_wavs(result, root, NAME, lambda path, m: _why_not(path, root, m), row)
    return finish(result, root, EXPECTED)


def _why_not(path: Path, root: Path, m: re.Match[str] | None) -> str | None:
    rel = path.relative_to(root)
    if len(rel.parts) != 2 or rel.parts[0] not in FOLDERS:
        return "not inside an emotion folder Angry/Happy/Neutral/Sad"
    if m is None:
        return "name is not SGX_FYY_EZZ (e.g. SM1_F10_A010)"
    if m["emotion"] != FOLDERS[rel.parts[0]]:
        return f"emotion letter {m['emotion']} disagrees with folder {rel.parts[0]}"
    return None
