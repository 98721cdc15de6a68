"""``fs demo``: the main job end to end on the embedded synthetic corpora (no data, no weights)."""

from __future__ import annotations

from typing import Callable

from data_manifests.manifest import Manifest, ManifestError, build_manifest
from data_manifests.synth import DEMO_CORPORA, generate_demo_corpora
from featurestore.encoders import list_encoders, load_encoder
from featurestore.extract import ExtractOptions, extract
from featurestore.store import FeatureStore
from featurestore.verify import verify_group
from featurestore.workspace import Workspace

DEMO_MODELS = ("logmel", "tiny-wav2vec2")
REAL_MODELS = ("wav2vec2", "xlsr", "whisper", "mms")


def add_demo_corpora(ws: Workspace, *, seed: int = 0, size: str = "demo",
                     echo: Callable[[str], None] = print) -> list[Manifest]:
    """Generate the demo corpora (once per seed and size) and add them with the ``paper`` map."""
    root = ws.root / "demo-corpora" / f"{size}-seed{seed}"
    if not (root / ".complete").exists():
        generate_demo_corpora(root, seed=seed, size=size)
        (root / ".complete").write_text("generated\n")
    manifests = []
    for name, spec in DEMO_CORPORA.items():
        layout, path = spec.layout, root / name
        manifest = build_manifest(name, layout, path, labels="paper")
        try:
            same = ws.load_manifest(name).digest() == manifest.digest()
        except ManifestError:
            same = False
        if not same:
            ws.save_manifest(manifest, force=True)
        manifests.append(manifest)
        echo(f"corpus {name:<8} {layout:<8} {len(manifest):>4} utterances  {manifest.counts()}")
    return manifests


def real_model_status() -> dict[str, str]:
    """Where each real encoder's weights would come from here (nothing is downloaded)."""
    from huggingface_hub import try_to_load_from_cache

    ids = {e["alias"]: e["model_id"] for e in list_encoders()}
    status = {}
    for alias in REAL_MODELS:
        cached = try_to_load_from_cache(ids[alias], "config.json")
        status[alias] = f"{ids[alias]}: " + ("in the HF cache" if isinstance(cached, str) else
                                             "not cached (needs the hub, a cache copy, or --model DIR)")
    return status


def run_demo(ws: Workspace, *, models: tuple[str, ...] = DEMO_MODELS, seed: int = 0, size: str = "demo",
             echo: Callable[[str], None] = print) -> dict[str, object]:
    """Corpora → extraction with download-free encoders → verification. Returns what it made."""
    manifests = add_demo_corpora(ws, seed=seed, size=size, echo=echo)
    store = FeatureStore(ws.store_url)
    keys = []
    for model in models:
        encoder = load_encoder(model, device="cpu", seed=seed)
        for manifest in manifests:
            result = extract(manifest, encoder, store, options=ExtractOptions(batch_size=8, progress=False))
            keys.append(result.key)
            what = "already complete" if result.already_done else (
                f"{result.processed} utts, {result.utterances_per_second:.1f} utt/s")
            echo(f"extract {model:<14} {manifest.name:<8} -> {result.key}  ({what})")
    reports = [verify_group(store.open(k), ws.load_manifest(k.corpus)) for k in keys]
    failed = [r.key for r in reports if not r.ok]
    echo(f"verify: {len(reports) - len(failed)}/{len(reports)} groups OK" + (f"; FAILED: {failed}" if failed else ""))
    return {"manifests": [m.name for m in manifests], "keys": [k.path for k in keys], "verified": not failed}
