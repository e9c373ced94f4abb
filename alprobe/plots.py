"""Figures, through matplotlib's object API (Figure + canvas: no pyplot state, safe from
several threads). Each figure is drawn by one ``*_figure`` function that returns a
``matplotlib.figure.Figure``; :func:`save_png` writes it as a PNG file and :func:`svg_text`
as inline SVG for the HTML report, so a PNG and an SVG of a figure are one drawing."""

from __future__ import annotations

from collections.abc import Set as AbstractSet
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from .metrics import ece, error_by_decile, reliability_diagram, risk_coverage
from .records import ACCOUNTS, STAGES, STOP_KINDS

__all__ = ["arm_costs_figure", "audit_auroc_figure", "costs_figure", "deciles_figure",
           "draw_importance", "importance_figure", "learning_curves_figure", "plot_audit",
           "reliability_figure", "risk_coverage_figure", "save_png", "stops_figure", "svg_text",
           "trust_signal_figure"]


def save_png(fig: Any, path: str | Path, dpi: int = 100) -> Path:
    """``fig`` as a PNG file at ``path`` (Agg canvas)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=dpi)
    return Path(path)


def risk_coverage_figure(signals: dict[str, np.ndarray], e: np.ndarray) -> Any:
    """Selective risk (loss = e) against coverage for every signal, plus the oracle."""
    from matplotlib.figure import Figure

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
    fig.tight_layout()
    return fig


def reliability_figure(signals: dict[str, np.ndarray], e: np.ndarray, tau: float,
                       probabilities: AbstractSet[str] = frozenset()) -> Any:
    """Reliability diagram (10 bins) of the ``probabilities`` signals, with the diagonal."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.5, 4.5))
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], "k:", label="perfect calibration")
    for name, s in signals.items():
        if name in probabilities:
            d = reliability_diagram(s, e, tau)
            m = d["count"] > 0
            ax.plot(d["p_mean"][m], d["frac_reliable"][m], "o-",
                    label=f"{name} (ECE {ece(s, e, tau):.3f})")
    if not probabilities:
        ax.text(0.5, 0.5, "no probability signals", ha="center", va="center")
    ax.set_xlabel("predicted P(reliable)")
    ax.set_ylabel(f"observed fraction with error <= {tau:g}")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def deciles_figure(signals: dict[str, np.ndarray], e: np.ndarray, tau: float) -> Any:
    """Mean error per confidence decile (least to most trusted) for every signal, tau marked."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 4))
    ax = fig.add_subplot()
    for name, s in signals.items():
        d = error_by_decile(s, e)
        ax.plot(np.arange(1, len(d["e_mean"]) + 1), d["e_mean"], "o-", label=name)
    ax.axhline(tau, color="k", ls=":", label=f"tau = {tau:g}")
    ax.set_xlabel("confidence decile (1 = least trusted)")
    ax.set_ylabel("mean error")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_audit(signals: dict[str, np.ndarray], e: np.ndarray, tau: float, path_prefix: str,
               probabilities: AbstractSet[str] = frozenset()) -> list[str]:
    """Write the audit figures as PNGs and return their paths: ``<prefix>_risk_coverage.png``
    (:func:`risk_coverage_figure`), ``<prefix>_reliability.png`` (:func:`reliability_figure`)
    and ``<prefix>_deciles.png`` (:func:`deciles_figure`)."""
    e = np.asarray(e, dtype=float)
    figs = {"risk_coverage": risk_coverage_figure(signals, e),
            "reliability": reliability_figure(signals, e, tau, probabilities),
            "deciles": deciles_figure(signals, e, tau)}
    return [str(save_png(fig, f"{path_prefix}_{suffix}.png", dpi=120))
            for suffix, fig in figs.items()]


def importance_figure(atoms: Atoms, importance: np.ndarray, title: str = "") -> Any:
    """A molecule (projection on its two main axes) with atoms coloured by importance."""
    from ase.data import covalent_radii
    from matplotlib.figure import Figure

    pos = atoms.positions - atoms.positions.mean(0)
    axes = np.linalg.svd(pos, full_matrices=False)[2][:2]
    xy = pos @ axes.T
    r = covalent_radii[atoms.numbers]
    fig = Figure(figsize=(4.5, 4))
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
    return fig


def draw_importance(atoms: Atoms, importance: np.ndarray, path: str | Path, title: str = "") -> None:
    """:func:`importance_figure` as a PNG at ``path``."""
    save_png(importance_figure(atoms, importance, title), path, dpi=90)


def svg_text(fig: Any, name: str) -> str:
    """``fig`` as an inline ``<svg>`` element for an HTML page: text kept as text (searchable,
    drawn in the page's sans-serif font), no XML prolog or metadata, element ids salted with
    ``name`` so that several figures can share one page; ``data-figure`` carries ``name``."""
    import io
    import re

    import matplotlib
    from matplotlib.backends.backend_svg import FigureCanvasSVG

    FigureCanvasSVG(fig)
    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": name}):
        fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    text = buf.getvalue()
    text = re.sub(r"<metadata>.*?</metadata>\s*", "", text[text.index("<svg"):], flags=re.DOTALL)
    return text.replace("<svg ", f'<svg class="fig" role="img" aria-label="{name}" '
                        f'data-figure="{name}" ', 1)


#: One colour per stage / CPU account, the same in every cost figure.
_STAGE_COLORS = {"explore": "C0", "deviation": "C1", "latent": "C7", "oracle": "#bcbd22",
                 "select": "C8", "label": "C2", "train": "C3",
                 "committee": "C5", "probe": "C4", "evaluate": "C9", "audit": "C6",
                 "driver": "0.45", "other": "0.85"}


def _integer_x(*axes: Any) -> None:
    """Whole-number ticks on the x axes (generations)."""
    from matplotlib.ticker import MaxNLocator

    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _marks(n: int, size: float = 3) -> dict[str, Any]:
    """Point markers for a line of ``n`` points (none when there are many)."""
    return {"marker": "o", "ms": size} if n <= 30 else {"marker": None}


def _nan(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def _series(rows: list[dict[str, Any]], key: str) -> np.ndarray:
    return np.array([_nan(r.get(key)) for r in rows], dtype=float)


def learning_curves_figure(rows: list[dict[str, Any]], title: str = "") -> Any:
    """The learning-curve figure (one drawing for the PNG and the SVG): test force MAE (meV/Å,
    shaded: each point's 95% bootstrap interval over test frames) and energy MAE (meV/atom)
    against DFT labels, one colour per arm: with several replicas, faint lines per replica and
    a bold mean over replicas (NaN-safe). ``rows``: dicts as
    :func:`alprobe.report.learning_curve_rows` makes them (run, arm, generation, labels,
    force_mae_meV_A, force_mae_lo_meV_A, force_mae_hi_meV_A, energy_mae_meV_atom)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.0))
    axes = fig.subplots(1, 2)
    for i, arm in enumerate(dict.fromkeys(r["arm"] for r in rows)):
        color = f"C{i % 10}"
        mine = [r for r in rows if r["arm"] == arm]
        runs = list(dict.fromkeys(r["run"] for r in mine))
        many = len(runs) > 1
        for run in runs:
            rs = sorted((r for r in mine if r["run"] == run), key=lambda r: r["generation"])
            x = _series(rs, "labels")
            lo, hi = _series(rs, "force_mae_lo_meV_A"), _series(rs, "force_mae_hi_meV_A")
            if np.isfinite(lo).any():
                axes[0].fill_between(x, lo, hi, color=color, alpha=0.07 if many else 0.2, lw=0)
            kw = {"color": color, "alpha": 0.35 if many else 1.0, "lw": 1 if many else 2,
                  **_marks(len(rs), 3 if many else 5)}
            axes[0].plot(x, _series(rs, "force_mae_meV_A"), label=None if many else arm, **kw)
            axes[1].plot(x, _series(rs, "energy_mae_meV_atom"), label=None if many else arm,
                         **kw)
        if many:
            gens = sorted({r["generation"] for r in mine})
            at = [[r for r in mine if r["generation"] == g] for g in gens]
            x = [np.mean([r["labels"] for r in a]) for a in at]
            for ax, key in zip(axes, ("force_mae_meV_A", "energy_mae_meV_atom")):
                ax.plot(x, [np.nanmean(_series(a, key)) for a in at], color=color, lw=2.5,
                        label=f"{arm} (mean of {len(runs)})")
    for ax, lab in zip(axes, ("test force MAE (meV/Å)", "test energy MAE (meV/atom)")):
        ax.set_xlabel("DFT labels used (training pool, test set excluded)")
        ax.set_ylabel(lab)
        ax.set_yscale("log")
        ax.grid(alpha=0.3, which="both")
        if rows:
            ax.legend(fontsize=8)
    axes[0].set_title("force MAE; shaded: 95% interval over test frames", fontsize=9)
    axes[1].set_title("energy MAE", fontsize=9)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def trust_signal_figure(metrics: list[dict[str, Any]]) -> Any:
    """The probe's figures per generation, from metrics rows: the candidates' P(reliable)
    (median, quartile band, 10-90% dotted); the AUROC of generation g-1's signal on the frames
    picked, the random audit sample and every candidate, and of probe g on the test set (0.5:
    chance); the probe's training pool (frames)."""
    from matplotlib.figure import Figure

    g = _series(metrics, "generation")
    fig = Figure(figsize=(11, 3.4))
    ax1, ax2, ax3 = fig.subplots(1, 3)
    q = {k: _series(metrics, f"trust_q{k}") for k in (10, 25, 50, 75, 90)}
    ax1.fill_between(g, q[25], q[75], color="C0", alpha=0.25, lw=0, label="quartiles")
    ax1.plot(g, q[50], color="C0", label="median", **_marks(len(g)))
    ax1.plot(g, q[10], ":", color="C0", label="10% / 90%")
    ax1.plot(g, q[90], ":", color="C0")
    ax1.set_ylim(0, 1)
    ax1.set_ylabel("candidates' P(reliable)")
    for key, lab in (("trust_auroc_new", "picked frames (g-1's signal)"),
                     ("trust_auroc_audit", "random audit (g-1's signal)"),
                     ("trust_auroc_candidates", "all candidates (pool)"),
                     ("probe_auroc_test", "test set (probe g)")):
        y = _series(metrics, key)
        if np.isfinite(y).any():
            ax2.plot(g, y, label=lab, **_marks(len(g)))
    ax2.axhline(0.5, color="k", ls=":", lw=1, label="chance")
    ax2.set_ylim(0, 1.02)
    ax2.set_ylabel("AUROC (unreliable vs reliable)")
    ax3.bar(g, np.nan_to_num(_series(metrics, "probe_pool")), color="C2", width=0.7)
    ax3.set_ylabel("probe training pool (frames)")
    for ax, title in ((ax1, "P(reliable) of the candidates"), (ax2, "trust signal AUROC"),
                      (ax3, "probe training pool")):
        ax.set_xlabel("generation")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
    for ax in (ax1, ax2):
        ax.legend(fontsize=7)
    _integer_x(ax1, ax2, ax3)
    fig.tight_layout()
    return fig


