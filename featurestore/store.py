"""The Zarr feature store: one group per (corpus, condition, model), layer-wise.

Layout of a group ``<corpus>/<condition>/<model_key>/`` (rows in extraction-plan order)::

    utt_ids      (N,)        str      joins to the manifest
    audio_sha256 (N,)        str      content hash of each utterance's audio file (the group's identity)
    mean         (N, L, D)   float32  mean over the utterance's real frames, every layer
    std          (N, L, D)   float32  standard deviation over the same frames
    n_frames     (N,)        int32    real frames per utterance
    status       (N,)        int8     0 pending, 1 stored, 2 skipped (reason in attrs["skipped"])
    batch_start  (B+1,)      int64    batch b holds rows batch_start[b]:batch_start[b+1]
    batch_done   (B,)        bool     commit marker per extraction batch (resumability)
    condition/<pos>.<kind>.<field> (N,)    per-utterance records of the condition chain (what each step
                                           drew and did; NaN / -1 / False / "" for rows without one)
    noise/{recording,offset,snr_db} (N,)  the noise step's mix records again, for readers of format 3
    frames/layer_<k>/values  (F, D) float16   frame-level states of chosen layers, ragged
    frames/layer_<k>/offsets (N+1,) int64     utterance i is values[offsets[i]:offsets[i+1]]

Every chunk carries a crc32c checksum and every chunk is written, even when it equals the fill
value (every write goes through an array opened with ``write_empty_chunks``: zarr does not persist
that setting), so a missing chunk is damage, never "zeros"; float arrays are filled with NaN so
that a read of a lost chunk can never pass for data, and reads of the integer index arrays whose
fill value looks like data (frame offsets, batch boundaries, ids, status) check that their chunks
exist. Group attributes hold the provenance.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import zarr
import zarr.codecs
import zarr.errors
from zarr.core.array_spec import ArrayConfigParams
from zarr.core.sync import sync

from data_manifests.manifest import is_safe_name
from featurestore import __version__, remote
from featurestore.errors import FsError
from featurestore.hints import command_for_group, command_from_filters, filter_flags
from featurestore.provenance import NoiseInfo, Provenance

FORMAT_VERSION = 3  # 3: checksummed chunks, audio identity, batch boundaries
STATUS_PENDING, STATUS_STORED, STATUS_SKIPPED = 0, 1, 2
ROW_CHUNK = 256
FRAME_CHUNK = 8192
_ROW_ARRAYS = ("utt_ids", "audio_sha256", "n_frames", "status", "noise/recording", "noise/offset",
               "noise/snr_db")
IDENTITY_ARRAYS = ("utt_ids", "audio_sha256", "batch_start")  # written once at creation: only --overwrite remakes them
_ALWAYS_CHECKED = ("batch_start", "batch_done", "utt_ids", "audio_sha256")  # checked whether or not rows are committed


class StoreError(FsError, RuntimeError):
    """A store or group that cannot be used as asked (missing, mismatched, locked, damaged, other format)."""


class GroupNotFoundError(StoreError):
    """No group matches a query (:meth:`FeatureStore.resolve`); the message gives the ``fs extract`` command."""


class AmbiguousGroupError(StoreError):
    """Several groups match a query (:meth:`FeatureStore.resolve`); the message says how to narrow it."""


def _codecs() -> dict[str, Any]:
    return {"compressors": [zarr.codecs.ZstdCodec(level=3), zarr.codecs.Crc32cCodec()]}


def _child_array(group: zarr.Group, name: str) -> zarr.Array:
    """The array at path ``name`` under ``group``; StoreError when a group sits there instead."""
    node = group[name]
    if not isinstance(node, zarr.Array):
        raise StoreError(f"{group.path}/{name} is a group where an array belongs; re-extract with --overwrite")
    return node


def _child_group(group: zarr.Group, name: str) -> zarr.Group:
    """The group at path ``name`` under ``group``; StoreError when an array sits there instead."""
    node = group[name]
    if not isinstance(node, zarr.Group):
        raise StoreError(f"{group.path}/{name} is an array where a group belongs; re-extract with --overwrite")
    return node


def _writable(group: zarr.Group, name: str) -> zarr.Array:
    """Array ``name`` of ``group`` set to write every chunk, even one equal to the fill value (a runtime
    setting of zarr, not stored in the metadata, so every array opened for writing needs it)."""
    config: ArrayConfigParams = {"write_empty_chunks": True}
    return _child_array(group, name).with_config(config)


@dataclass(frozen=True)
class ChunkDamage:
    """One lost (``corrupt`` None) or corrupt (``corrupt``: what the checksum check said) chunk."""

    array: str
    chunk: tuple[int, ...]
    corrupt: str | None = None

    @property
    def needs_overwrite(self) -> bool:
        """An identity array (ids, audio hashes, batch plan): resuming cannot recompute it."""
        return self.array in IDENTITY_ARRAYS

    def __str__(self) -> str:
        where = f"{self.array}: chunk {'.'.join(map(str, self.chunk))}"
        return f"{where} is corrupt ({self.corrupt})" if self.corrupt is not None else f"{where} is missing"


@dataclass(frozen=True)
class StoreKey:
    """Where a group lives: corpus / condition / model key. Same key, same bytes."""

    corpus: str
    condition: str
    model: str

    @property
    def path(self) -> str:
        return f"{self.corpus}/{self.condition}/{self.model}"

    def __str__(self) -> str:
        return self.path

    def __post_init__(self) -> None:
        """Every part is one plain name (:func:`~data_manifests.manifest.is_safe_name`): a key never
        reaches outside its store (``../B.zarr/x`` is refused wherever a key is made)."""
        for part in (self.corpus, self.condition, self.model):
            if not isinstance(part, str) or not is_safe_name(part):
                raise StoreError(f"store key {'/'.join(map(str, (self.corpus, self.condition, self.model)))!r}: "
                                 f"{part!r} is not a plain name (letters, digits, '-', '_', '.'; not starting with "
                                 "'.'); keys are CORPUS/CONDITION/MODEL as `fs store ls` shows them")

    @classmethod
    def parse(cls, text: str) -> StoreKey:
        """``CORPUS/CONDITION/MODEL`` (one leading or trailing '/' is tolerated); StoreError otherwise."""
        parts = text.strip("/").split("/")
        if len(parts) != 3:
            raise StoreError(f"store key {text!r} must be CORPUS/CONDITION/MODEL (see `fs store ls`)")
        return cls(*parts)


def slug(text: str) -> str:
    """A filesystem- and URL-safe name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "x"


