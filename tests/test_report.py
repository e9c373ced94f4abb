"""The report package (``alprobe report``, ``alprobe status``, a comparison's summary.md): the
page of a real finished campaign, opened in a real headless Chromium (every figure drawn, every
image decoded, no console error, a screenshot that is not blank); a comparison page built from
real run ledgers, whose summary holds the numbers of summary.md because both are rendered from
the same blocks; the caps that keep a large campaign's page small; the block renderers (text,
markdown, HTML); the one-line errors."""

from __future__ import annotations

import importlib.util
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from alprobe.ledger import Ledger
from alprobe.report import (
    ComparisonPlan,
    ReportError,
    RunInfo,
    read_campaign,
    write_comparison_outputs,
    write_report,
)
from alprobe.report.blocks import (
    Bullets,
    Gap,
    Heading,
    Paragraph,
    Table,
    plain,
    to_html,
    to_markdown,
    to_text,
)
from alprobe.report.campaign import MAX_REASONS, learning_section
from alprobe.report.gather import MAX_IMPORTANCE

REPO = Path(__file__).resolve().parents[1]
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
CAMPAIGN_FIGURES = {"learning-curves", "trust-signal", "audit-auroc", "walker-stops", "costs"}


@pytest.fixture(scope="module")
def campaign(tiny_finished, tmp_path_factory):
    """A copy of the session's finished tiny campaign (the original stays read-only)."""
    dst = tmp_path_factory.mktemp("report") / "tiny"
    shutil.copytree(tiny_finished[0], dst, ignore=shutil.ignore_patterns("spool", "*.model"))
    return dst


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Headless Chromium through selenium and Debian's chromedriver (nothing downloaded)."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).is_file()]
    if missing:
        pytest.fail(f"{', '.join(missing)} not found: the report test needs Debian's Chromium "
                    "(scripts/test.sh, the README's test command, installs it)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail("selenium is not installed: pip install -e '.[test]'")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--no-first-run", "--disable-background-networking", "--disable-component-update",
              "--disable-sync", f"--user-data-dir={tmp_path_factory.mktemp('chrome')}",
              "--window-size=1400,3000"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    yield driver
    driver.quit()


def _open(driver, page: Path) -> dict:
    """Load ``page``, open every <details>, and return what rendered: images (alt, complete,
    naturalWidth), inline SVGs (figure name, width, height), section ids, console errors."""
    driver.get_log("browser")  # drop what an earlier page logged
    driver.get(page.as_uri())
    driver.execute_script("document.querySelectorAll('details').forEach(d => d.open = true);")
    got = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "Promise.all(Array.from(document.images).map(i => i.decode().catch(() => null)))"
        ".then(() => done({"
        " imgs: Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth]),"
        " svgs: Array.from(document.querySelectorAll('svg')).map(s => {"
        "   const r = s.getBoundingClientRect(); return [s.dataset.figure, r.width, r.height];}),"
        " sections: Array.from(document.querySelectorAll('main > section')).map(s => s.id),"
        " toc: Array.from(document.querySelectorAll('nav.toc a')).map(a => a.hash)}));")
    got["errors"] = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
    return got


def _not_blank(png: bytes, min_colours: int = 20) -> tuple[int, float]:
    """(distinct colours, fraction of non-white pixels) of a PNG screenshot."""
    import io

    from PIL import Image

    im = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    colours = len(np.unique(im.reshape(-1, 3), axis=0))
    return colours, float(np.mean(im.min(axis=2) < 240))


def _check_rendered(got: dict, figures: set[str]) -> None:
    assert not got["errors"], f"console errors: {got['errors']}"
    assert got["imgs"], "no <img> on the page"
    bad = [i for i in got["imgs"] if not (i[1] and i[2] > 0)]
    assert not bad, f"images that did not load: {bad}"
    names = {s[0] for s in got["svgs"]}
    assert figures <= names, f"figures missing: {figures - names}"
    flat = [s for s in got["svgs"] if not (s[1] > 50 and s[2] > 50)]
    assert not flat, f"inline SVGs of (near) zero size: {flat}"
    assert got["toc"] == [f"#{s}" for s in got["sections"]]


