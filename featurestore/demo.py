"""``fs demo``: the main job end to end on the embedded synthetic corpora (no data, no weights).

The demo never touches a user's corpora: its corpora are named ``demo-<corpus>`` and it replaces
a manifest of that name only when the manifest is its own (its root lies under the workspace's
``demo-corpora/`` folder). It runs as a list of steps (:data:`DEMO_STEPS`), each a function of a
:class:`DemoRun`; later work appends steps (sweep, report) after extraction and verification.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data_manifests.manifest import Manifest
from featurestore.errors import FsError
from featurestore.workspace import Workspace

DEMO_MODELS = ("logmel", "tiny-wav2vec2")
REAL_MODELS = ("wav2vec2", "xlsr", "whisper", "mms")
DEMO_PREFIX = "demo-"
DEMO_FOLDER = "demo-corpora"


class DemoError(FsError):
    """The demo cannot run without touching something that is not its own."""


def demo_name(corpus: str) -> str:
    """Workspace name of a demo corpus: ``iemocap`` -> ``demo-iemocap``."""
    return DEMO_PREFIX + corpus


@dataclass
class DemoRun:
    """What the demo's steps share: settings in, results out."""

    ws: Workspace
    models: tuple[str, ...] = DEMO_MODELS
    seed: int = 0
    size: str = "demo"
    echo: Callable[[str], None] = print
    manifests: list[Manifest] = field(default_factory=list)
    keys: list[Any] = field(default_factory=list)  # StoreKey of every extracted group
    reports: list[Any] = field(default_factory=list)  # VerifyReport of every group
    outcome: dict[str, Any] = field(default_factory=dict)

    @property
    def corpora_root(self) -> Path:
        return self.ws.root / DEMO_FOLDER / f"{self.size}-seed{self.seed}"


def is_demo_manifest(ws: Workspace, manifest: Manifest) -> bool:
    """True when ``manifest`` was made by the demo (its root lies under ``ws.root/demo-corpora``)."""
    try:
        return Path(manifest.root).resolve().is_relative_to((ws.root / DEMO_FOLDER).resolve())
    except (OSError, ValueError):
        return False


def add_demo_corpora(run: DemoRun) -> None:
    """Generate the demo corpora (once per seed and size) and add them as ``demo-<name>`` (``paper`` map)."""
    from data_manifests.manifest import build_manifest
    from data_manifests.synth import DEMO_CORPORA, generate_demo_corpora

    root = run.corpora_root
    if not (root / ".complete").exists():
        generate_demo_corpora(root, seed=run.seed, size=run.size)
        (root / ".complete").write_text("generated\n")
    for corpus, spec in DEMO_CORPORA.items():
        name = demo_name(corpus)
        manifest = build_manifest(name, spec.layout, root / corpus, labels="paper")
        if run.ws.manifest_path(name).exists():
            current = run.ws.load_manifest(name)
            if not is_demo_manifest(run.ws, current):
                raise DemoError(f"corpus {name!r} in {run.ws.root} was not made by the demo (its root is "
                                f"{current.root}); the demo leaves it alone: rename or remove it "
                                f"(`fs corpus rm {name}`), or run the demo in another --workspace")
            if current.digest() != manifest.digest():
                run.ws.save_manifest(manifest, force=True)
        else:
            run.ws.save_manifest(manifest)
        run.manifests.append(manifest)
        run.echo(f"corpus {name:<13} {spec.layout:<8} {len(manifest):>4} utterances  {manifest.counts()}")
    run.outcome["manifests"] = [m.name for m in run.manifests]


def extract_demo(run: DemoRun) -> None:
    """Extract every demo corpus with every demo model (download-free encoders), on the CPU."""
    from featurestore.encoders import load_encoder
    from featurestore.extract import ExtractOptions, extract
    from featurestore.store import FeatureStore

    store = FeatureStore(run.ws.store_url)
    for model in run.models:
        encoder = load_encoder(model, device="cpu", seed=run.seed)
        for manifest in run.manifests:
            result = extract(manifest, encoder, store, options=ExtractOptions(progress=False))
            run.keys.append(result.key)
            what = "already complete" if result.already_done else (
                f"{result.processed} utts, {result.utterances_per_second:.1f} utt/s")
            run.echo(f"extract {model:<14} {manifest.name:<13} -> {result.key}  ({what})")
    run.outcome["keys"] = [k.path for k in run.keys]


def verify_demo(run: DemoRun) -> None:
    """Verify every group the demo extracted."""
    from featurestore.store import FeatureStore
    from featurestore.verify import verify_store

    run.reports = verify_store(FeatureStore(run.ws.store_url), run.ws, keys=list(run.keys))
    failed = [r.key for r in run.reports if not r.ok]
    run.echo(f"verify: {len(run.reports) - len(failed)}/{len(run.reports)} groups OK"
             + (f"; FAILED: {failed}" if failed else ""))
    run.outcome["verified"] = not failed


DemoStep = Callable[[DemoRun], None]
DEMO_STEPS: list[DemoStep] = [add_demo_corpora, extract_demo, verify_demo]


def real_model_status() -> dict[str, str]:
    """Where each real encoder's weights would come from here (nothing is downloaded)."""
    from featurestore.encoders import list_encoders
    from featurestore.encoders.sources import in_hf_cache

    ids = {e["alias"]: e["model_id"] for e in list_encoders()}
    status = {}
    for alias in REAL_MODELS:
        status[alias] = f"{ids[alias]}: " + ("in the HF cache" if in_hf_cache(ids[alias]) else
                                             "not cached (needs the hub, a cache copy, or --model DIR)")
    return status


def run_demo(ws: Workspace, *, models: tuple[str, ...] = DEMO_MODELS, seed: int = 0, size: str = "demo",
             echo: Callable[[str], None] = print, steps: list[DemoStep] | None = None) -> dict[str, Any]:
    """Run ``steps`` (default :data:`DEMO_STEPS`: corpora → extraction → verification) in order.

    Returns the outcome: ``manifests`` (names), ``keys`` (group paths), ``verified`` (bool), and
    whatever later steps add.
    """
    run = DemoRun(ws=ws, models=tuple(models), seed=seed, size=size, echo=echo)
    for step in DEMO_STEPS if steps is None else steps:
        step(run)
    return run.outcome
