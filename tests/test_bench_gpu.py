"""bench/bench_gpu.py runs end to end on CPU (so it cannot rot before its GPU run), and the CUDA paths
it exercises that CPU runs never did: out-of-memory halving, fp32 pooling under autocast."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from data_manifests.manifest import Manifest, build_manifest
from data_manifests.synth import generate_corpus
from featurestore.encoders import load_encoder
from featurestore.encoders.base import LayerStates
from featurestore.errors import Interrupted
from featurestore.extract import ExtractError, ExtractOptions, LocalRunner, extract, pool_states, run_extraction
from featurestore.store import STATUS_STORED, FeatureStore

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench" / "bench_gpu.py"


def run_bench(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    out = tmp_path / "bench.json"
    done = subprocess.run([sys.executable, str(BENCH), "--device", "cpu", "--tiny", "--out", str(out),
                           "--work", str(tmp_path / "work"), *args], capture_output=True, text=True, timeout=600,
                          cwd=ROOT)
    return done, (json.loads(out.read_text()) if out.exists() else {})


@pytest.mark.slow
def test_tiny_run_measures_every_section(tmp_path: Path) -> None:
    done, report = run_bench(tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert report["corpus"]["status"] == "ok" and report["corpus"]["utts"] == 24
    assert set(report["models"]) == {"tiny-xlsr", "tiny-wav2vec2", "tiny-whisper"}
    for name, model in report["models"].items():
        for step in ("load", "batched", "forward", "naive", "batched_same"):
            assert model[step]["status"] == "ok", (name, step, model[step])
        batched = model["batched"]
        assert batched["utts"] == 24 and batched["audio_s_per_s"] > 0 and batched["oom_halvings"] == 0
        parts = batched["decode_wait_s"] + batched["compute_s"] + batched["store_s"] + batched["other_s"]
        assert parts == pytest.approx(batched["wall_s"], rel=1e-6)
        assert model["forward"]["flops"] > 0 and model["forward"]["top_ops"]
        same = model["batched_same"]
        assert same["utts"] == model["naive"]["utts"] > 0 and same["speedup"] > 0
        assert same["agreement"]["ok"] and same["agreement"]["min_cosine"] >= 0.999  # CPU: both fp32
    assert report["ray"]["status"] in ("ok", "skipped")
    if report["ray"]["status"] == "ok":
        assert report["ray"]["actors_1"]["status"] == report["ray"]["actors_2"]["status"] == "ok"
    assert any("pooled cosine" in t["target"] for t in report["targets"])
    assert "utt/s" in done.stdout and "tiny-xlsr" in done.stdout


@pytest.mark.slow
def test_failures_are_recorded_and_the_run_goes_on(tmp_path: Path) -> None:
    done, report = run_bench(tmp_path, "--models", "no-such-model,tiny-xlsr", "--no-ray", "--isolate")
    assert done.returncode == 0, done.stderr[-3000:]
    assert report["models"]["no-such-model"]["load"]["status"] == "failed"
    assert "unknown encoder" in report["models"]["no-such-model"]["load"]["error"]
    assert report["models"]["tiny-xlsr"]["batched_same"]["status"] == "ok"  # ran in its own process
    assert "ray: --no-ray" in report["skipped"]


@pytest.mark.slow
def test_budget_skips_sections_and_says_so(tmp_path: Path) -> None:
    done, report = run_bench(tmp_path, "--budget-s", "1", "--models", "tiny-xlsr")
    assert done.returncode == 0, done.stderr[-3000:]
    assert report["models"] == {} and "ray" not in report
    assert report["corpus"]["status"] in ("ok", "skipped")  # skipped once the second is spent
    assert any(s.startswith("model:tiny-xlsr: ") for s in report["skipped"])
    assert any(s.startswith("ray: ") for s in report["skipped"])
    assert "skipped: model:tiny-xlsr" in done.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_is_a_clear_error(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(BENCH), "--device", "cuda", "--out", str(tmp_path / "b.json")],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 2
    assert done.stderr.strip().startswith("error: --device cuda: no CUDA device") and "--device cpu" in done.stderr
    assert not (tmp_path / "b.json").exists()


# --- out-of-memory halving ---------------------------------------------------------------------------

class OneAtATime:
    """An encoder embedding each utterance alone (values independent of batching) that raises
    torch.OutOfMemoryError, as CUDA does, for forward passes of more than ``limit`` utterances."""

    def __init__(self, limit: int | None):
        self.inner = load_encoder("tiny-wav2vec2")
        self.info, self.device, self.limit = self.inner.info, self.inner.device, limit
        self.passes: list[tuple[int, bool]] = []  # (utterances, ran out of memory)

    def embed(self, waves: list[np.ndarray]) -> LayerStates:
        out_of_memory = self.limit is not None and len(waves) > self.limit
        self.passes.append((len(waves), out_of_memory))
        if out_of_memory:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (fake)")
        states = [self.inner.embed([w]) for w in waves]
        longest = max(s.hidden.shape[2] for s in states)
        hidden = torch.cat([torch.nn.functional.pad(s.hidden, (0, 0, 0, longest - s.hidden.shape[2])) for s in states], 1)
        return LayerStates(hidden=hidden, lengths=torch.cat([s.lengths for s in states]))

    def num_frames(self, num_samples: int) -> int:
        return self.inner.num_frames(num_samples)


@pytest.fixture(scope="module")
def urdu(tmp_path_factory: pytest.TempPathFactory) -> Manifest:
    root = generate_corpus("urdu", tmp_path_factory.mktemp("urdu"), size="tiny")
    return build_manifest("urdu", "urdu", root)


def stored(store: FeatureStore, key) -> tuple[np.ndarray, ...]:
    """utt ids, means, stds (n, L, D) and, when stored, layer 1's frames of a group."""
    group = store.open(key)
    frames = group.frames(layer=1)[1] if 1 in group.frame_layers else []
    return group.utt_ids(), group.pooled(stat="mean")[1], group.pooled(stat="std")[1], frames


