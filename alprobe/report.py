"""Text and markdown from campaign and comparison folders: the status table (``alprobe
status``), a comparison's learning-curve and cost rows, and its markdown summary (paired
statistics from :mod:`alprobe.paired`: AULC, MAE at matched labels, labels to a target, the
oracle's recovered share, the data tax, the test set's precision). Figures are in
:mod:`alprobe.plots`, the HTML page in :mod:`alprobe.html_report`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .paired import paired_tables
from .records import STAGES, stage_key

__all__ = ["comparison_summary", "cost_rows", "data_tax", "learning_curve_rows",
           "oracle_recovery", "paired_tables", "status_table", "test_precision",
           "test_precision_lines"]

_COLUMNS = [
    ("gen", "generation", "{:d}"),
    ("labels", "labels", "{:d}"),
    ("new", "labels_new", "{:d}"),
    ("failed", "failed_new", "{:d}"),
    ("E MAE meV/atom", "energy_mae_eV_per_atom", "{:.2f}", 1000.0),
    ("F MAE meV/A", "force_mae_eV_A", "{:.1f}", 1000.0),
    ("95% CI", ("force_mae_lo_eV_A", "force_mae_hi_eV_A"), "{:.0f}-{:.0f}", 1000.0),
    ("F RMSE meV/A", "force_rmse_eV_A", "{:.1f}", 1000.0),
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
_SIGNAL_COLUMNS = [
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


def _cell(row: dict[str, Any], key: Any, fmt: str, scale: float = 1.0) -> str:
    keys = key if isinstance(key, tuple) else (key,)
    vals = [row.get(k) for k in keys]
    if any(v is None or (isinstance(v, float) and v != v) for v in vals):
        return "-"
    return fmt.format(*[v * scale if scale != 1.0 else v for v in vals])


def _table(rows: list[dict[str, Any]], columns: list[tuple]) -> list[str]:
    head = [c[0] for c in columns]
    body = [[_cell(r, c[1], c[2], *c[3:]) for c in columns] for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h)
              for i, h in enumerate(head)]
    return (["  ".join(h.rjust(w) for h, w in zip(head, widths))]
            + ["  ".join(v.rjust(w) for v, w in zip(b, widths)) for b in body])


def status_table(directory: str | Path) -> str:
    """Two tables, one row per finished generation.

    Accuracy: "labels" counts DFT labels in the training pool (test set excluded); errors are
    on the fixed held-out test set, with the 95% bootstrap interval of the force MAE over test
    frames, the 95th percentile and maximum of the per-frame force RMSE, and the frames the
    backbone trained on; "hit rate" the fraction of the rule's new labels whose true error exceeded
    generation 0's threshold ("hit abs": select.hit_threshold_force_rmse_eV_A).
    Trust signal: the probe's training pool, the candidates' P(reliable) quartiles, and the
    AUROC / Spearman rho of generation g-1's signal, scored before the labels existed, on the
    frames the rule picked, on the random audit sample and (pool) on every candidate; "AUROC
    test" is this generation's probe on the test set. Safe while the campaign runs.
    """
    from .ledger import Ledger

    ledger = Ledger(directory, readonly=True)
    rows = ledger.metrics()
    lines = _table(rows, _COLUMNS)
    if rows:
        lines += ["", "trust signal (AUROC at the median error of each set; rho: Spearman of trust "
                  "and error, negative is good):"] + _table(rows, _SIGNAL_COLUMNS)
    n_test = ledger.count(split="test", status="labeled")
    status = {s: ledger.count(status=s) for s in ("candidate", "selected", "labeled", "failed",
                                                  "rejected", "timeout")}
    n_stress = ledger.count(split="stress", status="stress")
    lines.append(f"frames: {status}; held-out test frames: {n_test}; stress frames: {n_stress}")
    if rows:
        last = rows[-1]
        if n_stress:
            lines.append(
                f"stress set (gen {last['generation']}): F MAE "
                + _cell(last, "stress_force_mae_eV_A", "{:.1f}", 1000.0) + " meV/A (95% CI "
                + _cell(last, ("stress_force_mae_lo_eV_A", "stress_force_mae_hi_eV_A"),
                        "{:.0f}-{:.0f}", 1000.0) + "), p95 frame F RMSE "
                + _cell(last, "stress_force_rmse_p95_eV_A", "{:.0f}", 1000.0) + " meV/A, max "
                + _cell(last, "stress_force_rmse_max_eV_A", "{:.0f}", 1000.0) + " meV/A")
        st = ledger.stage_info(stage_key(int(last['generation']), "stability"))
        if st:
            from .stages.stability import describe_stability

            lines.append(f"MD stability of backbone {st['generation']} at "
                         f"{st['temperature_K']:g} K: {describe_stability(st)}")
    else:
        lines.append("no generation finished yet")
    return "\n".join(lines)


# ----- comparisons of arms --------------------------------------------------------------------

_NAN = float("nan")


def learning_curve_rows(metrics: dict[str, list[dict[str, Any]]],
                        runs: dict[str, tuple[str, int, str]]) -> list[dict[str, Any]]:
    """One row per run and generation: the run's arm, replica and rule; DFT labels used
    (training pool, test set excluded); test force MAE (meV/A) with its 95% bootstrap interval
    over test frames, RMSE, energy MAE (meV/atom); the frames its backbone trained on
    (``train_frames``); the tails of the per-frame force RMSE (p95 with its interval, max) and
    the same on the stress set (NaN without one); hit rates (relative and absolute threshold,
    and the candidates' base rate where known); the AUROC of the arm's own signal; wall and
    CPU s. ``runs``: {run name: (arm, replica, rule)}."""
    rows = []
    for name, ms in metrics.items():
        arm, replica, rule = runs[name]
        for m in ms:
            rows.append({
                "run": name, "arm": arm, "replica": int(replica), "rule": rule,
                "generation": int(m["generation"]), "labels": int(m["labels"]),
                "train_frames": int(m.get("train_frames", -1)),
                "dft_calls": int(m.get("dft_calls", m["labels"])),
                "force_mae_meV_A": 1000 * float(m["force_mae_eV_A"]),
                "force_mae_lo_meV_A": 1000 * float(m.get("force_mae_lo_eV_A", _NAN)),
                "force_mae_hi_meV_A": 1000 * float(m.get("force_mae_hi_eV_A", _NAN)),
                "force_rmse_meV_A": 1000 * float(m["force_rmse_eV_A"]),
                "energy_mae_meV_atom": 1000 * float(m["energy_mae_eV_per_atom"]),
                **{k.replace("_eV_A", "_meV_A"): 1000 * float(m.get(k, _NAN))
                   for k in _TAIL_KEYS},
                "hit_rate": float(m.get("hit_rate", _NAN)),
                "hit_rate_abs": float(m.get("hit_rate_abs", _NAN)),
                "hit_base_rate_abs": float(m.get("hit_base_rate_abs", _NAN)),
                "unbiased_selection": bool(m.get("unbiased_selection", _unbiased(rule))),
                "signal_auroc_test": float(m.get("signal_auroc_test", _NAN)),
                "signal_auroc_new": float(m.get("signal_auroc_new", _NAN)),
                "wall_s": float(m.get("wall_s", _NAN)),
                "cpu_s": float(m.get("cpu_s", _NAN))})
    return rows


#: Tail and stress-set columns of a metrics row (eV/A), shown in meV/A.
_TAIL_KEYS = ("force_rmse_p95_eV_A", "force_rmse_p95_lo_eV_A", "force_rmse_p95_hi_eV_A",
              "force_rmse_max_eV_A", "stress_force_mae_eV_A", "stress_force_mae_lo_eV_A",
              "stress_force_mae_hi_eV_A", "stress_force_rmse_p95_eV_A",
              "stress_force_rmse_max_eV_A")

#: The yardsticks a comparison measures, (learning-curve column, what it is); the verdict
#: rests on the first.
YARDSTICKS = (("force_mae_meV_A", "test force MAE (in distribution)"),
              ("force_rmse_p95_meV_A", "test p95 of per-frame force RMSE (tail)"),
              ("force_rmse_max_meV_A", "test max per-frame force RMSE (worst frame)"),
              ("stress_force_mae_meV_A", "stress-set force MAE (beyond exploration)"),
              ("stress_force_rmse_p95_meV_A", "stress-set p95 of per-frame force RMSE"))


def _unbiased(rule: str) -> bool:
    """Whether an arm's selection is blind to the errors (for rows written before the metrics
    carried it)."""
    from .arms import ARMS

    return bool(getattr(ARMS.get(rule), "unbiased", False))


def cost_rows(metrics: dict[str, list[dict[str, Any]]],
              shared: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Wall (driver, per stage) and CPU seconds (tasks, per account) of each run, summed over
    its own generations (>= 1), plus one row per generation-0 folder."""

    out = []

    def add(arm: str, ms: list[dict[str, Any]]) -> None:
        for st in [*STAGES, "driver"]:
            out.append({"arm": arm, "stage": st,
                        "wall_s": float(sum(m.get(f"{st}_s", 0.0) for m in ms)),
                        "cpu_s": float(sum(m.get(f"{st}_cpu_s", 0.0) for m in ms))})
        out.append({"arm": arm, "stage": "total",
                    "wall_s": float(sum(m.get("wall_s", 0.0) for m in ms)),
                    "cpu_s": float(sum(m.get("cpu_s", 0.0) for m in ms))})

    for name, ms in shared.items():
        add(f"{name} (gen 0)", [m for m in ms if m["generation"] == 0])
    for arm, ms in metrics.items():
        add(arm, [m for m in ms if m["generation"] > 0])
    return out


