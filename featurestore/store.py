"""The Zarr feature store: one group per (corpus, condition, model), layer-wise.

Layout of a group ``<corpus>/<condition>/<model_key>/`` (rows in extraction-plan order)::

    utt_ids   (N,)        str      joins to the manifest
    mean      (N, L, D)   float32  mean over the utterance's real frames, every layer
    std       (N, L, D)   float32  standard deviation over the same frames
    n_frames  (N,)        int32    real frames per utterance
    status    (N,)        int8     0 pending, 1 stored, 2 skipped (reason in attrs["skipped"])
    batch_done (B,)       bool     commit marker per extraction batch (resumability)
    frames/layer_<k>/values  (F, D) float16   frame-level states of chosen layers, ragged
    frames/layer_<k>/offsets (N+1,) int64     utterance i is values[offsets[i]:offsets[i+1]]

Group attributes hold the provenance (model and weights hash, feature-extractor settings,
pooling, sample rate, noise spec, manifest digest, code version). Chunks are one layer wide so
that reading one layer of a whole corpus touches only that layer's bytes.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import zarr

from featurestore import __version__

from featurestore.errors import FsError

FORMAT_VERSION = 2  # 2: per-utterance noise mix records
STATUS_PENDING, STATUS_STORED, STATUS_SKIPPED = 0, 1, 2
ROW_CHUNK = 256
FRAME_CHUNK = 8192


class StoreError(FsError, RuntimeError):
    """A store or group that cannot be used as asked (missing, mismatched, locked, other format)."""


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

    @classmethod
    def parse(cls, text: str) -> "StoreKey":
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

    # -- reading -------------------------------------------------------------------------
    @property
    def attrs(self) -> dict[str, Any]:
        return dict(self.group.attrs)

    @property
    def provenance(self) -> dict[str, Any]:
        return self.attrs

    @property
    def num_layers(self) -> int:
        return int(self.group.attrs["layers"])

    @property
    def dim(self) -> int:
        return int(self.group.attrs["dim"])

    @property
    def frame_layers(self) -> list[int]:
        return list(self.group.attrs.get("frame_layers", []))

    @property
    def is_complete(self) -> bool:
        return self.group.attrs.get("state") == "complete"

    def utt_ids(self) -> np.ndarray:
        return np.array(self.group["utt_ids"][:].tolist(), dtype=str)

    def status(self) -> np.ndarray:
        return np.asarray(self.group["status"][:])

    def n_frames(self) -> np.ndarray:
        return np.asarray(self.group["n_frames"][:])

    def noise_mix(self) -> dict[str, np.ndarray] | None:
        """Per-utterance mix records (recording, offset, achieved snr_db) of a noisy group, else None."""
        if "noise" not in self.group:
            return None
        node = self.group["noise"]
        return {"recording": np.array(node["recording"][:].tolist(), dtype=str),
                "offset": np.asarray(node["offset"][:]), "snr_db": np.asarray(node["snr_db"][:])}

    def skipped(self) -> dict[str, str]:
        return dict(self.group.attrs.get("skipped", {}))

    def pooled(self, layer: int | None = None, stat: str = "mean") -> tuple[np.ndarray, np.ndarray]:
        """``(utt_ids, X)`` for stored utterances: X is (n, D) for one layer, (n, L, D) for all."""
        if stat not in ("mean", "std"):
            raise StoreError(f"unknown pooled statistic {stat!r}; use 'mean' or 'std'")
        ok = self.status() == STATUS_STORED
        arr = self.group[stat]
        if layer is None:
            values = arr[:]
        else:
            if not -self.num_layers <= layer < self.num_layers:
                raise StoreError(f"layer {layer} out of range: {self.key} has layers 0..{self.num_layers - 1}")
            values = arr[:, layer % self.num_layers, :]
        return self.utt_ids()[ok], np.asarray(values)[ok]

    def frames(self, layer: int) -> tuple[np.ndarray, list[np.ndarray]]:
        """``(utt_ids, [frames_i (T_i, D) float16])`` for a layer stored at frame level."""
        if layer not in self.frame_layers:
            raise StoreError(f"layer {layer} has no frame-level states in {self.key} "
                             f"(stored: {self.frame_layers}); re-extract with --frames {layer}")
        node = self.group[f"frames/layer_{layer}"]
        offsets = np.asarray(node["offsets"][:])
        values = np.asarray(node["values"][: int(offsets[-1])])
        ok = self.status() == STATUS_STORED
        ids = self.utt_ids()
        return ids[ok], [values[offsets[i]:offsets[i + 1]] for i in np.flatnonzero(ok)]

    def summary(self) -> dict[str, Any]:
        status = self.status()
        attrs = self.attrs
        return {
            "key": self.key.path, "state": attrs.get("state"), "model": attrs.get("model", {}).get("name"),
            "model_id": attrs.get("model", {}).get("model_id"),
            "weights_hash": attrs.get("model", {}).get("weights_hash", "")[:16],
            "layers": attrs.get("layers"), "dim": attrs.get("dim"), "frame_layers": attrs.get("frame_layers"),
            "utterances": int(status.size), "stored": int((status == STATUS_STORED).sum()),
            "skipped": int((status == STATUS_SKIPPED).sum()), "pending": int((status == STATUS_PENDING).sum()),
            "condition": attrs.get("condition", {}).get("key"), "fs_version": attrs.get("fs_version"),
        }

    # -- writing -------------------------------------------------------------------------
    def batches_done(self) -> np.ndarray:
        return np.asarray(self.group["batch_done"][:])

    def commit(self, batches: range, start: int, mean: np.ndarray, std: np.ndarray, n_frames: np.ndarray,
               status: np.ndarray, frames: dict[int, list[np.ndarray]], skipped: dict[str, str],
               noise: dict[str, np.ndarray] | None = None) -> None:
        """Write rows ``start:start+len(mean)`` (the rows of ``batches``), then mark those batches done.

        Batches are committed in plan order; rows written but not yet marked (a writer killed
        mid-commit) are simply written again on resume: chunk writes are atomic files and the
        commit marker is written after the data.
        """
        stop = start + len(mean)
        for layer, per_utt in frames.items():
            node = self.group[f"frames/layer_{layer}"]
            offsets_arr = node["offsets"]
            begin = int(offsets_arr[start])
            counts = np.array([f.shape[0] for f in per_utt], dtype=np.int64)
            new_offsets = begin + np.cumsum(counts)
            end = int(new_offsets[-1]) if len(counts) else begin
            values = node["values"]
            if values.shape[0] != end:
                values.resize((end, self.dim))
            if end > begin:
                values[begin:end] = np.concatenate(per_utt).astype(np.float16)
            offsets_arr[start + 1: stop + 1] = new_offsets
        self.group["mean"][start:stop] = mean.astype(np.float32)
        self.group["std"][start:stop] = std.astype(np.float32)
        self.group["n_frames"][start:stop] = n_frames.astype(np.int32)
        self.group["status"][start:stop] = status.astype(np.int8)
        for name, values in (noise or {}).items():
            self.group[f"noise/{name}"][start:stop] = values
        if skipped:
            merged = self.skipped()
            merged.update(skipped)
            self.group.attrs["skipped"] = merged
        self.group["batch_done"][batches.start:batches.stop] = True

    def mark_complete(self) -> None:
        self.group.attrs["state"] = "complete"


class FeatureStore:
    """A Zarr store of groups keyed by (corpus, condition, model); local path or fsspec URL."""

    def __init__(self, url: str | Path):
        self.url = str(url)
        self._local = "://" not in self.url or self.url.startswith("file://")

    def _root(self, mode: str = "a") -> zarr.Group:
        try:
            return zarr.open_group(self.url, mode=mode)
        except FileNotFoundError:
            raise StoreError(f"no feature store at {self.url}; run `fs extract` first") from None

    def exists(self) -> bool:
        if self._local:
            return (self._local_path() / "zarr.json").exists()
        try:
            zarr.open_group(self.url, mode="r")
            return True
        except Exception:
            return False

    def keys(self) -> list[StoreKey]:
        """Every group in the store, sorted."""
        if not self.exists():
            return []
        root = self._root("r")
        found = []
        with warnings.catch_warnings():  # a live writer's temp files are not hierarchy members
            warnings.filterwarnings("ignore", message=".*not recognized as a component of a Zarr hierarchy")
            for corpus, cgroup in root.groups():
                for condition, dgroup in cgroup.groups():
                    for model, _ in dgroup.groups():
                        found.append(StoreKey(corpus, condition, model))
        return sorted(found, key=lambda k: k.path)

    def open(self, key: StoreKey | str, mode: str = "r") -> StoreGroup:
        key = StoreKey.parse(key) if isinstance(key, str) else key
        try:
            group = zarr.open_group(self.url, mode=mode, path=key.path)
        except (FileNotFoundError, KeyError):
            raise StoreError(f"no group {key} in store {self.url}; see `fs store ls`") from None
        if "format_version" not in group.attrs:
            raise StoreError(f"{key} in {self.url} is not an fs feature group (no format_version)")
        if group.attrs["format_version"] != FORMAT_VERSION:
            raise StoreError(f"{key} was written in store format {group.attrs['format_version']} by fs "
                             f"{group.attrs.get('fs_version')}; this fs ({__version__}) reads format "
                             f"{FORMAT_VERSION}: re-extract it with --overwrite or use that fs version")
        return StoreGroup(key, group)

    def find(self, corpus: str | None = None, model: str | None = None,
             condition: str | None = None) -> list[StoreKey]:
        """Groups matching a corpus, a condition key, and a model (key, key prefix, or the name given to
        ``fs extract``, e.g. ``whisper`` or a model directory)."""
        found = []
        for key in self.keys():
            if corpus not in (None, key.corpus) or condition not in (None, key.condition):
                continue
            if model is not None and not (key.model == model or key.model.startswith(f"{slug(model)}-")):
                if self.open(key).attrs.get("model", {}).get("name") != model:
                    continue
            found.append(key)
        return found

    def has(self, key: StoreKey) -> bool:
        return key in self.keys() if not self._local else (self._local_path(key) / "zarr.json").exists()

    def _local_path(self, key: StoreKey | None = None) -> Path:
        root = Path(self.url.removeprefix("file://"))
        return root / key.path if key is not None else root

    def create(self, key: StoreKey, *, utt_ids: list[str], num_layers: int, dim: int, num_batches: int,
               frame_layers: list[int], provenance: dict[str, Any], noisy: bool = False) -> StoreGroup:
        """Create (or replace) a group with empty arrays and its provenance.

        ``noisy`` adds per-utterance records of the mix: ``noise/recording``, ``noise/offset`` and
        ``noise/snr_db`` (the SNR achieved, checked by verify).
        """
        root = self._root("a")
        group = root.require_group(key.corpus).require_group(key.condition).create_group(key.model, overwrite=True)
        n = len(utt_ids)
        rows = min(ROW_CHUNK, max(n, 1))
        group.create_array("utt_ids", shape=(n,), dtype=str, chunks=(max(n, 1),))
        group["utt_ids"][:] = np.asarray(utt_ids, dtype=str)
        for stat in ("mean", "std"):
            group.create_array(stat, shape=(n, num_layers, dim), dtype="float32", chunks=(rows, 1, dim),
                               fill_value=0.0)
        group.create_array("n_frames", shape=(n,), dtype="int32", chunks=(max(n, 1),), fill_value=0)
        group.create_array("status", shape=(n,), dtype="int8", chunks=(max(n, 1),), fill_value=0)
        group.create_array("batch_done", shape=(num_batches,), dtype="bool", chunks=(max(num_batches, 1),),
                           fill_value=False)
        if noisy:
            noise = group.create_group("noise")
            noise.create_array("recording", shape=(n,), dtype=str, chunks=(max(n, 1),))
            noise.create_array("offset", shape=(n,), dtype="int64", chunks=(max(n, 1),), fill_value=-1)
            noise.create_array("snr_db", shape=(n,), dtype="float64", chunks=(max(n, 1),), fill_value=np.nan)
        for layer in frame_layers:
            node = group.create_group(f"frames/layer_{layer}")
            node.create_array("values", shape=(0, dim), dtype="float16", chunks=(FRAME_CHUNK, dim), fill_value=0.0)
            node.create_array("offsets", shape=(n + 1,), dtype="int64", chunks=(n + 1,), fill_value=0)
        attrs = dict(provenance)
        attrs.update({"format_version": FORMAT_VERSION, "fs_version": __version__, "state": "incomplete",
                      "layers": num_layers, "dim": dim, "frame_layers": list(frame_layers), "skipped": {}})
        group.attrs.update(json.loads(json.dumps(attrs, default=str)))
        return StoreGroup(key, group)

    def delete(self, key: StoreKey) -> None:
        root = self._root("a")
        del root[key.path]

    @contextmanager
    def lock(self, key: StoreKey) -> Iterator[None]:
        """Exclusive writer lock for one group (local stores; remote stores rely on distinct keys)."""
        if not self._local:
            yield
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
        """Delete temp files that a killed writer left in group ``key`` (call while holding its lock)."""
        if not self._local:
            return 0
        leftovers = list(self._local_path(key).rglob("*.partial"))
        for path in leftovers:
            path.unlink(missing_ok=True)
        return len(leftovers)

    def disk_bytes(self, key: StoreKey | None = None) -> int:
        """Bytes on disk of the store or one group (local stores only)."""
        return sum(p.stat().st_size for p in self._local_path(key).rglob("*") if p.is_file())
