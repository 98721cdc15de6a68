"""The extraction loop: manifest + encoder (+ an acoustic condition) → one store group, batched and resumable.

Utterances are sorted by duration (longest first) into a fixed plan of batches, each bounded by
a count and by a budget of padded audio seconds (so peak memory is bounded whatever the length
mix); rows are stored in plan order and each batch is committed after its data, so a killed run
resumes at the first uncommitted batch and yields the same values as an uninterrupted one.

A group is valid for the audio it was computed from (utterance ids + audio content hashes), not
for labels or paths: a moved or relabelled corpus reuses every stored vector.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import queue
import resource
import sys
import threading
import time
from collections.abc import Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from data_manifests.manifest import Manifest
from featurestore import __version__, hints
from featurestore.audio import AudioError, decode_audio
from featurestore.conditions import ConditionAudioError, ConditionChain
from featurestore.encoders.base import Encoder, EncoderInfo
from featurestore.errors import FsError, Interrupted, Terminated
from featurestore.noise import NoiseSpec
from featurestore.pooling import masked_mean_std
from featurestore.progress import Progress
from featurestore.store import ROW_CHUNK, STATUS_SKIPPED, STATUS_STORED, FeatureStore, StoreGroup, StoreKey, slug
from featurestore.verify import identity_changes

AUDIO_PIPELINE = {"decoder": "soundfile", "mono": "mean of channels", "resampler": "soxr HQ"}
POOLING = {"stats": ["mean", "std"], "over": "real frames", "std_ddof": 0}
MAX_PENDING_FRAME_BYTES = 256 * 2**20


class ExtractError(FsError, RuntimeError):
    """Extraction cannot go on; the message says why and how to fix it. Committed work is kept."""


class DiskFullError(ExtractError):
    """The store's disk filled up while a block was written (nothing more can be committed)."""


@dataclass(frozen=True)
class ExtractOptions:
    """How to run an extraction (none of these change the stored values, except ``frame_layers``)."""

    batch_size: int = 8  # at most this many utterances per batch
    batch_seconds: float = 240.0  # and at most this many padded audio seconds per batch
    frame_layers: tuple[int, ...] = ()
    on_bad_audio: str = "fail"  # "fail" or "skip" (skipped rows are recorded with their reason)
    commit_rows: int = ROW_CHUNK  # rows buffered per commit: fewer writes; at most this much redone after a kill
    num_workers: int = 0
    overwrite: bool = False
    retry_skipped: bool = False  # retry every skipped row (by default only those whose file changed)
    repair: bool = False  # read every chunk, drop corrupt ones and recompute their rows
    progress: bool = True  # a bar on a terminal, else a plain line on stderr every progress_interval_s
    progress_interval_s: float = 15.0


@dataclass
class ExtractResult:
    """What one call did, with throughput figures."""

    key: StoreKey
    processed: int = 0
    skipped: dict[str, str] = field(default_factory=dict)
    already_done: bool = False
    resumed: bool = False  # the group existed and part of it was kept
    rows_before: int = 0  # rows already stored when this call started
    repaired: list[str] = field(default_factory=list)  # damage found and recomputed
    retried: int = 0  # skipped rows tried again
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0
    peak_rss_mb: float = 0.0
    peak_gpu_mb: float = 0.0
    oom_halvings: int = 0  # forward passes halved after the device ran out of memory
    oom_batch_seconds: float | None = None  # padded audio seconds per forward pass after the last halving

    @property
    def utterances_per_second(self) -> float:
        return self.processed / self.wall_seconds if self.wall_seconds > 0 else 0.0

    @property
    def real_time_factor(self) -> float:
        return self.wall_seconds / self.audio_seconds if self.audio_seconds > 0 else 0.0


def model_key(info: EncoderInfo) -> str:
    """Store key of a model: family (+ Whisper input mode) and a hash of family, weights and settings.

    Neither the name nor the folder the weights came from enter it: the same weights under another
    alias, hub id or folder name keep their group (``find`` matches every name used).
    """
    mode = info.settings.get("whisper_input")
    name = f"{info.family}-{mode}" if mode else info.family
    payload = json.dumps({"family": info.family, "weights": info.weights_hash, "settings": info.settings},
                         sort_keys=True, default=str)
    return f"{slug(name)}-{hashlib.sha256(payload.encode()).hexdigest()[:10]}"


