"""The contract every layout parser meets: ``scan(root) -> ScanResult``.

A parser only reads names and label files; it never opens audio. Audio facts
(duration, sample rate, channels) are added by :mod:`data_manifests.manifest`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from featurestore.errors import FsError


class LayoutError(FsError, ValueError):
    """The folder does not look like the layout that was asked for."""


@dataclass(frozen=True)
class ScanRow:
    """One utterance as found in a native layout, before label mapping."""

    utt_id: str
    path: Path
    speaker: str
    raw_label: str
    gender: str = ""  # "F", "M" or "" when unknown
    language: str = ""  # "" means: the layout's default language


@dataclass
class ScanResult:
    """What a parser found: rows, plus files it saw but could not parse (path, reason)."""

    layout: str
    language: str
    rows: list[ScanRow] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)


Scanner = Callable[[Path], ScanResult]
LAYOUTS: dict[str, Scanner] = {}


def register_layout(name: str) -> Callable[[Scanner], Scanner]:
    """Decorator: make ``scan`` available as layout ``name``."""

    def deco(fn: Scanner) -> Scanner:
        LAYOUTS[name] = fn
        return fn

    return deco


def get_layout(name: str) -> Scanner:
    """Return the scanner for ``name`` or raise a LayoutError listing the known layouts."""
    _load_builtin_layouts()
    try:
        return LAYOUTS[name]
    except KeyError:
        raise LayoutError(f"unknown layout {name!r}; known layouts: {', '.join(sorted(LAYOUTS))}") from None


def _load_builtin_layouts() -> None:
    from data_manifests.layouts import native  # noqa: F401  (registers on import)
