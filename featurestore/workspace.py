"""The workspace: one folder holding manifests, the feature store and results."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from data_manifests.manifest import Manifest, ManifestError, check_corpus_name, is_safe_name

DEFAULT_WORKSPACE = "./fs-workspace"


@dataclass(frozen=True)
class Workspace:
    """Paths of a workspace; the store may live elsewhere (any path or URL) via ``store_url``."""

    root: Path
    store_url: str = ""

    @classmethod
    def open(cls, root: str | Path | None = None, store_url: str | None = None) -> Workspace:
        """``root`` or ``$FS_WORKSPACE`` or ``./fs-workspace``; the store defaults to ``<root>/store.zarr``."""
        root = Path(root or os.environ.get("FS_WORKSPACE") or DEFAULT_WORKSPACE).expanduser().resolve()
        return cls(root=root, store_url=store_url or os.environ.get("FS_STORE") or str(root / "store.zarr"))

    @property
    def manifests_dir(self) -> Path:
        return self.root / "manifests"

    @property
    def results_dir(self) -> Path:
        return self.root / "results"

    def manifest_path(self, name: str) -> Path:
        """``<root>/manifests/<name>.json``; every corpus name that enters fs passes here, so a name that
        is not a plain corpus name (``../x``, ``a/b``) is refused (ManifestError) before any file is touched."""
        return self.manifests_dir / f"{check_corpus_name(name)}.json"

    def corpus_names(self) -> list[str]:
        if not self.manifests_dir.is_dir():
            return []
        return sorted(p.stem for p in self.manifests_dir.glob("*.json") if is_safe_name(p.stem))

    def save_manifest(self, manifest: Manifest, *, force: bool = False) -> Path:
        """Save atomically; refuse to replace an existing corpus unless ``force``."""
        path = self.manifest_path(manifest.name)
        if path.exists() and not force:
            raise ManifestError(f"corpus {manifest.name!r} already exists in {self.root}; "
                                "pass --overwrite to replace it (stored features stay valid for unchanged audio)")
        return manifest.save(path)

    def remove_manifest(self, name: str) -> Path:
        """Delete corpus ``name``'s manifest (its store groups are kept); ManifestError if absent."""
        path = self.manifest_path(name)
        if not path.exists():
            known = ", ".join(self.corpus_names()) or "none"
            raise ManifestError(f"corpus {name!r} is not added in workspace {self.root} (added: {known})")
        path.unlink()
        return path

    def load_manifest(self, name: str) -> Manifest:
        path = self.manifest_path(name)
        if not path.exists():
            known = ", ".join(self.corpus_names()) or "none"
            raise ManifestError(f"corpus {name!r} is not added in workspace {self.root} (added: {known}); "
                                f"add it with `fs corpus add {name} --layout LAYOUT --root PATH`")
        return Manifest.load(path)
