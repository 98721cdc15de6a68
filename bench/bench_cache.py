"""Does the study cache's byte bound hold? A sweep's peak RSS against the bound, on a synthetic store.

    python bench/bench_cache.py                    # bound 48 MB, then 3000 MB (the default), ~1 min on 2 cores
    python bench/bench_cache.py --bound-mb 32 --root /tmp/cachebench --keep

Writes a synthetic workspace (bench/bench_sweep.py's :func:`synthetic_workspace`: three corpora of
1500, 1200 and 1000 utterances, one model of 13 layers x 768) whose all-layer views (about 60 MB
each, read by ``--layer best``) do not fit a small bound, then runs the same best-layer + last-layer
study in this process (one worker, so that its memory is this process's) once per bound and prints,
per run: the peak RSS above the RSS before the sweep (sampled every 10 ms), the bound, the most the
cache held (its own estimate, by slot: views, estimators, selections, frames, encoders, ...), and
the wall time. A probe sweep loads no encoder, so "the model" is 0 here; a LoRA sweep adds its
encoder's parameter bytes (counted in the cache's ``encoders`` slot). Peak RSS above the bound is the
working memory of one configuration (the training matrix, its normalised copy, a fit), not the cache.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

CORPORA = {"aa": 1500, "bb": 1200, "cc": 1000}
MODEL = {"enc": (13, 768)}


class PeakRss:
    """The highest resident set size of this process while it runs (a sampling thread)."""

    def __init__(self, every: float = 0.01) -> None:
        import psutil

        self.process = psutil.Process()
        self.every = every
        self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(self.every)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


def _watched_cache(base: type, held: dict[str, Any]) -> type:
    """A subclass of the sweep's cache class that records the most bytes (and per slot) it held."""

    class Watched(base):  # type: ignore[misc, valid-type]
        def __setitem__(self, key: Any, value: Any) -> None:
            super().__setitem__(key, value)
            if self.nbytes > held["total"]:
                held.update(total=self.nbytes, slots=self.slot_bytes())

    return Watched


def run_once(ws: Any, bound_mb: int) -> dict[str, Any]:
    """One sweep of the study with the cache bounded at ``bound_mb``; RSS and cache figures."""
    from classifiers.studies import sweep
    from featurestore.store import FeatureStore

    sweep.VIEW_CACHE_MB = bound_mb
    held: dict[str, Any] = {"total": 0, "slots": {}}
    original = sweep.ViewCache
    sweep.ViewCache = _watched_cache(original, held)  # what _worker_views makes for this sweep
    study = {"name": f"cache-{bound_mb}", "defaults": {"classifiers": "ridge", "seeds": 2, "models": list(MODEL)},
             "experiments": [{"name": "t", "all_pairs": list(CORPORA), "layers": ["best", "last", "mean"]}]}
    gc.collect()
    import psutil

    before = psutil.Process().memory_info().rss
    start = time.perf_counter()
    try:
        with PeakRss() as peak:
            results = sweep.run_sweep(sweep.parse_study(study), FeatureStore(ws.store_url), ws, n_jobs=1,
                                      progress=False, rerun=True)
    finally:
        sweep.ViewCache = original
        sweep._WORKER_CACHE.clear()
    return {"bound_mb": bound_mb, "cells": len(results), "seconds": time.perf_counter() - start,
            "peak_above_mb": (peak.peak - before) / 2**20, "held_mb": held["total"] / 2**20,
            "slots_mb": {k: round(v / 2**20, 1) for k, v in held["slots"].items() if v}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=None, help="workspace folder [a temp folder]")
    parser.add_argument("--keep", action="store_true", help="keep the workspace (reuse it next time)")
    parser.add_argument("--bound-mb", type=int, default=48, help="the small bound [48]")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from bench_sweep import synthetic_workspace

    root = Path(args.root) if args.root else Path(tempfile.mkdtemp(prefix="fs-cachebench-"))
    try:
        ws = synthetic_workspace(root, corpora=CORPORA, models=MODEL, speakers={"aa": 10, "bb": 8, "cc": 8})
        view_mb = max(CORPORA.values()) * MODEL["enc"][0] * MODEL["enc"][1] * 4 / 2**20
        print(f"store: {len(CORPORA)} corpora x {MODEL['enc'][0]} layers x {MODEL['enc'][1]}; largest all-layer view "
              f"{view_mb:.0f} MB; model loaded by the sweep: 0 MB (probes)")
        print(f"{'bound MB':>9} {'cells':>6} {'peak RSS above start MB':>24} {'cache held at most MB':>22}  slots (MB) "
              "at that moment; seconds")
        for bound in (args.bound_mb, 3000):  # the small bound, then the default
            r = run_once(ws, bound)
            print(f"{r['bound_mb']:>9} {r['cells']:>6} {r['peak_above_mb']:>24.0f} {r['held_mb']:>22.0f}  "
                  f"{r['slots_mb']}; {r['seconds']:.0f} s")
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
