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

import csv
import functools
import io
import json
import os
import signal
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from .errors import AlprobeError
from .files import atomic_path, atomic_write
from .frames import EMBEDDING, PRED_FORCES, REF_FORCES, frame_id

__all__ = ["Ledger", "LedgerError", "copy_ledger", "export_metrics", "read_stages"]

_ARRAY_KEYS = (REF_FORCES, PRED_FORCES, EMBEDDING)
_SCALAR = (bool, int, float, str, np.integer, np.floating, np.bool_)
_TABLES = ("CREATE TABLE IF NOT EXISTS alprobe_stages (name TEXT PRIMARY KEY, info TEXT NOT NULL)",
           "CREATE TABLE IF NOT EXISTS alprobe_metrics (generation INTEGER PRIMARY KEY, "
           "row TEXT NOT NULL)",
           "CREATE TABLE IF NOT EXISTS alprobe_candidates (id INTEGER PRIMARY KEY, "
           "fid TEXT UNIQUE NOT NULL, generation INTEGER, status TEXT, kvp TEXT NOT NULL, "
           "numbers BLOB, positions BLOB, cell BLOB, pbc INTEGER, data BLOB)",
           "CREATE INDEX IF NOT EXISTS alprobe_candidates_gen ON alprobe_candidates(generation)")
#: Test hook: SIGKILL the driver right before the record of this stage is written (its rows
#: are already written in the same transaction).
CRASH_ENV = "ALPROBE_FAULT_CRASH_BEFORE_RECORD"


class LedgerError(AlprobeError):
    """The campaign folder's state is missing or damaged (the message says which file)."""


def _read_json(path: Path, default: Any) -> Any:
    if not path.exists():
        return default
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LedgerError(f"{path} is damaged ({exc}); refusing to reset it") from None


def read_stages(directory: str | Path) -> dict[str, dict[str, Any]]:
    """Stage records of a campaign folder, read-only ({} if it has none yet).

    Safe to call from another process while the driver runs (never blocks it)."""
    directory = Path(directory)
    path = directory / "ledger.db"
    if not path.is_file() or path.stat().st_size == 0:
        return {k: v for k, v in _read_json(directory / "state.json", {"stages": {}})[
            "stages"].items()}
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=20)
        try:
            rows = con.execute("SELECT name, info FROM alprobe_stages").fetchall()
        finally:
            con.close()
    except sqlite3.OperationalError:  # no stage table: a legacy folder, or not started
        return dict(_read_json(directory / "state.json", {"stages": {}})["stages"])
    return {name: resolve_paths(json.loads(info), directory, strict=False)
            for name, info in rows}


#: Keys of stage records that hold model files (str, or a list of str): stored relative to
#: the campaign folder, resolved inside it when read.
PATH_KEYS = ("path", "members")


def _inside(path: Path, root: Path) -> bool:
    """Whether ``path`` (symlinks followed) lies inside the folder ``root``."""
    try:
        return path.resolve().is_relative_to(root.resolve())
    except (OSError, RuntimeError):
        return False


def _map_paths(info: dict[str, Any], fn: Any) -> dict[str, Any]:
    """``info`` with ``fn`` applied to every model path (PATH_KEYS; a path or a list)."""
    out = dict(info)
    for k in PATH_KEYS:
        if k in out:
            v = out[k]
            out[k] = [fn(x) for x in v] if isinstance(v, list) else fn(v)
    return out


def relative_paths(info: dict[str, Any], directory: Path) -> dict[str, Any]:
    """``info`` with every model path (PATH_KEYS) inside ``directory`` made relative to it
    (POSIX form), so that a copied or moved folder still finds its own models."""
    root = Path(directory).resolve()

    def rel(v: Any) -> Any:
        if isinstance(v, str) and Path(v).is_absolute() and _inside(Path(v), root):
            return Path(v).resolve().relative_to(root.resolve()).as_posix()
        return v

    return _map_paths(info, rel)


