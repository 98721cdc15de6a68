"""Native-layout parsers on small synthetic copies of every layout, and on the real shared corpora."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from data_manifests.emobox import read_emobox_jsonl, write_emobox_jsonl
from data_manifests.labelmaps import load_label_map
from data_manifests.layouts import LAYOUTS, LayoutError, ScanResult, get_layout

EMO_EVAL_HEADER = "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n\n"


def touch(path: Path) -> Path:
    """An empty file: parsers read names only, never audio."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    return path


def write_wav(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.zeros(1600, dtype="float32"), 16000)
    return path


def label_line(utt: str, label: str) -> str:
    return (f"[1.0000 - 2.5000]\t{utt}\t{label}\t[2.5000, 3.0000, 2.0000]\n"
            f"C-E2:\tNeutral;\t()\nA-E3:\tval 3; act 2; dom  2;\t()\n\n")


def by_id(result: ScanResult) -> dict:
    return {r.utt_id: r for r in result.rows}


def reasons(result: ScanResult) -> dict[str, str]:
    return {Path(p).name: why for p, why in result.rejected}


def scan(layout: str, root: Path) -> ScanResult:
    return get_layout(layout)(root)


def test_all_layouts_registered() -> None:
    """The table holds every built-in layout as soon as it is imported (no lookup needed to fill it)."""
    assert set(LAYOUTS) == {"iemocap", "emodb", "emovo", "urdu", "ravdess", "csv", "emobox"}
    assert all(get_layout(name) is LAYOUTS[name] for name in LAYOUTS)
    with pytest.raises(LayoutError, match="known layouts: .*emodb"):
        get_layout("nope")


# --- IEMOCAP --------------------------------------------------------------------------------

def make_iemocap(root: Path) -> Path:
    wav1 = root / "Session1" / "sentences" / "wav" / "Ses01F_impro01"
    write_wav(wav1 / "Ses01F_impro01_F000.wav")
    touch(wav1 / "Ses01F_impro01_M000.wav")
    touch(wav1 / "Ses01F_impro01_F001.wav")  # no label line
    touch(wav1 / "._Ses01F_impro01_F000.wav")  # macOS junk
    touch(wav1 / "notes.txt")
    (root / "Session1" / "dialog" / "EmoEvaluation").mkdir(parents=True)
    (root / "Session1" / "dialog" / "EmoEvaluation" / "Ses01F_impro01.txt").write_text(
        EMO_EVAL_HEADER + label_line("Ses01F_impro01_F000", "ang") + label_line("Ses01F_impro01_M000", "neu")
        + label_line("Ses01F_impro01_F002", "sad"))  # no wav
    wav2 = root / "Session2" / "sentences" / "wav" / "Ses02M_script01_1"
    touch(wav2 / "Ses02M_script01_1_F003.wav")
    (root / "Session2" / "dialog" / "EmoEvaluation").mkdir(parents=True)
    (root / "Session2" / "dialog" / "EmoEvaluation" / "Ses02M_script01_1.txt").write_text(
        EMO_EVAL_HEADER + label_line("Ses02M_script01_1_F003", "exc"))
    return root


def test_iemocap(tmp_path: Path) -> None:
    res = scan("iemocap", make_iemocap(tmp_path / "IEMOCAP"))
    assert res.layout == "iemocap" and res.language == "en"
    rows = by_id(res)
    assert sorted(rows) == ["Ses01F_impro01_F000", "Ses01F_impro01_M000", "Ses02M_script01_1_F003"]
    f000, m000, f003 = rows["Ses01F_impro01_F000"], rows["Ses01F_impro01_M000"], rows["Ses02M_script01_1_F003"]
    assert (f000.speaker, f000.gender, f000.raw_label) == ("Ses01F", "F", "ang")
    assert (m000.speaker, m000.gender, m000.raw_label) == ("Ses01M", "M", "neu")  # male in a female-led dialog
    assert (f003.speaker, f003.gender, f003.raw_label) == ("Ses02F", "F", "exc")
    assert f000.path == tmp_path / "IEMOCAP/Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_F000.wav"
    why = reasons(res)
    assert why["Ses01F_impro01_F001.wav"] == "no label in EmoEvaluation"
    assert "hidden" in why["._Ses01F_impro01_F000.wav"]
    assert why["notes.txt"] == "not a .wav file"
    assert "no wav" in why["Ses01F_impro01_F002.wav"] and "Ses01F_impro01.txt:" in why["Ses01F_impro01_F002.wav"]
    assert len(res.rejected) == 4


