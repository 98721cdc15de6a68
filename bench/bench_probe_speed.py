"""How long a Table II-sized sweep of logistic-regression probes takes: 300 fits.

    python bench/bench_probe_speed.py                 # 2 processes x 1 BLAS thread
    python bench/bench_probe_speed.py --jobs 1 --threads 2
    python bench/bench_probe_speed.py --tol 1e-3 --classifier svm

12 ordered corpus pairs (sources of IEMOCAP 5531, EMODB 420, EMOVO 336, URDU 400 utterances)
x 5 models (feature widths 768, 768, 1024, 1024, 1024) x 5 seeds. Each fit trains on the
source and predicts the target. Features are synthetic gaussian class clusters with a
power-law covariance spectrum and a per-corpus offset, tuned so that lbfgs needs about as
many iterations as on real pooled Whisper-base features (30-60). Data generation is not timed.
Prints the wall time of the whole sweep, the CPU seconds of the fits (on a machine shared
with other work, CPU / cores is the time the sweep takes on idle cores), the mean fit time
per source size and lbfgs iterations, against the 60 s budget.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from joblib import Parallel, delayed
from threadpoolctl import threadpool_limits

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from classifiers.learners.metrics import uar  # noqa: E402
from classifiers.learners.probes import make_classifier  # noqa: E402

CORPORA = {"iemocap": 5531, "emodb": 420, "emovo": 336, "urdu": 400}
MODEL_DIMS = {"cnn-lstm": 768, "wav2vec2": 768, "xlsr": 1024, "whisper": 1024, "mms": 1024}
SEEDS = range(5)
SEPARATION = 0.1  # class means, in units of the per-direction noise
SHIFT = 0.5  # corpus offsets, same units


def make_corpus(n: int, basis: np.ndarray, means: np.ndarray, seed: int) -> tuple:
    """``(X (n, D) float32, y (n,))``: 4 gaussian clusters, spectrum 1/k, corpus shift."""
    rng = np.random.default_rng(seed)
    d = basis.shape[0]
    scale = np.sqrt(1.0 / (1.0 + np.arange(d)))
    y = rng.integers(0, means.shape[0], n)
    shift = rng.normal(scale=SHIFT, size=d) * scale
    latent = means[y] + shift + rng.normal(size=(n, d)) * scale
    X = latent @ basis.T + 3.0  # encoder features are not centred
    return X.astype(np.float32), np.array(["angry", "happy", "neutral", "sad"])[y]


def build_data() -> dict:
    data = {}
    for m, (model, d) in enumerate(MODEL_DIMS.items()):
        rng = np.random.default_rng(100 + m)
        basis, _ = np.linalg.qr(rng.normal(size=(d, d)))
        means = rng.normal(scale=SEPARATION, size=(4, d)) * np.sqrt(1.0 / (1.0 + np.arange(d)))
        for c, (corpus, n) in enumerate(CORPORA.items()):
            data[corpus, model] = make_corpus(n, basis, means, seed=1000 * m + c)
    return data


def one_fit(name: str, params: dict, seed: int, train: tuple, test: tuple, threads: int) -> tuple:
    with threadpool_limits(threads):
        start, cpu_start = time.perf_counter(), time.process_time()
        est = make_classifier(name, seed, **params).fit(*train)
        pred = est.predict(test[0])
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    inner = est.model_[-1] if hasattr(est, "model_") else None
    n_iter = int(np.max(inner.n_iter_)) if inner is not None and hasattr(inner, "n_iter_") else -1
    return elapsed, cpu, n_iter, uar(test[1], pred)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classifier", default="logreg")
    parser.add_argument("--jobs", type=int, default=2, help="parallel processes [2]")
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads per fit [1]")
    parser.add_argument("--tol", type=float, default=None, help="override the solver tolerance")
    args = parser.parse_args()
    params = {} if args.tol is None else {"tol": args.tol}

    t0 = time.perf_counter()
    data = build_data()
    print(f"data: {len(data)} corpus x model arrays built in {time.perf_counter() - t0:.1f} s")
    tasks = [
        (src, tgt, model, seed)
        for src in CORPORA
        for tgt in CORPORA
        if src != tgt
        for model in MODEL_DIMS
        for seed in SEEDS
    ]
    start = time.perf_counter()
    results = Parallel(n_jobs=args.jobs)(
        delayed(one_fit)(args.classifier, params, seed, data[src, model], data[tgt, model], args.threads)
        for src, tgt, model, seed in tasks
    )
    wall = time.perf_counter() - start

    by_source: dict[str, list] = defaultdict(list)
    for (src, *_), res in zip(tasks, results, strict=True):
        by_source[src].append(res)
    print(f"{args.classifier} {params or ''}: {len(tasks)} fits, {args.jobs} process(es) x {args.threads} thread(s)")
    print(f"{'source':<9} {'n':>5} {'fits':>5} {'mean fit s':>11} {'mean CPU s':>11} {'iters':>9} {'UAR':>6}")
    for src, res in by_source.items():
        t, c, it, u = (np.array(col) for col in zip(*res, strict=True))
        print(f"{src:<9} {CORPORA[src]:>5} {len(res):>5} {t.mean():>11.3f} {c.mean():>11.3f} "
              f"{f'{it.min()}-{it.max()}':>9} {u.mean():>6.3f}")
    cpu = sum(r[1] for r in results)
    verdict = lambda t: "OK" if t < 60 else "OVER"  # noqa: E731
    print(f"sweep wall time: {wall:.1f} s (budget 60 s: {verdict(wall)}; 1-min load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")
    print(f"CPU time of the fits: {cpu:.1f} s = {cpu / 2:.1f} s on 2 idle cores "
          f"(budget 60 s: {verdict(cpu / 2)})")


if __name__ == "__main__":
    main()
