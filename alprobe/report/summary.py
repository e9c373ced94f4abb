"""A comparison's summary (``summary.md``, and the summary section of its HTML page): per arm
(mean over replicas) accuracy, hit rates and costs; the paired differences between arms with
95% intervals and whether they resolve; the other yardsticks, the oracle's share, the data tax,
MD stability, the noise floor; and a plain verdict.

The statistics come from :mod:`alprobe.paired` as numbers and dataclasses; each part here is a
function ``(c: ComparisonData) -> list[Block]`` (empty when it has nothing to say), listed in
:data:`SUMMARY_PARTS` in order.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..paired import compare_stability, data_tax, oracle_recovery, paired_tables, test_precision
from .blocks import Block, Bullets, Heading, Paragraph, Table, to_markdown
from .fmt import ci, finite_mean, num
from .gather import ComparisonData, ComparisonPlan, RunInfo

__all__ = ["SUMMARY_PARTS", "YARDSTICKS", "ArmSummary", "arm_summaries", "comparison_summary",
           "summary_blocks"]

#: The yardsticks a comparison measures, (learning-curve column, what it is); the verdict
#: rests on the first.
YARDSTICKS = (("force_mae_meV_A", "test force MAE (in distribution)"),
              ("force_rmse_p95_meV_A", "test p95 of per-frame force RMSE (tail)"),
              ("force_rmse_max_meV_A", "test max per-frame force RMSE (worst frame)"),
              ("stress_force_mae_meV_A", "stress-set force MAE (beyond exploration)"),
              ("stress_force_rmse_p95_meV_A", "stress-set p95 of per-frame force RMSE"))
#: The learning-curve figure a comparison writes beside its summary.
PLOT = "learning_curves.png"


def _measured(curves: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """The yardsticks with at least one finite, positive value."""
    return [(k, w) for k, w in YARDSTICKS
            if any(np.isfinite(r.get(k, np.nan)) and r.get(k, 0) > 0 for r in curves)]


@dataclass(frozen=True)
class ArmSummary:
    """One arm over its replicas: means at each run's last generation (``labels``, ``trained``
    frames, ``mae`` with its sd over replicas and the mean half-width of the 95% test
    interval, ``energy`` MAE, signal ``auroc``), the mean MAE at each run's first generation,
    hit rates over generations >= 1, and the summed wall and CPU seconds of its runs."""

    arm: str
    rule: str
    replicas: int
    generations: int
    labels: float
    trained: float
    mae_first: float
    mae: float
    mae_sd: float
    half_ci: float
    energy: float
    hit_rel: float
    hit_abs: float
    base_abs: float
    auroc: float
    wall_s: float
    cpu_s: float
    unbiased: bool


def arm_summaries(curves: list[dict[str, Any]], costs: list[dict[str, Any]]
                  ) -> list[ArmSummary]:
    """One :class:`ArmSummary` per arm, in the order the arms first appear."""
    total = {c["arm"]: c for c in costs if c["stage"] == "total"}
    out = []
    for arm in dict.fromkeys(r["arm"] for r in curves):
        mine = [r for r in curves if r["arm"] == arm]
        runs = list(dict.fromkeys(r["run"] for r in mine))
        ends = [max((r for r in mine if r["run"] == run), key=lambda r: r["generation"])
                for run in runs]
        starts = [min((r for r in mine if r["run"] == run), key=lambda r: r["generation"])
                  for run in runs]
        later = [r for r in mine if r["generation"] > 0]

        def mean(key: str, rs: list[dict[str, Any]]) -> float:
            return finite_mean([r[key] for r in rs])

        f_end = [r["force_mae_meV_A"] for r in ends]
        cost = [total.get(run, {}) for run in runs]
        out.append(ArmSummary(
            arm, ends[0]["rule"], len(runs), min(r["generation"] for r in ends),
            mean("labels", ends),
            mean("train_frames", [r for r in ends if r.get("train_frames", -1) >= 0]),
            mean("force_mae_meV_A", starts), float(np.mean(f_end)),
            float(np.std(f_end, ddof=1)) if len(f_end) > 1 else math.nan,
            (mean("force_mae_hi_meV_A", ends) - mean("force_mae_lo_meV_A", ends)) / 2,
            mean("energy_mae_meV_atom", ends), mean("hit_rate", later),
            mean("hit_rate_abs", later), mean("hit_base_rate_abs", later),
            mean("signal_auroc_test", ends), sum(c.get("wall_s", 0.0) for c in cost),
            sum(c.get("cpu_s", 0.0) for c in cost),
            any(r.get("unbiased_selection") for r in mine)))
    return out


def header(c: ComparisonData) -> list[Block]:
    """The title, what was compared, the table of arms and what its columns mean."""
    p = c.plan
    arms = c.arms
    reps = sorted({r["replica"] for r in c.curves})
    rows: list[list[str]] = [
        [s.arm, s.rule, str(s.replicas), str(s.generations),
         f"{num(s.labels, '{:.0f}')} ({num(s.trained, '{:.0f}')})",
         f"{s.mae_first:.1f} → {s.mae:.1f}" + (f" ± {s.mae_sd:.1f}" if s.replicas > 1 else ""),
         num(s.half_ci, "±{:.1f}"), f"{s.energy:.2f}", f"{num(s.hit_rel)} / {num(s.hit_abs)}",
         num(s.base_abs), num(s.auroc), f"{s.wall_s:.0f}", f"{s.cpu_s:.0f}"]
        for s in arm_summaries(c.curves, c.costs)]
    rows += [[x["arm"], "-", "-", "0", *[""] * 7, f"{x['wall_s']:.0f}", f"{x['cpu_s']:.0f}"]
             for x in c.costs if x["stage"] == "total" and x["arm"].endswith("(gen 0)")]
    return [
        Heading(f"Comparison {p.name}", 1),
        Paragraph(
            f"{len(arms)} arms x {len(reps)} replica(s), {p.generations} generations planned, "
            f"{p.budget} labels per generation. Replica r of every arm shares r's seeds; "
            + ("in this pool (retrospective) comparison each replica has its own initial set "
               "and test split, and a label is a look-up in the pool (counted as one DFT "
               "label)." if p.pool else "generation 0 and the held-out test set (frames of "
               "test walkers no model ever trains on) are shared by all replicas.")
            + "\nDifferences are A - B, paired replica by replica: mean and 95% t-interval over "
            "replicas; **resolved** when the interval excludes 0."),
        Table(["arm", "rule", "replicas", "gens", "labels (trained on)",
               "F MAE meV/Å gen 0 → last (mean ± sd)", "±95% test CI (last)",
               "E MAE meV/atom (last)", "hit rate rel / abs", "base rate abs",
               "signal AUROC test (last)", "wall s", "CPU s"], rows),
        Paragraph("Labels: DFT labels paid for (test set excluded); trained on: the frames the "
                  "last backbone trained on (fewer where an arm holds a calibration share out "
                  "of backbone training: the PROBE arm, or select.hold_out)."),
        Paragraph("Hit rate: fraction of an arm's new labels whose true error under the model "
                  "that picked them exceeds generation 0's threshold (rel) or "
                  "select.hit_threshold_force_rmse_eV_A (abs); base rate: the same fraction "
                  "over all candidates (known in a pool). Wall s: the run's own generations "
                  "(runs share the workers); CPU s: its tasks plus its driver thread "
                  "(`costs.csv`).")]


def precision(c: ComparisonData, limit: float = 0.05) -> list[Block]:
    """How precisely the test set measures each learning-curve point."""
    p = test_precision(c.curves)
    if p is None:
        return []
    head = (f"Test-set precision: over the {p.n} learning-curve points the 95% bootstrap "
            f"interval of the test force MAE (over test frames) spans ±{100 * p.mean:.1f}% of "
            f"the MAE on average and ±{100 * p.max:.1f}% at worst ({p.worst_run}, "
            f"generation {p.worst_generation}): ")
    if p.max <= limit:
        return [Paragraph(head + f"every point is within ±{100 * limit:.0f}%.")]
    return [Paragraph(head + f"wider than ±{100 * limit:.0f}% there; a larger test set "
                      "(initial.test_size, or more pool frames in test) would narrow it as "
                      "1/sqrt(frames).")]


def hit_threshold_note(c: ComparisonData) -> list[Block]:
    """A warning where an arm blind to the errors hits almost always: the threshold is low."""
    return [Paragraph(
        f"Note: {s.arm} (a selection blind to the errors) has an absolute hit rate of "
        f"{s.hit_abs:.2f}: the threshold is below almost every candidate's error, so no hit "
        "rate here says anything about a strategy; raise select.hit_threshold_force_rmse_eV_A.")
        for s in arm_summaries(c.curves, c.costs)
        if s.unbiased and np.isfinite(s.hit_abs) and s.hit_abs >= 0.95]


def tails(c: ComparisonData) -> list[Block]:
    """Per arm, at each run's last generation (mean over replicas): the tails of the test
    set and the stress set's errors."""
    cols = ("force_rmse_p95_meV_A", "force_rmse_max_meV_A", "stress_force_mae_meV_A",
            "stress_force_rmse_p95_meV_A", "stress_force_rmse_max_meV_A")
    rows = []
    for a in c.arms:
        runs = dict.fromkeys(r["run"] for r in c.curves if r["arm"] == a)
        ends = [max((r for r in c.curves if r["run"] == run), key=lambda r: r["generation"])
                for run in runs]
        rows.append([a, *(num(finite_mean([float(r.get(k, math.nan)) for r in ends]), "{:.1f}")
                          for k in cols)])
    return [Heading("Tails and stress set"),
            Paragraph("At the last generation, mean over replicas (meV/Å): the 95th percentile "
                      "and the maximum of the per-frame force RMSE on the test set, and on the "
                      "stress set (pool.stress_key: conditions beyond the candidates'; '-' "
                      "without one) its force MAE, p95 and maximum."),
            Table(["arm", "test p95", "test max", "stress MAE", "stress p95", "stress max"],
                  rows)]


