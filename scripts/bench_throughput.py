"""Benchmark alprobe's throughput limits: Dask scheduling, label-stage worker use, driver-side
selection and ledger I/O at scale.

(a) Scheduler overhead per task on a LocalCluster (2 workers x 1 thread, processes, 127.0.0.1):
    10,000 no-op tasks (client.map, pure=False), submission to all results, as wall ms per task;
    and 200 sequential submit + result round trips, as ms per round trip.
(b) Worker busy fraction during the generation-1 label stage of a small real campaign (water
    HF/STO-3G, the test suite's TINY_CAMPAIGN with select.budget 40 and 4 explore walkers of
    200 steps, stride 5, 1 generation; then the same with ethanol, whose labels take ~6x
    longer; --molecule picks), run with our own Client inside
    distributed.get_task_stream. Busy time = sum of the 'compute' intervals of the label tasks
    of generation 1 (keys "label-<fid>", fids from the ledger) on each worker, over the window
    from the first label start to the last label end. Also reported: the same over the window in
    which labels were still waiting to start (first start -> last start).
(c) Driver-side cost at 100,000 candidates: select_least_trusted (budget 100, min_spacing 2,
    400 walkers), Ledger.add of all candidates (one transaction, the bulk writer), the update
    of the 100 selected frames, reading the candidates back (Ledger.frames, and Ledger.keys,
    which is what the select stage reads) and reopening the ledger. Targets (issue 14): add
    <= 10 s, read back <= 5 s. On the first 10,000 frames, ASE's own row writer and select
    against the bulk writer and the direct reader, in the same run (the ratio). If the add or
    the read-back is slow, a cProfile of them on a 10,000-frame subset shows where the time
    goes.

Writes everything as JSON (default runs/bench_throughput.json) and prints a final table:
quantity | measured | target | pass/fail.

    python scripts/bench_throughput.py [--out runs/bench_throughput.json]
        [--parts abc] [--molecule water,ethanol] [--n-candidates 100000] [--profile]
"""

from __future__ import annotations

import argparse
import copy
import cProfile
import io
import json
import os
import platform
import pstats
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]

TARGETS = {
    "busy_fraction": 0.95,     # label stage: workers busy while labels are pending
    "select_s": 10.0,          # select_least_trusted over 100,000 candidates ("well under")
    "ledger_add_s": 10.0,      # issue 14: 100,000 candidates written in at most 10 s
    "ledger_read_s": 5.0,      # ... and read back for selection in at most 5 s
}


def noop(x: Any = None) -> Any:
    return x


def _label_transitions(dask_scheduler: Any = None) -> list[tuple[str, str, str, float]]:
    """(key, from, to, time) of every scheduler transition of a "label-" task (run on the
    scheduler; its clock is the workers' clock on a LocalCluster)."""
    return [(str(t[0]), str(t[1]), str(t[2]), float(t[-1])) for t in dask_scheduler.transition_log
            if str(t[0]).startswith("label-")]


# ----- helpers ------------------------------------------------------------------------------
def load_avg() -> list[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


def uptime_line() -> str:
    try:
        import subprocess

        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except Exception:  # noqa: BLE001 - informational only
        return f"load average: {load_avg()}"


def local_cluster(n_workers: int = 2) -> tuple[Any, Any]:
    """LocalCluster + Client: n workers x 1 thread, processes, bound to 127.0.0.1."""
    import dask
    from distributed import Client, LocalCluster

    # as alprobe.cluster.open_client does: long GIL-holding tasks, lenient heartbeats; and a
    # transition log long enough to keep a whole small campaign (diagnostics of part b)
    dask.config.set({"distributed.scheduler.worker-ttl": "15 minutes",
                     "distributed.comm.timeouts.connect": "60s",
                     "distributed.admin.low-level-log-length": 200_000})
    cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                           host="127.0.0.1", dashboard_address=None)
    client = Client(cluster)
    client.wait_for_workers(n_workers)
    return cluster, client


