"""Cross-language transfer on real corpora: corpus norm vs CORAL, fixed layers vs learned layer weights.

Every ordered pair of the workspace's corpora, one seed (logistic regression is deterministic; the
weighted-layer probe is seeded), UAR (%) of:

- ``corpus`` and ``coral`` normalisation at each ``--layers`` choice (default 3 and last);
- ``--layer weighted`` (softmax layer weights learned with the probe) with corpus normalisation, and
  the layer it weights most (mean over seeds).

    FS_WORKSPACE=/tmp/real/ws OMP_NUM_THREADS=1 python bench/bench_transfer.py

Prints the table (and the mean over pairs); writes every cell to ``bench/out/transfer.json``.
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


def measure(ws_path: str, model: str, layers: list[Any], seeds: int, corpora: list[str] | None) -> dict[str, Any]:
    """``{"columns": [...], "rows": [{pair, column: UAR %, top_layer}]}``."""
    from classifiers.studies.protocols import ProbeConfig, run_probe
    from featurestore.store import FeatureStore
    from featurestore.workspace import Workspace

    ws = Workspace.open(ws_path)
    store = FeatureStore(ws.store_url)
    cache: dict = {}
    settings = [(f"{norm} L{layer}", {"layer": layer, "norm": norm}) for layer in layers for norm in ("corpus", "coral")]
    settings.append(("weighted corpus", {"layer": "weighted", "norm": "corpus"}))
    rows = []
    print(f"{'pair':<18}" + "".join(f"{name:>17}" for name, _ in settings) + "  top weighted layer", flush=True)
    for source, target in itertools.permutations(corpora or ws.corpus_names(), 2):
        row: dict[str, Any] = {"source": source, "target": target, "seconds": {}}
        for name, setting in settings:
            start = time.perf_counter()
            result = run_probe(ProbeConfig(source=source, target=target, model=model, whisper_input="trim",
                                           seeds=seeds, **setting), store, ws, views=cache)
            row[name] = 100 * result.uar_mean
            row["seconds"][name] = time.perf_counter() - start
            if result.layer_weights:
                mean = [sum(w[k] for w in result.layer_weights) / len(result.layer_weights)
                        for k in range(len(result.layer_weights[0]))]
                row["layer_weights"] = mean
                row["top_layer"] = max(range(len(mean)), key=lambda k: mean[k])
        rows.append(row)
        print(f"{source + '->' + target:<18}" + "".join(f"{row[name]:>17.1f}" for name, _ in settings)
              + f"  {row.get('top_layer')}", flush=True)
    means = {name: sum(r[name] for r in rows) / len(rows) for name, _ in settings}
    print(f"{'mean':<18}" + "".join(f"{means[name]:>17.1f}" for name, _ in settings))
    return {"columns": [name for name, _ in settings], "rows": rows, "means": means}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workspace", default=os.environ.get("FS_WORKSPACE", "/tmp/real/ws"))
    parser.add_argument("--model", default=MODEL)
    parser.add_argument("--layers", default="3,last")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--corpora", default=None, help="comma-separated [default: every corpus of the workspace]")
    parser.add_argument("--out", default=str(ROOT / "bench" / "out" / "transfer.json"))
    args = parser.parse_args()
    layers = [int(x) if x.lstrip("-").isdigit() else x for x in args.layers.split(",")]
    found = measure(args.workspace, args.model, layers, args.seeds, args.corpora.split(",") if args.corpora else None)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps({"settings": vars(args), **found}, indent=1))
    tmp.replace(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
