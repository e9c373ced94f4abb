"""Walkers store the model's own predictions, not the forces FixCom adjusts for the MD.

ASE's FixCom subtracts m_i * (sum_j m_j F_j) / sum_j m_j**2 from every atom: not zero for a
molecule with mixed masses even when the total force is zero, so ``atoms.get_forces()`` of a
constrained walker is not what the model predicted.
"""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule
from ase.calculators.emt import EMT
from ase.cluster import Icosahedron
from ase.constraints import FixCom

from alprobe.explore import WalkerSettings, run_walker
from alprobe.frames import PRED_ENERGY, PRED_FORCES


def _fixcom_adjusted(a: Atoms, forces: np.ndarray) -> np.ndarray:
    b = a.copy()
    f = np.array(forces, dtype=float)
    FixCom().adjust_forces(b, f)
    return f


def test_mixed_mass_cluster_stores_raw_calculator_forces():
    """A CuAu cluster with EMT (masses 63.5 and 197): stored forces equal fresh EMT forces."""
    a = Icosahedron("Cu", 2)
    a.symbols[[0, 3, 5, 7]] = "Au"
    a.center(vacuum=5.0)
    s = WalkerSettings(300.0, 2.0, 40, 5, 0.01, 0.1, 3, 1.5, 3.5)
    res = run_walker(a, EMT(), None, s, rng=np.random.default_rng(0))
    assert res.stop_reason == "completed" and len(res.frames) == 8
    shift = []
    for f in res.frames:
        ref = f.copy()
        ref.calc = EMT()
        raw = ref.get_forces()
        np.testing.assert_allclose(f.arrays[PRED_FORCES], raw, atol=1e-10)
        assert f.info[PRED_ENERGY] == pytest.approx(ref.get_potential_energy(), abs=1e-10)
        shift.append(np.abs(_fixcom_adjusted(f, raw) - raw).max())
    assert max(shift) > 1e-3  # the constrained forces really differ: the test can fail


def test_walker_task_on_water_stores_what_predict_gives(tiny_model):
    """A real MACE walker (walker_task, as the campaign runs it) on water: every stored
    pred_forces / pred_energy equals a fresh backbone.predict of that frame to 1e-5."""
    from alprobe.backbone import load_model, predict
    from alprobe.tasks import walker_task

    s = WalkerSettings(temperature_K=600.0, timestep_fs=0.5, steps=60, stride=5,
                       friction_per_fs=0.01, trust_floor=0.0, patience=3, min_distance_A=0.5,
                       fragment_distance_A=3.0)
    r = walker_task(molecule("H2O"), tiny_model, None, s, [1, 2, 3], 0)
    frames = r["frames"]
    assert len(frames) >= 4, r["stop_reason"]
    fresh = predict(load_model(tiny_model), frames)
    shift = []
    for f, p in zip(frames, fresh):
        np.testing.assert_allclose(f.arrays[PRED_FORCES], p.forces, atol=1e-5, rtol=0)
        assert f.info[PRED_ENERGY] == pytest.approx(p.energy, abs=1e-5)
        shift.append(np.abs(_fixcom_adjusted(f, p.forces) - p.forces).max())
    assert max(shift) > 1e-3, shift  # FixCom would have changed them: the check has teeth


def test_walker_keeps_the_embeddings_of_its_own_forward_pass_when_asked(tiny_model):
    """With embeddings on (select.diversity), each sampled frame carries the backbone's
    per-atom invariant features (N, F), equal to a fresh predict's; off, none are kept."""
    from dataclasses import replace

    from alprobe.backbone import load_model, predict
    from alprobe.frames import EMBEDDING, pooled_embeddings
    from alprobe.tasks import walker_task

    s = WalkerSettings(temperature_K=600.0, timestep_fs=0.5, steps=30, stride=5,
                       friction_per_fs=0.01, trust_floor=0.0, patience=3, min_distance_A=0.5,
                       fragment_distance_A=3.0, embeddings=True)
    frames = walker_task(molecule("H2O"), tiny_model, None, s, [4, 5], 0)["frames"]
    assert len(frames) >= 4
    fresh = predict(load_model(tiny_model), frames)
    for f, p in zip(frames, fresh):
        assert f.arrays[EMBEDDING].shape == p.features.shape == (3, p.features.shape[1])
        np.testing.assert_allclose(f.arrays[EMBEDDING], p.features, atol=1e-4, rtol=1e-4)
    pooled = pooled_embeddings(frames)
    assert pooled.shape == (len(frames), fresh[0].features.shape[1])
    assert np.ptp(pooled, axis=0).max() > 0  # frames differ
    off = walker_task(molecule("H2O"), tiny_model, None, replace(s, embeddings=False), [4, 5],
                      0)["frames"]
    assert off and all(EMBEDDING not in f.arrays for f in off)
    assert pooled_embeddings(off) is None
