"""The results ledger: every probe result of a workspace in one SQLite database.

``<workspace>/results/ledger.sqlite`` holds one row per (configuration, data identity): the
result's ``config_key`` plus the store groups it read and their weights hashes (found anywhere in
``result["provenance"]``), so re-extracting a model with other weights makes a new row and never
answers from a stale one. Columns hold what people filter on; ``result`` holds the whole JSON.

The database runs in WAL mode with a busy timeout and writes in ``BEGIN IMMEDIATE`` transactions,
so several processes may read and write it at once.

    ledger = Ledger.open(workspace)
    ledger.put(result.to_dict(), study="paper")
    ledger.rows(source="emodb", model="whisper")
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from data_manifests.atomic import atomic_write_text
from featurestore.errors import FsError
from featurestore.workspace import Workspace

LEDGER_NAME = "ledger.sqlite"
SCHEMA_VERSION = 1
FILTERS: tuple[str, ...] = ("source", "target", "model", "layer", "classifier", "shots", "norm", "condition",
                            "study", "config_key")
CSV_COLUMNS: tuple[str, ...] = ("config_key", "study", "source", "target", "model", "layer", "layer_used",
                                "classifier", "norm", "shots", "condition", "seeds", "uar_mean", "uar_std",
                                "chance", "baseline_uar_mean", "weights_hash", "store_keys", "created")
_IDENTITY_FIELDS = ("store_key", "store_keys", "weights_hash", "weights_hashes")

_SCHEMA = """
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
"""


class LedgerError(FsError):
    """A ledger that cannot be opened, read or written as asked."""


def identity_of(provenance: Any) -> dict[str, list[str]]:
    """The data a result depends on: every store key and weights hash found in ``provenance``.

    Walks nested dicts and lists for ``store_key(s)`` and ``weights_hash(es)``; returns
    ``{"store_keys": [...], "weights_hashes": [...]}`` sorted and deduplicated.
    """
    keys: set[str] = set()
    hashes: set[str] = set()

    def add(target: set[str], value: Any) -> None:
        if isinstance(value, (list, tuple, set)):
            for v in value:
                add(target, v)
        elif isinstance(value, dict):
            for v in value.values():
                add(target, v)
        elif value not in (None, ""):
            target.add(str(value))

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for name, value in node.items():
                if name in ("store_key", "store_keys"):
                    add(keys, value)
                elif name in ("weights_hash", "weights_hashes"):
                    add(hashes, value)
                else:
                    walk(value)
        elif isinstance(node, (list, tuple)):
            for value in node:
                walk(value)

    walk(provenance)
    return {"store_keys": sorted(keys), "weights_hashes": sorted(hashes)}


def identity_text(identity: dict[str, list[str]]) -> str:
    """Canonical JSON of an identity (what the ledger compares)."""
    return json.dumps({k: sorted(identity.get(k, [])) for k in ("store_keys", "weights_hashes")}, sort_keys=True)


def condition_of(config: dict[str, Any]) -> str:
    """A short name of a configuration's noise condition: ``clean``, ``target@10dB``, ``source@5dB+target@10dB``."""
    parts = []
    for side in ("source", "target"):
        noise = config.get(f"{side}_noise")
        if noise:
            snr = noise.get("snr_db") if isinstance(noise, dict) else None
            parts.append(f"{side}@{snr:g}dB" if isinstance(snr, (int, float)) else f"{side}-noise")
    return "+".join(parts) or "clean"


def _columns(result: dict[str, Any]) -> dict[str, Any]:
    config = result.get("config") or {}
    seeds = config.get("seeds")
    return {
        "source": config.get("source"), "target": config.get("target"), "model": config.get("model"),
        "layer": None if config.get("layer") is None else str(config.get("layer")),
        "layer_used": None if result.get("layer") is None else str(result.get("layer")),
        "classifier": config.get("classifier"), "norm": config.get("norm"),
        "shots": None if config.get("shots") is None else int(config.get("shots")),
        "condition": condition_of(config),
        "seeds": len(seeds) if isinstance(seeds, (list, tuple)) else seeds,
        "uar_mean": result.get("uar_mean"), "uar_std": result.get("uar_std"),
    }


