"""Discrete-event model of one campaign at cluster scale: the generations schedule against the
streaming schedule, on N DFT workers and one training GPU.

What is simulated (each an assumption, stated so that a reader can disagree with it):

- **Workers.** N identical DFT workers (one label at a time each), one GPU for backbone
  training (a training, once started, is never interrupted), and the MD walkers, which run on
  the GPU's spare capacity beside a training without slowing it (small MACE models leave most
  of an accelerator idle). The driver's own time, Dask's overhead and data transfers are zero.
- **Task times.** A DFT label takes a lognormal time with the mean and coefficient of
  variation given (defaults: PBE/def2-SVP ethanol labels measured here, 2.5 s mean at grid
  level 1 on one core, CV 0.25). A training takes ``train_fixed_s + train_per_label_s *
  labels`` (fine-tuning cost grows with the training set), measured here on one CPU core with
  mace-torch (about 9 s fixed and 0.25 s per label for 30 epochs) and divided by
  ``gpu_speedup`` (default 20: an assumption for a data-centre GPU against one core). A walker
  segment takes ``md_segment_s`` and yields ``picks_per_segment`` picks; N / 2 walkers run at
  once (the number of walkers grows with the cluster). A second scenario labels a 24-atom
  molecule (measured here: 56-157 s per PBE/def2-SVP label; mean 100 s).
- **Budget.** Generation size B = ``labels_per_worker`` x N (a cluster labels more per
  generation, as users scale their budget with their machine); G generations; the streaming
  schedule gets the same total B x G and retrains after every B labels.
- **Generations schedule.** explore (every walker runs segments until B frames are picked;
  DFT and training idle), label B frames (the GPU idle), train on everything (DFT idle),
  repeat.
- **Streaming schedule.** Each DFT worker takes the next queued frame the moment it is free; a
  walker starts its next segment whenever the queue holds fewer than N frames; a training
  starts as soon as B new labels exist and the GPU is free, and its models serve the walkers
  from their next segment on.
- **Accuracy.** Test force MAE after a training on L labels follows a power law fitted to a
  measured learning curve, ``mae = a * L ** -alpha`` (defaults fitted to the quick start's
  66-105 meV/A over 56-104 labels); a pick made with older models is assumed to be worth as
  much as one made with the newest (streaming's staleness costs nothing here: the measured
  local runs are where that cost shows). The target is the MAE the generations schedule reaches
  after 3/4 of its generations.

Busy fraction: the fraction of the campaign's wall time (from the first task to the last
training's end) during which a DFT worker (mean over workers) or the GPU is running a task.
Time to target: wall time until a training whose MAE is at or below the target has finished.

    python scripts/simulate_schedules.py [--workers 8 64 512] [--json OUT]
        [--from bench_results/bench_streaming.json]

``--from``: take the label-time mean and spread and the walker-segment time from the tasks of
a scripts/bench_streaming.py run (Dask's task stream) for the first scenario.

Prints a table and writes JSON (default bench_results/simulate_schedules.json).
"""

from __future__ import annotations

import argparse
import heapq
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Model:
    label_mean_s: float = 2.5
    label_cv: float = 0.25
    train_fixed_s: float = 9.0
    train_per_label_s: float = 0.25
    gpu_speedup: float = 20.0
    md_segment_s: float = 6.0
    picks_per_segment: int = 2
    labels_per_worker: int = 4
    generations: int = 12
    mae_a: float = 1500.0
    mae_alpha: float = 0.66
    initial_labels: int = 56


def _label_times(m: Model, n: int, rng: np.random.Generator) -> np.ndarray:
    sigma = np.sqrt(np.log(1 + m.label_cv ** 2))
    mu = np.log(m.label_mean_s) - sigma ** 2 / 2
    return rng.lognormal(mu, sigma, n)


def _train_s(m: Model, labels: int) -> float:
    return (m.train_fixed_s + m.train_per_label_s * labels) / m.gpu_speedup


def _mae(m: Model, labels: int) -> float:
    return m.mae_a * labels ** -m.mae_alpha


