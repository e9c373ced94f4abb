"""The sections of a campaign's page, each a function of :class:`CampaignData` that returns
a :class:`Section`; :data:`CAMPAIGN_SECTIONS` lists them in page order.

A section with figures draws them with :mod:`alprobe.plots` (``*_figure`` and ``svg_text``).
Tables are capped and no per-candidate datum reaches the page, so a 100-generation,
100,000-candidate campaign gives a page of well under a MB of text. Errors are shown in meV/Å
(forces) and meV/atom (energies), times in s.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..records import STAGES, parse_stage_key, stage_key, stop_kind
from .blocks import (
    Block,
    Cards,
    Details,
    Figure,
    Gallery,
    Heading,
    Paragraph,
    Pre,
    Section,
    Table,
    plain,
)
from .fmt import (ACCURACY_COLUMNS, SIGNAL_COLUMNS, cap_rows, columns_table, dur, num,
                  replay_table)
from .gather import BAD, CampaignData, gen_of, learning_curve_rows

__all__ = ["CAMPAIGN_SECTIONS", "campaign_sections", "curve_rows", "state", "walker_stops"]

#: Failure / stop reasons listed (grouped by their text with numbers masked), examples each.
MAX_REASONS, MAX_EXAMPLES = 20, 3
#: Full audit tables for this many of the last generations (the AUROC figure covers all).
AUDIT_TABLE_GENERATIONS = 3
_NAN = float("nan")


def note(text: str) -> Paragraph:
    return Paragraph(text, note=True)


def svg_figure(fig: Any, name: str, caption: str) -> Figure:
    """A matplotlib figure of :mod:`alprobe.plots` as an inline-SVG block."""
    from ..plots import svg_text

    return Figure(caption, svg=svg_text(fig, name), name=name)


def state(data: CampaignData) -> str:
    """"finished", or where a running (or stopped) campaign is."""
    planned = data.config.get("generations")
    if isinstance(planned, int) and stage_key(planned, "done") in data.stages:
        return "finished"
    keys = [parse_stage_key(k) for k in data.stages]
    gens = [k[0] for k in keys if k]
    if not gens:
        return "not started"
    g = max(gens)
    done = sorted(k[1] for k in keys if k and k[0] == g)
    return f"running or stopped in generation {g} (stages done: {', '.join(done)})"


def interval(row: dict[str, Any]) -> str:
    """The 95% interval of a metrics row's test force MAE, in meV/Å."""
    return (f"{num(row.get('force_mae_lo_eV_A'), '{:.0f}', 1e3)}–"
            f"{num(row.get('force_mae_hi_eV_A'), '{:.0f}', 1e3)}")


def _total(rows: list[dict[str, Any]], key: str) -> float:
    """The sum of a column over metrics rows (missing and NaN count 0)."""
    return float(sum(float(r.get(key) or 0.0) for r in rows if r.get(key) == r.get(key)))


def overview_section(data: CampaignData, prefix: str = "") -> Section:
    """Key numbers: generations, labels, test errors first -> last, probe AUROC, labels lost,
    wall and CPU time."""
    m, st = data.metrics, data.status
    planned = data.config.get("generations", "?")
    if not m:
        return Section(f"{prefix}overview", "Overview", [
            Cards([("generations", f"0 of {planned}", state(data))]),
            note("No generation finished yet: the report fills in as the campaign runs.")])
    first, last = m[0], m[-1]
    return Section(f"{prefix}overview", "Overview", [Cards([
        ("generation", f"{last['generation']} of {planned}", state(data)),
        ("DFT labels (training pool)", num(last.get("labels"), "{:.0f}"),
         (f"+ {data.splits['test']} held-out test frames; the backbone trained on "
          f"{num(last.get('train_frames'), '{:.0f}')}")),
        ("stress-set force MAE (meV/Å)", num(last.get("stress_force_mae_eV_A"), "{:.0f}", 1e3),
         "conditions beyond the exploration's ('-': no stress set)"),
        ("test force MAE (meV/Å)", (f"{num(first.get('force_mae_eV_A'), '{:.0f}', 1e3)} → "
                                    f"{num(last.get('force_mae_eV_A'), '{:.0f}', 1e3)}"),
         f"95% interval {interval(last)} (gen {last['generation']})"),
        ("test energy MAE (meV/atom)", num(last.get("energy_mae_eV_per_atom"), "{:.1f}", 1e3),
         f"generation 0: {num(first.get('energy_mae_eV_per_atom'), '{:.1f}', 1e3)}"),
        ("probe AUROC, test set", num(last.get("probe_auroc_test")), "0.5 = chance, 1 = perfect"),
        ("labels not obtained", str(sum(st[s] for s in BAD)),
         ", ".join(f"{st[s]} {s}" for s in BAD)),
        ("wall time", dur(_total(m, "wall_s")), f"CPU {dur(_total(m, 'cpu_s'))}")])])


