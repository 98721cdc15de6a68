"""The manifest: one row per utterance of a corpus, with the label map that produced it.

A manifest is built from a native layout (:mod:`data_manifests.layouts`), a label map
(:mod:`data_manifests.labelmaps`) and the audio headers; it is saved atomically as JSON.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from data_manifests import __version__
from data_manifests.atomic import atomic_write_text
from data_manifests.audio import AudioError, check_audio
from data_manifests.errors import FsError
from data_manifests.labelmaps import load_label_map
from data_manifests.layouts import ScanResult, get_layout

COLUMNS = ("utt_id", "corpus", "language", "path", "speaker", "gender", "raw_label", "label",
           "duration", "sample_rate", "channels", "audio_sha256")
MANIFEST_FORMAT = 2  # 2: audio_sha256 per row, suspicious_audio


class ManifestError(FsError, ValueError):
    """A corpus that cannot become a manifest, or a manifest file that cannot be used."""


@dataclass
class Manifest:
    """A corpus as the toolkit sees it: rows plus how they were obtained."""

    name: str
    layout: str
    root: str
    label_map: dict[str, Any]
    rows: list[dict[str, Any]]
    language: str = ""
    rejected: list[tuple[str, str]] = field(default_factory=list)
    excluded_audio: list[tuple[str, str]] = field(default_factory=list)
    dropped_labels: dict[str, int] = field(default_factory=dict)
    suspicious_audio: list[tuple[str, str]] = field(default_factory=list)
    created: str = ""
    fs_version: str = ""
    format: int = MANIFEST_FORMAT

    @property
    def label_map_name(self) -> str:
        return str(self.label_map.get("name", ""))

    @property
    def classes(self) -> list[str]:
        return list(self.label_map.get("classes", []))

    def __len__(self) -> int:
        return len(self.rows)

    def column(self, name: str) -> list[Any]:
        """Values of one column, in row order."""
        return [row[name] for row in self.rows]

    def counts(self, by: str = "label") -> dict[str, int]:
        """Rows per value of column ``by`` (sorted by value)."""
        return dict(sorted(Counter(str(r[by]) for r in self.rows).items()))

    def speaker_label_counts(self) -> dict[str, dict[str, int]]:
        """Rows per speaker and label."""
        table: dict[str, Counter] = {}
        for row in self.rows:
            table.setdefault(row["speaker"], Counter())[row["label"]] += 1
        return {spk: dict(sorted(c.items())) for spk, c in sorted(table.items())}

    def total_duration(self) -> float:
        return float(sum(r["duration"] for r in self.rows))

    def digest(self) -> str:
        """Short sha256 of what extraction depends on: ids, paths, labels, speakers, audio facts."""
        h = hashlib.sha256()
        for row in sorted(self.rows, key=lambda r: r["utt_id"]):
            h.update(json.dumps([row[c] for c in COLUMNS], sort_keys=True, default=str).encode())
        h.update(json.dumps(self.label_map, sort_keys=True).encode())
        return h.hexdigest()[:16]

    def audio_digest(self) -> str:
        """Short sha256 of what extracted values depend on: utterance ids and audio content only.

        Labels, label maps, speakers and absolute paths are left out: moving a corpus or fixing a
        label keeps every stored vector valid (labels are joined at read time).
        """
        h = hashlib.sha256()
        for row in sorted(self.rows, key=lambda r: r["utt_id"]):
            h.update(f"{row['utt_id']}\t{row['audio_sha256']}\n".encode())
        return h.hexdigest()[:16]

    def summary(self) -> dict[str, Any]:
        """Machine-readable summary used by ``fs corpus show --json``."""
        return {
            "name": self.name, "layout": self.layout, "root": self.root, "language": self.language,
            "label_map": self.label_map_name, "utterances": len(self.rows),
            "hours": round(self.total_duration() / 3600, 4), "speakers": len(set(self.column("speaker"))),
            "labels": self.counts("label"), "per_speaker": self.speaker_label_counts(),
            "genders": self.counts("gender"), "dropped_labels": self.dropped_labels,
            "rejected_files": len(self.rejected), "excluded_audio": len(self.excluded_audio),
            "suspicious_audio": len(self.suspicious_audio), "digest": self.digest(),
            "audio_digest": self.audio_digest(), "created": self.created,
        }

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        """The manifest saved as ``data``; ManifestError when it is another format or malformed."""
        readd = ("re-add the corpus with `fs corpus add ... --overwrite` (stored features are kept: groups are keyed "
                 "on audio content)")
        if not isinstance(data, dict):
            raise ManifestError(f"malformed manifest (a JSON {type(data).__name__}, not an object); {readd}")
        if data.get("format") != MANIFEST_FORMAT:
            raise ManifestError(f"manifest format {data.get('format')!r} is not {MANIFEST_FORMAT}; {readd}")
        try:
            data = dict(data)
            for name in ("suspicious_audio", "rejected", "excluded_audio"):
                data[name] = [tuple(x) for x in data.get(name, [])]
            manifest = cls(**data)
            if not isinstance(manifest.name, str) or not isinstance(manifest.label_map, dict):
                raise TypeError("name must be a string and label_map an object")
            for row in manifest.rows:
                missing = [c for c in COLUMNS if c not in row]
                if missing:
                    raise TypeError(f"a row lacks {missing}")
        except (TypeError, ValueError, AttributeError) as exc:
            raise ManifestError(f"malformed manifest ({exc}); {readd}") from None
        return manifest

    def save(self, path: str | Path) -> Path:
        """Write atomically: a temp file in the same folder, then rename."""
        return atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=1, default=str))

    @classmethod
    def load(cls, path: str | Path) -> Manifest:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ManifestError(f"no manifest at {path}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ManifestError(f"{path}: corrupt manifest ({exc}); re-add the corpus with --overwrite") from None
        try:
            return cls.from_dict(data)
        except ManifestError as exc:
            raise ManifestError(f"{path}: {exc}") from None


def write_manifest_csv(manifest: Manifest, path: str | Path) -> Path:
    """Write the rows as a CSV table (the ``csv`` layout reads it back), atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(COLUMNS))
    writer.writeheader()
    writer.writerows(manifest.rows)
    return atomic_write_text(Path(path), buf.getvalue())