def plan_order(manifest: Manifest) -> list[int]:
    """Row indices sorted longest first (ties by utterance id): the store's row order."""
    return sorted(range(len(manifest.rows)), key=lambda i: (-manifest.rows[i]["duration"], manifest.rows[i]["utt_id"]))


def padded_seconds(duration: float, info: EncoderInfo) -> float:
    """Seconds of input the encoder really runs for an utterance (Whisper ``full`` pads to 30 s windows)."""
    pad = info.settings.get("pad_to_seconds")
    return math.ceil(duration / pad) * pad if pad else duration


def plan_batches(durations: list[float], batch_size: int, batch_seconds: float,
                 info: EncoderInfo | None = None) -> list[int]:
    """Batch boundaries (B+1,) over rows sorted longest first.

    A batch holds at most ``batch_size`` utterances and at most ``batch_seconds`` of padded audio
    (count x its longest, the first); an utterance longer than the budget forms a batch alone.
    """
    cost = [padded_seconds(d, info) if info is not None else d for d in durations]
    bounds = [0]
    for i in range(1, len(cost) + 1):
        start = bounds[-1]
        if i == len(cost) or i - start >= batch_size or (i - start + 1) * cost[start] > batch_seconds:
            bounds.append(i)
    return bounds if len(cost) else [0]


def extract_command(manifest: Manifest, info: EncoderInfo, chain: ConditionChain | None,
                    frame_layers: tuple[int, ...]) -> str:
    """The ``fs extract`` command line that makes this group (recorded in provenance, printed in advice):
    a lone noise step as ``--noise/--snr/--noise-seed``, any other chain as its ``--condition`` texts."""
    chain = chain if chain is not None else ConditionChain()
    noise = chain.noise_spec() if [s.kind for s in chain.steps] == ["noise"] else None
    spec = noise.to_dict() if noise is not None else {}
    return hints.extract_command(info.name, [manifest.name], **hints.model_flags(info.__dict__),
                                 noise=spec.get("source"), snr_db=spec.get("snr_db"), noise_seed=spec.get("seed"),
                                 noise_env=spec.get("environments") or (), noisy=noise is not None,
                                 conditions=[] if noise is not None else [s.text for s in chain.steps],
                                 condition_seed=chain.seed, frames=frame_layers)


def condition_chain(noise: NoiseSpec | None = None, condition: ConditionChain | None = None) -> ConditionChain:
    """The chain of an extraction: ``condition``, or today's ``noise`` spec as a one-step chain (same key)."""
    if noise is not None and condition is not None:
        raise ExtractError("give the noise as a step of the condition chain or as noise=, not both")
    return condition if condition is not None else ConditionChain.from_noise(noise)


Decoded = tuple[int, "np.ndarray | None", str, dict[str, Any]]  # (row, wave or None, error, "record" + "sha256")


def decode_row(index: int, row: dict[str, Any], sample_rate: int, chain: ConditionChain | None) -> Decoded:
    """Read, hash, decode, downmix, resample and (optionally) condition one manifest row.

    Returns ``(index, wave (S,) float32 or None, error, {"record": the condition record (with a
    non-empty chain), "sha256": of the bytes read})``.
    """
    try:
        raw = Path(row["path"]).read_bytes()
    except OSError as exc:
        return index, None, f"{row['path']}: cannot read ({exc.strerror or exc})", {"sha256": ""}
    digest = hashlib.sha256(raw).hexdigest()
    try:
        wave, _ = decode_audio(raw, row["path"], sample_rate)
        mix: dict[str, Any] = {}
        if chain is not None and chain.steps:
            wave, mix["record"] = chain.apply(wave, sample_rate, row["utt_id"])
        return index, wave, "", {**mix, "sha256": digest}
    except (AudioError, ConditionAudioError) as exc:
        return index, None, str(exc), {"sha256": digest}


class _UtteranceAudio(Dataset):
    """:func:`decode_row` over the plan's rows; runs in DataLoader workers."""

    def __init__(self, rows: list[dict[str, Any]], sample_rate: int, chain: ConditionChain | None):
        self.rows, self.sample_rate, self.chain = rows, sample_rate, chain

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> Decoded:
        return decode_row(i, self.rows[i], self.sample_rate, self.chain)


