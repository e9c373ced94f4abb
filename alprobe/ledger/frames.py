"""The frames of a campaign: add, update, query (a part of :class:`alprobe.ledger.Ledger`)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
from ase import Atoms

from ..frames import frame_id
from .base import _plain
from .rows import (
    _ARRAY_KEYS,
    _ASE_LAYOUT_OK,
    _SCALAR,
    _bulk_write,
    _candidate_row,
    _candidate_write,
    _next_ids,
    _pack,
    _reserve,
    _where,
)


class FrameStore:
    """Frames by content id: ASE rows for every frame ever selected, labeled or failed, and a
    bulk table for the candidates (needs the ledger's ``db``, ``_ids``, ``_cand``,
    ``transaction`` and ``_reading``)."""

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