class Ledger:
    """One workspace's results database (``<workspace>/results/ledger.sqlite``)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._connect() as con:
                con.executescript(_SCHEMA)
                con.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
                found = con.execute("SELECT value FROM meta WHERE name='schema'").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            raise LedgerError(f"the results ledger {self.path} cannot be opened ({exc}); move it away to start "
                              "a new one (results are recomputed from the store)") from None
        if int(found) != SCHEMA_VERSION:
            raise LedgerError(f"{self.path} has ledger schema {found}, this fs writes {SCHEMA_VERSION}; move it "
                              "away to start a new ledger, or use the fs version that wrote it")

    @classmethod
    def open(cls, workspace: Workspace | str | Path) -> Ledger:
        """The ledger of ``workspace`` (a :class:`Workspace` or its root folder), created on first use."""
        ws = workspace if isinstance(workspace, Workspace) else Workspace.open(workspace)
        return cls(ws.results_dir / LEDGER_NAME)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        con = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
        try:
            con.execute("PRAGMA busy_timeout = 60000")
            con.execute("PRAGMA journal_mode = WAL")
            con.execute("PRAGMA foreign_keys = ON")
            yield con
        finally:
            con.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (taken at once, so concurrent writers queue instead of deadlocking)."""
        with self._connect() as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")

    # -- writing -------------------------------------------------------------------------
    def put(self, result: dict[str, Any], study: str | None = None) -> str:
        """Store ``result`` (a ``ProbeResult.to_dict()``); replaces the row of the same key. Returns the row key."""
        return self.put_many([result], study=study)[0]

    def put_many(self, results: list[dict[str, Any]], study: str | None = None) -> list[str]:
        """Store several results in one transaction; each is tagged with ``study`` when given."""
        rows = []
        for result in results:
            if not result.get("config_key"):
                raise LedgerError("a result without config_key cannot enter the ledger; pass ProbeResult.to_dict()")
            identity = identity_text(identity_of(result.get("provenance", {})))
            row_key = hashlib.sha256(f"{result['config_key']}\n{identity}".encode()).hexdigest()[:32]
            rows.append((row_key, result["config_key"], identity, _columns(result),
                         json.dumps(result, sort_keys=True, default=str)))
        created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        with self._write() as con:
            for row_key, config_key, identity, cols, text in rows:
                con.execute(
                    "INSERT OR REPLACE INTO results (row_key, config_key, identity, source, target, model, layer, "
                    "layer_used, classifier, norm, shots, condition, seeds, uar_mean, uar_std, created, result) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (row_key, config_key, identity, cols["source"], cols["target"], cols["model"], cols["layer"],
                     cols["layer_used"], cols["classifier"], cols["norm"], cols["shots"], cols["condition"],
                     cols["seeds"], cols["uar_mean"], cols["uar_std"], created, text))
                if study:
                    con.execute("INSERT OR IGNORE INTO studies VALUES (?, ?)", (study, row_key))
        return [r[0] for r in rows]

    def tag(self, row_keys: list[str], study: str) -> None:
        """Add existing rows to ``study`` (results answered from the ledger by a sweep)."""
        with self._write() as con:
            con.executemany("INSERT OR IGNORE INTO studies VALUES (?, ?)", [(study, k) for k in row_keys])

    def delete(self, **filters: Any) -> int:
        """Delete the rows matching ``filters`` (as :meth:`rows`; at least one is required). Returns the count."""
        if not any(v is not None for v in filters.values()):
            raise LedgerError("delete needs at least one filter (e.g. study=..., model=...)")
        where, args = self._where(filters)
        with self._write() as con:
            keys = [r[0] for r in con.execute(f"SELECT r.row_key FROM results r {where}", args)]
            con.executemany("DELETE FROM studies WHERE row_key = ?", [(k,) for k in keys])
            con.executemany("DELETE FROM results WHERE row_key = ?", [(k,) for k in keys])
        return len(keys)

    # -- reading -------------------------------------------------------------------------
    def get(self, config_key: str, identity: dict[str, list[str]] | None = None) -> dict[str, Any] | None:
        """The result of ``config_key`` computed from exactly the groups of ``identity`` (see
        :func:`identity_of`), or with no identity the most recent one; None when absent."""
        with self._connect() as con:
            if identity is None:
                row = con.execute("SELECT result FROM results WHERE config_key = ? ORDER BY created DESC, rowid DESC "
                                  "LIMIT 1", (config_key,)).fetchone()
            else:
                row = con.execute("SELECT result FROM results WHERE config_key = ? AND identity = ?",
                                  (config_key, identity_text(identity))).fetchone()
        return json.loads(row[0]) if row else None

    def row_key(self, config_key: str, identity: dict[str, list[str]]) -> str:
        """The row key that ``put`` gives a result of ``config_key`` with ``identity``."""
        return hashlib.sha256(f"{config_key}\n{identity_text(identity)}".encode()).hexdigest()[:32]

    def _where(self, filters: dict[str, Any]) -> tuple[str, list[Any]]:
        unknown = sorted(set(filters) - set(FILTERS))
        if unknown:
            raise LedgerError(f"unknown ledger filter(s) {unknown}; use {', '.join(FILTERS)}")
        clauses, args = [], []
        for name, value in filters.items():
            if value is None:
                continue
            values = list(value) if isinstance(value, (list, tuple, set)) else [value]
            if name == "study":
                marks = ",".join("?" * len(values))
                clauses.append(f"r.row_key IN (SELECT row_key FROM studies WHERE study IN ({marks}))")
            else:
                marks = ",".join("?" * len(values))
                clauses.append(f"r.{name} IN ({marks})")
            if name == "shots":
                values = [int(v) for v in values]
            elif name == "layer":
                values = [str(v) for v in values]
            args += values
        return ("WHERE " + " AND ".join(clauses)) if clauses else "", args

    def rows(self, **filters: Any) -> list[dict[str, Any]]:
        """Full results (dicts) matching ``filters`` (names in :data:`FILTERS`; a value or a list of
        values), oldest first; each carries ``_row_key``, ``_created`` and ``_studies``."""
        where, args = self._where(filters)
        sql = (f"SELECT r.row_key, r.created, r.result, (SELECT group_concat(study, ',') FROM studies s "
               f"WHERE s.row_key = r.row_key) FROM results r {where} ORDER BY r.created, r.rowid")
        with self._connect() as con:
            found = con.execute(sql, args).fetchall()
        out = []
        for row_key, created, text, studies in found:
            result = json.loads(text)
            result.update({"_row_key": row_key, "_created": created,
                           "_studies": sorted(studies.split(",")) if studies else []})
            out.append(result)
        return out

    def studies(self) -> dict[str, int]:
        """Study names with their row counts."""
        with self._connect() as con:
            return dict(con.execute("SELECT study, count(*) FROM studies GROUP BY study ORDER BY study"))

    def __len__(self) -> int:
        with self._connect() as con:
            return int(con.execute("SELECT count(*) FROM results").fetchone()[0])

    # -- export --------------------------------------------------------------------------
    def export_csv(self, path: str | Path, **filters: Any) -> Path:
        """Write the rows matching ``filters`` as CSV (:data:`CSV_COLUMNS`), atomically. Returns the path."""
        return atomic_write_text(Path(path), rows_to_csv(self.rows(**filters)))