def _collate(items: list) -> list:
    return items


def pool_states(hidden: torch.Tensor, lengths: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std over each utterance's real frames: (L,B,T,D) → two (B,L,D) float32 arrays.

    A thin alias of :func:`featurestore.pooling.masked_mean_std` (the one pooling code), always in
    float32 with autocast off, whatever precision the encoder ran in.
    """
    with torch.autocast(hidden.device.type, enabled=False):
        mean, std = masked_mean_std(hidden.float(), lengths)
    return mean.transpose(0, 1).float().cpu().numpy(), std.transpose(0, 1).float().cpu().numpy()


def _provenance(manifest: Manifest, info: EncoderInfo, chain: ConditionChain,
                options: ExtractOptions, device: str, command: str) -> dict[str, Any]:
    return {
        "corpus": {"name": manifest.name, "layout": manifest.layout, "root": manifest.root,
                   "manifest_digest": manifest.digest(), "audio_digest": manifest.audio_digest(),
                   "label_map": manifest.label_map_name, "utterances": len(manifest.rows)},
        "condition": chain.describe(info.sample_rate),
        "model": {k: v for k, v in info.__dict__.items()},
        "sample_rate": info.sample_rate,
        "audio": AUDIO_PIPELINE,
        "pooling": POOLING,
        "plan": {"order": "duration descending, then utt_id", "batch_size": options.batch_size,
                 "batch_seconds": options.batch_seconds},
        "command": command,
        "device": device,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": sys.version.split()[0], "torch": torch.__version__,
    }


def _open_group(store: FeatureStore, key: StoreKey, manifest: Manifest, info: EncoderInfo,
                chain: ConditionChain, options: ExtractOptions, device: str, command: str,
                result: ExtractResult) -> StoreGroup:
    """Open the group to resume or repair, or create it; ``result.already_done`` when nothing is left."""
    if store.has(key) and not options.overwrite:
        group = store.open(key, mode="a")
        # first: the reads below refuse a corrupt chunk, which --repair drops here (it then reads as lost)
        damage = group.damage(checksums=options.repair, drop_corrupt=options.repair)
        _check_reusable(group, manifest, options, command)
        group.add_alias(info.name)
        result.rows_before = int((group.status() == STATUS_STORED).sum())
        redo = _batches_to_redo(group, manifest, options, result, damage)
        if redo:
            group.reopen_batches(redo)
        if group.is_complete:
            result.already_done = True
        else:
            result.resumed = result.rows_before > 0 or bool(group.batches_done().any())
        return group
    order = plan_order(manifest)
    rows = [manifest.rows[i] for i in order]
    bounds = plan_batches([r["duration"] for r in rows], options.batch_size, options.batch_seconds, info)
    provenance = _provenance(manifest, info, chain, options, device, command)
    return store.create(key, utt_ids=[r["utt_id"] for r in rows], audio_sha256=[r["audio_sha256"] for r in rows],
                        num_layers=info.num_layers, dim=info.dim, batch_start=bounds,
                        frame_layers=sorted(options.frame_layers), provenance=provenance,
                        noisy=chain.noise_spec() is not None, condition_columns=chain.record_columns(info.sample_rate))


def _check_reusable(group: StoreGroup, manifest: Manifest, options: ExtractOptions, command: str) -> None:
    changes = identity_changes(group, manifest)
    if changes["missing"]:
        raise ExtractError(f"{group.key} lacks {len(changes['missing'])} utterance(s) of corpus {manifest.name!r} "
                           f"(e.g. {changes['missing'][:3]}): it was extracted from another version or label map "
                           f"of the corpus; re-extract with {command} --overwrite")
    if changes["audio_changed"]:
        raise ExtractError(f"{group.key}: the audio of {len(changes['audio_changed'])} stored utterance(s) changed "
                           f"since extraction (e.g. {changes['audio_changed'][:3]}); its values no longer match "
                           f"the files: re-extract with {command} --overwrite")
    missing = sorted(set(options.frame_layers) - set(group.frame_layers))
    if missing:
        again = hints.command_for_group(group.provenance, group.key.corpus, frames={*group.frame_layers, *missing},
                                        extra=("--overwrite",))
        raise ExtractError(f"{group.key} has no frame-level states for layers {missing} (stored: "
                           f"{group.frame_layers or 'none'}). Frames cannot be added to a stored group in place: "
                           "they are the encoder's hidden states, which are not kept, so every utterance is encoded "
                           "again (as long as the first extraction; the pooled values come out identical). "
                           f"To do it: {again}")
    if not group.is_complete:
        if group.provenance.fs_version != __version__:
            raise ExtractError(f"{group.key} is a partial extraction written by fs {group.provenance.fs_version or None}; "
                               f"this is fs {__version__}. Finish it with that version, or re-run with --overwrite")
        if sorted(options.frame_layers) != sorted(group.frame_layers):
            raise ExtractError(f"{group.key} is a partial extraction with frame layers {group.frame_layers}; resume "
                               "with the same --frames or re-run with --overwrite")


def _batches_to_redo(group: StoreGroup, manifest: Manifest, options: ExtractOptions, result: ExtractResult,
                     damage: tuple[np.ndarray, list[Any]]) -> list[int]:
    """Committed batches to compute again: ``damage`` (``group.damage()``: bad rows, problems), and
    skipped rows worth retrying."""
    bounds = group.batch_bounds()
    bad, problems = damage
    result.repaired = [str(p) for p in problems]
    retry = _skipped_to_retry(group, manifest, options)
    result.retried = len(retry)
    if retry.size:
        group.set_audio_hashes(retry, [_manifest_hash(manifest, u) for u in group.utt_ids()[retry]])
        bad[retry] = True
    rows = np.flatnonzero(bad)
    return sorted({int(np.searchsorted(bounds, r, side="right") - 1) for r in rows})


def _manifest_hash(manifest: Manifest, utt_id: str) -> str:
    return next(r["audio_sha256"] for r in manifest.rows if r["utt_id"] == utt_id)


def _skipped_to_retry(group: StoreGroup, manifest: Manifest, options: ExtractOptions) -> np.ndarray:
    """Skipped rows whose file now differs from the bytes that failed (all of them with retry_skipped)."""
    skipped = np.flatnonzero(group.status() == STATUS_SKIPPED)
    if options.retry_skipped or not skipped.size:
        return skipped
    paths = {r["utt_id"]: r["path"] for r in manifest.rows}
    ids, hashes = group.utt_ids(), group.audio_hashes()
    retry = []
    for row in skipped:
        try:
            now = hashlib.sha256(Path(paths[ids[row]]).read_bytes()).hexdigest()
        except (OSError, KeyError):
            continue
        if now != hashes[row]:
            retry.append(row)
    return np.asarray(retry, dtype=np.int64)


@dataclass
class Block:
    """Results of consecutive plan batches, rows ``start:start+n`` of a group, ready for :func:`commit_block`.

    mean, std: (n, L, D) float32; n_frames: (n,) int32; status: (n,) int8 (stored or skipped);
    frames: layer -> n arrays (T_i, D) float16; skipped: utt_id -> reason; records: the condition record
    of each row (None for a skipped row) under a condition, else None; failed_hashes: row -> sha256 of
    the bytes that failed to decode; audio_seconds: audio embedded.
    """

    batches: range
    start: int
    mean: np.ndarray
    std: np.ndarray
    n_frames: np.ndarray
    status: np.ndarray
    frames: dict[int, list[np.ndarray]]
    skipped: dict[str, str]
    records: list[dict[str, Any] | None] | None = None
    frame_bytes: int = 0
    failed_hashes: dict[int, str] = field(default_factory=dict)
    audio_seconds: float = 0.0
    oom_halvings: int = 0  # forward passes halved because the device ran out of memory
    oom_batch_seconds: float | None = None  # then: padded audio seconds per forward pass after the last halving

    def __len__(self) -> int:
        return len(self.status)

    @property
    def stored(self) -> int:
        return int((self.status == STATUS_STORED).sum())

    def extend(self, other: Block) -> Block:
        """This block followed by ``other`` (the next batches of the plan)."""
        records = None if self.records is None else self.records + (other.records or [])
        return Block(range(self.batches.start, other.batches.stop), self.start,
                     np.concatenate([self.mean, other.mean]), np.concatenate([self.std, other.std]),
                     np.concatenate([self.n_frames, other.n_frames]), np.concatenate([self.status, other.status]),
                     {k: v + other.frames[k] for k, v in self.frames.items()}, {**self.skipped, **other.skipped},
                     records, self.frame_bytes + other.frame_bytes, {**self.failed_hashes, **other.failed_hashes},
                     self.audio_seconds + other.audio_seconds, self.oom_halvings + other.oom_halvings,
                     other.oom_batch_seconds if other.oom_halvings else self.oom_batch_seconds)


@dataclass
class MemoryBudget:
    """Padded audio seconds one forward pass may take: unbounded until the device runs out of memory,
    then half of what failed; kept across the batches of a run (a plan's batches cost about the same)."""

    seconds: float = math.inf
    halvings: int = 0


def _embedded(encoder: Encoder, waves: list[np.ndarray], budget: MemoryBudget,
              frame_layers: tuple[int, ...]) -> Iterator[tuple[list[int], np.ndarray, np.ndarray, np.ndarray,
                                                             dict[int, list[np.ndarray]]]]:
    """Embed and pool ``waves`` (longest first) in forward passes within ``budget``, halving one that runs
    out of device memory (torch.OutOfMemoryError) and counting it in ``budget.halvings``.

    Yields (indices into ``waves``, mean (b, L, D), std (b, L, D), frame counts (b,), layer -> b arrays
    (T_i, D) float16). Raises ExtractError when one utterance alone does not fit.
    """
    cost = [padded_seconds(w.size / encoder.info.sample_rate, encoder.info) for w in waves]
    pending = list(range(len(waves)))
    while pending:
        part = pending[:_fits(pending, cost, budget.seconds)]
        try:
            pooled = _embed_pooled(encoder, [waves[i] for i in part], frame_layers)
        except torch.cuda.OutOfMemoryError:
            pooled = None  # leave the except block first: its traceback holds the failed pass's tensors
        if pooled is None:
            if len(part) == 1:
                raise ExtractError(f"{encoder.info.name}: one utterance of {cost[part[0]]:.0f} s of (padded) audio "
                                   "does not fit in the device's memory; cut long audio with --chunk-seconds 30, "
                                   "or use a device with more memory")
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            budget.seconds = min(budget.seconds, len(part) * max(cost[i] for i in part) / 2)
            budget.halvings += 1
            continue
        pending = pending[len(part):]
        yield (part, *pooled)


def _fits(pending: list[int], cost: list[float], seconds: float) -> int:
    """How many of ``pending`` (longest first) one forward pass takes: count x longest <= ``seconds``, at least 1."""
    count, longest = 1, cost[pending[0]]
    while count < len(pending) and (count + 1) * max(longest, cost[pending[count]]) <= seconds:
        longest = max(longest, cost[pending[count]])
        count += 1
    return count


def _embed_pooled(encoder: Encoder, waves: list[np.ndarray], frame_layers: tuple[int, ...]
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[int, list[np.ndarray]]]:
    """One forward pass: mean, std (b, L, D), frame counts (b,) and the frames of ``frame_layers`` (fp16)."""
    states = encoder.embed(waves)
    mean, std = pool_states(states.hidden, states.lengths)
    lengths = states.lengths.cpu().numpy()
    frames = {layer: [states.hidden[layer, k, : lengths[k]].to(torch.float16).cpu().numpy() for k in range(len(waves))]
              for layer in frame_layers}
    return mean, std, lengths, frames


def compute_block(batch_index: int, start: int, items: list[Decoded], rows: Sequence[dict[str, Any]] | Mapping,
                  encoder: Encoder, *, frame_layers: tuple[int, ...] = (), on_bad_audio: str = "fail",
                  conditioned: bool = False, memory: MemoryBudget | None = None) -> Block:
    """Embed and pool one plan batch (a pure function of the decoded audio: no store access).

    ``items`` are :func:`decode_row` results whose indices are group rows (``rows[i]`` is the
    manifest row of group row i); the block holds rows ``start:start+len(items)``. Raises
    ExtractError for bad audio with ``on_bad_audio="fail"`` and for audio changed since
    ``fs corpus add``. ``conditioned``: keep each row's condition record.
    ``memory`` bounds the forward passes (halved on out-of-memory; see
    :func:`_embedded`); the block counts its halvings.
    """
    memory = memory if memory is not None else MemoryBudget()
    halvings_before = memory.halvings
    n = len(items)
    dim, layers = encoder.info.dim, encoder.info.num_layers
    mean = np.zeros((n, layers, dim), np.float32)
    std = np.zeros((n, layers, dim), np.float32)
    n_frames = np.zeros(n, np.int32)
    status = np.full(n, STATUS_SKIPPED, np.int8)
    empty = np.zeros((0, dim), np.float16)
    frames: dict[int, list[np.ndarray]] = {layer: [empty] * n for layer in frame_layers}
    skipped: dict[str, str] = {}
    records: list[dict[str, Any] | None] | None = [None] * n if conditioned else None
    good: list[tuple[int, np.ndarray]] = []
    failed_hashes: dict[int, str] = {}
    for j, (i, wave, error, mix) in enumerate(items):
        if records is not None and not error:
            records[j] = mix["record"]
        if not error and mix["sha256"] != rows[i]["audio_sha256"]:
            raise ExtractError(f"{rows[i]['path']}: the audio of utterance {rows[i]['utt_id']} changed since "
                               f"`fs corpus add`; re-add corpus {rows[i].get('corpus', '')!r} with "
                               "`fs corpus add ... --overwrite`, then extract again")
        if error:
            if on_bad_audio == "fail":
                raise ExtractError(f"{error}\nutterance {rows[i]['utt_id']} cannot be extracted; fix or remove it, "
                                   "or re-run with --on-bad-audio skip to record it as skipped")
            skipped[rows[i]["utt_id"]] = error
            failed_hashes[i] = mix.get("sha256", "")
            continue
        good.append((j, wave))
    frame_bytes = 0
    audio_seconds = 0.0
    for part, m, s, lengths, part_frames in _embedded(encoder, [w for _, w in good], memory, tuple(frame_layers)):
        for k, g in enumerate(part):
            j, wave = good[g]
            mean[j], std[j], n_frames[j], status[j] = m[k], s[k], lengths[k], STATUS_STORED
            audio_seconds += len(wave) / encoder.info.sample_rate
            for layer in frame_layers:
                frames[layer][j] = part_frames[layer][k]
                frame_bytes += frames[layer][j].nbytes
    return Block(range(batch_index, batch_index + 1), start, mean, std, n_frames, status, frames, skipped,
                 records, frame_bytes, failed_hashes, audio_seconds, memory.halvings - halvings_before,
                 memory.seconds if memory.halvings > halvings_before else None)


def commit_block(group: StoreGroup, block: Block | None, result: ExtractResult) -> None:
    """Write ``block`` into ``group`` (data first, then its batches' commit markers); count it in ``result``."""
    if block is None:
        return
    try:
        if block.failed_hashes:  # a skipped row remembers the bytes that failed: retried once they change
            group.set_audio_hashes(np.array(list(block.failed_hashes)), list(block.failed_hashes.values()))
        group.commit(block.batches, block.start, block.mean, block.std, block.n_frames, block.status, block.frames,
                     block.skipped, records=block.records)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise DiskFullError(f"disk full while writing {group.key}; free space and re-run the same command: "
                               "it resumes from the last committed batch") from None
        raise
    result.processed += block.stored
    result.skipped.update(block.skipped)


PlanEntry = tuple[int, int, int]  # (batch index, first row, end row) of one plan batch


@runtime_checkable
class Runner(Protocol):
    """Where blocks are computed: this process (:class:`LocalRunner`) or a cluster (``distributed.RayRunner``)."""

    info: EncoderInfo
    device: str

    def blocks(self, rows: list[dict[str, Any]], plan: list[PlanEntry], chain: ConditionChain,
               options: ExtractOptions) -> Iterator[Block]:
        """One :class:`Block` per plan entry, yielded in the order of ``plan``; ``rows[i]`` is group row i."""
        ...


@dataclass
class RunnerTimes:
    """Where a :class:`LocalRunner`'s time went: waiting for decoded audio, computing blocks (embed, pool,
    copy back: the GPU's work, as the copy back waits for it) and, computing ahead, waiting for the
    caller to take the last block (the store's writes being slower). Sequentially the rest of a run
    is the store's."""

    decode_wait_s: float = 0.0
    compute_s: float = 0.0
    handoff_wait_s: float = 0.0


class LocalRunner:
    """Blocks computed in this process; DataLoader workers decode and resample ahead of the encoder.

    ``compute_ahead`` (default: on CUDA) computes the next block in a thread while the caller writes
    the last one, so the GPU does not idle during the store's writes. ``memory`` is the forward-pass
    budget, halved (and kept) when the device runs out of memory; ``times`` adds up where time went.
    """

    def __init__(self, encoder: Encoder, *, compute_ahead: bool | None = None):
        self.encoder = encoder
        self.info = encoder.info
        self.device = str(getattr(encoder, "device", "cpu"))
        self.compute_ahead = self.device.startswith("cuda") if compute_ahead is None else compute_ahead
        self.memory = MemoryBudget()
        self.times = RunnerTimes()

    def blocks(self, rows: list[dict[str, Any]], plan: list[PlanEntry], chain: ConditionChain,
               options: ExtractOptions) -> Iterator[Block]:
        computed = self._computed(rows, plan, chain, options)
        return _one_ahead(computed, self.times) if self.compute_ahead else computed

    def _computed(self, rows: list[dict[str, Any]], plan: list[PlanEntry], chain: ConditionChain,
                  options: ExtractOptions) -> Generator[Block, None, None]:
        loader = DataLoader(_UtteranceAudio(rows, self.info.sample_rate, chain),
                            batch_sampler=[list(range(a, b)) for _, a, b in plan],
                            num_workers=options.num_workers, collate_fn=_collate)
        decoded = iter(loader)
        for index, start, _ in plan:
            began = time.perf_counter()
            items = next(decoded)
            ready = time.perf_counter()
            block = compute_block(index, start, items, rows, self.encoder, frame_layers=tuple(options.frame_layers),
                                  on_bad_audio=options.on_bad_audio, conditioned=bool(chain.steps),
                                  memory=self.memory)
            self.times.decode_wait_s += ready - began
            self.times.compute_s += time.perf_counter() - ready
            yield block


_END = object()


def _one_ahead(blocks: Generator[Block, None, None], times: RunnerTimes) -> Iterator[Block]:
    """``blocks`` in order, each computed in a thread while the caller works on the one before.

    An exception of the computation (KeyboardInterrupt included) is raised here, after the blocks
    computed before it; closing this generator stops the thread after its current block.
    """
    handoff: queue.Queue = queue.Queue(maxsize=1)
    stop = threading.Event()

    def hand(item: object) -> None:
        began = time.perf_counter()
        while not stop.is_set():
            try:
                handoff.put(item, timeout=0.1)
                break
            except queue.Full:
                continue
        times.handoff_wait_s += time.perf_counter() - began

    def compute() -> None:
        try:
            for block in blocks:
                hand(block)
                if stop.is_set():
                    return
            hand(_END)
        except BaseException as exc:  # handed to the caller's thread, raised there
            hand(exc)
        finally:
            blocks.close()  # shuts the DataLoader workers down

    thread = threading.Thread(target=compute, name="fs-compute-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item = handoff.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


def extract(manifest: Manifest, encoder: Encoder, store: FeatureStore, *, noise: NoiseSpec | None = None,
            condition: ConditionChain | None = None, options: ExtractOptions = ExtractOptions()) -> ExtractResult:
    """Extract ``manifest`` with ``encoder`` (optionally under a ``condition`` chain, or ``noise`` alone:
    the same group as its one-step chain) into ``store``, in this process.

    Idempotent: a complete, undamaged group is left as it is. Resumable: a partial group continues
    at its first uncommitted batch; missing chunks (and, with ``repair``, corrupt ones) are
    recomputed; skipped rows whose file changed are retried. Ctrl-C / SIGTERM commit the finished
    rows and raise :class:`~featurestore.errors.Interrupted`. Raises ExtractError with the fix when
    it cannot go on.
    """
    return run_extraction(manifest, LocalRunner(encoder), store, noise=noise, condition=condition, options=options)


def run_extraction(manifest: Manifest, runner: Runner, store: FeatureStore, *, noise: NoiseSpec | None = None,
                   condition: ConditionChain | None = None, options: ExtractOptions = ExtractOptions()) -> ExtractResult:
    """:func:`extract` with blocks computed by ``runner``; this process alone writes the store, in plan order."""
    info = runner.info
    bad = [layer for layer in options.frame_layers if not 0 <= layer < info.num_layers]
    if bad:
        raise ExtractError(f"--frames {bad}: {info.name} has layers 0..{info.num_layers - 1}")
    if options.on_bad_audio not in ("fail", "skip"):
        raise ExtractError(f"--on-bad-audio must be fail or skip, not {options.on_bad_audio!r}")
    if options.batch_size < 1 or options.commit_rows < 1 or not options.batch_seconds > 0:
        raise ExtractError("batch size, batch seconds and commit rows must be positive")
    if any("audio_sha256" not in r for r in manifest.rows[:1]):
        raise ExtractError(f"manifest {manifest.name!r} has no audio hashes (made by an older fs); re-add it with "
                           "`fs corpus add ... --overwrite`")
    chain = condition_chain(noise, condition)
    chain.prepare(info.sample_rate)  # ConditionError (bad source, rate above the audio's) before any work
    key = StoreKey(manifest.name, chain.key, model_key(info))
    result = ExtractResult(key=key)
    command = extract_command(manifest, info, chain, tuple(options.frame_layers))
    with store.lock(key):
        store.remove_partial_writes(key)
        group = _open_group(store, key, manifest, info, chain, options, runner.device, command, result)
        if result.already_done:
            return result
        _run(group, manifest, runner, chain, options, result)
    return result


def _run(group: StoreGroup, manifest: Manifest, runner: Runner, chain: ConditionChain,
         options: ExtractOptions, result: ExtractResult) -> None:
    by_id = {row["utt_id"]: row for row in manifest.rows}
    ids = group.utt_ids()
    rows = [by_id.get(u, {"utt_id": u, "path": "", "audio_sha256": ""}) for u in ids]
    bounds = group.batch_bounds()
    done = group.batches_done()
    plan = [(b, int(bounds[b]), int(bounds[b + 1])) for b in range(len(done)) if not done[b]]
    cuda = (isinstance(runner, LocalRunner) and torch.cuda.is_available()
            and str(runner.device).startswith("cuda"))
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    bar = Progress(sum(b - a for _, a, b in plan), f"{group.key.corpus}/{group.key.condition} "
                   f"{Path(runner.info.name).name}", "utt", enabled=options.progress,
                   interval_s=options.progress_interval_s)
    blocks = runner.blocks(rows, plan, chain, options)
    pending: Block | None = None
    finished = False
    try:
        for block in blocks:
            if pending is not None and pending.batches.stop != block.batches.start:
                ready, pending = pending, None  # never buffer across a gap in the plan
                commit_block(group, ready, result)
            pending = block if pending is None else pending.extend(block)
            result.audio_seconds += block.audio_seconds
            if block.oom_halvings:
                result.oom_halvings += block.oom_halvings
                result.oom_batch_seconds = block.oom_batch_seconds
            if len(pending) >= options.commit_rows or pending.frame_bytes >= MAX_PENDING_FRAME_BYTES:
                ready, pending = pending, None
                commit_block(group, ready, result)
            result.wall_seconds = time.perf_counter() - started
            bar.update(len(block), rtf=f"{result.real_time_factor:.3f}")
        ready, pending = pending, None
        commit_block(group, ready, result)
        finished = True
    except KeyboardInterrupt as exc:
        commit_block(group, pending, result)  # keep the batches finished before the stop
        signal = "SIGTERM" if isinstance(exc, Terminated) else "Ctrl-C"
        kept = int((group.status() == STATUS_STORED).sum())
        raise Interrupted(f"{signal}: stopped {group.key} with {kept} of {len(rows)} rows committed; re-run the "
                          "same command to resume", terminated=isinstance(exc, Terminated)) from None
    except FsError as exc:
        if pending is not None and not isinstance(exc, DiskFullError):
            commit_block(group, pending, result)
        raise
    finally:
        close = getattr(blocks, "close", None)
        if close is not None:
            close()
        bar.close(stopped=not finished)
    result.wall_seconds = time.perf_counter() - started
    result.peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if cuda:
        result.peak_gpu_mb = torch.cuda.max_memory_allocated() / 2**20
    if bool(group.batches_done().all()):
        group.mark_complete()
