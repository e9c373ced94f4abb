"""A small document model and its three renderings: plain text (``alprobe status``), markdown
(``summary.md``) and HTML (``report.html``).

A report is a list of blocks (``Heading``, ``Paragraph``, ``Bullets``, ``Table``, ``Cards``,
``Figure``, ``Gallery``, ``Pre``, ``Details``, ``Section``), plain frozen dataclasses built by
the section functions of this package. Text in them may carry a little inline markup, read by
one function (:func:`inline`) for every format: ``**bold**``, ```code```, ``[text](#anchor)``
(links within the page only) and backslash escapes (``\\*``); :func:`plain` escapes text that
comes from data (failure reasons, file contents). Tables, headings and paragraphs render the
same numbers in every format: a section is written once.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

__all__ = ["Block", "Bullets", "Cards", "Details", "Figure", "Gallery", "Gap", "Heading",
           "Paragraph", "Pre", "Section", "Table", "inline", "plain", "shifted", "to_html",
           "to_markdown", "to_text"]


@dataclass(frozen=True)
class Heading:
    """A heading of ``level`` 1-6; ``id``: its anchor in the HTML page."""

    text: str
    level: int = 2
    id: str = ""


@dataclass(frozen=True)
class Paragraph:
    """A paragraph (a newline in ``text`` is kept in text and markdown); ``note``: drawn
    muted in HTML."""

    text: str
    note: bool = False


@dataclass(frozen=True)
class Bullets:
    """A list; an item is a text or (text, sub-items)."""

    items: Sequence[str | tuple[str, Sequence[str]]]


@dataclass(frozen=True)
class Gap:
    """A table row across every column, in place of left-out rows."""

    text: str


@dataclass(frozen=True)
class Table:
    """Rows of cells under a head. ``align``: one letter per column, l or r (default: the
    first left, the others right); ``caption`` above it; ``cls`` and ``scroll`` (a box of
    limited height with the head kept in view) only in HTML."""

    head: Sequence[str]
    rows: Sequence[Sequence[str] | Gap]
    align: str = ""
    caption: str = ""
    cls: str = ""
    scroll: bool = False

    def aligns(self) -> str:
        return (self.align or "l" + "r" * (len(self.head) - 1)).ljust(len(self.head), "r")


@dataclass(frozen=True)
class Cards:
    """Key numbers: (what, value, small print) each."""

    items: Sequence[tuple[str, str, str]]


@dataclass(frozen=True)
class Figure:
    """A figure: inline SVG text (``alprobe.plots.svg_text``) or a PNG file; ``name`` is the
    image's alt text."""

    caption: str
    svg: str = ""
    png: Path | None = None
    name: str = ""


@dataclass(frozen=True)
class Gallery:
    """Figures side by side (``cls`` "grid": as many as fit; "grid2": two per row)."""

    figures: Sequence[Figure]
    cls: str = "grid"


@dataclass(frozen=True)
class Pre:
    """Text shown as it is (a file's contents)."""

    text: str


@dataclass(frozen=True)
class Details:
    """Blocks folded under a one-line ``summary`` (open in text and markdown); ``muted``:
    small print after it."""

    summary: str
    blocks: Sequence[Block]
    muted: str = ""
    id: str = ""
    cls: str = ""


@dataclass(frozen=True)
class Section:
    """One part of a page: anchor id, title (a level-2 heading) and its blocks."""

    id: str
    title: str
    blocks: Sequence[Block] = field(default_factory=list)


Block = Heading | Paragraph | Bullets | Table | Cards | Figure | Gallery | Pre | Details | Section


def shifted(blocks: Sequence[Block], by: int) -> list[Block]:
    """``blocks`` with every top-level heading ``by`` levels deeper (at most 6)."""
    return [replace(b, level=min(6, b.level + by)) if isinstance(b, Heading) else b
            for b in blocks]


# ----- inline markup ---------------------------------------------------------------------------

_INLINE = re.compile(r"\\([\\*`\[\]|])|\*\*(.+?)\*\*|`([^`]+)`|\[([^\]]+)\]\((#[^)\s]*)\)")


def plain(text: object) -> str:
    """``text`` with the inline markup's characters escaped: shown as it is everywhere."""
    return re.sub(r"([\\*`\[\]])", r"\\\1", str(text))


