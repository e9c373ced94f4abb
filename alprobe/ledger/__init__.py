"""The campaign's persistent state, in the campaign folder.

- ``ledger.db``: one SQLite file (WAL journal, so readers such as ``alprobe status`` never
  block the driver) holding
  - an ASE database with one row per frame: key ``fid`` (content hash), ``status``
    (candidate, selected, labeled, failed, rejected, timeout), ``split`` (train, calib, test)
    once labeled, ``origin`` (initial, explore), ``generation``, ``trust``, ``pred_energy``,
    ``ref_energy`` and, in the row's data, ``ref_forces`` / ``pred_forces`` (eV/A). Read it
    with ``ase db ledger.db`` or ``ase.db.connect``;
  - ``alprobe_candidates``: the frames that are still only candidates (status candidate), in
    bulk (one row each: fid, generation, status, keys as JSON, structure and prediction
    arrays as raw bytes) because there are many and most are never picked; a candidate that is
    picked (any other status) moves into the ASE rows with the same id, so ``ase db`` reads
    every frame that was ever selected, labeled or failed, and the ledger's own readers see
    both, in id order;
  - ``alprobe_stages``: one record per stage done (name, JSON of what it produced);
  - ``alprobe_metrics``: one JSON row per finished generation.
- ``metrics.json`` / ``metrics.csv``: exports of the metrics table (pandas.read_csv reads it),
  rewritten after every commit that changes it.

A stage's rows and its record are written in one transaction (``Ledger.transaction``), so a
stop between the two cannot happen: after a crash either both are there or neither is.
Folders written by alprobe before the stage table existed (``state.json``) are migrated on
first open by a writer. Only the driver writes; every other file write goes through a
temporary file and ``os.replace`` (:func:`alprobe.files.atomic_write`).
"""

from __future__ import annotations

import functools
import json
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .base import (CRASH_ENV, PATH_KEYS, LedgerError, _read_json, read_stages, relative_paths,
                   resolve_paths)
from .frames import FrameStore
from .migrate import _migrate, copy_ledger
from .records import RecordStore, export_metrics

__all__ = ["CRASH_ENV", "PATH_KEYS", "Ledger", "LedgerError", "copy_ledger", "export_metrics",
           "read_stages", "relative_paths", "resolve_paths"]

_TABLES = ("CREATE TABLE IF NOT EXISTS alprobe_stages (name TEXT PRIMARY KEY, info TEXT NOT NULL)",
           "CREATE TABLE IF NOT EXISTS alprobe_metrics (generation INTEGER PRIMARY KEY, "
           "row TEXT NOT NULL)",
           "CREATE TABLE IF NOT EXISTS alprobe_candidates (id INTEGER PRIMARY KEY, "
           "fid TEXT UNIQUE NOT NULL, generation INTEGER, status TEXT, kvp TEXT NOT NULL, "
           "numbers BLOB, positions BLOB, cell BLOB, pbc INTEGER, data BLOB)",
           "CREATE INDEX IF NOT EXISTS alprobe_candidates_gen ON alprobe_candidates(generation)")