def test_campaign_report_renders_in_chromium(campaign, browser, tmp_path):
    from selenium.webdriver.common.by import By

    page = write_report(campaign)
    assert page == campaign / "report.html"
    text = page.read_text()
    # self-contained: nothing to fetch (no src/href to another host, no @import, no url(http)
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", text)
    assert "@import" not in text and "url(http" not in text
    got = _open(browser, page)
    _check_rendered(got, CAMPAIGN_FIGURES)
    browser.execute_script("window.scrollTo(0, 0)")
    shot = browser.get_screenshot_as_png()
    (tmp_path / "report.png").write_bytes(shot)
    colours, ink = _not_blank(shot)
    assert colours > 50 and 0.02 < ink < 0.98, f"screenshot looks blank: {colours}, {ink}"
    assert got["sections"] == ["overview", "learning", "reliability", "importance", "walkers",
                               "labels", "costs", "provenance"]
    # the last generation's atom-importance pictures and audit plots are embedded
    alts = [i[0] for i in got["imgs"]]
    assert any("importance" in a for a in alts) and any("risk_coverage" in a for a in alts)
    imp = sorted(int(a[4:7]) for a in alts if "importance" in a)
    assert 2 in imp and 0 not in imp and len(imp) <= MAX_IMPORTANCE, imp  # latest only, capped
    # the labels table says what the ledger says
    L = Ledger(campaign, readonly=True)
    rows = {r.find_elements(By.TAG_NAME, "td")[0].text: r.find_elements(By.TAG_NAME, "td")[1].text
            for r in browser.find_elements(By.CSS_SELECTOR, "#labels table tbody tr")
            if r.find_elements(By.TAG_NAME, "td")}
    assert rows["labeled"] == str(L.count(status="labeled"))
    assert rows["candidate"] == str(L.count(status="candidate"))
    # the learning curve's axes are labelled with units, and it has drawn its line
    fig = browser.find_element(By.CSS_SELECTOR, 'svg[data-figure="learning-curves"]')
    assert "test force MAE (meV/Å)" in fig.get_attribute("innerHTML")
    assert "DFT labels used" in fig.get_attribute("innerHTML")
    colours, ink = _not_blank(fig.screenshot_as_png)
    assert colours > 20 and ink > 0.01, (colours, ink)


RUNS = {"probe-r0": ("probe", 0), "random-r0": ("random", 0), "probe-r1": ("probe", 1),
        "random-r1": ("random", 1)}


