"""How fast studies read the store: one layer of a whole corpus, every layer, and frame-level states.

    python bench/bench_store_read.py --workspace /tmp/real/ws

Prints, per group, the best-of-5 milliseconds to read what a probe needs (compare with the minutes
an extraction of the same corpus takes; see bench_extract.py).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from featurestore.store import FeatureStore  # noqa: E402
from featurestore.workspace import Workspace  # noqa: E402


def timed(fn, repeat: int = 5) -> float:
    """Best wall time of ``repeat`` calls, in milliseconds."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workspace", required=True)
    args = parser.parse_args()
    store = FeatureStore(Workspace.open(args.workspace).store_url)
    print(f"{'group':<72} {'N':>5} {'L':>3} {'D':>5} {'1 layer ms':>11} {'all layers ms':>14} {'frames ms':>10} {'MiB':>7}")
    for key in store.keys():
        group = store.open(key)
        n = len(group.utt_ids())
        one = timed(lambda g=group: g.pooled(layer=g.num_layers // 2))
        every = timed(lambda g=group: g.pooled())
        frames = timed(lambda g=group: g.frames(g.frame_layers[0]), 3) if group.frame_layers else float("nan")
        print(f"{key.path:<72} {n:>5} {group.num_layers:>3} {group.dim:>5} {one:>11.1f} {every:>14.1f} "
              f"{frames:>10.1f} {store.disk_bytes(key) / 2**20:>7.1f}")


if __name__ == "__main__":
    main()