def curve_rows(data: CampaignData) -> list[dict[str, Any]]:
    """The campaign's learning curve as :func:`learning_curve_rows` rows."""
    ms = [r for r in data.metrics if "force_mae_eV_A" in r]
    rule = str((ms[-1].get("rule") if ms else None)
               or (data.config.get("select") or {}).get("rule", "probe"))
    return learning_curve_rows({data.name: ms}, {data.name: (data.name, 0, rule)})


def learning_section(data: CampaignData, prefix: str = "") -> Section:
    """The learning curve (figure) and the accuracy table per generation."""
    from ..plots import learning_curves_figure

    if not data.metrics:
        return Section(f"{prefix}learning", "Learning curve", [note("No generation finished yet.")])
    forgetting = replay_table(data.metrics, cap=True)
    return Section(f"{prefix}learning", "Learning curve", [
        svg_figure(learning_curves_figure(curve_rows(data)), f"{prefix}learning-curves",
                   "Errors of backbone g on the fixed held-out test set against the DFT labels "
                   "it trained on. Shaded: 95% bootstrap interval of the force MAE over test "
                   "frames."),
        columns_table(data.metrics, ACCURACY_COLUMNS, cap=True),
        *([forgetting] if forgetting is not None else []),
        note("labels: DFT labels in the training pool (test set excluded); new / failed: this "
             "generation's; hit rate: fraction of the rule's new labels whose true error "
             "exceeded generation 0's threshold (abs: select.hit_threshold_force_rmse_eV_A); "
             "wall: the generation's wall time.")])


def audit_table(audit: dict[str, Any], caption: str) -> Table:
    """One audit JSON (alprobe.audit.write_audit) as a table; the best AUROC in bold."""
    rows = audit.get("rows", [])
    aurocs = [float(r.get("auroc", _NAN)) for r in rows]
    best = max((a for a in aurocs if math.isfinite(a)), default=None)

    def ci(r: dict[str, Any], k: str, f: str = "{:.2f}") -> str:
        if num(r.get(k)) == "-":
            return "-"
        lo, hi = num(r.get(f"{k}_lo"), f), num(r.get(f"{k}_hi"), f)
        return f"{num(r.get(k), f)} [{lo}, {hi}]" if lo != "-" else num(r.get(k), f)

    body = []
    for r, a in zip(rows, aurocs):
        auc = ci(r, "auroc")
        body.append([plain(r.get("signal", "?")), num(r.get("n"), "{:.0f}"),
                     num(r.get("prevalence")), f"**{auc}**" if a == best else auc,
                     ci(r, "auprc"), num(r.get("e_aurc_err"), "{:.3f}"), ci(r, "spearman"),
                     num(r.get("enrichment_at_10pct")), num(r.get("ece"), "{:.3f}"),
                     num(r.get("brier"), "{:.3f}")])
    return Table(["signal", "n", "unreliable", "AUROC [95% CI]", "AUPRC [95% CI]",
                  "E-AURC", "Spearman ρ [95% CI]", "enrich. @10%", "ECE", "Brier"],
                 body, caption=caption, cls="audit")


def audit_tables(g: int, audits: dict[str, dict[str, Any]], unit: str) -> list[Table]:
    """Generation g's audit tables (test set, then the frames just labeled)."""
    out = []
    for where, what in (("test", "held-out test set, probe g"),
                        ("new", "frames labeled in g, signals of g-1")):
        a = audits.get(where)
        if a:
            out.append(audit_table(a, (
                f"generation {g}, {what}: {a.get('n', '?')} frames, tau = "
                f"{num(a.get('tau'), '{:.3g}')} {unit}. {plain(a.get('verdict', ''))}")))
    return out


