"""Shared test fixtures: the real-data folder (skips cleanly when absent)."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that uses the real data (the ``shared_dir`` fixture) is marked ``shared``, so that
    ``pytest -m shared`` selects all of them and ``-m "not shared"`` none."""
    for item in items:
        if "shared_dir" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.shared)


@pytest.fixture(autouse=True)
def _torch_threads() -> Any:
    """Every test leaves torch's thread count as it found it (code under test, e.g. a Ray worker built
    in-process, may set it; float sums differ in the last bits across thread counts)."""
    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if torch is not None else None
    yield
    torch = sys.modules.get("torch")
    if torch is not None and before is not None and torch.get_num_threads() != before:
        torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _offline_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never reach a model hub."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


def bench_module() -> Any:
    """bench/bench_sweep.py, whose ``synthetic_workspace`` writes synthetic stores (tests and benchmark)."""
    if "bench_sweep" not in sys.modules:
        spec = importlib.util.spec_from_file_location("bench_sweep", PROJECT_ROOT / "bench" / "bench_sweep.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["bench_sweep"] = module
        spec.loader.exec_module(module)
    return sys.modules["bench_sweep"]
