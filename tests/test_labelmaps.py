"""Named label maps: built-ins, user files, validation, mapping, and a stable record of content."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from data_manifests.labelmaps import LabelMap, LabelMapError, builtin_label_maps, load_label_map
from data_manifests.layouts import get_layout

IEMOCAP_LABELS = {"F000": "ang", "F001": "hap", "F002": "exc", "M000": "neu", "M001": "sad",
                  "M002": "fru", "M003": "xxx"}


def make_iemocap(root: Path) -> Path:
    """One dialog with one utterance per raw label in IEMOCAP_LABELS."""
    wav = root / "Session1" / "sentences" / "wav" / "Ses01F_impro01"
    wav.mkdir(parents=True)
    lines = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
    for seg, label in IEMOCAP_LABELS.items():
        (wav / f"Ses01F_impro01_{seg}.wav").touch()
        lines += [f"[1.0 - 2.0]\tSes01F_impro01_{seg}\t{label}\t[2.5, 2.5, 2.5]", "C-E1:\tNeutral;\t()", ""]
    emo = root / "Session1" / "dialog" / "EmoEvaluation"
    emo.mkdir(parents=True)
    (emo / "Ses01F_impro01.txt").write_text("\n".join(lines))
    return root


def mapped(map_name: str, layout: str, root: Path) -> Counter:
    lmap = load_label_map(map_name)
    return Counter(lmap.map(layout, r.raw_label) for r in get_layout(layout)(root).rows)


def test_builtins_load() -> None:
    assert {"paper", "strict"} <= set(builtin_label_maps())
    for name in ("paper", "strict"):
        lmap = load_label_map(name)
        assert lmap.name == name and lmap.classes == ["angry", "happy", "neutral", "sad"]
        assert lmap.source == f"builtin:{name}" and lmap.description
        assert {"iemocap", "emodb", "emovo", "urdu", "ravdess"} <= set(lmap.layouts)


def test_paper_and_strict_on_synthetic_iemocap(tmp_path: Path) -> None:
    root = make_iemocap(tmp_path / "IEMOCAP")
    assert mapped("paper", "iemocap", root) == {"angry": 1, "happy": 2, "neutral": 1, "sad": 1, None: 2}
    assert mapped("strict", "iemocap", root) == {"angry": 1, "happy": 1, "neutral": 1, "sad": 1, None: 3}
    paper, strict = load_label_map("paper"), load_label_map("strict")
    assert paper.map("iemocap", "exc") == "happy" and strict.map("iemocap", "exc") is None
    assert paper.map("iemocap", "fru") is None and paper.map("iemocap", "xxx") is None


def test_emodb_emovo_urdu_tables() -> None:
    paper, strict = load_label_map("paper"), load_label_map("strict")
    assert [paper.map("emodb", x) for x in "WLEAFTN"] == ["angry", "sad", None, None, "happy", "sad", "neutral"]
    assert strict.map("emodb", "L") is None and strict.map("emodb", "T") == "sad"
    assert [paper.map("emovo", x) for x in ("rab", "gio", "neu", "tri", "dis", "pau", "sor")] == [
        "angry", "happy", "neutral", "sad", None, None, None]
    assert paper.map("urdu", "Angry") == "angry" and paper.map("ravdess", "calm") is None


def test_default_is_case_insensitive_for_unlisted_layouts() -> None:
    paper = load_label_map("paper")
    assert paper.map("csv", "Anger") == "angry" and paper.map("emobox", "SADNESS") == "sad"
    assert paper.map("csv", "boredom") is None
    assert paper.map("emodb", "w") is None  # a listed layout matches exactly


def test_real_emodb_counts(shared_dir: Path) -> None:
    root = shared_dir / "corpora" / "EMODB"
    paper, strict = mapped("paper", "emodb", root), mapped("strict", "emodb", root)
    assert sum(n for k, n in paper.items() if k) == 420
    assert paper == {"angry": 127, "happy": 71, "neutral": 79, "sad": 143, None: 115}
    assert sum(n for k, n in strict.items() if k) == 339


def test_real_urdu_counts(shared_dir: Path) -> None:
    assert mapped("paper", "urdu", shared_dir / "corpora" / "URDU") == {
        "angry": 100, "happy": 100, "neutral": 100, "sad": 100}


USER_MAP = """\
name: three
description: anger, joy and the rest
classes: [angry, happy, other]
layouts:
  emodb: {W: angry, F: happy, N: other, T: other, L: null}
