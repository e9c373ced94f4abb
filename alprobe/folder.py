"""The campaign folder's provenance: the resolved campaign file, package versions and the
workers' compute environment, and the refusal to continue a folder with other settings."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from .config import CampaignConfig, ConfigError, parse_campaign
from .errors import AlprobeError
from .files import atomic_write

__all__ = ["FolderError", "check_folder", "prepare_folder", "read_stored_campaign",
           "record_environment", "versions"]

#: What a campaign leaves in its folder once it has done work (besides ledger.db).
PROGRESS = ("models", "spool", "audits", "metrics.json", "metrics.csv", "alprobe.log",
            "state.json", "state.json.migrated", "ledger.db-wal", "report.html")


class FolderError(AlprobeError):
    """A folder cannot be used as asked (the message says what was found and what to do)."""


def _what(path: Path) -> str:
    """``path``'s name, with a count for a folder ("spool/ (32 files)")."""
    if path.is_dir():
        n = sum(1 for f in path.rglob("*") if f.is_file())
        return f"{path.name}/ ({n} file{'s' * (n != 1)})"
    return path.name


def check_folder(directory: Path) -> None:
    """Refuse, before any work, a folder a campaign must not start or continue in.

    Accepted: a folder that does not exist or is empty (a new campaign), one with a readable
    ledger.db (a campaign to continue), or one that alprobe prepared but never started (only
    its campaign.yaml and versions.json). Refused (FolderError, one line): a folder that is
    not writable, a damaged ledger, earlier work (models, spool, log, metrics) without a
    ledger (a silent start-over would overwrite it), and any other non-empty folder.
    """
    from .ledger import Ledger

    directory = Path(directory)
    if not directory.exists():
        return
    if not directory.is_dir():
        raise FolderError(f"{directory} is a file, not a folder")
    ledger = directory / "ledger.db"
    if not os.access(directory, os.W_OK | os.X_OK) or (
            ledger.is_file() and not os.access(ledger, os.W_OK)):
        raise FolderError(f"{directory} is read-only (permission denied): alprobe must write "
                          "its ledger and models there; make it writable or copy it elsewhere")
    if ledger.is_file() and ledger.stat().st_size > 0:
        Ledger(directory, readonly=True)  # a damaged ledger: LedgerError now, before a cluster
        return
    # alprobe's own half-written files of an interrupted atomic write do not count
    entries = sorted(p for p in directory.iterdir()
                     if not (p.name.startswith(".") and p.name.endswith(".tmp")))
    progress = [_what(p) for p in entries if p.name in PROGRESS]
    if progress:
        raise FolderError(
            f"{directory} holds earlier work ({', '.join(progress)}) but no ledger.db: refusing "
            "to start over, which would overwrite it; restore ledger.db to continue, or move "
            "these away (or choose a new folder) to start afresh")
    names = {p.name for p in entries}
    others = [_what(p) for p in entries if p.name not in ("campaign.yaml", "versions.json")]
    if others or names == {"campaign.yaml"}:
        raise FolderError(
            f"{directory} is not empty and is not an alprobe campaign folder (it holds "
            f"{', '.join(others or ['campaign.yaml'])}); choose a new or empty folder "
            "(--dir) for the campaign")


def read_stored_campaign(directory: Path) -> dict[str, Any]:
    """The resolved campaign a folder was started with (its campaign.yaml, a mapping);
    FolderError naming the file if it is missing or not a campaign mapping."""
    directory = Path(directory)
    stored = directory / "campaign.yaml"
    if not directory.is_dir():
        raise FolderError(f"{directory}: no such folder")
    if not stored.is_file():
        ledger = directory / "ledger.db"
        if ledger.is_file() and ledger.stat().st_size > 0:
            from .ledger import Ledger, LedgerError

            try:
                n = Ledger(directory, readonly=True).count(status="labeled")
                held = f" although its ledger holds {n} labeled frame(s)"
            except LedgerError:
                held = " although it has a ledger.db"
            raise FolderError(
                f"{stored} is missing{held}: restore it, or continue with `alprobe run "
                f"CAMPAIGN_FILE --dir {directory}` using the file the campaign was started with")
        raise FolderError(f"{directory} is not a campaign folder (no campaign.yaml)")
    try:
        data = yaml.safe_load(stored.read_text())
    except (yaml.YAMLError, UnicodeDecodeError, OSError) as exc:
        raise FolderError(f"{stored} cannot be read: {' '.join(str(exc).split())[:200]}") from None
    if not isinstance(data, dict):
        raise FolderError(f"{stored} is not a campaign (a YAML mapping of settings), it holds "
                          f"a {type(data).__name__}")
    return data


def versions() -> dict[str, str]:
    """Versions of Python and of the packages that change results."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0]}
    for pkg in ("alprobe", "torch", "mace-torch", "e3nn", "pyscf", "ase", "dask", "distributed",
                "numpy", "scipy", "scikit-learn", "threadpoolctl"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _diff(a: Any, b: Any, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _diff(a.get(k), b.get(k), f"{path}.{k}" if path else k)
        return out
    return [] if a == b else [f"{path}: stored {a!r}, now {b!r}"]


def prepare_folder(cfg: CampaignConfig, directory: Path, allow_changes: bool) -> None:
    """Create or check a campaign folder (see check_folder): refuse changed science settings
    (unless ``allow_changes``); write the resolved campaign.yaml and versions.json."""
    check_folder(directory)
    stored = directory / "campaign.yaml"
    science = cfg.science_dict()
    if stored.is_file():
        old = read_stored_campaign(directory)
        old_science = {k: v for k, v in old.items() if k not in ("cluster", "source_dir")}
        try:  # settings added since the folder was started compare at their defaults
            old_science = parse_campaign({**old_science, "cluster": {}}).science_dict()
        except ConfigError:
            pass
        diffs = _diff(old_science, science)
        if diffs and not allow_changes:
            raise ConfigError(
                [f"{d}" for d in diffs] + ["(pass allow_changes=True / --allow-changes to "
                                           "continue with the new settings)"],
                f"{directory}: campaign file differs from the one this folder was started with")
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write(stored, yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    found = versions()
    old = directory / "versions.json"
    if old.is_file():  # a resume: the versions now, the workers' environment from the start
        prev = json.loads(old.read_text())
        if prev.get("worker") and {k: v for k, v in prev.items() if k != "worker"} == found:
            found["worker"] = prev["worker"]
    atomic_write(directory / "versions.json", json.dumps(found, indent=1))


def record_environment(directory: Path, executor: Any) -> None:
    """Add the workers' compute environment (CPU, threads, BLAS) to versions.json, once."""
    from .executor import Job
    from .tasks import environment_task

    path = directory / "versions.json"
    found = json.loads(path.read_text()) if path.is_file() else {}
    if "worker" in found:
        return
    got: list[Any] = []
    executor.run([Job(environment_task, (), kind="evaluate", key="environment",
                      account="evaluate")], "environment", lambda _t, r: got.append(r) or False)
    found["worker"] = got[0]
    atomic_write(path, json.dumps(found, indent=1))
