"""Make the repository's own small pretrained ("foundation") MACE models, so campaigns that
start from a pretrained backbone, their tests and benchmarks need no download.

1. Data: for each of ``--molecules`` (small H/C/N/O molecules from ``ase.build.molecule``; none
   of them ethanol, acetamide or acetic acid, the molecules of the repository's pools), Langevin
   MD driven by HF/STO-3G at several temperatures (``scripts/make_pool.py``'s machinery: one
   trajectory per temperature, frames every ``--stride`` steps) plus rattled copies of the
   equilibrium geometry at several amplitudes; every frame is labeled at ``--level`` (HF/6-31G
   by default, so a campaign at PBE/def2-SVP also crosses a level of theory, as fine-tuning a
   real foundation model does) with alprobe's own labeler. Failed labels are left out and
   counted. Written to ``OUT/pretrain.extxyz`` (info ref_energy eV, molecule, traj_id; arrays
   ref_forces eV/A) with ``OUT/pretrain.json`` (provenance).
2. Models: MACE pretrained from scratch on those frames at each of ``--sizes`` (small 32x0e,
   medium 64x0e+64x1o, large 96x0e+96x1o by default), with mace-torch's trainer through
   alprobe's training path; 10% of the trajectories (whole ones) validate. Written to
   ``OUT/foundation_<size>.model`` with ``OUT/foundation_<size>.json`` (architecture, epochs,
   wall time, validation errors, versions, the command).

    python scripts/make_foundation.py --out campaigns/data/foundation
    python scripts/make_foundation.py --sizes small --epochs 40   # a quick one

Every finished trajectory and label set is kept in ``OUT/parts``, so running the command again
after a stop picks up where it was; a model file already written is kept (delete it to retrain).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

#: ase.build.molecule names: H/C/N/O, none of them ethanol, acetamide or acetic acid.
MOLECULES = ["CH4", "H2O", "NH3", "CH3OH", "H3CNH2", "HCOOH", "CH3CHO", "HCOOCH3", "C2H6",
             "CH3CN", "CH3OCH3", "CH3NO2"]
EXCLUDED = {"ethanol", "CH3CH2OH", "acetamide", "CH3CONH2", "acetic acid", "CH3COOH"}
#: name -> (channels, max_L, epochs): the sizes pretrained by default.
SIZES = {"small": (32, 0, 120), "medium": (64, 1, 60), "large": (96, 1, 50)}


def _pool_script() -> Any:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import make_pool  # noqa: E402  (scripts/ is not a package)

    return make_pool


def _level(spec: str, df: bool) -> dict[str, Any]:
    xc, basis = spec.split("/")
    method = "hf" if xc.lower() == "hf" else "dft"
    return {"method": method, "xc": "pbe" if method == "hf" else xc, "basis": basis,
            "density_fit": df and method == "dft", "grid_level": 1}


def _rattled(molecule: str, amplitudes: list[float], per: int, seed: int) -> list[Any]:
    import numpy as np

    from alprobe.frames import bare_copy, load_seeds

    base = bare_copy(load_seeds([molecule])[0])
    out = []
    for ai, amp in enumerate(amplitudes):
        for k in range(per):
            a = base.copy()
            rng = np.random.default_rng([seed, 7, ai, k])
            a.positions += rng.normal(0.0, amp, a.positions.shape)
            a.info.update(traj_id=f"{molecule}-rattle{amp:g}-{k}", temperature_K=0.0,
                          rattle_A=amp)
            out.append(a)
    return out


def make_data(args: argparse.Namespace, out: Path, t0: float) -> tuple[list[Any], dict]:
    """Every molecule's MD and rattled frames labeled at ``args.level``; (frames, counts)."""
    from alprobe.frames import write_extxyz

    mp = _pool_script()
    parts = out / "parts"
    parts.mkdir(parents=True, exist_ok=True)
    label_level = _level(args.level, True)
    md_level = _level("hf/sto-3g", False)
    jobs = []
    for mi, m in enumerate(args.molecules):
        for ti, T in enumerate(args.temperatures):
            for r in range(args.trajectories):
                # trajectory 0 keeps the id and seed it had before --trajectories existed
                base = mi * len(args.temperatures) + ti
                seed = [args.seed, base, ti] if r == 0 else [args.seed, base, ti, r]
                tid = f"{m}-T{T:g}" if r == 0 else f"{m}-T{T:g}-{r}"
                jobs.append({"molecule": m, "T": T, "seed": seed, "traj_id": tid,
                             "md_level": md_level, "torsion": None, "timestep_fs": 0.5,
                             "friction_per_fs": 0.02, "equilibrate": args.equilibrate,
                             "frames": args.frames, "stride": args.stride})
    labeled = mp._make(jobs, label_level, parts, args.workers, t0)
    frames, failed = [], 0
    for j in jobs:
        got, why = labeled[j["traj_id"]]
        failed += len(why)
        for f in got:
            f.info["molecule"] = j["molecule"]
        frames += got
    rat_path = parts / "rattled.extxyz"
    if rat_path.exists():
        rattled = mp._read(rat_path)
    else:
        from concurrent.futures import ProcessPoolExecutor

        todo = [a for i, m in enumerate(args.molecules)
                for a in _rattled(m, args.rattle_A, args.rattled, args.seed + i)]
        with ProcessPoolExecutor(args.workers) as pool:
            res = list(pool.map(mp._label, todo, [label_level] * len(todo)))
        rattled = [f for f, _ in res if f is not None]
        failed += sum(f is None for f, _ in res)
        for f in rattled:
            f.info["molecule"] = f.info["traj_id"].split("-rattle")[0]
        write_extxyz(rat_path, rattled)
    frames += rattled
    write_extxyz(out / "pretrain.extxyz", frames)
    counts = {m: sum(f.info["molecule"] == m for f in frames) for m in args.molecules}
    return frames, {"frames": len(frames), "failed_labels": failed, "per_molecule": counts,
                    "md_trajectories": len(jobs), "rattled_per_molecule": args.rattled
                    * len(args.rattle_A)}


