"""Wall time of light `fs` commands (they must not load torch), against importing torch + transformers.

    python bench/bench_cli_startup.py [--workspace WS] [--repeat 5]

Without --workspace, a temporary one is made with a tiny synthetic corpus and one logmel group.
Prints the median and minimum over --repeat runs of each command, each in a fresh process.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _fill(ws: Path) -> None:
    from data_manifests.manifest import build_manifest
    from data_manifests.synth import generate_corpus
    from featurestore.encoders import load_encoder
    from featurestore.extract import ExtractOptions, extract
    from featurestore.store import FeatureStore
    from featurestore.workspace import Workspace

    workspace = Workspace.open(ws)
    manifest = build_manifest("urdu", "urdu", generate_corpus("urdu", ws.parent / "urdu", size="tiny"))
    workspace.save_manifest(manifest)
    extract(manifest, load_encoder("logmel"), FeatureStore(workspace.store_url), options=ExtractOptions(progress=False))


def _time(cmd: list[str], env: dict[str, str], repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, default=None)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ws = args.workspace
        if ws is None:
            ws = Path(tmp) / "ws"
            _fill(ws)
        env = {**os.environ, "FS_WORKSPACE": str(ws), "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
        fs = [sys.executable, "-m", "cli.main"]
        cases = {
            "fs --help": [*fs, "--help"],
            "fs --version": [*fs, "--version"],
            "fs corpus ls": [*fs, "corpus", "ls"],
            "fs store ls": [*fs, "store", "ls"],
            "fs extract --help": [*fs, "extract", "--help"],
            "python -c pass": [sys.executable, "-c", "pass"],
            "import torch, transformers": [sys.executable, "-c", "import torch, transformers"],
        }
        print(f"{'command':<28} {'median s':>9} {'min s':>7}   ({args.repeat} runs each, workspace {ws})")
        for name, cmd in cases.items():
            times = _time(cmd, env, args.repeat)
            print(f"{name:<28} {statistics.median(times):>9.3f} {min(times):>7.3f}")


if __name__ == "__main__":
    main()
