"""The GPU extraction stage, measured: fs's batched extraction vs the naive loop, in one prepared run.

On one GPU, within ``--budget-s`` (default 480 s), on a synthetic corpus of speech-like lengths
(1-12 s, long tail, ~2,000 utterances built from ``data_manifests.synth`` voices, 30 % of them 48 kHz
stereo so decoding resamples and downmixes), for randomly initialised models of the real
architectures (wav2vec2-base 12x768, XLSR-53 / MMS-300m 24x1024: the real models' FLOPs) and the real
Whisper-base when ``--shared`` (default ``../shared``) has it:

* fs's batched extraction (bf16 autocast, length bucketing, SDPA attention, decoding in DataLoader
  workers, pinned host memory) of the whole corpus into a store: utterances/s, audio-seconds/s,
  real-time factor, peak GPU memory, and where the wall went: waiting on decoded audio, computing,
  the store's writes (the GPU idles during the first and the last);
* one forward pass of a typical batch: FLOPs (torch's FlopCounterMode), TFLOP/s and share of the
  GPU's bf16 peak, and the operators that take the device's time (the limit when the share is low);
* the naive loop (one utterance at a time, decoded in-process, fp32, TF32 off) on a random subset,
  and fs's batched extraction on exactly those utterances: the speed-up and the agreement of the
  pooled outputs (cosine of bf16 batched vs fp32 naive, per utterance and layer, >= 0.999);
* 1 vs 2 Ray actors per GPU (skipped, and said so, when Ray is not installed).

Every section's failure is caught and recorded; sections that the budget cannot fit are skipped and
listed. Figures go to ``--out`` (JSON, rewritten after every section) and a table is printed.

    python bench/bench_gpu.py --out $OUT/bench_gpu.json                 # one GPU, <= 8 minutes
    python bench/bench_gpu.py --device cpu --tiny --out /tmp/bench.json  # same script, < 1 min on 2 CPUs

Targets on one H100: batched >= 10x the naive loop; XLSR-size forward >= 40 % of bf16 peak; GPU idle
(waiting on decode or the store's writes) under 10 % of the run.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BF16_PEAK_TFLOPS = {  # dense bf16 tensor-core peaks (vendor data sheets), matched on the device name
    "H200": 989.4, "H100 SXM": 989.4, "H100 80GB HBM3": 989.4, "H100 NVL": 835.0, "H100 PCIe": 756.0,
    "H100": 989.4, "GH200": 989.4, "B200": 2250.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10": 125.0,
}
TARGETS = {"speedup": 10.0, "xlsr_mfu": 0.40, "gpu_idle_share": 0.10}
MIN_COSINE = 0.999
WHISPER_DIR = Path("models") / "whisper-base-encoder"


class Clock:
    """Time left until ``deadline`` (time.time() seconds)."""

    def __init__(self, deadline: float):
        self.deadline = deadline

    def left(self) -> float:
        return self.deadline - time.time()


# --------------------------------------------------------------------------- sections' bookkeeping

def run_step(record: dict[str, Any], name: str, fn: Callable[[], dict[str, Any]], *, clock: Clock,
             needs_s: float = 0.0, save: Callable[[], None] = lambda: None) -> dict[str, Any] | None:
    """``record[name] = fn()``; a failure is recorded (type, message, traceback tail), never raised;
    skipped (and said so) when fewer than ``needs_s`` seconds are left."""
    if clock.left() < needs_s:
        record[name] = {"status": "skipped", "reason": f"time budget: {clock.left():.0f} s left, needs ~{needs_s:.0f} s"}
        save()
        return None
    began = time.perf_counter()
    try:
        out = fn()
        record[name] = {"status": "ok", **out, "section_s": round(time.perf_counter() - began, 2)}
        return record[name]
    except Exception as exc:  # a one-shot run records every failure and goes on
        record[name] = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"[:2000],
                        "traceback": traceback.format_exc()[-3000:], "section_s": round(time.perf_counter() - began, 2)}
        return None
    finally:
        save()


def write_json(path: Path | None, data: dict[str, Any]) -> None:
    """Atomic write (temp file + rename), so a killed run leaves the last complete figures."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=_jsonable))
    tmp.replace(path)


def _jsonable(value: Any) -> Any:
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


# --------------------------------------------------------------------------- corpus

def speech_lengths(rng: np.random.Generator, n: int, tiny: bool) -> np.ndarray:
    """(n,) utterance lengths in seconds: log-normal (median 3.2 s, long tail) within 1-12 s; tiny: 0.5-3 s."""
    if tiny:
        return np.clip(rng.lognormal(np.log(1.2), 0.5, n), 0.5, 3.0)
    return np.clip(rng.lognormal(np.log(3.2), 0.6, n), 1.0, 12.0)