def paired(c: ComparisonData) -> list[Block]:
    """Test force MAE at each generation's labels, AULC and labels to the target, paired."""
    t = c.paired
    if t is None:
        return []
    rows = [[str(g), f"{t.labels_at[g]:.0f}", *(ci(t.at_labels[p][g]) for p in t.pairs)]
            for g in t.generations if g != 0]
    lo, hi = t.aulc_range
    reached = []
    for a in t.arms:
        v = [x for x in t.to_target_values[a] if np.isfinite(x)]
        reached.append(f"{a}: " + (f"{np.mean(v):.0f} labels (mean of {len(v)} of "
                                   f"{len(t.replicas)} replicas)" if v else "never reached"))
    return [Heading("Paired differences"),
            Paragraph("Test force MAE (meV/Å), A − B at each generation's label count "
                      "(negative: A is more accurate):"),
            Table(["gen", "labels", *(f"{a} − {b}" for a, b in t.pairs)], rows),
            Paragraph(f"Area under the learning curve: mean log10(force MAE / meV/Å) over "
                      f"{lo:.0f}-{hi:.0f} labels (lower is better; a difference of -0.04 is "
                      "about 10% lower MAE throughout):"),
            Bullets([t.aulc[p].verdict(*p, "") for p in t.pairs]),
            Paragraph(f"Labels needed to reach a test force MAE of {t.target:.1f} meV/Å "
                      "(replicas that never reach it are left out):"),
            Bullets(reached + [t.to_target[p].verdict(*p, "labels") for p in t.pairs])]


