"""Shared test fixtures: the real-data folder (skips cleanly when absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def shared_path() -> Path:
    """``$FS_SHARED`` or ``../shared`` beside the project root."""
    return Path(os.environ.get("FS_SHARED", PROJECT_ROOT.parent / "shared"))


@pytest.fixture
def shared_dir() -> Path:
    root = shared_path()
    if not (root / "corpora").is_dir():
        pytest.skip(f"real data not found at {root} (set FS_SHARED to use it)")
    return root


@pytest.fixture(autouse=True)
def _offline_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never reach a model hub."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
