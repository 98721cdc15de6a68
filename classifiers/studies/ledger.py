"""The results ledger: every probe result of a workspace in one SQLite database.

``<workspace>/results/ledger.sqlite`` holds one row per (configuration, data identity): the
result's ``config_key`` plus the store groups it read and their weights hashes (found anywhere in
``result["provenance"]``), so re-extracting a model with other weights makes a new row and never
answers from a stale one. Columns hold what people filter on; ``result`` holds the whole JSON.

The per-utterance predictions of a result (``predictions`` and, for few-shot, ``baseline_predictions``:
one entry per seed, see :mod:`classifiers.studies.intervals`) live in the ``predictions`` table beside it, one
zlib-compressed JSON blob per (row, part, seed), and leave with the row; ``put`` first gives a result
with predictions its bootstrap intervals (``uar_ci95``). :meth:`Ledger.predictions` returns them.
A ledger of schema 1 (before predictions were kept) is migrated in place when opened: its rows stay
and have no predictions, which :meth:`Ledger.predictions` says.

The database runs in WAL mode with a busy timeout and writes in ``BEGIN IMMEDIATE`` transactions,
so several processes may read and write it at once. Storing a result again (a rerun, another study
recomputing a shared cell, two sweeps at once) updates its row in place: the row keeps its study
memberships. SQLite failures become typed :class:`LedgerError` subclasses (disk full, not a ledger).

A model filter (``model=``) matches a result under any name of the model it read: the name given,
its model id, a relative or absolute folder, the folder's name, the store group's model key and
aliases, a weights hash (or its first 8+ characters), then every result with the same weights;
with no such match, a family name (``whisper``, ``wav2vec2``) matches that family's results.

    ledger = Ledger.open(workspace)
    ledger.put(result.to_dict(), study="paper")
    ledger.rows(source="emodb", model="whisper")
"""

from __future__ import annotations

import csv
import errno
import hashlib
import io
import json
import os
import re
import sqlite3
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from classifiers.studies.intervals import PARTS, add_intervals, check_predictions
from classifiers.studies.layer_choice import layer_used_text
from data_manifests.atomic import atomic_write_text
from featurestore.errors import FsError
from featurestore.provenance import Provenance
from featurestore.workspace import Workspace

LEDGER_NAME = "ledger.sqlite"
SCHEMA_VERSION = 2  # 2: the predictions table (schema 1 ledgers are migrated on open)
FILTERS: tuple[str, ...] = ("source", "target", "model", "layer", "classifier", "shots", "norm", "condition",
                            "study", "config_key")
CSV_COLUMNS: tuple[str, ...] = ("config_key", "study", "source", "target", "model", "whisper_input", "layer",
                                "layer_used", "classifier", "norm", "shots", "condition", "seeds", "uar_mean", "uar_std",
                                "uar_ci95_lo", "uar_ci95_hi", "chance", "baseline_uar_mean", "weights_hash", "store_keys",
                                "created")
_RESULT_COLUMNS = ("row_key", "config_key", "identity", "source", "target", "model", "layer", "layer_used",
                   "classifier", "norm", "shots", "condition", "seeds", "uar_mean", "uar_std", "created", "result")
_TABLES = {"results": _RESULT_COLUMNS, "studies": ("study", "row_key"), "meta": ("name", "value"),
           "predictions": ("row_key", "part", "seed", "n", "data")}
_MIN_HASH_PREFIX = 8  # a weights hash may be given by its first characters, at least this many
MIN_KEY_PREFIX = 6  # a result may be named by the first characters of its config or row key, at least this many

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
# Schema 2: per (row, part, seed) the per-utterance predictions, zlib-compressed JSON (see _pack).
_PREDICTIONS_TABLE = """
CREATE TABLE IF NOT EXISTS predictions (
    row_key TEXT NOT NULL REFERENCES results (row_key) ON DELETE CASCADE,
    part    TEXT NOT NULL,
    seed    INTEGER NOT NULL,
    n       INTEGER NOT NULL,
    data    BLOB NOT NULL,
    PRIMARY KEY (row_key, part, seed)
)"""
_SCHEMA += _PREDICTIONS_TABLE + ";\n"
# An update in place, never INSERT OR REPLACE: a replaced row would lose its study memberships (ON DELETE CASCADE).
_UPSERT = (f"INSERT INTO results ({', '.join(_RESULT_COLUMNS)}) VALUES ({', '.join('?' * len(_RESULT_COLUMNS))}) "
           "ON CONFLICT (row_key) DO UPDATE SET "
           + ", ".join(f"{c} = excluded.{c}" for c in _RESULT_COLUMNS if c != "row_key"))