def inline(text: str, fmt: str) -> str:
    """``text``'s inline markup in ``fmt`` ("text", "markdown" or "html")."""
    out, pos = [], 0

    def lit(s: str) -> str:
        return html.escape(s, quote=False) if fmt == "html" else s

    for m in _INLINE.finditer(text):
        out.append(lit(text[pos:m.start()]))
        pos = m.end()
        esc, bold, code, label, href = m.groups()
        if esc is not None:
            out.append({"text": esc, "html": html.escape(esc)}.get(fmt, "\\" + esc))
        elif bold is not None:
            out.append({"text": bold, "html": f"<strong>{lit(bold)}</strong>"}.get(
                fmt, f"**{bold}**"))
        elif code is not None:
            out.append({"text": code, "html": f"<code>{lit(code)}</code>"}.get(
                fmt, f"`{code}`"))
        else:
            out.append({"text": label, "html": f'<a href="{html.escape(href)}">{lit(label)}</a>'
                        }.get(fmt, f"[{label}]({href})"))
    out.append(lit(text[pos:]))
    return "".join(out)


# ----- plain text -----------------------------------------------------------------------------

def _text_table(t: Table) -> str:
    head = [inline(h, "text") for h in t.head]
    rows = [[inline(c, "text") for c in r] for r in t.rows if not isinstance(r, Gap)]
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(head)]
    aligns = t.aligns()

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if a == "l" else c.rjust(w)
                         for c, w, a in zip(cells, widths, aligns)).rstrip()

    body = [inline(r.text, "text") if isinstance(r, Gap) else line([inline(c, "text") for c in r])
            for r in t.rows]
    return "\n".join(([inline(t.caption, "text")] if t.caption else []) + [line(head)] + body)


def _text_bullets(b: Bullets, fmt: str) -> str:
    lines = []
    for item in b.items:
        text, subs = (item, ()) if isinstance(item, str) else item
        lines.append(f"- {inline(text, fmt)}")
        lines += [f"  - {inline(s, fmt)}" for s in subs]
    return "\n".join(lines)


def _text(b: Block) -> str:
    if isinstance(b, Heading):
        return inline(b.text, "text")
    if isinstance(b, Paragraph):
        return inline(b.text, "text")
    if isinstance(b, Bullets):
        return _text_bullets(b, "text")
    if isinstance(b, Table):
        return _text_table(b)
    if isinstance(b, Cards):
        return "\n".join(f"{k}: {v}" + (f" ({s})" if s else "") for k, v, s in b.items)
    if isinstance(b, Figure):
        return f"[figure: {inline(b.caption, 'text')}]"
    if isinstance(b, Gallery):
        return "\n".join(_text(f) for f in b.figures)
    if isinstance(b, Pre):
        return b.text.rstrip("\n")
    if isinstance(b, Details):
        return to_text([Paragraph(b.summary + (f" ({b.muted})" if b.muted else "")),
                        *b.blocks])
    return to_text([Heading(b.title), *b.blocks])


def to_text(blocks: Sequence[Block]) -> str:
    """Plain text: tables aligned in columns, blocks apart by a blank line."""
    return "\n\n".join(s for s in (_text(b) for b in blocks) if s)


# ----- markdown -------------------------------------------------------------------------------

def _md_table(t: Table) -> str:
    def row(cells: Sequence[str]) -> str:
        text = [inline(c, "markdown").replace("|", "\\|") for c in cells]
        return "|" + "|".join(f" {c} " if c else " " for c in text) + "|"

    lines = [row(t.head), "|" + "---|" * len(t.head)]
    lines += [row(r) if not isinstance(r, Gap) else row([r.text] + [""] * (len(t.head) - 1))
              for r in t.rows]
    return "\n".join(([inline(t.caption, "markdown"), ""] if t.caption else []) + lines)


def _md(b: Block) -> str:
    if isinstance(b, Heading):
        return "#" * b.level + " " + inline(b.text, "markdown")
    if isinstance(b, Paragraph):
        return inline(b.text, "markdown")
    if isinstance(b, Bullets):
        return _text_bullets(b, "markdown")
    if isinstance(b, Table):
        return _md_table(b)
    if isinstance(b, Cards):
        return "\n".join(f"- {k}: **{v}**" + (f" ({s})" if s else "") for k, v, s in b.items)
    if isinstance(b, Figure):
        cap = inline(b.caption, "markdown")
        return f"![{b.name or cap}]({b.png})\n\n{cap}" if b.png else f"*{cap}*"
    if isinstance(b, Gallery):
        return "\n\n".join(_md(f) for f in b.figures)
    if isinstance(b, Pre):
        return "```\n" + b.text.rstrip("\n") + "\n```"
    if isinstance(b, Details):
        return to_markdown([Paragraph(f"**{b.summary}**" + (f" ({b.muted})" if b.muted else "")),
                            *b.blocks]).rstrip("\n")
    return to_markdown([Heading(b.title), *b.blocks]).rstrip("\n")


