"""A user's own CSV table: columns ``path,label,speaker`` and optional ``language,gender,utt_id``."""

from __future__ import annotations

import csv
from pathlib import Path

from data_manifests.layouts._common import finish
from data_manifests.layouts.base import LayoutError, ScanResult, ScanRow

REQUIRED = ("path", "label", "speaker")
OPTIONAL = ("language", "gender", "utt_id")
EXPECTED = f"a CSV file with columns {','.join(REQUIRED)} (optional {','.join(OPTIONAL)})"
GENDERS = {"": "", "f": "F", "female": "F", "m": "M", "male": "M"}


def scan(root: Path) -> ScanResult:
    """Read the table at ``root``; relative paths resolve against the CSV's folder."""
    root = Path(root)
    if not root.is_file():
        what = "does not exist" if not root.exists() else "is not a file"
        raise LayoutError(f"csv root {root} {what}; expected {EXPECTED}")
    with root.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        columns = [c.strip() for c in reader.fieldnames or []]
        missing = [c for c in REQUIRED if c not in columns]
        if missing:
            raise LayoutError(f"{root} lacks required column(s) {', '.join(missing)} "
                              f"(found: {', '.join(columns) or 'none'}); expected {EXPECTED}")
        records = [{(k or "").strip(): (v or "").strip() for k, v in rec.items()} for rec in reader]
    languages = {r.get("language", "") for r in records}
    result = ScanResult(layout="csv", language=languages.pop() if len(languages) == 1 else "")
    for lineno, rec in enumerate(records, 2):
        row = _row(rec, root.parent)
        if isinstance(row, str):
            result.rejected.append((f"{root}:{lineno}", row))
        else:
            result.rows.append(row)
    return finish(result, root, EXPECTED)


def _row(rec: dict[str, str], base: Path) -> ScanRow | str:
    """A ScanRow for one record, or the reason it was rejected."""
    empty = [c for c in REQUIRED if not rec.get(c)]
    if empty:
        return f"empty {', '.join(empty)}"
    gender = GENDERS.get(rec.get("gender", "").lower())
    if gender is None:
        return f"gender {rec['gender']!r} is not F/M (or female/male, or empty)"
    path = base / rec["path"]  # an absolute path stays as it is
    if not path.is_file():
        return f"audio file {path} not found"
    return ScanRow(utt_id=rec.get("utt_id") or _default_id(path, base), path=path,
                   speaker=rec["speaker"], raw_label=rec["label"], gender=gender,
                   language=rec.get("language", ""))


def _default_id(path: Path, base: Path) -> str:
    """``<base>/a/b/c.wav`` -> ``a_b_c``; a path outside ``base`` keeps all its parts."""
    try:
        rel = path.relative_to(base)
    except ValueError:
        rel = path.relative_to(path.anchor)
    return rel.with_suffix("").as_posix().replace("/", "_")
