"""Tables (and later plots) from a campaign folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["status_table"]

_COLUMNS = [
    ("gen", "generation", "{:d}"),
    ("labels", "labels", "{:d}"),
    ("new", "labels_new", "{:d}"),
    ("failed", "failed_new", "{:d}"),
    ("E MAE meV/atom", "energy_mae_eV_per_atom", "{:.2f}", 1000.0),
    ("F MAE meV/A", "force_mae_eV_A", "{:.1f}", 1000.0),
    ("F RMSE meV/A", "force_rmse_eV_A", "{:.1f}", 1000.0),
    ("AUROC new", "probe_auroc_new", "{:.2f}"),
    ("AUROC test", "probe_auroc_test", "{:.2f}"),
    ("wall s", "wall_s", "{:.0f}"),
]


def _cell(row: dict[str, Any], key: str, fmt: str, scale: float = 1.0) -> str:
    v = row.get(key)
    if v is None or (isinstance(v, float) and v != v):
        return "-"
    return fmt.format(v * scale if scale != 1.0 else v)


def status_table(directory: str | Path) -> str:
    """One row per finished generation: labels so far, test errors, probe AUROC, wall time.

    "labels" counts DFT labels in the training pool (test set excluded); errors are on the
    fixed held-out test set; "AUROC new" is the previous probe's AUROC on the frames labeled in
    that generation, with the trust they had before their labels were known; "AUROC test" is
    this generation's probe on the held-out test set.
    """
    from .ledger import Ledger

    ledger = Ledger(directory)
    rows = ledger.metrics()
    head = [c[0] for c in _COLUMNS]
    body = [[_cell(r, c[1], c[2], *c[3:]) for c in _COLUMNS] for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h)
              for i, h in enumerate(head)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(head, widths))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(b, widths)) for b in body]
    n_test = ledger.count(split="test", status="labeled")
    status = {s: ledger.count(status=s) for s in ("candidate", "selected", "labeled", "failed",
                                                  "rejected", "timeout")}
    lines.append(f"frames: {status}; held-out test frames: {n_test}")
    if not rows:
        lines.append("no generation finished yet")
    return "\n".join(lines)
