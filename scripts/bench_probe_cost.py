"""Cost of PROBE scoring relative to the backbone, and of an M-member committee.

On one batch of ethanol frames: (a) one backbone energy+forces pass (which also yields the
embeddings), (b) the same pass plus PROBE scoring, (c) M backbone passes (the committee).
Also per single frame, as an MD walker sees it. Models: two MACE sizes, trained for one epoch
on a few HF/STO-3G labels (timing only). Prints a table and writes JSON.

    python scripts/bench_probe_cost.py [--frames 64] [--members 4] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def _time(fn, repeats: int) -> float:
    fn()  # warm-up
    best = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best.append(time.perf_counter() - t0)
    return float(np.median(best))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=64)
    ap.add_argument("--members", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default="runs/bench_probe_cost.json")
    args = ap.parse_args()

    import torch
    from ase.build import molecule

    from alprobe.backbone import load_model, predict, train_backbone
    from alprobe.config import BackboneConfig, ProbeConfig
    from alprobe.frames import set_reference
    from alprobe.label import DFTLevel, label_atoms
    from alprobe.probe import train_probe

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    level = DFTLevel(method="hf", basis="sto-3g", density_fit=False)
    labeled = []
    for _ in range(12):
        a = molecule("CH3CH2OH")
        a.positions += rng.normal(0, 0.05, a.positions.shape)
        r = label_atoms(a, level)
        labeled.append(set_reference(a, r.energy, r.forces))
    batch = []
    for _ in range(args.frames):
        a = molecule("CH3CH2OH")
        a.positions += rng.normal(0, 0.05, a.positions.shape)
        batch.append(a)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, channels, max_l in [("32x0e", 32, 0), ("64x0e+64x1o", 64, 1)]:
            paths = []
            for m in range(args.members):
                cfg = BackboneConfig(channels=channels, max_L=max_l, epochs=1)
                out = Path(tmp) / f"{name}_{m}.model"
                paths.append(train_backbone(labeled[:10], labeled[10:], out, cfg, seed=m)["path"])
            models = [load_model(p) for p in paths]
            preds = predict(models[0], batch)
            errs = rng.random(len(batch))
            probe = train_probe([p.features for p in preds], [p.energy for p in preds], errs,
                                ProbeConfig(members=1, epochs=2, error="energy"), seed=0)
            probe3 = train_probe([p.features for p in preds], [p.energy for p in preds], errs,
                                 ProbeConfig(members=3, epochs=2, error="energy"), seed=0)

            def backbone(frames=batch):
                return predict(models[0], frames)

            def with_probe(frames=batch, pm=probe):
                p = predict(models[0], frames)
                return pm.score([q.features for q in p], [q.energy for q in p])

            def committee(frames=batch):
                return [predict(m, frames) for m in models]

            one = batch[:1]
            t = {
                "backbone_batch": _time(backbone, args.repeats),
                "probe_batch": _time(with_probe, args.repeats),
                "probe3_batch": _time(lambda: with_probe(batch, probe3), args.repeats),
                "committee_batch": _time(committee, args.repeats),
                "backbone_single": _time(lambda: backbone(one), args.repeats * 4),
                "probe_single": _time(lambda: with_probe(one), args.repeats * 4),
                "committee_single": _time(lambda: committee(one), args.repeats * 4),
            }
            rows.append({"model": name, **t,
                         "probe_overhead_batch": t["probe_batch"] / t["backbone_batch"] - 1,
                         "probe3_overhead_batch": t["probe3_batch"] / t["backbone_batch"] - 1,
                         "committee_ratio_batch": t["committee_batch"] / t["backbone_batch"],
                         "probe_overhead_single": t["probe_single"] / t["backbone_single"] - 1,
                         "committee_ratio_single": t["committee_single"] / t["backbone_single"]})

    print(f"\n{args.frames} ethanol frames per batch; median of {args.repeats} runs; 1 CPU thread;"
          f" committee of {args.members}")
    head = ("model", "backbone ms", "+PROBE ms", "PROBE overhead", "+PROBE(3 heads)",
            "committee ms", "committee / backbone", "single: PROBE overhead",
            "single: committee / backbone")
    print(" | ".join(head))
    for r in rows:
        print(" | ".join([
            r["model"], f"{1000 * r['backbone_batch']:.1f}", f"{1000 * r['probe_batch']:.1f}",
            f"{100 * r['probe_overhead_batch']:.1f}%", f"{100 * r['probe3_overhead_batch']:.1f}%",
            f"{1000 * r['committee_batch']:.1f}", f"{r['committee_ratio_batch']:.2f}x",
            f"{100 * r['probe_overhead_single']:.1f}%", f"{r['committee_ratio_single']:.2f}x"]))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
