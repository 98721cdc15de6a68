"""EmoBox JSONL manifests (github.com/emo-box/EmoBox, ``data/<dataset>/*.jsonl``): read and write.

One JSON object per line::

    {"key": "emodb-03a01Wa", "dataset": "emodb", "wav": "downloads/emodb/wav/03a01Wa.wav",
     "type": "raw", "sample_rate": 16000, "num_frame": 30045.0, "task": "category",
     "length": 1.8778125, "emo": "anger", "channel": 1}

EmoBox lines carry no speaker: EmoBox keeps it in ``data.seg.wrd.stm`` beside the dataset's
JSONL (third column; fold JSONLs sit one folder below). ``wav`` is relative to the EmoBox
checkout (the folder holding ``downloads/``), not to the JSONL. Lines written here add
``spk``, ``gender`` and ``lang``, which EmoBox's loader ignores and this reader prefers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from data_manifests.atomic import atomic_write_text

STM_NAME = "data.seg.wrd.stm"
REQUIRED_KEYS = ("key", "wav", "emo")
# EmoBox's 32 datasets and their languages (ISO 639-1); "" where EmoBox lists "Mix".
DATASET_LANGUAGES = {
    "aesdd": "el", "ased": "am", "asvpesd": "", "cafe": "fr", "casia": "zh", "cremad": "en",
    "emns": "en", "emodb": "de", "emovdb": "en", "emovo": "it", "emozionalmente": "it",
    "enterface": "en", "esd": "", "iemocap": "en", "jlcorpus": "en", "m3ed": "zh", "mead": "en",
    "meld": "en", "mer2023": "zh", "mesd": "es", "msppodcast": "en", "oreau": "fr", "pavoque": "de",
    "polish": "pl", "ravdess": "en", "resd": "ru", "savee": "en", "shemo": "fa", "subesco": "bn",
    "tess": "en", "turevdb": "tr", "urdu": "ur",
}
GENDER_PREFIXES = {"female_": "F", "male_": "M"}  # EmoBox speaker ids such as "female_08"


@dataclass(frozen=True)
class EmoBoxEntry:
    """One JSONL line, with speaker, gender and language filled in where EmoBox provides them."""

    key: str
    dataset: str
    wav: str
    emo: str
    speaker: str
    gender: str
    language: str
    where: str  # "file.jsonl:line"


def read_emobox_jsonl(path: Path) -> tuple[list[EmoBoxEntry], list[tuple[str, str]]]:
    """Entries of one EmoBox JSONL file, plus (``file:line``, reason) for lines that cannot be used."""
    path = Path(path)
    speakers = _stm_speakers(path.parent)
    entries: list[EmoBoxEntry] = []
    bad: list[tuple[str, str]] = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        where = f"{path}:{lineno}"
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            bad.append((where, f"not JSON ({exc.msg})"))
            continue
        if not isinstance(obj, dict):
            bad.append((where, "not a JSON object"))
            continue
        missing = [k for k in REQUIRED_KEYS if not obj.get(k)]
        if missing:
            bad.append((where, f"missing {', '.join(missing)}"))
            continue
        entries.append(_entry(obj, speakers, where))
    return entries, bad


def resolve_emobox_wav(wav: str, jsonl: Path) -> Path | None:
    """The file ``wav`` names: absolute, or relative to the JSONL's folder or one of its ancestors."""
    if Path(wav).is_absolute():
        return Path(wav) if Path(wav).is_file() else None
    for base in (jsonl.parent, *jsonl.parent.parents):
        if (base / wav).is_file():
            return base / wav
    return None


def write_emobox_jsonl(rows: list[dict[str, Any]], path: Path, dataset: str) -> None:
    """Write manifest ``rows`` as EmoBox JSONL (``emo`` = the mapped label), atomically."""
    lines = [json.dumps(_line(row, dataset), ensure_ascii=False) for row in rows]
    atomic_write_text(Path(path), "".join(line + "\n" for line in lines))


def _line(row: dict[str, Any], dataset: str) -> dict[str, Any]:
    if not row.get("label"):
        raise ValueError(f"row {row.get('utt_id')!r} has no mapped label; EmoBox's emo must be a class")
    duration = float(row.get("duration") or 0.0)
    sample_rate = int(row.get("sample_rate") or 0)
    return {
        "key": row["utt_id"], "dataset": dataset, "wav": str(row["path"]), "type": "raw",
        "sample_rate": sample_rate, "num_frame": round(duration * sample_rate), "task": "category",
        "length": duration, "emo": row["label"],
        "channel": 1,  # EmoBox's channel is the channel used (1 = first), not a channel count
        "spk": row.get("speaker", ""), "gender": row.get("gender", ""), "lang": row.get("language", ""),
    }


def _entry(obj: dict[str, Any], speakers: dict[str, str], where: str) -> EmoBoxEntry:
    key, dataset = str(obj["key"]), str(obj.get("dataset", ""))
    speaker = str(obj.get("spk") or obj.get("speaker") or speakers.get(key, ""))
    gender = str(obj.get("gender") or "").upper()[:1]
    if gender not in ("F", "M"):
        gender = next((g for p, g in GENDER_PREFIXES.items() if speaker.lower().startswith(p)), "")
    language = str(obj.get("lang") or DATASET_LANGUAGES.get(dataset.lower(), ""))
    return EmoBoxEntry(key=key, dataset=dataset, wav=str(obj["wav"]), emo=str(obj["emo"]),
                       speaker=speaker, gender=gender, language=language, where=where)


def _stm_speakers(folder: Path) -> dict[str, str]:
    """key -> speaker from EmoBox's ``data.seg.wrd.stm`` in ``folder`` or its parent (for fold_k/)."""
    for base in (folder, folder.parent):
        stm = base / STM_NAME
        if stm.is_file():
            pairs = (line.split(maxsplit=3) for line in stm.read_text(encoding="utf-8").splitlines())
            return {p[0]: p[2] for p in pairs if len(p) >= 3}
    return {}
