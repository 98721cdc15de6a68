"""The results ledger: round trip, identity of the data, filters, CSV export, concurrent writers."""

from __future__ import annotations

import csv
import json
import multiprocessing
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from classifiers.studies.ledger import CSV_COLUMNS, Ledger, LedgerError, identity_of
from featurestore.workspace import Workspace


def fake_result(source: str = "emodb", target: str = "urdu", model: str = "whisper", *, weights: str | None = None,
                shots: int = 0, uar: float = 0.5, key: str | None = None, snr: float | None = None) -> dict[str, Any]:
    config = {"source": source, "target": target, "model": model, "layer": "last", "classifier": "logreg",
              "norm": "none", "shots": shots, "seeds": [0, 1, 2],
              "target_noise": {"dir": "/noise", "snr_db": snr, "noise_seed": 0} if snr is not None else None}
    weights = weights or f"{model}-weights"
    return {
        "config_key": key or f"{source}-{target}-{model}-{shots}-{snr}",
        "uar_mean": uar, "uar_std": 0.01, "uar_per_seed": [uar] * 3, "layer": 12, "chance": 0.25,
        "config": config,
        "provenance": {"source": {"store_key": f"{source}/clean/{model}-abc", "weights_hash": weights},
                       "target": {"store_key": f"{target}/clean/{model}-abc", "weights_hash": weights}},
        "baseline": {"uar_mean": 0.4} if shots else None,
    }


def test_round_trip_and_filters(tmp_path: Path) -> None:
    ledger = Ledger.open(Workspace.open(tmp_path))
    assert ledger.path == tmp_path / "results" / "ledger.sqlite"
    first = fake_result(uar=0.61)
    ledger.put(first, study="paper")
    ledger.put(fake_result("urdu", "emodb", "mms", uar=0.55))
    ledger.put(fake_result("iemocap", "urdu", shots=50, uar=0.7, snr=10.0), study="fewshot")
    got = ledger.get(first["config_key"])
    assert got == first
    assert ledger.get("nope") is None
    assert len(ledger) == 3
    assert [r["uar_mean"] for r in ledger.rows(model="whisper")] == [0.61, 0.7]
    assert [r["config_key"] for r in ledger.rows(study="paper")] == [first["config_key"]]
    assert ledger.rows(study="paper")[0]["_studies"] == ["paper"]
    assert len(ledger.rows(source=["emodb", "urdu"])) == 2
    assert [r["uar_mean"] for r in ledger.rows(shots=50, condition="target@10dB")] == [0.7]
    assert ledger.rows(layer="last", classifier="logreg", norm="none", target="urdu", shots=0)[0]["uar_mean"] == 0.61
    with pytest.raises(LedgerError, match="unknown ledger filter.*modle"):
        ledger.rows(modle="x")


def test_reextracted_model_is_a_new_row(tmp_path: Path) -> None:
    ledger = Ledger.open(tmp_path)
    old, new = fake_result(weights="w1", uar=0.5), fake_result(weights="w2", uar=0.6)
    ledger.put(old)
    ledger.put(new)
    assert len(ledger) == 2
    assert ledger.get(old["config_key"], identity_of(old["provenance"]))["uar_mean"] == 0.5
    assert ledger.get(old["config_key"], identity_of(new["provenance"]))["uar_mean"] == 0.6
    assert ledger.get(old["config_key"], {"store_keys": ["x"], "weights_hashes": []}) is None
    ledger.put(fake_result(weights="w2", uar=0.65))  # same configuration and data: replaced
    assert len(ledger) == 2 and ledger.get(old["config_key"], identity_of(new["provenance"]))["uar_mean"] == 0.65
    assert identity_of(new["provenance"]) == {"store_keys": ["emodb/clean/whisper-abc", "urdu/clean/whisper-abc"],
                                              "weights_hashes": ["w2"]}


def test_export_csv_and_delete(tmp_path: Path) -> None:
    ledger = Ledger.open(tmp_path)
    ledger.put(fake_result(uar=0.61), study="a")
    ledger.put(fake_result("urdu", "emodb", uar=0.55), study="b")
    out, count = ledger.export_csv(tmp_path / "out" / "r.csv", study="a")
    rows = list(csv.DictReader(out.open()))
    assert count == 1
    assert list(rows[0]) == list(CSV_COLUMNS) and len(rows) == 1
    assert rows[0]["source"] == "emodb" and float(rows[0]["uar_mean"]) == 0.61 and rows[0]["study"] == "a"
    assert not list((tmp_path / "out").glob(".*tmp"))
    with pytest.raises(LedgerError, match="at least one filter"):
        ledger.delete()
    assert ledger.delete(study="b") == 1 and len(ledger) == 1 and ledger.studies() == {"a": 1}