default: {Anger: angry, Joy: happy}
"""


def test_user_yaml_map(tmp_path: Path) -> None:
    path = tmp_path / "three.yaml"
    path.write_text(USER_MAP)
    lmap = load_label_map(str(path))
    assert lmap.name == "three" and lmap.classes == ["angry", "happy", "other"]
    assert lmap.source == str(path.resolve())
    assert lmap.map("emodb", "T") == "other" and lmap.map("emodb", "L") is None
    assert lmap.map("csv", "joy") == "happy" and lmap.map("csv", "sad") is None
    assert load_label_map(path).digest() == lmap.digest()  # a Path works too


@pytest.mark.parametrize("text, problem", [
    ("name: x\nclasses: [a, b\n", "not valid YAML"),
    ("- just\n- a list\n", "expected a mapping"),
    ("name: x\ndefault: {a: a}\n", "missing required key.*classes"),
    ("classes: [a]\ndefault: {a: a}\n", "missing required key.*name"),
    ("name: x\nclasses: []\ndefault: {a: a}\n", "classes must be a non-empty list"),
    ("name: x\nclasses: [a, a]\ndefault: {a: a}\n", "duplicates"),
    ("name: x\nclasses: [a]\nlayouts: {emodb: {W: angry}}\n", r"'W' maps to 'angry', which is not in classes"),
    ("name: x\nclasses: [a]\ndefault: {yes: a}\n", "raw label True is a bool.*quote it"),
    ("name: x\nclasses: [a]\nlayout: {emodb: {W: a}}\n", "unknown key.*layout"),
    ("name: x\nclasses: [a]\n", "no mappings"),
    ("name: x\nclasses: [a]\nlayouts: [emodb]\n", "layouts must be a mapping"),
    ("name: x\nclasses: [a]\ndefault: {A: a, a: a}\n", "differ only in case"),
])
def test_malformed_maps(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(LabelMapError, match=problem) as err:
        load_label_map(str(path))
    assert str(path.resolve()) in str(err.value)


def test_unknown_name_lists_builtins(tmp_path: Path) -> None:
    with pytest.raises(LabelMapError, match="unknown label map 'papr'; built-in maps: paper, strict"):
        load_label_map("papr")
    with pytest.raises(LabelMapError, match="does not exist"):
        load_label_map(str(tmp_path / "nope.yaml"))
    with pytest.raises(LabelMapError, match="not a file"):
        load_label_map(str(tmp_path))
    assert issubclass(LabelMapError, ValueError)


def test_to_dict_and_digest_are_stable(tmp_path: Path) -> None:
    paper = load_label_map("paper")
    content = paper.to_dict()
    assert set(content) == {"name", "description", "classes", "layouts", "default"}
    assert content["layouts"]["emodb"]["L"] == "sad"
    assert load_label_map("paper").digest() == paper.digest() and len(paper.digest()) == 12
    rebuilt = LabelMap.from_dict(content, source="manifest")
    assert rebuilt.digest() == paper.digest() and rebuilt.map("iemocap", "exc") == "happy"
    copy = tmp_path / "copy.yaml"
    copy.write_text((Path(__file__).parents[1] / "data_manifests/labelmaps/paper.yaml").read_text())
    assert load_label_map(str(copy)).digest() == paper.digest()  # where it lives does not matter
    assert load_label_map("strict").digest() != paper.digest()
    content["layouts"]["emodb"]["L"] = None
    assert LabelMap.from_dict(content).digest() != paper.digest()
    assert paper.to_dict()["layouts"]["emodb"]["L"] == "sad"  # to_dict hands out copies
