"""The ledger under adversarial use: reruns and concurrent writers keep study memberships, a full disk
and malformed ledgers give typed one-line errors, a model goes by every one of its names."""

from __future__ import annotations

import csv
import multiprocessing
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import bench_module
from test_ledger import fake_result

from classifiers.studies.ledger import Ledger, LedgerCorruptError, LedgerFullError, NoSuchModelError, model_names
from classifiers.studies.protocols import ProbeConfig, run_probe
from cli.main import fs
from featurestore.store import FeatureStore
from featurestore.workspace import Workspace

CELLS = 36


def _results() -> list[dict]:
    return [fake_result(key=f"cell-{i}", uar=i / CELLS) for i in range(CELLS)]


# --------------------------------------------------------------------------- item 10: memberships survive reruns
def test_rerun_keeps_the_row_in_every_study(tmp_path: Path) -> None:
    ledger = Ledger.open(tmp_path)
    result = fake_result(uar=0.5)
    key = ledger.put(result, study="a")
    ledger.put(fake_result(uar=0.6))  # `fs probe ... --rerun`: no study
    ledger.put(fake_result(uar=0.7), study="b")  # another study recomputes the shared cell
    [row] = ledger.rows(study="a")
    assert row["_row_key"] == key and row["uar_mean"] == 0.7 and row["_studies"] == ["a", "b"]
    assert ledger.studies() == {"a": 1, "b": 1} and len(ledger) == 1


def _sweep_like(root: str, study: str, rounds: int) -> None:
    ledger = Ledger.open(root)
    for _ in range(rounds):  # every round re-stores every cell, as `fs sweep --rerun` does
        for result in _results():
            ledger.put(result, study=study)


def test_concurrent_processes_keep_every_row_of_both_studies(tmp_path: Path) -> None:
    Ledger.open(tmp_path)
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_sweep_like, args=(str(tmp_path), study, 3)) for study in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    ledger = Ledger.open(tmp_path)
    assert ledger.studies() == {"a": CELLS, "b": CELLS} and len(ledger) == CELLS


def test_concurrent_threads_keep_every_row_of_every_study(tmp_path: Path) -> None:
    Ledger.open(tmp_path)
    errors: list[BaseException] = []

    def run(study: str) -> None:
        try:
            _sweep_like(str(tmp_path), study, 2)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(s,)) for s in ("a", "b", "c")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    assert Ledger.open(tmp_path).studies() == {"a": CELLS, "b": CELLS, "c": CELLS}


# --------------------------------------------------------------------------- item 18: full disk, malformed ledgers
class _TinyDiskLedger(Ledger):
    """A ledger whose database may not grow past its current pages: SQLite's own SQLITE_FULL."""

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        with super()._connect() as con:
            pages = con.execute("PRAGMA page_count").fetchone()[0]
            con.execute(f"PRAGMA max_page_count = {max(pages, 1)}")
            yield con


def test_full_disk_says_so_and_keeps_the_ledger(tmp_path: Path) -> None:
    ledger = Ledger.open(tmp_path)
    ledger.put(fake_result(uar=0.5), study="a")
    with sqlite3.connect(ledger.path) as con:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    full = _TinyDiskLedger(ledger.path)
    big = [fake_result(key=f"big-{i}", uar=0.1) | {"padding": "x" * 200_000} for i in range(3)]
    with pytest.raises(LedgerFullError) as err:
        full.put_many(big, study="a")
    text = str(err.value)
    assert "full" in text and "intact" in text and "move it away" not in text
    assert [r["uar_mean"] for r in Ledger.open(tmp_path).rows(study="a")] == [0.5]
    with sqlite3.connect(ledger.path) as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def _ledger_path(root: Path) -> Path:
    path = root / "results" / "ledger.sqlite"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


@pytest.mark.parametrize("make, message", [
    (lambda p: p.write_bytes(b"\xff\xfe garbage " * 500), "not a readable SQLite database"),
    (lambda p: sqlite3.connect(p).execute("CREATE TABLE photos (id, blob)").connection.commit(),
     "not a results ledger .*photos"),
    (lambda p: sqlite3.connect(p).executescript(
        "CREATE TABLE meta (name, value); INSERT INTO meta VALUES ('schema', '1');"
        "CREATE TABLE results (row_key, config_key); CREATE TABLE studies (study, row_key);"), "results lacks identity"),
    (lambda p: sqlite3.connect(p).executescript("CREATE TABLE meta (name, value); INSERT INTO meta VALUES "
                                                "('schema', 'abc');"), "no ledger schema version"),
])
def test_malformed_ledger_is_a_clear_error_and_left_alone(tmp_path: Path, make, message: str) -> None:
    path = _ledger_path(tmp_path)
    make(path)
    before = path.read_bytes()
    with pytest.raises(LedgerCorruptError, match=message):
        Ledger.open(tmp_path)
    assert path.read_bytes() == before
    out = CliRunner().invoke(fs, ["--workspace", str(tmp_path), "results"])
    assert out.exit_code == 1 and "move it away" in out.output
    assert "bug in fs" not in out.output and "Traceback" not in out.output


