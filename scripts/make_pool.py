"""Make a labeled pool for retrospective (pool-mode) campaigns and benchmarks.

For one molecule: Langevin MD driven by a cheap ab initio level (HF/STO-3G through PySCF,
each step starting from the previous density) at several temperatures, several independent
trajectories per temperature; every ``stride`` steps after an equilibration a frame is kept and
labeled at the reference level (PBE/def2-SVP, density fitting, grid level 1 by default) with
alprobe's own labeler (structure checks, SCF rescue ladder; failed labels are left out and
counted). Writes ``OUT`` (extxyz: info ref_energy (eV), traj_id, temperature_K, step, time_fs;
arrays ref_forces (eV/A)) and ``OUT`` with suffix ``.json`` (provenance: levels, settings,
counts, package versions, wall time).

    python scripts/make_pool.py ethanol --out campaigns/data/ethanol_pool.extxyz
    python scripts/make_pool.py CH3CONH2 --temperatures 300 500 800 1200 --trajectories 3

Runs ``--workers`` processes (one OpenMP thread each).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any


def _trajectory(job: dict[str, Any]) -> list[Any]:
    from alprobe.dft import DFTLevel
    from alprobe.pool import sample_trajectory

    return sample_trajectory(job["molecule"], job["T"], DFTLevel(**job["md_level"]),
                             frames=job["frames"], stride=job["stride"],
                             equilibrate=job["equilibrate"], timestep_fs=job["timestep_fs"],
                             friction_per_fs=job["friction_per_fs"], traj_id=job["traj_id"],
                             seed=job["seed"])


def _label(frame: Any, level: dict[str, Any]) -> tuple[Any, str]:
    from alprobe.dft import DFTLevel
    from alprobe.pool import label_frame

    return label_frame(frame, DFTLevel(**level))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("molecule", help="a name for ase.build.molecule or an alias (ethanol)")
    ap.add_argument("--out", help="extxyz path (default campaigns/data/<molecule>_pool.extxyz)")
    ap.add_argument("--temperatures", type=float, nargs="+", default=[300, 500, 800, 1200])
    ap.add_argument("--trajectories", type=int, default=3, help="per temperature")
    ap.add_argument("--frames", type=int, default=30, help="per trajectory")
    ap.add_argument("--stride", type=int, default=12, help="MD steps between kept frames")
    ap.add_argument("--equilibrate", type=int, default=40, help="MD steps before the first")
    ap.add_argument("--timestep-fs", type=float, default=0.5)
    ap.add_argument("--friction-per-fs", type=float, default=0.02)
    ap.add_argument("--md-level", default="hf/sto-3g", help="METHOD/BASIS driving the MD")
    ap.add_argument("--level", default="pbe/def2-svp",
                    help="XC/BASIS of the labels (density fitting, grid level 1), or hf/BASIS")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2)))
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    def level(spec: str, df: bool) -> dict[str, Any]:
        xc, basis = spec.split("/")
        method = "hf" if xc.lower() == "hf" else "dft"
        return {"method": method, "xc": "pbe" if method == "hf" else xc, "basis": basis,
                "density_fit": df and method == "dft", "grid_level": 1}

    md_level, label_level = level(args.md_level, False), level(args.level, True)
    name = args.molecule.replace("/", "_")
    out = Path(args.out or f"campaigns/data/{name}_pool.extxyz")
    out.parent.mkdir(parents=True, exist_ok=True)
    jobs = []
    for ti, T in enumerate(args.temperatures):
        for k in range(args.trajectories):
            jobs.append({"molecule": args.molecule, "T": T, "seed": [args.seed, ti, k],
                         "traj_id": f"{name}-T{T:g}-{k}", "md_level": md_level,
                         "timestep_fs": args.timestep_fs, "friction_per_fs": args.friction_per_fs,
                         "equilibrate": args.equilibrate, "frames": args.frames,
                         "stride": args.stride})
    t0 = time.time()
    frames, failures = [], []
    with ProcessPoolExecutor(args.workers) as pool:
        trajs = {}
        for fut in as_completed([pool.submit(_trajectory, j) for j in jobs]):
            got = fut.result()
            trajs[got[0].info["traj_id"]] = got
            print(f"  MD {got[0].info['traj_id']}: {len(got)} frames [{time.time() - t0:.0f} s]",
                  flush=True)
        ordered = [f for j in jobs for f in trajs[j["traj_id"]]]
        futs = [pool.submit(_label, f, label_level) for f in ordered]
        for i, fut in enumerate(futs):
            frame, why = fut.result()
            if frame is None:
                failures.append(why)
            else:
                frames.append(frame)
            if (i + 1) % 50 == 0:
                print(f"  labeled {i + 1}/{len(futs)} [{time.time() - t0:.0f} s]", flush=True)
    from alprobe.frames import write_extxyz

    write_extxyz(out, frames)
    from importlib.metadata import version

    prov = {
        "molecule": args.molecule, "frames": len(frames), "failed_labels": len(failures),
        "failures": failures[:20], "trajectories": len(jobs),
        "temperatures_K": args.temperatures, "frames_per_trajectory": args.frames,
        "md": {"level": args.md_level, "timestep_fs": args.timestep_fs,
               "friction_per_fs": args.friction_per_fs, "equilibrate_steps": args.equilibrate,
               "stride_steps": args.stride, "thermostat": "ASE Langevin"},
        "labels": {"level": f"{args.level} (density fitting, grid level 1)"
                   if label_level["method"] == "dft" else args.level,
                   "code": "PySCF via alprobe.dft.label_atoms", "units": "eV, eV/A"},
        "keys": {"energy": "ref_energy", "forces": "ref_forces", "group": "traj_id"},
        "seed": args.seed, "wall_s": time.time() - t0,
        "versions": {p: version(p) for p in ("pyscf", "ase", "alprobe")},
        "command": "python scripts/make_pool.py " + " ".join(os.sys.argv[1:]),
    }
    Path(out.with_suffix(".json")).write_text(json.dumps(prov, indent=1))
    print(f"wrote {out} ({len(frames)} frames, {len(failures)} failed labels) in "
          f"{time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
