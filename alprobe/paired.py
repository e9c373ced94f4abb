"""Paired comparisons of learning curves across replicas (pure numpy / scipy).

Replica r of every strategy shares r's seeds (and, in pool mode, r's initial set and test
split), so strategies are compared replica by replica: the differences d_r = x_r(A) - x_r(B)
are paired, and their mean gets a Student-t interval over replicas. An interval that excludes
0 *resolves* the difference; one that contains it does not (the comparison needs more
replicas, or a lower noise floor, before it can say more than "no winner").

Learning curves are lists of (labels, force MAE) points, labels ascending; a comparison's
curves are rows of ``alprobe.report.learning_curve_rows`` (run, arm, replica, rule, generation,
labels, ``force_mae_meV_A`` and the other yardsticks). Every statistic here returns numbers or
frozen dataclasses; the report turns them into tables and sentences.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

__all__ = ["DataTax", "OracleShare", "PairedDifference", "PairedTables", "Precision", "Share",
           "StabilityComparison", "aulc", "bootstrap_mae_ci", "bootstrap_quantile_ci",
           "compare_stability", "data_tax", "labels_to_target", "oracle_recovery",
           "paired_difference", "paired_tables", "pays_tax", "recovered_fraction",
           "test_precision", "value_at"]


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


class Share(NamedTuple):
    """A recovered fraction (:func:`recovered_fraction`): the point value, its bootstrap
    interval and the replicas used."""

    fraction: float
    lo: float
    hi: float
    n: int


def recovered_fraction(control: Sequence[float], arm: Sequence[float], ceiling: Sequence[float],
                       rng: np.random.Generator, n_boot: int = 2000, alpha: float = 0.05
                       ) -> Share:
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
        return Share(float("nan"), float("nan"), float("nan"), n)
    idx = rng.integers(0, n, size=(n_boot, n))
    gain = (c - o)[idx].mean(1)
    frac = np.where(gain > 0, (c - a)[idx].mean(1) / np.where(gain > 0, gain, 1.0), np.nan)
    lo, hi = np.nanquantile(frac, [alpha / 2, 1 - alpha / 2])
    return Share(float(np.mean(c - a) / np.mean(c - o)), float(lo), float(hi), n)


@dataclass(frozen=True)
class PairedTables:
    """The paired statistics of a comparison (:func:`paired_tables`). Pairs are (A, B) in
    the order the arms first appear; every difference is A - B."""

    arms: list[str]
    replicas: list[int]
    target: float
    aulc_range: tuple[float, float]
    generations: list[int]
    labels_at: dict[int, float]
    aulc_values: dict[str, list[float]]
    to_target_values: dict[str, list[float]]
    at_labels: dict[tuple[str, str], dict[int, PairedDifference]]
    aulc: dict[tuple[str, str], PairedDifference]
    to_target: dict[tuple[str, str], PairedDifference]

    @property
    def pairs(self) -> list[tuple[str, str]]:
        return list(self.aulc)


def _curve(rows: list[dict[str, Any]], run: str, key: str = "force_mae_meV_A"
           ) -> tuple[list[float], list[float]]:
    rs = sorted((r for r in rows if r["run"] == run), key=lambda r: r["generation"])
    return [float(r["labels"]) for r in rs], [float(r[key]) for r in rs]


def paired_tables(curves: list[dict[str, Any]], target: float | None = None,
                  key: str = "force_mae_meV_A") -> PairedTables:
    """The paired statistics of a comparison: for each pair of arms (A, B), the mean over
    replicas of A - B, with its 95% t-interval, of (a) the test force MAE at each
    generation's label count, (b) the area under the learning curve (mean log10 force MAE
    over the label range every run covers), (c) the labels needed to reach ``target`` meV/A
    (default: the highest of the arms' mean final MAEs, which every arm reaches on average).
    ``curves``: learning-curve rows (run, arm, replica, generation, labels, ``key``);
    ``key``: the learning-curve column (another yardstick: a tail, the stress set).
    """
    import itertools

    arms = list(dict.fromkeys(r["arm"] for r in curves))
    reps = sorted({r["replica"] for r in curves})
    run_of = {(r["arm"], r["replica"]): r["run"] for r in curves}
    gens = sorted({r["generation"] for r in curves})
    at_gen = {g: float(np.median([r["labels"] for r in curves if r["generation"] == g]))
              for g in gens}
    last = {run: max(r["generation"] for r in curves if r["run"] == run)
            for run in run_of.values()}
    common = [g for g in gens if all(last[run] >= g for run in run_of.values())]
    lo = max(_curve(curves, run)[0][0] for run in run_of.values())
    hi = min(_curve(curves, run)[0][-1] for run in run_of.values())
    final = {a: float(np.mean([_curve(curves, run_of[(a, r)], key)[1][-1] for r in reps
                               if (a, r) in run_of])) for a in arms}
    target = float(target) if target else max(final.values())

    def per_rep(arm: str, fn: Any) -> list[float]:
        return [fn(*_curve(curves, run_of[(arm, r)], key)) if (arm, r) in run_of
                else float("nan") for r in reps]

    aulc_values = {a: per_rep(a, lambda x, y: aulc(x, y, lo, hi)) for a in arms}
    to_target_values = {a: per_rep(a, lambda x, y: labels_to_target(x, y, target))
                        for a in arms}
    at_labels, aulcs, to_target = {}, {}, {}
    for a, b in itertools.combinations(arms, 2):
        at_labels[(a, b)] = {
            g: paired_difference(per_rep(a, lambda x, y, L=at_gen[g]: value_at(x, y, L)),
                                 per_rep(b, lambda x, y, L=at_gen[g]: value_at(x, y, L)))
            for g in common if g > 0}
        aulcs[(a, b)] = paired_difference(aulc_values[a], aulc_values[b])
        to_target[(a, b)] = paired_difference(to_target_values[a], to_target_values[b])
    return PairedTables(arms, reps, target, (lo, hi), common, at_gen, aulc_values,
                        to_target_values, at_labels, aulcs, to_target)


# ----- shares of a gain, the data tax, the test set's precision, MD stability -------------------

@dataclass(frozen=True)
class OracleShare:
    """Each arm's fraction of the oracle's (``ceiling``) AULC gain over random
    (``control``) on the yardstick ``key``; ``gain``: control - ceiling, paired."""

    control: str
    ceiling: str
    key: str
    gain: PairedDifference
    arms: dict[str, Share]


def oracle_recovery(curves: list[dict[str, Any]], key: str = "force_mae_meV_A",
                    seed: int = 0) -> OracleShare | None:
    """Each arm's fraction of the oracle's AULC gain over random, with its bootstrap interval
    over replicas (:func:`recovered_fraction`); None without an arm whose rule is oracle and
    one whose rule is random (the first of each is used)."""
    rule: dict[str, str] = {}
    for r in curves:
        rule.setdefault(r["arm"], r["rule"])
    control = next((a for a, ru in rule.items() if ru == "random"), None)
    ceiling = next((a for a, ru in rule.items() if ru == "oracle"), None)
    if control is None or ceiling is None:
        return None
    t = paired_tables(curves, key=key)
    vals = t.aulc_values
    rng = np.random.default_rng(seed)
    return OracleShare(control, ceiling, key, paired_difference(vals[control], vals[ceiling]),
                       {a: recovered_fraction(vals[control], vals[a], vals[ceiling], rng)
                        for a in t.arms if a not in (control, ceiling)})


@dataclass(frozen=True)
class DataTax:
    """What the hold-out costs ``arm`` against ``base`` (the same rule without it), AULC of
    ``key`` paired (``tax``: arm - base); with a taxed PROBE arm and an untaxed random one,
    PROBE's ``loss`` to random and the ``share`` of it the tax explains."""

    arm: str
    base: str
    key: str
    tax: PairedDifference
    probe: str | None = None
    loss: PairedDifference | None = None
    share: Share | None = None


def pays_tax(curves: list[dict[str, Any]], arm: str) -> bool:
    """Whether ``arm``'s backbone trained on fewer frames than the labels it paid for."""
    last = [r for r in curves if r["arm"] == arm and r.get("generation", 0) > 0
            and r.get("train_frames", -1) >= 0]
    return bool(last) and all(r["train_frames"] < r["labels"] for r in last)


def data_tax(curves: list[dict[str, Any]], key: str = "force_mae_meV_A", seed: int = 0
             ) -> list[DataTax]:
    """What the hold-out (the PROBE arm's data tax) costs by itself, against how much an
    arm that pays it loses to the same rule without it. For each rule with a taxed and an
    untaxed arm (e.g. random_hold and random): the tax, AULC(taxed) - AULC(untaxed), paired
    over replicas; and, with a taxed PROBE arm and an untaxed random arm, the share of
    PROBE's AULC loss to random that the tax explains, mean(taxed - untaxed) /
    mean(probe - random), with a bootstrap interval (NaN when PROBE does not lose)."""
    t = paired_tables(curves, key=key)
    vals, arms = t.aulc_values, t.arms
    rule = {r["arm"]: r["rule"] for r in curves}
    taxed = {a: pays_tax(curves, a) for a in arms}
    untaxed_of = {ru: next((a for a in arms if rule[a] == ru and not taxed[a]), None)
                  for ru in set(rule.values())}
    probe = next((a for a in arms if rule[a] == "probe" and taxed[a]), None)
    random = untaxed_of.get("random")
    rng = np.random.default_rng(seed)
    out = []
    for a in arms:
        base = untaxed_of.get(rule[a])
        if not taxed[a] or base is None or rule[a] == "probe":
            continue
        tax = paired_difference(vals[a], vals[base])
        if probe is None or random is None:
            out.append(DataTax(a, base, key, tax))
            continue
        # mean(a - base) / mean(probe - random), as a recovered fraction of negated values
        share = recovered_fraction([-x for x in vals[base]], [-x for x in vals[a]],
                                   [-x for x in vals[probe]], rng)
        out.append(DataTax(a, base, key, tax, probe,
                           paired_difference(vals[probe], vals[random]), share))
    return out


@dataclass(frozen=True)
class Precision:
    """Half-widths of the learning-curve points' 95% test intervals, as fractions of the MAE:
    their mean over ``n`` points, the widest (``max``) and where it is."""

    n: int
    mean: float
    max: float
    worst_run: str
    worst_generation: int


def test_precision(curves: list[dict[str, Any]]) -> Precision | None:
    """Half-width of each learning-curve point's 95% bootstrap interval of the test force MAE,
    as a fraction of that MAE: mean, worst and the run/generation of the worst point (None when
    no point has an interval)."""
    pts = [(0.5 * (r["force_mae_hi_meV_A"] - r["force_mae_lo_meV_A"]) / r["force_mae_meV_A"], r)
           for r in curves
           if all(np.isfinite(r.get(k, np.nan)) for k in
                  ("force_mae_lo_meV_A", "force_mae_hi_meV_A", "force_mae_meV_A"))
           and r["force_mae_meV_A"] > 0]
    if not pts:
        return None
    worst, wr = max(pts, key=lambda p: p[0])
    return Precision(len(pts), float(np.mean([p[0] for p in pts])), float(worst), wr["run"],
                     int(wr["generation"]))


test_precision.__test__ = False  # a statistic, not a test (for pytest's collector)


@dataclass(frozen=True)
class StabilityComparison:
    """The final models' MD stability per arm (mean over replicas: the fraction of walkers
    that stayed physical, the time to the first failure in fs; NaN without a record) and the
    paired differences A - B of both; the settings of the stability runs (one record's)."""

    walkers: int
    temperature_K: float
    run_fs: float
    fraction: dict[str, float]
    first_failure_fs: dict[str, float]
    pairs: dict[tuple[str, str], tuple[PairedDifference, PairedDifference]]


def compare_stability(curves: list[dict[str, Any]], stability: dict[str, dict[str, Any]]
                      ) -> StabilityComparison | None:
    """Pair the runs' stability records (stages.stability; by run name) across replicas like
    the MAE; None when no run of ``curves`` has one."""
    import itertools

    arm_of = {r["run"]: (r["arm"], r["replica"]) for r in curves}
    arms = list(dict.fromkeys(r["arm"] for r in curves))
    reps = sorted({r["replica"] for r in curves})
    val: dict[tuple[str, str, int], float] = {}
    for run, rec in stability.items():
        if run in arm_of and rec:
            a, r = arm_of[run]
            val[("frac", a, r)] = float(rec["stable_fraction"])
            val[("first", a, r)] = float(rec["first_failure_fs"])
    if not val:
        return None
    one = next(v for v in stability.values() if v)

    def series(kind: str, arm: str) -> list[float]:
        return [val.get((kind, arm, r), float("nan")) for r in reps]

    frac, first = {}, {}
    for a in arms:
        ok = [x for x in series("frac", a) if np.isfinite(x)]
        frac[a] = float(np.mean(ok)) if ok else float("nan")
        first[a] = float(np.nanmean(series("first", a))) if ok else float("nan")
    pairs = {(a, b): (paired_difference(series("frac", a), series("frac", b)),
                      paired_difference(series("first", a), series("first", b)))
             for a, b in itertools.combinations(arms, 2)}
    return StabilityComparison(int(one["walkers"]), float(one["temperature_K"]),
                               float(one["run_fs"]), frac, first, pairs)
