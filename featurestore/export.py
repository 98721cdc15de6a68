"""Export a store group to HDF5 (h5py) for users outside Zarr.

File layout (N rows in the group's row order; row i of every dataset is utterance ``utt_ids[i]``)::

    utt_ids, status (0 pending, 1 stored, 2 skipped), n_frames             (N,)
    mean, std                                                             (N, L, D) float32
    labels, speakers, gender, language   from the corpus manifest; "" for ids it lacks   (N,) str
    noise/recording, noise/offset, noise/snr_db   per-utterance mix records (noisy groups)  (N,)
    frames/layer_<k>/offsets (N+1,), frames/layer_<k>/values (F, D) float16
    attrs: key, provenance (JSON), and with a manifest: manifest_digest, label_map, classes
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np

from data_manifests.manifest import Manifest
from featurestore.store import StoreError, StoreGroup

MANIFEST_COLUMNS = {"labels": "label", "speakers": "speaker", "gender": "gender", "language": "language"}


def manifest_columns(ids: np.ndarray, manifest: Manifest) -> dict[str, np.ndarray]:
    """Manifest columns joined on ``ids`` (N,): ``{dataset name: (N,) str}``, "" where an id is absent."""
    by_id = {row["utt_id"]: row for row in manifest.rows}
    return {name: np.array([str(by_id.get(u, {}).get(column, "")) for u in ids.tolist()], dtype=object)
            for name, column in MANIFEST_COLUMNS.items()}


def export_h5(group: StoreGroup, path: str | Path, manifest: Manifest | None = None) -> Path:
    """Write the group (pooled stats, frames, provenance, noise records and, given the corpus
    ``manifest``, labels/speakers/gender/language) to ``path`` atomically (temp file + rename).

    Refuses (StoreError) a group with a missing or corrupt chunk under a committed row (every chunk
    is read and its checksum checked first: nothing is written for a damaged group).
    """
    _, problems = group.damage(checksums=True)
    if problems:
        raise StoreError(f"{group.key} is damaged ({problems[0]}{' ...' if len(problems) > 1 else ''}); "
                         f"nothing exported: run `fs store verify`, then {group.repair_command(problems)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    text = h5py.string_dtype()
    ids = group.utt_ids()
    try:
        with h5py.File(tmp, "w") as h5:
            h5.attrs["provenance"] = json.dumps(group.attrs, default=str)
            h5.attrs["key"] = group.key.path
            h5.create_dataset("utt_ids", data=ids.astype(object), dtype=text)
            h5.create_dataset("status", data=group.status())
            h5.create_dataset("n_frames", data=group.n_frames())
            for stat in ("mean", "std"):
                h5.create_dataset(stat, data=np.asarray(group.group[stat][:]), chunks=True, compression="gzip")
            if manifest is not None:
                for name, values in manifest_columns(ids, manifest).items():
                    h5.create_dataset(name, data=values, dtype=text)
                h5.attrs["manifest_digest"] = manifest.digest()
                h5.attrs["label_map"] = manifest.label_map_name
                h5.attrs["classes"] = json.dumps(manifest.classes)
            mix = group.noise_mix()
            for name, values in (mix or {}).items():
                if values.dtype.kind in "US":
                    h5.create_dataset(f"noise/{name}", data=values.astype(object), dtype=text)
                else:
                    h5.create_dataset(f"noise/{name}", data=values)
            for layer in group.frame_layers:
                offsets = group.frame_offsets(layer)
                values = np.asarray(group.group[f"frames/layer_{layer}/values"][: int(offsets[-1])])
                h5.create_dataset(f"frames/layer_{layer}/offsets", data=offsets)
                h5.create_dataset(f"frames/layer_{layer}/values", data=values, chunks=True, compression="gzip")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
