"""Shared fixtures: small real data (PySCF HF/STO-3G water) and a tiny real MACE model."""

from __future__ import annotations

import os
import numpy as np
import pytest

TINY_CAMPAIGN = {
    "name": "tiny",
    "seed": 3,
    "generations": 2,
    "system": {"seeds": ["water"]},
    "dft": {"method": "hf", "basis": "sto-3g", "density_fit": False},
    "initial": {"n_rattle": 12, "n_md": 8, "md_steps": 60, "test_size": 6,
                "calibration_fraction": 0.3, "stress_size": 4},
    "backbone": {"channels": 8, "epochs": 6, "finetune_epochs": 3},
    "probe": {"members": 1, "epochs": 30, "patience": 10},
    "explore": {"walkers": 2, "steps": 60, "stride": 5, "temperatures_K": [300, 900]},
    "select": {"budget": 5, "min_spacing": 2},
    "stability": {"walkers": 2, "steps": 40, "check_every": 10},
    "cluster": {"n_workers": 2, "threads_per_worker": 1},
}


@pytest.fixture(scope="session")
def tiny_finished(tmp_path_factory):
    """One uninterrupted TINY_CAMPAIGN run (2 generations), shared by the campaign and fault
    tests (read-only for them): (directory, CampaignResult, log lines)."""
    from alprobe import run
    from alprobe.config import parse_campaign

    directory = tmp_path_factory.mktemp("campaign") / "tiny"
    lines: list[str] = []
    with pytest.MonkeyPatch.context() as mp:
        for key in [k for k in os.environ if k.startswith("ALPROBE_FAULT_")]:
            mp.delenv(key)
        result = run(parse_campaign(TINY_CAMPAIGN), directory, log=lines.append)
    return directory, result, lines


@pytest.fixture(scope="session")
def water_frames():
    """16 rattled water molecules labeled with HF/STO-3G (eV, eV/A)."""
    from ase.build import molecule

    from alprobe.frames import set_reference
    from alprobe.dft import DFTLevel, label_atoms

    rng = np.random.default_rng(0)
    level = DFTLevel(method="hf", basis="sto-3g", density_fit=False)
    frames = []
    for i in range(16):
        a = molecule("H2O")
        a.positions += rng.normal(0, 0.02 + 0.005 * i, a.positions.shape)
        r = label_atoms(a, level)
        assert r.ok, r.reason
        frames.append(set_reference(a, r.energy, r.forces))
    return frames


@pytest.fixture(scope="session")
def tiny_model(water_frames, tmp_path_factory):
    """A tiny MACE model (float64) trained with mace-torch's trainer on the water frames."""
    from alprobe.backbone import train_backbone
    from alprobe.config import BackboneConfig

    out = tmp_path_factory.mktemp("model") / "tiny.model"
    settings = BackboneConfig(channels=8, epochs=4, dtype="float64")
    info = train_backbone(water_frames[:12], water_frames[12:14], out, settings, seed=0)
    return info["path"]


@pytest.fixture(scope="session")
def water_pool(tmp_path_factory):
    """48 water frames: 2 temperatures x 3 trajectories x 8 frames, HF/STO-3G."""
    from alprobe.dft import DFTLevel
    from alprobe.pool import label_frame, sample_trajectory

    level = DFTLevel(method="hf", basis="sto-3g", density_fit=False)
    frames = []
    for ti, T in enumerate((300.0, 900.0)):
        for k in range(3):
            traj = sample_trajectory("water", T, level, frames=8, stride=3, equilibrate=4,
                                     timestep_fs=0.5, friction_per_fs=0.02,
                                     traj_id=f"w-T{T:g}-{k}", seed=[ti, k])
            for f in traj:
                labeled, why = label_frame(f, level)
                assert labeled is not None, why
                frames.append(labeled)
    path = tmp_path_factory.mktemp("pool") / "water_pool.extxyz"
    from ase.io import write

    write(path, frames, format="extxyz")
    return path
