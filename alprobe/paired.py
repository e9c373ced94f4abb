"""Paired comparisons of learning curves across replicas (pure numpy / scipy).

Replica r of every strategy shares r's seeds (and, in pool mode, r's initial set and test
split), so strategies are compared replica by replica: the differences d_r = x_r(A) - x_r(B)
are paired, and their mean gets a Student-t interval over replicas. An interval that excludes
0 *resolves* the difference; one that contains it does not (the comparison needs more
replicas, or a lower noise floor, before it can say more than "no winner").

Learning curves are lists of (labels, force MAE) points, labels ascending.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["PairedDifference", "aulc", "bootstrap_mae_ci", "labels_to_target", "paired_difference",
           "paired_tables", "value_at"]


@dataclass(frozen=True)
class PairedDifference:
    """Mean over replicas of A - B with its (1 - alpha) t-interval; n replicas used."""

    mean: float
    lo: float
    hi: float
    n: int

    @property
    def resolved(self) -> bool:
        """The interval excludes zero (and is finite)."""
        return bool(np.isfinite(self.lo) and np.isfinite(self.hi) and (self.lo > 0 or self.hi < 0))

    def verdict(self, a: str, b: str, unit: str = "", lower_is_better: bool = True) -> str:
        """One plain sentence on what the interval says."""
        if self.n < 2 or not np.isfinite(self.lo):
            return f"{a} vs {b}: {self.n} paired replica(s), no interval"
        u = f" {unit}" if unit else ""
        span = f"{self.mean:+.3g}{u} (95% CI {self.lo:+.3g} to {self.hi:+.3g}, {self.n} pairs)"
        if not self.resolved:
            return f"{a} vs {b}: {span}: not resolved (the interval contains 0)"
        better = a if (self.mean < 0) == lower_is_better else b
        return f"{a} vs {b}: {span}: resolved, {better} is better"


def paired_difference(a: Sequence[float], b: Sequence[float], alpha: float = 0.05
                      ) -> PairedDifference:
    """Mean of a_r - b_r over the replicas where both are finite, with its t-interval."""
    from scipy import stats

    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    d = d[np.isfinite(d)]
    n = len(d)
    if n == 0:
        return PairedDifference(float("nan"), float("nan"), float("nan"), 0)
    m = float(d.mean())
    if n < 2:
        return PairedDifference(m, float("nan"), float("nan"), n)
    half = float(stats.t.ppf(1 - alpha / 2, n - 1) * d.std(ddof=1) / np.sqrt(n))
    return PairedDifference(m, m - half, m + half, n)


def value_at(labels: Sequence[float], values: Sequence[float], at: float) -> float:
    """The curve's value at ``at`` labels: linear between points, NaN outside the curve."""
    x, y = np.asarray(labels, dtype=float), np.asarray(values, dtype=float)
    if len(x) == 0 or at < x[0] - 1e-9 or at > x[-1] + 1e-9:
        return float("nan")
    return float(np.interp(at, x, y))


def aulc(labels: Sequence[float], mae: Sequence[float], lo: float, hi: float) -> float:
    """Area under the learning curve: the mean of log10(MAE) over labels in [lo, hi]
    (trapezoidal, linear between points); lower = better. NaN if the curve does not span it."""
    x, y = np.asarray(labels, dtype=float), np.log10(np.asarray(mae, dtype=float))
    if len(x) < 2 or lo < x[0] - 1e-9 or hi > x[-1] + 1e-9 or hi <= lo:
        return float("nan")
    grid = np.union1d(x[(x > lo) & (x < hi)], [lo, hi])
    return float(np.trapezoid(np.interp(grid, x, y), grid) / (hi - lo))


def labels_to_target(labels: Sequence[float], mae: Sequence[float], target: float) -> float:
    """Labels needed to reach MAE <= ``target``: the first crossing, linear between the points
    around it (log MAE); NaN if never reached, the first point's labels if already there."""
    x, y = np.asarray(labels, dtype=float), np.asarray(mae, dtype=float)
    for i in range(len(x)):
        if y[i] <= target:
            if i == 0:
                return float(x[0])
            y0, y1 = np.log(y[i - 1]), np.log(y[i])
            t = (y0 - np.log(target)) / (y0 - y1) if y0 != y1 else 1.0
            return float(x[i - 1] + t * (x[i] - x[i - 1]))
    return float("nan")


def bootstrap_mae_ci(abs_errors_per_frame: Sequence[np.ndarray], rng: np.random.Generator,
                     n_boot: int = 1000, alpha: float = 0.05) -> tuple[float, float, float]:
    """Force MAE over all components and its percentile bootstrap interval over frames.

    abs_errors_per_frame: per frame, the absolute force-component errors (N_i * 3,).
    Returns (mae, lo, hi) in the unit of the errors.
    """
    sums = np.array([float(np.sum(e)) for e in abs_errors_per_frame])
    sizes = np.array([len(np.ravel(e)) for e in abs_errors_per_frame], dtype=float)
    n = len(sums)
    if n == 0:
        return float("nan"), float("nan"), float("nan")
    mae = float(sums.sum() / sizes.sum())
    idx = rng.integers(0, n, size=(n_boot, n))
    boot = sums[idx].sum(1) / sizes[idx].sum(1)
    lo, hi = np.quantile(boot, [alpha / 2, 1 - alpha / 2])
    return mae, float(lo), float(hi)


