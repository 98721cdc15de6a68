"""RAVDESS: ``Actor_XX/MM-VV-EE-II-SS-RR-AA.wav``; audio-only (03) speech (01) files are kept."""

from __future__ import annotations

import re
from pathlib import Path

from data_manifests.layouts._common import collect_wavs, finish, require_dir
from data_manifests.layouts.base import LayoutError, ScanResult, ScanRow

EXPECTED = "Actor_XX/MM-VV-EE-II-SS-RR-AA.wav (modality 03 audio-only, vocal channel 01 speech)"
EMOTIONS = {"01": "neutral", "02": "calm", "03": "happy", "04": "sad",
            "05": "angry", "06": "fearful", "07": "disgust", "08": "surprised"}
MODALITIES = {"01": "audio-video", "02": "video-only", "03": "audio-only"}
CHANNELS = {"01": "speech", "02": "song"}
NAME = re.compile(r"^(?P<modality>\d\d)-(?P<channel>\d\d)-(?P<emotion>\d\d)-(?P<intensity>0[12])"
                  r"-(?P<statement>0[12])-(?P<repetition>0[12])-(?P<actor>\d\d)$")
ACTOR_DIR = re.compile(r"^Actor_(\d\d)$")


def scan(root: Path) -> ScanResult:
    """Scan a RAVDESS root holding ``Actor_01`` .. ``Actor_24``; odd actors are male, even female."""
    root = require_dir(root, "ravdess", EXPECTED)
    if not any(ACTOR_DIR.match(p.name) and p.is_dir() for p in root.iterdir()):
        raise LayoutError(f"no Actor_XX folders under {root}: is this a RAVDESS root? expected {EXPECTED}")
    result = ScanResult(layout="ravdess", language="en")

    def row(path: Path, m: re.Match[str]) -> ScanRow:
        return ScanRow(utt_id=path.stem, path=path, speaker=path.parent.name, raw_label=EMOTIONS[m["emotion"]],
                       gender="M" if int(m["actor"]) % 2 else "F")

    result = collect_wavs(result, root, NAME, lambda path, m: _why_not(path, root, m), row)
    return finish(result, root, EXPECTED)


def _why_not(path: Path, root: Path, m: re.Match[str] | None) -> str | None:
    rel = path.relative_to(root)
    folder = ACTOR_DIR.match(rel.parts[0]) if len(rel.parts) == 2 else None
    if folder is None:
        return "not inside an Actor_XX folder"
    if m is None:
        return "name is not MM-VV-EE-II-SS-RR-AA"
    if m["modality"] != "03":
        return f"modality {m['modality']} ({MODALITIES.get(m['modality'], 'unknown')}), not audio-only (03)"
    if m["channel"] != "01":
        return f"vocal channel {m['channel']} ({CHANNELS.get(m['channel'], 'unknown')}), not speech (01)"
    if m["emotion"] not in EMOTIONS:
        return f"unknown emotion code {m['emotion']}"
    if m["actor"] != folder.group(1):
        return f"actor {m['actor']} in the name but folder {rel.parts[0]}"
    return None
