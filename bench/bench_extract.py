"""Extraction benchmark: fs's batched, stored extraction vs the naive one-utterance-at-a-time loop.

Prints, per model and in one run: utterances/s, real-time factor and peak memory of both ways and
their ratio; Whisper ``trim`` vs ``full`` speed; store bytes vs raw fp16 bytes. Each phase runs in
its own process so peak RSS is its own. (What ``trim`` does to UAR: bench/bench_whisper_trim_uar.py.)

    python bench/bench_extract.py                      # real URDU + real Whisper-base if ../shared exists
    python bench/bench_extract.py --models tiny-wav2vec2,tiny-whisper --corpus synth-urdu
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


def shared_dir() -> Path:
    return Path(os.environ.get("FS_SHARED", ROOT.parent / "shared"))


def corpus_manifest(name: str, work: Path):
    from data_manifests.manifest import build_manifest
    from data_manifests.synth import generate_corpus

    if name == "urdu":
        return build_manifest("urdu", "urdu", shared_dir() / "corpora" / "URDU")
    if name == "emodb":
        return build_manifest("emodb", "emodb", shared_dir() / "corpora" / "EMODB")
    layout = name.removeprefix("synth-")
    root = work / name
    if not root.exists():
        generate_corpus(layout, root)
    return build_manifest(name, layout, root)


def phase(args: argparse.Namespace) -> dict:
    """One measured phase in this process: 'naive' or 'batched'."""
    import torch

    from featurestore.audio import load_audio
    from featurestore.encoders import load_encoder
    from featurestore.extract import ExtractOptions, extract, pool_states
    from featurestore.noise import NoiseSpec
    from featurestore.store import FeatureStore

    torch.set_num_threads(os.cpu_count() or 1)
    work = Path(args.work)
    manifest = corpus_manifest(args.corpus, work)
    if args.limit:
        manifest.rows = manifest.rows[: args.limit]
    encoder = load_encoder(args.model, device=args.device, whisper_input=args.whisper_input)
    noise = NoiseSpec(source=args.noise, snr_db=args.snr) if args.noise else None
    audio_s = sum(r["duration"] for r in manifest.rows)
    start = time.perf_counter()
    if args.phase == "naive":
        from featurestore.noise import NoiseBank

        bank = NoiseBank(noise, encoder.info.sample_rate) if noise else None
        out = work / f"npy-{args.tag}"
        out.mkdir(parents=True, exist_ok=True)
        for row in manifest.rows:  # the habit fs replaces: one utterance, one forward, one .npy
            wave, _ = load_audio(row["path"], encoder.info.sample_rate)
            if bank is not None:
                wave, _ = bank.mix(wave, row["utt_id"])
            states = encoder.embed([wave])
            mean, std = pool_states(states.hidden, states.lengths)
            np.save(out / f"{row['utt_id']}.npy", np.stack([mean[0], std[0]]))
        stored_bytes = sum(p.stat().st_size for p in out.iterdir())
        key = ""
    else:
        store = FeatureStore(work / f"store-{args.tag}.zarr")
        result = extract(manifest, encoder, store, noise=noise,
                         options=ExtractOptions(batch_size=args.batch_size, progress=False, overwrite=True,
                                                num_workers=args.workers))
        key = result.key.path
        stored_bytes = store.disk_bytes(result.key)
    wall = time.perf_counter() - start
    peak_gpu = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else 0.0
    n, layers, dim = len(manifest.rows), encoder.info.num_layers, encoder.info.dim
    return {"phase": args.phase, "model": args.model, "whisper_input": args.whisper_input, "utts": n,
            "audio_s": audio_s, "wall_s": wall, "utt_per_s": n / wall, "rtf": wall / audio_s,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "peak_gpu_mb": peak_gpu,
            "stored_bytes": stored_bytes, "raw_fp16_bytes": n * layers * dim * 2 * 2, "key": key,
            "layers": layers, "dim": dim}


def run_phase(args: argparse.Namespace, **overrides) -> dict:
    cli = [sys.executable, __file__, "--phase-only"]
    opts = {**vars(args), **overrides}
    for name in ("phase", "model", "corpus", "work", "device", "whisper_input", "batch_size", "limit", "tag",
                 "noise", "snr", "workers"):
        if opts.get(name) not in (None, ""):
            cli += [f"--{name.replace('_', '-')}", str(opts[name])]
    done = subprocess.run(cli, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"phase failed: {' '.join(cli)}\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--phase-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--phase", default="batched")
    parser.add_argument("--models", default=None, help="comma-separated; default: real Whisper-base + tiny models")
    parser.add_argument("--model", default=None)
    parser.add_argument("--corpus", default=None, help="urdu | emodb | synth-<layout>")
    parser.add_argument("--work", default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--whisper-input", default="full")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--limit", type=int, default=0, help="first N utterances only")
    parser.add_argument("--noise", default=None)
    parser.add_argument("--snr", type=float, default=10.0)
    parser.add_argument("--tag", default="x")
    parser.add_argument("--skip-naive", action="store_true")
    parser.add_argument("--json-out", default=None)
    args = parser.parse_args()
    if args.phase_only:
        print(json.dumps(phase(args)))
        return
    have_shared = (shared_dir() / "corpora" / "URDU").is_dir()
    args.corpus = args.corpus or ("urdu" if have_shared else "synth-urdu")
    whisper = str(shared_dir() / "models" / "whisper-base-encoder")
    models = (args.models.split(",") if args.models else
              ([whisper] if have_shared else []) + ["tiny-wav2vec2", "tiny-whisper"])
    args.work = args.work or tempfile.mkdtemp(prefix="fs-bench-")
    print(f"corpus {args.corpus}, device {args.device}, batch {args.batch_size}, work {args.work}")
    from data_manifests.manifest import Manifest  # noqa: F401  (import check before spawning)

    records = []
    for i, model in enumerate(models):
        name = Path(model).name
        is_whisper = "whisper" in model
        modes = ["full", "trim"] if is_whisper else ["full"]
        for mode in modes:
            tag = f"{i}-{mode}"
            batched = run_phase(args, phase="batched", model=model, whisper_input=mode, tag=tag)
            line = (f"{name:<24} {mode:<5} batched: {batched['utt_per_s']:7.2f} utt/s  RTF {batched['rtf']:.4f}  "
                    f"peak RSS {batched['peak_rss_mb']:6.0f} MB")
            if not args.skip_naive:
                naive = run_phase(args, phase="naive", model=model, whisper_input=mode, tag=tag)
                batched["naive"] = naive
                line += (f" | naive: {naive['utt_per_s']:7.2f} utt/s peak RSS {naive['peak_rss_mb']:6.0f} MB"
                         f" | speed-up x{naive['wall_s'] / batched['wall_s']:.2f}"
                         f" | bytes store/npy {batched['stored_bytes'] / naive['stored_bytes']:.2f}")
            line += (f" | store {batched['stored_bytes'] / 2**20:.1f} MiB vs raw fp16 "
                     f"{batched['raw_fp16_bytes'] / 2**20:.1f} MiB (x{batched['stored_bytes'] / batched['raw_fp16_bytes']:.2f})")
            print(line, flush=True)
            records.append(batched)
        if is_whisper:
            full, trim = records[-2], records[-1]
            print(f"{name:<24} trim vs full (batched): speed x{full['wall_s'] / trim['wall_s']:.2f}", flush=True)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(records, indent=1))


if __name__ == "__main__":
    main()