def profile_top(prof: cProfile.Profile, n: int = 15) -> list[dict[str, Any]]:
    """Top functions by cumulative and by own time."""
    st = pstats.Stats(prof)
    rows = []
    for (file, line, fn), (cc, nc, tt, ct, _callers) in st.stats.items():  # type: ignore[attr-defined]
        where = f"{Path(file).name}:{line}({fn})" if file != "~" else fn
        rows.append({"function": where, "ncalls": nc, "tottime_s": tt, "cumtime_s": ct,
                     "path": file})
    by_cum = sorted(rows, key=lambda r: -r["cumtime_s"])[:n]
    by_tot = sorted(rows, key=lambda r: -r["tottime_s"])[:n]
    return [{"sort": "cumulative", "rows": by_cum}, {"sort": "tottime", "rows": by_tot}]


def print_profile(title: str, top: list[dict[str, Any]], total_s: float) -> None:
    print(f"  cProfile: {title} (total {total_s:.2f} s)")
    for block in top:
        print(f"    top by {block['sort']}:")
        print(f"      {'ncalls':>9} {'tottime':>8} {'cumtime':>8}  function")
        for r in block["rows"]:
            print(f"      {r['ncalls']:>9d} {r['tottime_s']:8.2f} {r['cumtime_s']:8.2f}  "
                  f"{r['function']}")


# ----- (a) scheduler overhead ---------------------------------------------------------------
def part_a(n_map: int, n_seq: int) -> dict[str, Any]:
    print(f"(a) scheduler overhead: {n_map} no-op tasks via client.map, "
          f"{n_seq} sequential round trips", flush=True)
    t_start = time.perf_counter()
    cluster, client = local_cluster(2)
    startup_s = time.perf_counter() - t_start
    try:
        client.gather(client.map(noop, range(50), pure=False))  # warm up both workers
        for i in range(10):
            client.submit(noop, i, pure=False).result()

        t0 = time.perf_counter()
        futs = client.map(noop, range(n_map), pure=False)
        t_submitted = time.perf_counter()
        client.gather(futs)
        t1 = time.perf_counter()
        map_s = t1 - t0
        per_worker = {w: len(v) for w, v in client.has_what().items()}
        del futs

        seq = []
        for i in range(n_seq):
            ts = time.perf_counter()
            client.submit(noop, i, pure=False).result()
            seq.append(time.perf_counter() - ts)
        seq_arr = np.array(seq)
    finally:
        client.close()
        cluster.close()
    res = {
        "cluster_startup_s": startup_s,
        "n_map": n_map,
        "map_total_s": map_s,
        "map_submit_s": t_submitted - t0,
        "map_ms_per_task": 1000 * map_s / n_map,
        "map_worker_ms_per_task": 1000 * map_s * 2 / n_map,  # 2 workers in parallel
        "map_tasks_per_s": n_map / map_s,
        "results_held_per_worker": per_worker,
        "n_seq": n_seq,
        "seq_total_s": float(seq_arr.sum()),
        "seq_ms_per_roundtrip": 1000 * float(seq_arr.mean()),
        "seq_ms_median": 1000 * float(np.median(seq_arr)),
        "seq_ms_p95": 1000 * float(np.percentile(seq_arr, 95)),
        "seq_ms_max": 1000 * float(seq_arr.max()),
    }
    print(f"  cluster start {startup_s:.1f} s; map: {map_s:.2f} s for {n_map} tasks = "
          f"{res['map_ms_per_task']:.3f} ms/task wall ({res['map_tasks_per_s']:.0f} tasks/s, "
          f"submission {res['map_submit_s']:.2f} s)")
    print(f"  sequential submit+result: mean {res['seq_ms_per_roundtrip']:.2f} ms, median "
          f"{res['seq_ms_median']:.2f} ms, p95 {res['seq_ms_p95']:.2f} ms, max "
          f"{res['seq_ms_max']:.2f} ms", flush=True)
    return res


# ----- (b) worker busy fraction in the label stage ------------------------------------------
def campaign_dict(molecule: str) -> dict[str, Any]:
    sys.path.insert(0, str(REPO))  # the test suite's tiny campaign, one definition
    try:
        from tests.conftest import TINY_CAMPAIGN  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(REPO))
    base = copy.deepcopy(TINY_CAMPAIGN)
    base["name"] = f"bench_throughput_{molecule}"
    base["generations"] = 1
    base["system"] = {"seeds": [molecule]}
    base["explore"] = {**base["explore"], "walkers": 4, "steps": 200, "stride": 5}
    base["select"] = {**base["select"], "budget": 40}
    return base