def voice_pool(folder: Path, tiny: bool) -> list[tuple[np.ndarray, str]]:
    """(16 kHz wave, emotion folder) of every utterance of a synthetic URDU corpus (data_manifests.synth)."""
    import soundfile as sf

    from data_manifests.synth import generate_corpus

    if not (folder / "done").exists():
        generate_corpus("urdu", folder, size="tiny" if tiny else "demo")
        (folder / "done").write_text("")
    return [(sf.read(p, dtype="float32")[0], p.parent.name) for p in sorted(folder.rglob("*.wav"))]


def compose(pool: list[tuple[np.ndarray, str]], seconds: float, rng: np.random.Generator,
            rate: int = 16000) -> tuple[np.ndarray, str]:
    """An utterance of ``seconds``: pool voices joined by short pauses, cut with a 10 ms fade; its label."""
    parts, total, label = [], 0, ""
    need = int(seconds * rate)
    while total < need:
        wave, emotion = pool[int(rng.integers(len(pool)))]
        label = label or emotion
        pause = (rng.normal(0, 1e-3, int(rng.uniform(0.05, 0.3) * rate))).astype(np.float32)
        parts += [wave, pause]
        total += wave.size + pause.size
    out = np.concatenate(parts)[:need].copy()
    fade = min(need, int(0.01 * rate))
    out[-fade:] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
    return out, label


def build_corpus(work: Path, n: int, tiny: bool, seed: int) -> Any:
    """The benchmark corpus as a CSV-layout manifest (cached under ``work``)."""
    import soundfile as sf
    import soxr

    from data_manifests.manifest import build_manifest

    name = f"gpubench-{'tiny' if tiny else 'full'}-{n}-s{seed}"
    root = work / name
    table = root / "table.csv"
    if not table.exists():
        pool = voice_pool(work / f"voices-{'tiny' if tiny else 'demo'}", tiny)
        rng = np.random.default_rng(seed)
        lines = ["path,label,speaker"]
        (root / "wav").mkdir(parents=True, exist_ok=True)
        for i, seconds in enumerate(speech_lengths(rng, n, tiny)):
            wave, label = compose(pool, float(seconds), rng)
            if i % 10 < 3:  # EMOVO-like: 48 kHz stereo (decoding downmixes and resamples)
                wide = soxr.resample(wave, 16000, 48000, quality="HQ")
                sf.write(root / "wav" / f"u{i:05d}.wav", np.stack([wide, 0.9 * wide], axis=1), 48000, subtype="PCM_16")
            else:
                sf.write(root / "wav" / f"u{i:05d}.wav", wave, 16000, subtype="PCM_16")
            lines.append(f"wav/u{i:05d}.wav,{label},S{i % 24:02d}")
        tmp = root / "table.csv.tmp"
        tmp.write_text("\n".join(lines) + "\n")
        tmp.replace(table)
    return build_manifest(name, "csv", table)


def subset(manifest: Any, rows: list[dict[str, Any]], suffix: str) -> Any:
    """``manifest`` restricted to ``rows`` under another name (its own store group)."""
    part = copy.copy(manifest)
    part.rows, part.name = rows, f"{manifest.name}-{suffix}"
    return part


# --------------------------------------------------------------------------- measurements