# --------------------------------------------------------------------------- item 2 and 1: model names, modes
@pytest.fixture
def folder_ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Workspace:
    """A store whose model was extracted from a folder given relatively (``../models/whisper-base-encoder``),
    a probe of it in the ledger, and the working directory where that relative name resolves."""
    folder = tmp_path / "models" / "whisper-base-encoder"
    folder.mkdir(parents=True)
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    ws = bench_module().synthetic_workspace(tmp_path / "ws", corpora={"aa": 30, "bb": 30}, models={"m1": (2, 8)},
                                            speakers={"aa": 5, "bb": 5}, separation=1.0)
    store = FeatureStore(ws.store_url)
    for key in store.find(model="m1"):
        group = store.open(key, mode="a").group
        model = dict(group.attrs["model"])
        model.update(name="../models/whisper-base-encoder", model_id=str(folder), family="whisper",
                     settings={"whisper_input": "trim"})
        group.attrs["model"] = model
    config = ProbeConfig(source="aa", target="bb", model="../models/whisper-base-encoder", classifier="logreg",
                         seeds=1)
    Ledger.open(ws).put(run_probe(config, store, ws).to_dict() | {"whisper_input": "trim"}, study="s")
    return ws


def test_a_model_goes_by_every_name(folder_ws: Workspace, tmp_path: Path) -> None:
    ledger = Ledger.open(folder_ws)
    [row] = ledger.rows()
    weights = row["provenance"]["source"]["weights_hash"]
    key_model = row["provenance"]["source"]["store_key"].rsplit("/", 1)[1]
    for name in ("whisper", "../models/whisper-base-encoder", str(tmp_path / "models" / "whisper-base-encoder"),
                 "whisper-base-encoder", weights, weights[:8], key_model):
        assert len(ledger.rows(model=name)) == 1, name
    with pytest.raises(NoSuchModelError, match=r"model 'wav2vec2'; models stored: /.*/models/whisper-base-encoder"):
        ledger.rows(model="wav2vec2")
    names = model_names(row)
    assert str(tmp_path / "models" / "whisper-base-encoder") in names.names and weights in names.hashes


def test_results_csv_by_alias_with_mode_umask_and_no_silent_overwrite(folder_ws: Workspace, tmp_path: Path) -> None:
    runner = CliRunner()
    base = ["--workspace", str(folder_ws.root)]
    old = os.umask(0o022)
    try:
        out = runner.invoke(fs, [*base, "results", "--model", "whisper", "--csv", "table.csv"])
    finally:
        os.umask(old)
    assert out.exit_code == 0 and "1 row(s) written" in out.output, out.output
    table = Path("table.csv")
    assert oct(table.stat().st_mode & 0o777) == oct(0o644)
    [row] = list(csv.DictReader(table.open()))
    assert row["whisper_input"] == "trim" and row["model"].endswith("/models/whisper-base-encoder")
    table.write_text("mine")
    out = runner.invoke(fs, [*base, "results", "--model", "whisper", "--csv", "table.csv"])
    assert out.exit_code == 1 and "--overwrite" in out.output and table.read_text() == "mine"
    out = runner.invoke(fs, [*base, "results", "--model", "whisper", "--csv", "table.csv", "--overwrite"])
    assert out.exit_code == 0 and table.read_text().count("\n") == 2
    out = runner.invoke(fs, [*base, "results", "--model", "whisper"])
    assert out.exit_code == 0 and "/models/whisper-base-encoder (trim)" in out.output
    out = runner.invoke(fs, [*base, "results", "--model", "xlsr", "--csv", "other.csv"])
    assert out.exit_code == 1 and "no result in the ledger is of model 'xlsr'" in out.output
    assert not Path("other.csv").exists()
    out = runner.invoke(fs, [*base, "report", "--model", "nope"])
    assert out.exit_code == 1 and "no result in the ledger is of model 'nope'" in out.output
