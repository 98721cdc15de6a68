"""``fs store verify``: check a group against its manifest and its own invariants."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from data_manifests.manifest import Manifest
from featurestore import __version__
from featurestore.store import STATUS_PENDING, STATUS_STORED, StoreGroup


@dataclass
class VerifyReport:
    key: str
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors


def verify_group(group: StoreGroup, manifest: Manifest | None) -> VerifyReport:
    """Counts, NaNs, frame offsets, and provenance against ``manifest`` (None: manifest missing)."""
    report = VerifyReport(key=group.key.path)
    attrs = group.attrs
    ids = group.utt_ids()
    status = group.status()
    n_frames = group.n_frames()
    stored = status == STATUS_STORED
    report.facts = {"utterances": int(ids.size), "stored": int(stored.sum()),
                    "skipped": int((status == 2).sum()), "pending": int((status == STATUS_PENDING).sum())}
    if attrs.get("state") != "complete" or not group.batches_done().all():
        report.errors.append(f"incomplete: {report.facts['pending']} of {ids.size} utterances pending; "
                             "re-run the same `fs extract` to finish")
    if len(set(ids.tolist())) != ids.size:
        report.errors.append("duplicate utterance ids in the group")
    if (n_frames[stored] <= 0).any():
        report.errors.append(f"{int((n_frames[stored] <= 0).sum())} stored utterance(s) with no frames")
    for stat in ("mean", "std"):
        for layer in range(group.num_layers):
            values = np.asarray(group.group[stat][:, layer, :])[stored]
            bad = ~np.isfinite(values).all(axis=1)
            if bad.any():
                report.errors.append(f"{stat} layer {layer}: {int(bad.sum())} utterance(s) with NaN/inf, "
                                     f"e.g. {ids[stored][bad][:3].tolist()}")
    for layer in group.frame_layers:
        node = group.group[f"frames/layer_{layer}"]
        offsets = np.asarray(node["offsets"][:])
        counts = np.diff(offsets)
        if (counts < 0).any() or not np.array_equal(counts[stored], n_frames[stored]):
            report.errors.append(f"frames layer {layer}: offsets disagree with n_frames")
        if node["values"].shape[0] < offsets[-1]:
            report.errors.append(f"frames layer {layer}: {node['values'].shape[0]} values < offsets end {offsets[-1]}")
    mix = group.noise_mix()
    spec = (attrs.get("condition", {}).get("noise") or {}).get("spec")
    if spec is not None:
        if mix is None:
            report.errors.append("noisy condition without per-utterance mix records")
        else:
            off = np.abs(mix["snr_db"][stored] - float(spec["snr_db"]))
            if not (off <= 1e-3).all():
                report.errors.append(f"achieved SNR differs from {spec['snr_db']} dB by up to {np.nanmax(off):.4g} dB "
                                     f"in {int((~(off <= 1e-3)).sum())} utterance(s)")
            report.facts["max_snr_error_db"] = float(off.max()) if off.size else 0.0
    skipped = group.skipped()
    unexplained = [u for u in ids[status == 2].tolist() if u not in skipped]
    if unexplained:
        report.errors.append(f"{len(unexplained)} skipped utterance(s) without a recorded reason")
    if skipped:
        report.warnings.append(f"{len(skipped)} utterance(s) skipped with recorded reasons, e.g. "
                               f"{next(iter(skipped.items()))}")
    if attrs.get("fs_version") != __version__:
        report.warnings.append(f"written by fs {attrs.get('fs_version')}, this is fs {__version__}")
    if manifest is None:
        report.errors.append(f"manifest of corpus {group.key.corpus!r} not found in this workspace")
        return report
    if attrs["corpus"]["manifest_digest"] != manifest.digest():
        report.errors.append(f"provenance: manifest digest {attrs['corpus']['manifest_digest']} != current "
                             f"{manifest.digest()} (corpus re-added since extraction); re-extract with --overwrite")
    manifest_ids = set(manifest.column("utt_id"))
    extra = sorted(set(ids.tolist()) - manifest_ids)
    missing = sorted(manifest_ids - set(ids.tolist()))
    if extra:
        report.errors.append(f"{len(extra)} utterance id(s) not in the manifest, e.g. {extra[:3]}")
    if missing:
        report.errors.append(f"{len(missing)} manifest utterance(s) missing from the group, e.g. {missing[:3]}")
    if attrs["corpus"].get("label_map") != manifest.label_map_name:
        report.errors.append(f"label map {attrs['corpus'].get('label_map')!r} != "
                             f"manifest's {manifest.label_map_name!r}")
    return report
