"""The table of built-in native layouts: name -> parser. The one place layout modules are imported.

A plain table, built once from explicit imports (no registration by import side effect, no cycle):
every layout module defines ``scan(root) -> ScanResult`` and imports only ``base`` and ``_common``.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from data_manifests.layouts import emobox, emodb, emovo, iemocap, ravdess, table, urdu
from data_manifests.layouts.base import LayoutError, Scanner

LAYOUTS: Mapping[str, Scanner] = MappingProxyType({
    "iemocap": iemocap.scan,
    "emodb": emodb.scan,
    "emovo": emovo.scan,
    "urdu": urdu.scan,
    "ravdess": ravdess.scan,
    "csv": table.scan,
    "emobox": emobox.scan,
})


def get_layout(name: str) -> Scanner:
    """Return the scanner for ``name`` or raise a LayoutError listing the known layouts."""
    try:
        return LAYOUTS[name]
    except KeyError:
        raise LayoutError(f"unknown layout {name!r}; known layouts: {', '.join(sorted(LAYOUTS))}") from None
