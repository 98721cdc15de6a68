"""The extraction loop: manifest + encoder (+ noise) → one store group, batched and resumable.

Utterances are sorted by duration (longest first) into a fixed plan of batches; rows are
stored in plan order and each batch is committed after its data, so a killed run resumes at
the first uncommitted batch and yields the same values as an uninterrupted one.
"""

from __future__ import annotations

import errno
import hashlib
import json
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from data_manifests.manifest import Manifest
from featurestore import __version__
from featurestore.audio import AudioError, load_audio
from featurestore.encoders.base import Encoder, EncoderInfo
from featurestore.noise import NoiseBank, NoiseError, NoiseSpec, condition_key
from featurestore.store import (ROW_CHUNK, STATUS_SKIPPED, STATUS_STORED, FeatureStore, StoreGroup, StoreKey,

from featurestore.errors import FsError
                                slug)

AUDIO_PIPELINE = {"decoder": "soundfile", "mono": "mean of channels", "resampler": "soxr HQ"}
POOLING = {"stats": ["mean", "std"], "over": "real frames", "std_ddof": 0}
MAX_PENDING_FRAME_BYTES = 256 * 2**20


class ExtractError(FsError, RuntimeError):
    """Extraction cannot go on; the message says why and how to fix it. Committed work is kept."""


@dataclass(frozen=True)
class ExtractOptions:
    """How to run an extraction (none of these change the stored values, except ``frame_layers``)."""

    batch_size: int = 8
    frame_layers: tuple[int, ...] = ()
    on_bad_audio: str = "fail"  # "fail" or "skip" (skipped rows are recorded with their reason)
    commit_rows: int = ROW_CHUNK  # rows buffered per commit: fewer writes; at most this much redone after a kill
    num_workers: int = 0
    overwrite: bool = False
    progress: bool = True


@dataclass
class ExtractResult:
    """What one call did, with throughput figures."""

    key: StoreKey
    processed: int = 0
    skipped: dict[str, str] = field(default_factory=dict)
    already_done: bool = False
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0
    peak_rss_mb: float = 0.0
    peak_gpu_mb: float = 0.0

    @property
    def utterances_per_second(self) -> float:
        return self.processed / self.wall_seconds if self.wall_seconds > 0 else 0.0

    @property
    def real_time_factor(self) -> float:
        return self.wall_seconds / self.audio_seconds if self.audio_seconds > 0 else 0.0


def model_key(info: EncoderInfo) -> str:
    """Store key of a model: a readable name plus a hash of family, weights and settings.

    The hash leaves out where the weights were loaded from, so a moved or copied model keeps its key.
    """
    name = Path(info.name).name if ("/" in info.name or Path(info.name).exists()) else info.name
    payload = json.dumps({"family": info.family, "weights": info.weights_hash, "settings": info.settings},
                         sort_keys=True, default=str)
    return f"{slug(name)}-{hashlib.sha256(payload.encode()).hexdigest()[:10]}"


def plan_order(manifest: Manifest) -> list[int]:
    """Row indices sorted longest first (ties by utterance id): the store's row order."""
    return sorted(range(len(manifest.rows)), key=lambda i: (-manifest.rows[i]["duration"], manifest.rows[i]["utt_id"]))


class _UtteranceAudio(Dataset):
    """Decode, downmix, resample and (optionally) mix noise; runs in DataLoader workers."""

    def __init__(self, rows: list[dict[str, Any]], sample_rate: int, noise: NoiseBank | None):
        self.rows, self.sample_rate, self.noise = rows, sample_rate, noise

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[int, np.ndarray | None, str, dict[str, Any]]:
        row = self.rows[i]
        try:
            wave, _ = load_audio(row["path"], self.sample_rate)
            mix: dict[str, Any] = {}
            if self.noise is not None:
                wave, mix = self.noise.mix(wave, row["utt_id"])
            return i, wave, "", mix
        except (AudioError, NoiseError) as exc:
            return i, None, str(exc), {}