def resolve_paths(info: dict[str, Any], directory: Path, strict: bool = True) -> dict[str, Any]:
    """``info`` with every model path (PATH_KEYS) as an absolute path inside ``directory``.

    Relative paths are taken from the folder. An absolute path (ledgers written before paths
    were stored relative) is used if it lies inside the folder, or else re-anchored at its
    ``models/`` part (a copied folder finds its own copy). A path that still leaves the
    folder (``..``, a symlink out, no ``models/`` part) is never loaded: LedgerError, or None
    with ``strict=False``.
    """
    root = Path(directory).resolve()

    def one(v: Any) -> Any:
        if not isinstance(v, str):
            return v
        p = Path(v)
        if not p.is_absolute():
            p = root / p
        elif not _inside(p, root) and "models" in p.parts:
            i = len(p.parts) - 1 - p.parts[::-1].index("models")
            p = root.joinpath(*p.parts[i:])
        if _inside(p, root):
            return str(p)
        if strict:
            raise LedgerError(f"{root / 'ledger.db'} names a model file outside the campaign "
                              f"folder ({v}); alprobe loads models only from inside the folder")
        return None

    return _map_paths(info, one)


class Ledger:
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
        except (sqlite3.DatabaseError, AttributeError) as exc:
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

    # ----- frames -------------------------------------------------------------------------
    def __contains__(self, fid: str) -> bool:
        return fid in self._ids or fid in self._cand

    def __len__(self) -> int:
        return len(self._ids) + len(self._cand)

    def add(self, frames: Iterable[Atoms], **common: Any) -> list[str]:
        """Insert frames (skipping ids already present) in one transaction; return their ids.

        Scalar ``atoms.info`` entries become searchable keys; ref/pred forces go to data. The
        rows are ASE database rows (``ase db ledger.db`` reads them), written in bulk
        (:func:`_ase_rows`, executemany) rather than one ``db.write`` each.
        """
        fids, rows, seen = [], [], set()
        extra = {k: _plain(v) for k, v in common.items()}
        for atoms in frames:
            fid = atoms.info.get("fid") or frame_id(atoms)
            fids.append(fid)
            if fid in self or fid in seen:
                continue
            seen.add(fid)
            kvp = {k: _plain(v) for k, v in atoms.info.items() if isinstance(v, _SCALAR)}
            kvp.update(extra)
            kvp["fid"] = fid
            data = {k: np.asarray(atoms.arrays[k]) for k in _ARRAY_KEYS if k in atoms.arrays}
            rows.append((atoms, kvp, data))
        with self.transaction():
            if not _ASE_LAYOUT_OK(self.db):  # an ASE layout we do not know: its own writer
                for atoms, kvp, data in rows:
                    bare = Atoms(numbers=atoms.numbers, positions=atoms.positions,
                                 cell=atoms.cell, pbc=atoms.pbc)
                    self._ids[kvp["fid"]] = self.db.write(bare, key_value_pairs=kvp, data=data)
                return fids
            con = self.db.connection
            ids = _next_ids(con, len(rows))
            bulk = [r for r in rows if r[1].get("status") == "candidate" and self._has_cand]
            rest = [(r, i) for r, i in zip(rows, ids)
                    if not (r[1].get("status") == "candidate" and self._has_cand)]
            cand_ids = [i for r, i in zip(rows, ids)
                        if r[1].get("status") == "candidate" and self._has_cand]
            if bulk:
                self._cand.update(_candidate_write(con, bulk, cand_ids))
            if rest:
                self._ids.update(_bulk_write(self.db, [r for r, _ in rest],
                                             [i for _, i in rest]))
            if ids:
                _reserve(con, ids[-1])
        return fids

    def put(self, frames: Iterable[Atoms], **common: Any) -> list[str]:
        """Like :meth:`add`, but frames already present get their keys and arrays replaced by
        these (a pool frame that is a candidate again in a later generation)."""
        frames = list(frames)
        with self.transaction():
            new = [a for a in frames if (a.info.get("fid") or frame_id(a)) not in self]
            self.add(new, **common)
            for a in frames:
                fid = a.info.get("fid") or frame_id(a)
                if any(a is b for b in new):
                    continue
                kvp = {k: v for k, v in a.info.items() if isinstance(v, _SCALAR) and k != "fid"}
                data = {k: np.asarray(a.arrays[k]) for k in _ARRAY_KEYS if k in a.arrays}
                self.update(fid, data=data or None, **kvp, **common)
        return [a.info.get("fid") or frame_id(a) for a in frames]

    def update(self, fid: str, data: dict[str, Any] | None = None, **kvp: Any) -> None:
        """Set keys (and merge array data) of one frame; a candidate whose status changes
        moves into the ASE rows (same id)."""
        if fid not in self:
            raise KeyError(f"frame {fid} is not in the ledger")
        kvp = {k: _plain(v) for k, v in kvp.items()}
        with self.transaction():
            if fid not in self._cand:
                self.db.update(self._ids[fid], data=data, **kvp)
                return
            con, rid = self.db.connection, self._cand[fid]
            atoms, keys, arrays = _candidate_row(con.execute(
                "SELECT numbers, positions, cell, pbc, kvp, data FROM alprobe_candidates "
                "WHERE id = ?", (rid,)).fetchone())
            keys.update(kvp)
            arrays.update({k: np.asarray(v) for k, v in (data or {}).items()})
            if keys.get("status") == "candidate":
                con.execute("UPDATE alprobe_candidates SET kvp = ?, generation = ?, status = ?,"
                            " data = ? WHERE id = ?",
                            (json.dumps(keys), keys.get("generation"), keys["status"],
                             _pack(arrays), rid))
                return
            con.execute("DELETE FROM alprobe_candidates WHERE id = ?", (rid,))
            del self._cand[fid]
            self._ids.update(_bulk_write(self.db, [(atoms, keys, arrays)], [rid]))

    def update_many(self, fids: Iterable[str], **kvp: Any) -> None:
        """Set the same keys on many frames in one transaction."""
        with self.transaction():
            for fid in fids:
                self.update(fid, **kvp)

    def frames(self, **query: Any) -> list[Atoms]:
        """Frames whose keys equal ``query`` (e.g. status="labeled", split="test"), in id order.

        Each frame carries its keys in ``info`` and its force arrays in ``arrays``.
        """
        out = []
        with self._reading():
            if _ASE_LAYOUT_OK(self.db):
                sql, args = _where(query)
                cur = self.db.connection.execute(
                    "SELECT id, numbers, positions, cell, pbc, key_value_pairs, data FROM "
                    "systems" + sql + " ORDER BY id", args)
                got = []
                for rid, numbers, positions, cell, pbc, kvp, data in cur:
                    atoms = Atoms(numbers=np.frombuffer(numbers, np.int32),
                                  positions=np.frombuffer(positions, float).reshape(-1, 3),
                                  cell=np.frombuffer(cell, float).reshape(3, 3),
                                  pbc=[bool(pbc & b) for b in (1, 2, 4)])
                    atoms.info.update(json.loads(kvp))
                    if data:
                        for k, v in self.db.decode(data).items():
                            atoms.arrays[k] = np.asarray(v)
                    got.append((rid, atoms))
                for rid, (atoms, keys, arrays) in self._candidates(query, full=True):
                    atoms.info.update(keys)
                    atoms.arrays.update(arrays)
                    got.append((rid, atoms))
                return [a for _, a in sorted(got, key=lambda t: t[0])]
            for row in self.db.select(**query):
                atoms = row.toatoms()
                atoms.info.update(row.key_value_pairs)
                for k, v in row.data.items():
                    atoms.arrays[k] = np.asarray(v)
                out.append(atoms)
        return out

    def keys(self, **query: Any) -> list[dict[str, Any]]:
        """The key-value pairs only (no structures, no arrays) of the frames matching ``query``."""
        with self._reading():
            if _ASE_LAYOUT_OK(self.db):
                sql, args = _where(query)
                got = [(rid, json.loads(kvp)) for rid, kvp in self.db.connection.execute(
                    "SELECT id, key_value_pairs FROM systems" + sql + " ORDER BY id", args)]
                got += [(rid, keys) for rid, keys in self._candidates(query)]
                return [k for _, k in sorted(got, key=lambda t: t[0])]
            return [dict(r.key_value_pairs)
                    for r in self.db.select(columns=["id", "key_value_pairs"], **query)]

    def fids(self, **query: Any) -> list[str]:
        return [k["fid"] for k in self.keys(**query)]

    def count(self, **query: Any) -> int:
        with self._reading():
            n = self.db.count(**query)
            if not self._cand or query.get("status", "candidate") != "candidate":
                return n
            if set(query) <= {"fid", "generation", "status"}:  # columns of the table
                where = [f"{k} = ?" for k in query if k != "status"]
                return n + self.db.connection.execute(
                    "SELECT COUNT(*) FROM alprobe_candidates"
                    + (" WHERE " + " AND ".join(where) if where else ""),
                    [_plain(query[k]) for k in query if k != "status"]).fetchone()[0]
            return n + sum(1 for _ in self._candidates(query))

    def _candidates(self, query: dict[str, Any], full: bool = False) -> Iterator[tuple]:
        """(id, keys) of the rows of the candidates table matching ``query`` (inside a read),
        or, with ``full``, (id, (atoms, keys, arrays)); in id order."""
        if not self._cand or query.get("status", "candidate") != "candidate":
            return
        where, args = [], []
        for col in ("fid", "generation"):
            if col in query:
                where.append(f"{col} = ?")
                args.append(_plain(query[col]))
        rest = {k: _plain(v) for k, v in query.items() if k not in ("fid", "generation",
                                                                    "status")}
        cols = "id, numbers, positions, cell, pbc, kvp, data" if full else "id, kvp"
        cur = self.db.connection.execute(
            f"SELECT {cols} FROM alprobe_candidates"
            + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id", args)
        for row in cur:
            keys = json.loads(row[-2] if full else row[1])
            if any(keys.get(k) != v for k, v in rest.items()):
                continue
            if full:
                atoms, _, arrays = _candidate_row(row[1:], keys)
                yield row[0], (atoms, keys, arrays)
            else:
                yield row[0], keys

    # ----- stages -------------------------------------------------------------------------
    def done(self, stage: str) -> bool:
        return stage in self._stages

    def stage_info(self, stage: str) -> dict[str, Any]:
        """What ``stage`` produced ({} if not done); model paths resolved inside this folder
        (LedgerError for one that leaves it)."""
        return resolve_paths(self._stages.get(stage, {}), self.dir)

    def stages(self) -> dict[str, dict[str, Any]]:
        """Every stage record (name -> what it produced); a model path that would leave the
        folder reads as None."""
        return {k: resolve_paths(v, self.dir, strict=False) for k, v in self._stages.items()}

    def mark_done(self, stage: str, **info: Any) -> None:
        """Record ``stage`` (e.g. "gen001/label") as done, with what it produced.

        Inside ``transaction()`` the record commits together with the rows written there.
        """
        with self.transaction():
            if os.environ.get(CRASH_ENV) == stage:
                _crash()
            text = json.dumps(relative_paths(info, self.dir), default=_plain)
            self.db.connection.execute("INSERT OR REPLACE INTO alprobe_stages VALUES (?, ?)",
                                       (stage, text))
            self._stages[stage] = json.loads(text)

    # ----- metrics ------------------------------------------------------------------------
    def add_metrics(self, row: dict[str, Any]) -> None:
        """Add or replace the metrics row of ``row["generation"]`` (exported to JSON and CSV
        when the transaction commits)."""
        with self.transaction():
            text = json.dumps(row, default=_plain)
            self.db.connection.execute("INSERT OR REPLACE INTO alprobe_metrics VALUES (?, ?)",
                                       (int(row["generation"]), text))
            self._metrics[int(row["generation"])] = json.loads(text)
            self._metrics_dirty = True

    def metrics(self) -> list[dict[str, Any]]:
        """One dict per finished generation (labels, test MAE/RMSE, probe AUROC, timings)."""
        return [dict(self._metrics[g]) for g in sorted(self._metrics)]

    def _export_metrics(self) -> None:
        self._metrics_dirty = False
        export_metrics(self.dir, self.metrics())

#: The columns of ASE's ``systems`` table that :func:`_bulk_write` fills (ase.db.sqlite,
#: schema version 9 and later); another layout falls back to ASE's own row writer.
_ASE_COLUMNS = (
    "id", "unique_id", "ctime", "mtime", "username", "numbers", "positions", "cell", "pbc",
    "initial_magmoms", "initial_charges", "masses", "tags", "momenta", "constraints",
    "calculator", "calculator_parameters", "energy", "free_energy", "forces", "stress",
    "dipole", "magmoms", "magmom", "charges", "key_value_pairs", "data", "natoms", "fmax",
    "smax", "volume", "mass", "charge")


def _ASE_LAYOUT_OK(db: Any) -> bool:
    return (tuple(getattr(db, "columnnames", ())) == _ASE_COLUMNS
            and (db.version or 0) >= 9)


def _next_ids(con: sqlite3.Connection, n: int) -> list[int]:
    """``n`` fresh row ids, shared by ASE's rows and the candidates table (a candidate keeps
    its id when it moves into the ASE rows)."""
    last = con.execute("SELECT seq FROM sqlite_sequence WHERE name='systems'").fetchone()
    top = con.execute("SELECT MAX(id) FROM systems").fetchone()[0] or 0
    try:
        cand = con.execute("SELECT MAX(id) FROM alprobe_candidates").fetchone()[0] or 0
    except sqlite3.OperationalError:
        cand = 0
    first = max(top, cand, last[0] if last else 0) + 1
    return list(range(first, first + n))


def _reserve(con: sqlite3.Connection, rid: int) -> None:
    """Make ASE's own row writer (AUTOINCREMENT) start above ``rid``."""
    if con.execute("SELECT seq FROM sqlite_sequence WHERE name='systems'").fetchone() is None:
        con.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('systems', ?)", (rid,))
    else:
        con.execute("UPDATE sqlite_sequence SET seq = MAX(seq, ?) WHERE name='systems'", (rid,))


def _pack(arrays: dict[str, np.ndarray]) -> bytes:
    """Arrays as bytes: a JSON header {name: [shape, dtype]} and the raw data, in order."""
    arrays = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
    head = json.dumps({k: [list(v.shape), v.dtype.str] for k, v in arrays.items()}).encode()
    return len(head).to_bytes(4, "little") + head + b"".join(v.tobytes() for v in
                                                             arrays.values())


@functools.lru_cache(maxsize=256)
def _layout(head: bytes) -> tuple[tuple[str, tuple[int, ...], np.dtype, int], ...]:
    """(name, shape, dtype, bytes) of each array of a _pack header (few distinct ones)."""
    out = []
    for k, (shape, dtype) in json.loads(head).items():
        dt = np.dtype(dtype)
        out.append((k, tuple(shape), dt, int(np.prod(shape)) * dt.itemsize))
    return tuple(out)


def _unpack(blob: bytes | None) -> dict[str, np.ndarray]:
    if not blob:
        return {}
    n = int.from_bytes(blob[:4], "little")
    out, pos = {}, 4 + n
    for k, shape, dt, size in _layout(bytes(blob[4:4 + n])):
        out[k] = np.frombuffer(blob, dt, count=size // dt.itemsize, offset=pos).reshape(
            shape).copy()
        pos += size
    return out


def _candidate_write(con: sqlite3.Connection,
                     rows: list[tuple[Atoms, dict[str, Any], dict[str, Any]]],
                     ids: list[int]) -> dict[str, int]:
    """Insert candidate rows (one executemany); {fid: id}."""
    con.executemany(
        "INSERT INTO alprobe_candidates VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [(rid, kvp["fid"], kvp.get("generation"), kvp.get("status"), json.dumps(kvp),
          np.asarray(a.numbers, dtype=np.int32).tobytes(),
          np.asarray(a.positions, dtype=float).tobytes(),
          np.asarray(a.cell.array, dtype=float).tobytes(), int(np.dot(a.pbc, [1, 2, 4])),
          _pack(data) if data else None)
         for (a, kvp, data), rid in zip(rows, ids)])
    return {kvp["fid"]: rid for (_, kvp, _), rid in zip(rows, ids)}


