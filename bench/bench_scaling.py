"""Scaling of extraction on Ray on this machine: 1 vs 2 workers at 1 thread each, same corpus.

Prints, for a synthetic corpus (default 200 utterances of 1-3 s) and a random-weights encoder:
the local single-process run, Ray with 1 and 2 workers (utt/s, RTF), the 2-vs-1 throughput
ratio (ideal 2.0) and the engine's overhead per unit (one plan batch), measured two ways:
  * idle share: (wall x workers - sum of worker compute) / units  — everything a worker is not computing
    (scheduling, transfers, the driver's writes it waits on, imbalance at the end);
  * vs local: (Ray 1-worker wall - local wall) / units — Ray's cost minus what it gains by overlapping
    the driver's writes with the worker's compute (a local run does them one after the other).
Start-up (Ray runtime, workers loading the model) is printed apart, not in the walls.

    python bench/bench_scaling.py [--utterances 200] [--model tiny-wav2vec2] [--batch-size 8]
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import soundfile as sf
import torch

from data_manifests.manifest import Manifest, build_manifest
from featurestore.distributed import EncoderSpec, RayOptions, RayRunner
from featurestore.encoders import load_encoder
from featurestore.extract import ExtractOptions, extract, run_extraction
from featurestore.store import FeatureStore


def synthetic_corpus(folder: Path, n: int, seed: int = 0) -> Manifest:
    """``n`` noisy tone utterances of 1-3 s at 16 kHz, as a CSV corpus."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        seconds = rng.uniform(1.0, 3.0)
        t = np.arange(int(seconds * 16000)) / 16000
        wave = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 400) * t) + rng.normal(0, 0.05, t.size)
        sf.write(folder / f"u{i:04d}.wav", wave.astype(np.float32), 16000)
        rows.append({"path": f"u{i:04d}.wav", "label": ["angry", "happy", "neutral", "sad"][i % 4],
                     "speaker": f"s{i % 10}", "utt_id": f"u{i:04d}"})
    table = folder / "corpus.csv"
    with table.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return build_manifest("bench", "csv", table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--utterances", type=int, default=200)
    parser.add_argument("--model", default="tiny-wav2vec2", help="e.g. tiny-wav2vec2, wav2vec2-random, xlsr-random")
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(1)
    import ray

    options = ExtractOptions(batch_size=args.batch_size, progress=False)
    with tempfile.TemporaryDirectory() as tmp:
        manifest = synthetic_corpus(Path(tmp) / "corpus", args.utterances)
        audio = manifest.total_duration()
        units = len(range(0, args.utterances, args.batch_size))
        print(f"corpus: {len(manifest)} utterances, {audio:.0f} s of audio; model {args.model}; "
              f"batch size {args.batch_size} (~{units} units); 1 thread per worker; {os.cpu_count()} CPUs")
        local = extract(manifest, load_encoder(args.model), FeatureStore(Path(tmp) / "local.zarr"), options=options)
        print(f"local  1 process : {local.wall_seconds:7.2f} s  {local.utterances_per_second:7.1f} utt/s  "
              f"RTF {local.real_time_factor:.4f}")
        began = time.perf_counter()
        ray.init(num_cpus=max(2, os.cpu_count() or 1), include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
        print(f"ray runtime start: {time.perf_counter() - began:.1f} s")
        walls = {}
        for workers in (1, 2):
            began = time.perf_counter()
            with RayRunner(EncoderSpec(args.model), RayOptions(workers=workers)) as runner:
                started = time.perf_counter() - began
                result = run_extraction(manifest, runner, FeatureStore(Path(tmp) / f"ray{workers}.zarr"),
                                        options=options)
            stats = runner.stats
            walls[workers] = result.wall_seconds
            idle = (result.wall_seconds * workers - stats.compute_seconds) / max(stats.units, 1)
            print(f"ray    {workers} worker(s): {result.wall_seconds:7.2f} s  "
                  f"{result.utterances_per_second:7.1f} utt/s  "
                  f"RTF {result.real_time_factor:.4f}  (workers up in {started:.1f} s; {stats.units} units, "
                  f"compute {stats.compute_seconds:.2f} s, idle/overhead {1000 * idle:.1f} ms per unit)")
        ray.shutdown()
    print(f"throughput ratio 2 vs 1 workers: {walls[1] / walls[2]:.2f} (ideal 2.00; "
          f"efficiency {walls[1] / walls[2] / 2:.0%})")
    print(f"Ray 1 worker minus local, per unit: {1000 * (walls[1] - local.wall_seconds) / units:.1f} ms "
          f"(Ray 1 worker {walls[1]:.2f} s vs local {local.wall_seconds:.2f} s over {units} units; negative: the "
          "driver's writes overlap the worker's compute, which a local run does one after the other)")


if __name__ == "__main__":
    main()