def test_iemocap_wrong_layout_and_missing_root(tmp_path: Path) -> None:
    with pytest.raises(LayoutError, match="does not exist"):
        scan("iemocap", tmp_path / "absent")
    make_emodb(tmp_path / "EMODB")
    with pytest.raises(LayoutError, match=r"no Session1\.\.5 folders under .*EMODB.*IEMOCAP root"):
        scan("iemocap", tmp_path / "EMODB")


def test_iemocap_without_labels_is_an_error(tmp_path: Path) -> None:
    touch(tmp_path / "Session3" / "sentences" / "wav" / "Ses03F_impro01" / "Ses03F_impro01_F000.wav")
    with pytest.raises(LayoutError, match="no iemocap utterances found.*no label in EmoEvaluation"):
        scan("iemocap", tmp_path)


# --- EMODB ----------------------------------------------------------------------------------

def make_emodb(root: Path) -> Path:
    for name in ("03a01Fa.wav", "08a02Wb.wav", "10b03Lc.wav", "16b10Nd.wav",
                 "03x01Fa.wav", "05a01Fa.wav", "notes.txt", "._03a01Fa.wav"):
        touch(root / "wav" / name)
    return root


def test_emodb(tmp_path: Path) -> None:
    res = scan("emodb", make_emodb(tmp_path / "EMODB"))
    assert res.language == "de"
    rows = by_id(res)
    assert sorted(rows) == ["03a01Fa", "08a02Wb", "10b03Lc", "16b10Nd"]
    assert [(rows[u].speaker, rows[u].gender, rows[u].raw_label) for u in sorted(rows)] == [
        ("03", "M", "F"), ("08", "F", "W"), ("10", "M", "L"), ("16", "F", "N")]
    why = reasons(res)
    assert "not EMODB" in why["03x01Fa.wav"]
    assert "not one of EMODB's ten speakers" in why["05a01Fa.wav"]
    assert why["notes.txt"] == "not a .wav file" and "hidden" in why["._03a01Fa.wav"]
    # the root may also be the wav folder itself
    assert sorted(by_id(scan("emodb", tmp_path / "EMODB" / "wav"))) == sorted(rows)


def test_emodb_wrong_layout(tmp_path: Path) -> None:
    with pytest.raises(LayoutError, match="EMODB root"):
        scan("emodb", make_iemocap(tmp_path / "IEMOCAP"))
    with pytest.raises(LayoutError, match="does not exist"):
        scan("emodb", tmp_path / "absent")


# --- EMOVO ----------------------------------------------------------------------------------

def test_emovo(tmp_path: Path) -> None:
    root = tmp_path / "EMOVO"
    for name in ("f1/dis-f1-b1.wav", "m2/rab-m2-l3.wav", "f3/tri-f3-n5.wav",
                 "f1/xyz-f1-b1.wav", "m1/gio-m2-b1.wav", "readme.txt", "documents/emovo.wav"):
        touch(root / name)
    res = scan("emovo", root)
    assert res.language == "it"
    rows = by_id(res)
    assert [(u, rows[u].speaker, rows[u].gender, rows[u].raw_label) for u in sorted(rows)] == [
        ("dis-f1-b1", "f1", "F", "dis"), ("rab-m2-l3", "m2", "M", "rab"), ("tri-f3-n5", "f3", "F", "tri")]
    why = reasons(res)
    assert "emo in" in why["xyz-f1-b1.wav"]
    assert "actor m2 in the name but folder m1" == why["gio-m2-b1.wav"]
    assert why["readme.txt"] == "not a .wav file"
    assert "actor folder" in why["emovo.wav"]
    with pytest.raises(LayoutError, match="EMOVO root"):
        scan("emovo", make_emodb(tmp_path / "EMODB"))