def build_manifest(name: str, layout: str, root: str | Path, *, labels: str = "paper",
                   strict: bool = False, skip_bad_audio: bool = False) -> Manifest:
    """Scan ``root`` in ``layout``, map labels with ``labels`` and read audio headers.

    Every file is read whole: its sha256 becomes the row's ``audio_sha256`` (the identity of
    extracted values) and implausible audio (truncated, shorter than 100 ms, silent) is listed in
    ``suspicious_audio`` and warned about; with ``strict`` it is fatal.
    Raises ManifestError when names do not match the layout and ``strict`` is set, when audio is
    unreadable, empty or NaN (unless ``skip_bad_audio``: then it is recorded in ``excluded_audio``),
    on duplicate utterance ids, and when no utterance maps to a class.
    """
    check_corpus_name(name)
    root = Path(root).expanduser().resolve()
    if not root.exists():
        raise ManifestError(f"corpus root {root} does not exist; pass --root PATH to the corpus folder")
    label_map = load_label_map(labels)
    scan: ScanResult = get_layout(layout)(root)
    if scan.rejected and strict:
        listing = "\n".join(f"  {p}: {why}" for p, why in scan.rejected[:20])
        raise ManifestError(f"{len(scan.rejected)} file(s) under {root} do not match the {layout} layout "
                            f"(--strict):\n{listing}")
    _check_duplicates(scan)

    rows: list[dict[str, Any]] = []
    dropped: Counter = Counter()
    bad_audio: list[tuple[str, str]] = []
    suspicious: list[tuple[str, str]] = []
    for srow in scan.rows:
        label = label_map.map(layout, srow.raw_label)
        if label is None:
            dropped[srow.raw_label] += 1
            continue
        try:
            check = check_audio(srow.path)
        except AudioError as exc:
            bad_audio.append((str(srow.path), str(exc)))
            continue
        info = check.info
        suspicious += [(str(srow.path), why) for why in check.problems]
        rows.append({
            "utt_id": srow.utt_id, "corpus": name, "language": srow.language or scan.language,
            "path": str(srow.path), "speaker": srow.speaker, "gender": srow.gender,
            "raw_label": srow.raw_label, "label": label, "duration": round(info.duration, 6),
            "sample_rate": info.sample_rate, "channels": info.channels, "audio_sha256": check.sha256,
        })
    if bad_audio and not skip_bad_audio:
        listing = "\n".join(f"  {why}" for _, why in bad_audio[:20])
        raise ManifestError(f"{len(bad_audio)} unreadable or empty audio file(s) in {root}:\n{listing}\n"
                            "fix or remove them, or pass --on-bad-audio skip to record and exclude them")
    if suspicious and strict:
        listing = "\n".join(f"  {p}: {why}" for p, why in suspicious[:20])
        raise ManifestError(f"{len(suspicious)} implausible audio file(s) in {root} (--strict):\n{listing}\n"
                            "fix or remove them, or add the corpus without --strict to keep them with a warning")
    if not rows:
        raw = sorted({r.raw_label for r in scan.rows})
        raise ManifestError(f"label map {label_map.name!r} maps none of the {len(scan.rows)} utterances found "
                            f"in {root} (raw labels: {raw[:12]}); choose --labels or supply a map file")
    rows.sort(key=lambda r: r["utt_id"])
    return Manifest(name=name, layout=layout, root=str(root), label_map=label_map.to_dict(), rows=rows,
                    language=scan.language, rejected=[(str(p), w) for p, w in scan.rejected],
                    excluded_audio=bad_audio, suspicious_audio=suspicious, dropped_labels=dict(sorted(dropped.items())),
                    created=datetime.now(timezone.utc).isoformat(timespec="seconds"), fs_version=__version__)