def _ci(d: Any, fmt: str = "{:+.1f}") -> str:
    import numpy as np

    if d.n < 2 or not np.isfinite(d.lo):
        return f"{fmt.format(d.mean)} (n={d.n})" if d.n else "-"
    mark = " **resolved**" if d.resolved else ""
    return f"{fmt.format(d.mean)} [{fmt.format(d.lo)}, {fmt.format(d.hi)}]{mark}"


def comparison_summary(name: str, curves: list[dict[str, Any]], costs: list[dict[str, Any]], *,
                       budget: int, generations: int, target: float | None = None,
                       noise_floor: dict[str, Any] | None = None,
                       plot: str = "learning_curves.png", pool: bool = False,
                       stability: dict[str, dict[str, Any]] | None = None) -> str:
    """The comparison's markdown summary: per arm (mean over replicas) accuracy, hit rates and
    costs; the paired differences between arms with 95% intervals and whether they resolve;
    the noise floor; and a plain verdict. ``stability``: each run's final-model MD
    stability record (stages.stability) by run name, paired across replicas like the MAE."""
    import numpy as np

    arms = list(dict.fromkeys(r["arm"] for r in curves))
    reps = sorted({r["replica"] for r in curves})
    total = {c["arm"]: c for c in costs if c["stage"] == "total"}
    lines = [f"# Comparison {name}", "",
             f"{len(arms)} arms x {len(reps)} replica(s), {generations} generations planned, "
             f"{budget} labels per generation. Replica r of every arm shares r's seeds; "
             + ("in this pool (retrospective) comparison each replica has its own initial set "
                "and test split, and a label is a look-up in the pool (counted as one DFT "
                "label)." if pool else "generation 0 and the held-out test set (frames of test "
                "walkers no model ever trains on) are shared by all replicas."),
             "Differences are A - B, paired replica by replica: mean and 95% t-interval over "
             "replicas; **resolved** when the interval excludes 0.", "",
             "| arm | rule | replicas | gens | labels (trained on) | "
             "F MAE meV/Å gen 0 → last (mean ± sd) | "
             "±95% test CI (last) | E MAE meV/atom (last) | hit rate rel / abs | base rate abs "
             "| signal AUROC test (last) | wall s | CPU s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    rows, hit_abs = _arm_rows(curves, total)
    lines += rows
    shared = [c for c in costs if c["stage"] == "total" and c["arm"].endswith("(gen 0)")]
    for c in shared:
        lines.append(f"| {c['arm']} | - | - | 0 | | | | | | | | {c['wall_s']:.0f} | "
                     f"{c['cpu_s']:.0f} |")
    lines += ["", "Labels: DFT labels paid for (test set excluded); trained on: the frames the "
              "last backbone trained on (fewer where an arm holds a calibration share out of "
              "backbone training: the PROBE arm, or select.hold_out).",
              "", "Hit rate: fraction of an arm's new labels whose true error under the model "
              "that picked them exceeds generation 0's threshold (rel) or "
              "select.hit_threshold_force_rmse_eV_A (abs); base rate: the same fraction over "
              "all candidates (known in a pool). Wall s: the run's own generations (runs share "
              "the workers); CPU s: its tasks plus its driver thread (`costs.csv`).", ""]
    lines += test_precision_lines(curves)
    unbiased = [a for a in arms if any(r.get("unbiased_selection") for r in curves
                                       if r["arm"] == a)]
    for a in unbiased:
        if np.isfinite(hit_abs[a]) and hit_abs[a] >= 0.95:
            lines += [f"Note: {a} (a selection blind to the errors) has an absolute hit rate of "
                      f"{hit_abs[a]:.2f}: the threshold is below almost every candidate's error, "
                      "so no hit rate here says anything about a strategy; raise "
                      "select.hit_threshold_force_rmse_eV_A.", ""]
    lines += _tail_table(curves)
    if len(arms) >= 2:
        lines += _paired_section(curves, target)
        lines += _yardstick_section(curves)
        lines += _oracle_section(curves)
        lines += _tax_section(curves)
    if stability:
        lines += _stability_section(curves, stability)
    if noise_floor:
        m = noise_floor["force_mae_meV_A"]
        lines += ["## Noise floor", "",
                  f"{noise_floor['run']}'s final training set ({noise_floor['labels']} labels, "
                  f"generation {noise_floor['generation']}, backbone.retrain: "
                  f"{noise_floor.get('retrain', '?')}) trained {len(m)} times with different "
                  f"seeds: test force MAE {', '.join(f'{v:.1f}' for v in m)} meV/Å (sd "
                  f"{noise_floor['sd_meV_A']:.1f}, range {noise_floor['range_meV_A']:.1f}). "
                  f"A difference between strategies smaller than about "
                  f"{noise_floor['range_meV_A']:.1f} meV/Å at one label count is within the "
                  "training noise of a single run: this comparison cannot detect it from one "
                  "replica; paired replicas average it down by about 1/sqrt(replicas).", ""]
    lines += [f"Learning curves: `{plot}` (CSV: `learning_curves.csv`, with each point's 95% "
              "test interval); costs per stage: `costs.csv`; each run's audits: "
              "`arms/<run>/audits/`.", ""]
    return "\n".join(lines)


def test_precision(curves: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Half-width of each learning-curve point's 95% bootstrap interval of the test force MAE,
    as a fraction of that MAE: mean, worst and the run/generation of the worst point (None when
    no point has an interval)."""
    import numpy as np

    pts = [(0.5 * (r["force_mae_hi_meV_A"] - r["force_mae_lo_meV_A"]) / r["force_mae_meV_A"], r)
           for r in curves
           if all(np.isfinite(r.get(k, np.nan)) for k in
                  ("force_mae_lo_meV_A", "force_mae_hi_meV_A", "force_mae_meV_A"))
           and r["force_mae_meV_A"] > 0]
    if not pts:
        return None
    worst, wr = max(pts, key=lambda p: p[0])
    return {"n": len(pts), "mean": float(np.mean([p[0] for p in pts])), "max": float(worst),
            "worst_run": wr["run"], "worst_generation": int(wr["generation"])}


def test_precision_lines(curves: list[dict[str, Any]], limit: float = 0.05) -> list[str]:
    """The summary's sentence on how precisely the test set measures each point."""
    p = test_precision(curves)
    if p is None:
        return []
    head = (f"Test-set precision: over the {p['n']} learning-curve points the 95% bootstrap "
            f"interval of the test force MAE (over test frames) spans ±{100 * p['mean']:.1f}% of "
            f"the MAE on average and ±{100 * p['max']:.1f}% at worst ({p['worst_run']}, "
            f"generation {p['worst_generation']}): ")
    if p["max"] <= limit:
        return [head + f"every point is within ±{100 * limit:.0f}%.", ""]
    return [head + f"wider than ±{100 * limit:.0f}% there; a larger test set "
            "(initial.test_size, or more pool frames in test) would narrow it as "
            "1/sqrt(frames).", ""]


def _arm_rows(curves: list[dict[str, Any]], total: dict[str, dict[str, Any]]
              ) -> tuple[list[str], dict[str, float]]:
    """The summary table's row per arm (means over its replicas), and each arm's absolute
    hit rate."""
    import numpy as np

    lines: list[str] = []
    hit_abs: dict[str, float] = {}
    base_abs: dict[str, float] = {}
    for arm in dict.fromkeys(r["arm"] for r in curves):
        mine = [r for r in curves if r["arm"] == arm]
        runs = list(dict.fromkeys(r["run"] for r in mine))
        ends = [max((r for r in mine if r["run"] == run), key=lambda r: r["generation"])
                for run in runs]
        starts = [min((r for r in mine if r["run"] == run), key=lambda r: r["generation"])
                  for run in runs]
        later = [r for r in mine if r["generation"] > 0]

        def mean(key: str, rs: list[dict[str, Any]]) -> float:
            v = [r[key] for r in rs if np.isfinite(r[key])]
            return float(np.mean(v)) if v else float("nan")

        f_end = [r["force_mae_meV_A"] for r in ends]
        sd = f" ± {np.std(f_end, ddof=1):.1f}" if len(f_end) > 1 else ""
        half = mean("force_mae_hi_meV_A", ends) - mean("force_mae_lo_meV_A", ends)
        hit_abs[arm], base_abs[arm] = mean("hit_rate_abs", later), mean("hit_base_rate_abs",
                                                                         later)
        cost = [total.get(run, {}) for run in runs]
        auc = mean("signal_auroc_test", ends)
        trained = mean("train_frames", [r for r in ends if r.get("train_frames", -1) >= 0])

        def num(v: float, f: str = "{:.2f}") -> str:
            return f.format(v) if np.isfinite(v) else "-"

        lines.append(
            f"| {arm} | {ends[0]['rule']} | {len(runs)} | {min(r['generation'] for r in ends)} | "
            f"{num(mean('labels', ends), '{:.0f}')} ({num(trained, '{:.0f}')}) | "
            f"{mean('force_mae_meV_A', starts):.1f} → "
            f"{np.mean(f_end):.1f}{sd} | {num(half / 2, '±{:.1f}')} | "
            f"{mean('energy_mae_meV_atom', ends):.2f} | {num(mean('hit_rate', later))} / "
            f"{num(hit_abs[arm])} | {num(base_abs[arm])} | {num(auc)} | "
            f"{sum(c.get('wall_s', 0.0) for c in cost):.0f} | "
            f"{sum(c.get('cpu_s', 0.0) for c in cost):.0f} |")
    return lines, hit_abs


def _paired_section(curves: list[dict[str, Any]], target: float | None) -> list[str]:
    import numpy as np

    t = paired_tables(curves, target)
    pairs = list(t["aulc"])
    head = " | ".join(f"{a} − {b}" for a, b in pairs)
    lines = ["## Paired differences", "",
             "Test force MAE (meV/Å), A − B at each generation's label count (negative: A is "
             "more accurate):", "", f"| gen | labels | {head} |",
             "|---|---|" + "---|" * len(pairs)]
    for g in t["generations"]:
        if g == 0:
            continue
        cells = " | ".join(_ci(t["at_labels"][p][g]) for p in pairs)
        lines.append(f"| {g} | {t['labels_at'][g]:.0f} | {cells} |")
    lo, hi = t["aulc_range"]
    lines += ["", f"Area under the learning curve: mean log10(force MAE / meV/Å) over "
              f"{lo:.0f}-{hi:.0f} labels (lower is better; a difference of -0.04 is about 10% "
              "lower MAE throughout):", ""]
    for a, b in pairs:
        lines.append(f"- {t['aulc'][(a, b)].verdict(a, b, '')}")
    lines += ["", f"Labels needed to reach a test force MAE of {t['target']:.1f} meV/Å "
              "(replicas that never reach it are left out):", ""]
    for a in t["arms"]:
        v = [x for x in t["to_target_values"][a] if np.isfinite(x)]
        lines.append(f"- {a}: " + (f"{np.mean(v):.0f} labels (mean of {len(v)} of "
                                   f"{len(t['replicas'])} replicas)" if v else "never reached"))
    for a, b in pairs:
        lines.append(f"- {t['to_target'][(a, b)].verdict(a, b, 'labels')}")
    lines += ["", "## Verdict", "",
              "The verdict rests on the area under the learning curve of the test force MAE "
              "(in distribution); the tails, the stress set and the share of the oracle's gain "
              "follow below it.", ""]
    g_last = max(t["generations"])
    last = {a: [float(r["force_mae_meV_A"]) for r in curves
                if r["arm"] == a and int(r["generation"]) == g_last] for a in t["arms"]}
    last = {a: float(np.mean(v)) for a, v in last.items() if v}
    if last:
        best = min(last, key=last.get)
        lines.append(f"Lowest test force MAE at generation {g_last}: {best} "
                     f"({last[best]:.1f} meV/Å, mean over replicas); the paired intervals "
                     "above say whether that is a difference or noise, and the verdict "
                     "rests on the area under the learning curve.")
        lines.append("")
    wins = [a for a in t["arms"] if all(
        (t["aulc"][p].resolved and ((p[0] == a) == (t["aulc"][p].mean < 0)))
        for p in pairs if a in p)]
    resolved = [p for p in pairs if t["aulc"][p].resolved]
    n = len(t["replicas"])
    if wins:
        a = wins[0]
        lines.append(f"**{a}** has a lower area under the learning curve than every other arm, "
                     f"and each paired interval ({n} replicas) resolves it.")
    elif resolved:
        lines.append("No arm beats every other; resolved by the intervals: " + "; ".join(
            f"{(a if t['aulc'][(a, b)].mean < 0 else b)} better than "
            f"{(b if t['aulc'][(a, b)].mean < 0 else a)}" for a, b in resolved) + ".")
    else:
        widths = [t["aulc"][p].hi - t["aulc"][p].lo for p in pairs
                  if np.isfinite(t["aulc"][p].hi)]
        wide = widths and max(widths) > 0.04
        lines.append("No difference between arms is resolved" + (
            f" with {n} replicas: the intervals are wide (up to {max(widths):.3f} in mean "
            "log10 MAE), so this comparison needs more power (replicas, labels, a lower noise "
            "floor) before it can name a winner." if wide else
            ": the intervals are tight, so the arms are equally good here (no winner)."
            if widths else " (fewer than 2 paired replicas: no interval)."))
    lines.append("")
    return lines


def _finite_mean(values: list[float]) -> float:
    import numpy as np

    v = [x for x in values if np.isfinite(x)]
    return float(np.mean(v)) if v else float("nan")


def _tail_table(curves: list[dict[str, Any]]) -> list[str]:
    """Per arm, at each run's last generation (mean over replicas): the tails of the test
    set and the stress set's errors."""
    arms = list(dict.fromkeys(r["arm"] for r in curves))
    ends = {a: [max((r for r in curves if r["run"] == run), key=lambda r: r["generation"])
                for run in dict.fromkeys(r["run"] for r in curves if r["arm"] == a)]
            for a in arms}
    cols = ("force_rmse_p95_meV_A", "force_rmse_max_meV_A", "stress_force_mae_meV_A",
            "stress_force_rmse_p95_meV_A", "stress_force_rmse_max_meV_A")
    means = {a: {k: _finite_mean([float(r.get(k, float("nan"))) for r in ends[a]])
                 for k in cols} for a in arms}

    def cell(v: float) -> str:
        return f"{v:.1f}" if v == v else "-"

    lines = ["## Tails and stress set", "",
             "At the last generation, mean over replicas (meV/Å): the 95th percentile and the "
             "maximum of the per-frame force RMSE on the test set, and on the stress set "
             "(pool.stress_key: conditions beyond the candidates'; '-' without one) its force "
             "MAE, p95 and maximum.", "",
             "| arm | test p95 | test max | stress MAE | stress p95 | stress max |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {a} | " + " | ".join(cell(means[a][k]) for k in cols) + " |" for a in arms]
    return lines + [""]


def _yardstick_section(curves: list[dict[str, Any]]) -> list[str]:
    """Paired AULC differences on every yardstick beyond the test force MAE."""
    import numpy as np

    lines = ["## Other yardsticks", "",
             "Area under the learning curve (mean log10 of the yardstick over the common label "
             "range), A − B paired by replica; the verdict above rests on the test force MAE, "
             "these say whether the tails and the stress set agree:", ""]
    any_rows = False
    for key, what in YARDSTICKS[1:]:
        if not any(np.isfinite(r.get(key, np.nan)) and r.get(key, 0) > 0 for r in curves):
            continue
        t = paired_tables(curves, key=key)
        lines.append(f"- {what}:")
        for a, b in t["aulc"]:
            lines.append(f"  - {t['aulc'][(a, b)].verdict(a, b, '')}")
        any_rows = True
    return lines + [""] if any_rows else []


def oracle_recovery(curves: list[dict[str, Any]], key: str = "force_mae_meV_A",
                    seed: int = 0) -> dict[str, Any] | None:
    """Each arm's fraction of the oracle's AULC gain over random, with its bootstrap interval
    over replicas (paired.recovered_fraction): {"control", "ceiling", "key", "gain" (the
    paired AULC difference control - ceiling), "arms": {arm: (fraction, lo, hi, n)}}; None without an arm whose rule is oracle and one whose rule is
    random (the first of each is used)."""
    import numpy as np

    from .paired import paired_difference, recovered_fraction

    rule = {}
    for r in curves:
        rule.setdefault(r["arm"], r["rule"])
    control = next((a for a, ru in rule.items() if ru == "random"), None)
    ceiling = next((a for a, ru in rule.items() if ru == "oracle"), None)
    if control is None or ceiling is None:
        return None
    t = paired_tables(curves, key=key)
    vals = t["aulc_values"]
    rng = np.random.default_rng(seed)
    return {"control": control, "ceiling": ceiling, "key": key,
            "gain": paired_difference(vals[control], vals[ceiling]),
            "arms": {a: recovered_fraction(vals[control], vals[a], vals[ceiling], rng)
                     for a in t["arms"] if a not in (control, ceiling)}}


def _oracle_section(curves: list[dict[str, Any]]) -> list[str]:
    import numpy as np

    head = None
    lines: list[str] = []
    for key, what in YARDSTICKS:
        if not any(np.isfinite(r.get(key, np.nan)) and r.get(key, 0) > 0 for r in curves):
            continue
        rec = oracle_recovery(curves, key)
        if rec is None:
            return []
        head = head or ["## Share of the oracle's gain", "",
                        f"The fraction of {rec['ceiling']}'s AULC gain over {rec['control']} "
                        "that each arm recovers, mean(random − arm) / mean(random − oracle) "
                        "over replicas, with a 95% bootstrap interval over replicas (1: as good "
                        "as the oracle; 0: no better than random; below 0: worse than random; "
                        "'-': the oracle gained nothing on that yardstick):", ""]
        gain = rec["gain"]
        lines.append(f"- {what}: " + "; ".join(
            f"{a} {f:+.2f} [{lo:+.2f}, {hi:+.2f}] (n={n})" if np.isfinite(f) else f"{a} -"
            for a, (f, lo, hi, n) in rec["arms"].items())
            + f" (the oracle's own gain, {rec['control']} − {rec['ceiling']}: "
            + _ci(gain, "{:+.3f}") + (
                "" if gain.resolved and gain.mean > 0 else
                "; the oracle is worse than random here, so these shares mean little"
                if gain.resolved else "; not a resolved gain, so these shares mean little")
            + ")")
    return head + lines + [""] if head else []


def _pays_tax(curves: list[dict[str, Any]], arm: str) -> bool:
    """Whether ``arm``'s backbone trained on fewer frames than the labels it paid for."""
    last = [r for r in curves if r["arm"] == arm and r.get("generation", 0) > 0
            and r.get("train_frames", -1) >= 0]
    return bool(last) and all(r["train_frames"] < r["labels"] for r in last)


def data_tax(curves: list[dict[str, Any]], key: str = "force_mae_meV_A", seed: int = 0
             ) -> list[dict[str, Any]]:
    """What the hold-out (the PROBE arm's data tax) costs by itself, against how much an
    arm that pays it loses to the same rule without it. For each rule with a taxed and an
    untaxed arm (e.g. random_hold and random): the tax, AULC(taxed) − AULC(untaxed), paired
    over replicas; and, with a taxed PROBE arm and an untaxed random arm, the share of
    PROBE's AULC loss to random that the tax explains, mean(taxed − untaxed) /
    mean(probe − random), with a bootstrap interval (NaN when PROBE does not lose)."""
    import numpy as np

    from .paired import paired_difference, recovered_fraction

    t = paired_tables(curves, key=key)
    vals, arms = t["aulc_values"], t["arms"]
    rule = {r["arm"]: r["rule"] for r in curves}
    taxed = {a: _pays_tax(curves, a) for a in arms}
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
        rec = {"arm": a, "base": base, "key": key,
               "tax": paired_difference(vals[a], vals[base])}
        if probe is not None and random is not None:
            rec["probe"], rec["loss"] = probe, paired_difference(vals[probe], vals[random])
            # mean(a − base) / mean(probe − random), as a recovered fraction of negated values
            rec["share"] = recovered_fraction([-x for x in vals[base]], [-x for x in vals[a]],
                                              [-x for x in vals[probe]], rng)
        out.append(rec)
    return out


def _tax_section(curves: list[dict[str, Any]]) -> list[str]:
    import numpy as np

    lines: list[str] = []
    for key, what in YARDSTICKS:
        if not any(np.isfinite(r.get(key, np.nan)) and r.get(key, 0) > 0 for r in curves):
            continue
        for rec in data_tax(curves, key):
            text = (f"- {what}: {rec['arm']} − {rec['base']} "
                    + _ci(rec["tax"], "{:+.3f}"))
            if "share" in rec:
                f, lo, hi, n = rec["share"]
                text += (f"; {rec['probe']} − random " + _ci(rec["loss"], "{:+.3f}")
                         + ("; share of that loss the tax explains "
                            f"{f:+.2f} [{lo:+.2f}, {hi:+.2f}] (n={n})" if np.isfinite(f)
                            else "; PROBE does not lose to random here, no share to explain"))
            lines.append(text)
    if not lines:
        return []
    return ["## The data tax", "",
            "What keeping initial.calibration_fraction of every batch out of backbone training "
            "costs by itself (an arm with select.hold_out against the same rule without it; "
            "AULC, mean log10 of the yardstick, paired over replicas; positive: the tax hurts), "
            "beside the PROBE arm's loss to random; the share is mean(tax) / mean(PROBE − "
            "random) with a 95% bootstrap interval over replicas:", "", *lines, ""]


def _stability_section(curves: list[dict[str, Any]], stability: dict[str, dict[str, Any]]
                       ) -> list[str]:
    """Per arm: the fraction of the final model's stability walkers that stayed physical and
    the time to the first failure (mean over replicas); paired differences between arms."""
    import itertools

    import numpy as np

    from .paired import paired_difference

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
        return []
    any_rec = next(iter(v for v in stability.values() if v))

    def series(kind: str, arm: str) -> list[float]:
        return [val.get((kind, arm, r), float("nan")) for r in reps]

    lines = ["## MD stability of the final models", "",
             f"{any_rec['walkers']} walkers on each run's last backbone at "
             f"{any_rec['temperature_K']:g} K for {any_rec['run_fs']:g} fs (no probe), checked "
             "by the explore section's rules (atoms too close, a fragment flying off, bonds "
             "broken or formed): the fraction that stayed physical, and the time to the first "
             "failure (the run length where none failed); mean over replicas.", "",
             "| arm | stable fraction | first failure fs |", "|---|---|---|"]
    for a in arms:
        f, t = series("frac", a), series("first", a)
        ok = [x for x in f if np.isfinite(x)]
        lines.append(f"| {a} | " + (f"{np.mean(ok):.2f}" if ok else "-") + " | "
                     + (f"{np.nanmean(t):.0f}" if ok else "-") + " |")
    lines += ["", "Paired A − B over replicas (stable fraction: higher is better):", ""]
    for a, b in itertools.combinations(arms, 2):
        d = paired_difference(series("frac", a), series("frac", b))
        e = paired_difference(series("first", a), series("first", b))
        lines.append(f"- {a} − {b}: stable fraction {_ci(d, '{:+.2f}')}; first failure "
                     f"{_ci(e, '{:+.0f}')} fs")
    return lines + [""]
