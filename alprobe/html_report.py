"""The campaign report: ``alprobe report DIR`` writes ``DIR/report.html``.

One self-contained page (inline CSS; figures as inline SVG drawn with matplotlib's object API;
PNG files of the folder as data URIs; nothing is fetched when it is viewed) for a campaign
folder (``ledger.db``) or a comparison folder (``comparison.yaml``, runs in ``arms/<run>``).

It reads aggregates only: metrics rows, stage records, key-only ledger queries (counts by
status, the few failed / rejected / timed-out frames) and the audit JSONs. Tables are capped
and no per-candidate datum reaches the page, so a 100-generation, 100,000-candidate campaign
gives a page of well under a MB of text that a browser draws in about a second.

``read_campaign`` / ``read_comparison`` do the reading; the ``*_html`` / ``*_section``
functions are pure functions of that data; ``write_report`` writes the page atomically.
Units: eV, Å; errors shown in meV/Å (forces) and meV/atom (energies); times in s.
"""

from __future__ import annotations

import base64
import datetime
import html
import json
import math
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import AlprobeError
from .records import STAGES, parse_stage_key, stage_key, stop_kind

__all__ = ["CampaignData", "ComparisonData", "ReportError", "Section", "campaign_sections",
           "comparison_sections", "markdown_html", "page_html", "read_campaign",
           "read_comparison", "write_report"]

#: Per-generation tables show at most this many rows (the first few and the last ones).
MAX_ROWS = 120
#: Failure / stop reasons listed (grouped by their text with numbers masked), examples each.
MAX_REASONS, MAX_EXAMPLES = 20, 3
#: Atom-importance pictures embedded (those of the last generations that have any).
MAX_IMPORTANCE = 6
#: Full audit tables for this many of the last generations (the AUROC figure covers all).
AUDIT_TABLE_GENERATIONS = 3
#: Longest text file (campaign.yaml, versions.json) shown, in characters.
MAX_TEXT = 40_000

_STATUSES = ("candidate", "selected", "labeled", "failed", "rejected", "timeout")
_BAD = ("failed", "rejected", "timeout")
_NAN = float("nan")


class ReportError(AlprobeError):
    """The folder is not a campaign or comparison folder (the message names it)."""


@dataclass(frozen=True)
class Section:
    """One part of the page: anchor id, heading, body HTML."""

    id: str
    title: str
    body: str


class Raw(str):
    """Table cell text that is already HTML (not escaped again)."""


def esc(x: Any) -> str:
    return x if isinstance(x, Raw) else html.escape(str(x))


def num(v: Any, fmt: str = "{:.2f}", scale: float = 1.0) -> str:
    """``v * scale`` formatted, or "-" for a missing or non-finite value."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return "-"
    return fmt.format(f * scale) if math.isfinite(f) else "-"


def table_html(head: Sequence[str], rows: Sequence[Sequence[Any]], *, align: str = "",
               caption: str = "", cls: str = "", scroll: bool = False) -> str:
    """A table; ``align``: one letter per column (l / r; default: first left, others right);
    ``scroll``: in a box of limited height that scrolls, its header kept in view."""
    align = align or "l" + "r" * (len(head) - 1)
    a = [' class="l"' if c == "l" else "" for c in align.ljust(len(head), "r")]
    out = [f'<div class="tw{" scroll" if scroll else ""}"><table class="{cls}">']
    if caption:
        out.append(f"<caption>{esc(caption)}</caption>")
    out.append("<thead><tr>" + "".join(f"<th{x}>{esc(h)}</th>" for h, x in zip(head, a))
               + "</tr></thead><tbody>")
    for r in rows:
        if isinstance(r, Raw):  # a whole row of HTML (an "omitted" note)
            out.append(f'<tr class="gap"><td colspan="{len(head)}">{r}</td></tr>')
            continue
        out.append("<tr>" + "".join(f"<td{x}>{esc(c)}</td>" for c, x in zip(r, a)) + "</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


def cap_rows(rows: list[Any], n: int = MAX_ROWS, head: int = 10) -> list[Any]:
    """At most ``n`` rows: the first ``head`` and the last ones, with a note row between."""
    if len(rows) <= n:
        return rows
    tail = n - head
    return [*rows[:head], Raw(f"… {len(rows) - n} rows left out (all of them: metrics.csv) …"),
            *rows[-tail:]]


def png_html(path: Path, alt: str, caption: str = "") -> str:
    """A PNG file of the folder as an ``<img>`` with a data URI (and an optional caption)."""
    data = base64.b64encode(path.read_bytes()).decode()
    img = f'<img src="data:image/png;base64,{data}" alt="{esc(alt)}">'
    return f"<figure>{img}<figcaption>{esc(caption)}</figcaption></figure>" if caption else img


def figure_html(svg: str, caption: str) -> str:
    return f'<figure class="svg">{svg}<figcaption>{caption}</figcaption></figure>'


def note(text: str) -> str:
    return f'<p class="note">{text}</p>'


# ----- markdown (summary.md) --------------------------------------------------------------------

def _inline(s: str) -> str:
    s = html.escape(s, quote=False)
    s = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", s)
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", s)


def _md_table(lines: list[str]) -> str:
    cells = [[c.strip() for c in ln.strip().strip("|").split("|")] for ln in lines]
    body = [c for c in cells[1:] if not all(re.fullmatch(r":?-+:?", x) for x in c if x)]
    head = cells[0]
    rows = [[Raw(_inline(x)) for x in r] + [""] * (len(head) - len(r)) for r in body]
    return table_html([Raw(_inline(h)) for h in head], rows)


def markdown_html(text: str, shift: int = 2) -> str:
    """A minimal markdown to HTML: ``#`` headings (level + ``shift``), ``|`` tables, ``-``
    bullet lists, ``**bold**``, ``code`` and paragraphs: what alprobe's summaries use."""
    out: list[str] = []
    para: list[str] = []
    lines = text.splitlines()

    def flush() -> None:
        if para:
            out.append(f"<p>{_inline(' '.join(para))}</p>")
            para.clear()

    i = 0
    while i < len(lines):
        line = lines[i].rstrip()
        h = re.match(r"^(#{1,6})\s+(.*)$", line)
        if h:
            flush()
            level = min(6, len(h[1]) + shift)
            out.append(f"<h{level}>{_inline(h[2])}</h{level}>")
        elif line.lstrip().startswith("|"):
            flush()
            j = i
            while j < len(lines) and lines[j].lstrip().startswith("|"):
                j += 1
            out.append(_md_table(lines[i:j]))
            i = j
            continue
        elif re.match(r"^\s*[-*]\s+", line):
            flush()
            items = []
            while i < len(lines) and lines[i].strip():
                if re.match(r"^\s*[-*]\s+", lines[i]):
                    items.append(re.sub(r"^\s*[-*]\s+", "", lines[i]))
                else:
                    items[-1] += " " + lines[i].strip()
                i += 1
            out.append("<ul>" + "".join(f"<li>{_inline(x)}</li>" for x in items) + "</ul>")
            continue
        elif not line.strip():
            flush()
        else:
            para.append(line.strip())
        i += 1
    flush()
    return "\n".join(out)


