"""``fs store verify``: check groups against their manifests and their own invariants.

A check never stops at a broken group: a group that cannot even be opened is reported as FAIL
with the fix, and the next one is checked. Every error carries advice that works.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from data_manifests.manifest import Manifest
from featurestore import __version__
from featurestore.errors import FsError
from featurestore.store import STATUS_PENDING, STATUS_SKIPPED, STATUS_STORED, FeatureStore, StoreGroup, StoreKey
from featurestore.workspace import Workspace

_VALUE_ARRAYS = ("mean", "std", "/values", "noise/snr_db")  # NaN-filled: a lost chunk cannot pass for data


@dataclass
class VerifyReport:
    """Outcome of checking one group: errors make it FAIL; warnings and facts inform."""

    key: str
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def verify_store(store: FeatureStore, workspace: Workspace, keys: list[StoreKey] | None = None,
                 checksums: bool = True) -> list[VerifyReport]:
    """Verify ``keys`` (default: every group); never raises for one broken group."""
    reports = []
    for key in keys if keys is not None else store.keys():
        try:
            group = store.open(key)
        except FsError as exc:
            reports.append(VerifyReport(key=key.path, errors=[str(exc)]))
            continue
        manifest_error = None
        try:
            manifest = workspace.load_manifest(key.corpus)
        except FsError as exc:  # missing, unreadable or malformed: reported for this group only
            manifest, manifest_error = None, str(exc)
        try:
            reports.append(verify_group(group, manifest, checksums=checksums, manifest_error=manifest_error))
        except FsError as exc:
            reports.append(VerifyReport(key=key.path, errors=[str(exc)]))
    return reports


def verify_group(group: StoreGroup, manifest: Manifest | None, checksums: bool = True,
                 manifest_error: str | None = None) -> VerifyReport:
    """Chunks (present, checksums), counts, NaNs, frame offsets, noise records, and identity against
    ``manifest`` (None: manifest missing, or unusable as ``manifest_error`` says)."""
    report = VerifyReport(key=group.key.path)
    command = group.extract_command()
    bad, problems = group.damage(checksums=checksums)
    if problems:
        report.errors.append(f"{len(problems)} damaged chunk(s) affecting {int(bad.sum())} row(s), e.g. "
                             f"{[str(p) for p in problems[:3]]}; recompute them with: {group.repair_command(problems)}")
        if any(not p.array.endswith(_VALUE_ARRAYS) for p in problems):
            return report  # the checks below read the damaged index arrays; the fix above comes first
    ids = group.utt_ids()
    status = group.status()
    n_frames = group.n_frames()
    stored = (status == STATUS_STORED) & ~bad
    report.facts = {"utterances": int(ids.size), "stored": int((status == STATUS_STORED).sum()),
                    "skipped": int((status == STATUS_SKIPPED).sum()),
                    "pending": int((status == STATUS_PENDING).sum())}
    if not group.is_complete:
        why = ("its commit markers say some batches are not committed"
               if group.attrs.get("state") == "complete" else f"{report.facts['pending']} utterances pending")
        report.errors.append(f"incomplete ({why}); finish it with: {command}")
    if len(set(ids.tolist())) != ids.size:
        report.errors.append(f"duplicate utterance ids in the group; re-extract with {command} --overwrite")
    if (n_frames[stored] <= 0).any():
        report.errors.append(f"{int((n_frames[stored] <= 0).sum())} stored utterance(s) with no frames")
    if not problems:
        _check_values(group, stored, ids, report)
    _check_frames(group, stored, n_frames, report)
    _check_noise(group, stored, report)
    skipped = group.skipped()
    unexplained = [u for u in ids[status == STATUS_SKIPPED].tolist() if u not in skipped]
    if unexplained:
        report.errors.append(f"{len(unexplained)} skipped utterance(s) without a recorded reason")
    if skipped:
        report.warnings.append(f"{len(skipped)} utterance(s) skipped with recorded reasons, e.g. "
                               f"{next(iter(skipped.items()))}; fix the files and re-run {command} to retry them")
    if group.attrs.get("fs_version") != __version__:
        report.warnings.append(f"written by fs {group.attrs.get('fs_version')}, this is fs {__version__}")
    if manifest is None:
        report.errors.append(manifest_error or f"manifest of corpus {group.key.corpus!r} not found in this workspace; "
                             f"add it with `fs corpus add {group.key.corpus} --layout LAYOUT --root PATH`")
        return report
    _check_identity(group, manifest, command, report)
    return report


def _check_values(group: StoreGroup, stored: np.ndarray, ids: np.ndarray, report: VerifyReport) -> None:
    for stat in ("mean", "std"):
        arr = group.group[stat]
        for layer in range(group.num_layers):
            values = np.asarray(arr[:, layer, :])[stored]
            nonfinite = ~np.isfinite(values).all(axis=1)
            if nonfinite.any():
                report.errors.append(f"{stat} layer {layer}: {int(nonfinite.sum())} utterance(s) with NaN/inf, "
                                     f"e.g. {ids[stored][nonfinite][:3].tolist()}")


def _check_frames(group: StoreGroup, stored: np.ndarray, n_frames: np.ndarray, report: VerifyReport) -> None:
    for layer in group.frame_layers:
        node = group.group[f"frames/layer_{layer}"]
        offsets = np.asarray(node["offsets"][:])
        counts = np.diff(offsets)
        if (counts < 0).any() or not np.array_equal(counts[stored], n_frames[stored]):
            report.errors.append(f"frames layer {layer}: offsets disagree with n_frames")
        if node["values"].shape[0] < offsets[-1]:
            report.errors.append(f"frames layer {layer}: {node['values'].shape[0]} values < offsets end {offsets[-1]}")


def _check_noise(group: StoreGroup, stored: np.ndarray, report: VerifyReport) -> None:
    spec = (group.attrs.get("condition", {}).get("noise") or {}).get("spec")
    if spec is None:
        return
    mix = group.noise_mix()
    if mix is None:
        report.errors.append("noisy condition without per-utterance mix records")
        return
    off = np.abs(mix["snr_db"][stored] - float(spec["snr_db"]))
    if not (off <= 1e-3).all():
        report.errors.append(f"achieved SNR differs from {spec['snr_db']} dB by up to {np.nanmax(off):.4g} dB "
                             f"in {int((~(off <= 1e-3)).sum())} utterance(s)")
    report.facts["max_snr_error_db"] = float(off.max()) if off.size else 0.0


def identity_changes(group: StoreGroup, manifest: Manifest) -> dict[str, list[str]]:
    """How the corpus differs from what the group was computed from, by what decides values.

    ``missing``: manifest utterances the group lacks; ``extra``: group rows the manifest lacks
    (ignored at read time); ``audio_changed``: stored rows whose audio hash differs;
    ``skipped_changed``: skipped rows whose manifest hash differs from the bytes that failed.
    Moved files and changed labels are not changes: values do not depend on them.
    """
    ids, hashes, status = group.utt_ids(), group.audio_hashes(), group.status()
    stored = {u: (h, s) for u, h, s in zip(ids.tolist(), hashes.tolist(), status.tolist())}
    wanted = {r["utt_id"]: r["audio_sha256"] for r in manifest.rows}
    changed = [u for u, h in wanted.items() if u in stored and stored[u][0] != h]
    return {"missing": sorted(u for u in wanted if u not in stored),
            "extra": sorted(u for u in stored if u not in wanted),
            "audio_changed": sorted(u for u in changed if stored[u][1] != STATUS_SKIPPED),
            "skipped_changed": sorted(u for u in changed if stored[u][1] == STATUS_SKIPPED)}


def _check_identity(group: StoreGroup, manifest: Manifest, command: str, report: VerifyReport) -> None:
    """Say what changed in the corpus since extraction, and whether it matters (only audio does)."""
    changes = identity_changes(group, manifest)
    if changes["missing"]:
        report.errors.append(f"{len(changes['missing'])} utterance(s) of the corpus are not in the group (e.g. "
                             f"{changes['missing'][:3]}): the corpus grew or uses a wider label map since "
                             f"extraction; re-extract with {command} --overwrite")
    if changes["audio_changed"]:
        report.errors.append(f"audio changed: {len(changes['audio_changed'])} stored utterance(s) no longer match "
                             f"their files (e.g. {changes['audio_changed'][:3]}), so their values are stale; "
                             f"re-extract with {command} --overwrite")
    if changes["skipped_changed"]:
        report.warnings.append(f"{len(changes['skipped_changed'])} skipped utterance(s) have new audio; re-run "
                               f"{command} to retry them")
    if changes["extra"]:
        report.warnings.append(f"{len(changes['extra'])} stored utterance(s) are not in the current manifest "
                               f"(e.g. {changes['extra'][:3]}), e.g. dropped by its label map; reads ignore them")
    recorded = group.attrs.get("corpus", {})
    if recorded.get("root") != manifest.root:
        report.warnings.append(f"moved: the corpus was extracted from {recorded.get('root')} and is now at "
                               f"{manifest.root}; the audio is the same, so the stored values stay valid")
    if recorded.get("manifest_digest") != manifest.digest() and not (changes["missing"] or changes["audio_changed"]):
        what = ("label map" if recorded.get("label_map") != manifest.label_map_name else "labels or metadata")
        report.warnings.append(f"relabelled: the corpus's {what} changed since extraction; values do not depend on "
                               "labels, which are joined at read time from the current manifest")
