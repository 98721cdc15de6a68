"""Few-shot on real corpora: does source + k target shots beat the shots alone and the source alone?

For every ordered pair of the workspace's corpora and k shots per class, three numbers on the *same*
test utterances (the target less seed s's shots), mean over seeds:

- ``src+shots``: the few-shot probe (source + shots), with ``--shot-weight none`` (plain union),
  ``auto`` (the shots' weight chosen by cross-validation over the shots, shots-only among the candidates)
  and ``augment`` (``--shot-augment --shot-weight balanced``: EasyAdapt features, shots and source
  weighing the same in total; fs's recommended few-shot learner);
- ``shots``: the target-only baseline (the shots alone), reported by the same few-shot result;
- ``0 shots``: the source alone (protocol ``cross-language-heldout``: the shots held out, never trained on).

The issue's target: ``src+shots >= shots - 1`` and ``src+shots >= 0 shots`` in every cell (:func:`meets`).

    FS_WORKSPACE=/tmp/real/ws OMP_NUM_THREADS=1 python bench/bench_few_shot.py
    python bench/bench_few_shot.py --workspace WS --model NAME --layer 3 --shots 5,10,20 --seeds 3

Prints the table; writes every cell to ``bench/out/few_shot.json``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MODEL = "/work/shared/models/whisper-base-encoder"


def run_cell(store: Any, ws: Any, cache: dict, **settings: Any) -> Any:
    """One probe result (computed here, not read from the ledger)."""
    from classifiers.studies.protocols import ProbeConfig, run_probe

    return run_probe(ProbeConfig(**settings), store, ws, views=cache)


METHODS = {"none": {"shot_weight": "none"}, "auto": {"shot_weight": "auto"},
           "augment": {"shot_weight": "balanced", "shot_augment": True}}


def measure(ws_path: str, model: str, layer: Any, norm: str, shots: list[int], seeds: int,
            corpora: list[str] | None = None, whisper_input: str = "trim") -> list[dict[str, Any]]:
    """Every (pair, k) cell: UAR (%) of src+shots (each of :data:`METHODS`), shots alone and 0 shots, and the
    weights ``auto`` chose."""
    from featurestore.store import FeatureStore
    from featurestore.workspace import Workspace

    ws = Workspace.open(ws_path)
    store = FeatureStore(ws.store_url)
    names = corpora or ws.corpus_names()
    cache: dict = {}
    rows = []
    for (source, target), k in itertools.product(itertools.permutations(names, 2), shots):
        base = {"source": source, "target": target, "model": model, "whisper_input": whisper_input, "layer": layer,
                "norm": norm, "seeds": seeds, "shots": k}
        start = time.perf_counter()
        results = {name: run_cell(store, ws, cache, **base, **method) for name, method in METHODS.items()}
        plain, auto = results["none"], results["auto"]
        zero = run_cell(store, ws, cache, **base, protocol="cross-language-heldout")
        row = {"source": source, "target": target, "shots": k,
               **{f"src_shots_{name}": 100 * r.uar_mean for name, r in results.items()},
               "shots_only": 100 * plain.baseline["uar_mean"],
               "zero_shots": 100 * zero.uar_mean, "auto_weights": [s["weight"] for s in auto.shot_weights],
               "seconds": time.perf_counter() - start}
        rows.append(row)
        print(_line(row), flush=True)
    return rows


HEADER = (f"{'pair':<18}{'k':>3}" + "".join(f"{m:>8}" for m in METHODS) + f"{'shots':>7}{'0 shot':>7}  "
          + "".join(f"{m + ' ok?':<13}" for m in ("auto", "augment")) + "weights chosen (auto)")


def meets(r: dict[str, Any], method: str) -> bool:
    """The issue's target for one cell: source + shots >= the shots alone - 1 point and >= 0 shots."""
    return r[f"src_shots_{method}"] >= r["shots_only"] - 1 and r[f"src_shots_{method}"] >= r["zero_shots"]


def _line(r: dict[str, Any]) -> str:
    weights = " ".join("shots" if w == "inf" else f"{w:.3g}" for w in r["auto_weights"])
    return (f"{r['source'] + '->' + r['target']:<18}{r['shots']:>3}"
            + "".join(f"{r[f'src_shots_{m}']:>8.1f}" for m in METHODS)
            + f"{r['shots_only']:>7.1f}{r['zero_shots']:>7.1f}  "
            + "".join(f"{'yes' if meets(r, m) else 'NO':<13}" for m in ("auto", "augment")) + weights)


def summary(rows: list[dict[str, Any]]) -> str:
    """Means per k and how many cells meet the target, for none and auto."""
    out = []
    for k in sorted({r["shots"] for r in rows}):
        sel = [r for r in rows if r["shots"] == k]
        mean = lambda key, sel=sel: sum(r[key] for r in sel) / len(sel)  # noqa: E731
        met = {m: sum(meets(r, m) for r in sel) for m in METHODS}
        out.append(f"k={k:>2}: mean " + "  ".join(f"{m} {mean(f'src_shots_{m}'):.1f}" for m in METHODS)
                   + f"  shots {mean('shots_only'):.1f}  0-shot {mean('zero_shots'):.1f}   target met: "
                   + ", ".join(f"{m} {met[m]}/{len(sel)}" for m in METHODS))
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workspace", default=os.environ.get("FS_WORKSPACE", "/tmp/real/ws"))
    parser.add_argument("--model", default=MODEL)
    parser.add_argument("--layer", default="3")
    parser.add_argument("--norm", default="corpus")
    parser.add_argument("--shots", default="5,10,20")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--whisper-input", default="trim", choices=("trim", "full"))
    parser.add_argument("--corpora", default=None, help="comma-separated [default: every corpus of the workspace]")
    parser.add_argument("--out", default=str(ROOT / "bench" / "out" / "few_shot.json"))
    args = parser.parse_args()
    layer: Any = int(args.layer) if args.layer.lstrip("-").isdigit() else args.layer
    print(HEADER)
    rows = measure(args.workspace, args.model, layer, args.norm, [int(k) for k in args.shots.split(",")], args.seeds,
                   args.corpora.split(",") if args.corpora else None, args.whisper_input)
    print(summary(rows))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps({"settings": vars(args), "rows": rows}, indent=1))
    tmp.replace(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
