"""Helpers shared by the native-layout parsers: walking a tree, rejecting, finishing a scan."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

from data_manifests.layouts.base import LayoutError, ScanResult, ScanRow

HIDDEN_REASON = "hidden file (e.g. a macOS '._' or .DS_Store companion), not an utterance"


def require_dir(root: Path, layout: str, expected: str) -> Path:
    """``root`` as a Path, or a LayoutError when it is missing or not a folder."""
    root = Path(root)
    if not root.exists():
        raise LayoutError(f"{layout} root {root} does not exist; expected {expected}")
    if not root.is_dir():
        raise LayoutError(f"{layout} root {root} is not a folder; expected {expected}")
    return root


def iter_files(folder: Path) -> Iterator[Path]:
    """Every file under ``folder`` (hidden ones included), in a stable order."""
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for name in sorted(filenames):
            yield Path(dirpath) / name


def is_hidden(path: Path, under: Path) -> bool:
    """True when a component of ``path`` below ``under`` starts with a dot."""
    return any(part.startswith(".") for part in path.relative_to(under).parts)


def finish(result: ScanResult, root: Path, expected: str) -> ScanResult:
    """Return ``result``; LayoutError when nothing under ``root`` parsed as this layout."""
    if not result.rows:
        why = "; ".join(f"{Path(p).name}: {r}" for p, r in result.rejected[:3])
        seen = f" ({len(result.rejected)} file(s) rejected, e.g. {why})" if result.rejected else ""
        raise LayoutError(
            f"no {result.layout} utterances found under {root}{seen}: is this a {result.layout} root? "
            f"expected {expected}"
        )
    return result


def collect_wavs(result: ScanResult, folder: Path, name: re.Pattern[str],
                 why_not: Callable[[Path, re.Match[str] | None], str | None],
                 make_row: Callable[[Path, re.Match[str]], ScanRow]) -> ScanResult:
    """Walk ``folder``: hidden and non-.wav files, and those ``why_not`` objects to, are rejected with
    a reason; every other file becomes a row. ``why_not`` gets the file-name match (None if none)."""
    for path in iter_files(folder):
        match = name.match(path.stem)
        if is_hidden(path, folder):
            reason: str | None = HIDDEN_REASON
        elif path.suffix.lower() != ".wav":
            reason = "not a .wav file"
        else:
            reason = why_not(path, match)
        if reason is not None or match is None:
            result.rejected.append((str(path), reason or "name does not match the layout"))
            continue
        result.rows.append(make_row(path, match))
    return result