def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def reset_peak(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()


def peak_mb(device: str) -> float:
    import torch

    return torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else 0.0


def bf16_peak_tflops(override: float | None) -> tuple[float | None, str]:
    """(peak, where it came from): ``--peak-tflops``, else the table by device name, else None."""
    import torch

    if override:
        return override, "--peak-tflops"
    if not torch.cuda.is_available():
        return None, "no GPU"
    name = torch.cuda.get_device_name()
    for key, value in BF16_PEAK_TFLOPS.items():
        if key in name:
            return value, f"table: {key}"
    return None, f"unknown device {name!r}: give --peak-tflops"


def options_for(args: argparse.Namespace) -> Any:
    from featurestore.extract import ExtractOptions

    return ExtractOptions(batch_size=args.batch_size, batch_seconds=args.batch_seconds, num_workers=args.workers,
                          progress=False, overwrite=True)


def batched_run(manifest: Any, encoder: Any, store_path: Path, args: argparse.Namespace,
                compute_ahead: bool | None = None) -> dict[str, Any]:
    """fs's extraction of ``manifest`` into a fresh store: throughput, memory, and where the wall went."""
    from featurestore.extract import LocalRunner, run_extraction
    from featurestore.store import FeatureStore

    runner = LocalRunner(encoder, compute_ahead=compute_ahead)
    reset_peak(args.device)
    result = run_extraction(manifest, runner, FeatureStore(store_path), options=options_for(args))
    wall, times = result.wall_seconds, runner.times
    # the GPU works only inside compute; computing ahead, the store's writes overlap it and the
    # compute thread waits on them only when they are slower (handoff)
    store_s = times.handoff_wait_s if runner.compute_ahead else max(0.0, wall - times.decode_wait_s - times.compute_s)
    waits = {"decode_wait_s": times.decode_wait_s, "store_s": store_s}
    idle = max(0.0, 1.0 - times.compute_s / wall) if wall else 0.0
    return {"utts": result.processed, "audio_s": result.audio_seconds, "wall_s": wall,
            "utt_per_s": result.utterances_per_second, "audio_s_per_s": result.audio_seconds / wall if wall else 0.0,
            "rtf": result.real_time_factor, "peak_gpu_mb": result.peak_gpu_mb, "peak_rss_mb": result.peak_rss_mb,
            "compute_s": times.compute_s, **waits, "other_s": max(0.0, wall - times.compute_s - sum(waits.values())),
            "compute_ahead": runner.compute_ahead, "gpu_idle_share": idle,
            "idle_limit": max(waits, key=waits.get).removesuffix("_s") if idle else "none",
            "oom_halvings": result.oom_halvings, "oom_batch_seconds": result.oom_batch_seconds,
            "key": result.key.path, "store_path": str(store_path)}


def naive_run(manifest: Any, encoder: Any, device: str, cap_s: float) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The habit fs replaces: decode one file, one fp32 forward (TF32 off), pool; stops after ``cap_s``.

    Returns figures and utt_id -> (2, L, D) [mean, std] of the utterances done.
    """
    import torch

    from featurestore.audio import load_audio
    from featurestore.extract import pool_states

    saved = (encoder.autocast_dtype, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    encoder.autocast_dtype = None
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    pooled: dict[str, np.ndarray] = {}
    decode_s = compute_s = audio_s = 0.0
    reset_peak(device)
    began = time.perf_counter()
    try:
        for row in manifest.rows:
            t0 = time.perf_counter()
            wave, _ = load_audio(row["path"], encoder.info.sample_rate)
            t1 = time.perf_counter()
            states = encoder.embed([wave])
            mean, std = pool_states(states.hidden, states.lengths)
            pooled[row["utt_id"]] = np.stack([mean[0], std[0]])
            decode_s, compute_s = decode_s + t1 - t0, compute_s + time.perf_counter() - t1
            audio_s += wave.size / encoder.info.sample_rate
            if time.perf_counter() - began > cap_s:
                break
    finally:
        encoder.autocast_dtype = saved[0]
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved[1], saved[2]
    wall = time.perf_counter() - began
    return ({"utts": len(pooled), "capped": len(pooled) < len(manifest.rows), "audio_s": audio_s, "wall_s": wall,
             "utt_per_s": len(pooled) / wall, "audio_s_per_s": audio_s / wall, "decode_s": decode_s,
             "compute_s": compute_s, "peak_gpu_mb": peak_mb(device)}, pooled)


def agreement(store_path: Path, key: str, naive: dict[str, np.ndarray]) -> dict[str, Any]:
    """Cosine of batched (store) vs naive pooled vectors, per utterance and layer: the worst of each statistic."""
    from featurestore.store import FeatureStore

    group = FeatureStore(store_path).open(key)
    out: dict[str, Any] = {}
    for k, stat in enumerate(("mean", "std")):
        ids, values = group.pooled(stat=stat)  # (n, L, D)
        ref = np.stack([naive[u][k] for u in ids])
        cos = (values * ref).sum(-1) / np.maximum(np.linalg.norm(values, axis=-1) * np.linalg.norm(ref, axis=-1), 1e-30)
        worst = np.unravel_index(int(np.argmin(cos)), cos.shape)
        out[stat] = {"min_cosine": float(cos.min()), "median_cosine": float(np.median(cos)),
                     "worst_utt": str(ids[worst[0]]), "worst_layer": int(worst[1]),
                     "max_abs_diff": float(np.abs(values - ref).max())}
    out["min_cosine"] = min(out["mean"]["min_cosine"], out["std"]["min_cosine"])
    out["ok"] = out["min_cosine"] >= MIN_COSINE
    return out


def probe_batch(manifest: Any, encoder: Any, args: argparse.Namespace) -> list[np.ndarray]:
    """The decoded waves of the middle batch of fs's plan for ``manifest`` (a typical forward pass)."""
    from featurestore.audio import load_audio
    from featurestore.extract import plan_batches, plan_order

    rows = [manifest.rows[i] for i in plan_order(manifest)]
    bounds = plan_batches([r["duration"] for r in rows], args.batch_size, args.batch_seconds, encoder.info)
    middle = (len(bounds) - 1) // 2
    return [load_audio(r["path"], encoder.info.sample_rate)[0] for r in rows[bounds[middle]:bounds[middle + 1]]]


def forward_probe(waves: list[np.ndarray], encoder: Any, device: str, peak: float | None,
                  min_s: float) -> dict[str, Any]:
    """FLOPs (FlopCounterMode), time, TFLOP/s and bf16-peak share of ``encoder.embed(waves)``, and the
    operators taking the most device time (the profiler's self time)."""
    from torch.profiler import ProfilerActivity, profile
    from torch.utils.flop_counter import FlopCounterMode

    sync(device)
    encoder.embed(waves)  # warm-up (kernels, allocator, cuDNN choice)
    sync(device)
    counter = FlopCounterMode(display=False)
    with counter:
        encoder.embed(waves)
    flops = counter.get_total_flops()
    times = []
    began = time.perf_counter()
    while len(times) < 3 or (time.perf_counter() - began < min_s and len(times) < 50):
        t0 = time.perf_counter()
        encoder.embed(waves)
        sync(device)
        times.append(time.perf_counter() - t0)
    seconds = float(np.median(times))
    cuda = device.startswith("cuda")
    with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])) as prof:
        encoder.embed(waves)
        sync(device)
    events = prof.key_averages()

    def own(evt: Any) -> float:
        if cuda:
            return float(getattr(evt, "self_device_time_total", getattr(evt, "self_cuda_time_total", 0.0)))
        return float(evt.self_cpu_time_total)

    total = sum(own(e) for e in events) or 1.0
    top = sorted(events, key=own, reverse=True)[:8]
    attention = [e.key for e in sorted(events, key=own, reverse=True) if "scaled_dot_product" in e.key or "attention" in e.key]
    audio_s = sum(w.size for w in waves) / encoder.info.sample_rate
    tflops = flops / seconds / 1e12
    return {"batch": len(waves), "batch_audio_s": audio_s, "padded_s": len(waves) * max(w.size for w in waves)
            / encoder.info.sample_rate, "flops": flops, "gflop_per_audio_s": flops / audio_s / 1e9,
            "seconds": seconds, "tflops": tflops, "peak_tflops": peak, "mfu": tflops / peak if peak else None,
            "device_busy_share": (total / 1e6) / seconds if cuda else None,
            "top_ops": [{"op": e.key, "share": own(e) / total, "ms": own(e) / 1e3} for e in top],
            "attention_kernel": attention[0] if attention else None}