class Ledger(FrameStore, RecordStore):
    """Frames, labels, stage records and metrics of one campaign folder.

    ``create``: a new folder may be started. ``readonly``: never write (for ``alprobe status``
    and reports while a driver runs); a legacy folder is then read without migrating it.
    """

    def __init__(self, directory: str | Path, create: bool = False, readonly: bool = False):
        import ase.db

        self.dir = Path(directory)
        self.path = self.dir / "ledger.db"
        self.readonly = readonly
        legacy_state = self.dir / "state.json"
        progress = legacy_state.is_file() or (self.dir / "metrics.json").is_file()
        empty = not self.path.is_file() or self.path.stat().st_size == 0
        if empty and (progress or not create or readonly):
            raise LedgerError(f"{self.path} is missing or empty" + (
                " although the folder records progress; refusing to start over (restore it or "
                "use a new folder)" if progress else ""))
        if create:
            self.dir.mkdir(parents=True, exist_ok=True)
        # One writer (the driver): no lock file per row.
        self.db = ase.db.connect(str(self.path), type="db", append=True, use_lock_file=False)
        # ASE commits every 5000 writes even inside `with db:`; a stage is one transaction.
        self.db.managed_connection = functools.partial(
            type(self.db).managed_connection, self.db, commit_frequency=1 << 62)
        self._depth = 0
        self._metrics_dirty = False
        # one thread at a time uses the connection (a streaming campaign's trainer thread
        # commits its stages while the main thread records labels); re-entrant per thread
        self._lock = threading.RLock()
        try:
            if readonly:
                with self.db:
                    self.db.count()
                    self._load(self.db.connection, legacy_ok=True)
            else:
                self._open_for_writing(legacy_state)
        # TypeError: ASE reads a database another process is creating at this moment (its
        # version row not written yet): to a reader that is a ledger not ready, not a crash
        except (sqlite3.DatabaseError, AttributeError, TypeError) as exc:
            if isinstance(exc, sqlite3.OperationalError) and not (
                    os.access(self.dir, os.W_OK) and os.access(self.path, os.W_OK)):
                raise LedgerError(
                    f"cannot open {self.path}: the folder or the file is read-only ({exc}); the "
                    "ledger itself may be fine: make it writable or copy the folder elsewhere"
                ) from None
            raise LedgerError(f"{self.path} is damaged or not an alprobe ledger: {exc}") from None

    def _open_for_writing(self, legacy_state: Path) -> None:
        con = sqlite3.connect(str(self.path), timeout=20)
        try:
            con.execute("PRAGMA journal_mode=WAL")  # persistent: readers never block the writer
        finally:
            con.close()
        with self.db:
            self.db.count()  # creates the tables of a new ledger
            con = self.db.connection
            # ASE deletes rows of these tables by id on every update: index them.
            for table in ("keys", "text_key_values", "number_key_values", "species"):
                con.execute(f"CREATE INDEX IF NOT EXISTS alprobe_{table}_id ON {table}(id)")
            # queries by key and value (status="candidate", generation=3)
            for table in ("text_key_values", "number_key_values"):
                con.execute(f"CREATE INDEX IF NOT EXISTS alprobe_{table}_kv ON {table}(key, value)")
            for statement in _TABLES:
                con.execute(statement)
            n_stages = con.execute("SELECT COUNT(*) FROM alprobe_stages").fetchone()[0]
            if legacy_state.is_file() and n_stages == 0:
                _migrate(con, legacy_state, self.dir / "metrics.json")
            self._load(con)
        if legacy_state.is_file():  # migrated now, or before a crash
            os.replace(legacy_state, legacy_state.with_name("state.json.migrated"))
        self._export_metrics()

    def _load(self, con: sqlite3.Connection, legacy_ok: bool = False) -> None:
        """(Re)read the id index, stage records and metrics from the database."""
        self._ids = dict(con.execute(
            "SELECT value, id FROM text_key_values WHERE key = 'fid'").fetchall())
        try:
            self._cand: dict[str, int] = dict(con.execute(
                "SELECT fid, id FROM alprobe_candidates").fetchall())
            self._has_cand = True
        except sqlite3.OperationalError:  # a ledger written before the table existed
            self._cand, self._has_cand = {}, False
        try:
            self._stages = {n: json.loads(i) for n, i in
                            con.execute("SELECT name, info FROM alprobe_stages")}
            self._metrics = {int(g): json.loads(r) for g, r in
                             con.execute("SELECT generation, row FROM alprobe_metrics")}
            if not self._stages and legacy_ok and (self.dir / "state.json").is_file():
                raise sqlite3.OperationalError("legacy")
        except sqlite3.OperationalError:
            if not legacy_ok:
                raise
            self._stages = dict(_read_json(self.dir / "state.json", {"stages": {}})["stages"])
            self._metrics = {int(r["generation"]): r
                             for r in _read_json(self.dir / "metrics.json", [])}

    # ----- transactions --------------------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[Ledger]:
        """One SQLite transaction for everything written inside (re-entrant: an inner block
        joins the outer one). On an exception nothing of it is kept, in the file or here.
        Thread-safe: other threads wait until it ends."""
        with self._lock:
            with self._transaction():
                yield self

    @contextmanager
    def _transaction(self) -> Iterator[Ledger]:
        if self._depth:
            self._depth += 1
            try:
                yield self
            finally:
                self._depth -= 1
            return
        if self.readonly:
            raise LedgerError(f"{self.path} was opened read-only")
        self._depth = 1
        try:
            with self.db:  # ASE: one connection; commit on success, roll back on error
                yield self
        except BaseException:
            with self.db:
                self._load(self.db.connection)
            self._metrics_dirty = False
            raise
        finally:
            self._depth = 0
        if self._metrics_dirty:
            self._export_metrics()

    @contextmanager
    def _reading(self) -> Iterator[None]:
        """One connection for a read (or the transaction's, inside one)."""
        with self._lock:
            if self.db.connection is not None:
                yield
            else:
                with self.db:
                    yield
