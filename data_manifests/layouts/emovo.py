"""EMOVO: ``{f1,f2,f3,m1,m2,m3}/<emo>-<actor>-<sentence>.wav``."""

from __future__ import annotations

import re
from pathlib import Path

from data_manifests.layouts._common import collect_wavs, finish, require_dir
from data_manifests.layouts.base import LayoutError, ScanResult, ScanRow

ACTORS = ("f1", "f2", "f3", "m1", "m2", "m3")
EMOTIONS = ("dis", "gio", "neu", "pau", "rab", "sor", "tri")
EXPECTED = "{f1,f2,f3,m1,m2,m3}/<emo>-<actor>-<sentence>.wav, emo in " + " ".join(EMOTIONS)
NAME = re.compile(rf"^(?P<emo>{'|'.join(EMOTIONS)})-(?P<actor>[fm][1-3])-(?P<sentence>[a-z0-9]+)$", re.IGNORECASE)


def scan(root: Path) -> ScanResult:
    """Scan an EMOVO root: one folder per actor; speaker = actor folder, gender from its letter."""
    root = require_dir(root, "emovo", EXPECTED)
    if not any((root / a).is_dir() for a in ACTORS):
        raise LayoutError(f"no f1..m3 actor folders under {root}: is this an EMOVO root? expected {EXPECTED}")
    result = ScanResult(layout="emovo", language="it")

    def row(path: Path, m: re.Match[str]) -> ScanRow:
        actor = path.parent.name
        return ScanRow(utt_id=path.stem, path=path, speaker=actor, raw_label=m["emo"].lower(),
                       gender=actor[0].upper())

    result = collect_wavs(result, root, NAME, lambda path, m: _why_not(path, root, m), row)
    return finish(result, root, EXPECTED)


def _why_not(path: Path, root: Path, m: re.Match[str] | None) -> str | None:
    rel = path.relative_to(root)
    if len(rel.parts) != 2 or rel.parts[0] not in ACTORS:
        return "not inside an actor folder f1..m3"
    if m is None:
        return "name is not <emo>-<actor>-<sentence>, emo in " + " ".join(EMOTIONS)
    if m["actor"].lower() != rel.parts[0]:
        return f"actor {m['actor']} in the name but folder {rel.parts[0]}"
    return None
