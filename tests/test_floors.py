"""The floors import downward only: data_manifests < featurestore < classifiers < cli."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _modules_after(statement: str) -> set[str]:
    """Top-level packages in sys.modules after running ``statement`` in a fresh interpreter."""
    code = f"{statement}\nimport sys\nprint(' '.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return set(out.stdout.split())


@pytest.mark.slow
def test_data_manifests_imports_nothing_from_featurestore() -> None:
    loaded = _modules_after("import data_manifests.manifest, data_manifests.layouts, data_manifests.synth, "
                            "data_manifests.emobox, data_manifests.audio, data_manifests.labelmaps")
    assert "data_manifests" in loaded
    assert not loaded & {"featurestore", "classifiers", "cli"}


@pytest.mark.slow
def test_layout_table_is_full_in_a_fresh_interpreter() -> None:
    """The table is filled by its own module, not by whoever imported a layout module first."""
    code = ("from data_manifests.layouts import LAYOUTS\n"
            "print(' '.join(sorted(LAYOUTS)))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["csv", "emobox", "emodb", "emovo", "iemocap", "ravdess", "urdu"]


def test_one_error_base_and_one_version() -> None:
    import data_manifests
    import data_manifests.errors
    import featurestore
    import featurestore.errors

    assert featurestore.errors.FsError is data_manifests.errors.FsError
    assert featurestore.__version__ == data_manifests.__version__
    from data_manifests.layouts import LayoutError
    from data_manifests.manifest import ManifestError

    assert issubclass(LayoutError, featurestore.errors.FsError) and issubclass(ManifestError, featurestore.errors.FsError)


def test_layout_modules_do_not_import_the_registry() -> None:
    """No cycle: a layout module imports only base and _common, never the package or its table."""
    for path in (ROOT / "data_manifests" / "layouts").glob("*.py"):
        if path.name in ("__init__.py", "registry.py"):
            continue
        text = path.read_text()
        assert "layouts.registry" not in text and "from data_manifests.layouts import" not in text, path.name


def test_no_control_flow_on_exception_text() -> None:
    """Errors are told apart by type (DiskFullError, AmbiguousGroupError, ...), never by their message."""
    import re

    pattern = re.compile(r"""(["'][^"']+["']\s+(not\s+)?in\s+(str\()?(exc|err|error|e|msg|message|problem)\b"""
                         r"""|str\((exc|err|e)\)\.(startswith|endswith|lower)\(|\.args\[0\]\s*==)""")
    offenders = []
    for package in ("data_manifests", "featurestore", "classifiers", "cli"):
        for path in (ROOT / package).rglob("*.py"):
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if pattern.search(line):
                    offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert offenders == []
