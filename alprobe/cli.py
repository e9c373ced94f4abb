"""Command line: alprobe run / resume / compare / status / export / validate / evaluate /
probe fit / probe score. Each command calls a function of the Python API."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def _load(path: str) -> object:
    """The campaign at ``path``; ConfigError listing every problem of it at once."""
    from .campaign import campaign_problems
    from .config import ConfigError, load_campaign, read_yaml

    try:
        return load_campaign(path)
    except ConfigError as exc:
        data = read_yaml(path) if "not valid YAML" not in str(exc) else None
        if data is None:
            raise
        raise ConfigError(campaign_problems(data, Path(path).resolve().parent, path),
                          path) from None


def _finished(directory: Path, quiet: bool) -> None:
    """The status table (or, with --quiet, one line) of a finished campaign."""
    from .ledger import Ledger
    from .report import status_table

    if not quiet:
        print(status_table(directory))
        return
    rows = Ledger(directory, readonly=True).metrics()
    if rows:
        print(f"{directory}: {len(rows) - 1} generation(s), {rows[-1]['labels']} labels, test "
              f"force MAE {1000 * rows[0]['force_mae_eV_A']:.1f} -> "
              f"{1000 * rows[-1]['force_mae_eV_A']:.1f} meV/A (log: {directory / 'alprobe.log'})")


def _run(args: argparse.Namespace) -> int:
    from .campaign import run_campaign
    from .config import ConfigError
    from .console import Console
    from .folder import check_folder
    from .validate import check_campaign

    cfg = _load(args.campaign)
    problems = check_campaign(cfg)  # check first, then say where it runs
    if problems:
        raise ConfigError(problems, args.campaign)
    directory = Path(args.dir) if args.dir else Path("runs") / cfg.name
    check_folder(directory)
    console = Console(quiet=args.quiet)
    console(f"alprobe: campaign {cfg.name!r} in {directory} (log: {directory / 'alprobe.log'})")
    run_campaign(cfg, directory, allow_changes=args.allow_changes,
                 accept_failures=args.accept_failures, log=console)
    _finished(directory, args.quiet)
    return 0


def _resume(args: argparse.Namespace) -> int:
    from .campaign import resume_campaign
    from .console import Console

    resume_campaign(args.dir, accept_failures=args.accept_failures,
                    log=Console(quiet=args.quiet))
    _finished(Path(args.dir), args.quiet)
    return 0


def _compare(args: argparse.Namespace) -> int:
    from .comparison import check_comparison_folder, load_comparison, run_comparison
    from .config import ConfigError
    from .console import Console
    from .validate import check_campaign

    cmp = load_comparison(args.comparison)
    problems = check_campaign(cmp.base)  # check first, then create anything
    if problems:
        raise ConfigError(problems, args.comparison)
    directory = Path(args.dir) if args.dir else Path("runs") / cmp.name
    check_comparison_folder(directory)
    console = Console(directory / "alprobe.log", quiet=args.quiet)
    console(f"alprobe: comparison {cmp.name!r} ({', '.join(cmp.arms)}) in {directory}")
    res = run_comparison(cmp, directory, allow_changes=args.allow_changes,
                         accept_failures=args.accept_failures, log=console)
    if args.quiet:
        print(f"{directory}: summary in {res.outputs['summary_md']}")
    for name, path in res.outputs.items():
        console(f"  {name}: {path}")
    console.close()
    return 0


def _status_json(d: Path) -> dict:
    """Metrics rows (one per finished generation) and stage names of a campaign folder; of
    every run of a comparison folder."""
    from .errors import AlprobeError
    from .ledger import Ledger, LedgerError

    def one(path: Path) -> dict:
        try:
            L = Ledger(path, readonly=True)
        except LedgerError as exc:
            raise AlprobeError(str(exc)) from None
        return {"folder": str(path), "generations": L.metrics(), "stages_done": sorted(L.stages())}

    if (d / "comparison.yaml").is_file():
        arms = sorted(p for p in (d / "arms").iterdir() if p.is_dir()) \
            if (d / "arms").is_dir() else []
        return {"comparison": str(d), "runs": {p.name: one(p) for p in arms
                                                if (p / "ledger.db").is_file()},
                "summary": str(d / "summary.md") if (d / "summary.md").is_file() else None}
    if not (d / "ledger.db").is_file():
        raise AlprobeError(f"{d} is not a campaign or comparison folder (no ledger.db)")
    return one(d)


def _status(args: argparse.Namespace) -> int:
    from .report import status_table

    d = Path(args.dir)
    if args.json:
        import json
        import math

        def clean(x: object) -> object:  # NaN is not JSON: null
            if isinstance(x, float) and not math.isfinite(x):
                return None
            if isinstance(x, dict):
                return {k: clean(v) for k, v in x.items()}
            if isinstance(x, list):
                return [clean(v) for v in x]
            return x

        print(json.dumps(clean(_status_json(d)), indent=1))
        return 0
    if (d / "comparison.yaml").is_file():  # a comparison folder: every arm, then the summary
        for arm in sorted(p.name for p in (d / "arms").iterdir() if p.is_dir()) \
                if (d / "arms").is_dir() else []:
            print(f"== arm {arm}")
            print(status_table(d / "arms" / arm))
        if (d / "summary.md").is_file():
            print((d / "summary.md").read_text())
        return 0
    print(status_table(d))
    return 0


def _validate(args: argparse.Namespace) -> int:
    from .campaign import campaign_problems, check_campaign
    from .config import ConfigError, read_yaml

    path = Path(args.campaign)
    try:
        data = read_yaml(path)
        comparison_keys = {"arms", "replicas", "campaign", "shared", "noise_floor_seeds",
                           "target_force_mae_meV_A"}
        if isinstance(data, dict) and (comparison_keys & set(data)
                                       or ("pool" in data and "name" not in data)):
            from .comparison import load_comparison

            problems = check_campaign(load_comparison(path).base)
        else:
            problems = campaign_problems(data, path.resolve().parent, str(path))
    except ConfigError as exc:
        problems = exc.problems
    if problems:
        print(f"{args.campaign}: {len(problems)} problem(s)")
        for p in problems:
            print(f"  {p}")
        return 1
    print(f"{args.campaign}: ok")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    import numpy as np

    from .audit import compute_signals, write_audit

    frames = _read(args.frames, args)
    train = _read(args.train_frames, args) if args.train_frames else []
    r = compute_signals(frames, backbone=args.backbone, probe=args.probe, ablation=args.ablation,
                        committee=args.committee or [], train_frames=train, error=args.error,
                        n_importance=0, device=args.device)
    tau = args.tau if args.tau is not None else (
        r["tau_probe"] if r["tau_probe"] is not None else float(np.median(r["errors"])))
    res = write_audit(args.out, args.prefix, r["signals"], r["errors"], tau, r["probabilities"],
                      rng=np.random.default_rng(args.seed), n_boot=args.n_boot)
    print(res["text"])
    print(f"wrote {args.out}/{args.prefix}_audit.txt, .json and {len(res['plots'])} plots")
    return 0


def _read(path: str, args: argparse.Namespace) -> list:
    """Labeled frames of an extxyz file; one-line AlprobeError for a missing, unreadable or
    empty file and for a frame without a finite label."""
    import numpy as np

    from .errors import AlprobeError
    from .frames import REF_ENERGY, REF_FORCES, read_labeled

    try:
        frames = read_labeled(path, args.energy_key, args.forces_key)
    except Exception as exc:  # noqa: BLE001 - ase's readers raise many kinds
        msg = " ".join(str(exc).split())[:300]
        raise AlprobeError(msg if path in msg else f"{path}: {msg}") from None
    if not frames:
        raise AlprobeError(f"{path} holds no frames")
    for i, a in enumerate(frames):
        if not (np.isfinite(a.info[REF_ENERGY]) and np.isfinite(a.arrays[REF_FORCES]).all()):
            raise AlprobeError(f"{path}: frame {i} has a non-finite reference energy or force "
                               "(NaN or inf); remove it or fix its label")
    return frames


def _probe_fit(args: argparse.Namespace) -> int:
    from .config import ProbeConfig
    from .trust import fit_probe

    frames = _read(args.frames, args)
    train = _read(args.train_frames, args) if args.train_frames else []
    cfg = ProbeConfig(error=args.error, threshold=args.threshold,
                      threshold_value=args.threshold_value, members=args.members,
                      target=args.target, use_energy=not args.no_energy, features=args.features)
    res = fit_probe(frames, args.backbone, args.out, cfg, train_frames=train, seed=args.seed,
                    device=args.device)
    unit = {"energy": "eV", "energy_per_atom": "eV/atom"}.get(args.error, "eV/A")
    print(f"probe fitted on {res['n_frames']} frames: threshold {res['threshold']:.4g} {unit} "
          f"({args.error}, {args.threshold}); {res['n_reliable']} reliable / "
          f"{res['n_unreliable']} unreliable; width {res['meta']['width']}, "
          f"{res['meta']['n_parameters']} parameters per head x {args.members}")
    print(f"wrote {res['path']}")
    return 0


def _probe_score(args: argparse.Namespace) -> int:
    import numpy as np
    from ase.io import read

    from .errors import AlprobeError
    from .trust import score_frames

    try:
        frames = read(args.frames, index=":")
    except Exception as exc:  # noqa: BLE001 - ase raises many kinds
        raise AlprobeError(f"cannot read {args.frames}: {exc}") from None
    csv_path = args.csv or str(Path(args.out).with_suffix(".csv"))
    scored = score_frames(frames, args.backbone, args.probe, out=args.out, csv_path=csv_path,
                          device=args.device)
    t = np.array([a.info["trust"] for a in scored])
    print(f"scored {len(t)} frames: P(reliable) min {t.min():.3f}, median {np.median(t):.3f}, "
          f"max {t.max():.3f}; wrote {args.out} and {csv_path}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from .export import export_campaign

    info = export_campaign(args.dir, args.out, energy_key=args.energy_key,
                           forces_key=args.forces_key, force=args.force)
    c = info["counts"]
    print(f"exported {info['campaign']!r} to {args.out}: {c['train']} train, {c['calib']} calib, "
          f"{c['test']} test frames ({info['level_of_theory']}); "
          + (", ".join(info["models"]) or "no model files (none in the campaign folder)")
          + "; README.md")
    return 0


def _report(args: argparse.Namespace) -> int:
    from .report import write_report

    print(f"wrote {write_report(args.dir)}")
    return 0


def _folder_flags(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--dir", help=f"{what} (default: runs/<name>)")
    _quiet_flag(p)
    p.add_argument("--allow-changes", action="store_true",
                   help="continue a folder although its science settings differ")
    p.add_argument("--accept-failures", action="store_true",
                   help="train on the good labels of a generation paused for too many failures")


def _quiet_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", "-q", action="store_true",
                   help="no progress on the terminal (the folder's alprobe.log has it all); "
                   "one line at the end")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="alprobe", description="Active learning for MACE potentials "
                                "with PROBE reliability scores, PySCF labels and Dask.")
    sub = p.add_subparsers(dest="command", required=True)
    _campaign_commands(sub)
    _evaluate_command(sub)
    _probe_commands(sub)
    v = sub.add_parser("validate", help="check a campaign or comparison file; print every "
                       "problem")
    v.add_argument("campaign")
    v.set_defaults(fn=_validate)
    return p


def _campaign_commands(sub: Any) -> None:
    """run, resume, compare, status, export, report."""
    r = sub.add_parser("run", help="run (or continue) a campaign")
    r.add_argument("campaign", help="campaign YAML file")
    _folder_flags(r, "campaign folder")
    r.set_defaults(fn=_run)
    s = sub.add_parser("resume", help="continue the campaign stored in a folder")
    s.add_argument("dir")
    s.add_argument("--accept-failures", action="store_true",
                   help="train on the good labels of a generation paused for too many failures")
    _quiet_flag(s)
    s.set_defaults(fn=_resume)
    c = sub.add_parser("compare", help="run (or continue) a comparison of acquisition "
                       "strategies (arms) on one cluster")
    c.add_argument("comparison", help="comparison YAML file (shared campaign + arms)")
    _folder_flags(c, "output folder")
    c.set_defaults(fn=_compare)
    st = sub.add_parser("status", help="per-generation table of a campaign (or comparison) "
                        "folder")
    st.add_argument("dir")
    st.add_argument("--json", action="store_true", help="machine-readable: every metrics row")
    st.set_defaults(fn=_status)
    x = sub.add_parser("export", help="labeled frames by split (extxyz, mace-torch's keys), the "
                       "final backbone and probe, and a README")
    x.add_argument("dir", help="campaign folder (or one run of a comparison: DIR/arms/<run>)")
    x.add_argument("-o", "--out", required=True, help="output folder")
    x.add_argument("--energy-key", default="REF_energy", help="info key of the energy (eV)")
    x.add_argument("--forces-key", default="REF_forces", help="arrays key of the forces (eV/A)")
    x.add_argument("--force", action="store_true",
                   help="write into a non-empty output folder, replacing files of the same names")
    x.set_defaults(fn=_export)
    rp = sub.add_parser("report", help="write DIR/report.html: one self-contained page of a "
                        "campaign (or comparison) folder")
    rp.add_argument("dir", help="campaign folder or comparison folder")
    rp.set_defaults(fn=_report)


def _evaluate_command(sub: Any) -> None:
    e = sub.add_parser("evaluate", help="reliability audit of trust signals on labeled frames")
    e.add_argument("frames", help="extxyz with reference energy (eV) and forces (eV/A)")
    e.add_argument("--backbone", required=True, help="MACE model file")
    e.add_argument("--probe", help="PROBE checkpoint (probe.pt)")
    e.add_argument("--ablation", help="mean-pool probe checkpoint (attention ablation)")
    e.add_argument("--committee", nargs="+", help="MACE model files of an ensemble")
    e.add_argument("--train-frames", help="extxyz the backbone trained on (kNN/energy baselines)")
    e.add_argument("--error", default="force_rmse",
                   choices=["energy", "energy_per_atom", "force_rmse", "force_max"])
    e.add_argument("--tau", type=float, help="unreliability threshold (default: the probe's)")
    e.add_argument("--out", default="audit", help="output folder")
    e.add_argument("--prefix", default="audit")
    e.add_argument("--energy-key", default="ref_energy")
    e.add_argument("--forces-key", default="ref_forces")
    e.add_argument("--n-boot", type=int, default=1000)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--device", default="cpu")
    e.set_defaults(fn=_evaluate)


def _probe_commands(sub: Any) -> None:
    """probe fit, probe score."""
    pr = sub.add_parser("probe", help="PROBE on its own for a MACE model: fit, score")
    psub = pr.add_subparsers(dest="probe_command", required=True)
    pf = psub.add_parser("fit", help="fit PROBE on labeled frames the backbone never saw")
    pf.add_argument("frames", help="extxyz with reference energy (eV) and forces (eV/A)")
    pf.add_argument("--backbone", required=True, help="MACE model file")
    pf.add_argument("-o", "--out", required=True, help="probe checkpoint to write (probe.pt)")
    pf.add_argument("--train-frames", help="the backbone's training set (extxyz): frames in it "
                    "are refused")
    pf.add_argument("--error", default="force_rmse",
                    choices=["energy", "energy_per_atom", "force_rmse", "force_max"])
    pf.add_argument("--threshold", default="quantile", choices=["quantile", "absolute"])
    pf.add_argument("--threshold-value", type=float, default=0.5,
                    help="quantile in (0, 1), or eV / eV/atom / eV/A if absolute")
    pf.add_argument("--members", type=int, default=5, help="heads averaged")
    pf.add_argument("--target", default="structure", choices=["structure", "atom"])
    pf.add_argument("--features", default="last", choices=["last", "all"])
    pf.add_argument("--no-energy", action="store_true",
                    help="leave the predicted energy out of the pooling vector")
    pf.add_argument("--seed", type=int, default=0)
    pf.set_defaults(fn=_probe_fit)
    ps = psub.add_parser("score", help="P(reliable) per frame and importance per atom")
    ps.add_argument("frames", help="extxyz (labels not needed)")
    ps.add_argument("--backbone", required=True)
    ps.add_argument("--probe", required=True)
    ps.add_argument("-o", "--out", required=True, help="scored extxyz (info trust, arrays "
                    "atom_importance, pred_energy/pred_forces)")
    ps.add_argument("--csv", help="CSV of the scores (default: OUT with .csv)")
    ps.set_defaults(fn=_probe_score)
    for q in (pf, ps):
        q.add_argument("--device", default="cpu")
    for q in (pf,):
        q.add_argument("--energy-key", default="ref_energy")
        q.add_argument("--forces-key", default="ref_forces")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .errors import AlprobeError

    try:
        return args.fn(args)
    except AlprobeError as exc:
        print(f"alprobe: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
