"""``fs store verify``: check groups against their manifests and their own invariants.

A check never stops at a broken group: a group that cannot even be opened is reported as FAIL
with the fix, and the next one is checked. Every error carries advice that works.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from data_manifests.manifest import Manifest
from featurestore import __version__
from featurestore.errors import FsError
from featurestore.store import STATUS_PENDING, STATUS_SKIPPED, STATUS_STORED, FeatureStore, StoreGroup, StoreKey
from featurestore.workspace import Workspace

_VALUE_ARRAYS = ("mean", "std", "/values", "noise/snr_db")  # NaN-filled: a lost chunk cannot pass for data
RECORDS_CHECKED = 8  # stored rows per group whose condition records verify re-derives
REPLAY_COSINE = 0.999  # per layer, replayed features against stored ones (batch padding moves them slightly)


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
                 checksums: bool = True, records: int = RECORDS_CHECKED, replay: int = 0) -> list[VerifyReport]:
    """Verify ``keys`` (default: every group); never raises for one broken group. ``records`` / ``replay``:
    see :func:`verify_group` (with ``replay``, each group's encoder is loaded once)."""
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
            reports.append(verify_group(group, manifest, checksums=checksums, manifest_error=manifest_error,
                                        records=records, replay=replay))
        except FsError as exc:
            reports.append(VerifyReport(key=key.path, errors=[str(exc)]))
    return reports


def verify_group(group: StoreGroup, manifest: Manifest | None, checksums: bool = True,
                 manifest_error: str | None = None, records: int = RECORDS_CHECKED, replay: int = 0,
                 encoder: Any = None) -> VerifyReport:
    """Chunks (present, checksums), counts, NaNs, frame offsets, noise records, and identity against
    ``manifest`` (None: manifest missing, or unusable as ``manifest_error`` says).

    Under a condition, ``records`` sampled stored rows are conditioned again from (utterance id, seed)
    and must give their stored records exactly (no encoder); the first ``replay`` of them are rebuilt from
    their records alone, encoded (``encoder``, default: loaded from the group's provenance) and must give
    the stored features (cosine >= 0.999 per layer: the stored rows were encoded in padded batches)."""
    report = VerifyReport(key=group.key.path)
    command = group.extract_command()
    bad, problems = group.damage(checksums=checksums)
    if problems:
        report.errors.append(f"{len(problems)} damaged chunk(s) affecting {int(bad.sum())} row(s), e.g. "
                             f"{[str(p) for p in problems[:3]]}; recompute them with: {group.repair_command(problems)}")
        if any(not (p.array.endswith(_VALUE_ARRAYS) or p.array.startswith("condition/")) for p in problems):
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
               if group.provenance.is_complete else f"{report.facts['pending']} utterances pending")
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
    written_by = group.provenance.fs_version
    if written_by != __version__:
        report.warnings.append(f"written by fs {written_by or None}, this is fs {__version__}")
    if manifest is None:
        report.errors.append(manifest_error or f"manifest of corpus {group.key.corpus!r} not found in this workspace; "
                             f"add it with `fs corpus add {group.key.corpus} --layout LAYOUT --root PATH`")
        return report
    _check_identity(group, manifest, command, report)
    if not report.errors:
        _check_conditions(group, manifest, stored, report, records, replay, encoder)
    return report


