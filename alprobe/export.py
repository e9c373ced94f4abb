"""The data set and models of a campaign folder, in the form the next tool reads.

``export_campaign(DIR, OUT)`` writes, from the ledger's labeled frames (never a failed,
rejected or timed-out one):

- ``train.xyz``: what the backbones trained on (extxyz; reference energy in eV under
  ``REF_energy`` in ``info``, forces in eV/Å under ``REF_forces`` in ``arrays``: the keys
  ``mace_run_train`` reads by default; ``energy_key`` / ``forces_key`` rename them);
- ``calib.xyz``: the labeled frames held out of backbone training (PROBE learned from them);
- ``test.xyz``: the held-out test set (whole trajectories none of which was trained on);
- ``backbone.model`` (the last generation's MACE model) and ``probe.pt`` (the last probe);
- ``README.md`` (level of theory, counts, provenance, a ``mace_run_train`` command line) and
  ``export.json`` (the same, for scripts).

Each frame keeps its content hash ``fid``, ``generation``, ``origin`` and ``split`` in
``info``; the predictions stored in the ledger are left out (they are not reference data).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from .errors import AlprobeError
from .files import atomic_path, atomic_write
from .frames import REF_ENERGY, REF_FORCES, write_extxyz

__all__ = ["ExportError", "export_campaign"]

SPLITS = ("train", "calib", "test")
_KEEP_INFO = ("fid", "generation", "origin", "split", "group", "walker", "audit")


class ExportError(AlprobeError):
    """The folder cannot be exported (the message says why)."""


def _last(stages: dict[str, dict[str, Any]], stage: str) -> tuple[int, str] | None:
    """(generation, path) of the last record of ``stage`` with a file that exists."""
    best = None
    for name, info in stages.items():
        if name.endswith(f"/{stage}") and name.startswith("gen") and info.get("path"):
            g = int(name[3:6])
            if Path(info["path"]).is_file() and (best is None or g > best[0]):
                best = (g, info["path"])
    return best


def _level(campaign: dict[str, Any], source_dir: Path) -> str:
    """The level of theory of the labels, in words."""
    pool = campaign.get("pool")
    if pool:
        path = Path(pool["file"])
        path = path if path.is_absolute() else source_dir / path
        meta = path.with_suffix(".json")
        if meta.is_file():
            info = json.loads(meta.read_text())
            return (f"retrospective pool {path.name}: "
                    f"{info.get('labels', {}).get('level', 'level not recorded')}")
        return f"retrospective pool {path} (its level of theory is not recorded next to it)"
    dft = campaign.get("dft") or {}
    system = campaign.get("system") or {}
    words = f"{dft.get('method', '?')}/{dft.get('basis', '?')}"
    if dft.get("density_fit"):
        words += ", density fitting"
    if dft.get("grid_level") is not None and dft.get("method", "").lower() not in ("hf",):
        words += f", grid level {dft['grid_level']}"
    return words + (f" (PySCF; charge {system.get('charge', 0)}, spin 2S = "
                    f"{system.get('spin', 0)})")


def _plain_frame(a: Atoms, energy_key: str, forces_key: str) -> Atoms:
    b = Atoms(numbers=a.numbers, positions=a.positions, cell=a.cell, pbc=a.pbc)
    b.info[energy_key] = float(a.info[REF_ENERGY])
    b.arrays[forces_key] = np.asarray(a.arrays[REF_FORCES], dtype=float)
    for k in _KEEP_INFO:
        if k in a.info:
            b.info[k] = a.info[k]
    return b


def export_campaign(directory: str | Path, out: str | Path, energy_key: str = "REF_energy",
                    forces_key: str = "REF_forces", force: bool = False) -> dict[str, Any]:
    """Export the campaign in ``directory`` to the folder ``out`` (created). A non-empty
    ``out`` is refused unless ``force`` (then files of the same names are replaced). Models
    are copied only from inside ``directory``. Returns what was written (also in
    ``out/export.json``)."""
    from .folder import read_stored_campaign, versions
    from .ledger import Ledger, LedgerError

    directory, out = Path(directory), Path(out)
    if (directory / "comparison.yaml").is_file():
        arms = sorted(p.name for p in (directory / "arms").iterdir()) \
            if (directory / "arms").is_dir() else []
        raise ExportError(f"{directory} is a comparison folder: export one of its runs, e.g. "
                          f"{directory / 'arms' / (arms[0] if arms else '<arm>')}")
    if not (directory / "ledger.db").is_file():
        raise ExportError(f"{directory} is not a campaign folder (no ledger.db)")
    if energy_key == forces_key:
        raise ExportError("energy and forces keys must differ")
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} is a file, not a folder")
    held = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if held and not force:
        raise ExportError(f"{out} is not empty ({', '.join(held[:5])}"
                          f"{', ...' if len(held) > 5 else ''}): choose a new folder, or pass "
                          "--force to replace files of the same names")
    if out.resolve() == directory.resolve() or out.resolve().is_relative_to(directory.resolve()):
        raise ExportError(f"{out} is inside the campaign folder {directory}: export elsewhere")
    try:
        L = Ledger(directory, readonly=True)
    except LedgerError as exc:
        raise ExportError(str(exc)) from None
    campaign = read_stored_campaign(directory) if (directory / "campaign.yaml").is_file() else {}
    source = Path(campaign.get("source_dir") or directory) \
        if isinstance(campaign.get("source_dir"), (str, type(None))) else directory
    stages = L.stages()
    out.mkdir(parents=True, exist_ok=True)
    counts, files = {}, {}
    for split in SPLITS:
        frames = [_plain_frame(a, energy_key, forces_key)
                  for a in L.frames(status="labeled", split=split)
                  if REF_ENERGY in a.info and REF_FORCES in a.arrays]
        counts[split] = len(frames)
        path = out / f"{split}.xyz"
        if frames:
            write_extxyz(path, frames)
            files[split] = path.name
        elif path.exists():
            path.unlink()  # an older export's file would misstate the counts
    if not counts["train"]:
        raise ExportError(f"{directory} has no labeled training frames yet")
    models = {}
    for stage, name in (("train", "backbone.model"), ("probe", "probe.pt")):
        last = _last(stages, stage)
        if last is None:
            continue
        with atomic_path(out / name) as tmp:
            shutil.copyfile(last[1], tmp)
        models[name] = {"generation": last[0],
                        "source": Path(last[1]).resolve().relative_to(
                            directory.resolve()).as_posix()}
    status = {s: L.count(status=s) for s in ("labeled", "failed", "rejected", "timeout")}
    info = {
        "campaign": campaign.get("name", directory.name), "folder": str(directory.resolve()),
        "rule": campaign.get("select", {}).get("rule"), "generations_done": len(L.metrics()),
        "level_of_theory": _level(campaign, source), "units": {"energy": "eV", "forces": "eV/A"},
        "keys": {"energy": energy_key, "forces": forces_key}, "counts": counts, "files": files,
        "models": models, "labels_by_status": status, "versions": versions(),
    }
    atomic_write(out / "export.json", json.dumps(info, indent=1))
    atomic_write(out / "README.md", _readme(info))
    return info


def _readme(info: dict[str, Any]) -> str:
    c, k = info["counts"], info["keys"]
    lines = [
        f"# Data set exported from alprobe campaign {info['campaign']!r}", "",
        f"- Labels: {info['level_of_theory']}; energies in eV (`info['{k['energy']}']`), "
        f"forces in eV/Å (`arrays['{k['forces']}']`), extxyz.",
        f"- Frames: {c['train']} in `train.xyz` (the backbones' training set), {c['calib']} in "
        f"`calib.xyz` (held out of backbone training; PROBE learned from them), {c['test']} in "
        f"`test.xyz` (held-out test set: whole trajectories, none trained on).",
        "- Left out: labels that failed, were rejected or timed out ("
        + ", ".join(f"{n} {s}" for s, n in info["labels_by_status"].items() if s != "labeled")
        + "); they are never training data.",
        f"- Campaign folder: `{info['folder']}`, selection rule {info['rule']}, "
        f"{info['generations_done']} generation(s) finished.",
    ]
    for name, m in info["models"].items():
        lines.append(f"- `{name}`: generation {m['generation']} (from `{m['source']}` in the "
                     "campaign folder).")
    lines += ["- Versions: " + ", ".join(f"{p} {v}" for p, v in info["versions"].items()), "",
              "Train a MACE model on it (mace-torch reads these keys by default):", "", "```",
              "mace_run_train --name mymodel --train_file train.xyz"
              + (" --test_file test.xyz" if c["test"] else "")
              + " --valid_fraction 0.1 --E0s average --model MACE --hidden_irreps '32x0e + 32x1o'"
              + " --r_max 5.0 --max_num_epochs 100 --device cpu"
              + ("" if k == {"energy": "REF_energy", "forces": "REF_forces"} else
                 f" --energy_key {k['energy']} --forces_key {k['forces']}"),
              "```", ""]
    return "\n".join(lines)