def _png_caption(p: Path) -> str:
    where = "held-out test set" if "_test_" in p.name else "frames labeled in g"
    what = "risk–coverage" if p.stem.endswith("risk_coverage") else "reliability diagram"
    return f"generation {gen_of(p)}, {where}: {what}"


def reliability_section(data: CampaignData, prefix: str = "") -> Section:
    """The trust signal per generation (figure, table), the audits' AUROC per generation
    (figure), the last generations' audit tables and the last generation's audit plots."""
    from ..plots import audit_auroc_figure, trust_signal_figure

    out: list[Block] = [note(
        "Each generation, probe g-1 scores the candidates before any label exists; the audit "
        "then compares every trust signal with the true errors, on the held-out test set "
        "(probe g) and on the frames just labeled (signals of g-1). AUROC: how well a signal "
        "ranks unreliable frames (error above tau) below reliable ones; ρ: Spearman of trust "
        "and error (negative is good).")]
    if data.metrics:
        out += [svg_figure(trust_signal_figure(data.metrics), f"{prefix}trust-signal",
                           "The probe per generation: its candidates' P(reliable), its AUROCs, "
                           "its training pool."),
                columns_table(data.metrics, SIGNAL_COLUMNS, cap=True)]
    if data.audits:
        out.append(svg_figure(audit_auroc_figure(data.audits), f"{prefix}audit-auroc",
                              "AUROC of every audited signal per generation (probe, kNN in "
                              "latent space, energy, committee where trained); shaded: the "
                              "first signal's bootstrap 95% interval."))
        unit = {"energy": "eV", "energy_per_atom": "eV/atom"}.get(
            str((data.config.get("probe") or {}).get("error", "force_rmse")), "eV/Å")
        gens = sorted(data.audits)[-AUDIT_TABLE_GENERATIONS:][::-1]
        out += audit_tables(gens[0], data.audits[gens[0]], unit)
        if len(gens) > 1:
            out.append(Details(f"audit tables of generations {', '.join(map(str, gens[:0:-1]))}",
                               [t for g in gens[1:] for t in audit_tables(g, data.audits[g],
                                                                          unit)]))
    else:
        out.append(note("No audit yet (audits/gen_NNN_{test,new}_audit.json)."))
    if data.audit_pngs:
        out.append(Gallery([Figure(_png_caption(p), png=p, name=p.stem)
                            for p in data.audit_pngs], cls="grid2"))
    return Section(f"{prefix}reliability", "Reliability audit", out)


def importance_section(data: CampaignData, prefix: str = "") -> Section:
    """The atom-importance pictures of the least-trusted test frames (last generations)."""
    if not data.importance:
        return Section(f"{prefix}importance", "Least-trusted frames", [note(
            "No atom-importance picture (audits/gen_NNN_importance_<fid>.png).")])
    return Section(f"{prefix}importance", "Least-trusted frames", [
        note("The least-trusted held-out test frames by probe g: each atom coloured by the "
             "attention it receives (sums to 1 over the atoms); the title gives the frame's "
             "P(reliable) and its true error. Latest generations only."),
        Gallery([Figure(f"generation {gen_of(p)}, frame {plain(p.stem.rsplit('_', 1)[-1])}",
                        png=p, name=p.stem) for p in data.importance])])


def pattern(reason: str) -> str:
    """A reason with its numbers masked, so that reasons of one kind group together."""
    return re.sub(r"\d+(?:\.\d+)?(?:e[-+]?\d+)?", "#", " ".join(str(reason).split()))[:200]


def gen_ranges(gens: Sequence[int], most: int = 8) -> str:
    """Generations as ranges ("1-3, 5"), at most ``most`` ranges shown."""
    spans: list[list[int]] = []
    for g in sorted(set(gens)):
        if spans and g == spans[-1][1] + 1:
            spans[-1][1] = g
        else:
            spans.append([g, g])
    text = [f"{a}" if a == b else f"{a}-{b}" for a, b in spans]
    return ", ".join(text[:most]) + (f", … ({len(text) - most} more)" if len(text) > most else "")


