"""Registers every built-in native layout; each lives in its own small module."""

from data_manifests.layouts import emobox, emodb, emovo, iemocap, ravdess, table, urdu  # noqa: F401

BUILTIN_LAYOUTS = ("iemocap", "emodb", "emovo", "urdu", "ravdess", "csv", "emobox")