def verdict(c: ComparisonData) -> list[Block]:
    """The lowest final MAE, and which arm the AULC intervals resolve as better."""
    t = c.paired
    if t is None:
        return []
    out: list[Block] = [Heading("Verdict"), Paragraph(
        "The verdict rests on the area under the learning curve of the test force MAE (in "
        "distribution); the tails, the stress set and the share of the oracle's gain follow "
        "below it.")]
    g_last = max(t.generations)
    last = {a: [float(r["force_mae_meV_A"]) for r in c.curves
                if r["arm"] == a and int(r["generation"]) == g_last] for a in t.arms}
    last = {a: float(np.mean(v)) for a, v in last.items() if v}
    if last:
        best = min(last, key=last.get)
        out.append(Paragraph(f"Lowest test force MAE at generation {g_last}: {best} "
                             f"({last[best]:.1f} meV/Å, mean over replicas); the paired "
                             "intervals above say whether that is a difference or noise, and "
                             "the verdict rests on the area under the learning curve."))
    return out + [Paragraph(_winner(t))]


def _winner(t: Any) -> str:
    pairs, n = t.pairs, len(t.replicas)
    wins = [a for a in t.arms if all(
        (t.aulc[p].resolved and ((p[0] == a) == (t.aulc[p].mean < 0))) for p in pairs if a in p)]
    resolved = [p for p in pairs if t.aulc[p].resolved]
    if wins:
        return (f"**{wins[0]}** has a lower area under the learning curve than every other "
                f"arm, and each paired interval ({n} replicas) resolves it.")
    if resolved:
        return "No arm beats every other; resolved by the intervals: " + "; ".join(
            f"{(a if t.aulc[(a, b)].mean < 0 else b)} better than "
            f"{(b if t.aulc[(a, b)].mean < 0 else a)}" for a, b in resolved) + "."
    widths = [t.aulc[p].hi - t.aulc[p].lo for p in pairs if np.isfinite(t.aulc[p].hi)]
    if not widths:
        return "No difference between arms is resolved (fewer than 2 paired replicas: no " \
               "interval)."
    if max(widths) > 0.04:
        return (f"No difference between arms is resolved with {n} replicas: the intervals are "
                f"wide (up to {max(widths):.3f} in mean log10 MAE), so this comparison needs "
                "more power (replicas, labels, a lower noise floor) before it can name a "
                "winner.")
    return ("No difference between arms is resolved: the intervals are tight, so the arms are "
            "equally good here (no winner).")


