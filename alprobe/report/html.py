"""The HTML page around the report's blocks: its style sheet, header, table of contents and
footer. One self-contained file: inline CSS, figures as inline SVG or PNG data URIs, nothing
fetched when it is viewed."""

from __future__ import annotations

import datetime
import html
from collections.abc import Sequence

from .blocks import Section, to_html

__all__ = ["CSS", "page_html"]

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
    """The whole page: header (``title``, the plain-text ``subtitle``), table of contents,
    the sections; no external resource."""
    from ..version import __version__

    esc = html.escape
    toc = "".join(f'<li><a href="#{esc(s.id)}">{esc(s.title)}</a></li>' for s in sections)
    now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<link rel=\"icon\" href=\"data:,\"><title>{esc(title)}</title>"
            f"<style>{CSS}</style></head>\n<body><header><h1>{esc(title)}</h1>"
            f"<p>{esc(subtitle)}</p></header>\n<nav class=\"toc\"><ol>{toc}</ol></nav>\n"
            f"<main>{to_html(sections)}</main>\n<footer>alprobe {esc(__version__)} · report "
            f"written {now}</footer></body></html>\n")