# ----- reading a folder ---------------------------------------------------------------------------

@dataclass
class CampaignData:
    """What the report shows of one campaign folder (aggregates only)."""

    directory: Path
    name: str
    metrics: list[dict[str, Any]]
    stages: dict[str, dict[str, Any]]
    status: dict[str, int]
    splits: dict[str, int]
    problems: list[dict[str, Any]]
    audits: dict[int, dict[str, dict[str, Any]]]
    audit_pngs: list[Path] = field(default_factory=list)
    importance: list[Path] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    campaign_yaml: str = ""
    versions: str = ""


def _text(path: Path) -> str:
    if not path.is_file():
        return ""
    text = path.read_text(errors="replace")
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + "\n… (cut)\n"


def _gen_of(path: Path) -> int:
    return int(path.name[4:7])


def read_campaign(directory: str | Path, images: bool = True) -> CampaignData:
    """Read a campaign folder for the report: metrics rows, stage records, frame counts by
    status (key-only queries), failed / rejected / timed-out frames' keys, audit JSONs and
    (``images``) the PNGs of the last generation's audit and atom-importance pictures."""
    import yaml

    from .ledger import Ledger

    d = Path(directory)
    L = Ledger(d, readonly=True)
    keep = ("fid", "status", "reason", "generation", "origin")
    problems = [{k: kv.get(k) for k in keep} for s in _BAD for kv in L.keys(status=s)]
    audits: dict[int, dict[str, dict[str, Any]]] = defaultdict(dict)
    for p in sorted((d / "audits").glob("gen_[0-9][0-9][0-9]_*_audit.json")):
        where = p.name[8:-len("_audit.json")]
        try:
            audits[_gen_of(p)][where] = json.loads(p.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
            continue
    yaml_text = _text(d / "campaign.yaml")
    try:
        config = yaml.safe_load(yaml_text) or {}
    except yaml.YAMLError:
        config = {}
    config = config if isinstance(config, dict) else {}  # a damaged file: shown, not used
    data = CampaignData(
        directory=d, name=str(config.get("name") or d.name), metrics=L.metrics(),
        stages=L.stages(), status={s: L.count(status=s) for s in _STATUSES},
        splits={s: L.count(status="labeled", split=s) for s in ("train", "calib", "test")},
        problems=problems, audits=dict(audits), config=config, campaign_yaml=yaml_text, versions=_text(d / "versions.json"))
    if images:
        data.audit_pngs, data.importance = _pngs(d / "audits")
    return data


def _pngs(folder: Path) -> tuple[list[Path], list[Path]]:
    """The last generation's risk-coverage and reliability PNGs; the atom-importance PNGs of
    the last generations that have any (at most MAX_IMPORTANCE)."""
    if not folder.is_dir():
        return [], []
    audit = sorted(folder.glob("gen_[0-9][0-9][0-9]_*_risk_coverage.png"))
    last = max((_gen_of(p) for p in audit), default=None)
    pngs = [folder / f"gen_{last:03d}_{w}_{k}.png" for w in ("test", "new")
            for k in ("risk_coverage", "reliability")] if last is not None else []
    imp = sorted(folder.glob("gen_[0-9][0-9][0-9]_importance_*.png"),
                 key=lambda p: (-_gen_of(p), p.name))
    return [p for p in pngs if p.is_file()], imp[:MAX_IMPORTANCE]


# ----- campaign sections (pure functions of CampaignData) ------------------------------------

def _dur(s: float) -> str:
    """Seconds as s / min / h."""
    if not math.isfinite(s):
        return "-"
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.1f} h"