# --- URDU -----------------------------------------------------------------------------------

def test_urdu(tmp_path: Path) -> None:
    root = tmp_path / "URDU"
    for name in ("Angry/SM1_F10_A010.wav", "Sad/SF3_F1_S001.wav", "Neutral/SM17_F2_N002.wav",
                 "Happy/SM2_F1_N003.wav", "Neutral/bad.wav", "notes.txt"):
        touch(root / name)
    res = scan("urdu", root)
    assert res.language == "ur"
    rows = by_id(res)
    assert [(u, rows[u].speaker, rows[u].gender, rows[u].raw_label) for u in sorted(rows)] == [
        ("SF3_F1_S001", "SF3", "F", "Sad"), ("SM17_F2_N002", "SM17", "M", "Neutral"),
        ("SM1_F10_A010", "SM1", "M", "Angry")]
    why = reasons(res)
    assert why["SM2_F1_N003.wav"] == "emotion letter N disagrees with folder Happy"
    assert "SGX_FYY_EZZ" in why["bad.wav"]
    assert why["notes.txt"] == "not a .wav file"
    with pytest.raises(LayoutError, match="URDU root"):
        scan("urdu", make_emodb(tmp_path / "EMODB"))


# --- RAVDESS --------------------------------------------------------------------------------

def test_ravdess(tmp_path: Path) -> None:
    root = tmp_path / "RAVDESS"
    for name in ("Actor_01/03-01-05-01-01-01-01.wav", "Actor_02/03-01-04-02-02-01-02.wav",
                 "Actor_01/01-01-05-01-01-01-01.wav", "Actor_02/03-02-03-01-01-01-02.wav",
                 "Actor_01/03-01-05-01-01-01-02.wav", "Actor_01/03-01-09-01-01-01-01.wav"):
        touch(root / name)
    res = scan("ravdess", root)
    assert res.language == "en"
    rows = by_id(res)
    assert [(u, rows[u].speaker, rows[u].gender, rows[u].raw_label) for u in sorted(rows)] == [
        ("03-01-04-02-02-01-02", "Actor_02", "F", "sad"), ("03-01-05-01-01-01-01", "Actor_01", "M", "angry")]
    why = reasons(res)
    assert "not audio-only" in why["01-01-05-01-01-01-01.wav"]
    assert "song" in why["03-02-03-01-01-01-02.wav"]
    assert "actor 02 in the name" in why["03-01-05-01-01-01-02.wav"]
    assert "emotion code 09" in why["03-01-09-01-01-01-01.wav"]
    with pytest.raises(LayoutError, match="RAVDESS root"):
        scan("ravdess", make_emodb(tmp_path / "EMODB"))


# --- CSV ------------------------------------------------------------------------------------

def test_csv(tmp_path: Path) -> None:
    touch(tmp_path / "clips" / "a.wav")
    touch(tmp_path / "clips" / "b.wav")
    other = touch(tmp_path.parent / f"{tmp_path.name}_elsewhere" / "c.wav")
    table = tmp_path / "table.csv"
    table.write_text(
        "path,label,speaker,gender,language,utt_id\n"
        "clips/a.wav,Anger,spk1,female,fr,\n"
        f"{other},sad,spk2,M,fr,my_c\n"
        "clips/b.wav,happy,,F,fr,\n"          # empty speaker
        "clips/missing.wav,sad,spk3,F,fr,\n"  # no such file
        "clips/b.wav,happy,spk4,x,fr,\n")     # bad gender
    res = scan("csv", table)
    assert res.layout == "csv" and res.language == "fr"
    rows = by_id(res)
    assert sorted(rows) == ["clips_a", "my_c"]
    a = rows["clips_a"]
    assert (a.path, a.speaker, a.gender, a.raw_label, a.language) == (
        tmp_path / "clips" / "a.wav", "spk1", "F", "Anger", "fr")
    assert rows["my_c"].path == other and rows["my_c"].gender == "M"
    assert [(Path(p).name, why.split()[0]) for p, why in res.rejected] == [
        ("table.csv:4", "empty"), ("table.csv:5", "audio"), ("table.csv:6", "gender")]