def to_markdown(blocks: Sequence[Block]) -> str:
    """Markdown: blocks apart by a blank line, ending in one newline."""
    return "\n\n".join(s for s in (_md(b) for b in blocks) if s) + "\n"


# ----- HTML ------------------------------------------------------------------------------------

def _attr(name: str, value: str) -> str:
    return f' {name}="{html.escape(value)}"' if value else ""


def _html_table(t: Table) -> str:
    a = [' class="l"' if c == "l" else "" for c in t.aligns()]
    out = [f'<div class="tw{" scroll" if t.scroll else ""}"><table class="{t.cls}">']
    if t.caption:
        out.append(f"<caption>{inline(t.caption, 'html')}</caption>")
    out.append("<thead><tr>" + "".join(f"<th{x}>{inline(h, 'html')}</th>"
                                       for h, x in zip(t.head, a)) + "</tr></thead><tbody>")
    for r in t.rows:
        if isinstance(r, Gap):
            out.append(f'<tr class="gap"><td colspan="{len(t.head)}">{inline(r.text, "html")}'
                       "</td></tr>")
        else:
            out.append("<tr>" + "".join(f"<td{x}>{inline(c, 'html')}</td>"
                                        for c, x in zip(r, a)) + "</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


def _html_figure(f: Figure) -> str:
    cap = f"<figcaption>{inline(f.caption, 'html')}</figcaption>" if f.caption else ""
    if f.svg:
        return f'<figure class="svg">{f.svg}{cap}</figure>'
    data = base64.b64encode(Path(f.png).read_bytes()).decode() if f.png else ""
    return (f'<figure><img src="data:image/png;base64,{data}"'
            f'{_attr("alt", f.name or inline(f.caption, "text"))}>{cap}</figure>')


def _html_bullets(b: Bullets) -> str:
    items = []
    for item in b.items:
        text, subs = (item, ()) if isinstance(item, str) else item
        sub = "<ul>" + "".join(f"<li>{inline(s, 'html')}</li>" for s in subs) + "</ul>"
        items.append(f"<li>{inline(text, 'html')}{sub if subs else ''}</li>")
    return "<ul>" + "".join(items) + "</ul>"


def _html(b: Block) -> str:
    if isinstance(b, Heading):
        return f"<h{b.level}{_attr('id', b.id)}>{inline(b.text, 'html')}</h{b.level}>"
    if isinstance(b, Paragraph):
        return f"<p{_attr('class', 'note' if b.note else '')}>{inline(b.text, 'html')}</p>"
    if isinstance(b, Bullets):
        return _html_bullets(b)
    if isinstance(b, Table):
        return _html_table(b)
    if isinstance(b, Cards):
        return '<div class="cards">' + "".join(
            f'<div class="card"><div class="k">{html.escape(k)}</div><div class="v">'
            f'{html.escape(v)}</div><div class="s">{html.escape(s)}</div></div>'
            for k, v, s in b.items) + "</div>"
    if isinstance(b, Figure):
        return _html_figure(b)
    if isinstance(b, Gallery):
        return f'<div class="{b.cls}">' + "".join(_html_figure(f) for f in b.figures) + "</div>"
    if isinstance(b, Pre):
        return f"<pre>{html.escape(b.text)}</pre>"
    if isinstance(b, Details):
        muted = f' <span class="muted">{inline(b.muted, "html")}</span>' if b.muted else ""
        return (f"<details{_attr('class', b.cls)}{_attr('id', b.id)}><summary>"
                f"{inline(b.summary, 'html')}{muted}</summary>{to_html(b.blocks)}</details>")
    return (f'<section id="{html.escape(b.id)}"><h2>{inline(b.title, "html")}</h2>\n'
            f"{to_html(b.blocks)}\n</section>")


def to_html(blocks: Sequence[Block]) -> str:
    """HTML elements (no page around them: see :mod:`alprobe.report.html`)."""
    return "\n".join(_html(b) for b in blocks)