def _interval(row: dict[str, Any]) -> str:
    """The 95% interval of a metrics row's test force MAE, in meV/Å."""
    return (f"{num(row.get('force_mae_lo_eV_A'), '{:.0f}', 1e3)}–"
            f"{num(row.get('force_mae_hi_eV_A'), '{:.0f}', 1e3)}")


def _unit(error: str) -> str:
    return {"energy": "eV", "energy_per_atom": "eV/atom"}.get(error, "eV/Å")


def _cards(items: list[tuple[str, str, str]]) -> str:
    return '<div class="cards">' + "".join(
        f'<div class="card"><div class="k">{esc(k)}</div><div class="v">{esc(v)}</div>'
        f'<div class="s">{esc(s)}</div></div>' for k, v, s in items) + "</div>"


def _state(data: CampaignData) -> str:
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


def overview_html(data: CampaignData) -> str:
    """Key numbers: generations, labels, test errors first -> last, probe AUROC, labels lost,
    wall and CPU time."""
    m, st = data.metrics, data.status
    planned = data.config.get("generations", "?")
    bad = sum(st[s] for s in _BAD)
    if not m:
        return _cards([("generations", f"0 of {planned}", _state(data))]) + note(
            "No generation finished yet: the report fills in as the campaign runs.")
    first, last = m[0], m[-1]
    wall = sum(float(r.get("wall_s") or 0) for r in m if r.get("wall_s") == r.get("wall_s"))
    cpu = sum(float(r.get("cpu_s") or 0) for r in m if r.get("cpu_s") == r.get("cpu_s"))
    return _cards([
        ("generation", f"{last['generation']} of {planned}", _state(data)),
        ("DFT labels (training pool)", num(last.get("labels"), "{:.0f}"),
         f"+ {data.splits['test']} held-out test frames; the backbone trained on "
         f"{num(last.get('train_frames'), '{:.0f}')}"),
        ("stress-set force MAE (meV/Å)", num(last.get("stress_force_mae_eV_A"), "{:.0f}", 1e3),
         "conditions beyond the exploration's ('-': no stress set)"),
        ("test force MAE (meV/Å)", (f"{num(first.get('force_mae_eV_A'), '{:.0f}', 1e3)} → "
                                    f"{num(last.get('force_mae_eV_A'), '{:.0f}', 1e3)}"),
         f"95% interval {_interval(last)} (gen {last['generation']})"),
        ("test energy MAE (meV/atom)", num(last.get("energy_mae_eV_per_atom"), "{:.1f}", 1e3),
         f"generation 0: {num(first.get('energy_mae_eV_per_atom'), '{:.1f}', 1e3)}"),
        ("probe AUROC, test set", num(last.get("probe_auroc_test")), "0.5 = chance, 1 = perfect"),
        ("labels not obtained", str(bad), ", ".join(f"{st[s]} {s}" for s in _BAD)),
        ("wall time", _dur(wall), f"CPU {_dur(cpu)}")])


def columns_table(rows: list[dict[str, Any]], columns: list[tuple]) -> str:
    """A per-generation table of metrics rows with :mod:`alprobe.report`'s column specs."""
    from .report import _cell

    def cell(r: dict[str, Any], c: tuple) -> str:
        try:
            return _cell(r, c[1], c[2], *c[3:])
        except (TypeError, ValueError):
            return "-"

    head = [c[0].replace("meV/A", "meV/Å") for c in columns]
    return table_html(head, cap_rows([[cell(r, c) for c in columns] for r in rows]),
                      scroll=len(rows) > 15)


def curve_rows(data: CampaignData) -> list[dict[str, Any]]:
    """The campaign's learning curve as :func:`alprobe.report.learning_curve_rows` rows."""
    from .report import learning_curve_rows

    ms = [r for r in data.metrics if "force_mae_eV_A" in r]
    rule = str((ms[-1].get("rule") if ms else None)
               or data.config.get("select", {}).get("rule", "probe"))
    return learning_curve_rows({data.name: ms}, {data.name: (data.name, 0, rule)})


def learning_section(data: CampaignData, prefix: str = "") -> str:
    """The learning curve (SVG) and the accuracy table per generation."""
    from .plots import learning_curves_svg
    from .report import _COLUMNS

    if not data.metrics:
        return note("No generation finished yet.")
    svg = learning_curves_svg(curve_rows(data), name=f"{prefix}learning-curves")
    return (figure_html(svg, "Errors of backbone g on the fixed held-out test set against the "
                        "DFT labels it trained on. Shaded: 95% bootstrap interval of the force "
                        "MAE over test frames.")
            + columns_table(data.metrics, _COLUMNS)
            + note("labels: DFT labels in the training pool (test set excluded); new / failed: "
                   "this generation's; hit rate: fraction of the rule's new labels whose true "
                   "error exceeded generation 0's threshold (abs: "
                   "select.hit_threshold_force_rmse_eV_A); wall: the generation's wall time."))


def audit_table_html(audit: dict[str, Any], caption: str) -> str:
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
        body.append([r.get("signal", "?"), num(r.get("n"), "{:.0f}"), num(r.get("prevalence")),
                     Raw(f"<strong>{esc(auc)}</strong>") if a == best else auc,
                     ci(r, "auprc"), num(r.get("e_aurc_err"), "{:.3f}"), ci(r, "spearman"),
                     num(r.get("enrichment_at_10pct")), num(r.get("ece"), "{:.3f}"),
                     num(r.get("brier"), "{:.3f}")])
    return table_html(["signal", "n", "unreliable", "AUROC [95% CI]", "AUPRC [95% CI]",
                       "E-AURC", "Spearman ρ [95% CI]", "enrich. @10%", "ECE", "Brier"],
                      body, caption=caption, cls="audit")