def test_csv_errors(tmp_path: Path) -> None:
    table = tmp_path / "t.csv"
    table.write_text("file,label\nx.wav,sad\n")
    with pytest.raises(LayoutError, match="lacks required column.*path, speaker"):
        scan("csv", table)
    with pytest.raises(LayoutError, match="does not exist"):
        scan("csv", tmp_path / "absent.csv")
    with pytest.raises(LayoutError, match="not a file"):
        scan("csv", tmp_path)


# --- EmoBox ---------------------------------------------------------------------------------

def manifest_rows(root: Path) -> list[dict]:
    """Rows shaped like the manifest's, from a synthetic EMODB mapped with the paper map."""
    res, lmap = scan("emodb", root), load_label_map("paper")
    return [{"utt_id": r.utt_id, "corpus": "emodb", "language": res.language, "path": str(r.path),
             "speaker": r.speaker, "gender": r.gender, "raw_label": r.raw_label,
             "label": lmap.map("emodb", r.raw_label), "duration": 0.1, "sample_rate": 16000, "channels": 1}
            for r in res.rows]


def test_emobox_roundtrip(tmp_path: Path) -> None:
    rows = manifest_rows(make_emodb(tmp_path / "EMODB"))
    out = tmp_path / "export" / "emodb.jsonl"
    write_emobox_jsonl(rows, out, "emodb")
    assert sorted(p.name for p in out.parent.iterdir()) == ["emodb.jsonl"]  # no temp file left behind
    first = json.loads(out.read_text().splitlines()[0])
    assert {"key", "dataset", "wav", "type", "sample_rate", "length", "task", "emo", "channel"} <= set(first)
    assert first["dataset"] == "emodb" and first["type"] == "raw" and first["task"] == "category"
    res = scan("emobox", out)
    assert res.language == "de"
    got = {r.utt_id: (str(r.path), r.raw_label, r.speaker, r.gender) for r in res.rows}
    assert got == {r["utt_id"]: (r["path"], r["label"], r["speaker"], r["gender"]) for r in rows}
    assert res.rejected == []
    write_emobox_jsonl(rows[:1], out, "emodb")  # replaces the file
    assert len(scan("emobox", out.parent).rows) == 1


def test_emobox_writer_needs_mapped_labels(tmp_path: Path) -> None:
    rows = manifest_rows(make_emodb(tmp_path / "EMODB"))
    rows[0]["label"] = None
    with pytest.raises(ValueError, match="no mapped label"):
        write_emobox_jsonl(rows, tmp_path / "x.jsonl", "emodb")
    assert not (tmp_path / "x.jsonl").exists()