def _merge(intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
    out: list[list[float]] = []
    for a, b in sorted(intervals):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


def _covered(intervals: list[tuple[float, float]], lo: float, hi: float) -> float:
    return float(sum(max(0.0, min(b, hi) - max(a, lo)) for a, b in _merge(intervals)))


def busy_fractions(records: list[dict[str, Any]], keys: set[str],
                   transitions: list[tuple[str, str, str, float]] = ()) -> dict[str, Any]:
    """Per-worker busy time of the label tasks in ``keys`` (task stream records).

    With the scheduler's transitions of those tasks, each idle gap of a worker is also
    classified: "starved" when the next task the worker ran had not yet reached the scheduler
    when the gap began (the driver had not submitted it yet), else "scheduling".
    """
    arrival: dict[str, float] = {}
    for key, start, _finish, t in transitions:
        if key in keys and start == "released" and key not in arrival:
            arrival[key] = t
    comp: dict[str, list[tuple[float, float]]] = {}
    keyed: dict[str, list[tuple[float, float, str]]] = {}
    other: dict[str, list[tuple[float, float]]] = {}
    starts, ends, durations = [], [], []
    n_rec = 0
    for rec in records:
        key = rec.get("key")
        key = key if isinstance(key, str) else str(key)
        for ss in rec.get("startstops", ()):
            if ss.get("action") != "compute":
                continue
            iv = (float(ss["start"]), float(ss["stop"]))
            if key in keys:
                comp.setdefault(rec["worker"], []).append(iv)
                keyed.setdefault(rec["worker"], []).append((iv[0], iv[1], key))
                starts.append(iv[0])
                ends.append(iv[1])
                durations.append(iv[1] - iv[0])
                n_rec += 1
            else:
                other.setdefault(rec["worker"], []).append(iv)
    if not starts:
        return {"n_tasks": 0}
    lo, hi, last_start = min(starts), max(ends), max(starts)
    window = hi - lo
    workers = sorted(set(comp) | set(other))
    per_worker = {}
    for w in workers:
        ivs = comp.get(w, [])
        busy = _covered(ivs, lo, hi)
        busy_pending = _covered(ivs, lo, last_start)
        srt = sorted(ivs)
        gaps = [b[0] - a[1] for a, b in zip(srt, srt[1:])]
        tl = sorted(keyed.get(w, []))
        starved = sched = 0.0
        for (_s0, e0, _k0), (s1, _e1, k1) in zip(tl, tl[1:]):
            gap = max(0.0, s1 - e0)
            if k1 in arrival and arrival[k1] > e0:
                starved += gap
            else:
                sched += gap
        per_worker[w] = {
            "lead_idle_s": (srt[0][0] - lo) if srt else window,
            "tail_idle_s": (hi - srt[-1][1]) if srt else 0.0,
            "gap_starved_s": starved,
            "gap_scheduling_s": sched,
            "timeline": [[round(a - lo, 4), round(b - lo, 4)] for a, b in srt],
            "n_tasks": len(ivs),
            "busy_s": busy,
            "busy_fraction": busy / window if window > 0 else float("nan"),
            "busy_fraction_pending": (busy_pending / (last_start - lo)
                                      if last_start > lo else float("nan")),
            "mean_gap_ms": 1000 * float(np.mean(gaps)) if gaps else float("nan"),
            "max_gap_ms": 1000 * float(np.max(gaps)) if gaps else float("nan"),
            "other_task_s_in_window": _covered(other.get(w, []), lo, hi),
        }
    busy_total = sum(v["busy_s"] for v in per_worker.values())
    pend_total = sum(v["busy_fraction_pending"] * (last_start - lo) for v in per_worker.values()
                     if v["busy_fraction_pending"] == v["busy_fraction_pending"])
    n_workers = max(1, len(per_worker))
    arr = sorted(arrival[k] for k in keys if k in arrival)
    subm = ({"first_arrival_rel_s": arr[0] - lo, "last_arrival_rel_s": arr[-1] - lo,
             "n_arrived": len(arr)} if arr else {})
    return {
        "submission": subm,
        "n_tasks": n_rec,
        "window_s": window,
        "window_pending_s": last_start - lo,
        "task_mean_s": float(np.mean(durations)),
        "task_median_s": float(np.median(durations)),
        "task_max_s": float(np.max(durations)),
        "busy_s_total": busy_total,
        "busy_fraction_total": busy_total / (n_workers * window) if window > 0 else float("nan"),
        "busy_fraction_pending_total": (pend_total / (n_workers * (last_start - lo))
                                        if last_start > lo else float("nan")),
        "per_worker": per_worker,
    }


def part_b(molecule: str, directory: Path) -> dict[str, Any]:
    import alprobe
    from distributed import get_task_stream

    from alprobe.config import parse_campaign

    data = campaign_dict(molecule)
    print(f"(b) label-stage busy fraction: campaign {data['name']} ({molecule} "
          f"{data['dft']['method']}/{data['dft']['basis']}, budget {data['select']['budget']}, "
          f"{data['explore']['walkers']} walkers x {data['explore']['steps']} steps, stride "
          f"{data['explore']['stride']}) in {directory}", flush=True)
    cfg = parse_campaign(data, str(REPO), "bench_throughput")
    if directory.exists():
        shutil.rmtree(directory)
    cluster, client = local_cluster(2)
    t0 = time.perf_counter()
    try:
        with get_task_stream(client) as ts:
            alprobe.run(cfg, directory, client=client, log=None)
        records = list(ts.data)
        transitions = client.run_on_scheduler(_label_transitions)
    finally:
        client.close()
        cluster.close()
    campaign_s = time.perf_counter() - t0
    L = alprobe.open_ledger(directory)
    gen1 = {f"label-{fid}" for fid in L.fids(generation=1)}
    gen0 = {f"label-{fid}" for fid in L.fids(generation=0)}
    stage = L.stage_info("gen001/label")
    res = {
        "campaign": data,
        "campaign_wall_s": campaign_s,
        "n_task_stream_records": len(records),
        "gen1_candidates": L.count(generation=1),
        "gen1_selected": L.stage_info("gen001/select").get("n"),
        "gen1_label_outcomes": {k: stage.get(k) for k in ("labeled", "failed", "rejected",
                                                          "timeout")},
        "gen1_label_stage_wall_s": stage.get("wall_s"),
        "gen1_label_dft_s": stage.get("dft_s"),
        "explore_stops": L.stage_info("gen001/explore").get("stops"),
        "gen1": busy_fractions(records, gen1, transitions),
        "gen0_for_reference": busy_fractions(records, gen0, transitions),
    }
    g = res["gen1"]
    if g.get("n_tasks", 0):
        print(f"  campaign {campaign_s:.0f} s; gen 1: {res['gen1_candidates']} candidates, "
              f"{g['n_tasks']} label tasks (mean {1000 * g['task_mean_s']:.0f} ms, max "
              f"{1000 * g['task_max_s']:.0f} ms), window {g['window_s']:.2f} s, label stage "
              f"wall (driver) {res['gen1_label_stage_wall_s']:.2f} s")
        print(f"  busy fraction first start -> last end: total {g['busy_fraction_total']:.1%}; "
              f"while labels were waiting (first start -> last start): "
              f"{g['busy_fraction_pending_total']:.1%}")
        sub = g.get("submission") or {}
        if sub:
            print(f"  the {sub['n_arrived']} label tasks reached the scheduler from "
                  f"{sub['first_arrival_rel_s']:+.3f} s to {sub['last_arrival_rel_s']:+.3f} s "
                  "relative to the first label start")
        for w, v in g["per_worker"].items():
            print(f"    {w}: {v['n_tasks']} tasks, busy {v['busy_s']:.2f} s = "
                  f"{v['busy_fraction']:.1%} (pending window {v['busy_fraction_pending']:.1%}); "
                  f"idle: before first {1000 * v['lead_idle_s']:.0f} ms, between tasks "
                  f"{1000 * (v['gap_starved_s'] + v['gap_scheduling_s']):.0f} ms (of which "
                  f"{1000 * v['gap_starved_s']:.0f} ms waiting for the driver to submit), "
                  f"after last {1000 * v['tail_idle_s']:.0f} ms; max gap {v['max_gap_ms']:.0f} ms")
    else:
        print("  no generation-1 label task found in the task stream", flush=True)
    sys.stdout.flush()
    return res


# ----- (c) selection and ledger at 100,000 candidates ---------------------------------------
def synth_candidates(n: int, n_walkers: int, seed: int = 0) -> list[Any]:
    """n ethanol frames as explore walkers emit them (info, fid and pred_forces as in
    run_walker)."""
    from ase.build import molecule

    from alprobe.frames import frame_id, set_prediction

    rng = np.random.default_rng(seed)
    base = molecule("CH3CH2OH")
    pos = base.positions[None] + rng.normal(0.0, 0.05, (n, len(base), 3))
    trust = rng.random(n)
    trust[rng.random(n) < 0.001] = np.nan  # a few unscored frames
    energy = -4200.0 + rng.normal(0.0, 0.5, n)
    forces = rng.normal(0.0, 1.0, (n, len(base), 3))
    frames = []
    for i in range(n):
        a = base.copy()
        a.positions = pos[i]
        w, s = i % n_walkers, i // n_walkers
        a.info.update(walker=w, sample=s, step=5 * (s + 1), time_fs=2.5 * (s + 1),
                      temperature_K=300.0, trust=float(trust[i]))
        set_prediction(a, energy[i], forces[i])
        a.info["fid"] = frame_id(a)  # as run_walker does, on the worker
        frames.append(a)
    return frames


def _ase_writer_ratio(frames: list[Any], directory: Path) -> dict[str, Any]:
    """The same frames added through ASE's row writer (db.write per row: what the ledger does
    with an ASE table layout it does not know) and through the bulk writer, in one run."""
    import alprobe.ledger.frames as ledger_mod  # where Ledger.add looks the layout check up

    out: dict[str, Any] = {"ratio_n_frames": len(frames)}
    for name, layout_ok in (("ase_rows", lambda db: False), ("bulk", ledger_mod._ASE_LAYOUT_OK)):
        if directory.exists():
            shutil.rmtree(directory)
        saved = ledger_mod._ASE_LAYOUT_OK
        ledger_mod._ASE_LAYOUT_OK = layout_ok
        try:
            L = ledger_mod.Ledger(directory, create=True)
            t = time.perf_counter()
            L.add(frames, generation=1, origin="explore", status="candidate")
            out[f"{name}_add_s"] = time.perf_counter() - t
            t = time.perf_counter()
            L.keys(generation=1, status="candidate")
            out[f"{name}_keys_s"] = time.perf_counter() - t
        finally:
            ledger_mod._ASE_LAYOUT_OK = saved
        del L
    out["bulk_add_speedup"] = out["ase_rows_add_s"] / out["bulk_add_s"]
    out["bulk_keys_speedup"] = out["ase_rows_keys_s"] / out["bulk_keys_s"]
    print(f"  {len(frames)} frames, ASE's row writer vs the bulk writer: add "
          f"{out['ase_rows_add_s']:.1f} s vs {out['bulk_add_s']:.1f} s "
          f"(x{out['bulk_add_speedup']:.1f}); keys read {out['ase_rows_keys_s']:.2f} s vs "
          f"{out['bulk_keys_s']:.2f} s (x{out['bulk_keys_speedup']:.1f})", flush=True)
    return out


def part_c(n: int, n_walkers: int, budget: int, min_spacing: int, directory: Path,
           force_profile: bool, n_profile: int) -> dict[str, Any]:
    from alprobe.acquire import select_least_trusted
    from alprobe.ledger import Ledger

    print(f"(c) selection and ledger at {n} candidates (ethanol, {n_walkers} walkers, budget "
          f"{budget}, min_spacing {min_spacing}) in {directory}", flush=True)
    if directory.exists():
        shutil.rmtree(directory)
    res: dict[str, Any] = {"n_candidates": n, "n_walkers": n_walkers, "budget": budget,
                           "min_spacing": min_spacing}
    t = time.perf_counter()
    frames = synth_candidates(n, n_walkers)
    res["synth_s"] = time.perf_counter() - t

    # selection on the arrays (the pure function), then as the driver does it from Atoms
    trust = np.array([a.info["trust"] for a in frames], dtype=float)
    walker = np.array([a.info["walker"] for a in frames])
    sample = np.array([a.info["sample"] for a in frames])
    times = []
    for rep in range(3):
        t = time.perf_counter()
        pick = select_least_trusted(trust, walker, sample, budget, min_spacing,
                                    rng=np.random.default_rng(rep))
        times.append(time.perf_counter() - t)
    res["select_s"] = max(times)
    res["select_s_runs"] = times
    res["n_selected"] = int(len(pick))
    print(f"  synthesized in {res['synth_s']:.1f} s; select_least_trusted: "
          f"{1000 * res['select_s']:.0f} ms (worst of 3), {len(pick)} picked", flush=True)

    t = time.perf_counter()
    L = Ledger(directory, create=True)
    res["ledger_open_empty_s"] = time.perf_counter() - t
    t = time.perf_counter()
    fids = L.add(frames, generation=1, origin="explore", status="candidate")
    res["ledger_add_s"] = time.perf_counter() - t
    res["ledger_add_ms_per_frame"] = 1000 * res["ledger_add_s"] / n
    res["ledger_db_MB"] = (directory / "ledger.db").stat().st_size / 1e6
    print(f"  Ledger.add of {n} frames (one transaction): {res['ledger_add_s']:.1f} s "
          f"({res['ledger_add_ms_per_frame']:.3f} ms/frame), ledger.db "
          f"{res['ledger_db_MB']:.0f} MB", flush=True)

    chosen = sorted(fids[i] for i in pick)
    calib = np.random.default_rng(1).random(len(chosen)) < 0.3
    t = time.perf_counter()
    with L.transaction():  # as the driver's select stage does
        for fid, c in zip(chosen, calib):
            L.update(fid, status="selected", split="calib" if c else "train")
    res["ledger_update_selected_s"] = time.perf_counter() - t
    print(f"  update of the {len(chosen)} selected frames (one transaction): "
          f"{1000 * res['ledger_update_selected_s']:.0f} ms", flush=True)

    t = time.perf_counter()
    cands = L.frames(generation=1, status="candidate")
    res["ledger_read_candidates_s"] = time.perf_counter() - t
    res["n_read_back"] = len(cands)
    t = time.perf_counter()
    c_trust = np.array([a.info.get("trust", np.nan) for a in cands], dtype=float)
    c_walker = np.array([a.info["walker"] for a in cands])
    c_sample = np.array([a.info["sample"] for a in cands])
    res["extract_arrays_s"] = time.perf_counter() - t
    del cands
    t = time.perf_counter()
    fid_only = L.fids(generation=1, status="candidate")
    res["ledger_fids_only_s"] = time.perf_counter() - t
    print(f"  ledger.frames(generation=1, status='candidate'): {res['ledger_read_candidates_s']:.1f} s "
          f"for {res['n_read_back']} frames (+{res['extract_arrays_s']:.2f} s building the "
          f"trust/walker/sample arrays); ledger.fids of the same query: "
          f"{res['ledger_fids_only_s']:.1f} s ({len(fid_only)} ids)", flush=True)
    _ = (c_trust, c_walker, c_sample)
    t = time.perf_counter()
    keys = L.keys(generation=1, status="candidate")
    res["ledger_keys_s"] = time.perf_counter() - t
    print(f"  ledger.keys(generation=1, status='candidate') (what the select stage reads): "
          f"{res['ledger_keys_s']:.1f} s for {len(keys)} rows", flush=True)
    del keys
    del L
    t = time.perf_counter()
    Ledger(directory)
    res["ledger_reopen_s"] = time.perf_counter() - t
    print(f"  reopening the ledger (Ledger.__init__ reads every row's keys): "
          f"{res['ledger_reopen_s']:.1f} s", flush=True)
    res["select_stage_driver_s"] = (res["ledger_read_candidates_s"] + res["extract_arrays_s"]
                                    + res["select_s"] + res["ledger_update_selected_s"])

    res.update(_ase_writer_ratio(frames[:min(n, 10_000)], directory.parent / "ledger_ase"))
    slow = (res["ledger_add_s"] > TARGETS["ledger_add_s"]
            or res["ledger_read_candidates_s"] > TARGETS["ledger_read_s"])
    if slow or force_profile:
        m = min(n_profile, n)
        sub = frames[:m]
        pdir = Path(tempfile.mkdtemp(prefix="bench_ledger_prof_", dir=directory.parent))
        try:
            Lp = Ledger(pdir, create=True)
            prof = cProfile.Profile()
            t = time.perf_counter()
            prof.enable()
            Lp.add(sub, generation=1, origin="explore", status="candidate")
            prof.disable()
            add_prof_s = time.perf_counter() - t
            res["profile_add"] = {"n_frames": m, "wall_s": add_prof_s,
                                  "top": profile_top(prof)}
            print_profile(f"Ledger.add of {m} frames", res["profile_add"]["top"], add_prof_s)
            prof = cProfile.Profile()
            t = time.perf_counter()
            prof.enable()
            Lp.frames(generation=1, status="candidate")
            prof.disable()
            read_prof_s = time.perf_counter() - t
            res["profile_read"] = {"n_frames": m, "wall_s": read_prof_s,
                                   "top": profile_top(prof)}
            print_profile(f"Ledger.frames of {m} candidates", res["profile_read"]["top"],
                          read_prof_s)
            # what-if (alprobe unchanged): the same add without pred_forces in the row data
            for a in sub:
                a.arrays.pop("pred_forces", None)
                a.info.pop("fid", None)
            Lq = Ledger(Path(tempfile.mkdtemp(prefix="bench_ledger_nof_", dir=directory.parent)),
                        create=True)
            t = time.perf_counter()
            Lq.add(sub, generation=1, origin="explore", status="candidate")
            res["whatif_add_without_pred_forces_s"] = time.perf_counter() - t
            res["whatif_add_without_pred_forces_n"] = m
            print(f"  what-if: Ledger.add of the same {m} frames without pred_forces: "
                  f"{res['whatif_add_without_pred_forces_s']:.2f} s (with: {add_prof_s:.2f} s "
                  "under cProfile)", flush=True)
            shutil.rmtree(Lq.dir, ignore_errors=True)
        finally:
            shutil.rmtree(pdir, ignore_errors=True)
    return res


# ----- main ---------------------------------------------------------------------------------
def fmt_row(q: str, measured: str, target: str, verdict: str) -> tuple[str, str, str, str]:
    return (q, measured, target, verdict)


def summary_rows(out: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    rows = []
    a = out.get("a")
    if a:
        rows.append(fmt_row("(a) map 10k no-ops: wall ms/task", f"{a['map_ms_per_task']:.3f} ms",
                            "-", "info"))
        rows.append(fmt_row("(a) map 10k no-ops: throughput", f"{a['map_tasks_per_s']:.0f} /s",
                            "-", "info"))
        rows.append(fmt_row("(a) sequential submit+result round trip",
                            f"{a['seq_ms_per_roundtrip']:.2f} ms", "-", "info"))
    for mol, b in (out.get("b") or {}).items():
        g = b["gen1"]
        tgt = f">= {TARGETS['busy_fraction']:.0%}"
        if not g.get("n_tasks"):
            rows.append(fmt_row(f"(b) {mol}: gen-1 label busy fraction", "no label tasks", tgt,
                                "FAIL"))
            continue
        ms = 1000 * g["task_mean_s"]
        ok = g["busy_fraction_total"] >= TARGETS["busy_fraction"]
        rows.append(fmt_row(f"(b) {mol}: gen-1 label busy fraction, total "
                            f"({g['n_tasks']} tasks, mean {ms:.0f} ms)",
                            f"{g['busy_fraction_total']:.1%}", tgt, "PASS" if ok else "FAIL"))
        for i, (w, v) in enumerate(g["per_worker"].items()):
            ok = v["busy_fraction"] >= TARGETS["busy_fraction"]
            rows.append(fmt_row(f"(b) {mol}:   worker {i} ({w.split('//')[-1]})",
                                f"{v['busy_fraction']:.1%}", tgt, "PASS" if ok else "FAIL"))
        ok = g["busy_fraction_pending_total"] >= TARGETS["busy_fraction"]
        rows.append(fmt_row(f"(b) {mol}: same, first start -> last start (queue non-empty)",
                            f"{g['busy_fraction_pending_total']:.1%}", tgt,
                            "PASS" if ok else "FAIL"))
    c = out.get("c")
    if c:
        n = c["n_candidates"]
        rows.append(fmt_row(f"(c) select_least_trusted, {n} candidates",
                            f"{c['select_s']:.3f} s", f"< {TARGETS['select_s']:.0f} s",
                            "PASS" if c["select_s"] < TARGETS["select_s"] else "FAIL"))
        rows.append(fmt_row(f"(c) Ledger.add {n} candidates (1 transaction)",
                            f"{c['ledger_add_s']:.1f} s", f"<= {TARGETS['ledger_add_s']:.0f} s",
                            "PASS" if c["ledger_add_s"] <= TARGETS["ledger_add_s"] else "FAIL"))
        rows.append(fmt_row(f"(c) read back {n} candidates (ledger.frames)",
                            f"{c['ledger_read_candidates_s']:.1f} s",
                            f"<= {TARGETS['ledger_read_s']:.0f} s",
                            "PASS" if c["ledger_read_candidates_s"] <= TARGETS["ledger_read_s"]
                            else "FAIL"))
        rows.append(fmt_row("(c) ledger.keys of the same (select stage)",
                            f"{c['ledger_keys_s']:.1f} s", "-", "info"))
        m = c["ratio_n_frames"]
        rows.append(fmt_row(f"(c) add {m}: ASE rows / bulk (same run)",
                            f"x{c['bulk_add_speedup']:.1f}", "-", "info"))
        rows.append(fmt_row(f"(c) keys read {m}: ASE select / bulk (same run)",
                            f"x{c['bulk_keys_speedup']:.1f}", "-", "info"))
        rows.append(fmt_row(f"(c) update of {c['n_selected']} selected",
                            f"{c['ledger_update_selected_s']:.3f} s", "-", "info"))
        rows.append(fmt_row("(c) driver select stage (read+arrays+select+update)",
                            f"{c['select_stage_driver_s']:.1f} s", "-", "info"))
        rows.append(fmt_row("(c) reopen ledger (Ledger.__init__)",
                            f"{c['ledger_reopen_s']:.1f} s", "-", "info"))
    return rows


def print_table(rows: list[tuple[str, str, str, str]]) -> None:
    head = ("quantity", "measured", "target", "pass/fail")
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    line = " | ".join(h.ljust(w) for h, w in zip(head, widths))
    print(line)
    print("-+-".join("-" * w for w in widths))
    for r in rows:
        print(" | ".join(v.ljust(w) for v, w in zip(r, widths)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/bench_throughput.json")
    ap.add_argument("--parts", default="abc", help="which parts to run (any of a, b, c)")
    ap.add_argument("--molecule", default="water,ethanol",
                    help="(b) comma-separated seeds of the HF/STO-3G campaigns (water, ethanol)")
    ap.add_argument("--workdir", default="runs/bench_throughput",
                    help="folder for the campaign (b) and the synthetic ledger (c)")
    ap.add_argument("--n-map", type=int, default=10_000)
    ap.add_argument("--n-seq", type=int, default=200)
    ap.add_argument("--n-candidates", type=int, default=100_000)
    ap.add_argument("--n-walkers", type=int, default=400)
    ap.add_argument("--budget", type=int, default=100)
    ap.add_argument("--min-spacing", type=int, default=2)
    ap.add_argument("--profile", action="store_true",
                    help="(c) profile the ledger add/read even when they are not slow")
    ap.add_argument("--n-profile", type=int, default=10_000,
                    help="(c) frames in the profiled subset")
    args = ap.parse_args()

    work = Path(args.workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    out: dict[str, Any] = {
        "host": platform.node(), "python": sys.version.split()[0], "cpu_count": os.cpu_count(),
        "uptime_start": uptime_line(), "loadavg_start": load_avg(), "targets": TARGETS,
    }
    try:
        import dask
        import distributed

        out["versions"] = {"dask": dask.__version__, "distributed": distributed.__version__}
    except ImportError:
        pass
    print(f"load at start: {out['uptime_start']}", flush=True)
    t_all = time.perf_counter()
    if "a" in args.parts:
        out["a"] = part_a(args.n_map, args.n_seq)
        out["loadavg_after_a"] = load_avg()
    if "b" in args.parts:
        out["b"] = {m: part_b(m, work / f"campaign_{m}")
                    for m in [m.strip() for m in args.molecule.split(",") if m.strip()]}
        out["loadavg_after_b"] = load_avg()
    if "c" in args.parts:
        out["c"] = part_c(args.n_candidates, args.n_walkers, args.budget, args.min_spacing,
                          work / "ledger_100k", args.profile, args.n_profile)
        shutil.rmtree(work / "ledger_100k", ignore_errors=True)  # ~hundreds of MB
        out["loadavg_after_c"] = load_avg()
    out["total_s"] = time.perf_counter() - t_all
    out["uptime_end"] = uptime_line()
    rows = summary_rows(out)
    out["table"] = [dict(zip(("quantity", "measured", "target", "pass_fail"), r)) for r in rows]

    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    json.dump(out, buf, indent=1, default=str)
    path.write_text(buf.getvalue())
    print()
    print_table(rows)
    print(f"total {out['total_s']:.0f} s; load at end: {out['uptime_end']}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
