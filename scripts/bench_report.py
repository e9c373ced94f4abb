"""Benchmark ``alprobe report`` on a large synthetic campaign: does the page stay small and fast?

Builds a campaign folder as a long run leaves it: a ledger of 100 generations x 1,000
candidates (100,000 bare ethanol frames written with ``Ledger.add``, as walkers emit them:
walker, sample, step, trust), 10 frames selected per generation of which some failed,
were rejected or timed out with reasons that carry numbers; explore / label stage records
with 40 walkers each (some stopped for low trust or an unphysical geometry); a metrics row
per generation (``add_metrics``, every column a real row has); audit JSONs of both sets
for every generation, and audit and atom-importance PNGs for the last two (drawn by
alprobe.plots, as the audit stage draws them). Then it times ``write_report``, reports the
page's size, and times a headless-Chromium load of it (selenium with Debian's chromium and
chromedriver): ``driver.get`` to the load event, the browser's own navigation timing, and a
full-page screenshot. Targets (the report issue): page under 20 MB, rendered in under 5 s.

Writes JSON (default bench_results/bench_report.json) and prints a table:
quantity | measured | target | pass/fail.

    python scripts/bench_report.py [--generations 100] [--candidates 100000]
        [--workdir runs/bench_report] [--out bench_results/bench_report.json] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TARGETS = {"report_mb": 20.0, "browser_load_s": 5.0}
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
SIGNALS = ("probe", "knn_max", "knn_mean", "energy", "ensemble_epsF")


def _frames(n: int, gen: int, rng: np.random.Generator, walkers: int) -> list[Any]:
    """n bare ethanol frames of generation ``gen`` as explore walkers emit them (after
    scripts/bench_throughput.py synth_candidates, without force arrays)."""
    from ase.build import molecule

    base = molecule("CH3CH2OH")
    pos = base.positions[None] + rng.normal(0.0, 0.05, (n, len(base), 3))
    trust = rng.beta(2 + gen / 20, 2, n)
    out = []
    for i in range(n):
        a = base.copy()
        a.positions = pos[i]
        w, s = i % walkers, i // walkers
        a.info.update(walker=w, sample=s, step=5 * (s + 1), time_fs=2.5 * (s + 1),
                      temperature_K=300.0 + 300 * (w % 3), trust=float(trust[i]),
                      pred_energy=-4200.0 + float(rng.normal(0, 0.5)))
        out.append(a)
    return out


def _outcome(i: int, g: int, rng: np.random.Generator) -> dict[str, Any]:
    """The label outcome of the i-th selected frame of generation g (most are labeled)."""
    if i == 0 and g % 2:
        return {"status": "failed", "reason": f"SCF not converged after {100 + g} cycles "
                f"(last dE {rng.uniform(1e-6, 1e-3):.2e} Ha) with every rescue"}
    if i == 1 and g % 3 == 0:
        return {"status": "rejected", "reason": f"atoms {int(rng.integers(9))} and "
                f"{int(rng.integers(9))} are {rng.uniform(0.3, 0.5):.2f} A apart (< 0.5 A)"}
    if i == 2 and g % 10 == 0:
        return {"status": "timeout", "reason": "wall time limit 600 s exceeded"}
    return {"status": "labeled", "ref_energy": -4200.0 + float(rng.normal(0, 0.5)),
            "split": "calib" if i % 4 == 3 else "train", "label_s": 3.0 + float(rng.random())}


def _stops(g: int, walkers: int, rng: np.random.Generator) -> list[str]:
    out = []
    for _ in range(walkers):
        u = rng.random()
        step = int(rng.integers(1, 200)) * 5
        out.append(f"low trust at step {step}: P(reliable) < 0.2 for 5 consecutive samples"
                   if u < 0.25 else f"unphysical at step {step}: atoms {int(rng.integers(9))} "
                   f"and {int(rng.integers(9))} are 0.4{int(rng.integers(10))} A apart (< 0.5 A)"
                   if u < 0.3 else "completed")
    return out


def metrics_row(g: int, labels: int, rng: np.random.Generator) -> dict[str, Any]:
    """A metrics row with every column a real one has (errors decaying with labels)."""
    from alprobe.records import ACCOUNTS, STAGES

    f = 0.6 * (labels / 200) ** -0.4 * (1 + 0.05 * rng.normal())
    row: dict[str, Any] = {
        "generation": g, "labels": labels, "labels_new": 10 if g else 200,
        "failed_new": int(g % 2) + int(g % 3 == 0) + int(g % 10 == 0) if g else 0,
        "energy_mae_eV_per_atom": f / 30, "force_mae_eV_A": f, "force_rmse_eV_A": 1.4 * f,
        "force_mae_lo_eV_A": 0.9 * f, "force_mae_hi_eV_A": 1.1 * f, "n_test": 100,
        "probe_pool": 50 + 3 * g, "rule": "probe", "signal": "probe",
        "unbiased_selection": False, "tau": 0.5, "hit_rate": float(rng.uniform(0.4, 0.9)),
        "hit_threshold_force_rmse_eV_A": 0.3, "hit_rate_abs": float(rng.uniform(0.3, 0.8)),
        "hit_base_rate_abs": float("nan"), "dft_calls": labels + g,
        "probe_auroc_test": float(rng.uniform(0.6, 0.85)),
        "signal_auroc_test": float(rng.uniform(0.6, 0.85)),
        "signal_auroc_new": float(rng.uniform(0.5, 0.8))}
    q = np.sort(rng.beta(2 + g / 20, 2, 5))
    row.update({f"trust_q{k}": float(v) for k, v in zip((10, 25, 50, 75, 90), q)})
    for where in ("new", "audit", "candidates"):
        row[f"trust_auroc_{where}"] = float(rng.uniform(0.55, 0.8)) if g else float("nan")
        row[f"trust_spearman_{where}"] = float(rng.uniform(-0.5, 0)) if g else float("nan")
        row[f"n_{where}"] = 10
    row["probe_auroc_new"] = row["trust_auroc_new"]
    for acc in ACCOUNTS:
        row[f"{acc}_cpu_s"] = float(rng.uniform(5, 60))
    row["driver_cpu_s"] = 2.0
    row["cpu_s"] = sum(row[f"{a}_cpu_s"] for a in ACCOUNTS) + 2.0
    for st in STAGES:
        row[f"{st}_s"] = (0.0 if st in ("deviation", "latent", "oracle", "committee")
                          else float(rng.uniform(1, 30)))
    row.update(committee_s=0.0, md_s=20.0, score_s=1.0, dft_s=30.0,
               wall_s=sum(row[f"{s}_s"] for s in ("explore", "select", "label", "train",
                                                  "probe", "evaluate", "audit")) + 3.0,
               task_span_s=100.0, overhead_fraction=0.1)
    return row


def _audit(n: int, rng: np.random.Generator) -> dict[str, Any]:
    rows = []
    for s in SIGNALS:
        a = float(rng.uniform(0.55, 0.9))
        rows.append({"signal": s, "n": n, "prevalence": 0.5, "auroc": a, "auroc_lo": a - 0.1,
                     "auroc_hi": min(1.0, a + 0.1), "auprc": a, "auprc_lo": a - 0.1,
                     "auprc_hi": min(1.0, a + 0.1), "aurc_01": 0.3, "e_aurc_01": 0.1,
                     "aurc_err": 0.4, "e_aurc_err": 0.05, "spearman": -a / 2,
                     "spearman_lo": -a, "spearman_hi": 0.0, "enrichment_at_10pct": 1.5,
                     "ece": 0.1 if s == "probe" else float("nan"),
                     "brier": 0.2 if s == "probe" else float("nan")})
    return {"tau": 0.5, "n": n, "rows": rows, "verdict": "best AUROC: probe"}


def _pictures(audits: Path, g: int, rng: np.random.Generator) -> None:
    """The audit stage's PNGs of generation g: risk-coverage, reliability, deciles of both
    sets, and three atom-importance pictures."""
    from ase.build import molecule

    from alprobe.plots import draw_importance, plot_audit

    e = rng.gamma(2.0, 0.2, 100)
    signals = {s: -e + rng.normal(0, 0.2, 100) for s in SIGNALS}
    signals["probe"] = 1 / (1 + np.exp(-signals["probe"]))
    for where in ("test", "new"):
        plot_audit(signals, e, 0.4, str(audits / f"gen_{g:03d}_{where}"),
                   probabilities={"probe"})
    a = molecule("CH3CH2OH")
    for k in range(3):
        imp = rng.dirichlet(np.ones(len(a)))
        draw_importance(a, imp, audits / f"gen_{g:03d}_importance_f{g:03d}{k:013d}.png",
                        title=f"gen {g}: P(reliable) 0.1{k}, error 0.8{k}")


def build_campaign(directory: str | Path, generations: int = 100, candidates: int = 100_000,
                   walkers: int = 40, budget: int = 10, seed: int = 0,
                   pictures: int = 2) -> Path:
    """A synthetic finished campaign folder (see the module docstring); returns it."""
    import yaml

    from alprobe.folder import versions
    from alprobe.ledger import Ledger

    d = Path(directory)
    if d.exists():
        shutil.rmtree(d)
    rng = np.random.default_rng(seed)
    L = Ledger(d, create=True)
    per = candidates // generations
    audits = d / "audits"
    audits.mkdir(parents=True)
    with L.transaction():
        init = _frames(200, 0, rng, 8)
        for i, a in enumerate(init):
            a.info.update(status="labeled", split="test" if i < 100 else "train",
                          ref_energy=-4200.0, origin="initial")
        L.add(init, generation=0)
        L.mark_done("gen000/bootstrap", stops=_stops(0, 8, rng), n=8, wall_s=60.0,
                    test_walkers={"stops": _stops(0, 4, rng), "steps": 200, "wall_s": 30.0})
        L.add_metrics(metrics_row(0, 100, rng))
        labels = 100
        for g in range(1, generations + 1):
            frames = _frames(per, g, rng, walkers)
            for i in range(budget):
                frames[i * (per // budget)].info.update(_outcome(i, g, rng))
            for a in frames:
                a.info.setdefault("status", "candidate")
            L.add(frames, generation=g, origin="explore")
            L.mark_done(f"gen{g:03d}/explore", stops=_stops(g, walkers, rng), n_frames=per,
                        wall_s=20.0, md_s=30.0, score_s=1.0)
            ok = sum(f.info["status"] == "labeled" for f in frames)
            labels += ok
            L.mark_done(f"gen{g:03d}/label", labeled=ok, **{s: sum(
                f.info["status"] == s for f in frames) for s in ("failed", "rejected",
                                                                  "timeout")})
            L.add_metrics(metrics_row(g, labels, rng))
            L.mark_done(f"gen{g:03d}/done")
    for g in range(generations + 1):
        for where in ("test", "new") if g else ("test",):
            (audits / f"gen_{g:03d}_{where}_audit.json").write_text(
                json.dumps(_audit(100 if where == "test" else budget, rng), indent=1))
    for g in range(max(0, generations - pictures + 1), generations + 1):
        _pictures(audits, g, rng)
    cfg = {"name": "bench_report", "seed": seed, "generations": generations,
           "select": {"rule": "probe", "budget": budget}, "probe": {"error": "force_rmse"},
           "explore": {"walkers": walkers}}
    (d / "campaign.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    (d / "versions.json").write_text(json.dumps(versions(), indent=1))
    return d


def browser_load(page: Path, shot: Path) -> dict[str, Any]:
    """Open ``page`` in headless Chromium: seconds to the load event (driver.get), the
    browser's navigation timing (ms) and first contentful paint, then a full-page
    screenshot; console errors (SEVERE) counted."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--no-first-run", "--disable-background-networking", "--disable-component-update",
              "--disable-sync", f"--user-data-dir={shot.parent / 'chrome-profile'}",
              "--window-size=1400,1000"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    t0 = time.perf_counter()
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    start_s = time.perf_counter() - t0
    try:
        t0 = time.perf_counter()
        driver.get(page.as_uri())
        get_s = time.perf_counter() - t0
        timing = driver.execute_script(
            "const n = performance.getEntriesByType('navigation')[0];"
            "const p = performance.getEntriesByName('first-contentful-paint')[0];"
            "return {dom: n.domContentLoadedEventEnd, load: n.loadEventEnd,"
            " fcp: p ? p.startTime : null, height: document.body.scrollHeight,"
            " svgs: document.querySelectorAll('svg').length,"
            " imgs: document.images.length};")
        t0 = time.perf_counter()
        height = min(int(timing["height"]), 16000)
        driver.set_window_size(1400, height)
        driver.save_screenshot(str(shot))
        shot_s = time.perf_counter() - t0
        errors = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
    finally:
        driver.quit()
    return {"browser_start_s": start_s, "browser_load_s": get_s,
            "dom_content_loaded_ms": timing["dom"], "load_event_ms": timing["load"],
            "first_contentful_paint_ms": timing["fcp"], "page_height_px": timing["height"],
            "svgs": timing["svgs"], "imgs": timing["imgs"], "screenshot_s": shot_s,
            "console_errors": len(errors)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--generations", type=int, default=100)
    ap.add_argument("--candidates", type=int, default=100_000)
    ap.add_argument("--walkers", type=int, default=40)
    ap.add_argument("--workdir", default="runs/bench_report")
    ap.add_argument("--out", default="bench_results/bench_report.json")
    ap.add_argument("--keep", action="store_true", help="keep the synthetic campaign folder")
    args = ap.parse_args()

    from alprobe.report import write_report

    work = Path(args.workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    out: dict[str, Any] = {"host": platform.node(), "python": sys.version.split()[0],
                           "cpu_count": os.cpu_count(), "loadavg_start": os.getloadavg(),
                           "generations": args.generations, "candidates": args.candidates,
                           "targets": TARGETS}
    t0 = time.perf_counter()
    d = build_campaign(work / "campaign", args.generations, args.candidates, args.walkers)
    out["build_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    page = write_report(d)
    out["write_report_s"] = time.perf_counter() - t0
    out["report_mb"] = page.stat().st_size / 1e6
    out["ledger_mb"] = (d / "ledger.db").stat().st_size / 1e6
    shot = work / "report_full.png"
    out.update(browser_load(page, shot))
    out["screenshot"] = str(shot)
    out["loadavg_end"] = os.getloadavg()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    fcp = out["first_contentful_paint_ms"]
    rows = [("synthetic campaign build (s)", f"{out['build_s']:.1f}", "", ""),
            ("write_report (s)", f"{out['write_report_s']:.2f}", "", ""),
            ("report.html (MB)", f"{out['report_mb']:.2f}", f"< {TARGETS['report_mb']:g}",
             "pass" if out["report_mb"] < TARGETS["report_mb"] else "FAIL"),
            ("browser: driver.get to load event (s)", f"{out['browser_load_s']:.2f}",
             f"< {TARGETS['browser_load_s']:g}",
             "pass" if out["browser_load_s"] < TARGETS["browser_load_s"] else "FAIL"),
            ("browser: load event (ms, navigation timing)", f"{out['load_event_ms']:.0f}", "",
             ""),
            ("browser: first contentful paint (ms)", "-" if fcp is None else f"{fcp:.0f}", "",
             ""),
            ("full-page screenshot (s)", f"{out['screenshot_s']:.2f}", "", ""),
            ("inline SVG figures / images", f"{out['svgs']} / {out['imgs']}", "", ""),
            ("console errors", str(out["console_errors"]), "0",
             "pass" if out["console_errors"] == 0 else "FAIL")]
    head = ("quantity", "measured", "target", "result")
    w = [max(len(r[i]) for r in [head, *rows]) for i in range(4)]
    print(f"{args.generations} generations, {args.candidates} candidates; ledger "
          f"{out['ledger_mb']:.0f} MB; wrote {args.out}; screenshot {shot}")
    print(" | ".join(h.ljust(x) for h, x in zip(head, w)))
    for r in rows:
        print(" | ".join(c.ljust(x) for c, x in zip(r, w)))
    if not args.keep:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