def test_corrupt_ledger_gives_advice(tmp_path: Path) -> None:
    path = tmp_path / "results" / "ledger.sqlite"
    path.parent.mkdir()
    path.write_bytes(b"not a database at all" * 100)
    with pytest.raises(LedgerError, match="move it away"):
        Ledger.open(tmp_path)


def _writer(root: str, tag: str, n: int) -> None:
    ledger = Ledger.open(root)
    for i in range(n):
        ledger.put(fake_result(key=f"{tag}-{i}", uar=i / n), study=tag)


def test_two_processes_write_at_once(tmp_path: Path) -> None:
    Ledger.open(tmp_path)
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), tag, 40)) for tag in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    ledger = Ledger.open(tmp_path)
    assert len(ledger) == 80 and ledger.studies() == {"a": 40, "b": 40}
    with sqlite3.connect(ledger.path) as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


# --------------------------------------------------------------------------- predictions and intervals
_SCHEMA_1 = """
CREATE TABLE IF NOT EXISTS results (
    row_key    TEXT PRIMARY KEY,
    config_key TEXT NOT NULL,
    identity   TEXT NOT NULL,
    source     TEXT, target TEXT, model TEXT, layer TEXT, layer_used TEXT, classifier TEXT,
    norm       TEXT, shots INTEGER, condition TEXT, seeds INTEGER,
    uar_mean   REAL, uar_std REAL,
    created    TEXT NOT NULL,
    result     TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS results_config ON results (config_key);
CREATE INDEX IF NOT EXISTS results_pair ON results (source, target, model);
CREATE TABLE IF NOT EXISTS studies (
    study   TEXT NOT NULL,
    row_key TEXT NOT NULL REFERENCES results (row_key) ON DELETE CASCADE,
    PRIMARY KEY (study, row_key)
);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT);
"""  # the CREATE statements of ledger schema 1 (fs before predictions were kept), verbatim


def with_predictions(key: str = "ab12cd34" * 8, shots: int = 0, **kwargs: Any) -> dict[str, Any]:
    from test_intervals import fake_predictions, record

    result = fake_result(key=key, shots=shots, **kwargs)
    made = record(fake_predictions(drop=10 if shots else 0), fake_predictions(rng_seed=9, drop=10) if shots else None)
    result.update({k: v for k, v in made.items() if k != "config_key"})
    return result


def test_predictions_are_kept_beside_the_row_with_intervals(tmp_path: Path) -> None:
    ledger = Ledger.open(tmp_path)
    result = with_predictions(shots=5)
    sent = {k: result[k] for k in ("predictions", "baseline_predictions")}
    row_key = ledger.put(result, study="s")
    assert result["uar_ci95"][0] < result["uar_mean"] < result["uar_ci95"][1]  # put gave the result its intervals
    stored = ledger.get(result["config_key"])
    assert "predictions" not in stored and "baseline_predictions" not in stored
    assert stored["uar_ci95"] == result["uar_ci95"] and stored["baseline"]["uar_ci95"] == result["baseline"]["uar_ci95"]
    assert ledger.predictions(result["config_key"]) == sent["predictions"]
    assert ledger.predictions(row_key[:8], "baseline_predictions") == sent["baseline_predictions"]
    assert ledger.rows()[0]["_predictions"] is True
    with sqlite3.connect(ledger.path) as con:  # compact: one compressed blob per (row, part, seed)
        blobs = con.execute("SELECT part, seed, length(data), n FROM predictions ORDER BY part, seed").fetchall()
    assert [(p, s) for p, s, _, _ in blobs] == [("baseline_predictions", s) for s in range(3)] + [
        ("predictions", s) for s in range(3)]
    assert all(size < 40 * n for _, _, size, n in blobs)
    out, _ = ledger.export_csv(tmp_path / "r.csv")
    row = next(csv.DictReader(out.open()))
    assert [float(row["uar_ci95_lo"]), float(row["uar_ci95_hi"])] == pytest.approx(result["uar_ci95"])