def _candidate_row(row: tuple, keys: dict[str, Any] | None = None
                   ) -> tuple[Atoms, dict[str, Any], dict[str, np.ndarray]]:
    """(numbers, positions, cell, pbc, kvp, data) of the candidates table as Atoms (no keys
    set), keys (``keys``: already parsed) and arrays."""
    numbers, positions, cell, pbc, kvp, data = row
    cell = np.frombuffer(cell, float).reshape(3, 3)
    atoms = Atoms(numbers=np.frombuffer(numbers, np.int32),
                  positions=np.frombuffer(positions, float).reshape(-1, 3),
                  **({"cell": cell, "pbc": [bool(pbc & b) for b in (1, 2, 4)]}
                     if pbc or cell.any() else {}))
    return atoms, json.loads(kvp) if keys is None else keys, _unpack(data)


def _bulk_write(db: Any, rows: list[tuple[Atoms, dict[str, Any], dict[str, Any]]],
                ids: list[int]) -> dict[str, int]:
    """Insert (atoms, key_value_pairs, data) rows into ASE's tables inside the open connection
    as ``db.write`` would (same columns, blobs and key tables), with one executemany per
    table, under the row ids ``ids``. Returns {fid: row id}."""
    import getpass
    import uuid

    from ase.data import atomic_masses
    from ase.db.core import check, now

    if not rows:
        return {}
    con = db.connection
    try:
        user = os.getenv("USER") or getpass.getuser()
    except Exception:  # no user name (a container without a passwd entry)
        user = None
    empty = db.encode({}, binary=True)
    t = now()
    systems, species, texts, nums, keys, out = [], [], [], [], [], {}
    checked: set[Any] = set()  # ASE's key/value check, once per key and per text value
    by_numbers: dict[bytes, tuple[Any, list[tuple[int, int]], float]] = {}
    for i, (atoms, kvp, data) in enumerate(rows):
        fresh = {k: v for k, v in kvp.items() if k != "fid"  # our own hash: 'f' + hex
                 and (k, v if isinstance(v, str) else type(v)) not in checked}
        if fresh:
            check(fresh)
            checked.update((k, v if isinstance(v, str) else type(v)) for k, v in fresh.items())
        rid = ids[i]
        out[kvp["fid"]] = rid
        numbers = np.asarray(atoms.numbers, dtype=np.int32)
        key = numbers.tobytes()
        if key not in by_numbers:
            z, n = np.unique(numbers, return_counts=True)
            by_numbers[key] = (db.blob(numbers), [(int(a), int(b)) for a, b in zip(z, n)],
                               float(atomic_masses[numbers].sum()))
        blob_numbers, counts, mass = by_numbers[key]
        cell = np.asarray(atoms.cell.array, dtype=float)
        vol = abs(float(np.linalg.det(cell))) if cell.any() else 0.0
        systems.append((
            rid, uuid.uuid4().hex, t, t, user, blob_numbers,
            db.blob(np.asarray(atoms.positions, dtype=float)), db.blob(cell),
            int(np.dot(atoms.pbc, [1, 2, 4])), None, None, None, None, None, None, None, None,
            None, None, None, None, None, None, None, None, json.dumps(kvp),
            db.encode(data, binary=True) if data else empty, len(numbers), None, None,
            vol if vol != 0.0 else None, mass, 0.0))
        species.extend((z, n, rid) for z, n in counts)
        for k, v in kvp.items():
            keys.append((k, rid))
            if isinstance(v, str):
                texts.append((k, v, rid))
            else:
                nums.append((k, float(v), rid))
    marks = ", ".join("?" * len(_ASE_COLUMNS))
    con.executemany(f"INSERT INTO systems VALUES ({marks})", systems)
    con.executemany("INSERT INTO species VALUES (?, ?, ?)", species)
    con.executemany("INSERT INTO text_key_values VALUES (?, ?, ?)", texts)
    con.executemany("INSERT INTO number_key_values VALUES (?, ?, ?)", nums)
    con.executemany("INSERT INTO keys VALUES (?, ?)", keys)
    _reserve(con, max(ids))
    return out


