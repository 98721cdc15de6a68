"""How fast a study runs from a warm store: a Table II-sized sweep, with best-layer selection, and naive.

    python bench/bench_sweep.py                       # 2 workers; store in a temp folder
    python bench/bench_sweep.py --root /tmp/sweepbench --keep    # keep (and reuse) the store

Writes a synthetic workspace at the study's sizes (IEMOCAP 5531, EMODB 420, EMOVO 336, URDU 400
utterances; groups of 13 x 768 and 25 x 1024 layers; class-dependent gaussian features with a
power-law spectrum, a per-corpus offset and per-layer noise, so that lbfgs needs about as many
iterations as on real pooled features), then times, in one run:

1. the sweep: 12 ordered pairs x 5 models x 5 seeds, logistic regression on a fixed layer
   (``run_sweep``: ledger, joblib workers reusing views and fitted source models);
2. the same with best-layer selection on a source-only dev split;
3. the naive way: the cells of (1) in the same workers, each ``run_probe`` loading its views
   and fitting its probes anew (no cache).

The store writer (:func:`synthetic_workspace`) is also used by tests/test_sweep.py and test_report.py.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from data_manifests.manifest import Manifest  # noqa: E402
from featurestore.store import FeatureStore, StoreKey  # noqa: E402
from featurestore.workspace import Workspace  # noqa: E402

CORPORA = {"iemocap": 5531, "emodb": 420, "emovo": 336, "urdu": 400}
SPEAKERS = {"iemocap": 10, "emodb": 10, "emovo": 6, "urdu": 29}
MODELS = {"wav2vec2": (13, 768), "wav2vec2-random": (13, 768), "xlsr": (25, 1024), "whisper": (25, 1024),
          "mms": (25, 1024)}
CLASSES = ("angry", "happy", "neutral", "sad")
LANGUAGES = {"iemocap": "en", "emodb": "de", "emovo": "it", "urdu": "ur"}


def fake_manifest(name: str, n: int, speakers: int, seed: int = 0) -> Manifest:
    """A manifest of ``n`` utterances (4 balanced classes, ``speakers`` speakers) with fake audio hashes."""
    rng = np.random.default_rng(seed)
    labels = np.array(CLASSES)[np.arange(n) % len(CLASSES)]
    spk = rng.integers(0, speakers, n)
    spk[:speakers] = np.arange(min(speakers, n))
    rows = [{"utt_id": f"{name}_{i:05d}", "corpus": name, "language": LANGUAGES.get(name, "xx"),
             "path": f"/synthetic/{name}/{i:05d}.wav", "speaker": f"{name}-s{spk[i]:02d}",
             "gender": "F" if spk[i] % 2 else "M", "raw_label": str(labels[i]), "label": str(labels[i]),
             "duration": 2.0, "sample_rate": 16000, "channels": 1,
             "audio_sha256": hashlib.sha256(f"{name}/{i}".encode()).hexdigest()} for i in range(n)]
    label_map = {"name": "paper", "classes": list(CLASSES)}
    return Manifest(name=name, layout="csv", root=f"/synthetic/{name}", label_map=label_map, rows=rows,
                    language=LANGUAGES.get(name, "xx"), created="synthetic", fs_version="bench")


def model_space(model: str, dim: int, separation: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(basis (D, D), class means (4, D), spectrum scale (D,))`` of a synthetic model."""
    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(model.encode()).digest()[:4], "little"))
    basis, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    scale = np.sqrt(1.0 / (1.0 + np.arange(dim)))
    return basis, rng.normal(scale=separation, size=(len(CLASSES), dim)) * scale, scale


def synthetic_values(manifest: Manifest, model: str, layers: int, dim: int, separation: float = 0.1,
                     shift: float = 0.5, noisy: bool = False) -> np.ndarray:
    """``(n, L, D)`` float32 pooled means: class clusters + corpus offset, emotion signal peaking mid-stack."""
    basis, means, scale = model_space(model, dim, separation)
    seed = int.from_bytes(hashlib.sha256(f"{manifest.name}/{model}/{noisy}".encode()).digest()[:4], "little")
    rng = np.random.default_rng(seed)
    y = np.array([CLASSES.index(r["label"]) for r in manifest.rows])
    offset = rng.normal(scale=shift, size=dim) * scale
    out = np.empty((len(y), layers, dim), dtype=np.float32)
    for layer in range(layers):
        strength = 0.5 + np.sin(np.pi * (layer + 1) / (layers + 1))  # middle layers carry the most
        latent = strength * means[y] + offset + rng.normal(size=(len(y), dim)) * scale * (1.3 if noisy else 1.0)
        out[:, layer] = (latent @ basis.T + 3.0).astype(np.float32)
    return out