def _comparison_folder(campaign: Path, root: Path, plan: bool = True) -> Path:
    """A comparison folder made of real run ledgers: the tiny campaign as generation 0 and as
    two replicas of two arms, the random arm's test errors raised by 30%, and (``plan``) the
    plan and outputs written by alprobe.report from them (as compare writes them)."""
    d = root / "cmp"
    ignore = shutil.ignore_patterns("report.html", "audits")
    shutil.copytree(campaign, d / "shared", ignore=ignore)
    for run, (arm, rep) in RUNS.items():
        shutil.copytree(campaign, d / "arms" / run,
                        ignore=ignore if run != "probe-r0" else shutil.ignore_patterns("x"))
        L = Ledger(d / "arms" / run)
        for m in L.metrics():
            f = (1.3 if arm == "random" else 1.0) * (1 + 0.05 * rep)
            L.add_metrics({**m, "rule": arm, **{k: m[k] * f for k in (
                "force_mae_eV_A", "force_mae_lo_eV_A", "force_mae_hi_eV_A")}})
    spec = {"name": "cmp", "replicas": 2, "shared": yaml.safe_load(
        (campaign / "campaign.yaml").read_text()),
        "arms": {"probe": {}, "random": {"select": {"rule": "random"}}}}
    (d / "comparison.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    if plan:
        p = ComparisonPlan("cmp", 5, 2, {r: RunInfo(a, k, a) for r, (a, k) in RUNS.items()},
                           ["shared"])
        p.write(d)
        write_comparison_outputs(d, p)
    return d


def test_comparison_report(campaign, browser, tmp_path):
    """Learning curves per arm (mean of the replicas), the summary with its paired
    differences, costs per run, every run's own sections, and the page renders."""
    d = _comparison_folder(campaign, tmp_path)
    page = write_report(d)
    text = page.read_text()
    lc = re.search(r'<svg[^>]*data-figure="learning-curves".*?</svg>', text, re.DOTALL)
    assert lc, "no learning-curve figure"
    assert "probe (mean of 2)" in lc[0] and "random (mean of 2)" in lc[0]
    assert re.search(r"<h[3-5]>Paired differences</h[3-5]>", text)
    assert "<h3>Comparison cmp</h3>" in text and "<strong>" in text
    for run in ("probe-r0", "random-r0", "probe-r1", "random-r1"):
        assert f'id="run-{run}"' in text and f'id="run-{run}-learning"' in text
        assert f'<a href="#run-{run}">{run}</a>' in text
    got = _open(browser, page)
    _check_rendered(got, {"learning-curves", "arm-costs", "run-probe-r0-trust-signal",
                           "run-random-r1-learning-curves", "shared-walker-stops"})
    assert got["sections"][:3] == ["overview", "learning", "summary"]


def _paired_cells(summary_md: str) -> list[str]:
    """The cells of summary.md's paired-differences table ("+x [lo, hi] **resolved**")."""
    table = summary_md.split("## Paired differences", 1)[1].split("\n\n")[2]
    rows = [r.strip("|").split("|") for r in table.splitlines()[2:]]
    return [c.strip() for r in rows for c in r[2:]]


def test_comparison_page_and_summary_say_the_same_numbers(campaign, tmp_path):
    """summary.md and the page's summary section are one set of blocks rendered twice: every
    paired difference of summary.md is on the page, in the same words; the page is built from
    the ledgers, not from summary.md (a stale or edited summary.md does not reach it)."""
    d = _comparison_folder(campaign, tmp_path)
    md = (d / "summary.md").read_text()
    cells = _paired_cells(md)
    assert cells and all(re.fullmatch(r"[-+]\d+\.\d \[[-+]\d+\.\d, [-+]\d+\.\d\]"
                                      r"( \*\*resolved\*\*)?", c) for c in cells), cells
    verdicts = [line[2:] for line in md.splitlines() if line.startswith("- probe vs random")]
    assert verdicts
    (d / "summary.md").write_text(md.replace("Paired differences", "STALE"))
    text = write_report(d).read_text()
    assert "STALE" not in text
    section = text.split('<section id="summary">', 1)[1].split("</section>", 1)[0]
    for c in cells:
        assert f"<td>{c.replace('**resolved**', '<strong>resolved</strong>')}</td>" in section, c
    for v in verdicts:
        assert f"<li>{v}</li>" in section, v
    # the random arm's errors are 30% above probe's: the first pair (probe − random) is
    # negative at every generation, on the page as in the file
    assert all(c.startswith("-") for c in cells)


def test_a_comparison_folder_without_its_plan(campaign, tmp_path):
    """A folder written before comparisons kept comparison.json: runs, arms and replicas come
    from the run folders' names, each run's rule from its metrics."""
    from alprobe.report.gather import read_plan

    d = _comparison_folder(campaign, tmp_path, plan=False)
    plan = read_plan(d)
    assert plan.runs == {r: RunInfo(a, k, a) for r, (a, k) in RUNS.items()}
    assert plan.shared == ["shared"] and plan.name == "cmp"
    text = write_report(d).read_text()
    assert "probe vs random" in text and 'id="run-random-r1-labels"' in text


def test_large_campaign_page_is_capped(tmp_path):
    """A campaign of many generations, candidates and distinct failure reasons: no
    candidate's id reaches the page, reasons are grouped and capped, the page stays small."""
    spec = importlib.util.spec_from_file_location("bench_report",
                                                  REPO / "scripts" / "bench_report.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    d = bench.build_campaign(tmp_path / "big", generations=30, candidates=6000, walkers=10,
                             pictures=0)
    page = write_report(d)
    text = page.read_text()
    L = Ledger(d, readonly=True)
    candidates = [k["fid"] for k in L.keys(status="candidate")]
    assert len(candidates) > 5000
    assert not [f for f in candidates if f in text]
    assert page.stat().st_size < 2e6
    data = read_campaign(d)
    bad = sum(data.status[s] for s in ("failed", "rejected", "timeout"))
    assert bad == len(data.problems) > MAX_REASONS
    # 3 kinds of reason (numbers masked), each one row; fids only as the few examples
    reasons = re.search(r"<th[^>]*>examples \(frame: reason\)</th>.*?</table>", text,
                        re.DOTALL)[0]
    assert reasons.count("<tr>") == 3
    assert sum(f in text for f in (p["fid"] for p in data.problems)) <= 3 * 3


def test_learning_section_needs_its_figure(campaign):
    """The pure builder: the curve is drawn from the metrics rows, with one point per
    generation and the 95% band; without rows there is no figure."""
    data = read_campaign(campaign, images=False)
    html = to_html(learning_section(data).blocks)
    assert 'data-figure="learning-curves"' in html and "test energy MAE (meV/atom)" in html
    data.metrics = []
    assert "data-figure" not in to_html(learning_section(data).blocks)


def test_a_table_in_text_markdown_and_html():
    t = Table(["arm", "F MAE", "note"], [["probe", "12.5", "**resolved**"],
                                         ["random_hold", "7", plain("a <b> & `c` | d")],
                                         Gap("… 3 rows left out …")], align="lrl")
    text = to_text([t]).splitlines()
    assert text == ["arm          F MAE  note",
                    "probe         12.5  resolved",
                    "random_hold      7  a <b> & `c` | d",
                    "… 3 rows left out …"]
    md = to_markdown([t]).splitlines()
    assert md[:4] == ["| arm | F MAE | note |", "|---|---|---|",
                      "| probe | 12.5 | **resolved** |",
                      "| random_hold | 7 | a <b> & \\`c\\` \\| d |"]
    html = to_html([t])
    assert re.search(r'<th class="l">arm</th><th>F MAE</th><th class="l">note</th>', html)
    assert '<td class="l">probe</td><td>12.5</td><td class="l"><strong>resolved</strong></td>' \
        in html
    assert "a &lt;b&gt; &amp; `c` | d" in html and "<b>" not in html
    assert '<tr class="gap"><td colspan="3">… 3 rows left out …</td></tr>' in html


def test_blocks_render_alike_in_every_format():
    blocks = [Heading("Comparison x", 1), Paragraph("Some **bold** and `code`."),
              Bullets(["one", ("two:", ["two a"])]), Paragraph("<script>alert(1)</script>")]
    md = to_markdown(blocks)
    assert md == ("# Comparison x\n\nSome **bold** and `code`.\n\n- one\n- two:\n  - two a"
                  "\n\n<script>alert(1)</script>\n")
    assert to_text(blocks).startswith("Comparison x\n\nSome bold and code.\n\n- one\n")
    html = to_html(blocks)
    assert "<h1>Comparison x</h1>" in html
    assert "<p>Some <strong>bold</strong> and <code>code</code>.</p>" in html
    assert "<li>two:<ul><li>two a</li></ul></li>" in html
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_not_a_campaign_folder(tmp_path, capsys):
    from alprobe.cli import main

    with pytest.raises(ReportError, match=re.escape(str(tmp_path))):
        write_report(tmp_path)
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "nowhere" in err and "no such folder" in err
