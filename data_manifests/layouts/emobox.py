"""EmoBox JSONL manifests: a ``.jsonl`` file, or a folder whose top-level ``*.jsonl`` are read."""

from __future__ import annotations

from pathlib import Path

from data_manifests.emobox import DATASET_LANGUAGES, read_emobox_jsonl, resolve_emobox_wav
from data_manifests.layouts._common import finish
from data_manifests.layouts.base import LayoutError, ScanResult, ScanRow

EXPECTED = ("an EmoBox .jsonl file (or a folder of them) with lines "
            '{"key", "dataset", "wav", "emo", ...} as in EmoBox data/<dataset>/<dataset>.jsonl')


def scan(root: Path) -> ScanResult:
    """Rows from EmoBox lines: key -> utt_id, wav -> path, emo -> raw_label.

    Speakers come from a ``spk`` field, else EmoBox's ``data.seg.wrd.stm`` beside the JSONL,
    else "". Companion files in a folder (json, stm, label_map.json, fold_k/) are not read.
    """
    root = Path(root)
    files = _jsonl_files(root)
    result = ScanResult(layout="emobox", language="")
    datasets: set[str] = set()
    for jsonl in files:
        entries, bad = read_emobox_jsonl(jsonl)
        result.rejected.extend(bad)
        for e in entries:
            path = resolve_emobox_wav(e.wav, jsonl)
            if path is None:
                result.rejected.append((e.where, f"wav {e.wav} not found (absolute, or relative to "
                                                 f"{jsonl.parent} or a folder above it)"))
                continue
            datasets.add(e.dataset.lower())
            result.rows.append(ScanRow(utt_id=e.key, path=path, speaker=e.speaker, raw_label=e.emo,
                                       gender=e.gender, language=e.language))
    if len(datasets) == 1:
        result.language = DATASET_LANGUAGES.get(datasets.pop(), "")
    return finish(result, root, EXPECTED)


def _jsonl_files(root: Path) -> list[Path]:
    if root.is_file():
        if root.suffix.lower() != ".jsonl":
            raise LayoutError(f"emobox root {root} is not a .jsonl file; expected {EXPECTED}")
        return [root]
    if not root.is_dir():
        raise LayoutError(f"emobox root {root} does not exist; expected {EXPECTED}")
    files = sorted(p for p in root.glob("*.jsonl") if p.is_file() and not p.name.startswith("."))
    if not files:
        raise LayoutError(f"no .jsonl files in {root}: is this an EmoBox data folder? expected {EXPECTED}")
    return files
