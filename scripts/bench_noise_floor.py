"""Training noise of the backbone: how much of a learning curve is the training seed?

On a labeled pool (default: the repository's ethanol pool, PBE/def2-SVP), a fixed training set
of N frames and a held-out test set split by trajectory, the backbone is trained with several
seeds under each training procedure alprobe offers; the spread of the test force MAE across
seeds is the noise floor a comparison of strategies has to beat. Procedures:

* finetune: fine-tune a generation-0 model (trained on the first N0 frames) on all N frames
  (backbone.retrain: finetune, finetune_epochs), as a campaign does every generation;
* scratch: train from scratch on the N frames (backbone.retrain: scratch, epochs);
* with and without mace's exponential moving average (backbone.ema), and with more epochs.

mace-torch keeps the best-validation checkpoint in every case. Prints a table (mean, sd and
range of the test force MAE over seeds, mean wall time per training) and writes JSON.

    python scripts/bench_noise_floor.py [--pool campaigns/data/ethanol_pool.extxyz]
        [--n-train 64] [--n0 24] [--seeds 4] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

#: name -> (start from the gen-0 model?, epochs, ema)
PROCEDURES = {
    "finetune 30 ep": (True, 30, False),
    "finetune 30 ep + EMA": (True, 30, True),
    "scratch 60 ep": (False, 60, False),
    "scratch 60 ep + EMA": (False, 60, True),
    "scratch 120 ep + EMA": (False, 120, True),
}


def _train(job: dict[str, Any]) -> dict[str, Any]:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from alprobe.backbone import load_model, predict, train_backbone
    from alprobe.config import BackboneConfig

    from ase.io import read

    train = read(job["train"], index=":")
    valid = read(job["valid"], index=":")
    test = read(job["test"], index=":")
    for a in [*train, *valid, *test]:
        a.info["ref_energy"] = a.info["ref_energy"]
    settings = BackboneConfig(channels=job["channels"], epochs=job["epochs"], ema=job["ema"])
    t0 = time.perf_counter()
    info = train_backbone(train, valid, job["out"], settings, seed=job["seed"],
                          foundation=job["foundation"],
                          epochs=job["epochs"] if job["foundation"] else None)
    wall = time.perf_counter() - t0
    preds = predict(load_model(info["path"]), test)
    err = np.concatenate([np.abs(p.forces - a.arrays["ref_forces"]).ravel()
                          for p, a in zip(preds, test)])
    return {**job, "force_mae_meV_A": 1000 * float(err.mean()), "wall_s": wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pool", default="campaigns/data/ethanol_pool.extxyz")
    ap.add_argument("--n-train", type=int, default=64)
    ap.add_argument("--n0", type=int, default=24, help="frames of the generation-0 model")
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--channels", type=int, default=32)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--only", nargs="*", help="procedure names to run (default: all)")
    ap.add_argument("--out", default="runs/bench_noise_floor.json")
    args = ap.parse_args()

    from ase.io import write

    from alprobe.config import PoolConfig
    from alprobe.dataset import group_split
    from alprobe.pool import read_pool

    pool = read_pool(PoolConfig(file=str(Path(args.pool).resolve()), group_key="traj_id"))
    rng = np.random.default_rng(0)
    test_mask = group_split(pool.groups, 0.25, rng)
    rest = [a for a, m in zip(pool.frames, test_mask) if not m]
    test = [a for a, m in zip(pool.frames, test_mask) if m]
    order = rng.permutation(len(rest))
    train_all = [rest[i] for i in order[:args.n_train]]
    work = Path(tempfile.mkdtemp(prefix="bench_noise_"))
    n_val = max(2, args.n_train // 10)

    def dump(name: str, frames: list[Any]) -> str:
        path = work / f"{name}.extxyz"
        write(path, frames, format="extxyz")
        return str(path)

    files = {"test": dump("test", test), "train": dump("train", train_all[n_val:]),
             "valid": dump("valid", train_all[:n_val]),
             "train0": dump("train0", train_all[n_val:n_val + args.n0 - 2]),
             "valid0": dump("valid0", train_all[:2])}
    t0 = time.time()
    base = {"channels": args.channels, "test": files["test"], "ema": False, "foundation": None,
            "train": files["train0"], "valid": files["valid0"], "epochs": 60, "seed": 0,
            "out": str(work / "gen0.model"), "procedure": "gen0"}
    gen0 = _train(base)
    print(f"generation-0 model on {args.n0} frames: test force MAE "
          f"{gen0['force_mae_meV_A']:.1f} meV/Å [{time.time() - t0:.0f} s]", flush=True)
    jobs = []
    for name, (finetune, epochs, ema) in PROCEDURES.items():
        if args.only and name not in args.only:
            continue
        for s in range(args.seeds):
            jobs.append({**base, "procedure": name, "seed": 100 + s, "epochs": epochs, "ema": ema,
                         "foundation": gen0["out"] if finetune else None,
                         "train": files["train"], "valid": files["valid"],
                         "out": str(work / f"{name.replace(' ', '_')}_{s}.model")})
    with ProcessPoolExecutor(args.workers) as ex:
        results = list(ex.map(_train, jobs))
    rows = []
    print(f"\n{len(train_all)} training frames (+ validation), {len(test)} test frames "
          f"({int(test_mask.sum())} of {len(pool.frames)} pool frames, whole trajectories), "
          f"{args.seeds} seeds\n")
    print("| procedure | test F MAE mean (meV/Å) | sd | range | wall s per training |")
    print("|---|---|---|---|---|")
    for name in dict.fromkeys(r["procedure"] for r in results):
        m = np.array([r["force_mae_meV_A"] for r in results if r["procedure"] == name])
        w = np.mean([r["wall_s"] for r in results if r["procedure"] == name])
        row = {"procedure": name, "mean": float(m.mean()), "sd": float(m.std(ddof=1)),
               "range": float(np.ptp(m)), "wall_s": float(w), "values": m.tolist()}
        rows.append(row)
        print(f"| {name} | {row['mean']:.1f} | {row['sd']:.1f} | {row['range']:.1f} | "
              f"{row['wall_s']:.0f} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"gen0_force_mae_meV_A": gen0["force_mae_meV_A"],
                                          "n_train": len(train_all), "n_test": len(test),
                                          "rows": rows, "wall_s": time.time() - t0}, indent=1))
    print(f"\nwrote {args.out} [{time.time() - t0:.0f} s]")


if __name__ == "__main__":
    main()
