"""Named label maps (YAML data in ``labelmaps/``): native raw labels -> the study's classes.

Schema::

    name: paper
    description: ...
    classes: [angry, happy, neutral, sad]
    layouts:                  # per layout, exact match on the raw label
      emodb: {W: angry, F: happy, N: neutral, T: sad, L: sad}
    default: {anger: angry}   # layouts not listed; matched case-insensitively

A raw label that a map does not list (or maps to null) is dropped.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from data_manifests.errors import FsError

KEYS = ("name", "description", "classes", "layouts", "default")


class LabelMapError(FsError, ValueError):
    """A label map that cannot be found or does not follow the schema."""


@dataclass
class LabelMap:
    """A validated label map; ``source`` says where it was loaded from (not part of its content)."""

    name: str
    classes: list[str]
    layouts: dict[str, dict[str, str | None]]
    default: dict[str, str | None]
    description: str = ""
    source: str = ""
    _default_ci: dict[str, str | None] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._default_ci = {k.lower(): v for k, v in self.default.items()}

    def map(self, layout: str, raw_label: str) -> str | None:
        """The class for ``raw_label`` found by ``layout``, or None when the utterance is dropped."""
        if layout in self.layouts:
            return self.layouts[layout].get(raw_label.strip())
        return self._default_ci.get(raw_label.strip().lower())

    def to_dict(self) -> dict[str, Any]:
        """The full content, enough to rebuild the map with :meth:`from_dict`."""
        return {
            "name": self.name, "description": self.description, "classes": list(self.classes),
            "layouts": {lay: dict(m) for lay, m in self.layouts.items()}, "default": dict(self.default),
        }

    def digest(self) -> str:
        """Short sha256 of the canonical content (key order and ``source`` do not matter)."""
        canon = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(canon.encode()).hexdigest()[:12]

    @classmethod
    def from_dict(cls, data: Any, source: str = "<dict>") -> LabelMap:
        """Validate ``data`` against the schema; LabelMapError naming ``source`` and the problem."""
        return _validate(data, source)


def builtin_label_maps() -> list[str]:
    """Names of the maps shipped with the package."""
    return sorted(p.name[:-5] for p in _builtin_dir().iterdir() if p.name.endswith(".yaml"))


def load_label_map(name_or_path: str | Path) -> LabelMap:
    """A built-in map by name (``paper``, ``strict``) or a user YAML file with the same schema."""
    text = str(name_or_path)
    if text in builtin_label_maps():
        resource = _builtin_dir() / f"{text}.yaml"
        return _parse(resource.read_text(encoding="utf-8"), f"builtin:{text}")
    path = Path(text).expanduser()
    if path.is_file():
        return _parse(path.read_text(encoding="utf-8"), str(path.resolve()))
    if path.exists():
        raise LabelMapError(f"label map {path} is not a file")
    if path.suffix.lower() in (".yaml", ".yml") or len(path.parts) > 1:
        raise LabelMapError(f"label map file {path} does not exist")
    raise LabelMapError(f"unknown label map {text!r}; built-in maps: {', '.join(builtin_label_maps())} "
                        "(or give the path of a YAML file with the same schema)")


def _builtin_dir() -> Any:
    return resources.files("data_manifests").joinpath("labelmaps")


def _parse(text: str, source: str) -> LabelMap:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise LabelMapError(f"{source}: not valid YAML ({exc})") from None
    return _validate(data, source)


def _validate(data: Any, source: str) -> LabelMap:
    def fail(problem: str) -> LabelMapError:
        return LabelMapError(f"{source}: {problem}")

    if not isinstance(data, dict):
        raise fail(f"expected a mapping with keys {', '.join(KEYS)}, got {type(data).__name__}")
    unknown = sorted(str(k) for k in data if k not in KEYS)
    if unknown:
        raise fail(f"unknown key(s) {', '.join(unknown)}; allowed: {', '.join(KEYS)}")
    missing = [k for k in ("name", "classes") if k not in data]
    if missing:
        raise fail(f"missing required key(s) {', '.join(missing)}")
    name, classes = data["name"], data["classes"]
    if not isinstance(name, str) or not name.strip():
        raise fail("name must be a non-empty string")
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) and c for c in classes):
        raise fail("classes must be a non-empty list of class names")
    if len(set(classes)) != len(classes):
        raise fail(f"classes has duplicates: {classes}")
    description = data.get("description") or ""
    if not isinstance(description, str):
        raise fail("description must be a string")
    layouts_raw = data.get("layouts") or {}
    if not isinstance(layouts_raw, dict):
        raise fail("layouts must be a mapping of layout name -> {raw label: class}")
    layouts = {str(lay): _table(m, f"layouts.{lay}", classes, fail) for lay, m in layouts_raw.items()}
    default = _table(data.get("default") or {}, "default", classes, fail)
    lowered = [k.lower() for k in default]
    if len(set(lowered)) != len(lowered):
        raise fail("default has raw labels that differ only in case (default is matched case-insensitively)")
    if not default and not any(layouts.values()):
        raise fail("no mappings: give layouts and/or default")
    return LabelMap(name=name.strip(), classes=list(classes), layouts=layouts, default=default,
                    description=description.strip(), source=source)


def _table(mapping: Any, where: str, classes: list[str], fail: Any) -> dict[str, str | None]:
    """Check one {raw label: class or null} table."""
    if not isinstance(mapping, dict):
        raise fail(f"{where} must be a mapping of raw label -> class")
    table: dict[str, str | None] = {}
    for raw, target in mapping.items():
        if not isinstance(raw, str):
            raise fail(f"{where}: raw label {raw!r} is a {type(raw).__name__}, not text; quote it in the YAML")
        if target is not None and target not in classes:
            raise fail(f"{where}: {raw!r} maps to {target!r}, which is not in classes {classes}")
        table[raw] = target
    return table
