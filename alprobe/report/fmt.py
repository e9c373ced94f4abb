"""Numbers as table cells, and the per-generation metrics tables (status and report alike)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from ..paired import PairedDifference
from .blocks import Gap, Table

__all__ = ["ACCURACY_COLUMNS", "MAX_ROWS", "REPLAY_COLUMNS", "SIGNAL_COLUMNS", "replay_table", "cap_rows", "ci", "columns_table",
           "dur", "finite_mean", "num"]

#: Per-generation tables show at most this many rows (the first few and the last ones).
MAX_ROWS = 120

#: A column of a metrics table: (head, key or (lo key, hi key), format[, scale]).
ACCURACY_COLUMNS = [
    ("gen", "generation", "{:d}"),
    ("labels", "labels", "{:d}"),
    ("new", "labels_new", "{:d}"),
    ("failed", "failed_new", "{:d}"),
    ("E MAE meV/atom", "energy_mae_eV_per_atom", "{:.2f}", 1000.0),
    ("F MAE meV/Å", "force_mae_eV_A", "{:.1f}", 1000.0),
    ("95% CI", ("force_mae_lo_eV_A", "force_mae_hi_eV_A"), "{:.0f}-{:.0f}", 1000.0),
    ("F RMSE meV/Å", "force_rmse_eV_A", "{:.1f}", 1000.0),
    ("p95 frame", "force_rmse_p95_eV_A", "{:.0f}", 1000.0),
    ("max frame", "force_rmse_max_eV_A", "{:.0f}", 1000.0),
    ("trained on", "train_frames", "{:d}"),
    ("hit rate", "hit_rate", "{:.2f}"),
    ("hit abs", "hit_rate_abs", "{:.2f}"),
    ("wall s", "wall_s", "{:.0f}"),
]

#: The trust signal per generation: the probe's pool, the candidates' P(reliable), and the
#: AUROC / Spearman of generation g-1's signal on generation g (picked frames, the random
#: audit sample, every candidate of a pool), plus the new probe's AUROC on the test set.
SIGNAL_COLUMNS = [
    ("gen", "generation", "{:d}"),
    ("probe pool", "probe_pool", "{:d}"),
    ("P(rel) q25", "trust_q25", "{:.2f}"),
    ("q50", "trust_q50", "{:.2f}"),
    ("q75", "trust_q75", "{:.2f}"),
    ("AUROC picked", "trust_auroc_new", "{:.2f}"),
    ("AUROC audit", "trust_auroc_audit", "{:.2f}"),
    ("rho audit", "trust_spearman_audit", "{:.2f}"),
    ("AUROC cands", "trust_auroc_candidates", "{:.2f}"),
    ("rho cands", "trust_spearman_candidates", "{:.2f}"),
    ("AUROC test", "probe_auroc_test", "{:.2f}"),
]


#: Forgetting of a campaign from backbone.foundation: errors on the held-back replay frames
#: of the fine-tuned model's pretraining head and of the foundation itself.
REPLAY_COLUMNS = [
    ("gen", "generation", "{:d}"),
    ("replay F MAE meV/Å", "replay_force_mae_eV_A", "{:.1f}", 1000.0),
    ("foundation meV/Å", "replay_foundation_force_mae_eV_A", "{:.1f}", 1000.0),
    ("growth %", "replay_force_mae_growth", "{:+.1f}", 100.0),
    ("replay E MAE meV/atom", "replay_energy_mae_eV_per_atom", "{:.2f}", 1000.0),
]

REPLAY_CAPTION = ("forgetting (backbone.foundation): force MAE on the held-back replay frames, "
                  "the fine-tuned model's pretraining head against the foundation's own:")


def replay_table(rows: list[dict[str, Any]], cap: bool = False) -> Table | None:
    """The forgetting table of a campaign from a foundation, or None for any other."""
    if not any("replay_force_mae_eV_A" in r for r in rows):
        return None
    return columns_table(rows, REPLAY_COLUMNS, cap=cap, caption=REPLAY_CAPTION)


def num(v: Any, fmt: str = "{:.2f}", scale: float = 1.0) -> str:
    """``v * scale`` formatted, or "-" for a missing or non-finite value."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return "-"
    return fmt.format(f * scale) if math.isfinite(f) else "-"


def dur(s: float) -> str:
    """Seconds as s / min / h."""
    if not math.isfinite(s):
        return "-"
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.1f} h"


def finite_mean(values: Sequence[float]) -> float:
    """The mean of the finite values (NaN without any)."""
    v = [float(x) for x in values if math.isfinite(float(x))]
    return sum(v) / len(v) if v else float("nan")


def ci(d: PairedDifference, fmt: str = "{:+.1f}") -> str:
    """A paired difference as "mean [lo, hi]", with **resolved** when the interval excludes
    0; "mean (n=1)" without an interval, "-" without a pair."""
    if d.n < 2 or not math.isfinite(d.lo):
        return f"{fmt.format(d.mean)} (n={d.n})" if d.n else "-"
    mark = " **resolved**" if d.resolved else ""
    return f"{fmt.format(d.mean)} [{fmt.format(d.lo)}, {fmt.format(d.hi)}]{mark}"


def cell(row: dict[str, Any], column: tuple) -> str:
    """One metrics row's cell of a column spec; "-" when a value is missing or NaN."""
    key, fmt, scale = column[1], column[2], (column[3] if len(column) > 3 else 1.0)
    vals = [row.get(k) for k in (key if isinstance(key, tuple) else (key,))]
    if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in vals):
        return "-"
    try:
        return fmt.format(*[v * scale if scale != 1.0 else v for v in vals])
    except (TypeError, ValueError):
        return "-"


def cap_rows(rows: list[Any], n: int = MAX_ROWS, head: int = 10) -> list[Any]:
    """At most ``n`` rows: the first ``head`` and the last ones, with a Gap row between."""
    if len(rows) <= n:
        return rows
    return [*rows[:head], Gap(f"… {len(rows) - n} rows left out (all of them: metrics.csv) …"),
            *rows[-(n - head):]]


def columns_table(rows: list[dict[str, Any]], columns: list[tuple], cap: bool = False,
                  caption: str = "") -> Table:
    """Metrics rows as a table of ``columns`` (every column right-aligned); ``cap``: at most
    MAX_ROWS rows, in a scrolling box when long (the HTML page)."""
    body = [[cell(r, c) for c in columns] for r in rows]
    return Table([c[0] for c in columns], cap_rows(body) if cap else body,
                 align="r" * len(columns), caption=caption, scroll=cap and len(rows) > 15)
