"""The contract every layout parser meets: ``scan(root) -> ScanResult``.

A parser only reads names and label files; it never opens audio. Audio facts
(duration, sample rate, channels) are added by :mod:`data_manifests.manifest`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from data_manifests.errors import FsError


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


Scanner = Callable[[Path], ScanResult]  # a layout parser: root folder (or file) -> rows
