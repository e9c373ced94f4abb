"""Cost of PROBE scoring relative to the backbone pass it rides on, and of a committee.

What an MD walker pays per sampled frame: one backbone energy + forces pass (``predict`` on one
frame, which also yields the embeddings), then the probe on those embeddings. Timings on a busy
shared machine drift by more than the quantity measured, so every ratio here is a *paired*
one: backbone alone and backbone + probe are timed alternately (A B A B ...), and the table
reports the median of the per-pair ratios; the probe's own forward on precomputed features is
timed the same way against the backbone. Models: two MACE sizes (trained for one epoch on a
few HF/STO-3G ethanol labels: the timing does not depend on the weights). Probe variants:
several heads in one batched pass, widths, attention on/off, the atom-level target. Beside
them: a committee of separate models, and a head committee (members 1..M-1 readout heads on the
backbone's body, ``committee.kind: heads``) scored from one body pass, with the members'
energies only or with every member's forces. Prints a table and writes JSON.

    python scripts/bench_probe_cost.py [--pairs 200] [--members 4]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def _paired(a, b, pairs: int) -> tuple[float, float, float]:
    """Median time of a, of b (s), and median of the per-pair ratios b / a (A B A B ...)."""
    for _ in range(5):
        a(), b()
    ta, tb, r = [], [], []
    for _ in range(pairs):
        t0 = time.perf_counter()
        a()
        t1 = time.perf_counter()
        b()
        t2 = time.perf_counter()
        ta.append(t1 - t0)
        tb.append(t2 - t1)
        r.append((t2 - t1) / (t1 - t0))
    return float(np.median(ta)), float(np.median(tb)), float(np.median(r))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=200)
    ap.add_argument("--members", type=int, default=4, help="committee size")
    ap.add_argument("--out", default="runs/bench_probe_cost.json")
    args = ap.parse_args()

    import torch
    from ase.build import molecule

    from alprobe.backbone import (committee_predict, head_start_model, load_model, predict,
                                  train_backbone)
    from alprobe.config import BackboneConfig, ProbeConfig
    from alprobe.frames import set_reference
    from alprobe.dft import DFTLevel, label_atoms
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
    frames = []
    for _ in range(64):
        a = molecule("CH3CH2OH")
        a.positions += rng.normal(0, 0.05, a.positions.shape)
        frames.append(a)
    one = frames[:1]
    variants = [  # name, ProbeConfig overrides, training examples (sets the auto width)
        ("1 head, width 64", {"members": 1, "width": 64}),
        ("5 heads, width 64", {"members": 5, "width": 64}),
        ("5 heads, width 128", {"members": 5, "width": 128}),
        ("5 heads, width 64, no attention", {"members": 5, "width": 64, "attention": False}),
        ("5 heads, width 64, atom target", {"members": 5, "width": 64, "target": "atom"}),
        ("5 heads, width 256 (reference size)", {"members": 5, "width": 256}),
    ]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model_name, channels, max_l in [("32x0e", 32, 0), ("64x0e+64x1o", 64, 1)]:
            paths = []
            for m in range(args.members):
                cfg = BackboneConfig(channels=channels, max_L=max_l, epochs=1)
                out = Path(tmp) / f"{model_name}_{m}.model"
                paths.append(train_backbone(labeled[:10], labeled[10:], out, cfg, seed=m)["path"])
            models = [load_model(p) for p in paths]
            preds = predict(models[0], frames)
            errs = rng.random(len(frames))
            atom_errs = [rng.random(len(a)) for a in frames]
            for vname, over in variants:
                pc = ProbeConfig(epochs=2, error="energy", **over)
                pm = train_probe([p.features for p in preds], [p.energy for p in preds], errs,
                                 pc, seed=0, atom_errors=atom_errs)
                feats, energy = [preds[0].features], [preds[0].energy]

                def backbone() -> object:
                    return predict(models[0], one, batch_size=1)

                def backbone_probe() -> object:
                    (p,) = predict(models[0], one, batch_size=1)
                    return pm.score([p.features], [p.energy])

                tb, tbp, ratio = _paired(backbone, backbone_probe, args.pairs)
                _, tp, probe_ratio = _paired(backbone, lambda: pm.score(feats, energy),
                                             args.pairs)
                rows.append({"model": model_name, "variant": vname,
                             "params_per_head": int(pm.meta["n_parameters"]),
                             "backbone_ms": 1000 * tb, "backbone_probe_ms": 1000 * tbp,
                             "paired_ratio": ratio, "probe_only_ms": 1000 * tp,
                             "probe_over_backbone": probe_ratio})
                print(f"  {model_name:12s} {vname:36s} ratio {ratio:.3f}  probe alone "
                      f"{1000 * tp:.2f} ms = {100 * probe_ratio:.1f}% of the backbone", flush=True)
            _, tc, cratio = _paired(lambda: predict(models[0], one, batch_size=1),
                                    lambda: [predict(m, one, batch_size=1) for m in models],
                                    args.pairs // 2)
            rows.append({"model": model_name, "variant": f"committee of {args.members}",
                         "params_per_head": 0, "backbone_ms": float("nan"),
                         "backbone_probe_ms": 1000 * tc, "paired_ratio": cratio,
                         "probe_only_ms": float("nan"), "probe_over_backbone": cratio - 1})
            # a head committee: members 1..M-1 are fresh readouts on the backbone's body
            heads = [models[0]] + [
                torch.load(head_start_model(paths[0], Path(tmp) / f"{model_name}_h{m}.model",
                                            m), weights_only=False).eval()
                for m in range(1, args.members)]
            for what, forces in [("energies (+ the backbone's forces)", "first"),
                                 ("energies and forces", True)]:
                _, th, hratio = _paired(lambda: predict(models[0], one, batch_size=1),
                                        lambda f=forces: committee_predict(heads, one, 1,
                                                                           forces=f),
                                        args.pairs // 2)
                rows.append({"model": model_name,
                             "variant": f"head committee of {args.members}: {what}",
                             "params_per_head": 0, "backbone_ms": float("nan"),
                             "backbone_probe_ms": 1000 * th, "paired_ratio": hratio,
                             "probe_only_ms": float("nan"), "probe_over_backbone": hratio - 1})
                print(f"  {model_name:12s} head committee, {what}: {hratio:.3f}x", flush=True)
            # the heads' marginal cost: the same call with the backbone alone as its member
            # (the fused readout path, no embeddings copied out, unlike predict)
            _, th, hratio = _paired(
                lambda h=heads[:1]: committee_predict(h, one, 1, forces="first"),
                lambda h=heads: committee_predict(h, one, 1, forces="first"), args.pairs // 2)
            rows.append({"model": model_name,
                         "variant": f"head committee of {args.members} over the backbone alone "
                         "through the same call (energies + the backbone's forces)",
                         "params_per_head": 0, "backbone_ms": float("nan"),
                         "backbone_probe_ms": 1000 * th, "paired_ratio": hratio,
                         "probe_only_ms": float("nan"), "probe_over_backbone": hratio - 1})
            print(f"  {model_name:12s} head committee over one member, same call: "
                  f"{hratio:.3f}x", flush=True)
    print(f"\nOne ethanol frame per call, as an MD walker scores it; 1 CPU thread; median of "
          f"{args.pairs} paired (A B A B) timings")
    print("| backbone | variant | params/head | backbone ms | backbone+probe ms | "
          "(backbone+probe)/backbone, median paired | probe alone ms | probe alone / backbone |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['variant']} | {r['params_per_head']} | "
              f"{r['backbone_ms']:.2f} | {r['backbone_probe_ms']:.2f} | {r['paired_ratio']:.3f}x | "
              f"{r['probe_only_ms']:.2f} | {100 * r['probe_over_backbone']:.1f}% |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