def audit_auroc_figure(audits: dict[int, dict[str, dict[str, Any]]]) -> Any:
    """AUROC with its bootstrap 95% interval (shaded) of every audited signal per generation,
    on the held-out test set and on the frames just labeled. ``audits``: {generation: {"test" |
    "new": the JSON that :func:`alprobe.audit.write_audit` writes}}."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 3.4))
    axes = fig.subplots(1, 2, sharey=True)
    gens = sorted(audits)
    for ax, where, title in ((axes[0], "test", "held-out test set (probe g)"),
                             (axes[1], "new", "frames labeled in g (signals of g-1)")):
        names = list(dict.fromkeys(r["signal"] for g in gens
                                   for r in audits[g].get(where, {}).get("rows", [])))
        for i, sig in enumerate(names):
            pts = [(g, r) for g in gens for r in audits[g].get(where, {}).get("rows", [])
                   if r["signal"] == sig]
            x = np.array([p[0] for p in pts], dtype=float)
            y, lo, hi = (np.array([_nan(p[1].get(k)) for p in pts])
                         for k in ("auroc", "auroc_lo", "auroc_hi"))
            if i == 0:  # one band (the first signal, the probe's when there is one)
                ax.fill_between(x, lo, hi, color=f"C{i % 10}", alpha=0.15, lw=0)
            ax.plot(x, y, color=f"C{i % 10}", label=sig, **_marks(len(x)))
        ax.axhline(0.5, color="k", ls=":", lw=1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("generation")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
        if names:
            ax.legend(fontsize=7, ncol=2)
    axes[0].set_ylabel("AUROC")
    _integer_x(*axes)
    fig.tight_layout()
    return fig


def stops_figure(counts: dict[int, dict[str, int]]) -> Any:
    """Walkers per generation, stacked by why they stopped (:data:`STOP_KINDS`)."""
    from matplotlib.figure import Figure

    gens = sorted(counts)
    fig = Figure(figsize=(11, 2.8))
    ax = fig.add_subplot()
    bottom = np.zeros(len(gens))
    colors = {"completed": "#8fbf8f", "low trust": "#e0a040", "unphysical": "#d05050",
              "MD error": "#7a3d9a", "other": "#999999"}
    for kind in STOP_KINDS:
        y = np.array([counts[g].get(kind, 0) for g in gens], dtype=float)
        if y.any():
            ax.bar(gens, y, bottom=bottom, color=colors[kind], width=0.8, label=kind)
            bottom += y
    ax.set_xlabel("generation (0: bootstrap and test walkers)")
    ax.set_ylabel("walkers")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    _integer_x(ax)
    fig.tight_layout()
    return fig


def costs_figure(metrics: list[dict[str, Any]]) -> Any:
    """Per generation: the driver's wall time per stage (s, stacked; the rest of the
    generation's wall time as "other") and the tasks' CPU time per account (s, stacked)."""
    from matplotlib.figure import Figure

    g = _series(metrics, "generation")
    fig = Figure(figsize=(11, 3.4))
    axes = fig.subplots(1, 2)
    for ax, suffix, keys in ((axes[0], "_s", STAGES),
                             (axes[1], "_cpu_s", (*ACCOUNTS, "driver"))):
        bottom = np.zeros(len(g))
        for st in keys:
            y = np.nan_to_num(_series(metrics, f"{st}{suffix}"))
            if y.any():
                ax.bar(g, y, bottom=bottom, width=0.8, color=_STAGE_COLORS.get(st, "C7"),
                       label=st)
                bottom += y
        if suffix == "_s":
            rest = np.clip(np.nan_to_num(_series(metrics, "wall_s")) - bottom, 0, None)
            if rest.any():
                ax.bar(g, rest, bottom=bottom, width=0.8, color=_STAGE_COLORS["other"],
                       label="other (gen 0: rattle, bootstrap, split)")
        ax.set_xlabel("generation")
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=7, ncol=2)
    axes[0].set_ylabel("wall time (s)")
    axes[0].set_title("wall time per stage (driver)", fontsize=9)
    axes[1].set_ylabel("CPU time (s)")
    axes[1].set_title("CPU time per account (tasks + driver)", fontsize=9)
    _integer_x(*axes)
    fig.tight_layout()
    return fig


def arm_costs_figure(costs: list[dict[str, Any]]) -> Any:
    """Wall and CPU seconds per run of a comparison (and per generation-0 folder), stacked by
    stage. ``costs``: rows of :func:`alprobe.report.cost_rows`."""
    from matplotlib.figure import Figure

    arms = list(dict.fromkeys(c["arm"] for c in costs))
    stages = [s for s in dict.fromkeys(c["stage"] for c in costs) if s != "total"]
    fig = Figure(figsize=(11, 0.9 + 0.35 * max(len(arms), 2)))
    axes = fig.subplots(1, 2, sharey=True)
    y = np.arange(len(arms))
    for ax, key, lab in ((axes[0], "wall_s", "wall time (s)"), (axes[1], "cpu_s", "CPU time (s)")):
        left = np.zeros(len(arms))
        for st in stages:
            v = np.array([sum(c[key] for c in costs if c["arm"] == a and c["stage"] == st)
                          for a in arms], dtype=float)
            if v.any():
                ax.barh(y, v, left=left, color=_STAGE_COLORS.get(st, "C7"), label=st)
                left += v
        ax.set_xlabel(lab)
        ax.grid(alpha=0.3, axis="x")
    axes[0].set_yticks(y, arms)
    axes[0].invert_yaxis()
    axes[1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return fig