def generations(m: Model, n: int, rng: np.random.Generator) -> dict:
    """The barrier schedule: explore, label B on N workers, train; G times."""
    b = m.labels_per_worker * n
    t, labels = 0.0, m.initial_labels
    dft_busy = gpu_busy = 0.0
    curve = []
    walkers = max(1, n // 2)
    for _ in range(m.generations):
        # every walker runs segments at once until the generation's B picks exist
        t += m.md_segment_s * int(np.ceil(b / (walkers * m.picks_per_segment)))
        free = [t] * n  # list scheduling of B labels on N workers
        heapq.heapify(free)
        for d in _label_times(m, b, rng):
            s = heapq.heappop(free)
            heapq.heappush(free, s + d)
            dft_busy += d
        t = max(free)
        labels += b
        tr = _train_s(m, labels)
        gpu_busy += tr
        t += tr
        curve.append((t, labels, _mae(m, labels)))
    return {"wall_s": t, "dft_busy": dft_busy / (n * t), "gpu_busy": gpu_busy / t,
            "curve": curve}


def streaming(m: Model, n: int, rng: np.random.Generator) -> dict:
    """No barrier: labels from a queue on every free worker, MD fills the queue, trainings in
    between on the GPU whenever B new labels exist."""
    b = m.labels_per_worker * n
    total = b * m.generations
    times = iter(_label_times(m, total, rng))
    events: list[tuple[float, int, str, int]] = []  # (time, order, kind, payload)
    order = 0

    def push(t: float, kind: str, payload: int = 0) -> None:
        nonlocal order
        order += 1
        heapq.heappush(events, (t, order, kind, payload))

    queue = picked = done = 0
    trained_on = m.initial_labels
    idle = n
    gpu_free = True
    walkers = max(1, n // 2)
    md_running = 0
    dft_busy = gpu_busy = 0.0
    curve: list[tuple[float, int, float]] = []
    t = 0.0

    def dispatch(now: float) -> None:
        nonlocal queue, idle, gpu_free, md_running, gpu_busy, dft_busy
        while idle and queue:
            queue -= 1
            idle -= 1
            d = next(times)
            dft_busy += d
            push(now + d, "label")
        new = m.initial_labels + done - trained_on
        if gpu_free and (new >= b or (done == total and new > 0)):
            gpu_free = False
            tr = _train_s(m, m.initial_labels + done)
            gpu_busy += tr
            push(now + tr, "trained", m.initial_labels + done)
        while (md_running < walkers and picked + md_running * m.picks_per_segment < total
               and queue + md_running * m.picks_per_segment < n):
            md_running += 1
            push(now + m.md_segment_s, "segment")

    dispatch(0.0)
    while events:
        t, _, kind, payload = heapq.heappop(events)
        if kind == "label":
            idle += 1
            done += 1
        elif kind == "segment":
            md_running -= 1
            k = min(m.picks_per_segment, total - picked)
            picked += k
            queue += k
        elif kind == "trained":
            gpu_free = True
            trained_on = payload
            curve.append((t, payload, _mae(m, payload)))
        dispatch(t)
    return {"wall_s": t, "dft_busy": dft_busy / (n * t), "gpu_busy": gpu_busy / t,
            "curve": curve}


def time_to(curve: list[tuple[float, int, float]], target: float) -> float:
    return next((t for t, _, mae in curve if mae <= target + 1e-9), float("nan"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, nargs="+", default=[8, 64, 512])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default="bench_results/simulate_schedules.json")
    ap.add_argument("--from", dest="measured", help="bench_streaming.py JSON: measured task "
                    "times for the first scenario")
    args = ap.parse_args()
    first, name = Model(), "ethanol, 2.5 s per label"
    if args.measured:
        data = json.loads(Path(args.measured).read_text())["results"]
        secs = {k: [x for r in data.values() for x in r["task_seconds"].get(k, [])]
                for k in ("label", "segment")}
        lab = np.array(secs["label"])
        first = Model(label_mean_s=float(lab.mean()),
                      label_cv=float(lab.std() / lab.mean()),
                      md_segment_s=float(np.median(secs["segment"])) if secs["segment"]
                      else Model().md_segment_s)
        name = (f"measured ({args.measured}): {first.label_mean_s:.2f} s per label, "
                f"segment {first.md_segment_s:.1f} s")
    scenarios = {name: first, "24-atom molecule, 100 s per label": Model(label_mean_s=100.0)}
    rows = []
    head = ("scenario", "N", "labels", "DFT busy gen", "DFT busy stream", "GPU busy gen",
            "GPU busy stream", "to target gen s", "to target stream s", "stream / gen")
    print(" | ".join(head))
    for name, m in scenarios.items():
        for n in args.workers:
            g = generations(m, n, np.random.default_rng([args.seed, n]))
            s = streaming(m, n, np.random.default_rng([args.seed, n]))
            target = g["curve"][3 * len(g["curve"]) // 4 - 1][2]
            r = {"scenario": name, "workers": n,
                 "labels_total": m.labels_per_worker * n * m.generations,
                 "target_mae_meV_A": target,
                 "gen_dft_busy": g["dft_busy"], "stream_dft_busy": s["dft_busy"],
                 "gen_gpu_busy": g["gpu_busy"], "stream_gpu_busy": s["gpu_busy"],
                 "gen_wall_s": g["wall_s"], "stream_wall_s": s["wall_s"],
                 "gen_time_to_target_s": time_to(g["curve"], target),
                 "stream_time_to_target_s": time_to(s["curve"], target), "model": asdict(m)}
            rows.append(r)
            print(" | ".join([
                name, str(n), str(r["labels_total"]), f"{r['gen_dft_busy']:.2f}",
                f"{r['stream_dft_busy']:.2f}", f"{r['gen_gpu_busy']:.2f}",
                f"{r['stream_gpu_busy']:.2f}", f"{r['gen_time_to_target_s']:.0f}",
                f"{r['stream_time_to_target_s']:.0f}",
                f"x{r['stream_time_to_target_s'] / r['gen_time_to_target_s']:.2f}"]))
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rows": rows}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
