"""IEMOCAP: ``Session{1..5}/sentences/wav/<dialog>/<utt>.wav`` + ``dialog/EmoEvaluation/<dialog>.txt``."""

from __future__ import annotations

import re
from pathlib import Path

from data_manifests.layouts._common import HIDDEN_REASON, finish, is_hidden, iter_files, require_dir
from data_manifests.layouts.base import LayoutError, ScanResult, ScanRow

EXPECTED = "Session{1..5}/sentences/wav/<dialog>/<utt>.wav with labels in Session{n}/dialog/EmoEvaluation/<dialog>.txt"
SESSIONS = tuple(f"Session{n}" for n in range(1, 6))
# Ses01F_impro01_F000 / Ses01M_script01_1_M012: session, dialog, speaker's gender (last segment).
UTT = re.compile(r"^Ses0(?P<session>[1-5])[FM]_.+_(?P<gender>[FM])\d+$")
# [6.2901 - 8.2357]<TAB>Ses01F_impro01_F000<TAB>neu<TAB>[2.5000, 2.5000, 2.5000]
LABEL_LINE = re.compile(r"^\[[^\]]*\]\s+(?P<utt>Ses\S+)\s+(?P<label>\S+)\s+\[")


def scan(root: Path) -> ScanResult:
    """Scan an IEMOCAP release: utterance wavs joined with their EmoEvaluation labels."""
    root = require_dir(root, "iemocap", EXPECTED)
    sessions = [root / s for s in SESSIONS if (root / s).is_dir()]
    if not sessions:
        raise LayoutError(f"no Session1..5 folders under {root}: is this an IEMOCAP root? expected {EXPECTED}")
    result = ScanResult(layout="iemocap", language="en")
    for session in sessions:
        _scan_session(session, result)
    return finish(result, root, EXPECTED)


def _scan_session(session: Path, result: ScanResult) -> None:
    wav_dir = session / "sentences" / "wav"
    if not wav_dir.is_dir():
        result.rejected.append((str(session), "no sentences/wav folder in this session"))
        return
    labels = _read_labels(session / "dialog" / "EmoEvaluation", result)
    number = session.name[-1]
    for path in iter_files(wav_dir):
        reason = _check_wav(path, wav_dir, number)
        utt = path.stem
        if reason is None and utt not in labels:
            reason = "no label in EmoEvaluation"
        if reason is not None:
            result.rejected.append((str(path), reason))
            continue
        gender = UTT.match(utt)["gender"]  # type: ignore[index]
        result.rows.append(ScanRow(utt_id=utt, path=path, speaker=f"Ses0{number}{gender}",
                                   raw_label=labels.pop(utt)[0], gender=gender))
    for utt, (_, where) in labels.items():
        dialog = utt.rsplit("_", 1)[0]
        result.rejected.append((str(wav_dir / dialog / f"{utt}.wav"), f"label line at {where} but no wav"))


def _check_wav(path: Path, wav_dir: Path, number: str) -> str | None:
    """Why ``path`` is not an utterance wav of session ``number``, or None."""
    if is_hidden(path, wav_dir):
        return HIDDEN_REASON
    if path.suffix.lower() != ".wav":
        return "not a .wav file"
    if len(path.relative_to(wav_dir).parts) != 2:
        return "not at sentences/wav/<dialog>/<utt>.wav"
    m = UTT.match(path.stem)
    if m is None:
        return "name is not an IEMOCAP utterance id like Ses01F_impro01_F000"
    if m["session"] != number:
        return f"utterance of session {m['session']} inside Session{number}"
    if path.stem.rsplit("_", 1)[0] != path.parent.name:
        return f"utterance is not in its dialog folder ({path.stem.rsplit('_', 1)[0]})"
    return None


def _read_labels(label_dir: Path, result: ScanResult) -> dict[str, tuple[str, str]]:
    """utt_id -> (label, "file:line") from every ``<dialog>.txt`` in ``label_dir``."""
    labels: dict[str, tuple[str, str]] = {}
    if not label_dir.is_dir():
        return labels
    for txt in sorted(label_dir.glob("*.txt")):
        if txt.name.startswith("."):
            result.rejected.append((str(txt), HIDDEN_REASON))
            continue
        for lineno, line in enumerate(txt.read_text(errors="replace").splitlines(), 1):
            m = LABEL_LINE.match(line)
            if m is None:
                continue  # header, blank, or an evaluator's line (C-E1:, A-E1:, ...)
            where = f"{txt.name}:{lineno}"
            if m["utt"] in labels:
                result.rejected.append((f"{txt}:{lineno}", f"second label line for {m['utt']}"))
                continue
            labels[m["utt"]] = (m["label"], where)
    return labels
