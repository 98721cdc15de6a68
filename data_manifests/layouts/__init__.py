"""One small parser per native corpus layout; each maps a root folder to scan rows."""

from data_manifests.layouts.base import LAYOUTS, LayoutError, ScanResult, ScanRow, get_layout, register_layout

__all__ = ["LAYOUTS", "LayoutError", "ScanResult", "ScanRow", "get_layout", "register_layout"]
