"""Benchmark: the same campaign file under the generations and the streaming schedule, side by
side in one run, on a fresh LocalCluster each.

Measured for each schedule:
- the busy fraction of every worker: the seconds it spent computing a task (Dask's task stream:
  compute start to stop, a training's sandboxed child included) over the campaign's wall time,
  for the whole campaign and after generation 0 (whose stages are the same in both schedules);
- the wall time to reach a target test force MAE (default: the higher of the two final MAEs,
  which both reach), and the labels used then;
- the test force MAE at each number of labels (the learning curves).

Target (issue 14): busy fraction at least 0.95 under streaming, and a shorter time to target at
an equal number of labels.

    python scripts/bench_streaming.py [--campaign campaigns/quickstart.yaml] [--target-mae 80]

Prints a table and writes JSON (default bench_results/bench_streaming.json), including the
task-time samples (labels, trainings, MD segments) that scripts/simulate_schedules.py can read
(--from).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np


def _busy(tasks: list[dict[str, Any]], t0: float, t1: float) -> dict[str, float]:
    """Per worker: seconds computing inside [t0, t1] over (t1 - t0)."""
    busy: dict[str, float] = {}
    for t in tasks:
        for ss in t["startstops"]:
            if ss["action"] != "compute":
                continue
            a, b = max(ss["start"], t0), min(ss["stop"], t1)
            if b > a:
                busy[t["worker"]] = busy.get(t["worker"], 0.0) + b - a
    return {w: s / max(t1 - t0, 1e-9) for w, s in sorted(busy.items())}


def _kind(key: Any) -> str:
    k = str(key[0] if isinstance(key, tuple) else key)
    for name in ("label", "segment", "walk", "train", "probe", "eval", "audit", "score"):
        if f"-{name}" in k or k.startswith(name):
            return name
    return "other"


def run_mode(campaign: str, mode: str, folder: Path) -> dict[str, Any]:
    from distributed import get_task_stream

    from alprobe.campaign import run_campaign
    from alprobe.cluster import open_client
    from alprobe.config import load_campaign, parse_campaign

    base = load_campaign(campaign)
    data = base.model_dump(mode="json", exclude={"source_dir"})
    data.update(schedule=mode, name=f"{base.name}-{mode}")
    cfg = parse_campaign(data, base.source_dir, f"{campaign} ({mode})")
    log_path = folder.with_suffix(".log")
    with open(log_path, "w") as fh, open_client(cfg.cluster, log=lambda m: None) as client:
        def log(msg: str) -> None:
            fh.write(msg + "\n")
            fh.flush()

        with get_task_stream(client) as ts:
            t0 = time.time()
            res = run_campaign(cfg, folder, client=client, log=log)
            t1 = time.time()
        tasks = ts.data
    rows = res.metrics
    start = t1 - rows[-1]["elapsed_s"] if rows and np.isfinite(rows[-1]["elapsed_s"]) else t0
    t_gen0 = start + rows[0]["elapsed_s"] if rows else t0
    durations: dict[str, list[float]] = {}
    last_label = t_gen0
    for t in tasks:
        for ss in t["startstops"]:
            if ss["action"] == "compute":
                kind = _kind(t["key"])
                durations.setdefault(kind, []).append(ss["stop"] - ss["start"])
                if kind == "label" and ss["start"] > t_gen0:
                    last_label = max(last_label, ss["stop"])
    return {"mode": mode, "wall_s": t1 - t0, "t_gen0_s": t_gen0 - t0,
            "busy_whole": _busy(tasks, t0, t1), "busy_after_gen0": _busy(tasks, t_gen0, t1),
            # after generation 0 until the last label ends (without the last training)
            "busy_while_labeling": _busy(tasks, t_gen0, last_label),
            "curve": [{"generation": r["generation"], "labels": r["labels"],
                       "force_mae_meV_A": 1000 * r["force_mae_eV_A"],
                       "elapsed_s": r["elapsed_s"]} for r in rows],
            "task_seconds": durations, "log": str(log_path)}


def time_to_target(curve: list[dict[str, Any]], target: float) -> tuple[float, float]:
    for r in curve:
        if r["force_mae_meV_A"] <= target:
            return r["elapsed_s"], r["labels"]
    return float("nan"), float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--campaign", default="campaigns/quickstart.yaml")
    ap.add_argument("--dir", default="runs/bench_streaming")
    ap.add_argument("--target-mae", type=float, default=None, help="meV/A")
    ap.add_argument("--json", default="bench_results/bench_streaming.json")
    ap.add_argument("--modes", nargs="+", default=["generations", "streaming"])
    args = ap.parse_args()
    out_dir = Path(args.dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = {}
    for mode in args.modes:
        folder = out_dir / mode
        if folder.exists():
            import shutil

            shutil.rmtree(folder)
        print(f"running {args.campaign} with schedule: {mode} ...", flush=True)
        results[mode] = run_mode(args.campaign, mode, folder)
        print(f"  {mode}: {results[mode]['wall_s']:.0f} s", flush=True)
    finals = [r["curve"][-1]["force_mae_meV_A"] for r in results.values() if r["curve"]]
    target = args.target_mae or max(finals)
    print(f"\ntarget test force MAE: {target:.1f} meV/A")
    head = ("schedule", "wall s", "gen 0 s", "busy per worker (whole)", "busy after gen 0",
            "busy gen 0 to last label", "time to target s", "labels then", "final F MAE meV/A",
            "labels")
    print(" | ".join(head))
    for mode, r in results.items():
        tt, lab = time_to_target(r["curve"], target)
        r.update(time_to_target_s=tt, labels_at_target=lab, target_mae_meV_A=target)
        fmt = lambda d: " ".join(f"{v:.2f}" for v in d.values())  # noqa: E731
        print(" | ".join([mode, f"{r['wall_s']:.0f}", f"{r['t_gen0_s']:.0f}",
                          fmt(r["busy_whole"]), fmt(r["busy_after_gen0"]),
                          fmt(r["busy_while_labeling"]), f"{tt:.0f}",
                          f"{lab:.0f}", f"{r['curve'][-1]['force_mae_meV_A']:.1f}",
                          f"{r['curve'][-1]['labels']}"]))
    print("\nlearning curves (labels: force MAE meV/A at elapsed s):")
    for mode, r in results.items():
        print(f"  {mode}: " + ", ".join(f"{c['labels']}: {c['force_mae_meV_A']:.1f} "
                                        f"@{c['elapsed_s']:.0f}s" for c in r["curve"]))
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"campaign": args.campaign, "target_mae_meV_A": target,
                                "results": results}, indent=1, default=float))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