def _where(query: dict[str, Any]) -> tuple[str, list[Any]]:
    """SQL restricting ``systems`` to rows whose keys equal ``query`` (strings in ASE's text
    key table, numbers and booleans in its number table)."""
    parts, args = [], []
    for k, v in query.items():
        v = _plain(v)
        table = "text_key_values" if isinstance(v, str) else "number_key_values"
        parts.append(f"id IN (SELECT id FROM {table} WHERE key = ? AND value = ?)")
        args += [k, v if isinstance(v, str) else float(v)]
    return (" WHERE " + " AND ".join(parts) if parts else ""), args


def _migrate(con: sqlite3.Connection, legacy_state: Path, legacy_metrics: Path) -> None:
    """Copy a legacy folder's state.json (and metrics.json) into the ledger's tables."""
    state = _read_json(legacy_state, None)
    if not isinstance(state, dict) or not isinstance(state.get("stages"), dict):
        raise LedgerError(f"{legacy_state} is damaged (no 'stages' mapping); refusing to "
                          "reset it")
    con.executemany("INSERT INTO alprobe_stages VALUES (?, ?)",
                    [(k, json.dumps(v)) for k, v in state["stages"].items()])
    rows = _read_json(legacy_metrics, [])
    con.executemany("INSERT OR REPLACE INTO alprobe_metrics VALUES (?, ?)",
                    [(int(r["generation"]), json.dumps(r)) for r in rows])


