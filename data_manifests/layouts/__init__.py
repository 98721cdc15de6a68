"""One small parser per native corpus layout; each maps a root folder to scan rows.

:data:`LAYOUTS` (in :mod:`data_manifests.layouts.registry`) is the one table of them.
"""

from data_manifests.layouts.base import LayoutError, Scanner, ScanResult, ScanRow
from data_manifests.layouts.registry import LAYOUTS, get_layout

__all__ = ["LAYOUTS", "LayoutError", "ScanResult", "ScanRow", "Scanner", "get_layout"]
