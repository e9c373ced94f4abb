"""The sections of a comparison's page, each a function of :class:`ComparisonData` that
returns a :class:`Section`; :data:`COMPARISON_SECTIONS` lists them in page order. The summary
section holds the same blocks as ``summary.md`` (:mod:`alprobe.report.summary`)."""

from __future__ import annotations

from collections.abc import Callable

from .blocks import Block, Cards, Details, Heading, Pre, Section, Table, plain, shifted
from .campaign import (
    campaign_sections,
    interval,
    labels_section,
    note,
    overview_section,
    provenance_blocks,
    provenance_section,
    state,
    stops_section,
    svg_figure,
)
from .fmt import num
from .gather import ComparisonData
from .summary import summary_blocks

__all__ = ["COMPARISON_SECTIONS", "comparison_sections"]


def overview(c: ComparisonData) -> Section:
    """Arms, replicas, and one row per run: where it is and its last test errors."""
    finished = sum(state(d) == "finished" for d in c.runs.values())
    rows = []
    for run, d in c.runs.items():
        info, last = c.plan.runs[run], d.last
        rows.append([f"[{plain(run)}](#run-{run})", info.arm, str(info.replica), info.rule,
                     num(last.get("generation"), "{:.0f}"), num(last.get("labels"), "{:.0f}"),
                     num(last.get("train_frames"), "{:.0f}"),
                     num(last.get("force_mae_eV_A"), "{:.1f}", 1e3), interval(last),
                     num(last.get("force_rmse_p95_eV_A"), "{:.0f}", 1e3),
                     num(last.get("stress_force_mae_eV_A"), "{:.1f}", 1e3),
                     num(last.get("energy_mae_eV_per_atom"), "{:.2f}", 1e3),
                     num(last.get("signal_auroc_test")), plain(state(d))])
    arms = list(dict.fromkeys(i.arm for i in c.plan.runs.values()))
    reps = sorted({i.replica for i in c.plan.runs.values()})
    return Section("overview", "Overview", [
        Cards([("arms", str(len(arms)), ", ".join(arms)),
               ("replicas", str(len(reps)), "replica r of every arm shares r's seeds"),
               ("runs finished", f"{finished} of {len(c.plan.runs)}", ""),
               ("generation-0 folders", str(len(c.shared)), ", ".join(c.shared))]),
        Table(["run", "arm", "replica", "rule", "gen", "labels", "trained on", "F MAE meV/Å",
               "95% CI", "p95 frame F RMSE", "stress F MAE", "E MAE meV/atom",
               "signal AUROC test", "state"], rows, align="lllrrrrrrrrrrl")])


def learning(c: ComparisonData) -> Section:
    """The learning curves of every run, one colour per arm."""
    from ..plots import learning_curves_figure

    if not c.curves:
        return Section("learning", "Learning curves", [note("No generation finished yet.")])
    return Section("learning", "Learning curves", [svg_figure(
        learning_curves_figure(c.curves), "learning-curves",
        "Test errors against DFT labels, one colour per arm: bold the mean over replicas, faint "
        "each replica with its 95% interval over test frames (shaded).")])


def summary(c: ComparisonData) -> Section:
    """The summary's blocks (those of summary.md), headings two levels down."""
    return Section("summary", "Summary and paired differences",
                   shifted(summary_blocks(c), 2) if c.curves
                   else [note("No generation finished yet.")])


def costs(c: ComparisonData) -> Section:
    """Wall and CPU time per run and per generation-0 folder, by stage (figure and table)."""
    from ..plots import arm_costs_figure

    if not c.curves:
        return Section("costs", "Cost per run and stage", [note("No generation finished yet.")])
    stages = [s for s in dict.fromkeys(x["stage"] for x in c.costs) if s != "total"
              and any(x["wall_s"] for x in c.costs if x["stage"] == s)]
    by = {(x["arm"], x["stage"]): x for x in c.costs}
    rows = [[a, *(num(by[(a, s)]["wall_s"], "{:.0f}") for s in stages),
             num(by[(a, "total")]["wall_s"], "{:.0f}"), num(by[(a, "total")]["cpu_s"], "{:.0f}")]
            for a in dict.fromkeys(x["arm"] for x in c.costs)]
    return Section("costs", "Cost per run and stage", [
        svg_figure(arm_costs_figure(c.costs), "arm-costs", "Wall (driver) and CPU (tasks + "
                   "driver) seconds of each run's own generations and of each generation-0 "
                   "folder, by stage. Runs share the workers, so their wall times overlap."),
        Table(["run", *(f"{s} s" for s in stages), "wall s", "CPU s"], rows)])


def generation0(c: ComparisonData) -> Section:
    """Each generation-0 folder: its key numbers, its walkers, its labels."""
    blocks: list[Block] = []
    for n, d in c.shared.items():
        blocks += [Heading(plain(n), 3), *overview_section(d).blocks,
                   *stops_section(d, f"{n}-").blocks, *labels_section(d).blocks]
    return Section("generation0", "Generation 0 (shared)",
                   blocks or [note("No generation-0 folder yet.")])


def runs(c: ComparisonData) -> Section:
    """Every run as a folded block holding its own campaign sections."""
    blocks: list[Block] = [note("Each run's own report; click a run to open it.")]
    for run, d in c.runs.items():
        info, last = c.plan.runs[run], d.last
        body = [b for s in campaign_sections(d, f"run-{run}-", skip=[provenance_section])
                for b in (Heading(s.title, 3, s.id), *s.blocks)]
        blocks.append(Details(plain(run), body, cls="run", id=f"run-{run}", muted=(
            f"(arm {plain(info.arm)}, replica {info.replica}; generation "
            f"{num(last.get('generation'), '{:.0f}')}, test force MAE "
            f"{num(last.get('force_mae_eV_A'), '{:.1f}', 1e3)} meV/Å)")))
    return Section("runs", "Runs: reliability audit, walkers, labels", blocks)


def provenance(c: ComparisonData) -> Section:
    """The comparison file, the package versions and the noise floor, verbatim."""
    blocks = provenance_blocks(c.spec_text, c.versions, "comparison.yaml")
    if c.noise_floor_text:
        blocks += [Heading("noise_floor.json", 3), Pre(c.noise_floor_text)]
    return Section("provenance", "Comparison file and versions", blocks)


#: The sections of a comparison's page, in order: a new section is a function
#: ``(c: ComparisonData) -> Section`` added here.
COMPARISON_SECTIONS: list[Callable[[ComparisonData], Section]] = [
    overview, learning, summary, costs, generation0, runs, provenance]


def comparison_sections(c: ComparisonData) -> list[Section]:
    """Every section of a comparison's page."""
    return [f(c) for f in COMPARISON_SECTIONS]