def yardsticks(c: ComparisonData) -> list[Block]:
    """Paired AULC differences on every yardstick beyond the test force MAE."""
    if len(c.arms) < 2:
        return []
    items = []
    for key, what in _measured(c.curves):
        if key != YARDSTICKS[0][0]:
            t = paired_tables(c.curves, key=key)
            items.append((f"{what}:", [t.aulc[p].verdict(*p, "") for p in t.pairs]))
    return [Heading("Other yardsticks"), Paragraph(
        "Area under the learning curve (mean log10 of the yardstick over the common label "
        "range), A − B paired by replica; the verdict above rests on the test force MAE, these "
        "say whether the tails and the stress set agree:"), Bullets(items)] if items else []


def oracle_share(c: ComparisonData) -> list[Block]:
    """Each arm's share of the oracle's AULC gain over random, on every yardstick."""
    if len(c.arms) < 2:
        return []
    items, head = [], ""
    for key, what in _measured(c.curves):
        rec = oracle_recovery(c.curves, key)
        if rec is None:
            return []
        head = head or (f"The fraction of {rec.ceiling}'s AULC gain over {rec.control} that "
                        "each arm recovers, mean(random − arm) / mean(random − oracle) over "
                        "replicas, with a 95% bootstrap interval over replicas (1: as good as "
                        "the oracle; 0: no better than random; below 0: worse than random; "
                        "'-': the oracle gained nothing on that yardstick):")
        g = rec.gain
        items.append(f"{what}: " + "; ".join(
            f"{a} {s.fraction:+.2f} [{s.lo:+.2f}, {s.hi:+.2f}] (n={s.n})"
            if np.isfinite(s.fraction) else f"{a} -" for a, s in rec.arms.items())
            + f" (the oracle's own gain, {rec.control} − {rec.ceiling}: " + ci(g, "{:+.3f}")
            + ("" if g.resolved and g.mean > 0 else
               "; the oracle is worse than random here, so these shares mean little"
               if g.resolved else "; not a resolved gain, so these shares mean little") + ")")
    return [Heading("Share of the oracle's gain"), Paragraph(head), Bullets(items)] \
        if items else []


def tax(c: ComparisonData) -> list[Block]:
    """What the PROBE arm's hold-out costs by itself, beside PROBE's loss to random."""
    if len(c.arms) < 2:
        return []
    items = []
    for key, what in _measured(c.curves):
        for rec in data_tax(c.curves, key):
            text = f"{what}: {rec.arm} − {rec.base} " + ci(rec.tax, "{:+.3f}")
            if rec.share is not None:
                s = rec.share
                text += (f"; {rec.probe} − random " + ci(rec.loss, "{:+.3f}")
                         + ("; share of that loss the tax explains "
                            f"{s.fraction:+.2f} [{s.lo:+.2f}, {s.hi:+.2f}] (n={s.n})"
                            if np.isfinite(s.fraction)
                            else "; PROBE does not lose to random here, no share to explain"))
            items.append(text)
    return [Heading("The data tax"), Paragraph(
        "What keeping initial.calibration_fraction of every batch out of backbone training "
        "costs by itself (an arm with select.hold_out against the same rule without it; AULC, "
        "mean log10 of the yardstick, paired over replicas; positive: the tax hurts), beside "
        "the PROBE arm's loss to random; the share is mean(tax) / mean(PROBE − random) with a "
        "95% bootstrap interval over replicas:"), Bullets(items)] if items else []