def export_metrics(directory: Path, rows: list[dict[str, Any]]) -> None:
    """metrics.json and metrics.csv of ``rows`` (one per generation) in ``directory``."""
    if not rows and not (directory / "metrics.json").is_file():
        return
    atomic_write(directory / "metrics.json", json.dumps(rows, indent=1))
    keys = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(directory / "metrics.csv", buf.getvalue())


def copy_ledger(source: str | Path, directory: str | Path) -> None:
    """A consistent copy of the ledger in ``source`` (frames, stages, metrics) as
    ``directory``/ledger.db (SQLite's online backup: the WAL is included), written
    atomically."""
    with atomic_path(Path(directory) / "ledger.db") as tmp:
        src = sqlite3.connect(str(Path(source) / "ledger.db"), timeout=20)
        out = sqlite3.connect(str(tmp))
        try:
            src.backup(out)
        finally:
            out.close()
            src.close()


def _crash() -> None:
    """Die at once, as a SIGKILL would (the whole process group if this process leads it)."""
    if os.getpgrp() == os.getpid():
        os.killpg(os.getpgrp(), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


def _plain(v: Any) -> Any:
    if isinstance(v, np.bool_):
        return bool(v)
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        return float(v)
    if isinstance(v, np.ndarray):
        return v.tolist()
    return v
