"""What alprobe shows of a campaign or comparison folder: ``alprobe status`` (text),
a comparison's outputs (``summary.md``, learning curves, costs) and ``alprobe report``
(``report.html``, one self-contained page).

A folder is read once into plain objects (:mod:`.gather`); sections turn those objects and the
statistics of :mod:`alprobe.paired` into blocks (:mod:`.blocks`: headings, paragraphs, tables,
figures); the same blocks render as text, markdown and HTML. Sections are functions listed in
order in ``campaign.CAMPAIGN_SECTIONS``, ``comparison.COMPARISON_SECTIONS`` and
``summary.SUMMARY_PARTS``; figures come from :mod:`alprobe.plots` (one function per figure
for PNG and SVG). Reading is safe while a campaign runs (the ledger is opened read-only).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .blocks import to_markdown, to_text
from .gather import (
    PLAN_FILE,
    CampaignData,
    ComparisonData,
    ComparisonPlan,
    ReportError,
    RunInfo,
    cost_rows,
    learning_curve_rows,
    read_campaign,
    read_comparison,
)
from .summary import comparison_summary, summary_blocks

__all__ = ["PLAN_FILE", "CampaignData", "ComparisonData", "ComparisonOutputs", "ComparisonPlan",
           "ReportError", "RunInfo", "comparison_summary", "cost_rows", "learning_curve_rows",
           "read_campaign", "read_comparison", "status_table", "write_comparison_outputs",
           "write_report"]


def status_table(directory: str | Path) -> str:
    """What ``alprobe status DIR`` prints for a campaign folder: the accuracy and trust-signal
    tables, one row per finished generation, then frame counts, the stress set and the last
    backbone's MD stability (see :func:`alprobe.report.status.status_blocks`)."""
    from .status import status_blocks

    return to_text(status_blocks(read_campaign(directory, images=False, details=False)))


def write_report(directory: str | Path) -> Path:
    """Write ``directory/report.html`` for a campaign folder (``ledger.db``) or a comparison
    folder (``comparison.yaml`` / ``comparison.json``) and return its path. ReportError if
    the folder is neither."""
    from ..files import atomic_write
    from .campaign import campaign_sections, state
    from .comparison import comparison_sections
    from .html import page_html

    d = Path(directory)
    if not d.is_dir():
        raise ReportError(f"{d}: no such folder")
    if (d / "comparison.yaml").is_file() or (d / PLAN_FILE).is_file():
        c = read_comparison(d)
        text = page_html(f"Comparison {c.plan.name}", f"{d.resolve()} · {len(c.runs)} runs",
                         comparison_sections(c))
    elif (d / "ledger.db").is_file():
        data = read_campaign(d)
        text = page_html(f"Campaign {data.name}", f"{d.resolve()} · {state(data)}",
                         campaign_sections(data))
    else:
        raise ReportError(f"{d} is not a campaign folder (no ledger.db) or a comparison folder "
                          "(no comparison.yaml)")
    out = d / "report.html"
    atomic_write(out, text)
    return out


@dataclass
class ComparisonOutputs:
    """What :func:`write_comparison_outputs` read and wrote: the folder's data, the paths
    written by name, and the summary's markdown."""

    data: ComparisonData
    paths: dict[str, Path]
    summary: str


def write_comparison_outputs(directory: str | Path, plan: ComparisonPlan) -> ComparisonOutputs:
    """From the runs' ledgers: ``learning_curves.csv`` and ``.png``, ``costs.csv``,
    ``stability.csv`` (where runs have a final MD stability record) and ``summary.md``, all
    in ``directory``, which holds the comparison's runs and generation-0 folders."""
    from ..files import atomic_write
    from ..plots import learning_curves_figure, save_png

    d = Path(directory)
    c = read_comparison(d, plan, details=False)
    out = {"learning_curves_csv": d / "learning_curves.csv",
           "learning_curves_png": d / "learning_curves.png",
           "costs_csv": d / "costs.csv", "summary_md": d / "summary.md"}
    atomic_write(out["learning_curves_csv"], _csv(c.curves))
    atomic_write(out["costs_csv"], _csv(c.costs))
    save_png(learning_curves_figure(c.curves, title=plan.name), out["learning_curves_png"])
    if any(c.stability.values()):
        out["stability_csv"] = d / "stability.csv"
        atomic_write(out["stability_csv"], _csv([
            {"run": n, "arm": plan.runs[n].arm, "replica": plan.runs[n].replica,
             **{k: rec[k] for k in ("generation", "temperature_K", "walkers", "run_fs",
                                    "stable_fraction", "first_failure_fs")}}
            for n, rec in c.stability.items() if rec]))
    text = to_markdown(summary_blocks(c))
    atomic_write(out["summary_md"], text)
    return ComparisonOutputs(c, out, text)


def _csv(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    keys = list(dict.fromkeys(k for r in rows for k in r))

    def fmt(v: Any) -> str:
        return f"{v:.6g}" if isinstance(v, float) else str(v)

    return "\n".join([",".join(keys)] + [",".join(fmt(r.get(k, "")) for k in keys)
                                         for r in rows]) + "\n"