def pretrain(frames: list[Any], size: str, args: argparse.Namespace, out: Path) -> dict:
    """One model of ``size`` from scratch on ``frames``: whole trajectories validate."""
    import numpy as np

    from alprobe.backbone import load_model, model_info, predict, train_backbone
    from alprobe.config import BackboneConfig
    from alprobe.metrics import regression_errors
    from alprobe.frames import set_prediction

    channels, max_L, epochs = SIZES[size]
    epochs = args.epochs or epochs
    groups = sorted({f.info["traj_id"] for f in frames})
    rng = np.random.default_rng(args.seed)
    valid_groups = set(rng.choice(groups, max(1, len(groups) // 10), replace=False))
    train = [f for f in frames if f.info["traj_id"] not in valid_groups]
    valid = [f for f in frames if f.info["traj_id"] in valid_groups]
    settings = BackboneConfig(channels=channels, max_L=max_L, epochs=epochs,
                              batch_size=args.batch_size, lr=args.lr, r_max_A=5.0,
                              interactions=2, correlation=3 if max_L else 2, ema=True)
    path = out / f"foundation_{size}.model"
    t1 = time.time()
    info = train_backbone(train, valid, path, settings, seed=args.seed)
    model = load_model(path)
    preds = predict(model, valid)
    for f, p in zip(valid, preds):
        set_prediction(f, p.energy, p.forces)
    err = regression_errors(valid)
    return {"size": size, "hidden_irreps": f"{channels}x0e" + (f"+{channels}x1o" if max_L else ""),
            "channels": channels, "max_L": max_L, "interactions": 2,
            "correlation": settings.correlation, "r_max_A": 5.0, "epochs": epochs,
            "batch_size": args.batch_size, "lr": args.lr, "ema": True, "seed": args.seed,
            "n_train": len(train), "n_valid": len(valid),
            "valid_groups": sorted(valid_groups), "wall_s": time.time() - t1,
            "train_cpu_s": info.get("cpu_s"),
            "valid_force_mae_meV_A": 1000 * err["force_mae_eV_A"],
            "valid_energy_mae_meV_atom": 1000 * err["energy_mae_eV_per_atom"],
            "elements": model_info(model)["atomic_numbers"],
            "n_features": model_info(model)["n_features"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="campaigns/data/foundation")
    ap.add_argument("--molecules", nargs="+", default=MOLECULES)
    ap.add_argument("--temperatures", type=float, nargs="+", default=[300, 700, 1100])
    ap.add_argument("--trajectories", type=int, default=2, help="per molecule and temperature")
    ap.add_argument("--frames", type=int, default=8, help="per trajectory")
    ap.add_argument("--stride", type=int, default=10, help="MD steps between kept frames")
    ap.add_argument("--equilibrate", type=int, default=30)
    ap.add_argument("--rattled", type=int, default=4, help="per molecule and amplitude")
    ap.add_argument("--rattle-A", type=float, nargs="+", default=[0.05, 0.12])
    ap.add_argument("--level", default="hf/6-31g", help="XC/BASIS or hf/BASIS of the labels")
    ap.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    ap.add_argument("--epochs", type=int, help="override every size's epochs")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--reuse-data", action="store_true",
                    help="train on OUT/pretrain.extxyz as it is (no data step)")
    ap.add_argument("--workers", type=int, default=max(1, os.cpu_count() or 2))
    args = ap.parse_args()
    bad = sorted(set(args.molecules) & EXCLUDED)
    if bad:
        ap.error(f"{', '.join(bad)}: the pools' molecules must stay out of pretraining")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from importlib.metadata import version

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    versions = {p: version(p) for p in ("pyscf", "ase", "mace-torch", "torch", "alprobe")}
    command = "python scripts/make_foundation.py " + " ".join(sys.argv[1:])
    if args.reuse_data:
        from ase.io import read

        if not (out / "pretrain.extxyz").exists():
            ap.error(f"--reuse-data: {out / 'pretrain.extxyz'} does not exist")
        frames = list(read(out / "pretrain.extxyz", ":", format="extxyz"))
        print(f"data: {len(frames)} frames read from {out / 'pretrain.extxyz'}", flush=True)
    else:
        frames = _data_step(args, out, t0, versions, command)
    _pretrain_all(frames, args, out, versions, command)


def _data_step(args: argparse.Namespace, out: Path, t0: float, versions: dict, command: str
               ) -> list[Any]:
    """Make (or resume) the data set and write its provenance; the frames."""
    clock = out / "parts" / "data_wall_s.json"
    before = json.loads(clock.read_text()) if clock.exists() else 0.0
    frames, counts = make_data(args, out, t0)
    wall = before + time.time() - t0
    clock.write_text(json.dumps(wall))
    (out / "pretrain.json").write_text(json.dumps({
        "molecules": args.molecules, **counts, "temperatures_K": args.temperatures,
        "trajectories_per_temperature": args.trajectories, "frames_per_trajectory": args.frames, "stride_steps": args.stride,
        "equilibrate_steps": args.equilibrate, "rattle_A": args.rattle_A,
        "md": {"level": "hf/sto-3g", "timestep_fs": 0.5, "friction_per_fs": 0.02,
               "thermostat": "ASE Langevin"},
        "labels": {"level": args.level, "code": "PySCF via alprobe.dft.label_atoms",
                   "units": "eV, eV/A"},
        "keys": {"energy": "ref_energy", "forces": "ref_forces", "group": "traj_id"},
        "seed": args.seed, "wall_s": wall,
        "wall_note": "seconds of work over every run that made the parts (a resumed run adds "
                     "its own)", "versions": versions, "command": command}, indent=1))
    print(f"data: {counts['frames']} frames ({counts['failed_labels']} failed labels) "
          f"[{time.time() - t0:.0f} s]", flush=True)
    return frames


def _pretrain_all(frames: list[Any], args: argparse.Namespace, out: Path, versions: dict,
                  command: str) -> None:
    """Pretrain every size in ``args.sizes`` not already written; print a table."""
    print(f"{'size':<8}{'irreps':<16}{'epochs':>7}{'wall s':>9}{'valid F MAE meV/A':>19}")
    for size in args.sizes:
        prov_path = out / f"foundation_{size}.json"
        if (out / f"foundation_{size}.model").exists() and prov_path.exists():
            prov = json.loads(prov_path.read_text())
        else:
            prov = pretrain(frames, size, args, out)
            prov.update(level=args.level, data="pretrain.extxyz", versions=versions,
                        command=command)
            prov_path.write_text(json.dumps(prov, indent=1))
        print(f"{size:<8}{prov['hidden_irreps']:<16}{prov['epochs']:>7}{prov['wall_s']:>9.0f}"
              f"{prov['valid_force_mae_meV_A']:>19.1f}", flush=True)


if __name__ == "__main__":
    main()