def reliability_section(data: CampaignData, prefix: str = "") -> str:
    """The trust signal per generation (table, SVG), the audits' AUROC per generation (SVG),
    the last generations' audit tables and the last generation's audit plots (PNG)."""
    from .plots import audit_auroc_svg, trust_signal_svg
    from .report import _SIGNAL_COLUMNS

    parts = [note("Each generation, probe g-1 scores the candidates before any label exists; "
                  "the audit then compares every trust signal with the true errors, on the "
                  "held-out test set (probe g) and on the frames just labeled (signals of "
                  "g-1). AUROC: how well a signal ranks unreliable frames (error above tau) "
                  "below reliable ones; ρ: Spearman of trust and error (negative is good).")]
    if data.metrics:
        parts += [figure_html(trust_signal_svg(data.metrics, f"{prefix}trust-signal"),
                              "The probe per generation: its candidates' P(reliable), its "
                              "AUROCs, its training pool."),
                  columns_table(data.metrics, _SIGNAL_COLUMNS)]
    if data.audits:
        parts.append(figure_html(audit_auroc_svg(data.audits, f"{prefix}audit-auroc"),
                                 "AUROC of every audited signal per generation (probe, kNN in "
                                 "latent space, energy, committee where trained); shaded: the "
                                 "first signal's bootstrap 95% interval."))
        unit = _unit(str((data.config.get("probe") or {}).get("error", "force_rmse")))
        tables = [audit_tables_html(g, data.audits[g], unit)
                  for g in sorted(data.audits)[-AUDIT_TABLE_GENERATIONS:][::-1]]
        parts.append(tables[0])
        if len(tables) > 1:
            parts.append(f"<details><summary>audit tables of generations "
                         f"{', '.join(str(g) for g in sorted(data.audits)[-len(tables):-1])}"
                         f"</summary>{''.join(tables[1:])}</details>")
    else:
        parts.append(note("No audit yet (audits/gen_NNN_{test,new}_audit.json)."))
    if data.audit_pngs:
        parts.append('<div class="grid2">' + "".join(
            png_html(p, p.stem, _png_caption(p)) for p in data.audit_pngs) + "</div>")
    return "\n".join(parts)


def audit_tables_html(g: int, audits: dict[str, dict[str, Any]], unit: str) -> str:
    """Generation g's audit tables (test set, then the frames just labeled)."""
    out = []
    for where, what in (("test", "held-out test set, probe g"),
                        ("new", "frames labeled in g, signals of g-1")):
        a = audits.get(where)
        if a:
            out.append(audit_table_html(a, (
                f"generation {g}, {what}: {a.get('n', '?')} frames, tau = "
                f"{num(a.get('tau'), '{:.3g}')} {unit}. {a.get('verdict', '')}")))
    return "".join(out)


def _png_caption(p: Path) -> str:
    where = "held-out test set" if "_test_" in p.name else "frames labeled in g"
    what = "risk–coverage" if p.stem.endswith("risk_coverage") else "reliability diagram"
    return f"generation {_gen_of(p)}, {where}: {what}"


def importance_section(data: CampaignData) -> str:
    """The atom-importance pictures of the least-trusted test frames (last generations)."""
    if not data.importance:
        return note("No atom-importance picture (audits/gen_NNN_importance_&lt;fid&gt;.png).")
    return (note("The least-trusted held-out test frames by probe g: each atom coloured by the "
                 "attention it receives (sums to 1 over the atoms); the title gives the "
                 "frame's P(reliable) and its true error. Latest generations only.")
            + '<div class="grid">' + "".join(
                png_html(p, p.stem, f"generation {_gen_of(p)}, frame "
                         f"{p.stem.rsplit('_', 1)[-1]}") for p in data.importance) + "</div>")


def pattern(reason: str) -> str:
    """A reason with its numbers masked, so that reasons of one kind group together."""
    return re.sub(r"\d+(?:\.\d+)?(?:e[-+]?\d+)?", "#", " ".join(str(reason).split()))[:200]


def gen_ranges(gens: Sequence[int], most: int = 8) -> str:
    """Generations as ranges ("1-3, 5"), at most ``most`` ranges shown."""
    gs = sorted(set(gens))
    spans: list[list[int]] = []
    for g in gs:
        if spans and g == spans[-1][1] + 1:
            spans[-1][1] = g
        else:
            spans.append([g, g])
    text = [f"{a}" if a == b else f"{a}-{b}" for a, b in spans]
    return ", ".join(text[:most]) + (f", … ({len(text) - most} more)" if len(text) > most else "")


