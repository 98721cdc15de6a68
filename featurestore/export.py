"""Export a store group to HDF5 (h5py) for users outside Zarr."""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np

from featurestore.store import StoreGroup


def export_h5(group: StoreGroup, path: str | Path) -> Path:
    """Write the group (pooled stats, frames, provenance) to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with h5py.File(tmp, "w") as h5:
            h5.attrs["provenance"] = json.dumps(group.attrs, default=str)
            h5.attrs["key"] = group.key.path
            h5.create_dataset("utt_ids", data=group.utt_ids().astype(object), dtype=h5py.string_dtype())
            for name in ("status", "n_frames"):
                h5.create_dataset(name, data=np.asarray(group.group[name][:]))
            for name in ("mean", "std"):
                h5.create_dataset(name, data=np.asarray(group.group[name][:]), chunks=True, compression="gzip")
            for layer in group.frame_layers:
                node = group.group[f"frames/layer_{layer}"]
                offsets = np.asarray(node["offsets"][:])
                h5.create_dataset(f"frames/layer_{layer}/offsets", data=offsets)
                h5.create_dataset(f"frames/layer_{layer}/values", data=np.asarray(node["values"][: offsets[-1]]),
                                  chunks=True, compression="gzip")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