def load_model(spec: str, args: argparse.Namespace) -> Any:
    from featurestore.encoders import load_encoder

    name, _, mode = spec.partition("@")
    return load_encoder(name, device=args.device, whisper_input=mode or "full")


def model_section(spec: str, manifest: Any, args: argparse.Namespace, clock: Clock,
                  record: dict[str, Any], save: Callable[[], None]) -> None:
    """Every measurement of one model, each step recorded on its own (see the module docstring)."""
    work = Path(args.work)
    tag = spec.replace("/", "_").replace("@", "-")
    holder: dict[str, Any] = {}

    def load() -> dict[str, Any]:
        holder["encoder"] = enc = load_model(spec, args)
        return {"name": spec, "arch": f"{enc.info.num_layers - 1}x{enc.info.dim}", "family": enc.info.family,
                "pretrained": enc.info.pretrained, "attention": getattr(enc, "attention", "none"),
                "dtype": enc.info.settings.get("dtype"), "batch_size": args.batch_size,
                "batch_seconds": args.batch_seconds, "decode_workers": args.workers}

    if run_step(record, "load", load, clock=clock, needs_s=10, save=save) is None:
        return
    encoder = holder["encoder"]
    run_step(record, "batched", lambda: batched_run(manifest, encoder, work / f"store-{tag}.zarr", args),
             clock=clock, needs_s=20, save=save)
    if args.compare_sequential and record["batched"].get("compute_ahead"):  # what computing ahead buys
        run_step(record, "batched_sequential", lambda: batched_run(manifest, encoder, work / f"store-{tag}-seq.zarr",
                                                                   args, compute_ahead=False),
                 clock=clock, needs_s=60, save=save)
    peak, source = bf16_peak_tflops(args.peak_tflops)

    def forward() -> dict[str, Any]:
        out = forward_probe(probe_batch(manifest, encoder, args), encoder, args.device, peak, 1.0 if args.tiny else 3.0)
        batched = record.get("batched", {})
        if batched.get("status") == "ok" and peak:  # the whole extraction's rate over its compute time
            out["extraction_mfu"] = out["gflop_per_audio_s"] * 1e9 * batched["audio_s"] / batched["compute_s"] / 1e12 / peak
        return {**out, "peak_source": source}

    run_step(record, "forward", forward, clock=clock, needs_s=10, save=save)
    rng = np.random.default_rng(args.seed)
    picked = sorted(rng.choice(len(manifest.rows), min(args.naive_utts, len(manifest.rows)), replace=False))
    same = subset(manifest, [manifest.rows[i] for i in picked], "naive")
    naive_pooled: dict[str, np.ndarray] = {}

    def naive() -> dict[str, Any]:
        figures, pooled = naive_run(same, encoder, args.device, min(args.naive_s, max(5.0, clock.left() * 0.4)))
        naive_pooled.update(pooled)
        return figures

    if run_step(record, "naive", naive, clock=clock, needs_s=15, save=save) is None:
        return
    done = subset(manifest, [r for r in same.rows if r["utt_id"] in naive_pooled], "naive")

    def batched_same() -> dict[str, Any]:
        out = batched_run(done, encoder, work / f"store-{tag}-naive.zarr", args)
        out["speedup"] = out["audio_s_per_s"] / record["naive"]["audio_s_per_s"]
        if record.get("batched", {}).get("status") == "ok":  # at the whole corpus's rate (fixed costs amortised)
            out["speedup_at_corpus_rate"] = record["batched"]["audio_s_per_s"] / record["naive"]["audio_s_per_s"]
        out["agreement"] = agreement(Path(out["store_path"]), out["key"], naive_pooled)
        return out

    run_step(record, "batched_same", batched_same, clock=clock, needs_s=10, save=save)


