"""Store write cost per utterance: committing every batch vs buffering whole chunks (the default).

    python bench/bench_store_write.py

Shapes: Whisper-base (7 x 512) and XLSR/MMS large (25 x 1024) pooled mean + std, batches of 8.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from featurestore.store import ROW_CHUNK, FeatureStore, StoreKey

BATCH = 8
UTTERANCES = 2 * ROW_CHUNK


def ms_per_utterance(root: str, layers: int, dim: int, commit_rows: int) -> float:
    store = FeatureStore(f"{root}/L{layers}-{commit_rows}.zarr")
    group = store.create(StoreKey("c", "clean", "m"), utt_ids=[f"u{i}" for i in range(UTTERANCES)], num_layers=layers,
                         dim=dim, num_batches=UTTERANCES // BATCH, frame_layers=[], provenance={})
    pooled = np.random.default_rng(0).random((commit_rows, layers, dim), dtype=np.float32)
    ones = np.ones(commit_rows)
    start = time.perf_counter()
    for k in range(UTTERANCES // commit_rows):
        first = k * commit_rows
        group.commit(range(first // BATCH, (first + commit_rows) // BATCH), first, pooled, pooled, ones, ones, {}, {})
    return (time.perf_counter() - start) / UTTERANCES * 1000


def main() -> None:
    root = tempfile.mkdtemp(prefix="fs-bench-write-")
    for layers, dim in ((7, 512), (25, 1024)):
        per_batch = ms_per_utterance(root, layers, dim, BATCH)
        buffered = ms_per_utterance(root, layers, dim, ROW_CHUNK)
        print(f"{layers:>2} x {dim:<5} commit every batch: {per_batch:6.2f} ms/utt | every {ROW_CHUNK} rows: "
              f"{buffered:5.2f} ms/utt | x{per_batch / buffered:.1f}")


if __name__ == "__main__":
    main()
