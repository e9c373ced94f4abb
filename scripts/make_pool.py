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

Runs ``--workers`` processes (one OpenMP thread each). Every finished trajectory and every
fully labeled one is kept in ``--parts`` (default ``OUT`` with suffix ``.parts``), so running the
same command again after a stop picks up where it was; other settings against the same parts
are refused.
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
                             seed=job["seed"], torsion=job.get("torsion"))


def _label(frame: Any, level: dict[str, Any]) -> tuple[Any, str]:
    from alprobe.dft import DFTLevel
    from alprobe.pool import label_frame

    return label_frame(frame, DFTLevel(**level))


def _read(path: Path) -> list[Any]:
    from ase.io import read

    return list(read(path, ":", format="extxyz"))


def _make(jobs: list[dict[str, Any]], label_level: dict[str, Any], parts: Path, workers: int,
          t0: float) -> dict[str, tuple[list[Any], list[str]]]:
    """Run every trajectory and label its frames; each finished trajectory (``md-ID.extxyz``)
    and each fully labeled one (``labels-ID.extxyz`` + ``.json`` with its failures) is written
    to ``parts`` at once and reused by a later run with the same settings. Returns
    traj_id -> (labeled frames in trajectory order, failure reasons)."""
    from alprobe.frames import write_extxyz

    done: dict[str, tuple[list[Any], list[str]]] = {}
    pending: dict[Any, tuple[str, str, int]] = {}
    got: dict[str, dict[int, Any]] = {}
    why: dict[str, list[str]] = {}
    size: dict[str, int] = {}

    def start_labels(tid: str, md: list[Any]) -> None:
        size[tid], got[tid], why[tid] = len(md), {}, []
        for i, f in enumerate(md):
            pending[pool.submit(_label, f, label_level)] = ("label", tid, i)

    with ProcessPoolExecutor(workers) as pool:
        for j in jobs:
            tid = j["traj_id"]
            lab, md = parts / f"labels-{tid}.extxyz", parts / f"md-{tid}.extxyz"
            if lab.with_suffix(".json").exists():
                fails = json.loads(lab.with_suffix(".json").read_text())["failures"]
                done[tid] = (_read(lab) if lab.exists() else [], fails)
            elif md.exists():
                start_labels(tid, _read(md))
            else:
                pending[pool.submit(_trajectory, j)] = ("md", tid, -1)
        if done:
            print(f"  reusing {len(done)} labeled trajectories from {parts}", flush=True)
        n_labeled = 0
        while pending:
            fut = next(as_completed(list(pending)))
            kind, tid, i = pending.pop(fut)
            (parts / "elapsed_s.json").write_text(json.dumps(time.time() - t0))
            if kind == "md":
                md = fut.result()
                write_extxyz(parts / f"md-{tid}.extxyz", md)
                print(f"  MD {tid}: {len(md)} frames [{time.time() - t0:.0f} s]", flush=True)
                start_labels(tid, md)
                continue
            frame, reason = fut.result()
            if frame is None:
                why[tid].append(reason)
            else:
                got[tid][i] = frame
            n_labeled += 1
            if n_labeled % 50 == 0:
                print(f"  labeled {n_labeled} frames [{time.time() - t0:.0f} s]", flush=True)
            if len(got[tid]) + len(why[tid]) == size[tid]:
                frames = [got[tid][k] for k in sorted(got[tid])]
                lab = parts / f"labels-{tid}.extxyz"
                if frames:
                    write_extxyz(lab, frames)
                lab.with_suffix(".json").write_text(json.dumps({"failures": why[tid]}))
                done[tid] = (frames, why[tid])
    return done


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
    ap.add_argument("--dihedral", type=int, nargs=4, metavar=("I", "J", "K", "L"),
                    help="atoms of the torsion that --conformers sets (atom L moves); ethanol's "
                    "hydroxyl H: 0 1 2 3")
    ap.add_argument("--conformers", type=float, nargs="+",
                    help="start angles (degrees) of the --dihedral, taken in turn by the "
                    "trajectories of each temperature (ethanol: 180 trans, 60 gauche)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--parts", help="folder for finished trajectories and labels, so a stopped "
                    "run resumes where it was (default OUT with suffix .parts)")
    ap.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2)))
    args = ap.parse_args()
    if bool(args.dihedral) != bool(args.conformers):
        ap.error("--dihedral and --conformers go together")
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
            conf = args.conformers[k % len(args.conformers)] if args.conformers else None
            jobs.append({"molecule": args.molecule, "T": T, "seed": [args.seed, ti, k],
                         "traj_id": f"{name}-T{T:g}-{k}", "md_level": md_level,
                         "torsion": None if conf is None else (*args.dihedral, conf),
                         "timestep_fs": args.timestep_fs, "friction_per_fs": args.friction_per_fs,
                         "equilibrate": args.equilibrate, "frames": args.frames,
                         "stride": args.stride})
    parts = Path(args.parts) if args.parts else out.with_suffix(".parts")
    parts.mkdir(parents=True, exist_ok=True)
    settings = json.dumps({"jobs": jobs, "label_level": label_level}, sort_keys=True)
    stamp = parts / "settings.json"
    if stamp.exists() and stamp.read_text() != settings:
        ap.error(f"{parts} holds parts made with other settings: remove it or pass --parts")
    stamp.write_text(settings)
    clock = parts / "elapsed_s.json"
    before = json.loads(clock.read_text()) if clock.exists() else 0.0
    t0 = time.time() - before
    labeled = _make(jobs, label_level, parts, args.workers, t0)
    frames = [f for j in jobs for f in labeled[j["traj_id"]][0]]
    failures = [w for j in jobs for w in labeled[j["traj_id"]][1]]
    from alprobe.frames import write_extxyz

    write_extxyz(out, frames)
    from importlib.metadata import version

    prov = {
        "molecule": args.molecule, "frames": len(frames), "failed_labels": len(failures),
        "failures": failures[:20], "trajectories": len(jobs),
        "temperatures_K": args.temperatures, "frames_per_trajectory": args.frames,
        "conformers": None if not args.conformers else {
            "dihedral": args.dihedral, "start_angles_deg": args.conformers,
            "per_temperature": {f"{a:g}": sum(1 for k in range(args.trajectories)
                                              if args.conformers[k % len(args.conformers)] == a)
                                for a in args.conformers}},
        "md": {"level": args.md_level, "timestep_fs": args.timestep_fs,
               "friction_per_fs": args.friction_per_fs, "equilibrate_steps": args.equilibrate,
               "stride_steps": args.stride, "thermostat": "ASE Langevin"},
        "labels": {"level": f"{args.level} (density fitting, grid level 1)"
                   if label_level["method"] == "dft" else args.level,
                   "code": "PySCF via alprobe.dft.label_atoms", "units": "eV, eV/A"},
        "keys": {"energy": "ref_energy", "forces": "ref_forces", "group": "traj_id"},
        "seed": args.seed, "wall_s": time.time() - t0,
        "wall_note": "seconds of work over all runs that made the parts (a resumed run adds "
                     "only the time up to its last finished part)",
        "versions": {p: version(p) for p in ("pyscf", "ase", "alprobe")},
        "command": "python scripts/make_pool.py " + " ".join(os.sys.argv[1:]),
    }
    Path(out.with_suffix(".json")).write_text(json.dumps(prov, indent=1))
    print(f"wrote {out} ({len(frames)} frames, {len(failures)} failed labels) in "
          f"{time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
