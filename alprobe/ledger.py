"""The campaign's persistent state, in the campaign folder.

- ``ledger.db``: an ASE database (SQLite) with one row per frame: key ``fid`` (content hash),
  ``status`` (candidate, selected, labeled, failed, rejected, timeout), ``split`` (train, calib, test)
  once labeled, ``origin`` (initial, explore), ``generation``, ``trust``, ``pred_energy``,
  ``ref_energy`` and, in the row's data, ``ref_forces`` / ``pred_forces`` (eV/A). Read it with
  ``ase db ledger.db`` or ``ase.db.connect``.
- ``state.json``: stages recorded as done (restart skips them).
- ``metrics.json`` / ``metrics.csv``: one row per generation (pandas.read_csv reads it).

Only the driver writes here. Every file write goes to a temporary file and ``os.replace``.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from .errors import AlprobeError
from .frames import PRED_FORCES, REF_FORCES, frame_id

__all__ = ["Ledger", "LedgerError", "atomic_write_text"]

_ARRAY_KEYS = (REF_FORCES, PRED_FORCES)
_SCALAR = (bool, int, float, str, np.integer, np.floating, np.bool_)


class LedgerError(AlprobeError):
    """The campaign folder's state is missing or damaged (the message says which file)."""


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and os.replace."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _read_json(path: Path, default: Any) -> Any:
    if not path.exists():
        return default
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LedgerError(f"{path} is damaged ({exc}); refusing to reset it") from None


class Ledger:
    """Frames, labels, stage records and metrics of one campaign folder."""

    def __init__(self, directory: str | Path, create: bool = False):
        import ase.db

        self.dir = Path(directory)
        self.path = self.dir / "ledger.db"
        progress = (self.dir / "state.json").is_file() or (self.dir / "metrics.json").is_file()
        empty = not self.path.is_file() or self.path.stat().st_size == 0
        if empty and (progress or not create):
            raise LedgerError(f"{self.path} is missing or empty" + (
                " although state.json records progress; refusing to start over (restore it or "
                "use a new folder)" if progress else ""))
        if create:
            self.dir.mkdir(parents=True, exist_ok=True)
        # One writer (the driver): no lock file per row.
        self.db = ase.db.connect(str(self.path), type="db", append=True, use_lock_file=False)
        try:
            with self.db:
                self.db.count()  # creates the tables of a new ledger
                con = self.db.connection
                # ASE deletes rows of these tables by id on every update: index them.
                for table in ("keys", "text_key_values", "number_key_values", "species"):
                    con.execute(f"CREATE INDEX IF NOT EXISTS alprobe_{table}_id ON {table}(id)")
                self._ids = dict(con.execute(
                    "SELECT value, id FROM text_key_values WHERE key = 'fid'").fetchall())
        except (sqlite3.DatabaseError, AttributeError) as exc:
            raise LedgerError(f"{self.path} is damaged or not an alprobe ledger: {exc}") from None
        self._state = _read_json(self.dir / "state.json", {"stages": {}})
        self._metrics = _read_json(self.dir / "metrics.json", [])

    # ----- frames -------------------------------------------------------------------------
    def __contains__(self, fid: str) -> bool:
        return fid in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, frames: Iterable[Atoms], **common: Any) -> list[str]:
        """Insert frames (skipping ids already present) in one transaction; return their ids.

        Scalar ``atoms.info`` entries become searchable keys; ref/pred forces go to data.
        """
        fids = []
        with self.db:
            for atoms in frames:
                fid = atoms.info.get("fid") or frame_id(atoms)
                fids.append(fid)
                if fid in self._ids:
                    continue
                kvp = {k: _plain(v) for k, v in atoms.info.items() if isinstance(v, _SCALAR)}
                kvp.update({k: _plain(v) for k, v in common.items()})
                kvp["fid"] = fid
                data = {k: np.asarray(atoms.arrays[k]) for k in _ARRAY_KEYS if k in atoms.arrays}
                bare = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell,
                             pbc=atoms.pbc)
                self._ids[fid] = self.db.write(bare, key_value_pairs=kvp, data=data)
        return fids

    def update(self, fid: str, data: dict[str, Any] | None = None, **kvp: Any) -> None:
        """Set keys (and merge array data) of one frame."""
        if fid not in self._ids:
            raise KeyError(f"frame {fid} is not in the ledger")
        self.db.update(self._ids[fid], data=data, **{k: _plain(v) for k, v in kvp.items()})

    def update_many(self, fids: Iterable[str], **kvp: Any) -> None:
        """Set the same keys on many frames in one transaction."""
        with self.db:
            for fid in fids:
                self.update(fid, **kvp)

    def frames(self, **query: Any) -> list[Atoms]:
        """Frames whose keys equal ``query`` (e.g. status="labeled", split="test"), in id order.

        Each frame carries its keys in ``info`` and its force arrays in ``arrays``.
        """
        out = []
        with self.db:  # one connection for the whole query
            for row in self.db.select(**query):
                atoms = row.toatoms()
                atoms.info.update(row.key_value_pairs)
                for k, v in row.data.items():
                    atoms.arrays[k] = np.asarray(v)
                out.append(atoms)
        return out

    def keys(self, **query: Any) -> list[dict[str, Any]]:
        """The key-value pairs only (no structures, no arrays) of the frames matching ``query``."""
        with self.db:
            return [dict(r.key_value_pairs)
                    for r in self.db.select(columns=["id", "key_value_pairs"], **query)]

    def fids(self, **query: Any) -> list[str]:
        return [k["fid"] for k in self.keys(**query)]

    def count(self, **query: Any) -> int:
        return self.db.count(**query)

    # ----- stages -------------------------------------------------------------------------
    def done(self, stage: str) -> bool:
        return stage in self._state["stages"]

    def stage_info(self, stage: str) -> dict[str, Any]:
        return self._state["stages"].get(stage, {})

    def mark_done(self, stage: str, **info: Any) -> None:
        """Record ``stage`` (e.g. "gen001/label") as done, with what it produced."""
        self._state["stages"][stage] = info
        atomic_write_text(self.dir / "state.json", json.dumps(self._state, indent=1))

    # ----- metrics ------------------------------------------------------------------------
    def add_metrics(self, row: dict[str, Any]) -> None:
        """Add or replace the metrics row of ``row["generation"]``; write JSON and CSV."""
        rows = [r for r in self._metrics if r["generation"] != row["generation"]] + [row]
        self._metrics = sorted(rows, key=lambda r: r["generation"])
        atomic_write_text(self.dir / "metrics.json", json.dumps(self._metrics, indent=1))
        keys = list(dict.fromkeys(k for r in self._metrics for k in r))
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=keys)
        writer.writeheader()
        writer.writerows(self._metrics)
        atomic_write_text(self.dir / "metrics.csv", buf.getvalue())

    def metrics(self) -> list[dict[str, Any]]:
        """One dict per finished generation (labels, test MAE/RMSE, probe AUROC, timings)."""
        return [dict(r) for r in self._metrics]


def _plain(v: Any) -> Any:
    if isinstance(v, np.bool_):
        return bool(v)
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        return float(v)
    return v
