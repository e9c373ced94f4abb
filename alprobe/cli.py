"""Command line: alprobe run / resume / status / validate. Each command calls the Python API."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _run(args: argparse.Namespace) -> int:
    from .campaign import run_campaign
    from .config import load_campaign

    cfg = load_campaign(args.campaign)
    directory = Path(args.dir) if args.dir else Path("runs") / cfg.name
    print(f"alprobe: campaign {cfg.name!r} in {directory}")
    run_campaign(cfg, directory, allow_changes=args.allow_changes)
    from .report import status_table

    print(status_table(directory))
    return 0


def _resume(args: argparse.Namespace) -> int:
    from .campaign import resume_campaign
    from .report import status_table

    resume_campaign(args.dir, allow_changes=False)
    print(status_table(args.dir))
    return 0


def _status(args: argparse.Namespace) -> int:
    from .report import status_table

    print(status_table(args.dir))
    return 0


def _validate(args: argparse.Namespace) -> int:
    from .campaign import check_campaign
    from .config import ConfigError, load_campaign

    try:
        cfg = load_campaign(args.campaign)
    except ConfigError as exc:
        problems = exc.problems
    else:
        problems = check_campaign(cfg)
    if problems:
        print(f"{args.campaign}: {len(problems)} problem(s)")
        for p in problems:
            print(f"  {p}")
        return 1
    print(f"{args.campaign}: ok")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="alprobe", description="Active learning for MACE potentials "
                                "with PROBE reliability scores, PySCF labels and Dask.")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run (or continue) a campaign")
    r.add_argument("campaign", help="campaign YAML file")
    r.add_argument("--dir", help="campaign folder (default: runs/<name>)")
    r.add_argument("--allow-changes", action="store_true",
                   help="continue a folder although its science settings differ")
    r.set_defaults(fn=_run)
    s = sub.add_parser("resume", help="continue the campaign stored in a folder")
    s.add_argument("dir")
    s.set_defaults(fn=_resume)
    st = sub.add_parser("status", help="per-generation table of a campaign folder")
    st.add_argument("dir")
    st.set_defaults(fn=_status)
    v = sub.add_parser("validate", help="check a campaign file; print every problem")
    v.add_argument("campaign")
    v.set_defaults(fn=_validate)
    return p


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
