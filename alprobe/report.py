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
    ("hit rate", "hit_rate", "{:.2f}"),
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
    this generation's probe on the held-out test set; "hit rate" the fraction of the new labels
    whose true error exceeded generation 0's unreliability threshold.
    """
    from .ledger import Ledger

    ledger = Ledger(directory, readonly=True)
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


# ----- comparisons of arms --------------------------------------------------------------------

def learning_curve_rows(metrics: dict[str, list[dict[str, Any]]],
                        rules: dict[str, str]) -> list[dict[str, Any]]:
    """One row per arm and generation: DFT labels used (training pool, test set excluded),
    test errors (meV/A, meV/atom), hit rate, the AUROC of the arm's own signal, wall and CPU s.
    Generation 0 is the shared start (its cost is reported once, not per arm)."""
    rows = []
    for arm, ms in metrics.items():
        for m in ms:
            rows.append({
                "arm": arm, "rule": rules[arm], "generation": int(m["generation"]),
                "labels": int(m["labels"]), "dft_calls": int(m.get("dft_calls", m["labels"])),
                "force_mae_meV_A": 1000 * float(m["force_mae_eV_A"]),
                "force_rmse_meV_A": 1000 * float(m["force_rmse_eV_A"]),
                "energy_mae_meV_atom": 1000 * float(m["energy_mae_eV_per_atom"]),
                "hit_rate": float(m.get("hit_rate", float("nan"))),
                "signal_auroc_test": float(m.get("signal_auroc_test", float("nan"))),
                "signal_auroc_new": float(m.get("signal_auroc_new", float("nan"))),
                "wall_s": float(m.get("wall_s", float("nan"))),
                "cpu_s": float(m.get("cpu_s", float("nan")))})
    return rows


def cost_rows(metrics: dict[str, list[dict[str, Any]]],
              shared: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Wall (driver, per stage) and CPU seconds (tasks, per account) of each arm, summed over
    its own generations (>= 1), plus one row for the shared generation 0."""

    stages = ("explore", "deviation", "select", "label", "train", "committee", "probe",
              "evaluate", "audit")
    out = []

    def add(arm: str, ms: list[dict[str, Any]]) -> None:
        for st in [*stages, "driver"]:
            out.append({"arm": arm, "stage": st,
                        "wall_s": float(sum(m.get(f"{st}_s", 0.0) for m in ms)),
                        "cpu_s": float(sum(m.get(f"{st}_cpu_s", 0.0) for m in ms))})
        out.append({"arm": arm, "stage": "total",
                    "wall_s": float(sum(m.get("wall_s", 0.0) for m in ms)),
                    "cpu_s": float(sum(m.get("cpu_s", 0.0) for m in ms))})

    add("shared (gen 0)", [m for m in shared if m["generation"] == 0])
    for arm, ms in metrics.items():
        add(arm, [m for m in ms if m["generation"] > 0])
    return out


