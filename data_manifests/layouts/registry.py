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


# How each layout's corpus was designed, a fact known like its label set (never counted from labels): True
# where every speaker was recorded in every class (acted corpora), False where not (URDU's talk-show speakers
# mostly carry one emotion) or unknown (csv, emobox). Model selection reads it to decide whether speaker
# normalisation is safe for a target whose labels it may not see.
SPEAKERS_COVER_CLASSES: Mapping[str, bool] = MappingProxyType({
    "iemocap": True,
    "emodb": True,
    "emovo": True,
    "urdu": False,
    "ravdess": True,
    "csv": False,
    "emobox": False,
})


def speakers_cover_classes(layout: str | None) -> bool:
    """Whether corpora of ``layout`` were recorded with every speaker in every class (False: not, or unknown)."""
    return bool(SPEAKERS_COVER_CLASSES.get(str(layout), False))


def get_layout(name: str) -> Scanner:
    """Return the scanner for ``name`` or raise a LayoutError listing the known layouts."""
    try:
        return LAYOUTS[name]
    except KeyError:
        raise LayoutError(f"unknown layout {name!r}; known layouts: {', '.join(sorted(LAYOUTS))}") from None
