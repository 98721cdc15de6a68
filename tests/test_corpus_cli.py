"""`fs corpus ...`: manifests from every layout, both label maps, and each bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner, Result

from cli.main import fs
from data_manifests.manifest import COLUMNS, Manifest, ManifestError, build_manifest
from data_manifests.synth import generate_corpus


def run(ws: Path, *args: str) -> Result:
    return CliRunner().invoke(fs, ["--workspace", str(ws), *args], catch_exceptions=False)


@pytest.fixture(scope="module")
def tiny_corpora(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("synth")
    return {layout: generate_corpus(layout, root / layout, size="tiny")
            for layout in ("emodb", "emovo", "urdu", "iemocap")}


@pytest.mark.parametrize("layout", ["emodb", "emovo", "urdu", "iemocap"])
def test_add_show_each_synthetic_layout(tmp_path: Path, tiny_corpora: dict[str, Path], layout: str) -> None:
    res = run(tmp_path, "corpus", "add", layout, "--layout", layout, "--root", str(tiny_corpora[layout]))
    assert res.exit_code == 0, res.output
    manifest = Manifest.load(tmp_path / "manifests" / f"{layout}.json")
    assert set(manifest.counts()) == {"angry", "happy", "neutral", "sad"}
    assert manifest.label_map_name == "paper" and manifest.label_map["layouts"][layout]
    for row in manifest.rows:
        assert set(row) == set(COLUMNS)
        assert row["duration"] > 0 and row["sample_rate"] > 0 and row["channels"] >= 1
        assert Path(row["path"]).is_file()
    if layout == "emovo":  # written at 48 kHz stereo, read from the files
        assert {r["sample_rate"] for r in manifest.rows} == {48000}
        assert {r["channels"] for r in manifest.rows} == {2}
    shown = json.loads(run(tmp_path, "corpus", "show", layout, "--json").output)
    assert shown["utterances"] == len(manifest)
    assert sum(sum(c.values()) for c in shown["per_speaker"].values()) == len(manifest)
    assert "angry" in run(tmp_path, "corpus", "show", layout).output
    assert layout in run(tmp_path, "corpus", "ls").output


def test_paper_vs_strict_on_synthetic_emodb_and_iemocap(tiny_corpora: dict[str, Path]) -> None:
    for layout, merged_raw in (("emodb", "L"), ("iemocap", "exc")):
        paper = build_manifest(layout, layout, tiny_corpora[layout], labels="paper")
        strict = build_manifest(layout, layout, tiny_corpora[layout], labels="strict")
        merged = sum(1 for r in paper.rows if r["raw_label"] == merged_raw)
        assert merged > 0
        assert len(paper) - len(strict) == merged
        assert merged_raw in strict.dropped_labels
        assert paper.digest() != strict.digest()


def test_real_urdu_counts(shared_dir: Path) -> None:
    m = build_manifest("urdu", "urdu", shared_dir / "corpora" / "URDU")
    assert len(m) == 400
    assert m.counts() == {"angry": 100, "happy": 100, "neutral": 100, "sad": 100}
    assert len(set(m.column("speaker"))) == 29
    assert {r["speaker"] for r in m.rows if r["label"] == "angry"} == {"SM1", "SM2", "SM3", "SM4"}
    assert {r["sample_rate"] for r in m.rows} == {16000}


def test_real_emodb_counts(shared_dir: Path) -> None:
    paper = build_manifest("emodb", "emodb", shared_dir / "corpora" / "EMODB")
    strict = build_manifest("emodb", "emodb", shared_dir / "corpora" / "EMODB", labels="strict")
    assert len(paper) == 420 and len(strict) == 339
    assert paper.counts() == {"angry": 127, "happy": 71, "neutral": 79, "sad": 143}
    assert len(set(paper.column("speaker"))) == 10
    assert sum(paper.dropped_labels.values()) == 535 - 420


# -- bad input ---------------------------------------------------------------------------

def _no_manifest(ws: Path, name: str) -> bool:
    return not (ws / "manifests" / f"{name}.json").exists()


def test_missing_root(tmp_path: Path) -> None:
    res = run(tmp_path, "corpus", "add", "x", "--layout", "emodb", "--root", str(tmp_path / "nope"))
    assert res.exit_code != 0 and "does not exist" in res.output and _no_manifest(tmp_path, "x")


def test_wrong_layout(tmp_path: Path, tiny_corpora: dict[str, Path]) -> None:
    res = run(tmp_path, "corpus", "add", "x", "--layout", "iemocap", "--root", str(tiny_corpora["emodb"]))
    assert res.exit_code != 0 and "iemocap" in res.output.lower() and _no_manifest(tmp_path, "x")


def _copy_tree(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_nonmatching_names_listed_and_strict_fatal(tmp_path: Path, tiny_corpora: dict[str, Path]) -> None:
    root = _copy_tree(tiny_corpora["emodb"], tmp_path / "emodb")
    sf.write(root / "wav" / "bogus_name.wav", np.zeros(1600, np.float32), 16000)
    res = run(tmp_path, "corpus", "add", "e", "--layout", "emodb", "--root", str(root))
    assert res.exit_code == 0 and "bogus_name.wav" in res.output and "1 file(s) did not match" in res.output
    assert Manifest.load(tmp_path / "manifests" / "e.json").rejected
    res = run(tmp_path, "corpus", "add", "e2", "--layout", "emodb", "--root", str(root), "--strict")
    assert res.exit_code != 0 and "bogus_name.wav" in res.output and _no_manifest(tmp_path, "e2")


def test_zero_length_and_unreadable_audio(tmp_path: Path, tiny_corpora: dict[str, Path]) -> None:
    root = _copy_tree(tiny_corpora["urdu"], tmp_path / "urdu")
    empty = sorted((root / "Angry").glob("*.wav"))[0]
    empty.write_bytes(b"")
    garbage = sorted((root / "Sad").glob("*.wav"))[0]
    garbage.write_bytes(b"not a wav file at all" * 10)
    res = run(tmp_path, "corpus", "add", "u", "--layout", "urdu", "--root", str(root))
    assert res.exit_code != 0 and _no_manifest(tmp_path, "u")
    assert str(empty) in res.output and str(garbage) in res.output
    res = run(tmp_path, "corpus", "add", "u", "--layout", "urdu", "--root", str(root), "--on-bad-audio", "skip")
    assert res.exit_code == 0, res.output
    manifest = Manifest.load(tmp_path / "manifests" / "u.json")
    assert {p for p, _ in manifest.excluded_audio} == {str(empty), str(garbage)}
    assert str(empty) not in manifest.column("path")


def _csv_corpus(folder: Path, table: str) -> Path:
    """A user's CSV corpus: one short wav ``a.wav`` and the table ``t.csv`` naming it."""
    sf.write(folder / "a.wav", np.random.default_rng(0).normal(0, 0.1, 1600).astype(np.float32), 16000)
    path = folder / "t.csv"
    path.write_text(table)
    return path