def plot_learning_curves(rows: list[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """Test force MAE (meV/A) and energy MAE (meV/atom) vs DFT labels, one line per arm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .audit import PLOT_LOCK

    arms = list(dict.fromkeys(r["arm"] for r in rows))
    rules = list(dict.fromkeys(r["rule"] for r in rows))
    with PLOT_LOCK:
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        seen: dict[str, int] = {}
        for arm in arms:
            rs = sorted((r for r in rows if r["arm"] == arm), key=lambda r: r["generation"])
            rule = rs[0]["rule"]
            style = ["-", "--", ":", "-."][seen.get(rule, 0) % 4]
            seen[rule] = seen.get(rule, 0) + 1
            color = f"C{rules.index(rule)}"
            x = [r["labels"] for r in rs]
            for ax, key in zip(axes, ("force_mae_meV_A", "energy_mae_meV_atom")):
                ax.plot(x, [r[key] for r in rs], style, marker="o", color=color, label=arm)
        for ax, lab in zip(axes, ("test force MAE (meV/Å)", "test energy MAE (meV/atom)")):
            ax.set_xlabel("DFT labels used (training pool, test set excluded)")
            ax.set_ylabel(lab)
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=8)
        fig.suptitle(title)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
    return Path(path)


def comparison_summary(name: str, curves: list[dict[str, Any]], costs: list[dict[str, Any]],
                       groups: dict[str, str], *, budget: int, generations: int,
                       plot: str = "learning_curves.png") -> str:
    """A short markdown summary: which arm reached which accuracy with how many labels, the
    winner and its margin, and whether that margin exceeds the spread between replicas."""
    import numpy as np

    arms = list(dict.fromkeys(r["arm"] for r in curves))
    last = {}
    for arm in arms:
        rs = sorted((r for r in curves if r["arm"] == arm), key=lambda r: r["generation"])
        last[arm] = rs[-1]
    total = {c["arm"]: c for c in costs if c["stage"] == "total"}
    lines = [f"# Comparison {name}", "",
             f"{len(arms)} arms, {generations} generations planned, budget {budget} DFT labels "
             "per generation. Generation 0 (initial labels, test set, backbone 0, probe 0) is "
             "shared byte for byte; test errors are on the same held-out test set.", "",
             "| arm | rule | gens | labels | F MAE meV/Å (gen 0 → last) | E MAE meV/atom "
             "(gen 0 → last) | mean hit rate | signal AUROC test (last) | wall s | CPU s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for arm in arms:
        rs = sorted((r for r in curves if r["arm"] == arm), key=lambda r: r["generation"])
        first, end = rs[0], rs[-1]
        hits = [r["hit_rate"] for r in rs if r["generation"] > 0 and r["hit_rate"] == r["hit_rate"]]
        t = total.get(arm, {})
        hit = f"{np.mean(hits):.2f}" if hits else "-"
        auc = end["signal_auroc_test"]
        auc_s = f"{auc:.2f}" if auc == auc else "-"
        lines.append(
            f"| {arm} | {end['rule']} | {end['generation']} | {end['labels']} | "
            f"{first['force_mae_meV_A']:.1f} → {end['force_mae_meV_A']:.1f} | "
            f"{first['energy_mae_meV_atom']:.2f} → {end['energy_mae_meV_atom']:.2f} | "
            f"{hit} | {auc_s} | {t.get('wall_s', float('nan')):.0f} | "
            f"{t.get('cpu_s', float('nan')):.0f} |")
    sh = total.get("shared (gen 0)")
    gen0 = [r["labels"] for r in curves if r["generation"] == 0]
    if sh and gen0:
        lines.append(f"| shared gen 0 | - | 0 | {gen0[0]} | | | | | {sh['wall_s']:.0f} | "
                     f"{sh['cpu_s']:.0f} |")
    lines += ["", "Wall s: the arm's own generations (arms ran at the same time, sharing the "
              "workers). CPU s: user + system time of its tasks (MD, committee scoring, DFT, "
              "training, probe, evaluation, audit) plus the arm's driver thread (selection, ledger, "
              "audit tables and plots); `costs.csv` splits both by stage. Hit rate: fraction of an arm's new labels "
              "whose true error, under the model that picked them, exceeds generation 0's "
              "unreliability threshold.", ""]
    done = [a for a in arms if last[a]["generation"] > 0]
    stopped = [a for a in done if last[a]["generation"] < generations]
    if len(done) >= 2:
        G = min(last[a]["generation"] for a in done)  # compare where every arm has been
        at = {a: next(r for r in curves if r["arm"] == a and r["generation"] == G) for a in done}
        if stopped:
            gone = ", ".join(f"{a} (at generation {last[a]['generation']})" for a in stopped)
            lines.append(f"Arms that stopped early: {gone}; the comparison below is at "
                         f"generation {G}, reached by every arm.")
        target = max(at[a]["force_mae_meV_A"] for a in done)
        lines.append(f"Accuracy every arm reached by generation {G}: test force MAE <= "
                     f"{target:.1f} meV/Å. DFT labels each arm needed to get there:")
        for a in done:
            rs = sorted((r for r in curves if r["arm"] == a), key=lambda r: r["generation"])
            hit = next(r for r in rs if r["force_mae_meV_A"] <= target + 1e-9)
            lines.append(f"- {a}: {hit['labels']} labels (generation {hit['generation']}, "
                         f"{hit['force_mae_meV_A']:.1f} meV/Å)")
        lines.append("")
        members: dict[str, list[str]] = {}
        for a in done:
            members.setdefault(groups[a], []).append(a)
        mean = {g: float(np.mean([at[a]["force_mae_meV_A"] for a in ms]))
                for g, ms in members.items()}
        spread = {g: max(at[a]["force_mae_meV_A"] for a in ms)
                  - min(at[a]["force_mae_meV_A"] for a in ms)
                  for g, ms in members.items() if len(ms) >= 2}
        ranked = sorted(members, key=lambda g: mean[g])
        name_of = {g: "/".join(ms) for g, ms in members.items()}
        if len(ranked) >= 2:
            best, runner = ranked[0], ranked[1]
            margin = mean[runner] - mean[best]
            lines.append(
                f"Lowest test force MAE at generation {G}: **{name_of[best]}** "
                f"({mean[best]:.1f} meV/Å" + (f", mean of {len(members[best])} replicas"
                                                if len(members[best]) > 1 else "")
                + f", {at[members[best][0]]['labels']} labels), ahead of the next strategy, "
                f"{name_of[runner]} ({mean[runner]:.1f} meV/Å), by {margin:.1f} meV/Å "
                f"({100 * margin / mean[runner]:.0f}%).")
            if spread:
                worst = max(spread.values())
                names = ", ".join(f"{name_of[g]}: {v:.1f}" for g, v in spread.items())
                verdict = "larger than" if margin > worst else "not larger than"
                lines.append(f"Spread between replicas of one strategy at generation {G} "
                             f"(meV/Å): {names}. The margin ({margin:.1f}) is **{verdict}** the "
                             f"largest replica spread ({worst:.1f}), so "
                             + ("the ranking is unlikely to be seed noise alone (two seeds are "
                                "a small sample: treat it as a first indication)."
                                if margin > worst else
                                "this comparison cannot tell the strategies apart."))
            else:
                lines.append("No replicas were run, so the seed spread is unknown; add an arm "
                             "with `replica: 1` to measure it before trusting the ranking.")
    lines += ["", f"Learning curves: `{plot}` (CSV: `learning_curves.csv`); costs per stage: "
              "`costs.csv`; each arm's audits: `arms/<arm>/audits/`.", ""]
    return "\n".join(lines)