class StoreGroup:
    """Read and write access to one (corpus, condition, model) group."""

    def __init__(self, key: StoreKey, group: zarr.Group):
        self.key = key
        self.group = group

    # -- facts ---------------------------------------------------------------------------
    @property
    def attrs(self) -> dict[str, Any]:
        return dict(self.group.attrs)

    @property
    def provenance(self) -> Provenance:
        """The group's provenance, typed (parsed from its attributes on each call: they change on commit)."""
        return Provenance.from_attrs(self.group.attrs)

    @property
    def num_layers(self) -> int:
        return int(self._attr("layers"))

    @property
    def dim(self) -> int:
        return int(self._attr("dim"))

    @property
    def frame_layers(self) -> list[int]:
        return [int(k) for k in self._attr("frame_layers") or []]

    def _attr(self, name: str) -> Any:
        """One top-level attribute of the group (None when absent), for the store's own bookkeeping."""
        return self.group.attrs.get(name)

    @property
    def is_complete(self) -> bool:
        """Marked complete and every batch committed (a lost commit marker makes it incomplete)."""
        return self._attr("state") == "complete" and bool(self.batches_done().all())

    def _array(self, name: str) -> zarr.Array:
        try:
            return _child_array(self.group, name)
        except (KeyError, FileNotFoundError):
            raise StoreError(f"{self.key}: array {name!r} is missing (its zarr.json was deleted?); this group "
                             f"cannot be repaired: re-extract it with {self.extract_command()} --overwrite") from None

    def _read(self, name: str, selection: Any = slice(None)) -> np.ndarray:
        try:
            return np.asarray(self._array(name)[selection])
        except StoreError:
            raise
        except Exception as exc:  # checksum mismatch, undecodable chunk
            fix = self.repair_command([ChunkDamage(name, (0,), f"{type(exc).__name__}: {exc}")])
            raise StoreError(f"{self.key}: array {name!r} is damaged ({type(exc).__name__}: {exc}); "
                             f"run `fs store verify`, then {fix}") from None

    def _read_whole(self, name: str) -> np.ndarray:
        """Array ``name`` in full, refusing (StoreError) a lost chunk: for integer index arrays whose
        fill value would pass for data (offsets 0 read as empty frames, batch bounds 0)."""
        arr = self._array(name)
        grid = [range(math.ceil(s / c)) for s, c in zip(arr.shape, arr.chunks)]
        lost = sorted(set(np.ndindex(*[len(g) for g in grid])) - self._present_chunks(name)) if 0 not in arr.shape else []
        if lost:
            fix = self.repair_command([ChunkDamage(name, lost[0])])
            raise StoreError(f"{self.key}: chunk {'.'.join(map(str, lost[0]))} of {name!r} is missing (lost); run "
                             f"`fs store verify`, then {fix}")
        return self._read(name)

    def repair_command(self, problems: list[ChunkDamage]) -> str:
        """The command that mends ``problems``: ``--overwrite`` for an identity array, ``--repair`` for a
        corrupt chunk, else the plain ``fs extract`` that recomputes lost chunks on resume."""
        command = self.extract_command()
        if any(p.needs_overwrite for p in problems):
            return f"{command} --overwrite"
        return f"{command} --repair" if any(p.corrupt is not None for p in problems) else command

    def utt_ids(self) -> np.ndarray:
        """(N,) utterance ids in row order."""
        return np.array(self._read("utt_ids").tolist(), dtype=str)

    def audio_hashes(self) -> np.ndarray:
        """(N,) sha256 of each utterance's audio file, as extracted."""
        return np.array(self._read("audio_sha256").tolist(), dtype=str)

    def status(self) -> np.ndarray:
        return self._read("status")

    def n_frames(self) -> np.ndarray:
        return self._read("n_frames")

    def batch_bounds(self) -> np.ndarray:
        """(B+1,) row boundaries of the extraction batches; StoreError when their chunk is lost."""
        return self._read_whole("batch_start")

    def batches_done(self) -> np.ndarray:
        return self._read("batch_done")

    def noise_mix(self) -> dict[str, np.ndarray] | None:
        """Per-utterance mix records (recording, offset, achieved snr_db) of a noisy group, else None."""
        if "noise" not in self.group:
            return None
        return {"recording": np.array(self._read("noise/recording").tolist(), dtype=str),
                "offset": self._read("noise/offset"), "snr_db": self._read("noise/snr_db")}

    def condition_columns(self) -> dict[str, np.ndarray]:
        """The condition records as ``{"<position>.<kind>.<field>": (N,) array}`` (str columns as object
        arrays), the form :func:`featurestore.conditions.columns_to_records` reads; {} for a clean group
        or one written before conditions were recorded."""
        if "condition" not in self.group:
            return {}
        columns = {}
        for name in sorted(_child_group(self.group, "condition").array_keys()):
            column = self._read(f"condition/{name}")
            columns[name] = np.array(column.tolist(), dtype=object) if column.dtype.kind not in "fiub" else column
        return columns

    def condition_chain(self) -> Any:
        """The :class:`~featurestore.conditions.ConditionChain` that made this group, from its attributes
        (a group of format 3 without a chain: its noise spec, or the clean chain)."""
        from featurestore.conditions import ConditionChain
        from featurestore.noise import NoiseSpec

        condition = self.provenance.condition
        if condition.chain:
            return ConditionChain.from_dict(dict(condition.chain))
        noise = condition.noise
        return ConditionChain.from_noise(NoiseSpec.from_dict(dict(noise.spec)) if noise is not None else None)

    def skipped(self) -> dict[str, str]:
        return dict(self._attr("skipped") or {})

    def extract_command(self) -> str:
        """The ``fs extract`` command that (re)makes this group, as recorded at creation."""
        return self.provenance.command or f"fs extract --corpus {self.key.corpus} --model MODEL"

    # -- reading -------------------------------------------------------------------------
    def _check_readable(self, allow_incomplete: bool) -> None:
        for name in ("utt_ids", "status"):  # a lost index chunk would silently empty every read
            if not self._present_chunks(name):
                raise StoreError(f"{self.key}: the chunk of {name!r} is missing; run `fs store verify`, then "
                                 f"{self.repair_command([ChunkDamage(name, (0,))])} to recompute it")
        if not allow_incomplete and not self.is_complete:
            stored = int((self.status() == STATUS_STORED).sum())
            raise StoreError(f"{self.key} is incomplete ({stored} of {self.status().size} rows stored); finish it "
                             f"with {self.extract_command()}, or read it with allow_incomplete=True")

    def stored_rows(self) -> np.ndarray:
        """Indices of rows holding values (status stored)."""
        return np.flatnonzero(self.status() == STATUS_STORED)

    def pooled(self, layer: int | None = None, stat: str = "mean", *,
               allow_incomplete: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """``(utt_ids, X)`` of stored utterances: X is (n, D) for one layer, (n, L, D) for all.

        Refuses an incomplete group unless ``allow_incomplete``, and a damaged one always.
        """
        if stat not in ("mean", "std"):
            raise StoreError(f"unknown pooled statistic {stat!r}; use 'mean' or 'std'")
        self._check_readable(allow_incomplete)
        rows = self.stored_rows()
        if layer is None:
            values = self._read(stat)
        else:
            values = self._read(stat, (slice(None), self.layer_index(layer), slice(None)))
        if rows.size != values.shape[0]:  # fancy indexing copies: only when some rows are not stored
            values = values[rows]
        if np.isnan(values).any():
            raise StoreError(f"{self.key}: {stat} holds NaN in stored rows (a lost or damaged chunk); run "
                             f"`fs store verify`, then {self.extract_command()} --repair")
        return self.utt_ids()[rows], values

    def layer_index(self, layer: int) -> int:
        """``layer`` as a non-negative index (negative counts from the last); StoreError if out of range."""
        if isinstance(layer, bool) or not -self.num_layers <= int(layer) < self.num_layers:
            raise StoreError(f"layer {layer} out of range: {self.key} has layers 0..{self.num_layers - 1}")
        return int(layer) % self.num_layers

    def frame_offsets(self, layer: int) -> np.ndarray:
        """(N+1,) offsets of ``layer``'s frame values; StoreError when their chunk is lost (zeros would
        read as empty frames)."""
        if layer not in self.frame_layers:
            command = command_for_group(self.provenance, self.key.corpus, frames={*self.frame_layers, layer},
                                        extra=("--overwrite",))
            raise StoreError(f"layer {layer} has no frame-level states in {self.key} (stored: "
                             f"{self.frame_layers}); extract them with {command}")
        return self._read_whole(f"frames/layer_{layer}/offsets")

    def frame_rows(self, layer: int, rows: np.ndarray | list[int], *,
                   allow_incomplete: bool = False) -> list[np.ndarray]:
        """Frames of the given rows: a list of (T_i, D) float16 arrays, in the order of ``rows``.

        Rows are read in runs: rows whose frames lie in the same or neighbouring chunks are read
        with one slice, so each chunk a call touches is decompressed once.
        """
        self._check_readable(allow_incomplete)
        offsets = self.frame_offsets(layer)
        node = f"frames/layer_{layer}/values"
        rows = np.asarray(rows, dtype=np.int64)
        chunk = int(self._array(node).chunks[0])
        out: dict[int, np.ndarray] = {}
        order = rows[np.argsort(offsets[rows], kind="stable")]
        run: list[int] = []
        for r in [*order.tolist(), None]:
            if run and (r is None or offsets[r] // chunk > (offsets[run[-1] + 1] - 1) // chunk + 1):
                lo, hi = int(offsets[run[0]]), int(max(offsets[i + 1] for i in run))
                values = self._read(node, slice(lo, hi))
                if np.isnan(values).any():
                    raise StoreError(f"{self.key}: frames of layer {layer} hold NaN (a lost or damaged chunk); run "
                                     f"`fs store verify`, then {self.extract_command()} --repair")
                for i in run:
                    out[i] = values[int(offsets[i]) - lo:int(offsets[i + 1]) - lo]
                run = []
            if r is not None:
                run.append(r)
        return [out[int(r)] for r in rows]

    def frames(self, layer: int, *, allow_incomplete: bool = False) -> tuple[np.ndarray, list[np.ndarray]]:
        """``(utt_ids, [frames_i (T_i, D) float16])`` of stored rows, for a layer stored at frame level."""
        self._check_readable(allow_incomplete)
        offsets = self.frame_offsets(layer)
        rows = self.stored_rows()
        end = int(offsets[rows + 1].max()) if rows.size else 0  # a partial group's last offset is still 0
        values = self._read(f"frames/layer_{layer}/values", slice(0, end))
        if np.isnan(values).any():
            raise StoreError(f"{self.key}: frames of layer {layer} hold NaN (a lost or damaged chunk); run "
                             f"`fs store verify`, then {self.extract_command()} --repair")
        return self.utt_ids()[rows], [values[offsets[i]:offsets[i + 1]] for i in rows]

    def summary(self) -> dict[str, Any]:
        """What a person needs to tell groups apart (used by ``fs store ls``)."""
        prov = self.provenance
        status = self.status()
        model, noise = prov.model, prov.noise
        return {
            "key": self.key.path, "corpus": self.key.corpus, "condition": self.key.condition,
            "model": model.name or None, "aliases": list(prov.aliases), "model_id": model.model_id or None,
            "model_key": self.key.model, "family": model.family or None,
            "weights_hash": model.weights_hash[:16], "pretrained": model.pretrained,
            "whisper_input": model.whisper_input, "seed": model.seed,
            "noise": noise.source_name if noise is not None else None,
            "snr_db": noise.snr_db if noise is not None else None,
            "noise_seed": noise.seed if noise is not None else None,
            "condition_text": prov.condition.text,
            "layers": prov.layers, "dim": prov.dim, "frame_layers": list(prov.frame_layers),
            "utterances": int(status.size), "stored": int((status == STATUS_STORED).sum()),
            "skipped": int((status == STATUS_SKIPPED).sum()), "pending": int((status == STATUS_PENDING).sum()),
            "complete": self.is_complete, "state": prov.state or None, "fs_version": prov.fs_version or None,
            "created": prov.created or None,
        }

    # -- integrity -----------------------------------------------------------------------
    def _array_names(self) -> list[str]:
        names = ["utt_ids", "audio_sha256", "mean", "std", "n_frames", "status", "batch_start", "batch_done"]
        if "noise" in self.group:
            names += ["noise/recording", "noise/offset", "noise/snr_db"]
        if "condition" in self.group:
            names += [f"condition/{name}" for name in sorted(_child_group(self.group, "condition").array_keys())]
        for layer in self.frame_layers:
            names += [f"frames/layer_{layer}/offsets", f"frames/layer_{layer}/values"]
        return names

    def _present_chunks(self, name: str) -> set[tuple[int, ...]]:
        store, prefix = self.group.store, f"{self.group.path}/{name}/c/"

        async def listing() -> list[str]:
            return [k async for k in store.list_prefix(prefix)]

        keys = sync(listing())
        return {tuple(int(p) for p in k[len(prefix):].split("/")) for k in keys
                if not k.endswith(".partial")}

    def chunk_rows(self, name: str, coord: tuple[int, ...]) -> np.ndarray:
        """Row indices whose values live in chunk ``coord`` of array ``name``."""
        n = int(self._array("utt_ids").shape[0])
        arr = self._array(name)
        if name.startswith("frames/") and name.endswith("/values"):
            try:
                offsets = self._read_whole(name.rsplit("/", 1)[0] + "/offsets")
            except StoreError:  # lost or corrupt offsets: damage() reports them, and they cover every row
                return np.arange(n)
            lo, hi = coord[0] * arr.chunks[0], (coord[0] + 1) * arr.chunks[0]
            return np.flatnonzero((offsets[1:] > lo) & (offsets[:-1] < hi))
        if name in ("batch_start", "batch_done") or name.endswith("/offsets"):
            return np.arange(n)
        lo = coord[0] * arr.chunks[0]
        return np.arange(lo, min(lo + arr.chunks[0], n))

    def _committed(self, n: int) -> np.ndarray:
        """(N,) bool: rows of committed batches; every row when the batch records cannot be read."""
        try:
            bounds, done = self.batch_bounds(), self.batches_done()
        except StoreError:
            return np.ones(n, dtype=bool)
        committed = np.zeros(n, dtype=bool)
        for b in np.flatnonzero(done):
            committed[bounds[b]:bounds[b + 1]] = True
        return committed

    def damage(self, checksums: bool = False, drop_corrupt: bool = False) -> tuple[np.ndarray, list[ChunkDamage]]:
        """Rows that a missing (or, with ``checksums``, corrupt) chunk makes unreliable.

        Returns ``(bad_rows (N,) bool, problems)``. Only chunks that committed rows need count as
        missing. With ``checksums`` every chunk is read and its crc32c checked (reads the group);
        with ``drop_corrupt`` too, a corrupt chunk of an array that resuming recomputes is deleted,
        so that it reads as lost from then on (``fs extract --repair``).
        """
        n = int(self._array("utt_ids").shape[0])
        bad = np.zeros(n, dtype=bool)
        problems: list[ChunkDamage] = []
        committed = self._committed(n)
        for name in self._array_names():
            arr = self._array(name)
            if 0 in arr.shape:
                continue
            grid = [range(math.ceil(s / c)) for s, c in zip(arr.shape, arr.chunks)]
            present = self._present_chunks(name)
            for coord in np.ndindex(*[len(g) for g in grid]):
                rows = self.chunk_rows(name, coord)
                if not committed[rows].any() and name not in _ALWAYS_CHECKED:
                    continue
                if coord not in present:
                    problems.append(ChunkDamage(name, coord))
                    bad[rows] = True
                elif checksums:
                    sel = tuple(slice(i * c, (i + 1) * c) for i, c in zip(coord, arr.chunks))
                    try:
                        arr[sel]
                    except Exception as exc:
                        problems.append(ChunkDamage(name, coord, f"{type(exc).__name__}: {exc}"))
                        bad[rows] = True
                        if drop_corrupt and name not in IDENTITY_ARRAYS:
                            self.drop_chunk(name, coord)
        return bad, problems

    def drop_chunk(self, name: str, coord: tuple[int, ...]) -> None:
        """Delete one chunk (a corrupt one, before it is recomputed)."""
        key = f"{self.group.path}/{name}/c/{'/'.join(map(str, coord))}"
        sync(self.group.store.delete(key))

    # -- writing -------------------------------------------------------------------------
    def commit(self, batches: range, start: int, mean: np.ndarray, std: np.ndarray, n_frames: np.ndarray,
               status: np.ndarray, frames: dict[int, list[np.ndarray]], skipped: dict[str, str],
               noise: dict[str, np.ndarray] | None = None, records: list[dict[str, Any] | None] | None = None) -> None:
        """Write rows ``start:start+len(mean)`` (the rows of ``batches``), then mark those batches done.

        ``records``: the condition record of each row (None for a skipped one), written as the group's
        ``condition/`` columns and, for a noise step, its ``noise/`` columns.

        Rows written but not yet marked (a writer killed mid-commit) are simply written again on
        resume: chunk writes are atomic files and the commit marker is written after the data.
        """
        stop = start + len(mean)
        for layer, per_utt in frames.items():
            node = _child_group(self.group, f"frames/layer_{layer}")
            offsets_arr = _writable(node, "offsets")
            begin = int(np.asarray(offsets_arr[start]).item())
            counts = np.array([f.shape[0] for f in per_utt], dtype=np.int64)
            new_offsets = begin + np.cumsum(counts)
            end = int(new_offsets[-1]) if len(counts) else begin
            values = _writable(node, "values")
            if values.shape[0] < end:
                values.resize((end, self.dim))
            if end > begin:
                values[begin:end] = np.concatenate(per_utt).astype(np.float16)
            offsets_arr[start + 1: stop + 1] = new_offsets
        conditions = self._record_columns(records) if records is not None else {}
        noise = {**(noise or {}), **self._noise_columns(conditions)}
        columns: list[tuple[str, np.ndarray]] = [
            ("mean", mean.astype(np.float32)), ("std", std.astype(np.float32)), ("n_frames", n_frames.astype(np.int32)),
            ("status", status.astype(np.int8)), *((f"noise/{k}", v) for k, v in noise.items()),
            *((f"condition/{k}", v) for k, v in conditions.items())]
        for name, rows in columns:
            _writable(self.group, name)[start:stop] = rows
        merged = self.skipped()
        for utt in self.utt_ids()[start:stop][status.astype(np.int8) == STATUS_STORED]:
            merged.pop(str(utt), None)
        merged.update(skipped)
        if merged != self.skipped():
            self.group.attrs["skipped"] = merged
        _writable(self.group, "batch_done")[batches.start:batches.stop] = True

    def _record_columns(self, records: list[dict[str, Any] | None]) -> dict[str, np.ndarray]:
        """The group's condition columns for ``records`` (n,) each; a column no record fills (every row
        skipped) holds its empty value."""
        from featurestore.conditions import records_to_columns

        if "condition" not in self.group:
            return {}
        columns = records_to_columns(records)
        node = _child_group(self.group, "condition")
        out = {}
        for name in node.array_keys():
            arr = _child_array(node, name)
            column = columns.get(name)
            if column is None:
                column = np.full(len(records), arr.fill_value, dtype=object if arr.dtype.kind not in "fiub" else arr.dtype)
            out[name] = np.asarray(column.tolist(), dtype=str) if column.dtype == object else column
        return out

    @staticmethod
    def _noise_columns(columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``noise/{recording,offset,snr_db}`` (format 3's mix records) out of the noise step's columns."""
        return {name.rsplit(".", 1)[1]: column for name, column in columns.items()
                if name.split(".")[1] == "noise" and name.rsplit(".", 1)[1] in ("recording", "offset", "snr_db")}

    def reopen_batches(self, batches: list[int]) -> None:
        """Mark batches uncommitted (to recompute them) and the group incomplete."""
        done = self.batches_done()
        done[np.asarray(batches, dtype=np.int64)] = False
        self.group.attrs["state"] = "incomplete"
        _writable(self.group, "batch_done")[:] = done

    def set_audio_hashes(self, rows: np.ndarray, hashes: list[str]) -> None:
        """Record new audio hashes for ``rows`` (skipped rows retried after their file was fixed)."""
        current = self._read("audio_sha256").astype(object)
        current[np.asarray(rows, dtype=np.int64)] = hashes
        _writable(self.group, "audio_sha256")[:] = np.asarray(current.tolist(), dtype=str)

    def add_alias(self, name: str) -> None:
        """Remember another name a user extracted these weights under (``find`` matches it)."""
        prov = self.provenance
        aliases = list(prov.aliases)
        if name not in aliases and name != prov.model.name:
            self.group.attrs["aliases"] = aliases + [name]

    def mark_complete(self) -> None:
        self.group.attrs["state"] = "complete"


def _model_names(prov: Provenance, key: StoreKey) -> set[str]:
    names = {key.model, *prov.model_names()}
    for name in list(names):
        if name and ("/" in name or name.startswith(".")) and Path(name).exists():
            names.add(str(Path(name).resolve()))
    return {n for n in names if n}


def _matches(prov: Provenance, filters: dict[str, Any]) -> bool:
    """Whether the group of ``prov`` has every recorded setting given in ``filters`` (None: any).

    ``noise`` (a noise folder or file) selects groups by the fingerprint of its recordings, never by
    the folder's name: two folders both called ``noise`` with different recordings are different
    conditions. A source that no longer exists matches only the group that recorded that exact path.
    """
    noise = prov.noise
    facts: dict[str, str | int | None] = {"whisper_input": prov.model.whisper_input, "seed": prov.model.seed,
                                          "noise_seed": noise.seed if noise is not None else None}
    for name, want in filters.items():
        if want is None:
            continue
        if name == "noise":
            if noise is None or not _same_noise(noise, str(want)):
                return False
        elif name == "snr_db":
            if noise is None or noise.snr_db is None or noise.snr_db != float(want):
                return False
        elif facts[name] != want:
            return False
    return True


def _same_noise(noise: NoiseInfo, source: str) -> bool:
    """Whether ``source`` holds the recordings that ``noise`` mixed (same content fingerprint, read with
    the group's layout, environments and channel)."""
    from featurestore.noise import NoiseError, recordings_fingerprint  # audiomentations: only when asked

    if not Path(source).expanduser().exists():
        return source == noise.source
    try:
        have = recordings_fingerprint(source, layout=noise.layout, environments=noise.environments,
                                      channel=noise.channel)
    except NoiseError:  # e.g. the group's environments are not in that folder: not its recordings
        return False
    return bool(noise.fingerprint) and have == noise.fingerprint


class FeatureStore:
    """A Zarr store of groups keyed by (corpus, condition, model); local path or fsspec URL."""

    def __init__(self, url: str | Path):
        self.url = str(url)
        self._local = remote.is_local(self.url)
        self.restored_root = False  # set when exists() found groups under a lost root zarr.json and restored it

    def _root(self, mode: Literal["r", "a"] = "a") -> zarr.Group:
        try:
            return zarr.open_group(self.url, mode=mode)
        except FileNotFoundError:
            if not self._local:  # a missing bucket (or refused access) is named by the probe, by exception type
                try:
                    remote.probe(self.url)
                except remote.RemoteStoreError as exc:
                    raise StoreError(str(exc)) from None
            raise StoreError(f"no feature store at {self.url}; run `fs extract` first") from None
        except (PermissionError, OSError, remote.RemoteStoreError) as exc:
            if self._local:
                raise
            raise StoreError(str(remote.access_error(self.url, exc, "cannot open"))) from None

    def _children(self, prefix: str) -> list[str]:
        """Names directly under ``prefix`` (\"\" or ending in /) of the store, through the zarr store API."""
        store = self._root("r").store

        async def listing() -> list[str]:
            return [k async for k in store.list_dir(prefix)]

        return sorted(sync(listing()))

    def _folder(self, key: StoreKey) -> bool:
        """Whether anything is stored under the group's path (its metadata may be lost)."""
        if self._local:
            return self._local_path(key).is_dir()
        try:
            return bool(self._children(key.path + "/"))
        except (StoreError, FileNotFoundError):
            return False

    def exists(self) -> bool:
        """Whether a store is at the URL. Its root metadata (``zarr.json``, which holds nothing but the
        format) is restored when it was lost but groups are stored, so that no command reads such a
        store as empty (``restored_root`` says so). A remote store is probed first: an unreachable
        endpoint, refused credentials or a missing bucket raise StoreError naming the cause."""
        if self._local:
            root = self._local_path()
            if (root / "zarr.json").exists():
                return True
            if not any(root.glob("*/*/*/zarr.json")):
                return False
        else:
            try:
                names = remote.probe(self.url)
            except remote.RemoteStoreError as exc:
                raise StoreError(str(exc)) from None
            if "zarr.json" in names:
                return True
            if not any(is_safe_name(n) for n in names):
                return False
        self._restore_root()
        return True

    def _restore_root(self) -> None:
        """Write the lost root metadata of a store that still holds groups (StoreError with the manual fix)."""
        try:
            zarr.open_group(self.url, mode="a")
        except Exception as exc:
            raise StoreError(f"store {self.url} lost its root metadata (zarr.json) but still holds groups, and it "
                             f"cannot be restored here ({type(exc).__name__}: {exc}); make the store writable and run "
                             f"`fs store ls` again, or write {self.url.rstrip('/')}/zarr.json containing "
                             '{"zarr_format": 3, "node_type": "group", "attributes": {}}') from None
        self.restored_root = True

    def keys(self) -> list[StoreKey]:
        """Every group in the store, sorted; on a local store also folders whose metadata is lost."""
        if not self.exists():
            return []
        if self._local:
            root = self._local_path()
            found = {StoreKey(*p.relative_to(root).parts) for p in root.glob("*/*/*")
                     if p.is_dir() and all(is_safe_name(part) for part in p.relative_to(root).parts)
                     and ((p / "zarr.json").exists() or any(p.glob("*/zarr.json")))}
            return sorted(found, key=lambda k: k.path)
        found_remote = []  # the same walk through the store's listing: groups whose metadata is lost count too
        for corpus in self._children(""):
            if corpus == "zarr.json" or not is_safe_name(corpus):
                continue
            for condition in filter(is_safe_name, self._children(f"{corpus}/")):
                for model in filter(is_safe_name, self._children(f"{corpus}/{condition}/")):
                    path = f"{corpus}/{condition}/{model}/"
                    names = self._children(path)
                    if "zarr.json" in names or any("zarr.json" in self._children(f"{path}{n}/")
                                                   for n in names if n != "zarr.json"):
                        found_remote.append(StoreKey(corpus, condition, model))
        return sorted(found_remote, key=lambda k: k.path)

    def open(self, key: StoreKey | str, mode: str = "r") -> StoreGroup:
        key = StoreKey.parse(key) if isinstance(key, str) else key
        try:
            group = zarr.open_group(self.url, mode="r" if mode == "r" else "r+", path=key.path)
        except (FileNotFoundError, KeyError):
            if self._folder(key):
                raise StoreError(f"{key}: the group's metadata (zarr.json) is missing; it cannot be repaired: "
                                 "remove it with `fs store rm` and extract it again") from None
            raise StoreError(f"no group {key} in store {self.url}; see `fs store ls`") from None
        except Exception as exc:
            raise StoreError(f"{key}: unreadable group metadata ({exc}); remove it with `fs store rm` and "
                             "extract it again") from None
        if "format_version" not in group.attrs:
            raise StoreError(f"{key} in {self.url} is not an fs feature group (no format_version)")
        if group.attrs["format_version"] != FORMAT_VERSION:
            raise StoreError(f"{key} was written in store format {group.attrs['format_version']} by fs "
                             f"{group.attrs.get('fs_version')}; this fs ({__version__}) reads format "
                             f"{FORMAT_VERSION}: re-extract it with --overwrite or use that fs version")
        return StoreGroup(key, group)

    def find(self, corpus: str | None = None, model: str | None = None, condition: str | None = None, *,
             whisper_input: str | None = None, seed: int | None = None, snr_db: float | None = None,
             noise_seed: int | None = None, noise: str | None = None) -> list[StoreKey]:
        """Groups matching exactly: corpus; condition (``clean`` or a condition key); model (the name
        given to ``fs extract``, a model id, a local directory or the model key — never a prefix, so
        ``xlsr`` never matches ``xlsr-random``); and recorded settings where given."""
        filters = {"whisper_input": whisper_input, "seed": seed, "snr_db": snr_db, "noise_seed": noise_seed,
                   "noise": noise}
        want_model = None
        if model is not None:
            want_model = {model} | ({str(Path(model).resolve())} if Path(model).exists() else set())
        found = []
        for key in self.keys():
            if corpus not in (None, key.corpus) or condition not in (None, key.condition):
                continue
            if want_model is None and not any(v is not None for v in filters.values()):
                found.append(key)
                continue
            try:
                prov = self.open(key).provenance
            except StoreError:
                continue
            if want_model is not None and not (want_model & _model_names(prov, key)):
                continue
            if _matches(prov, filters):
                found.append(key)
        return found

    def resolve(self, corpus: str, model: str, condition: str | None = "clean", **filters: Any) -> StoreKey:
        """Exactly one group for (corpus, model, condition, settings), or a StoreError that lists the
        candidates and how to tell them apart (or the ``fs extract`` command that makes it)."""
        found = self.find(corpus=corpus, model=model, condition=condition, **filters)
        if len(found) == 1:
            return found[0]
        if not found:
            others = [k.path for k in self.find(corpus=corpus, model=model)]
            given = filter_flags(filters)
            hint = f"; groups of that model and corpus: {others}" if others else ""
            command = command_from_filters(model, [corpus], filters, noisy=condition not in (None, "clean"))
            raise GroupNotFoundError(f"no group for corpus {corpus!r}, model {model!r}, condition {condition!r}"
                             f"{' with ' + given if given else ''}{hint}. Make it with: {command}")
        described = []
        for key in found:
            s = self.open(key).summary()
            described.append(f"{key.path} (input {s['whisper_input']}, seed {s['seed']}, "
                             f"snr {s['snr_db']}, noise seed {s['noise_seed']})")
        raise AmbiguousGroupError(f"{len(found)} groups match corpus {corpus!r}, model {model!r}, condition "
                         f"{condition!r}: " + "; ".join(described) +
                         ". Narrow it down (--whisper-input / --model-seed / --snr / --noise-seed) or give the model key")

    def has(self, key: StoreKey) -> bool:
        """Whether the group's metadata exists."""
        if self._local:
            return (self._local_path(key) / "zarr.json").exists()
        if not self.exists():
            return False
        return bool(sync(self._root("r").store.exists(f"{key.path}/zarr.json")))

    def _local_path(self, key: StoreKey | None = None) -> Path:
        root = Path(self.url.removeprefix("file://"))
        return root / key.path if key is not None else root

    def _parent(self, key: StoreKey, attempts: int = 5) -> zarr.Group:
        """``<corpus>/<condition>``, created if needed; another process creating it at once is not an error."""
        for attempt in range(attempts):
            try:
                return self._root("a").require_group(key.corpus).require_group(key.condition)
            except zarr.errors.ContainsGroupError:
                if attempt == attempts - 1:
                    raise
                time.sleep(0.05 * (attempt + 1))
        raise AssertionError("unreachable")

    def create(self, key: StoreKey, *, utt_ids: list[str], audio_sha256: list[str], num_layers: int, dim: int,
               batch_start: list[int], frame_layers: list[int], provenance: dict[str, Any],
               noisy: bool = False, condition_columns: dict[str, tuple[Any, Any]] | None = None) -> StoreGroup:
        """Create (or replace) a group with empty arrays and its provenance.

        ``batch_start`` (B+1,) gives the extraction plan's batch boundaries. ``noisy`` adds
        per-utterance records of the mix: ``noise/recording``, ``noise/offset`` and ``noise/snr_db``.
        ``condition_columns`` (``ConditionChain.record_columns``: name -> (dtype, empty value)) adds
        the condition records' columns ``condition/<name>``.
        """
        group = self._parent(key).create_group(key.model, overwrite=True)
        n = len(utt_ids)
        whole = (max(n, 1),)
        rows = min(ROW_CHUNK, max(n, 1))
        kw = _codecs()
        group.create_array("utt_ids", shape=(n,), dtype=str, chunks=whole, **kw)
        _writable(group, "utt_ids")[:] = np.asarray(utt_ids, dtype=str)
        group.create_array("audio_sha256", shape=(n,), dtype=str, chunks=whole, **kw)
        _writable(group, "audio_sha256")[:] = np.asarray(audio_sha256, dtype=str)
        for stat in ("mean", "std"):
            group.create_array(stat, shape=(n, num_layers, dim), dtype="float32", chunks=(rows, 1, dim),
                               fill_value=np.nan, **kw)
        group.create_array("n_frames", shape=(n,), dtype="int32", chunks=whole, fill_value=0, **kw)
        group.create_array("status", shape=(n,), dtype="int8", chunks=whole, fill_value=0, **kw)
        _writable(group, "status")[:] = np.zeros(n, np.int8)
        bounds = np.asarray(batch_start, dtype=np.int64)
        group.create_array("batch_start", shape=bounds.shape, dtype="int64", chunks=bounds.shape, **kw)
        _writable(group, "batch_start")[:] = bounds
        group.create_array("batch_done", shape=(bounds.size - 1,), dtype="bool", chunks=(max(bounds.size - 1, 1),),
                           fill_value=False, **kw)
        _writable(group, "batch_done")[:] = np.zeros(bounds.size - 1, bool)
        if noisy:
            noise = group.create_group("noise")
            noise.create_array("recording", shape=(n,), dtype=str, chunks=whole, **kw)
            noise.create_array("offset", shape=(n,), dtype="int64", chunks=whole, fill_value=-1, **kw)
            noise.create_array("snr_db", shape=(n,), dtype="float64", chunks=whole, fill_value=np.nan, **kw)
        for name, (dtype, empty) in (condition_columns or {}).items():
            if dtype is object:
                group.create_array(f"condition/{name}", shape=(n,), dtype=str, chunks=whole, **kw)
            else:
                group.create_array(f"condition/{name}", shape=(n,), dtype=dtype, chunks=whole, fill_value=empty, **kw)
        for layer in frame_layers:
            node = group.create_group(f"frames/layer_{layer}")
            node.create_array("values", shape=(0, dim), dtype="float16", chunks=(FRAME_CHUNK, dim),
                              fill_value=np.nan, **kw)
            node.create_array("offsets", shape=(n + 1,), dtype="int64", chunks=(n + 1,), fill_value=0, **kw)
            _writable(node, "offsets")[:] = np.zeros(n + 1, np.int64)
        attrs = dict(provenance)
        attrs.update({"format_version": FORMAT_VERSION, "fs_version": __version__, "state": "incomplete",
                      "layers": num_layers, "dim": dim, "frame_layers": list(frame_layers), "skipped": {}})
        group.attrs.update(json.loads(json.dumps(attrs, default=str)))
        return StoreGroup(key, group)

    def delete(self, key: StoreKey) -> None:
        if self._local:
            import shutil

            shutil.rmtree(self._local_path(key), ignore_errors=False)
            return
        root = self._root("a")
        del root[key.path]

    @contextmanager
    def lock(self, key: StoreKey) -> Iterator[None]:
        """Exclusive writer lock for one group: an flock beside a local store, a renewed lease object
        beside a remote one (see :mod:`featurestore.remote`). Its first write also proves the store
        writable: a missing bucket or denied access fails here, before anything is written."""
        if not self._local:
            try:
                with remote.lease(self.url, slug(key.path.replace("/", "__")), str(key)):
                    yield
            except remote.RemoteStoreError as exc:
                raise StoreError(str(exc)) from None
            return
        lock_dir = self._local_path().with_name(self._local_path().name + ".locks")
        lock_dir.mkdir(parents=True, exist_ok=True)
        path = lock_dir / (slug(key.path.replace("/", "__")) + ".lock")
        with open(path, "a+") as fh:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.seek(0)
                raise StoreError(f"another process ({fh.read().strip() or 'unknown pid'}) is writing {key}; "
                                 "wait for it to finish, or extract another model") from None
            fh.seek(0)
            fh.truncate()
            fh.write(str(os.getpid()))
            fh.flush()
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def remove_partial_writes(self, key: StoreKey) -> int:
        """Delete temp files that a killed writer left in group ``key`` (call while holding its lock).

        Object stores write every chunk with one atomic PUT, so a remote store has none (0).
        """
        if not self._local:
            return 0
        leftovers = list(self._local_path(key).rglob("*.partial"))
        for path in leftovers:
            path.unlink(missing_ok=True)
        return len(leftovers)

    def disk_bytes(self, key: StoreKey | None = None) -> int:
        """Bytes stored of the store or one group (local: files on disk; remote: objects under its prefix)."""
        if not self._local:
            try:
                return remote.du(self.url, key.path if key is not None else "")
            except remote.RemoteStoreError as exc:
                raise StoreError(str(exc)) from None
        return sum(p.stat().st_size for p in self._local_path(key).rglob("*") if p.is_file())