def test_duplicate_utterance_ids(tmp_path: Path) -> None:
    table = _csv_corpus(tmp_path, "path,label,speaker,utt_id\na.wav,angry,s1,u1\na.wav,sad,s2,u1\n")
    with pytest.raises(ManifestError, match="duplicate"):
        build_manifest("t", "csv", table)
    res = run(tmp_path / "ws", "corpus", "add", "t", "--layout", "csv", "--root", str(table))
    assert res.exit_code != 0 and "duplicate" in res.output and _no_manifest(tmp_path / "ws", "t")


def test_corpus_that_maps_to_no_labels(tmp_path: Path) -> None:
    table = _csv_corpus(tmp_path, "path,label,speaker\na.wav,boredom,s1\n")
    res = run(tmp_path / "ws", "corpus", "add", "t", "--layout", "csv", "--root", str(table))
    assert res.exit_code != 0 and "maps none" in res.output and _no_manifest(tmp_path / "ws", "t")


def test_user_label_map_file(tmp_path: Path) -> None:
    (tmp_path / "map.yaml").write_text("name: mine\nclasses: [low, high]\nlayouts: {}\n"
                                       "default: {boredom: low, joy: high}\n")
    table = _csv_corpus(tmp_path, "path,label,speaker,language,utt_id\na.wav,boredom,s1,fr,u1\na.wav,joy,s2,fr,u2\n")
    m = build_manifest("t", "csv", table, labels=str(tmp_path / "map.yaml"))
    assert m.counts() == {"high": 1, "low": 1} and m.label_map_name == "mine"
    assert set(m.column("language")) == {"fr"}


def test_readd_refused_unless_overwrite(tmp_path: Path, tiny_corpora: dict[str, Path]) -> None:
    args = ("corpus", "add", "u", "--layout", "urdu", "--root", str(tiny_corpora["urdu"]))
    assert run(tmp_path, *args).exit_code == 0
    before = (tmp_path / "manifests" / "u.json").read_bytes()
    res = run(tmp_path, *args, "--labels", "strict")
    assert res.exit_code != 0 and "--overwrite" in res.output
    assert (tmp_path / "manifests" / "u.json").read_bytes() == before
    assert run(tmp_path, *args, "--overwrite").exit_code == 0


def test_failed_save_leaves_old_manifest(tmp_path: Path, tiny_corpora: dict[str, Path],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    m = build_manifest("u", "urdu", tiny_corpora["urdu"])
    path = m.save(tmp_path / "u.json")
    before = path.read_bytes()
    import os

    def broken_replace(*_a, **_k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        m.save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["u.json"]  # no temp file left behind


def test_unknown_corpus_and_label_map(tmp_path: Path, tiny_corpora: dict[str, Path]) -> None:
    res = run(tmp_path, "corpus", "show", "nope")
    assert res.exit_code != 0 and "not added" in res.output
    res = run(tmp_path, "corpus", "add", "u", "--layout", "urdu", "--root", str(tiny_corpora["urdu"]),
              "--labels", "nosuchmap")
    assert res.exit_code != 0 and "paper" in res.output


def test_export_emobox_and_csv_roundtrip(tmp_path: Path, tiny_corpora: dict[str, Path]) -> None:
    assert run(tmp_path, "corpus", "add", "u", "--layout", "urdu", "--root", str(tiny_corpora["urdu"])).exit_code == 0
    out = tmp_path / "u.jsonl"
    assert run(tmp_path, "corpus", "export", "u", "--format", "emobox", "--out", str(out)).exit_code == 0
    res = run(tmp_path, "corpus", "add", "u2", "--layout", "emobox", "--root", str(out))
    assert res.exit_code == 0, res.output
    a = Manifest.load(tmp_path / "manifests" / "u.json")
    b = Manifest.load(tmp_path / "manifests" / "u2.json")
    assert sorted(zip(a.column("utt_id"), a.column("label"))) == sorted(zip(b.column("utt_id"), b.column("label")))
    out_csv = tmp_path / "u.csv"
    assert run(tmp_path, "corpus", "export", "u", "--format", "csv", "--out", str(out_csv)).exit_code == 0
    c = build_manifest("u3", "csv", out_csv)
    assert sorted(c.column("label")) == sorted(a.column("label"))
    assert sorted(c.column("speaker")) == sorted(a.column("speaker"))