def grouped_reasons(items: list[tuple[str, str, int, str]]) -> list[list[str]]:
    """Rows (kind, reason pattern, count, generations, examples) of (kind, reason, generation,
    example id) items grouped by kind and masked reason, most frequent first, capped at
    MAX_REASONS with a final row counting the rest."""
    groups: dict[tuple[str, str], list[tuple[str, int, str]]] = defaultdict(list)
    for kind, reason, g, ident in items:
        groups[(kind, pattern(reason))].append((reason, g, ident))
    order = sorted(groups, key=lambda k: (-len(groups[k]), k))
    rows: list[list[str]] = []
    for kind, pat in order[:MAX_REASONS]:
        its = groups[(kind, pat)]
        ex = "; ".join(f"{i}: {r}" if i else r for r, _, i in its[:MAX_EXAMPLES])
        rows.append([plain(kind), plain(pat), str(len(its)),
                     gen_ranges([g for _, g, _ in its]), plain(ex)])
    if len(order) > MAX_REASONS:
        rest = sum(len(groups[k]) for k in order[MAX_REASONS:])
        rows.append(["…", f"{len(order) - MAX_REASONS} other reasons", str(rest), "", ""])
    return rows


def walker_stops(stages: dict[str, dict[str, Any]]
                 ) -> tuple[dict[int, dict[str, int]], list[tuple[str, str, int, str]]]:
    """From the explore (and generation-0 bootstrap) stage records: walkers per generation by
    stop kind, and every (kind, reason, generation, walker) of a walker that did not complete."""
    counts: dict[int, Counter] = {}
    items = []
    for name, info in stages.items():
        m = parse_stage_key(name)
        if not m or m[1] not in ("explore", "bootstrap", "test_walkers"):
            continue
        g = m[0]
        what = "test " if m[1] == "test_walkers" else ""
        walkers = [(what, r) for r in info.get("stops", [])] + [  # older folders: in bootstrap
            ("test ", r) for r in (info.get("test_walkers") or {}).get("stops", [])]
        c = counts.setdefault(g, Counter())
        for i, (what, reason) in enumerate(walkers):
            kind = stop_kind(str(reason))
            c[kind] += 1
            if kind != "completed":
                items.append((kind, str(reason), g, f"{what}walker {i}"))
    return {g: dict(counts[g]) for g in sorted(counts)}, items


def stops_section(data: CampaignData, prefix: str = "") -> Section:
    """Why each walker stopped: walkers per generation by kind (figure), the reasons grouped."""
    from ..plots import stops_figure

    counts, items = walker_stops(data.stages)
    if not counts:
        return Section(f"{prefix}walkers", "Why walkers stopped",
                       [note("No explore stage recorded yet.")])
    total: Counter = Counter()
    for c in counts.values():
        total.update(c)
    return Section(f"{prefix}walkers", "Why walkers stopped", [
        note("A walker runs its MD to the end (completed) unless its trust stays below "
             "explore.trust_floor for explore.patience samples (low trust), two atoms come too "
             "close or a fragment flies off (unphysical) or the MD fails. Totals: "
             + ", ".join(f"{v} {k}" for k, v in total.most_common()) + "."),
        svg_figure(stops_figure(counts), f"{prefix}walker-stops",
                   "Walkers per generation by why they stopped."),
        Table(["kind", "reason (numbers masked)", "walkers", "generations", "examples"],
              grouped_reasons(items), align="llrll", cls="reasons") if items
        else note("Every walker completed its run.")])


def labels_section(data: CampaignData, prefix: str = "") -> Section:
    """Frames by status (labeled ones by split) and the reasons of failures, rejections and
    timeouts, grouped."""
    st, sp = data.status, data.splits
    out: list[Block] = [Table(["status", "frames", "meaning"], [
        ["candidate", str(st["candidate"]), "sampled by a walker, not picked"],
        ["selected", str(st["selected"]), "picked, label not back yet"],
        ["labeled", str(st["labeled"]), (f"{sp['train']} train, {sp['calib']} calibration "
                                         f"(kept out of backbone training), {sp['test']} "
                                         "held-out test")],
        ["failed", str(st["failed"]), "SCF did not converge or PySCF raised"],
        ["rejected", str(st["rejected"]), "refused before DFT (a bad structure)"],
        ["timeout", str(st["timeout"]), "killed at dft.timeout_s"]], align="lrl")]
    per_gen = [[str(parse_stage_key(k)[0])] + [str(v.get(s, 0)) for s in ("labeled", *BAD)]
               for k, v in sorted(data.stages.items())
               if (parse_stage_key(k) or (0, ""))[1] == "label" and any(v.get(s) for s in BAD)]
    if per_gen:
        out.append(Table(["generation", "labeled", "failed", "rejected", "timeout"],
                         cap_rows(per_gen, 30, 5), caption="generations with labels not "
                         "obtained"))
    if data.problems:
        items = [(p["status"], str(p.get("reason") or "unknown"), int(p.get("generation") or 0),
                  str(p.get("fid") or "")) for p in data.problems]
        out.append(Table(["status", "reason (numbers masked)", "frames", "generations",
                          "examples (frame: reason)"], grouped_reasons(items), align="llrll",
                         cls="reasons"))
    else:
        out.append(note("Every frame sent to DFT was labeled."))
    return Section(f"{prefix}labels", "Labels by status", out)