def test_a_rerun_replaces_predictions_and_delete_removes_them(tmp_path: Path) -> None:
    from test_intervals import fake_predictions

    ledger = Ledger.open(tmp_path)
    first = with_predictions()
    ledger.put(first, study="a")
    second = with_predictions()
    second["predictions"] = fake_predictions(seeds=2, rng_seed=11)
    ledger.put(second)
    assert [e["seed"] for e in ledger.predictions(first["config_key"])] == [0, 1]
    assert ledger.studies() == {"a": 1}
    assert ledger.delete(study="a") == 1
    with sqlite3.connect(ledger.path) as con:
        assert con.execute("SELECT count(*) FROM predictions").fetchone()[0] == 0


def test_result_keys_by_unique_prefix(tmp_path: Path) -> None:
    from classifiers.studies.ledger import NoPredictionsError, NoSuchResultError

    ledger = Ledger.open(tmp_path)
    ledger.put(fake_result(key="abcdef1" + "0" * 57))
    ledger.put(fake_result(key="abcdef2" + "0" * 57))
    ledger.put(fake_result(key="fed999" + "0" * 58, weights="w1"))
    newer = ledger.put(fake_result(key="fed999" + "0" * 58, weights="w2"))
    assert ledger.resolve("abcdef1") == ledger.rows(config_key="abcdef1" + "0" * 57)[0]["_row_key"]
    assert ledger.resolve("FED999") == newer  # one configuration from two identities: the most recent
    assert ledger.resolve(newer[:10]) == newer and ledger.result(newer[:10])["_row_key"] == newer
    with pytest.raises(NoSuchResultError, match="ambiguous.*more characters"):
        ledger.resolve("abcdef")
    with pytest.raises(NoSuchResultError, match="first 6"):
        ledger.resolve("abcde")
    with pytest.raises(NoSuchResultError, match="no result"):
        ledger.resolve("0123456")
    with pytest.raises(NoPredictionsError, match="--rerun"):
        ledger.predictions("abcdef1")


def test_schema_1_ledger_is_migrated_in_place(tmp_path: Path) -> None:
    """A ledger written before predictions were kept opens, keeps its rows and studies, says they have no
    predictions, and takes new results with predictions."""
    from classifiers.studies.ledger import NoPredictionsError

    path = tmp_path / "results" / "ledger.sqlite"
    path.parent.mkdir()
    old = fake_result(key="0123ab" + "0" * 58)
    with sqlite3.connect(path) as con:
        con.executescript(_SCHEMA_1)
        con.execute("INSERT INTO meta VALUES ('schema', '1')")
        con.execute("INSERT INTO results (row_key, config_key, identity, source, target, model, uar_mean, uar_std, "
                    "created, result) VALUES ('r1', ?, '{}', 'emodb', 'urdu', 'whisper', 0.5, 0.01, "
                    "'2024-01-01T00:00:00Z', ?)", (old["config_key"], json.dumps(old)))
        con.execute("INSERT INTO studies VALUES ('paper', 'r1')")
    con.close()
    ledger = Ledger.open(tmp_path)
    with sqlite3.connect(ledger.path) as con:
        assert con.execute("SELECT value FROM meta WHERE name = 'schema'").fetchone()[0] == "2"
        assert con.execute("SELECT count(*) FROM predictions").fetchone()[0] == 0
    con.close()
    rows = ledger.rows(study="paper")
    assert [r["config_key"] for r in rows] == [old["config_key"]] and rows[0]["_predictions"] is False
    with pytest.raises(NoPredictionsError, match="kept none"):
        ledger.predictions("0123ab")
    new = with_predictions()
    ledger.put(new)
    assert len(ledger.predictions(new["config_key"])) == 3
    assert Ledger.open(tmp_path).rows(study="paper")[0]["uar_mean"] == 0.5  # opening again: nothing to migrate


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    ledger = Ledger.open(tmp_path)
    with sqlite3.connect(ledger.path) as con:
        con.execute("UPDATE meta SET value = '3' WHERE name = 'schema'")
    con.close()
    with pytest.raises(LedgerError, match="schema 3"):
        Ledger.open(tmp_path)


def test_a_multi_source_result_is_written_with_its_sources_as_one_column(tmp_path):
    """A union's source is a tuple in memory and a list read back from JSON: both go in as "a,b" (sqlite cannot
    bind a tuple; `fs probe --source a,b` failed on writing its row)."""
    from classifiers.studies.ledger import _columns, source_text

    assert source_text(("emodb", "ravdess")) == "emodb,ravdess" == source_text(["emodb", "ravdess"])
    assert source_text("emodb") == "emodb" and source_text(None) is None
    assert _columns({"config": {"source": ("emodb", "ravdess"), "target": "urdu"}})["source"] == "emodb,ravdess"