class LedgerError(FsError):
    """A ledger that cannot be opened, read or written as asked."""


class LedgerCorruptError(LedgerError):
    """The ledger file is not an SQLite database, is damaged, or holds another schema."""


class LedgerFullError(LedgerError):
    """The disk holding the ledger is full; the write was rolled back and the ledger is intact."""


class NoSuchModelError(LedgerError):
    """A model filter that names no model of any result in the ledger."""


class NoSuchResultError(LedgerError):
    """A result key (or key prefix) that names no result, or several."""


class NoPredictionsError(LedgerError):
    """A result stored without per-utterance predictions (by an older fs, or a producer that keeps none)."""


def _pack(entry: dict[str, Any]) -> bytes:
    """One seed's predictions as zlib-compressed JSON."""
    return zlib.compress(json.dumps(entry, separators=(",", ":")).encode(), 6)


def _unpack(blob: bytes) -> dict[str, Any]:
    return json.loads(zlib.decompress(blob))


def _move_away(path: Path) -> str:
    return f"move it away (mv {path} {path}.bad) to start a new one; results are recomputed from the store"


def ledger_error(exc: sqlite3.Error, path: Path) -> LedgerError:
    """The typed :class:`LedgerError` for an SQLite failure on the ledger at ``path`` (by SQLite error code)."""
    code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
    if code == sqlite3.SQLITE_FULL:
        return LedgerFullError(f"the disk holding the results ledger {path} is full; the ledger is intact (the "
                               "unfinished write was rolled back). Free some space and run the command again: "
                               "finished results are kept")
    if code in (sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT):
        return LedgerCorruptError(f"the results ledger {path} is not a readable SQLite database ({exc}); "
                                  f"{_move_away(path)}")
    if code in (sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PERM, sqlite3.SQLITE_AUTH):
        return LedgerError(f"the results ledger {path} cannot be opened for writing ({exc}); check the folder's "
                           "permissions or give another --workspace")
    if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return LedgerError(f"the results ledger {path} stayed locked by another process for 60 s ({exc}); wait "
                           "for it to finish and run the command again")
    if code == sqlite3.SQLITE_ERROR:  # a missing table or column: a database of another schema
        return LedgerCorruptError(f"{path} is not a results ledger of this fs ({exc}); {_move_away(path)}")
    return LedgerError(f"the results ledger {path} failed: {exc} ({getattr(exc, 'sqlite_errorname', 'sqlite')})")


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


def row_identity(result: dict[str, Any]) -> dict[str, list[str]]:
    """The data identity of a result record's row: the ``identity`` the engine gave it
    (:func:`classifiers.studies.result.result_identity`), or for a record of an older fs the store keys
    and weights hashes found in its provenance."""
    identity = result.get("identity")
    return identity if isinstance(identity, dict) and "store_keys" in identity else identity_of(result.get("provenance"))


def identity_text(identity: dict[str, list[str]]) -> str:
    """Canonical JSON of an identity (what the ledger compares)."""
    return json.dumps({k: sorted(identity.get(k, [])) for k in ("store_keys", "weights_hashes")}, sort_keys=True)


def _row_key(config_key: str, identity: str) -> str:
    """A result's row: its configuration and the canonical identity text of the data it read."""
    return hashlib.sha256(f"{config_key}\n{identity}".encode()).hexdigest()[:32]


def whisper_input_of(result: dict[str, Any]) -> str | None:
    """The Whisper input mode a result used (``trim``/``full``; None for other models): the result's own
    record, else (older results) the mode its configuration asked for or its source group recorded."""
    source = (result.get("provenance") or {}).get("source") or {}
    return (result.get("whisper_input") or (result.get("config") or {}).get("whisper_input")
            or (source.get("model_settings") or {}).get("whisper_input"))