def _check_conditions(group: StoreGroup, manifest: Manifest, stored: np.ndarray, report: VerifyReport,
                      sample: int, replay: int, encoder: Any) -> None:
    """Re-apply the condition to ``sample`` stored rows and compare records; replay and encode ``replay`` of them."""
    from featurestore.audio import AudioError, decode_audio
    from featurestore.conditions import ConditionError, columns_to_records, record_json

    try:
        chain = group.condition_chain()
    except FsError as exc:
        report.errors.append(f"condition chain in the attributes cannot be rebuilt: {exc}")
        return
    if not chain.steps:
        return
    columns = group.condition_columns()
    if not columns:
        report.warnings.append("written before condition records were kept: the records cannot be re-derived "
                               f"(re-extract with {group.extract_command()} --overwrite to keep them)")
        return
    rows = np.flatnonzero(stored)
    rows = rows[np.unique(np.linspace(0, rows.size - 1, min(sample, rows.size)).round().astype(int))] if rows.size else rows
    records = columns_to_records({name: column[rows] for name, column in columns.items()})
    paths = {r["utt_id"]: r["path"] for r in manifest.rows}
    ids, hashes, sample_rate = group.utt_ids(), group.audio_hashes(), int(group.provenance.sample_rate or 0)
    differing, replays = [], []
    try:
        chain.prepare(sample_rate)
        for row, record in zip(rows.tolist(), records):
            raw = Path(paths[ids[row]]).read_bytes()
            if hashlib.sha256(raw).hexdigest() != hashes[row]:
                continue  # changed audio: _check_identity reports it
            clean, _ = decode_audio(raw, paths[ids[row]], sample_rate)
            out, again = chain.apply(clean, sample_rate, str(ids[row]))
            if record_json(again) != record_json(record):
                differing.append(str(ids[row]))
            elif len(replays) < replay:
                if not np.array_equal(chain.replay(clean, sample_rate, record), out):
                    differing.append(f"{ids[row]} (replay)")
                replays.append((row, out))
    except (ConditionError, AudioError, OSError, KeyError) as exc:
        report.errors.append(f"condition records cannot be checked: {exc}")
        return
    report.facts["condition_records_checked"] = len(rows)
    if differing:
        report.errors.append(f"{len(differing)} of {len(rows)} sampled condition record(s) differ from conditioning "
                             f"the audio again (e.g. {differing[:3]}); re-extract with {group.extract_command()} "
                             "--overwrite")
    if replays:
        _check_replayed_features(group, replays, encoder, report)


def _check_replayed_features(group: StoreGroup, replays: list[tuple[int, np.ndarray]], encoder: Any,
                             report: VerifyReport) -> None:
    """Encode replayed waves (row, float32 (S,)) and compare with the stored mean/std (n, L, D) by cosine."""
    from featurestore.extract import model_key, pool_states

    if encoder is None:
        encoder = load_group_encoder(group)
    if model_key(encoder.info) != group.key.model:
        report.errors.append(f"the encoder given for replay ({encoder.info.name}) is not the group's model "
                             f"{group.key.model}")
        return
    worst = 1.0
    for row, wave in replays:
        states = encoder.embed([wave])
        mean, std = pool_states(states.hidden, states.lengths)
        for stat, values in (("mean", mean[0]), ("std", std[0])):
            kept = np.asarray(group.group[stat][row])
            cos = (values * kept).sum(-1) / np.maximum(np.linalg.norm(values, axis=-1) * np.linalg.norm(kept, axis=-1),
                                                       1e-12)
            worst = min(worst, float(cos.min()))
    report.facts["replay_rows"] = len(replays)
    report.facts["replay_min_cosine"] = worst
    if worst < REPLAY_COSINE:
        report.errors.append(f"features of {len(replays)} replayed utterance(s) differ from the stored ones (cosine "
                             f"{worst:.5f} < {REPLAY_COSINE}); re-extract with {group.extract_command()} --overwrite")


def load_group_encoder(group: StoreGroup) -> Any:
    """The group's encoder, loaded on the CPU by name with its recorded settings (seed, Whisper input, chunking)."""
    from featurestore.encoders import load_encoder
    from featurestore.hints import model_flags

    model = group.provenance.model
    options = {k: v for k, v in model_flags(model.as_dict()).items() if v is not None}
    return load_encoder(model.name, device="cpu", **options)


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
    noise = group.provenance.noise
    if noise is None or noise.snr_db is None:
        return
    mix = group.noise_mix()
    if mix is None:
        report.errors.append("noisy condition without per-utterance mix records")
        return
    off = np.abs(mix["snr_db"][stored] - noise.snr_db)
    if not (off <= 1e-3).all():
        report.errors.append(f"achieved SNR differs from {noise.snr_db:g} dB by up to {np.nanmax(off):.4g} dB "
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
    recorded = group.provenance.corpus
    if recorded.root != manifest.root:
        report.warnings.append(f"moved: the corpus was extracted from {recorded.root or None} and is now at "
                               f"{manifest.root}; the audio is the same, so the stored values stay valid")
    if recorded.manifest_digest != manifest.digest() and not (changes["missing"] or changes["audio_changed"]):
        what = ("label map" if recorded.label_map != manifest.label_map_name else "labels or metadata")
        report.warnings.append(f"relabelled: the corpus's {what} changed since extraction; values do not depend on "
                               "labels, which are joined at read time from the current manifest")