def flat_row(result: dict[str, Any]) -> dict[str, Any]:
    """One ledger result as a flat dict of :data:`CSV_COLUMNS` (what ``fs results`` shows)."""
    config = result.get("config") or {}
    identity = identity_of(result.get("provenance", {}))
    seeds = config.get("seeds")
    baseline = result.get("baseline") or {}
    return {
        "config_key": result.get("config_key"), "study": ",".join(result.get("_studies", [])),
        "source": config.get("source"), "target": config.get("target"), "model": config.get("model"),
        "layer": config.get("layer"), "layer_used": result.get("layer"), "classifier": config.get("classifier"),
        "norm": config.get("norm"), "shots": config.get("shots"), "condition": condition_of(config),
        "seeds": len(seeds) if isinstance(seeds, (list, tuple)) else seeds,
        "uar_mean": result.get("uar_mean"), "uar_std": result.get("uar_std"), "chance": result.get("chance"),
        "baseline_uar_mean": baseline.get("uar_mean") if isinstance(baseline, dict) else None,
        "weights_hash": ";".join(h[:16] for h in identity["weights_hashes"]),
        "store_keys": ";".join(identity["store_keys"]), "created": result.get("_created"),
    }


def rows_to_csv(results: list[dict[str, Any]]) -> str:
    """CSV text of ``results`` (header :data:`CSV_COLUMNS`)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(CSV_COLUMNS))
    writer.writeheader()
    for result in results:
        writer.writerow(flat_row(result))
    return buf.getvalue()