def _collate(items: list) -> list:
    return items


def pool_states(hidden: torch.Tensor, lengths: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std over each utterance's real frames: (L,B,T,D) → two (B,L,D) float32 arrays."""
    steps = torch.arange(hidden.shape[2], device=hidden.device)
    mask = (steps[None, :] < lengths.to(hidden.device)[:, None]).to(hidden.dtype)[None, :, :, None]
    count = lengths.to(hidden.device).clamp(min=1).to(hidden.dtype)[None, :, None]
    mean = (hidden * mask).sum(2) / count
    var = (((hidden - mean[:, :, None]) * mask) ** 2).sum(2) / count
    std = var.clamp_min(0).sqrt()
    return mean.transpose(0, 1).float().cpu().numpy(), std.transpose(0, 1).float().cpu().numpy()


def _provenance(manifest: Manifest, info: EncoderInfo, noise: NoiseBank | None, cond: str,
                batch_size: int, device: str) -> dict[str, Any]:
    return {
        "corpus": {"name": manifest.name, "layout": manifest.layout, "root": manifest.root,
                   "manifest_digest": manifest.digest(), "label_map": manifest.label_map_name,
                   "utterances": len(manifest.rows)},
        "condition": {"key": cond, "noise": noise.describe() if noise is not None else None},
        "model": {k: v for k, v in info.__dict__.items()},
        "sample_rate": info.sample_rate,
        "audio": AUDIO_PIPELINE,
        "pooling": POOLING,
        "plan": {"order": "duration descending, then utt_id", "batch_size": batch_size},
        "device": device,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": sys.version.split()[0], "torch": torch.__version__,
    }


def _open_group(store: FeatureStore, key: StoreKey, manifest: Manifest, info: EncoderInfo,
                noise: NoiseBank | None, options: ExtractOptions, device: str) -> tuple[StoreGroup, bool]:
    """Open the group to resume, or create it; returns (group, already_complete)."""
    if store.has(key) and not options.overwrite:
        group = store.open(key, mode="a")
        attrs = group.attrs
        if attrs["corpus"]["manifest_digest"] != manifest.digest():
            raise ExtractError(f"{key} was extracted from a different version of corpus {manifest.name!r} "
                               "(its manifest changed since); re-run with --overwrite to re-extract it")
        missing = sorted(set(options.frame_layers) - set(group.frame_layers))
        if group.is_complete:
            if missing:
                raise ExtractError(f"{key} is complete but has no frame-level states for layers {missing} "
                                   f"(stored: {group.frame_layers}); re-run with --overwrite to add them")
            return group, True
        if attrs.get("fs_version") != __version__:
            raise ExtractError(f"{key} is a partial extraction written by fs {attrs.get('fs_version')}; this is "
                               f"fs {__version__}. Finish it with that version, or re-run with --overwrite")
        if sorted(options.frame_layers) != sorted(group.frame_layers):
            raise ExtractError(f"{key} is a partial extraction with frame layers {group.frame_layers}; resume "
                               f"with the same --frames or re-run with --overwrite")
        return group, False
    order = plan_order(manifest)
    num_batches = -(-len(order) // options.batch_size)
    group = store.create(key, utt_ids=[manifest.rows[i]["utt_id"] for i in order], num_layers=info.num_layers,
                         dim=info.dim, num_batches=num_batches, frame_layers=sorted(options.frame_layers),
                         provenance=_provenance(manifest, info, noise, key.condition, options.batch_size, device),
                         noisy=noise is not None)
    return group, False


def extract(manifest: Manifest, encoder: Encoder, store: FeatureStore, *, noise: NoiseSpec | None = None,
            options: ExtractOptions = ExtractOptions()) -> ExtractResult:
    """Extract ``manifest`` with ``encoder`` (optionally noise-mixed) into ``store``.

    Idempotent: a complete group is left as it is. Resumable: a partial group continues at
    its first uncommitted batch. Raises ExtractError with the fix when it cannot go on.
    """
    info = encoder.info
    bad = [layer for layer in options.frame_layers if not 0 <= layer < info.num_layers]
    if bad:
        raise ExtractError(f"--frames {bad}: {info.name} has layers 0..{info.num_layers - 1}")
    if options.on_bad_audio not in ("fail", "skip"):
        raise ExtractError(f"on_bad_audio must be 'fail' or 'skip', not {options.on_bad_audio!r}")
    if options.batch_size < 1 or options.commit_rows < 1:
        raise ExtractError("batch size and commit rows must be at least 1")
    bank = NoiseBank(noise, info.sample_rate) if noise is not None else None
    key = StoreKey(manifest.name, bank.key if bank is not None else condition_key(None), model_key(info))
    result = ExtractResult(key=key)
    device = str(getattr(encoder, "device", "cpu"))
    with store.lock(key):
        store.remove_partial_writes(key)
        group, complete = _open_group(store, key, manifest, info, bank, options, device)
        if complete:
            result.already_done = True
            return result
        _run(group, manifest, encoder, bank, options, result)
    return result


@dataclass
class _Rows:
    """Pooled results of consecutive plan batches, waiting to be committed together."""

    batches: range
    start: int
    mean: np.ndarray
    std: np.ndarray
    n_frames: np.ndarray
    status: np.ndarray
    frames: dict[int, list[np.ndarray]]
    skipped: dict[str, str]
    noise: dict[str, np.ndarray] | None = None
    frame_bytes: int = 0

    def extend(self, other: "_Rows") -> "_Rows":
        noise = None if self.noise is None else {k: np.concatenate([v, other.noise[k]]) for k, v in self.noise.items()}
        return _Rows(range(self.batches.start, other.batches.stop), self.start,
                     np.concatenate([self.mean, other.mean]), np.concatenate([self.std, other.std]),
                     np.concatenate([self.n_frames, other.n_frames]), np.concatenate([self.status, other.status]),
                     {k: v + other.frames[k] for k, v in self.frames.items()}, {**self.skipped, **other.skipped},
                     noise, self.frame_bytes + other.frame_bytes)


def _commit(group: StoreGroup, rows: _Rows | None, result: ExtractResult) -> None:
    if rows is None:
        return
    try:
        group.commit(rows.batches, rows.start, rows.mean, rows.std, rows.n_frames, rows.status, rows.frames,
                     rows.skipped, rows.noise)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise ExtractError(f"disk full while writing {group.key}; free space and re-run the same command: "
                               "it resumes from the last committed batch") from None
        raise
    result.processed += int((rows.status == STATUS_STORED).sum())
    result.skipped.update(rows.skipped)


def _run(group: StoreGroup, manifest: Manifest, encoder: Encoder, bank: NoiseBank | None,
         options: ExtractOptions, result: ExtractResult) -> None:
    by_id = {row["utt_id"]: row for row in manifest.rows}
    rows = [by_id[u] for u in group.utt_ids()]
    batch_size = int(group.attrs["plan"]["batch_size"])
    done = group.batches_done()
    todo = [b for b in range(len(done)) if not done[b]]
    batches = [list(range(b * batch_size, min((b + 1) * batch_size, len(rows)))) for b in todo]
    loader = DataLoader(_UtteranceAudio(rows, encoder.info.sample_rate, bank), batch_sampler=batches,
                        num_workers=options.num_workers, collate_fn=_collate)
    cuda = torch.cuda.is_available() and str(encoder.device).startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    bar = tqdm(total=sum(len(b) for b in batches), unit="utt", disable=not options.progress,
               desc=f"{group.key.corpus}/{group.key.condition} {Path(encoder.info.name).name}", dynamic_ncols=True)
    pending: _Rows | None = None
    try:
        for batch_index, items in zip(todo, loader):
            if pending is not None and pending.batches.stop != batch_index:
                ready, pending = pending, None  # never buffer across a gap in the plan
                _commit(group, ready, result)
            batch = _process_batch(batch_index, batch_index * batch_size, items, rows, encoder, options, result,
                                   noisy=bank is not None)
            pending = batch if pending is None else pending.extend(batch)
            if len(pending.mean) >= options.commit_rows or pending.frame_bytes >= MAX_PENDING_FRAME_BYTES:
                ready, pending = pending, None
                _commit(group, ready, result)
            bar.update(len(items))
            result.wall_seconds = time.perf_counter() - started
            bar.set_postfix(utt_s=f"{(result.processed + _stored(pending)) / result.wall_seconds:.1f}",
                            rtf=f"{result.real_time_factor:.3f}")
        ready, pending = pending, None
        _commit(group, ready, result)
    except (KeyboardInterrupt, ExtractError) as exc:
        if pending is not None and not (isinstance(exc, ExtractError) and "disk full" in str(exc)):
            _commit(group, pending, result)  # keep the batches finished before the stop
        if isinstance(exc, KeyboardInterrupt):
            raise ExtractError(f"interrupted; committed batches of {group.key} are kept: re-run the same command "
                               "to resume") from None
        raise
    finally:
        bar.close()
    result.wall_seconds = time.perf_counter() - started
    result.peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if cuda:
        result.peak_gpu_mb = torch.cuda.max_memory_allocated() / 2**20
    if bool(group.batches_done().all()):
        group.mark_complete()


def _stored(rows: _Rows | None) -> int:
    return 0 if rows is None else int((rows.status == STATUS_STORED).sum())


def _process_batch(batch_index: int, start: int, items: list, rows: list[dict[str, Any]], encoder: Encoder,
                   options: ExtractOptions, result: ExtractResult, noisy: bool) -> _Rows:
    n = len(items)
    dim, layers = encoder.info.dim, encoder.info.num_layers
    mean = np.zeros((n, layers, dim), np.float32)
    std = np.zeros((n, layers, dim), np.float32)
    n_frames = np.zeros(n, np.int32)
    status = np.full(n, STATUS_SKIPPED, np.int8)
    empty = np.zeros((0, dim), np.float16)
    frames: dict[int, list[np.ndarray]] = {layer: [empty] * n for layer in options.frame_layers}
    skipped: dict[str, str] = {}
    noise = {"recording": np.full(n, "", dtype=object), "offset": np.full(n, -1, np.int64),
             "snr_db": np.full(n, np.nan)} if noisy else None
    good: list[tuple[int, np.ndarray]] = []
    for j, (i, wave, error, mix) in enumerate(items):
        if noise is not None and mix:
            for name in noise:
                noise[name][j] = mix[name]
        if error:
            if options.on_bad_audio == "fail":
                raise ExtractError(f"{error}\nutterance {rows[i]['utt_id']} cannot be extracted; fix or remove it, "
                                   "or re-run with --on-bad-audio skip to record it as skipped")
            skipped[rows[i]["utt_id"]] = error
            continue
        good.append((j, wave))
    frame_bytes = 0
    if good:
        states = encoder.embed([w for _, w in good])
        m, s = pool_states(states.hidden, states.lengths)
        lengths = states.lengths.cpu().numpy()
        for k, (j, wave) in enumerate(good):
            mean[j], std[j], n_frames[j], status[j] = m[k], s[k], lengths[k], STATUS_STORED
            result.audio_seconds += len(wave) / encoder.info.sample_rate
            for layer in options.frame_layers:
                frames[layer][j] = states.hidden[layer, k, : lengths[k]].to(torch.float16).cpu().numpy()
                frame_bytes += frames[layer][j].nbytes
    return _Rows(range(batch_index, batch_index + 1), start, mean, std, n_frames, status, frames, skipped,
                 noise, frame_bytes)
