"""How frames are stored: ASE rows written in bulk, candidates packed in a table of their
own, and SQL for key queries."""

from __future__ import annotations

import functools
import json
import os
import sqlite3
from typing import Any

import numpy as np
from ase import Atoms

from ..frames import EMBEDDING, PRED_FORCES, REF_FORCES
from .base import _plain

_ARRAY_KEYS = (REF_FORCES, PRED_FORCES, EMBEDDING)
_SCALAR = (bool, int, float, str, np.integer, np.floating, np.bool_)

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