def grouped_reasons(items: list[tuple[str, str, int, str]]) -> list[list[Any]]:
    """Rows (kind, reason pattern, count, generations, examples) of (kind, reason, generation,
    example id) items grouped by kind and masked reason, most frequent first, capped at
    MAX_REASONS with a final row counting the rest."""
    groups: dict[tuple[str, str], list[tuple[str, int, str]]] = defaultdict(list)
    for kind, reason, g, ident in items:
        groups[(kind, pattern(reason))].append((reason, g, ident))
    order = sorted(groups, key=lambda k: (-len(groups[k]), k))
    rows: list[list[Any]] = []
    for kind, pat in order[:MAX_REASONS]:
        its = groups[(kind, pat)]
        ex = "; ".join(f"{i}: {r}" if i else r for r, _, i in its[:MAX_EXAMPLES])
        rows.append([kind, pat, str(len(its)), gen_ranges([g for _, g, _ in its]), ex])
    if len(order) > MAX_REASONS:
        rest = sum(len(groups[k]) for k in order[MAX_REASONS:])
        rows.append(["…", f"{len(order) - MAX_REASONS} other reasons", str(rest), "", ""])
    return rows


def walker_stops(stages: dict[str, dict[str, Any]]
                 ) -> tuple[dict[int, dict[str, int]], list[tuple[str, str, int, str]]]:
    """From the explore (and generation-0 bootstrap) stage records: walkers per generation by
    stop kind, and every (kind, reason, generation, walker) of a walker that did not complete."""
    counts: dict[int, dict[str, int]] = {}
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


def stops_section(data: CampaignData, prefix: str = "") -> str:
    """Why each walker stopped: walkers per generation by kind (SVG), the reasons grouped."""
    from .plots import stops_svg

    counts, items = walker_stops(data.stages)
    if not counts:
        return note("No explore stage recorded yet.")
    total = Counter()
    for c in counts.values():
        total.update(c)
    parts = [note("A walker runs its MD to the end (completed) unless its trust stays below "
                  "explore.trust_floor for explore.patience samples (low trust), two atoms come "
                  "too close or a fragment flies off (unphysical) or the MD fails. Totals: "
                  + ", ".join(f"{v} {k}" for k, v in total.most_common()) + "."),
             figure_html(stops_svg(counts, f"{prefix}walker-stops"),
                         "Walkers per generation by why they stopped.")]
    if items:
        parts.append(table_html(["kind", "reason (numbers masked)", "walkers", "generations",
                                 "examples"], grouped_reasons(items), align="llrll",
                                cls="reasons"))
    else:
        parts.append(note("Every walker completed its run."))
    return "\n".join(parts)


def labels_section(data: CampaignData) -> str:
    """Frames by status (labeled ones by split) and the reasons of failures, rejections and
    timeouts, grouped."""
    st, sp = data.status, data.splits
    rows = [["candidate", str(st["candidate"]), "sampled by a walker, not picked"],
            ["selected", str(st["selected"]), "picked, label not back yet"],
            ["labeled", str(st["labeled"]), (f"{sp['train']} train, {sp['calib']} "
                                             "calibration (kept out of backbone training), "
                                             f"{sp['test']} held-out test")],
            ["failed", str(st["failed"]), "SCF did not converge or PySCF raised"],
            ["rejected", str(st["rejected"]), "refused before DFT (a bad structure)"],
            ["timeout", str(st["timeout"]), "killed at dft.timeout_s"]]
    parts = [table_html(["status", "frames", "meaning"], rows, align="lrl")]
    per_gen = [[str(parse_stage_key(k)[0])] + [str(v.get(s, 0)) for s in ("labeled", *_BAD)]
               for k, v in sorted(data.stages.items())
               if (parse_stage_key(k) or (0, ""))[1] == "label" and any(v.get(s) for s in _BAD)]
    if per_gen:
        parts.append(table_html(["generation", "labeled", "failed", "rejected", "timeout"],
                                cap_rows(per_gen, 30, 5), caption="generations with labels "
                                "not obtained"))
    if data.problems:
        items = [(p["status"], str(p.get("reason") or "unknown"), int(p.get("generation") or 0),
                  str(p.get("fid") or "")) for p in data.problems]
        parts.append(table_html(["status", "reason (numbers masked)", "frames", "generations",
                                 "examples (frame: reason)"], grouped_reasons(items),
                                align="llrll", cls="reasons"))
    else:
        parts.append(note("Every frame sent to DFT was labeled."))
    return "\n".join(parts)


def costs_section(data: CampaignData, prefix: str = "") -> str:
    """Wall time per stage and CPU time per account: per generation (SVG) and totals."""
    from .plots import costs_svg

    m = data.metrics
    if not m:
        return note("No generation finished yet.")
    g0 = [r for r in m if r.get("generation") == 0]
    later = [r for r in m if r.get("generation", 0) > 0]

    def tot(rows: list[dict[str, Any]], key: str) -> float:
        return float(sum(float(r.get(key) or 0.0) for r in rows
                         if r.get(key) == r.get(key)))

    wall = tot(m, "wall_s")
    rows = []
    for st in (*STAGES, "driver"):
        w0, w1 = tot(g0, f"{st}_s"), tot(later, f"{st}_s")
        c0, c1 = tot(g0, f"{st}_cpu_s"), tot(later, f"{st}_cpu_s")
        if w0 or w1 or c0 or c1:
            rows.append([st, num(w0, "{:.1f}"), num(c0, "{:.1f}"), num(w1, "{:.1f}"),
                         num(c1, "{:.1f}"), num((w0 + w1) / wall if wall else _NAN,
                                                "{:.0%}")])
    rows.append([Raw("<strong>total</strong>"), num(tot(g0, "wall_s"), "{:.1f}"),
                 num(tot(g0, "cpu_s"), "{:.1f}"), num(tot(later, "wall_s"), "{:.1f}"),
                 num(tot(later, "cpu_s"), "{:.1f}"), "100%"])
    n = len(later)
    return "\n".join([
        figure_html(costs_svg(m, f"{prefix}costs"), "Per generation: the driver's wall time in "
                    "each stage and the tasks' CPU time in each account (s)."),
        table_html(["stage", "gen 0 wall s", "gen 0 CPU s", f"gens 1-{n} wall s" if n else
                    "later wall s", f"gens 1-{n} CPU s" if n else "later CPU s",
                    "share of wall"], rows),
        note("Wall: the driver's time in the stage (generation 0 also spends it in rattle, "
             "bootstrap and split); CPU: the tasks booked to that account plus the driver's own "
             "thread (driver). Shares do not add up to 100%: stages overlap with bookkeeping.")])