def test_emobox_native_checkout(tmp_path: Path) -> None:
    """EmoBox's own files: wav relative to the checkout, speakers only in data.seg.wrd.stm."""
    touch(tmp_path / "downloads" / "emodb" / "wav" / "03a01Wa.wav")
    touch(tmp_path / "downloads" / "emodb" / "wav" / "08a01Lc.wav")
    data = tmp_path / "data" / "emodb"
    (data / "fold_1").mkdir(parents=True)
    lines = [{"key": f"emodb-{u}", "dataset": "emodb", "wav": f"downloads/emodb/wav/{u}.wav", "type": "raw",
              "sample_rate": 16000, "num_frame": 30045.0, "task": "category", "length": 1.88, "emo": emo,
              "channel": 1} for u, emo in (("03a01Wa", "anger"), ("08a01Lc", "boredem"), ("09a01Fa", "happy"))]
    text = "".join(json.dumps(x) + "\n" for x in lines)
    (data / "emodb.jsonl").write_text(text + "not json\n" + json.dumps({"key": "k", "wav": "w"}) + "\n")
    (data / "fold_1" / "emodb_test_fold_1.jsonl").write_text(json.dumps(lines[0]) + "\n")
    (data / "label_map.json").write_text('{"anger": "Angry"}')
    (data / "data.seg.wrd.stm").write_text(
        "emodb-03a01Wa 1 male_03 0 1.88 <id=emodb-03a01Wa,lang=en,spk=male_03,emotion=anger> anger\n"
        "emodb-08a01Lc 1 female_08 0 2.0 <id=emodb-08a01Lc,lang=en,spk=female_08,emotion=boredem> boredem\n")
    res = scan("emobox", data)  # top-level jsonl only; fold_1/ and companions are not read
    assert res.language == "de"
    rows = by_id(res)
    assert sorted(rows) == ["emodb-03a01Wa", "emodb-08a01Lc"]
    assert (rows["emodb-03a01Wa"].speaker, rows["emodb-03a01Wa"].gender, rows["emodb-03a01Wa"].raw_label) == (
        "male_03", "M", "anger")
    assert rows["emodb-08a01Lc"].path == tmp_path / "downloads" / "emodb" / "wav" / "08a01Lc.wav"
    assert [why.split()[0] for _, why in res.rejected] == ["not", "missing", "wav"]
    assert "09a01Fa.wav not found" in res.rejected[2][1]
    fold = scan("emobox", data / "fold_1" / "emodb_test_fold_1.jsonl")  # stm one folder up
    assert [(r.utt_id, r.speaker) for r in fold.rows] == [("emodb-03a01Wa", "male_03")]
    entries, bad = read_emobox_jsonl(data / "emodb.jsonl")
    assert len(entries) == 3 and len(bad) == 2


def test_emobox_errors(tmp_path: Path) -> None:
    with pytest.raises(LayoutError, match="does not exist"):
        scan("emobox", tmp_path / "absent")
    with pytest.raises(LayoutError, match="no .jsonl files"):
        scan("emobox", make_emodb(tmp_path / "EMODB"))
    with pytest.raises(LayoutError, match="not a .jsonl file"):
        scan("emobox", tmp_path / "EMODB" / "wav" / "03a01Fa.wav")


def test_duplicates_pass_through(tmp_path: Path) -> None:
    touch(tmp_path / "a.wav")
    (tmp_path / "t.csv").write_text("path,label,speaker,utt_id\na.wav,sad,s1,u1\na.wav,sad,s1,u1\n")
    assert [r.utt_id for r in scan("csv", tmp_path / "t.csv").rows] == ["u1", "u1"]


# --- real corpora (skipped when ../shared is absent) ----------------------------------------

def test_real_urdu(shared_dir: Path) -> None:
    res = scan("urdu", shared_dir / "corpora" / "URDU")
    assert len(res.rows) == 400 and res.rejected == []
    assert Counter(r.raw_label for r in res.rows) == {"Angry": 100, "Happy": 100, "Neutral": 100, "Sad": 100}
    assert len({r.speaker for r in res.rows}) == 29
    assert {r.speaker for r in res.rows if r.raw_label == "Angry"} == {"SM1", "SM2", "SM3", "SM4"}
    assert {r.gender for r in res.rows} == {"F", "M"}


def test_real_emodb(shared_dir: Path) -> None:
    res = scan("emodb", shared_dir / "corpora" / "EMODB")
    assert len(res.rows) == 535 and res.rejected == []
    assert len({r.speaker for r in res.rows}) == 10
    assert Counter(r.raw_label for r in res.rows) == {"W": 127, "L": 81, "E": 46, "A": 69, "F": 71, "T": 62, "N": 79}
    assert Counter(r.gender for r in {r.speaker: r for r in res.rows}.values()) == {"F": 5, "M": 5}
