"""Folders written before the ledger held its stage and metrics tables (``state.json``,
``metrics.json``), and copies of a ledger."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from ..files import atomic_path
from .base import LedgerError, _read_json


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
