"""Labels saved by a pretrained backbone: learning curves of a from-scratch MACE and of a
fine-tuned pretrained one on the same randomly chosen labels (the random arm's science without
the MD loop), paired by replica.

Per replica, whole trajectories of the pool (``--test-fraction``, as a pool campaign holds them
out) are the test set; the training labels are nested random subsets of the rest (the first n
of one seeded order, n in ``--sizes``; 10% of each validate). At each size:
- scratch: MACE ``--channels``x0e from scratch (``backbone.epochs``, the campaign default);
- pretrained: a multihead replay fine-tune of ``--foundation`` (``--finetune-epochs``,
  ``--replay-samples`` replay frames, ``--freeze``), as a campaign with backbone.foundation
  trains it.
Reported: test force MAE (meV/A) per size and backbone, and per replica the fewest labels at
which the pretrained model is at least as good as scratch at the largest size (the target
"reach the from-scratch final MAE with at most half the labels").

    python scripts/bench_pretrained_curve.py [--foundation FILE] [--sizes 16 32 64]
        [--replicas 3] [--workers 2] [--out runs/bench_pretrained_curve.json]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np


def _fit(job: dict[str, Any]) -> dict[str, Any]:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    from alprobe.backbone import Replay, load_model, predict, train_backbone
    from alprobe.config import BackboneConfig
    from alprobe.frames import REF_FORCES, read_labeled

    torch.set_num_threads(1)
    train, valid = read_labeled(job["train"]), read_labeled(job["valid"])
    test = read_labeled(job["test"])
    t0 = time.time()
    if job["kind"] == "pretrained":
        s = BackboneConfig(foundation=job["foundation"], replay_file=job["replay_file"],
                           finetune_epochs=job["finetune_epochs"], freeze=job["freeze"])
        info = train_backbone(train, valid, job["out"], s, seed=job["seed"],
                              foundation=job["foundation"], epochs=job["finetune_epochs"],
                              replay=Replay(job["replay"]))
    else:
        s = BackboneConfig(channels=job["channels"])
        info = train_backbone(train, valid, job["out"], s, seed=job["seed"])
    preds = predict(load_model(info["path"]), test)
    mae = 1000 * float(np.mean([np.abs(p.forces - a.arrays[REF_FORCES]).mean()
                                for p, a in zip(preds, test)]))
    return {**{k: job[k] for k in ("kind", "replica", "n")}, "test_force_mae_meV_A": mae,
            "wall_s": time.time() - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pool", default="campaigns/data/ethanol_pool.extxyz")
    ap.add_argument("--foundation", default="campaigns/data/foundation/foundation_medium.model")
    ap.add_argument("--replay-file", default="campaigns/data/foundation/pretrain.extxyz")
    ap.add_argument("--sizes", type=int, nargs="+", default=[16, 32, 64])
    ap.add_argument("--replicas", type=int, default=3)
    ap.add_argument("--test-fraction", type=float, default=0.25)
    ap.add_argument("--channels", type=int, default=32)
    ap.add_argument("--finetune-epochs", type=int, default=20)
    ap.add_argument("--replay-samples", type=int, default=150)
    ap.add_argument("--freeze", type=int, default=5)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--work", default="runs/bench_pretrained_curve")
    ap.add_argument("--out", default="runs/bench_pretrained_curve.json")
    args = ap.parse_args()

    from alprobe.dataset import group_split
    from alprobe.frames import read_labeled, write_extxyz
    from alprobe.stages.train import _mace_keys

    t_start = time.time()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    pool = read_labeled(args.pool, keep_info=True)
    groups = [str(a.info["traj_id"]) for a in pool]
    replay = read_labeled(args.replay_file)
    jobs = []
    for r in range(args.replicas):
        rng = np.random.default_rng([r, 23])
        test_mask = group_split(groups, args.test_fraction, rng)
        test = [a for a, t in zip(pool, test_mask) if t]
        rest = [a for a, t in zip(pool, test_mask) if not t]
        order = rng.permutation(len(rest))
        write_extxyz(work / f"r{r}_test.extxyz", test)
        rep = work / f"r{r}_replay.extxyz"
        pick = sorted(rng.permutation(len(replay))[:args.replay_samples])
        write_extxyz(rep, [_mace_keys(replay[i]) for i in pick])
        for n in args.sizes:
            chosen = [rest[i] for i in order[:n]]
            n_val = max(2, n // 10)
            write_extxyz(work / f"r{r}_n{n}_train.extxyz", chosen[n_val:])
            write_extxyz(work / f"r{r}_n{n}_valid.extxyz", chosen[:n_val])
            for kind in ("scratch", "pretrained"):
                jobs.append({"kind": kind, "replica": r, "n": n, "seed": r,
                             "train": str(work / f"r{r}_n{n}_train.extxyz"),
                             "valid": str(work / f"r{r}_n{n}_valid.extxyz"),
                             "test": str(work / f"r{r}_test.extxyz"),
                             "out": str(work / f"r{r}_n{n}_{kind}.model"),
                             "foundation": args.foundation, "replay_file": args.replay_file,
                             "replay": str(rep), "finetune_epochs": args.finetune_epochs,
                             "freeze": args.freeze, "channels": args.channels})
    rows = []
    print(f"{len(jobs)} trainings, {args.workers} at a time", flush=True)
    with ProcessPoolExecutor(args.workers) as ex:
        for row in ex.map(_fit, jobs):
            rows.append(row)
            print(f"  replica {row['replica']} n {row['n']:3d} {row['kind']:10s} test F MAE "
                  f"{row['test_force_mae_meV_A']:.1f} meV/A [{time.time() - t_start:.0f} s]",
                  flush=True)
            Path(args.out).write_text(json.dumps({"rows": rows, "partial": True}, indent=1))

    def mae(kind: str, r: int, n: int) -> float:
        return next(x["test_force_mae_meV_A"] for x in rows
                    if x["kind"] == kind and x["replica"] == r and x["n"] == n)

    top = max(args.sizes)
    print(f"\ntest force MAE (meV/A) on held-out trajectories; scratch {args.channels}x0e vs "
          f"{Path(args.foundation).name} fine-tuned (freeze {args.freeze}, "
          f"{args.replay_samples} replay frames); {args.replicas} replicas, same labels")
    print("| labels | scratch | pretrained | pretrained − scratch [95% t-interval] |")
    print("|---|---|---|---|")
    from scipy import stats

    table = []
    for n in sorted(args.sizes):
        a = np.array([mae("scratch", r, n) for r in range(args.replicas)])
        b = np.array([mae("pretrained", r, n) for r in range(args.replicas)])
        d = b - a
        half = float(stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d)))
        table.append({"labels": n, "scratch": a.tolist(), "pretrained": b.tolist(),
                      "diff": float(d.mean()), "lo": float(d.mean()) - half,
                      "hi": float(d.mean()) + half})
        print(f"| {n} | {a.mean():.1f} ± {a.std(ddof=1):.1f} | {b.mean():.1f} ± "
              f"{b.std(ddof=1):.1f} | {d.mean():+.1f} [{d.mean() - half:+.1f}, "
              f"{d.mean() + half:+.1f}] |")
    reach = []
    for r in range(args.replicas):
        target = mae("scratch", r, top)
        ok = [n for n in sorted(args.sizes) if mae("pretrained", r, n) <= target]
        reach.append(ok[0] if ok else None)
    print(f"labels at which the pretrained model reaches scratch's MAE at {top} labels, per "
          f"replica: {reach} (target: at most {top // 2})")
    Path(args.out).write_text(json.dumps({
        "rows": rows, "table": table, "reach_labels": reach, "args": vars(args),
        "wall_s": time.time() - t_start}, indent=1))
    print(f"wrote {args.out} [{time.time() - t_start:.0f} s]")


if __name__ == "__main__":
    main()
