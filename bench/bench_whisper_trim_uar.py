"""What Whisper ``--whisper-input trim`` does to UAR, against ``full`` (padded to 30 s as trained).

Extracts (idempotently: groups already in the store are reused) the real Whisper-base over the
real URDU and EMODB corpora in both modes, then fits a linear probe on every layer's mean-pooled
states: within each corpus with leave-speakers-out folds, and across corpora (train on one, test
on the other; standardisation fitted on the training corpus only).

    python bench/bench_whisper_trim_uar.py --workspace /tmp/real/ws
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from classifiers.learners.metrics import uar  # noqa: E402
from data_manifests.manifest import Manifest, build_manifest  # noqa: E402
from featurestore.encoders import load_encoder  # noqa: E402
from featurestore.extract import ExtractOptions, extract  # noqa: E402
from featurestore.store import FeatureStore, StoreGroup  # noqa: E402
from featurestore.workspace import Workspace  # noqa: E402


def probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000, C=0.1))
    return clf.fit(train_x, train_y).predict(test_x)


def labelled(group: StoreGroup, manifest: Manifest) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ids, x = group.pooled()
    rows = {r["utt_id"]: r for r in manifest.rows}
    return x, np.array([rows[u]["label"] for u in ids]), np.array([rows[u]["speaker"] for u in ids])


def within(x: np.ndarray, y: np.ndarray, spk: np.ndarray, layer: int) -> float:
    from sklearn.model_selection import GroupKFold

    pred = np.empty_like(y)
    for train, test in GroupKFold(n_splits=min(5, len(set(spk)))).split(x, y, spk):
        pred[test] = probe(x[train, layer], y[train], x[test, layer])
    return uar(y, pred)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workspace", required=True)
    parser.add_argument("--shared", default=os.environ.get("FS_SHARED", str(ROOT.parent / "shared")))
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    shared = Path(args.shared)
    ws = Workspace.open(args.workspace)
    manifests = {}
    for name, layout, sub in (("urdu", "urdu", "corpora/URDU"), ("emodb", "emodb", "corpora/EMODB")):
        if name not in ws.corpus_names():
            ws.save_manifest(build_manifest(name, layout, shared / sub))
        manifests[name] = ws.load_manifest(name)
    store = FeatureStore(ws.store_url)
    data = {}
    for mode in ("full", "trim"):
        encoder = load_encoder(str(shared / "models" / "whisper-base-encoder"), whisper_input=mode)
        for name, manifest in manifests.items():
            result = extract(manifest, encoder, store, options=ExtractOptions(batch_size=args.batch_size))
            data[mode, name] = labelled(store.open(result.key), manifest)
            print(f"{mode:<4} {name:<5} {result.key} ({'reused' if result.already_done else 'extracted'})", flush=True)
    layers = data["full", "urdu"][0].shape[1]
    print("\nUAR of a linear probe on mean-pooled states (chance 0.25)")
    print(f"{'layer':<6}" + "".join(f"{m + ' ' + t:>18}" for m in ("full", "trim")
                                   for t in ("urdu(LOSO5)", "emodb(LOSO5)", "emodb->urdu", "urdu->emodb")))
    for layer in range(layers):
        cells = []
        for mode in ("full", "trim"):
            xu, yu, su = data[mode, "urdu"]
            xe, ye, se = data[mode, "emodb"]
            cells += [within(xu, yu, su, layer), within(xe, ye, se, layer),
                      uar(yu, probe(xe[:, layer], ye, xu[:, layer])), uar(ye, probe(xu[:, layer], yu, xe[:, layer]))]
        print(f"{layer:<6}" + "".join(f"{c:>18.3f}" for c in cells), flush=True)


if __name__ == "__main__":
    main()