def write_group(store: FeatureStore, manifest: Manifest, model: str, values: np.ndarray,
                noise: dict[str, Any] | None = None) -> StoreKey:
    """Write ``values`` (n, L, D) as a complete group of ``manifest``'s corpus for ``model``."""
    n, layers, dim = values.shape
    weights = hashlib.sha256(f"weights of {model}".encode()).hexdigest()
    spec = None
    condition = "clean"
    if noise:
        spec = {"source": noise["noise"], "snr_db": float(noise["snr_db"]), "seed": int(noise.get("noise_seed", 0))}
        condition = "noise-" + hashlib.sha256(repr(sorted(spec.items())).encode()).hexdigest()[:10]
    key = StoreKey(manifest.name, condition, f"{model}-{weights[:10]}")
    provenance = {
        "corpus": {"name": manifest.name, "layout": manifest.layout, "root": manifest.root,
                   "manifest_digest": manifest.digest(), "audio_digest": manifest.audio_digest(),
                   "label_map": manifest.label_map_name, "utterances": n},
        "condition": {"key": condition, "noise": {"spec": spec} if spec else None},
        "model": {"name": model, "model_id": f"synthetic/{model}", "family": "synthetic", "sample_rate": 16000,
                  "num_layers": layers, "dim": dim, "frame_rate": 50.0, "weights_hash": weights,
                  "pretrained": not model.endswith("-random"), "settings": {}},
        "command": f"fs extract --model {model} --corpus {manifest.name}",
    }
    group = store.create(key, utt_ids=[r["utt_id"] for r in manifest.rows],
                         audio_sha256=[r["audio_sha256"] for r in manifest.rows], num_layers=layers, dim=dim,
                         batch_start=[0, n], frame_layers=[], provenance=provenance, noisy=bool(noise))
    mix = None
    if noise:
        mix = {"recording": np.array(["noise.wav"] * n), "offset": np.zeros(n, np.int64),
               "snr_db": np.full(n, float(noise["snr_db"]))}
    group.commit(range(0, 1), 0, values, np.abs(values) * 0.1, np.full(n, 100, np.int32),
                 np.ones(n, np.int8), {}, {}, noise=mix)
    group.mark_complete()
    return key


def synthetic_workspace(root: str | Path, corpora: dict[str, int] | None = None,
                        models: dict[str, tuple[int, int]] | None = None,
                        speakers: dict[str, int] | None = None,
                        noise: dict[str, Any] | None = None, separation: float = 0.1) -> Workspace:
    """A workspace at ``root`` with manifests of ``corpora`` ({name: n}) and a complete clean group of
    every model ({name: (layers, dim)}) for each; with ``noise`` ({noise, snr_db, noise_seed}) also a
    noisy group of every corpus. Existing groups are kept (a warm store is reused)."""
    corpora = corpora or CORPORA
    models = models or MODELS
    speakers = speakers or SPEAKERS
    ws = Workspace.open(root)
    store = FeatureStore(ws.store_url)
    for name, n in corpora.items():
        manifest = fake_manifest(name, n, speakers.get(name, 6))
        if not ws.manifest_path(name).exists():
            ws.save_manifest(manifest)
        for model, (layers, dim) in models.items():
            for cond in (None, noise) if noise else (None,):
                try:
                    condition = "clean" if cond is None else None
                    filters = {} if cond is None else {"snr_db": cond["snr_db"]}
                    store.resolve(name, model, condition, **filters)
                    continue
                except Exception:
                    pass
                values = synthetic_values(manifest, model, layers, dim, separation, noisy=cond is not None)
                write_group(store, manifest, model, values, noise=cond)
    return ws


