"""Training throughput of the fine-tuning methods on one synthetic corpus, in one run.

    python bench/bench_finetune.py                      # CPU, ~2-4 min on 2 cores
    python bench/bench_finetune.py --size base --device cuda --utts 64

Methods (same utterances, same labels, the study's head on top of every encoder method):
  head       MLP head on stored pooled features (layer L)
  cnn-lstm   CNN-LSTM on stored log-mel frames
  full/all   LoRA from waveforms, adapters on every layer (the usual recipe)
  full/k     LoRA from waveforms, adapters on layers k+1..L only
  top/k      LoRA from cached layer-k frames, adapters on layers k+1..L (same trainable layers as full/k)

Throughput is utterances per second of training (forward, backward, Adam step): wall clock of the
last epoch (the first may pay one-off costs), and over process CPU time for the whole fit (what to
read on a shared machine; CPU only). Extraction of pooled features, log-mel and layer-k
frames is timed separately: it is paid once per corpus, then any number of runs reuse it.
The encoder is a 12-layer wav2vec2 with random weights; ``--size small`` (default, CPU) is
256-wide with a 128-channel CNN front end, ``--size base`` is wav2vec2-base (768, 512 channels).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from transformers import Wav2Vec2Config

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from classifiers.learners.cnn_lstm import CNNLSTMClassifier
from classifiers.learners.heads import MLPHead
from classifiers.learners.lora import LoRAFineTuner, TopLayerLoRA
from featurestore.encoders import hf_wav2vec2, load_encoder
from featurestore.encoders.common import LoadOptions
from featurestore.pooling import masked_mean

SR = 16000
SIZES = {
    "small": dict(hidden_size=256, num_attention_heads=4, intermediate_size=1024, conv_dim=(128,) * 7),
    "base": {},
}


def corpus(n: int, low: float, high: float, seed: int = 0) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """``n`` tone-in-noise utterances of ``low``-``high`` s, 4 classes, 4 speakers."""
    rng = np.random.default_rng(seed)
    waves, y, groups = [], [], []
    for i in range(n):
        t = np.arange(int(rng.uniform(low, high) * SR)) / SR
        freq = (200, 600, 1500, 3500)[i % 4]
        w = 0.05 * rng.standard_normal(t.size) + 0.3 * np.sin(2 * np.pi * freq * t)
        waves.append(w.astype(np.float32))
        y.append(f"c{i % 4}")
        groups.append(f"spk{i % 4}")
    return waves, np.array(y), np.array(groups)


def encoder(size: str, layers: int, device: str):
    config = Wav2Vec2Config(num_hidden_layers=layers, feat_extract_norm="group", do_stable_layer_norm=False,
                            **SIZES[size])
    opts = LoadOptions(name=f"bench-{size}", device=torch.device(device), defaults={"do_normalize": True})
    return hf_wav2vec2.from_config(config, opts, f"builtin:bench-{size}")


def extract(enc, waves: list[np.ndarray], layers: list[int], batch: int) -> tuple[np.ndarray, dict, float]:
    """(pooled layer L (n, D), {k: fp16 frames of layer k}, seconds): what the store would hold."""
    start = time.perf_counter()
    pooled, frames = [], {k: [] for k in layers}
    for i in range(0, len(waves), batch):
        states = enc.embed(waves[i:i + batch])
        pooled.append(masked_mean(states.hidden[-1], states.lengths).cpu().numpy())
        for k in layers:
            frames[k] += [states.hidden[k, b, :n].half().cpu().numpy() for b, n in enumerate(states.lengths.tolist())]
    return np.concatenate(pooled), frames, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--skip", default="3,6,9", help="cached layers k to compare (comma-separated)")
    parser.add_argument("--utts", type=int, default=16)
    parser.add_argument("--min-seconds", type=float, default=2.0)
    parser.add_argument("--max-seconds", type=float, default=4.0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    skips = [int(k) for k in args.skip.split(",")]
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, device {args.device}, threads {torch.get_num_threads()} "
          f"(OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')})")
    waves, y, groups = corpus(args.utts, args.min_seconds, args.max_seconds)
    enc = encoder(args.size, args.layers, args.device)
    L = enc.info.num_layers - 1
    print(f"encoder: wav2vec2 {args.size}, {L} layers x {enc.info.dim}; {args.utts} utterances of "
          f"{args.min_seconds}-{args.max_seconds} s ({sum(map(len, waves)) / SR:.0f} s audio); "
          f"batch {args.batch_size}, {args.epochs} epochs, rate from the last epoch")
    pooled, frames, seconds = extract(enc, waves, skips, args.batch_size)
    logmel_enc = load_encoder("logmel", device=args.device)
    start = time.perf_counter()
    logmel = []
    for i in range(0, len(waves), args.batch_size):
        st = logmel_enc.embed(waves[i:i + args.batch_size])
        logmel += [st.hidden[0, b, :n].cpu().numpy() for b, n in enumerate(st.lengths.tolist())]
    print(f"one-off extraction: encoder (pooled + frames of layers {skips}) {args.utts / seconds:.1f} utt/s, "
          f"log-mel {args.utts / (time.perf_counter() - start):.0f} utt/s")

    common = dict(epochs=args.epochs, batch_size=args.batch_size, dev_fraction=0.0)
    wall: dict[str, float] = {}
    cpu: dict[str, float] = {}

    def run(name: str, fit: Callable[[], list[dict]]) -> None:
        start, cpu_start = time.perf_counter(), time.process_time()
        history = fit()
        cpu_s = time.process_time() - cpu_start
        wall[name] = float(history[-1]["train_utts_per_s"])
        cpu[name] = args.utts * args.epochs / cpu_s if args.device == "cpu" else float("nan")
        print(f"  {name:<10} {wall[name]:10.2f} {cpu[name]:10.2f}   ({time.perf_counter() - start:.1f} s)", flush=True)

    print("training throughput, utt/s (wall: last epoch; cpu: whole fit over process CPU time, robust to a "
          "busy machine):")
    print(f"  {'method':<10} {'wall':>10} {'cpu':>10}")
    run("head", lambda: MLPHead(epochs=args.epochs, batch_size=args.batch_size, dev_fraction=0.0,
                                device=args.device).fit(pooled, y).history_["epochs"])
    run("cnn-lstm", lambda: CNNLSTMClassifier(device=args.device, **common).fit(logmel, y).history_)
    run("full/all", lambda: LoRAFineTuner(enc, **common).fit(waves, y).history_)
    for k in skips:
        run(f"full/{k}", lambda k=k: LoRAFineTuner(enc, lora_layers=range(k + 1, L + 1), **common)
            .fit(waves, y).history_)
        run(f"top/{k}", lambda k=k: TopLayerLoRA(enc, from_layer=k, **common).fit(frames[k], y).history_)
    print("top-layer LoRA from cached frames / full LoRA from waveforms (ratio of utt/s, wall | cpu):")
    print(f"  {'cached k':>8} {'skipped':>8} {'vs same layers':>18} {'vs all layers':>18}")
    for k in skips:
        same = [d[f"top/{k}"] / d[f"full/{k}"] for d in (wall, cpu)]
        every = [d[f"top/{k}"] / d["full/all"] for d in (wall, cpu)]
        print(f"  {k:>8} {f'{k}/{L}':>8} {same[0]:>8.2f}x |{same[1]:>6.2f}x {every[0]:>8.2f}x |{every[1]:>6.2f}x")

if __name__ == "__main__":
    main()
