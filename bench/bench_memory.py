"""Peak memory and time of extraction on a long-tailed corpus: batching by count vs by audio seconds.

Real corpora mix 2-second clips with minutes-long ones. Batching by a count pads every clip of a
batch to its longest, so one long clip multiplies memory by the batch size (attention is quadratic
in frames). fs batches by a budget of padded seconds (``--batch-seconds``) and can cut long audio
into windows for every family (``--chunk-seconds``). Each configuration runs in its own process so
its peak RSS is its own. The model is a randomly initialised wav2vec2-base (12 x 768): the real
architecture, nothing to download.

    python bench/bench_memory.py                 # 1 clip of 90 s + 23 clips of 1-4 s
    python bench/bench_memory.py --long 180 --model tiny-wav2vec2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CONFIGS = {
    "count (batch 8, no seconds budget)": {"batch_size": 8, "batch_seconds": 1e9, "chunk": None},
    "seconds budget 30 s (batch <= 8)": {"batch_size": 8, "batch_seconds": 30.0, "chunk": None},
    "budget 30 s + chunk 20 s": {"batch_size": 8, "batch_seconds": 30.0, "chunk": 20.0},
    "one at a time (batch 1)": {"batch_size": 1, "batch_seconds": 1e9, "chunk": None},
}


def make_corpus(root: Path, long_seconds: float, n_short: int, seed: int = 0) -> None:
    """A URDU-layout corpus: one long clip and ``n_short`` clips of 1-4 s (noise-like speech stand-in)."""
    import soundfile as sf

    rng = np.random.default_rng(seed)
    labels = ["Angry", "Happy", "Neutral", "Sad"]
    for i in range(n_short + 1):
        seconds = long_seconds if i == 0 else float(rng.uniform(1.0, 4.0))
        t = np.arange(int(seconds * 16000)) / 16000
        wave = 0.1 * np.sin(2 * np.pi * (120 + 40 * np.sin(t)) * t) + 0.02 * rng.normal(size=t.size)
        folder = root / labels[i % 4]
        folder.mkdir(parents=True, exist_ok=True)
        sf.write(folder / f"SM{i % 5 + 1}_F{i:02d}_{labels[i % 4][0]}{i:03d}.wav", wave.astype(np.float32), 16000)


def phase(args: argparse.Namespace) -> dict:
    import torch

    from data_manifests.manifest import build_manifest
    from featurestore.encoders import load_encoder
    from featurestore.extract import ExtractOptions, extract
    from featurestore.store import FeatureStore

    torch.set_num_threads(os.cpu_count() or 1)
    cfg = CONFIGS[args.config]
    manifest = build_manifest("longtail", "urdu", args.corpus_root)
    encoder = load_encoder(args.model, chunk_seconds=cfg["chunk"])
    store = FeatureStore(Path(args.work) / f"store-{abs(hash(args.config))}.zarr")
    started = time.perf_counter()
    result = extract(manifest, encoder, store, options=ExtractOptions(
        batch_size=cfg["batch_size"], batch_seconds=cfg["batch_seconds"], progress=False, overwrite=True))
    return {"seconds": time.perf_counter() - started, "utterances": result.processed,
            "audio_seconds": result.audio_seconds,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "batches": len(store.open(result.key).batch_bounds()) - 1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="wav2vec2-random")
    parser.add_argument("--long", type=float, default=90.0, help="seconds of the one long clip")
    parser.add_argument("--short", type=int, default=23, help="number of 1-4 s clips")
    parser.add_argument("--work", default=None)
    parser.add_argument("--phase", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--config", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--corpus-root", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        print(json.dumps(phase(args)))
        return
    work = Path(args.work or tempfile.mkdtemp(prefix="fs-bench-mem-"))
    root = work / "longtail"
    if not root.exists():
        make_corpus(root, args.long, args.short)
    print(f"model {args.model}; corpus: 1 clip of {args.long:.0f} s + {args.short} clips of 1-4 s; "
          f"{os.cpu_count()} CPU threads")
    print(f"{'configuration':<38} {'batches':>7} {'time s':>8} {'utt/s':>7} {'peak RSS MB':>12}")
    rows = {}
    for name in CONFIGS:
        out = subprocess.run([sys.executable, __file__, "--phase", "--config", name, "--model", args.model,
                              "--work", str(work), "--corpus-root", str(root)],
                             capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        rows[name] = r
        print(f"{name:<38} {r['batches']:>7} {r['seconds']:>8.1f} {r['utterances'] / r['seconds']:>7.2f} "
              f"{r['peak_rss_mb']:>12.0f}", flush=True)
    base, budget = rows[list(CONFIGS)[0]], rows[list(CONFIGS)[1]]
    print(f"seconds budget vs count: memory x{base['peak_rss_mb'] / budget['peak_rss_mb']:.2f} lower, "
          f"time x{base['seconds'] / budget['seconds']:.2f} faster")


if __name__ == "__main__":
    main()