def _folder_forms(name: str) -> set[str]:
    """``name``, plus its absolute path and folder name when it names a local folder."""
    forms = {name}
    path = Path(name).expanduser()
    if name.startswith(("/", ".", "~")) or ("/" in name and path.exists()):
        forms.add(path.name)
        if path.exists():
            forms.add(str(path.resolve()))
    return forms


def _query_forms(name: str) -> set[str]:
    """What a model filter value stands for: itself, and the absolute path of a folder it names."""
    path = Path(name).expanduser()
    return {name, str(path.resolve())} if ("/" in name or name.startswith((".", "~"))) and path.exists() else {name}


@dataclass
class ModelNames:
    """The names under which one result's model is known (see the module docstring)."""

    names: set[str] = field(default_factory=set)
    hashes: set[str] = field(default_factory=set)
    families: set[str] = field(default_factory=set)


def model_names(result: dict[str, Any], group_attrs: Callable[[str], dict[str, Any]] | None = None) -> ModelNames:
    """Every name of the model ``result`` read: config and provenance names and ids (folders also by
    absolute path and folder name), store model keys, weights hashes, and through ``group_attrs``
    (store key -> group attributes) the groups' aliases and family."""
    prov = result.get("provenance") or {}
    raw = [(result.get("config") or {}).get("model")]
    sides = [prov.get("model") or {}, prov.get("source") or {}, prov.get("target") or {}]
    found = ModelNames(hashes=set(identity_of(prov)["weights_hashes"]))
    for side in sides:
        raw += [side.get("name"), side.get("model"), side.get("model_id")]
        key = side.get("store_key")
        if isinstance(key, str) and key.count("/") == 2:
            raw.append(key.rsplit("/", 1)[1])
            stored = Provenance.from_attrs(group_attrs(key) if group_attrs else {})
            raw += [stored.model.name, stored.model.model_id, *stored.aliases]
            if stored.model.family:
                found.families.add(stored.model.family)
    for name in raw:
        if isinstance(name, str) and name:
            found.names |= _folder_forms(name)
    return found


def group_attrs_reader(store_url: str) -> Callable[[str], dict[str, Any]]:
    """Store key -> that group's attributes in the store at ``store_url`` (``{}`` when it is gone), cached."""
    from featurestore.store import FeatureStore, StoreKey

    store, cache = FeatureStore(store_url), {}

    def attrs(key: str) -> dict[str, Any]:
        if key not in cache:
            try:
                cache[key] = dict(store.open(StoreKey.parse(key)).attrs)
            except FsError:
                cache[key] = {}
        return cache[key]
    return attrs


def condition_of(config: dict[str, Any]) -> str:
    """A short name of a configuration's noise condition: ``clean``, ``target@10dB``, ``source@5dB+target@10dB``;
    a condition chain by its label: ``target:telephone:band=300-3400,codec=none,rate=8000``."""
    parts = []
    for side in ("source", "target"):
        noise = config.get(f"{side}_noise")
        if isinstance(noise, dict) and "condition" in noise:
            parts.append(f"{side}:{condition_label(noise)}")
        elif noise:
            snr = noise.get("snr_db") if isinstance(noise, dict) else None
            parts.append(f"{side}@{snr:g}dB" if isinstance(snr, (int, float)) else f"{side}-noise")
    return "+".join(parts) or "clean"


def condition_label(side: dict[str, Any]) -> str:
    """The short label of a side's condition chain (``{condition: TEXT, noise_seed}``), without noise paths."""
    from featurestore.conditions import ConditionChain, ConditionError

    try:
        return ConditionChain.parse(str(side["condition"]), seed=int(side.get("noise_seed", 0))).label
    except ConditionError:  # written by another version of fs: shown as recorded
        return str(side["condition"])


def source_text(source: Any) -> Any:
    """A result's source as one column value: a multi-source union (a tuple, or a list once read back from
    JSON) as ``"a,b"``, the way ``--source`` takes it."""
    return ",".join(map(str, source)) if isinstance(source, (list, tuple)) else source