def is_safe_name(name: str) -> bool:
    """Whether ``name`` may name a corpus or one part of a store key: letters, digits, '-', '_' and '.',
    not starting with '.'. Such a name is one plain path component (no '/', no '..'), so nothing
    named by it resolves outside its workspace or store."""
    return bool(name) and not name.startswith(".") and all(c.isalnum() or c in "-_." for c in name)


def check_corpus_name(name: str) -> str:
    """``name`` if it is a valid corpus name (:func:`is_safe_name`), else ManifestError with the rule."""
    if not is_safe_name(name):
        raise ManifestError(f"corpus name {name!r} must be letters, digits, '-', '_' or '.' (not starting with "
                            "'.'); see `fs corpus ls`")
    return name


def _check_duplicates(scan: ScanResult) -> None:
    seen = Counter(r.utt_id for r in scan.rows)
    dups = sorted(u for u, n in seen.items() if n > 1)
    if dups:
        raise ManifestError(f"{len(dups)} duplicate utterance id(s) in the scan, e.g. {dups[:5]}; "
                            "utterance ids must be unique within a corpus (give a utt_id column for csv)")


def select_rows(manifest: Manifest, utt_ids: Iterable[str]) -> list[dict[str, Any]]:
    """Rows for ``utt_ids`` in that order; ManifestError naming unknown ids."""
    index = {r["utt_id"]: r for r in manifest.rows}
    missing = [u for u in utt_ids if u not in index]
    if missing:
        raise ManifestError(f"{len(missing)} utterance id(s) not in manifest {manifest.name!r}, e.g. {missing[:5]}")
    return [index[u] for u in utt_ids]