def provenance_section(campaign_yaml: str, versions: str, what: str = "campaign.yaml") -> str:
    """The resolved campaign (or comparison) file and the package versions, verbatim."""
    return (f"<h3>{esc(what)}</h3><pre>{esc(campaign_yaml or '(missing)')}</pre>"
            f"<h3>versions.json</h3><pre>{esc(versions or '(missing)')}</pre>")


def campaign_sections(data: CampaignData, prefix: str = "") -> list[Section]:
    """Every section of a campaign's page (ids prefixed with ``prefix``)."""
    return [Section(f"{prefix}overview", "Overview", overview_html(data)),
            Section(f"{prefix}learning", "Learning curve", learning_section(data, prefix)),
            Section(f"{prefix}reliability", "Reliability audit", reliability_section(data, prefix)),
            Section(f"{prefix}importance", "Least-trusted frames", importance_section(data)),
            Section(f"{prefix}walkers", "Why walkers stopped", stops_section(data, prefix)),
            Section(f"{prefix}labels", "Labels by status", labels_section(data)),
            Section(f"{prefix}costs", "Cost per stage", costs_section(data, prefix)),
            Section(f"{prefix}provenance", "Campaign file and versions",
                    provenance_section(data.campaign_yaml, data.versions))]


# ----- comparisons ---------------------------------------------------------------------------

@dataclass
class ComparisonData:
    """What the report shows of a comparison folder: its file, its runs and gen-0 folders."""

    directory: Path
    name: str
    spec_text: str
    runs: dict[str, tuple[str, int, str]]
    data: dict[str, CampaignData]
    shared: dict[str, CampaignData]
    summary: str = ""
    noise_floor: str = ""
    versions: str = ""


def run_of(name: str, arms: Sequence[str]) -> tuple[str, int]:
    """(arm, replica) of a run folder's name: "<arm>" or "<arm>-r<replica>"."""
    m = re.fullmatch(r"(.+)-r(\d+)", name)
    if name not in arms and m and m[1] in arms:
        return m[1], int(m[2])
    return name, 0


def read_comparison(directory: str | Path) -> ComparisonData:
    """Read a comparison folder: comparison.yaml, every run in ``arms/`` and generation-0
    folder ``shared*`` (as :func:`read_campaign`, at most 3 importance pictures per run and
    no audit PNGs), summary.md, noise_floor.json."""
    import yaml

    d = Path(directory)
    spec_text = _text(d / "comparison.yaml")
    try:
        spec = yaml.safe_load(spec_text) or {}
    except yaml.YAMLError:
        spec = {}
    spec = spec if isinstance(spec, dict) else {}
    arms = list(spec.get("arms") or {})
    base_rule = str(((spec.get("shared") or {}).get("select") or {}).get("rule", "probe"))
    folders = sorted(p for p in (d / "arms").glob("*") if (p / "ledger.db").is_file()) \
        if (d / "arms").is_dir() else []
    runs, data = {}, {}
    for p in folders:
        cd = read_campaign(p)
        cd.audit_pngs, cd.importance = [], cd.importance[:3]
        arm, rep = run_of(p.name, arms)
        over = ((spec.get("arms") or {}).get(arm) or {}).get("select") or {}
        rule = str((cd.metrics[-1].get("rule") if cd.metrics else None)
                   or over.get("rule", base_rule))
        runs[p.name], data[p.name] = (arm, rep, rule), cd
    shared = {p.name: read_campaign(p, images=False) for p in sorted(d.glob("shared*"))
              if (p / "ledger.db").is_file()}
    versions = next((c.versions for c in [*shared.values(), *data.values()] if c.versions), "")
    return ComparisonData(d, str(spec.get("name") or d.name), spec_text, runs, data, shared,
                          _text(d / "summary.md"), _text(d / "noise_floor.json"), versions)