def test_out_of_memory_halves_the_batch_and_equals_a_normal_run(tmp_path: Path, urdu: Manifest) -> None:
    options = ExtractOptions(batch_size=8, progress=False, frame_layers=(1,))
    normal = FeatureStore(tmp_path / "normal.zarr")
    reference = extract(urdu, OneAtATime(None), normal, options=options)
    encoder = OneAtATime(limit=2)
    store = FeatureStore(tmp_path / "oom.zarr")
    result = extract(urdu, encoder, store, options=options)
    assert reference.oom_halvings == 0 and reference.oom_batch_seconds is None
    assert result.oom_halvings >= 2 and result.oom_batch_seconds is not None  # 8 -> 4 -> 2
    assert result.processed == reference.processed == len(urdu.rows)
    assert all(n <= 2 for n, failed in encoder.passes if not failed)
    assert encoder.passes[:3] == [(8, True), (4, True), (2, False)]
    # the halved budget is kept: later batches are not tried whole again
    assert sum(failed for _, failed in encoder.passes) == result.oom_halvings
    a, b = stored(normal, reference.key), stored(store, result.key)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_array_equal(a[2], b[2])
    for x, y in zip(a[3], b[3]):
        np.testing.assert_array_equal(x, y)


def test_one_utterance_too_large_is_a_clear_error(tmp_path: Path, urdu: Manifest) -> None:
    with pytest.raises(ExtractError, match="does not fit in the device's memory.*--chunk-seconds"):
        extract(urdu, OneAtATime(limit=0), FeatureStore(tmp_path / "s.zarr"),
                options=ExtractOptions(batch_size=4, progress=False))


def test_pooling_is_fp32_under_autocast() -> None:
    hidden = torch.randn(3, 2, 50, 16).to(torch.bfloat16)
    lengths = torch.tensor([50, 17])
    expected = pool_states(hidden.float(), lengths)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mean, std = pool_states(hidden, lengths)
    assert mean.dtype == std.dtype == np.float32
    np.testing.assert_array_equal(mean, expected[0])
    np.testing.assert_array_equal(std, expected[1])


# --- computing the next block while the store writes the last ------------------------------------------

class InterruptAt(OneAtATime):
    """Ctrl-C arriving during forward pass number ``at`` (counted from 0)."""

    def __init__(self, at: int):
        super().__init__(None)
        self.at = at

    def embed(self, waves: list[np.ndarray]) -> LayerStates:
        if len(self.passes) == self.at:
            self.passes.append((len(waves), False))
            raise KeyboardInterrupt
        return super().embed(waves)


def test_compute_ahead_stores_the_same_values(tmp_path: Path, urdu: Manifest) -> None:
    options = ExtractOptions(batch_size=2, commit_rows=2, progress=False, frame_layers=(1,))
    encoder = OneAtATime(None)
    sequential = extract(urdu, encoder, FeatureStore(tmp_path / "seq.zarr"), options=options)
    runner = LocalRunner(encoder, compute_ahead=True)
    ahead = run_extraction(urdu, runner, FeatureStore(tmp_path / "ahead.zarr"), options=options)
    assert ahead.processed == sequential.processed == len(urdu.rows)
    assert runner.times.compute_s > 0 and runner.times.decode_wait_s > 0
    a, b = stored(FeatureStore(tmp_path / "seq.zarr"), sequential.key), stored(FeatureStore(tmp_path / "ahead.zarr"), ahead.key)
    for x, y in zip(a[:3], b[:3]):
        np.testing.assert_array_equal(x, y)
    for x, y in zip(a[3], b[3]):
        np.testing.assert_array_equal(x, y)


def test_compute_ahead_interrupted_keeps_earlier_batches_and_resumes(tmp_path: Path, urdu: Manifest) -> None:
    options = ExtractOptions(batch_size=2, commit_rows=2, progress=False)
    store = FeatureStore(tmp_path / "s.zarr")
    with pytest.raises(Interrupted, match="Ctrl-C"):
        run_extraction(urdu, LocalRunner(InterruptAt(3), compute_ahead=True), store, options=options)
    key = store.resolve(urdu.name, "tiny-wav2vec2")
    kept = int((store.open(key, mode="a").status() == STATUS_STORED).sum())
    assert kept == 6  # the three batches computed before the interrupt
    resumed = run_extraction(urdu, LocalRunner(OneAtATime(None), compute_ahead=True), store, options=options)
    assert resumed.resumed and resumed.processed == len(urdu.rows) - kept
    reference = extract(urdu, OneAtATime(None), FeatureStore(tmp_path / "ref.zarr"), options=options)
    a, b = stored(FeatureStore(tmp_path / "ref.zarr"), reference.key)[:3], stored(store, key)[:3]
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
