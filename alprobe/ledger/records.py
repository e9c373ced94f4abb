"""Stage records and the metrics table (a part of :class:`alprobe.ledger.Ledger`), and the
metrics files exported beside the ledger."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any

from ..files import atomic_write
from .base import CRASH_ENV, _crash, _plain, relative_paths, resolve_paths


class RecordStore:
    """One record per stage done and one metrics row per generation (needs the ledger's
    ``db``, ``dir``, ``_stages``, ``_metrics`` and ``transaction``)."""

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