def comparison_overview(c: ComparisonData) -> str:
    """Arms, replicas, and one row per run: where it is and its last test errors."""
    arms = list(dict.fromkeys(a for a, _, _ in c.runs.values()))
    reps = sorted({r for _, r, _ in c.runs.values()})
    finished = sum(_state(d) == "finished" for d in c.data.values())
    rows = []
    for run, (arm, rep, rule) in c.runs.items():
        d = c.data[run]
        last = d.metrics[-1] if d.metrics else {}
        rows.append([Raw(f'<a href="#run-{esc(run)}">{esc(run)}</a>'), arm, str(rep), rule,
                     num(last.get("generation"), "{:.0f}"), num(last.get("labels"), "{:.0f}"),
                     num(last.get("train_frames"), "{:.0f}"),
                     num(last.get("force_mae_eV_A"), "{:.1f}", 1e3),
                     _interval(last),
                     num(last.get("force_rmse_p95_eV_A"), "{:.0f}", 1e3),
                     num(last.get("stress_force_mae_eV_A"), "{:.1f}", 1e3),
                     num(last.get("energy_mae_eV_per_atom"), "{:.2f}", 1e3),
                     num(last.get("signal_auroc_test")), _state(d)])
    cards = _cards([("arms", str(len(arms)), ", ".join(arms)),
                    ("replicas", str(len(reps)), "replica r of every arm shares r's seeds"),
                    ("runs finished", f"{finished} of {len(c.runs)}", ""),
                    ("generation-0 folders", str(len(c.shared)), ", ".join(c.shared))])
    return cards + table_html(
        ["run", "arm", "replica", "rule", "gen", "labels", "trained on", "F MAE meV/Å",
         "95% CI", "p95 frame F RMSE", "stress F MAE", "E MAE meV/atom", "signal AUROC test",
         "state"], rows, align="lllrrrrrrrrrrl")


def comparison_costs(c: ComparisonData) -> str:
    """Wall and CPU time per run and per generation-0 folder, by stage (SVG and table)."""
    from .plots import arm_costs_svg
    from .report import cost_rows

    costs = cost_rows({r: d.metrics for r, d in c.data.items()},
                      {s: d.metrics for s, d in c.shared.items()})
    if not costs:
        return note("No generation finished yet.")
    stages = [s for s in dict.fromkeys(x["stage"] for x in costs) if s != "total"
              and any(x["wall_s"] for x in costs if x["stage"] == s)]
    by = {(x["arm"], x["stage"]): x for x in costs}
    rows = [[a] + [num(by[(a, s)]["wall_s"], "{:.0f}") for s in stages]
            + [num(by[(a, "total")]["wall_s"], "{:.0f}"), num(by[(a, "total")]["cpu_s"],
                                                                "{:.0f}")]
            for a in dict.fromkeys(x["arm"] for x in costs)]
    return (figure_html(arm_costs_svg(costs), "Wall (driver) and CPU (tasks + driver) seconds "
                        "of each run's own generations and of each generation-0 folder, by "
                        "stage. Runs share the workers, so their wall times overlap.")
            + table_html(["run", *[f"{s} s" for s in stages], "wall s", "CPU s"], rows))


def _run_block(run: str, arm: str, rep: int, d: CampaignData) -> str:
    """One run as a collapsible block holding its campaign sections."""
    last = d.metrics[-1] if d.metrics else {}
    head = (f"{esc(run)} <span class='muted'>(arm {esc(arm)}, replica {rep}; generation "
            f"{num(last.get('generation'), '{:.0f}')}, test force MAE "
            f"{num(last.get('force_mae_eV_A'), '{:.1f}', 1e3)} meV/Å)</span>")
    body = "".join(f'<h3 id="{s.id}">{esc(s.title)}</h3>{s.body}'
                   for s in campaign_sections(d, prefix=f"run-{run}-")[:-1])
    return f'<details class="run" id="run-{esc(run)}"><summary>{head}</summary>{body}</details>'


def comparison_sections(c: ComparisonData) -> list[Section]:
    """Every section of a comparison's page."""
    from .plots import learning_curves_svg
    from .report import learning_curve_rows

    curves = learning_curve_rows({r: [m for m in d.metrics if "force_mae_eV_A" in m]
                                  for r, d in c.data.items()}, c.runs)
    lc = (figure_html(learning_curves_svg(curves), "Test errors against DFT labels, one colour "
                      "per arm: bold the mean over replicas, faint each replica with its 95% "
                      "interval over test frames (shaded).") if curves
          else note("No generation finished yet."))
    summary = (markdown_html(c.summary) if c.summary else
               note("No summary.md yet (written when the comparison finishes)."))
    shared = "".join(f"<h3>{esc(n)}</h3>" + overview_html(d) + stops_section(d, f"{n}-")
                     + labels_section(d) for n, d in c.shared.items()) or note(
        "No generation-0 folder yet.")
    runs = "".join(_run_block(r, a, rep, c.data[r]) for r, (a, rep, _) in c.runs.items())
    prov = provenance_section(c.spec_text, c.versions, "comparison.yaml") + (
        f"<h3>noise_floor.json</h3><pre>{esc(c.noise_floor)}</pre>" if c.noise_floor else "")
    return [Section("overview", "Overview", comparison_overview(c)),
            Section("learning", "Learning curves", lc),
            Section("summary", "Summary and paired differences", summary),
            Section("costs", "Cost per run and stage", comparison_costs(c)),
            Section("generation0", "Generation 0 (shared)", shared),
            Section("runs", "Runs: reliability audit, walkers, labels", note(
                "Each run's own report; click a run to open it.") + runs),
            Section("provenance", "Comparison file and versions", prov)]


# ----- the page ------------------------------------------------------------------------------