def bootstrap_quantile_ci(values: Sequence[float], q: float, rng: np.random.Generator,
                          n_boot: int = 1000, alpha: float = 0.05
                          ) -> tuple[float, float, float]:
    """The ``q`` quantile (0-1) of ``values`` (e.g. per-frame force RMSE, eV/A) and its
    percentile bootstrap interval over the values; NaNs for an empty input."""
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        return float("nan"), float("nan"), float("nan")
    boot = np.quantile(v[rng.integers(0, v.size, size=(n_boot, v.size))], q, axis=1)
    lo, hi = np.quantile(boot, [alpha / 2, 1 - alpha / 2])
    return float(np.quantile(v, q)), float(lo), float(hi)


def recovered_fraction(control: Sequence[float], arm: Sequence[float], ceiling: Sequence[float],
                       rng: np.random.Generator, n_boot: int = 2000, alpha: float = 0.05
                       ) -> tuple[float, float, float, int]:
    """The fraction of the ceiling's gain over the control that an arm recovers,
    mean(control - arm) / mean(control - ceiling) over paired replicas (e.g. AULC of random,
    an arm and the oracle; lower is better), with a percentile bootstrap interval over
    replicas; and the number of replicas used (all three finite). 1: as good as the ceiling;
    0: no better than the control. NaNs when fewer than 2 replicas or no mean gain."""
    c, a, o = (np.asarray(x, dtype=float) for x in (control, arm, ceiling))
    ok = np.isfinite(c) & np.isfinite(a) & np.isfinite(o)
    c, a, o = c[ok], a[ok], o[ok]
    n = int(ok.sum())
    if n < 2 or np.mean(c - o) <= 0:
        return float("nan"), float("nan"), float("nan"), n
    idx = rng.integers(0, n, size=(n_boot, n))
    gain = (c - o)[idx].mean(1)
    frac = np.where(gain > 0, (c - a)[idx].mean(1) / np.where(gain > 0, gain, 1.0), np.nan)
    lo, hi = np.nanquantile(frac, [alpha / 2, 1 - alpha / 2])
    return float(np.mean(c - a) / np.mean(c - o)), float(lo), float(hi), n


def _curve(rows: list[dict[str, Any]], run: str, key: str = "force_mae_meV_A"
           ) -> tuple[list[float], list[float]]:
    rs = sorted((r for r in rows if r["run"] == run), key=lambda r: r["generation"])
    return [float(r["labels"]) for r in rs], [float(r[key]) for r in rs]


def paired_tables(curves: list[dict[str, Any]], target: float | None = None,
                  key: str = "force_mae_meV_A") -> dict[str, Any]:
    """The paired statistics of a comparison: for each pair of arms (A, B), the mean over
    replicas of A - B, with its 95% t-interval, of (a) the test force MAE at each
    generation's label count, (b) the area under the learning curve (mean log10 force MAE
    over the label range every run covers), (c) the labels needed to reach ``target`` meV/A
    (default: the highest of the arms' mean final MAEs, which every arm reaches on average).
    ``key``: the learning-curve column (another yardstick: a tail, the stress set).
    """
    import itertools

    import numpy as np


    arms = list(dict.fromkeys(r["arm"] for r in curves))
    reps = sorted({r["replica"] for r in curves})
    run_of = {(r["arm"], r["replica"]): r["run"] for r in curves}
    gens = sorted({r["generation"] for r in curves})
    at_gen = {g: float(np.median([r["labels"] for r in curves if r["generation"] == g]))
              for g in gens}
    last = {run: max(r["generation"] for r in curves if r["run"] == run)
            for run in run_of.values()}
    common = [g for g in gens if all(last[run] >= g for run in run_of.values())]
    firsts = [_curve(curves, run)[0][0] for run in run_of.values()]
    lasts = [_curve(curves, run)[0][-1] for run in run_of.values()]
    lo, hi = max(firsts), min(lasts)
    final = {a: float(np.mean([_curve(curves, run_of[(a, r)], key)[1][-1] for r in reps
                               if (a, r) in run_of])) for a in arms}
    target = float(target) if target else max(final.values())

    def per_rep(arm: str, fn: Any) -> list[float]:
        return [fn(*_curve(curves, run_of[(arm, r)], key)) if (arm, r) in run_of
                else float("nan") for r in reps]

    out: dict[str, Any] = {"arms": arms, "replicas": reps, "target": target,
                           "aulc_range": (lo, hi), "at_labels": {}, "aulc": {}, "to_target": {},
                           "aulc_values": {a: per_rep(a, lambda x, y: aulc(x, y, lo, hi))
                                           for a in arms},
                           "to_target_values": {a: per_rep(a, lambda x, y: labels_to_target(
                               x, y, target)) for a in arms},
                           "generations": common, "labels_at": at_gen}
    for a, b in itertools.combinations(arms, 2):
        pair = (a, b)
        out["at_labels"][pair] = {
            g: paired_difference(per_rep(a, lambda x, y, L=at_gen[g]: value_at(x, y, L)),
                                 per_rep(b, lambda x, y, L=at_gen[g]: value_at(x, y, L)))
            for g in common if g > 0}
        out["aulc"][pair] = paired_difference(out["aulc_values"][a], out["aulc_values"][b])
        out["to_target"][pair] = paired_difference(out["to_target_values"][a],
                                                  out["to_target_values"][b])
    return out