def study(layer: str, seeds: int = 5) -> dict[str, Any]:
    return {"name": f"bench-{layer}", "defaults": {"classifiers": "logreg", "layers": layer, "seeds": seeds},
            "experiments": [{"name": "table2", "all_pairs": list(CORPORA), "models": list(MODELS)}]}


def _naive_cells(configs: list[dict[str, Any]], store_url: str, root: str) -> int:
    from classifiers.studies.protocols import ProbeConfig, run_probe

    store, ws = FeatureStore(store_url), Workspace.open(root, store_url)
    for data in configs:
        run_probe(ProbeConfig.from_dict(data), store, ws, views=None)
    return len(configs)


class CpuClock:
    """CPU seconds of this process and of the joblib (loky) workers, for a machine shared with other work:
    CPU seconds / workers is about the wall time on idle cores."""

    def __init__(self) -> None:
        self.start = self._now()

    @staticmethod
    def _workers() -> dict[int, float]:
        import psutil

        out = {}
        for child in psutil.Process().children(recursive=True):
            try:
                t = child.cpu_times()
                out[child.pid] = t.user + t.system
            except psutil.Error:
                pass
        return out

    def _now(self) -> tuple[float, dict[int, float]]:
        return time.process_time(), self._workers()

    def seconds(self) -> float:
        own, workers = self._now()
        before = self.start[1]
        return own - self.start[0] + sum(t - before.get(pid, 0.0) for pid, t in workers.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=None, help="workspace folder [a temp folder]")
    parser.add_argument("--keep", action="store_true", help="keep the workspace (reuse it next time)")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes [2]")
    parser.add_argument("--skip-best", action="store_true", help="skip the best-layer sweep")
    parser.add_argument("--skip-naive", action="store_true", help="skip the naive sweep")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    from joblib import Parallel, delayed

    from classifiers.studies.sweep import expand_study, parse_study, run_sweep

    root = Path(args.root or tempfile.mkdtemp(prefix="fs-bench-sweep-"))
    try:
        start = time.perf_counter()
        ws = synthetic_workspace(root)
        store = FeatureStore(ws.store_url)
        size = sum(p.stat().st_size for p in Path(ws.store_url).rglob("*") if p.is_file())
        print(f"warm store: {len(store.keys())} groups, {size / 2**30:.2f} GiB at {ws.store_url} "
              f"(written or found in {time.perf_counter() - start:.1f} s)")
        print(f"{os.cpu_count()} CPUs visible, load average {os.getloadavg()[0]:.1f}, {args.jobs} workers, "
              f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}")
        figures = {}
        for layer in ("last",) + (() if args.skip_best else ("best",)):
            spec = parse_study(study(layer))
            start, cpu = time.perf_counter(), CpuClock()
            results = run_sweep(spec, store, ws, n_jobs=args.jobs, progress=False, rerun=True)
            figures[layer] = time.perf_counter() - start
            uar = np.mean([r["uar_mean"] for r in results])
            print(f"sweep, layer {layer}: {len(results)} configurations x 5 seeds in {figures[layer]:.1f} s wall, "
                  f"{cpu.seconds():.1f} CPU s (mean UAR {uar:.3f}; budget {'60 s' if layer == 'last' else '300 s'})")
        start = time.perf_counter()
        results = run_sweep(parse_study(study("last")), store, ws, n_jobs=args.jobs, progress=False)
        figures["ledger"] = time.perf_counter() - start
        print(f"same sweep again: {sum(r['from_ledger'] for r in results)} of {len(results)} answered from the "
              f"ledger in {figures['ledger']:.1f} s")
        if not args.skip_naive:
            cells = expand_study(parse_study(study("last")))
            chunks = [[c.config.to_dict() for c in cells[i::args.jobs]] for i in range(args.jobs)]
            start, cpu = time.perf_counter(), CpuClock()
            Parallel(n_jobs=args.jobs, backend="loky")(delayed(_naive_cells)(chunk, store.url, str(ws.root))
                                                       for chunk in chunks)
            figures["naive"] = time.perf_counter() - start
            print(f"naive (views loaded and probes fitted per configuration): {figures['naive']:.1f} s wall, "
                  f"{cpu.seconds():.1f} CPU s, {figures['naive'] / figures['last']:.1f}x the sweep")
        print("summary: " + ", ".join(f"{k} {v:.1f} s" for k, v in figures.items()))
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
