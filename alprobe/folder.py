"""The campaign folder's provenance: the resolved campaign file, package versions and the
workers' compute environment, and the refusal to continue a folder with other settings."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

from .config import CampaignConfig, ConfigError, parse_campaign
from .files import atomic_write

__all__ = ["prepare_folder", "record_environment", "versions"]


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
    """Create or check a campaign folder: refuse changed science settings (unless
    ``allow_changes``); write the resolved campaign.yaml and versions.json."""
    stored = directory / "campaign.yaml"
    science = cfg.science_dict()
    if stored.is_file():
        old = yaml.safe_load(stored.read_text())
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
