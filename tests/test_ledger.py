"""The results ledger: round trip, identity of the data, filters, CSV export, concurrent writers."""

from __future__ import annotations

import csv
import multiprocessing
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from classifiers.ledger import CSV_COLUMNS, Ledger, LedgerError, identity_of
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