def stability(c: ComparisonData) -> list[Block]:
    """The final models' MD stability per arm and paired between arms."""
    s = compare_stability(c.curves, c.stability)
    if s is None:
        return []
    return [
        Heading("MD stability of the final models"),
        Paragraph(f"{s.walkers} walkers on each run's last backbone at {s.temperature_K:g} K "
                  f"for {s.run_fs:g} fs (no probe), checked by the explore section's rules "
                  "(atoms too close, a fragment flying off, bonds broken or formed): the "
                  "fraction that stayed physical, and the time to the first failure (the run "
                  "length where none failed); mean over replicas."),
        Table(["arm", "stable fraction", "first failure fs"],
              [[a, num(s.fraction[a], "{:.2f}"), num(s.first_failure_fs[a], "{:.0f}")]
               for a in c.arms]),
        Paragraph("Paired A − B over replicas (stable fraction: higher is better):"),
        Bullets([f"{a} − {b}: stable fraction {ci(d, '{:+.2f}')}; first failure "
                 f"{ci(e, '{:+.0f}')} fs" for (a, b), (d, e) in s.pairs.items()])]


def noise_floor(c: ComparisonData) -> list[Block]:
    """The spread of one training set trained with other seeds (noise_floor.json)."""
    f = c.noise_floor
    if not f:
        return []
    m = f["force_mae_meV_A"]
    return [Heading("Noise floor"), Paragraph(
        f"{f['run']}'s final training set ({f['labels']} labels, generation {f['generation']}, "
        f"backbone.retrain: {f.get('retrain', '?')}) trained {len(m)} times with different "
        f"seeds: test force MAE {', '.join(f'{v:.1f}' for v in m)} meV/Å (sd "
        f"{f['sd_meV_A']:.1f}, range {f['range_meV_A']:.1f}). A difference between strategies "
        f"smaller than about {f['range_meV_A']:.1f} meV/Å at one label count is within the "
        "training noise of a single run: this comparison cannot detect it from one replica; "
        "paired replicas average it down by about 1/sqrt(replicas).")]


def files(c: ComparisonData) -> list[Block]:
    """Where the figure and the CSVs are."""
    return [Paragraph(f"Learning curves: `{PLOT}` (CSV: `learning_curves.csv`, with each "
                      "point's 95% test interval); costs per stage: `costs.csv`; each run's "
                      "audits: `arms/<run>/audits/`.")]


#: The parts of a comparison's summary, in order: a new part is a function
#: ``(c: ComparisonData) -> list[Block]`` added here.
SUMMARY_PARTS: list[Callable[[ComparisonData], list[Block]]] = [
    header, precision, hit_threshold_note, tails, paired, verdict, yardsticks, oracle_share,
    tax, stability, noise_floor, files]


def summary_blocks(c: ComparisonData) -> list[Block]:
    """The whole summary, headings from level 1."""
    return [b for part in SUMMARY_PARTS for b in part(c)]


def comparison_summary(name: str, curves: list[dict[str, Any]], costs: list[dict[str, Any]],
                       *, budget: int, generations: int, target: float | None = None,
                       noise_floor: dict[str, Any] | None = None, pool: bool = False,
                       stability: dict[str, dict[str, Any]] | None = None) -> str:
    """The markdown summary of learning-curve and cost rows (as ``summary.md``) without a
    folder: for scripts and tests. ``stability``: each run's final-model MD stability record
    (stages.stability) by run name."""
    runs = {r["run"]: RunInfo(r["arm"], r["replica"], r["rule"]) for r in curves}
    plan = ComparisonPlan(name, budget, generations, runs, [], pool, target)
    return to_markdown(summary_blocks(ComparisonData(Path("."), plan, {}, {}, curves, costs,
                                                     stability or {}, noise_floor)))