def _columns(result: dict[str, Any]) -> dict[str, Any]:
    config = result.get("config") or {}
    seeds, shots = config.get("seeds"), config.get("shots")
    return {
        "source": source_text(config.get("source")), "target": config.get("target"), "model": config.get("model"),
        "layer": None if config.get("layer") is None else str(config.get("layer")),
        "layer_used": None if result.get("layer") is None else layer_used_text(result),
        "classifier": config.get("classifier"), "norm": config.get("norm"),
        "shots": None if shots is None else int(shots),
        "condition": condition_of(config),
        "seeds": len(seeds) if isinstance(seeds, (list, tuple)) else seeds,
        "uar_mean": result.get("uar_mean"), "uar_std": result.get("uar_std"),
    }


class Ledger:
    """One workspace's results database (``<workspace>/results/ledger.sqlite``)."""

    def __init__(self, path: str | Path, store_url: str | None = None):
        self.path = Path(path)
        self.store_url = store_url  # the store whose groups name the models of results (model filters)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise LedgerFullError(f"the disk is full: cannot create {self.path.parent}; free some space and "
                                      "run the command again") from None
            raise LedgerError(f"cannot create the results folder {self.path.parent} ({exc.strerror}); check its "
                              "permissions or give another --workspace") from None
        with self._connect() as con:
            self._check_schema(con)

    def _check_schema(self, con: sqlite3.Connection) -> None:
        """Create the tables in a new database; refuse (and leave unchanged) a database that holds anything else."""
        tables = {name for (name,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if tables and "meta" not in tables:
            raise LedgerCorruptError(f"{self.path} is an SQLite database but not a results ledger (its tables: "
                                     f"{', '.join(sorted(tables))}); {_move_away(self.path)}")
        if not tables:
            con.executescript(_SCHEMA)
            con.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
        found = con.execute("SELECT value FROM meta WHERE name = 'schema'").fetchone()
        if found is None or not str(found[0]).isdigit():
            raise LedgerCorruptError(f"{self.path} has no ledger schema version (meta holds {found!r}); "
                                     f"{_move_away(self.path)}")
        if int(found[0]) == 1:
            self._check_columns(con, [t for t in _TABLES if t != "predictions"])  # a damaged ledger is left alone
            self._migrate_from_1(con)
            found = ("2",)
        if int(found[0]) != SCHEMA_VERSION:
            raise LedgerError(f"{self.path} has ledger schema {found[0]}, this fs writes {SCHEMA_VERSION}; move it "
                              "away to start a new ledger, or use the fs version that wrote it")
        self._check_columns(con, list(_TABLES))
        con.execute("PRAGMA journal_mode = WAL")  # kept by the file: set once it is known to be a ledger

    def _check_columns(self, con: sqlite3.Connection, tables: list[str]) -> None:
        """Refuse a database whose ``tables`` lack columns of this fs's ledger."""
        for table in tables:
            have = {row[1] for row in con.execute(f"PRAGMA table_info({table})")}
            missing = [c for c in _TABLES[table] if c not in have]
            if missing:
                raise LedgerCorruptError(f"{self.path} is not a results ledger of this fs (table {table} lacks "
                                         f"{', '.join(missing)}); {_move_away(self.path)}")

    @staticmethod
    def _migrate_from_1(con: sqlite3.Connection) -> None:
        """Schema 1 → 2 in place: add the (empty) predictions table; every row stays, without predictions.
        In one transaction, checked again inside it (another process may have migrated meanwhile)."""
        con.execute("BEGIN IMMEDIATE")
        try:
            if con.execute("SELECT value FROM meta WHERE name = 'schema'").fetchone()[0] == "1":
                con.execute(_PREDICTIONS_TABLE)
                con.execute("UPDATE meta SET value = '2' WHERE name = 'schema'")
            con.execute("COMMIT")
        except BaseException:
            if con.in_transaction:
                con.execute("ROLLBACK")
            raise

    @classmethod
    def open(cls, workspace: Workspace | str | Path) -> Ledger:
        """The ledger of ``workspace`` (a :class:`Workspace` or its root folder), created on first use."""
        ws = workspace if isinstance(workspace, Workspace) else Workspace.open(workspace)
        return cls(ws.results_dir / LEDGER_NAME, store_url=ws.store_url)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """A connection; every SQLite failure inside becomes a typed :class:`LedgerError`."""
        con = None
        try:
            con = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
            con.execute("PRAGMA busy_timeout = 60000")
            con.execute("PRAGMA foreign_keys = ON")
            yield con
        except sqlite3.Error as exc:
            raise ledger_error(exc, self.path) from None
        finally:
            if con is not None:
                con.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (taken at once, so concurrent writers queue instead of deadlocking)."""
        with self._connect() as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                yield con
                con.execute("COMMIT")
            except BaseException:
                if con.in_transaction:
                    con.execute("ROLLBACK")
                raise

    # -- writing -------------------------------------------------------------------------
    def put(self, result: Any, study: str | None = None) -> str:
        """Store ``result`` (a :class:`~classifiers.studies.result.Result` or its record); updates the row of the
        same key in place (its study memberships stay; its predictions are replaced) and adds it to ``study`` when given.
        A result with ``predictions`` first gets its intervals (:func:`~classifiers.studies.intervals.add_intervals`, in place);
        the predictions go to the predictions table, the rest to the row. Returns the row key."""
        return self.put_many([result], study=study)[0]

    def put_many(self, results: list[Any], study: str | None = None) -> list[str]:
        """Store several results in one transaction (as :meth:`put`); each is tagged with ``study`` when given."""
        rows = []
        for given in results:
            result = given.to_record() if hasattr(given, "to_record") else given  # a Result or its record
            if not result.get("config_key"):
                raise LedgerError("a result without config_key cannot enter the ledger; pass a Result or Result.to_record()")
            add_intervals(result)
            parts = {part: check_predictions(result[part], part) for part in PARTS if result.get(part)}
            identity = identity_text(row_identity(result))
            row_key = _row_key(result["config_key"], identity)
            record = {k: v for k, v in result.items() if k not in PARTS}
            blobs = [(row_key, part, e["seed"], len(e["ids"]), _pack({k: v for k, v in e.items() if k != "seed"}))
                     for part, entries in parts.items() for e in entries]
            rows.append((row_key, result["config_key"], identity, _columns(result),
                         json.dumps(record, sort_keys=True, default=str), blobs))
        created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        with self._write() as con:
            for row_key, config_key, identity, cols, text, blobs in rows:
                con.execute(_UPSERT, (row_key, config_key, identity, cols["source"], cols["target"], cols["model"],
                                      cols["layer"], cols["layer_used"], cols["classifier"], cols["norm"],
                                      cols["shots"], cols["condition"], cols["seeds"], cols["uar_mean"],
                                      cols["uar_std"], created, text))
                con.execute("DELETE FROM predictions WHERE row_key = ?", (row_key,))  # they were of the old result
                con.executemany("INSERT INTO predictions VALUES (?, ?, ?, ?, ?)", blobs)
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
        wanted = self.model_rows(filters["model"]) if filters.get("model") is not None else None
        with self._write() as con:
            keys = [r[0] for r in con.execute(f"SELECT r.row_key FROM results r {where}", args)
                    if wanted is None or r[0] in wanted]
            con.executemany("DELETE FROM studies WHERE row_key = ?", [(k,) for k in keys])
            con.executemany("DELETE FROM predictions WHERE row_key = ?", [(k,) for k in keys])
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
        return _row_key(config_key, identity_text(identity))

    def _where(self, filters: dict[str, Any]) -> tuple[str, list[Any]]:
        unknown = sorted(set(filters) - set(FILTERS))
        if unknown:
            raise LedgerError(f"unknown ledger filter(s) {unknown}; use {', '.join(FILTERS)}")
        clauses, args = [], []
        for name, value in filters.items():
            if value is None:
                continue
            values = list(value) if isinstance(value, (list, tuple, set)) else [value]
            if name == "model":  # by every name of the model (see model_rows)
                continue
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
        values), oldest first; each carries ``_row_key``, ``_created``, ``_studies`` and ``_predictions``
        (whether :meth:`predictions` has its per-utterance predictions). ``model`` matches every name of
        a model (see :meth:`model_rows`)."""
        where, args = self._where(filters)
        sql = (f"SELECT r.row_key, r.created, r.result, (SELECT group_concat(study, ',') FROM studies s "
               f"WHERE s.row_key = r.row_key), EXISTS (SELECT 1 FROM predictions p WHERE p.row_key = r.row_key) "
               f"FROM results r {where} ORDER BY r.created, r.rowid")
        wanted = self.model_rows(filters["model"]) if filters.get("model") is not None else None
        with self._connect() as con:
            found = con.execute(sql, args).fetchall()
        out = []
        for row_key, created, text, studies, has_predictions in found:
            if wanted is not None and row_key not in wanted:
                continue
            result = json.loads(text)
            result.update({"_row_key": row_key, "_created": created,
                           "_studies": sorted(studies.split(",")) if studies else [],
                           "_predictions": bool(has_predictions)})
            out.append(result)
        return out

    def resolve(self, key: str) -> str:
        """The row key of the result named by ``key``: a row key or config key, or a unique prefix of one
        (at least :data:`MIN_KEY_PREFIX` characters, as ``fs results`` shows them); a config key stored
        from several data identities names its most recent row. :class:`NoSuchResultError` otherwise."""
        text = str(key).strip().lower()
        if len(text) < MIN_KEY_PREFIX or any(c not in "0123456789abcdef" for c in text):
            raise NoSuchResultError(f"result key {key!r}: give a result's config key or its first {MIN_KEY_PREFIX}+ "
                                    "characters (the CONFIG column of `fs results`)")
        with self._connect() as con:
            found = con.execute("SELECT row_key, config_key FROM results WHERE substr(row_key, 1, ?) = ? OR "
                                "substr(config_key, 1, ?) = ? ORDER BY created DESC, rowid DESC",
                                (len(text), text, len(text), text)).fetchall()
        if not found:
            raise NoSuchResultError(f"no result in {self.path} has a key starting {text!r}; see `fs results` for the "
                                    "keys")
        by_row = [r for r, _ in found if r.startswith(text)]
        configs = list(dict.fromkeys(c for _, c in found if c.startswith(text)))  # most recent row first
        names = [f"row {r[:12]}" for r in by_row] if by_row else [f"config {c[:12]}" for c in configs]
        if len(names) > 1:
            raise NoSuchResultError(f"result key {key!r} is ambiguous: it starts {len(names)} keys "
                                    f"({', '.join(names[:5])}); give more characters")
        return by_row[0] if by_row else next(r for r, c in found if c == configs[0])

    def result(self, key: str) -> dict[str, Any]:
        """The result named by ``key`` (see :meth:`resolve`), as :meth:`rows` gives it."""
        row_key = self.resolve(key)
        with self._connect() as con:
            config_key = con.execute("SELECT config_key FROM results WHERE row_key = ?", (row_key,)).fetchone()[0]
        return next(r for r in self.rows(config_key=config_key) if r["_row_key"] == row_key)

    def predictions(self, key: str, part: str = "predictions") -> list[dict[str, Any]]:
        """The per-utterance predictions of the result named by ``key`` (see :meth:`resolve`), one entry per
        seed in seed order (see :mod:`classifiers.studies.intervals`); ``part`` ``baseline_predictions`` gives the
        few-shot target-only baseline's. :class:`NoPredictionsError` for a result stored without them."""
        if part not in PARTS:
            raise LedgerError(f"unknown predictions part {part!r}; use {' or '.join(PARTS)}")
        row_key = self.resolve(key)
        with self._connect() as con:
            found = con.execute("SELECT seed, data FROM predictions WHERE row_key = ? AND part = ? ORDER BY seed",
                                (row_key, part)).fetchall()
        if not found:
            raise NoPredictionsError(f"result {key} (row {row_key[:12]}) has no stored {part.replace('_', ' ')}: it "
                                     "was stored by an fs that kept none (or has no such part); run its configuration "
                                     "again with --rerun to record them")
        return [{"seed": int(seed), **_unpack(blob)} for seed, blob in found]

    def model_rows(self, models: str | list[str] | tuple[str, ...]) -> set[str]:
        """Row keys of the results whose model goes by any of ``models``: a name of the model (see
        :func:`model_names`) or a weights hash of 8+ characters, widened to every result with the same
        weights; a family name when no name matches. :class:`NoSuchModelError` lists the models stored
        when one of ``models`` matches no result."""
        with self._connect() as con:
            found = con.execute("SELECT row_key, result FROM results").fetchall()
        attrs = group_attrs_reader(self.store_url) if self.store_url else None
        infos = {key: model_names(json.loads(text), attrs) for key, text in found}
        out: set[str] = set()
        for model in [models] if isinstance(models, str) else list(models):
            forms = _query_forms(str(model))
            is_hash = re.fullmatch(f"[0-9a-f]{{{_MIN_HASH_PREFIX},}}", str(model)) is not None
            direct = {k for k, info in infos.items() if forms & info.names
                      or (is_hash and any(h.startswith(str(model)) for h in info.hashes))}
            weights = {h for k in direct for h in infos[k].hashes}
            matched = direct | {k for k, info in infos.items() if info.hashes & weights}
            matched = matched or {k for k, info in infos.items() if str(model) in info.families}
            if not matched:
                known = sorted({json.loads(t).get("config", {}).get("model") or "?" for _, t in found})
                raise NoSuchModelError(f"no result in the ledger is of model {str(model)!r}; models stored: "
                                       f"{', '.join(known) or 'none (run `fs sweep` or `fs probe` first)'} (a "
                                       "model also goes by its folder, id, family or weights hash)")
            out |= matched
        return out

    def seconds_per_seed(self, recent: int = 2000) -> dict[str, float]:
        """Median seconds per seed of one cell, by classifier (or fine-tuning method), over the ``recent``
        latest results that recorded their time (what a sweep estimate starts from)."""
        sql = ("SELECT coalesce(json_extract(result, '$.config.method'), classifier), "
               "json_extract(result, '$.seconds') / max(coalesce(seeds, 1), 1) FROM results "
               "WHERE json_extract(result, '$.seconds') IS NOT NULL ORDER BY created DESC LIMIT ?")
        with self._connect() as con:
            found = con.execute(sql, (recent,)).fetchall()
        by_kind: dict[str, list[float]] = {}
        for kind, seconds in found:
            by_kind.setdefault(str(kind), []).append(float(seconds))
        return {kind: sorted(v)[len(v) // 2] for kind, v in by_kind.items()}

    def studies(self) -> dict[str, int]:
        """Study names with their row counts."""
        with self._connect() as con:
            return dict(con.execute("SELECT study, count(*) FROM studies GROUP BY study ORDER BY study"))

    def __len__(self) -> int:
        with self._connect() as con:
            return int(con.execute("SELECT count(*) FROM results").fetchone()[0])

    # -- export --------------------------------------------------------------------------
    def export_csv(self, path: str | Path, overwrite: bool = False, **filters: Any) -> tuple[Path, int]:
        """Write the rows matching ``filters`` as CSV (:data:`CSV_COLUMNS`), atomically, with the permissions
        the umask gives a new file; an existing file only with ``overwrite``. Returns the path and the row count."""
        path = Path(path)
        if path.exists() and not overwrite:
            raise LedgerError(f"{path} exists; pass --overwrite to replace it, or give another file")
        rows = self.rows(**filters)
        atomic_write_text(path, rows_to_csv(rows))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(path, 0o666 & ~umask)
        return path, len(rows)


def flat_row(result: dict[str, Any]) -> dict[str, Any]:
    """One ledger result as a flat dict of :data:`CSV_COLUMNS` (what ``fs results`` shows)."""
    config = result.get("config") or {}
    identity = identity_of(result.get("provenance", {}))
    seeds = config.get("seeds")
    baseline = result.get("baseline") or {}
    ci95 = result.get("uar_ci95") or [None, None]
    return {
        "config_key": result.get("config_key"), "study": ",".join(result.get("_studies", [])),
        "source": source_text(config.get("source")), "target": config.get("target"), "model": config.get("model"),
        "whisper_input": whisper_input_of(result), "layer": config.get("layer"), "layer_used": layer_used_text(result),
        "classifier": config.get("classifier"),
        "norm": config.get("norm"), "shots": config.get("shots"), "condition": condition_of(config),
        "seeds": len(seeds) if isinstance(seeds, (list, tuple)) else seeds,
        "uar_mean": result.get("uar_mean"), "uar_std": result.get("uar_std"),
        "uar_ci95_lo": ci95[0], "uar_ci95_hi": ci95[1],
        "chance": result.get("chance"),
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
