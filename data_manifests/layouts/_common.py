"""Helpers shared by the native-layout parsers: walking a tree, rejecting, finishing a scan."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

from data_manifests.layouts.base import LayoutError, ScanResult

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