CSS = """
:root{--fg:#1d2530;--muted:#5b6675;--line:#d9dee5;--bg:#f4f6f8;--accent:#1f5fa8}
*{box-sizing:border-box}
body{margin:0;font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,
 sans-serif;color:var(--fg);background:var(--bg)}
header{background:#17324d;color:#fff;padding:16px 32px}
header h1{margin:0;font-size:24px;font-weight:600}
header p{margin:4px 0 0;color:#c9d6e3;font-size:13px}
nav.toc{position:sticky;top:0;z-index:10;background:#fff;border-bottom:1px solid var(--line);
 padding:6px 32px;box-shadow:0 1px 3px rgba(0,0,0,.05)}
nav.toc ol{list-style:none;margin:0;padding:0;display:flex;flex-wrap:wrap;gap:2px 20px;
 font-size:14px;counter-reset:toc}
nav.toc li{counter-increment:toc}
nav.toc li::before{content:counter(toc) ". ";color:var(--muted)}
nav.toc a{color:var(--accent);text-decoration:none}
nav.toc a:hover{text-decoration:underline}
main{max-width:1200px;margin:0 auto;padding:4px 24px 32px}
section{background:#fff;border:1px solid var(--line);border-radius:8px;padding:4px 24px 16px;
 margin:16px 0;scroll-margin-top:44px}
h2{font-size:20px;font-weight:600;border-bottom:2px solid var(--accent);padding-bottom:4px}
h3{font-size:16px;font-weight:600;margin:18px 0 6px;scroll-margin-top:44px}
h4,h5{font-size:15px;margin:14px 0 4px}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(200px,1fr));gap:12px;
 margin:12px 0}
.card{border:1px solid var(--line);border-radius:6px;padding:8px 14px;background:#fafbfc}
.card .k{font-size:12px;color:var(--muted);text-transform:uppercase;letter-spacing:.03em}
.card .v{font-size:22px;font-weight:600;font-variant-numeric:tabular-nums}
.card .s{font-size:12px;color:var(--muted)}
.tw{overflow-x:auto;margin:10px 0}
.tw.scroll{max-height:440px;overflow-y:auto;border:1px solid var(--line);width:fit-content;
 max-width:100%}
.tw.scroll th{position:sticky;top:0;z-index:1}
table{border-collapse:collapse;font-size:13px;font-variant-numeric:tabular-nums}
caption{text-align:left;font-size:13px;color:var(--muted);padding:4px 0}
th,td{padding:3px 10px;border-bottom:1px solid #e6e9ee;text-align:right;white-space:nowrap}
th{background:#eef2f7;font-weight:600}
th.l,td.l{text-align:left}
tbody tr:nth-child(even){background:#f8f9fb}
table.reasons td{white-space:normal;min-width:60px;max-width:560px}
tr.gap td{text-align:center;color:var(--muted);font-style:italic}
figure{margin:12px 0}
figure.svg svg{max-width:100%;height:auto;display:block}
figcaption{font-size:13px;color:var(--muted);margin-top:2px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(340px,1fr));gap:12px}
.grid figure{margin:0}
.grid2{display:grid;grid-template-columns:repeat(2,minmax(0,1fr));gap:12px;
 align-items:start}
.grid2 figure{margin:0}
.grid2 img{max-height:360px;width:auto}
.grid img,.grid2 img{max-width:100%;height:auto;border:1px solid var(--line);border-radius:4px}
pre{background:#f3f5f8;border:1px solid var(--line);border-radius:6px;padding:10px;
 font-size:12px;max-height:420px;overflow:auto}
.note{color:var(--muted);font-size:13px}
.muted{color:var(--muted);font-weight:400}
details.run{border:1px solid var(--line);border-radius:6px;margin:10px 0;padding:2px 14px}
details.run>summary{cursor:pointer;font-weight:600;padding:6px 0}
summary{cursor:pointer;color:var(--accent);font-size:14px;margin:6px 0}
footer{text-align:center;color:var(--muted);font-size:12px;padding:16px}
"""


def page_html(title: str, subtitle: str, sections: Sequence[Section]) -> str:
    """The whole page: header, table of contents, sections; no external resource."""
    from .version import __version__

    toc = "".join(f'<li><a href="#{esc(s.id)}">{esc(s.title)}</a></li>' for s in sections)
    body = "\n".join(f'<section id="{esc(s.id)}"><h2>{esc(s.title)}</h2>\n{s.body}\n</section>'
                     for s in sections)
    now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<link rel=\"icon\" href=\"data:,\"><title>{esc(title)}</title>"
            f"<style>{CSS}</style></head>\n<body><header><h1>{esc(title)}</h1>"
            f"<p>{subtitle}</p></header>\n<nav class=\"toc\"><ol>{toc}</ol></nav>\n"
            f"<main>{body}</main>\n<footer>alprobe {esc(__version__)} · report written {now}"
            "</footer></body></html>\n")


def write_report(directory: str | Path) -> Path:
    """Write ``directory/report.html`` for a campaign folder (``ledger.db``) or a comparison
    folder (``comparison.yaml``) and return its path. Safe while the campaign runs (reads
    the ledger read-only). ReportError if the folder is neither."""
    from .files import atomic_write

    d = Path(directory)
    if not d.is_dir():
        raise ReportError(f"{d}: no such folder")
    if (d / "comparison.yaml").is_file():
        c = read_comparison(d)
        text = page_html(f"Comparison {c.name}", f"{esc(d.resolve())} · {len(c.runs)} runs",
                         comparison_sections(c))
    elif (d / "ledger.db").is_file():
        data = read_campaign(d)
        text = page_html(f"Campaign {data.name}", f"{esc(d.resolve())} · {esc(_state(data))}",
                         campaign_sections(data))
    else:
        raise ReportError(f"{d} is not a campaign folder (no ledger.db) or a comparison folder "
                          "(no comparison.yaml)")
    out = d / "report.html"
    atomic_write(out, text)
    return out