def ray_section(manifest: Any, args: argparse.Namespace, clock: Clock, record: dict[str, Any],
                save: Callable[[], None]) -> None:
    """Ray extraction with 1 and 2 actors per GPU (CPU: 1 and 2 actors) on a subset of the corpus."""
    try:
        import ray
    except ImportError:
        record["status"] = "skipped"
        record["reason"] = 'ray is not installed (pip install "fs-ser[ray]")'
        save()
        return
    from featurestore.distributed import EncoderSpec, RayOptions, RayRunner, connect
    from featurestore.extract import run_extraction
    from featurestore.store import FeatureStore

    name, _, mode = args.ray_model.partition("@")
    part = subset(manifest, manifest.rows[: args.ray_utts], "ray")
    cuda = args.device.startswith("cuda")
    cpus = os.cpu_count() or 2
    began = time.perf_counter()
    # actors import fs from this checkout even where it is not pip-installed (they inherit the environment)
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    started = connect(None, num_cpus=max(cpus, 2))
    record["ray_start_s"] = time.perf_counter() - began
    record["model"], record["utts"] = args.ray_model, len(part.rows)
    try:
        for workers in (1, 2):
            def one(workers: int = workers) -> dict[str, Any]:
                threads = max(1, (cpus - 2) // workers) if cuda else 1
                spec = EncoderSpec(name=name, whisper_input=mode or "full", device=args.device)
                opts = RayOptions(workers=workers, gpus_per_worker=1 / workers if cuda else 0.0,
                                  threads_per_worker=threads)
                t0 = time.perf_counter()
                with RayRunner(spec, opts) as runner:
                    startup = time.perf_counter() - t0
                    result = run_extraction(part, runner, FeatureStore(Path(args.work) / f"store-ray{workers}.zarr"),
                                            options=options_for(args))
                    stats = runner.stats
                return {"actors_per_gpu" if cuda else "actors": workers, "threads_per_actor": threads,
                        "startup_s": startup, "wall_s": result.wall_seconds, "utt_per_s": result.utterances_per_second,
                        "audio_s_per_s": result.audio_seconds / result.wall_seconds,
                        "worker_compute_s": stats.compute_seconds}
            run_step(record, f"actors_{workers}", one, clock=clock, needs_s=20, save=save)
        one_, two = record.get("actors_1", {}), record.get("actors_2", {})
        if one_.get("status") == two.get("status") == "ok":
            record["two_vs_one"] = two["utt_per_s"] / one_["utt_per_s"]
    finally:
        if started:
            import ray

            ray.shutdown()
    record.setdefault("status", "ok")
    save()


# --------------------------------------------------------------------------- driver

def environment(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    import transformers

    env: dict[str, Any] = {"python": sys.version.split()[0], "torch": torch.__version__,
                           "transformers": transformers.__version__, "cpus": os.cpu_count(), "device": args.device}
    if args.device.startswith("cuda"):
        props = torch.cuda.get_device_properties(0)
        env.update(gpu=torch.cuda.get_device_name(), gpu_memory_gb=props.total_memory / 2**30,
                   capability=f"{props.major}.{props.minor}", cuda=torch.version.cuda,
                   sdpa={"flash": torch.backends.cuda.flash_sdp_enabled(),
                         "mem_efficient": torch.backends.cuda.mem_efficient_sdp_enabled(),
                         "math": torch.backends.cuda.math_sdp_enabled(),
                         "cudnn": getattr(torch.backends.cuda, "cudnn_sdp_enabled", lambda: None)()},
                   tf32_matmul=torch.backends.cuda.matmul.allow_tf32)
    peak, source = bf16_peak_tflops(args.peak_tflops)
    env.update(bf16_peak_tflops=peak, peak_source=source)
    return env


def default_models(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """(models to run, notes on what was left out)."""
    if args.models:
        return args.models.split(","), []
    if args.tiny:
        return ["tiny-xlsr", "tiny-wav2vec2", "tiny-whisper"], ["tiny models stand in for the real architectures"]
    whisper = Path(args.shared) / WHISPER_DIR
    models = ["xlsr-random", "wav2vec2-random"]
    notes = ["mms-300m has XLSR-53's architecture (24x1024): the xlsr-random figures are its figures"]
    if whisper.is_dir():
        models += [str(whisper), f"{whisper}@trim"]
    else:
        notes.append(f"real Whisper-base not at hand ({whisper} missing): give --shared")
    return models, notes


def model_key(spec: str) -> str:
    """A model's key in the figures: its name or folder name, ``@trim`` kept."""
    name, _, mode = spec.partition("@")
    return Path(name).name + (f"@{mode}" if mode else "")


def run_section(name: str, args: argparse.Namespace, cap_s: float, manifest: Any) -> dict[str, Any]:
    """Run one section (model:<spec> or ray) in this process or, with --isolate, in a child process
    limited to ``cap_s`` seconds whose partial figures survive a crash or a timeout."""
    deadline = time.time() + cap_s
    if not args.isolate:
        record: dict[str, Any] = {}
        _section_body(name, args, Clock(deadline), record, manifest, lambda: None)
        if args.device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()
        return record
    out = Path(args.work) / f"section-{name.replace('/', '_').replace(':', '-').replace('@', '-')}.json"
    out.unlink(missing_ok=True)
    cmd = [sys.executable, __file__, *sys.argv[1:], "--section", name, "--section-out", str(out),
           "--deadline", str(deadline), "--out", ""]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=max(1.0, cap_s + 10))
        status = "ok" if done.returncode == 0 else f"child exited {done.returncode}"
        tail = done.stderr[-2000:]
    except subprocess.TimeoutExpired:
        status, tail = f"timed out after {cap_s:.0f} s (its finished steps are kept)", ""
    record = json.loads(out.read_text()) if out.exists() else {}
    if status != "ok":
        record["child"] = {"status": status, "stderr_tail": tail}
    return record


def _section_body(name: str, args: argparse.Namespace, clock: Clock, record: dict[str, Any], manifest: Any,
                  save: Callable[[], None]) -> None:
    if name.startswith("model:"):
        model_section(name.removeprefix("model:"), manifest, args, clock, record, save)
    elif name == "ray":
        ray_section(manifest, args, clock, record, save)
    else:
        raise ValueError(f"unknown section {name!r}")


def section_child(args: argparse.Namespace) -> None:
    """--section: one section in this (child) process, its record rewritten to --section-out after every step."""
    out = Path(args.section_out)
    record: dict[str, Any] = {}
    manifest = build_corpus(Path(args.work), args.utts, args.tiny, args.seed)
    try:
        _section_body(args.section, args, Clock(args.deadline), record, manifest, lambda: write_json(out, record))
    except Exception as exc:
        record["failed"] = f"{type(exc).__name__}: {exc}"
        record["traceback"] = traceback.format_exc()[-3000:]
    write_json(out, record)


def check_targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target: the figure, met or not, and the part that limits it when missed."""
    rows = []
    for key, model in report["models"].items():
        same, fwd, batched = model.get("batched_same", {}), model.get("forward", {}), model.get("batched", {})
        naive = model.get("naive", {})
        if same.get("status") == "ok":
            met = same["speedup"] >= TARGETS["speedup"]
            limit = None if met else (f"batched run: {_largest(batched)}; naive per utterance "
                                      f"{1e3 * naive['compute_s'] / naive['utts']:.1f} ms compute, "
                                      f"{1e3 * naive['decode_s'] / naive['utts']:.1f} ms decode")
            rows.append({"target": f"{key}: batched >= {TARGETS['speedup']:g}x naive", "value": same["speedup"],
                         "met": met, "limit": limit})
            rows.append({"target": f"{key}: pooled cosine bf16 vs fp32 >= {MIN_COSINE}",
                         "value": same["agreement"]["min_cosine"], "met": same["agreement"]["ok"],
                         "limit": None if same["agreement"]["ok"] else same["agreement"]})
        if model.get("load", {}).get("arch") == "24x1024" and fwd.get("status") == "ok" and fwd.get("mfu") is not None:
            met = fwd["mfu"] >= TARGETS["xlsr_mfu"]
            top = ", ".join(f"{o['op']} {100 * o['share']:.0f}%" for o in fwd["top_ops"][:3])
            busy = fwd.get("device_busy_share")
            limit = None if met else (f"device busy {100 * busy:.0f}% of the forward (the rest is launch/host); "
                                      f"top ops: {top}" if busy is not None else f"top ops: {top}")
            rows.append({"target": f"{key}: forward >= {100 * TARGETS['xlsr_mfu']:.0f}% of bf16 peak",
                         "value": fwd["mfu"], "met": met, "limit": limit})
        if batched.get("status") == "ok":
            met = batched["gpu_idle_share"] < TARGETS["gpu_idle_share"]
            rows.append({"target": f"{key}: GPU idle < {100 * TARGETS['gpu_idle_share']:.0f}% of the run",
                         "value": batched["gpu_idle_share"], "met": met,
                         "limit": None if met else _largest(batched, idle_only=True)})
    return rows


def _largest(batched: dict[str, Any], idle_only: bool = False) -> str:
    """The part of a batched run's wall that limits it (of the GPU's idle parts only, with ``idle_only``)."""
    if batched.get("status") != "ok":
        return "n/a"
    parts = {k: batched[k] for k in ("decode_wait_s", "compute_s", "store_s", "other_s")}
    name = max((k for k in parts if not (idle_only and k == "compute_s")), key=parts.get)
    return f"{name.removesuffix('_s')} takes {100 * parts[name] / batched['wall_s']:.0f}% of the wall " + \
        "(" + ", ".join(f"{k.removesuffix('_s')} {v:.1f} s" for k, v in parts.items()) + ")"


def print_table(report: dict[str, Any]) -> None:
    def fmt(value: Any, spec: str) -> str:
        return format(value, spec) if isinstance(value, (int, float)) and not isinstance(value, bool) else "-"

    head = (f"{'model':<28} {'arch':>7} {'utt/s':>8} {'aud-s/s':>9} {'RTF':>8} {'naive':>7} {'x':>6} {'peakMB':>8} "
            f"{'TFLOP/s':>8} {'MFU':>6} {'idle%':>6} {'limit':>7} {'min cos':>8}")
    print(head)
    print("-" * len(head))
    for key, m in report["models"].items():
        b, s, f, n = (m.get(k, {}) for k in ("batched", "batched_same", "forward", "naive"))
        print(f"{key[-28:]:<28} {m.get('load', {}).get('arch', '-'):>7} {fmt(b.get('utt_per_s'), '8.1f')} "
              f"{fmt(b.get('audio_s_per_s'), '9.1f')} {fmt(b.get('rtf'), '8.5f')} {fmt(n.get('utt_per_s'), '7.1f')} "
              f"{fmt(s.get('speedup'), '6.1f')} {fmt(b.get('peak_gpu_mb'), '8.0f')} {fmt(f.get('tflops'), '8.2f')} "
              f"{fmt(f.get('mfu'), '6.1%')} {fmt(100 * b['gpu_idle_share'] if 'gpu_idle_share' in b else None, '6.1f')} "
              f"{b.get('idle_limit', '-'):>7} {fmt(s.get('agreement', {}).get('min_cosine'), '8.5f')}")
        failed = [f"{k}: {v.get('error') or v.get('reason')}" for k, v in m.items()
                  if isinstance(v, dict) and v.get("status") in ("failed", "skipped")]
        for line in failed:
            print(f"    {line[:200]}")
    ray = report.get("ray", {})
    if ray:
        if ray.get("status") == "skipped":
            print(f"ray: skipped ({ray.get('reason')})")
        for k in ("actors_1", "actors_2"):
            r = ray.get(k, {})
            print(f"ray {k}: " + (f"{r['utt_per_s']:.1f} utt/s, startup {r['startup_s']:.1f} s" if r.get("status") == "ok"
                                  else f"{r.get('status', '-')} {r.get('error') or r.get('reason') or ''}"))
        if "two_vs_one" in ray:
            print(f"ray 2 vs 1 actors: x{ray['two_vs_one']:.2f}")
    for t in report["targets"]:
        limit = f"  limit: {t['limit']}" if t["limit"] else ""
        print(f"[{'met' if t['met'] else 'MISSED'}] {t['target']}: {t['value']:.4g}{limit}")
    for s in report["skipped"]:
        print(f"skipped: {s}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    parser.add_argument("--tiny", action="store_true", help="tiny corpus and models: the whole script in < 1 min on CPU")
    parser.add_argument("--out", default=None, help="JSON figures (rewritten after every section)")
    parser.add_argument("--budget-s", type=float, default=480.0, help="total time; sections that do not fit are skipped")
    parser.add_argument("--work", default=None, help="corpus and stores (default: a temporary folder)")
    parser.add_argument("--shared", default=os.environ.get("FS_SHARED", str(ROOT.parent / "shared")))
    parser.add_argument("--models", default=None, help="comma-separated names (NAME@trim: Whisper trim)")
    parser.add_argument("--utts", type=int, default=None, help="corpus size (default 2000; tiny 24)")
    parser.add_argument("--naive-utts", type=int, default=None, help="naive loop's subset (default 1000; tiny 8)")
    parser.add_argument("--naive-s", type=float, default=30.0, help="at most this long per naive loop")
    parser.add_argument("--batch-size", type=int, default=None, help="default 64 on GPU, 8 on CPU")
    parser.add_argument("--batch-seconds", type=float, default=None, help="default 480 on GPU, 240 on CPU")
    parser.add_argument("--workers", type=int, default=None, help="decoding processes (default: CPUs - 2, at most 8)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="the GPU's dense bf16 peak, if not in the table")
    parser.add_argument("--ray-model", default=None, help="default xlsr-random (tiny: tiny-wav2vec2)")
    parser.add_argument("--ray-utts", type=int, default=None, help="default 400 (tiny: all)")
    parser.add_argument("--no-ray", action="store_true")
    parser.add_argument("--compare-sequential", action=argparse.BooleanOptionalAction, default=True,
                        help="also time the extraction without computing ahead (where it is on: cuda)")
    parser.add_argument("--isolate", action=argparse.BooleanOptionalAction, default=None,
                        help="each model / Ray section in its own process (default: on for cuda)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--section", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--section-out", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--deadline", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    cuda = args.device.startswith("cuda")
    cpus = os.cpu_count() or 2
    defaults = {"utts": 24 if args.tiny else 2000, "naive_utts": 8 if args.tiny else 1000,
                "batch_size": 64 if cuda else 8, "batch_seconds": 480.0 if cuda else 240.0,
                "workers": 1 if args.tiny else max(1, min(8, cpus - 2)), "isolate": cuda,
                "ray_model": "tiny-wav2vec2" if args.tiny else "xlsr-random", "ray_utts": 10**9 if args.tiny else 400}
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.section:
        section_child(args)
        return 0
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"error: --device {args.device}: no CUDA device here; run on a GPU machine or pass --device cpu",
              file=sys.stderr)
        return 2
    started = time.time()
    clock = Clock(started + args.budget_s)
    args.work = args.work or tempfile.mkdtemp(prefix="fs-bench-gpu-")
    out = Path(args.out) if args.out else None
    models, notes = default_models(args)
    report: dict[str, Any] = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "budget_s": args.budget_s,
                              "options": {k: v for k, v in vars(args).items() if not k.startswith("section")},
                              "targets_wanted": TARGETS, "notes": notes, "models": {}, "skipped": [], "targets": []}

    def save() -> None:
        report["elapsed_s"] = time.time() - started
        write_json(out, report)

    run_step(report, "environment", lambda: environment(args), clock=clock, save=save)
    holder: dict[str, Any] = {}

    def corpus() -> dict[str, Any]:
        holder["manifest"] = m = build_corpus(Path(args.work), args.utts, args.tiny, args.seed)
        d = np.array(m.column("duration"))
        return {"name": m.name, "utts": len(d), "audio_s": float(d.sum()), "work": args.work,
                "seconds_p50_p90_p99_max": [float(np.percentile(d, q)) for q in (50, 90, 99, 100)],
                "share_48k_stereo": 0.3}

    run_step(report, "corpus", corpus, clock=clock, save=save)
    sections = [f"model:{m}" for m in models] + ([] if args.no_ray else ["ray"])
    if args.no_ray:
        report["skipped"].append("ray: --no-ray")
    for i, name in enumerate(sections):
        left = clock.left() - 5
        if left < 20 or "manifest" not in holder:
            why = "time budget" if left < 20 else f"no corpus (corpus {report['corpus']['status']})"
            report["skipped"].append(f"{name}: {why} ({clock.left():.0f} s left)")
            save()
            continue
        cap = max(20.0, min(left, 1.6 * left / (len(sections) - i)))
        began = time.perf_counter()
        try:
            record = run_section(name, args, cap, holder["manifest"])
        except Exception as exc:  # the driver records and goes on
            record = {"failed": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-3000:]}
        record["wall_s"] = time.perf_counter() - began
        if name == "ray":
            report["ray"] = record
        else:
            report["models"][model_key(name.removeprefix("model:"))] = record
        save()
        print(f"{name}: done in {record['wall_s']:.0f} s", file=sys.stderr, flush=True)
    report["targets"] = check_targets(report)
    save()
    print_table(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
