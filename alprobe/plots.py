"""Figures, through matplotlib's object API (Figure + Agg canvas: no pyplot state, safe from
several threads): audit plots, atom-importance pictures, learning curves."""

from __future__ import annotations

from collections.abc import Set as AbstractSet
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from .metrics import ece, error_by_decile, reliability_diagram, risk_coverage

__all__ = ["draw_importance", "plot_audit", "plot_learning_curves"]


def plot_audit(signals: dict[str, np.ndarray], e: np.ndarray, tau: float, path_prefix: str,
               probabilities: AbstractSet[str] = frozenset()) -> list[str]:
    """Write the audit figures (Agg backend, no pyplot state) and return their paths.

    ``<prefix>_risk_coverage.png``: selective risk with loss = e vs coverage for every signal
    plus the oracle; ``<prefix>_reliability.png``: reliability diagram (10 bins) of the
    ``probabilities`` signals with the diagonal; ``<prefix>_deciles.png``: mean error per
    confidence decile (least to most trusted) for every signal, with tau marked.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    e = np.asarray(e, dtype=float)
    paths = []

    def save(fig: Figure, suffix: str) -> None:
        FigureCanvasAgg(fig)
        fig.tight_layout()
        path = f"{path_prefix}_{suffix}.png"
        fig.savefig(path, dpi=120)
        paths.append(path)

    fig = Figure(figsize=(5.5, 4))
    ax = fig.add_subplot()
    for name, s in signals.items():
        cov, risk = risk_coverage(s, e)
        ax.plot(cov, risk, label=f"{name} (AURC {risk.mean():.3g})")
    cov, risk = risk_coverage(-e, e)
    ax.plot(cov, risk, "k--", label=f"oracle (AURC {risk.mean():.3g})")
    ax.set_xlabel("coverage (fraction kept, most trusted first)")
    ax.set_ylabel("selective risk (mean error of kept)")
    ax.set_xlim(0, 1)
    ax.legend(fontsize=8)
    save(fig, "risk_coverage")

    fig = Figure(figsize=(4.5, 4.5))
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], "k:", label="perfect calibration")
    for name in signals:
        if name in probabilities:
            d = reliability_diagram(signals[name], e, tau)
            m = d["count"] > 0
            ax.plot(d["p_mean"][m], d["frac_reliable"][m], "o-",
                    label=f"{name} (ECE {ece(signals[name], e, tau):.3f})")
    if not probabilities:
        ax.text(0.5, 0.5, "no probability signals", ha="center", va="center")
    ax.set_xlabel("predicted P(reliable)")
    ax.set_ylabel(f"observed fraction with error <= {tau:g}")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    save(fig, "reliability")

    fig = Figure(figsize=(5.5, 4))
    ax = fig.add_subplot()
    for name, s in signals.items():
        d = error_by_decile(s, e)
        ax.plot(np.arange(1, len(d["e_mean"]) + 1), d["e_mean"], "o-", label=name)
    ax.axhline(tau, color="k", ls=":", label=f"tau = {tau:g}")
    ax.set_xlabel("confidence decile (1 = least trusted)")
    ax.set_ylabel("mean error")
    ax.legend(fontsize=8)
    save(fig, "deciles")
    return paths


def draw_importance(atoms: Atoms, importance: np.ndarray, path: str | Path, title: str = "") -> None:
    """Draw a molecule (projection on its two main axes) with atoms coloured by importance."""
    from ase.data import covalent_radii
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    pos = atoms.positions - atoms.positions.mean(0)
    axes = np.linalg.svd(pos, full_matrices=False)[2][:2]
    xy = pos @ axes.T
    r = covalent_radii[atoms.numbers]
    fig = Figure(figsize=(4.5, 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    d = np.linalg.norm(pos[:, None] - pos[None], axis=-1)
    for i, j in zip(*np.nonzero(np.triu(d < 1.2 * (r[:, None] + r[None]), 1))):
        ax.plot(*xy[[i, j]].T, color="0.6", lw=2, zorder=1)
    sc = ax.scatter(*xy.T, s=900 * r, c=importance, cmap="viridis", edgecolors="k", zorder=2,
                    vmin=0, vmax=max(float(np.max(importance)), 1e-9))
    for (x, y), s in zip(xy, atoms.get_chemical_symbols()):
        ax.annotate(s, (x, y), ha="center", va="center", color="w", fontsize=8, zorder=3)
    fig.colorbar(sc, ax=ax, label="attention received (sums to 1)")
    ax.set_aspect("equal")
    ax.margins(0.25)
    ax.axis("off")
    ax.set_title(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def plot_learning_curves(rows: list[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """Test force MAE (meV/A, with each point's 95% interval over test frames) and energy MAE
    (meV/atom) against DFT labels: thin lines per replica, bold the mean of an arm's replicas."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.2))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    arms = list(dict.fromkeys(r["arm"] for r in rows))
    for i, arm in enumerate(arms):
        color = f"C{i % 10}"
        mine = [r for r in rows if r["arm"] == arm]
        runs = list(dict.fromkeys(r["run"] for r in mine))
        for run in runs:
            rs = sorted((r for r in mine if r["run"] == run), key=lambda r: r["generation"])
            x = [r["labels"] for r in rs]
            f = np.array([r["force_mae_meV_A"] for r in rs])
            lo = np.array([r["force_mae_lo_meV_A"] for r in rs])
            hi = np.array([r["force_mae_hi_meV_A"] for r in rs])
            err = np.vstack([f - lo, hi - f]) if np.isfinite(lo).all() else None
            alpha = 0.35 if len(runs) > 1 else 1.0
            axes[0].errorbar(x, f, yerr=err, color=color, alpha=alpha, lw=1, marker="o",
                             ms=3, capsize=2, label=None if len(runs) > 1 else arm)
            axes[1].plot(x, [r["energy_mae_meV_atom"] for r in rs], color=color, alpha=alpha,
                         lw=1, marker="o", ms=3, label=None if len(runs) > 1 else arm)
        if len(runs) > 1:
            gens = sorted({r["generation"] for r in mine})
            at = [[r for r in mine if r["generation"] == g] for g in gens]
            x = [np.mean([r["labels"] for r in a]) for a in at]
            for ax, key in zip(axes, ("force_mae_meV_A", "energy_mae_meV_atom")):
                ax.plot(x, [np.mean([r[key] for r in a]) for a in at], color=color, lw=2.5,
                        label=f"{arm} (mean of {len(runs)})")
    for ax, lab in zip(axes, ("test force MAE (meV/Å)", "test energy MAE (meV/atom)")):
        ax.set_xlabel("DFT labels used (training pool, test set excluded)")
        ax.set_ylabel(lab)
        ax.set_yscale("log")
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=8)
    fig.suptitle(title + " (bars: 95% bootstrap interval over test frames)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return Path(path)