def costs_section(data: CampaignData, prefix: str = "") -> Section:
    """Wall time per stage and CPU time per account: per generation (figure) and totals."""
    from ..plots import costs_figure

    m = data.metrics
    if not m:
        return Section(f"{prefix}costs", "Cost per stage", [note("No generation finished yet.")])
    g0 = [r for r in m if r.get("generation") == 0]
    later = [r for r in m if r.get("generation", 0) > 0]
    wall = _total(m, "wall_s")
    rows = []
    for st in (*STAGES, "driver"):
        w0, w1 = _total(g0, f"{st}_s"), _total(later, f"{st}_s")
        c0, c1 = _total(g0, f"{st}_cpu_s"), _total(later, f"{st}_cpu_s")
        if w0 or w1 or c0 or c1:
            rows.append([st, num(w0, "{:.1f}"), num(c0, "{:.1f}"), num(w1, "{:.1f}"),
                         num(c1, "{:.1f}"), num((w0 + w1) / wall if wall else _NAN, "{:.0%}")])
    rows.append(["**total**", num(_total(g0, "wall_s"), "{:.1f}"),
                 num(_total(g0, "cpu_s"), "{:.1f}"), num(_total(later, "wall_s"), "{:.1f}"),
                 num(_total(later, "cpu_s"), "{:.1f}"), "100%"])
    later_s = f"gens 1-{len(later)}" if later else "later"
    return Section(f"{prefix}costs", "Cost per stage", [
        svg_figure(costs_figure(m), f"{prefix}costs", "Per generation: the driver's wall time "
                   "in each stage and the tasks' CPU time in each account (s)."),
        Table(["stage", "gen 0 wall s", "gen 0 CPU s", f"{later_s} wall s", f"{later_s} CPU s",
               "share of wall"], rows),
        note("Wall: the driver's time in the stage (generation 0 also spends it in rattle, "
             "bootstrap and split); CPU: the tasks booked to that account plus the driver's own "
             "thread (driver). Shares do not add up to 100%: stages overlap with bookkeeping.")])


def provenance_blocks(text: str, versions: str, what: str = "campaign.yaml") -> list[Block]:
    """A campaign (or comparison) file and the package versions, verbatim."""
    return [Heading(plain(what), 3), Pre(text or "(missing)"),
            Heading("versions.json", 3), Pre(versions or "(missing)")]


def provenance_section(data: CampaignData, prefix: str = "") -> Section:
    """The resolved campaign file and the package versions, verbatim."""
    return Section(f"{prefix}provenance", "Campaign file and versions",
                   provenance_blocks(data.campaign_yaml, data.versions))


#: The sections of a campaign's page, in order: a new section is a function
#: ``(data: CampaignData, prefix: str) -> Section`` added here.
CAMPAIGN_SECTIONS: list[Callable[[CampaignData, str], Section]] = [
    overview_section, learning_section, reliability_section, importance_section,
    stops_section, labels_section, costs_section, provenance_section]


def campaign_sections(data: CampaignData, prefix: str = "",
                      skip: Sequence[Callable[[CampaignData, str], Section]] = ()
                      ) -> list[Section]:
    """Every section of a campaign's page but those in ``skip`` (ids prefixed with
    ``prefix``)."""
    return [f(data, prefix) for f in CAMPAIGN_SECTIONS if f not in skip]
