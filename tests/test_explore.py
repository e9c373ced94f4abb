"""MD walkers (alprobe.explore) with a cheap real ASE calculator (EMT, Cu13) in place of the MLIP."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.emt import EMT
from ase.cluster import Icosahedron

from alprobe.explore import WalkerSettings, geometry_problem, run_walker
from alprobe.frames import PRED_ENERGY, PRED_FORCES

SETTINGS = WalkerSettings(
    temperature_K=300.0,
    timestep_fs=2.0,
    steps=40,
    stride=5,
    friction_per_fs=0.01,
    trust_floor=0.1,
    patience=3,
    min_distance_A=1.5,
    fragment_distance_A=3.5,
)


def cu13() -> Atoms:
    a = Icosahedron("Cu", 2)  # 13 atoms, nearest neighbours ~2.5 A
    a.center(vacuum=5.0)
    a.pbc = False
    return a


def settings(**kw) -> WalkerSettings:
    return dataclasses.replace(SETTINGS, **kw)


def walk(score=None, seed=0, **kw):
    return run_walker(cu13(), EMT(), score, settings(**kw), rng=np.random.default_rng(seed))


# ----------------------------------------------------------------------------- run_walker


def test_frames_every_stride_with_info_and_predictions():
    seen = []

    def score(atoms: Atoms) -> float:
        # called after the forces of this geometry were computed
        assert atoms.calc is not None
        assert atoms.calc.check_state(atoms) == []  # results belong to this geometry
        assert "forces" in atoms.calc.results
        seen.append(atoms.positions.copy())
        return 0.2 + 0.1 * (len(seen) % 3)

    start = cu13()
    start_pos = start.positions.copy()
    res = run_walker(start, EMT(), score, SETTINGS, rng=np.random.default_rng(1), walker=3)
    assert res.stop_reason == "completed"
    assert res.steps_done == SETTINGS.steps
    n = SETTINGS.steps // SETTINGS.stride
    assert len(res.frames) == n == len(seen)
    np.testing.assert_array_equal(start.positions, start_pos)  # input not modified
    assert start.calc is None
    for k, f in enumerate(res.frames):
        info = f.info
        assert info["walker"] == 3
        assert info["sample"] == k
        assert info["step"] == (k + 1) * SETTINGS.stride
        assert info["time_fs"] == pytest.approx(info["step"] * SETTINGS.timestep_fs)
        assert info["temperature_K"] == SETTINGS.temperature_K
        assert info["trust"] == pytest.approx(0.2 + 0.1 * ((k + 1) % 3))
        assert f.calc is None  # labels never live only in a calculator
        np.testing.assert_array_equal(f.positions, seen[k])  # the scored geometry
        # the prediction is the calculator's at exactly this geometry
        ref = f.copy()
        ref.calc = EMT()
        assert isinstance(info[PRED_ENERGY], float)
        assert f.arrays[PRED_FORCES].shape == (len(f), 3)
        assert info[PRED_ENERGY] == pytest.approx(ref.get_potential_energy(), abs=1e-10)
        np.testing.assert_allclose(f.arrays[PRED_FORCES], ref.get_forces(), atol=1e-10)
    # the walker moved: consecutive frames differ
    assert not np.allclose(res.frames[0].positions, res.frames[1].positions)
    assert res.md_s >= 0 and res.score_s >= 0


def test_constant_low_trust_stops_after_patience_samples():
    res = walk(lambda a: 0.01, steps=100, trust_floor=0.1, patience=3)
    assert len(res.frames) == 3
    assert res.stop_reason.startswith("low trust")
    assert res.steps_done == 3 * SETTINGS.stride
    assert [f.info["trust"] for f in res.frames] == [0.01] * 3


def test_low_trust_must_be_consecutive():
    values = iter([0.01, 0.01, 0.5, 0.01, 0.01, 0.01, 0.9, 0.9, 0.9])
    res = walk(lambda a: next(values), steps=45, trust_floor=0.1, patience=3)
    assert len(res.frames) == 6
    assert res.stop_reason.startswith("low trust")


def test_high_trust_runs_to_completion():
    res = walk(lambda a: 0.9, steps=40, trust_floor=0.1, patience=3)
    assert res.stop_reason == "completed"
    assert len(res.frames) == 40 // 5
    assert res.steps_done == 40


def test_no_score_gives_nan_trust_and_never_stops_early():
    res = walk(None, steps=40, trust_floor=1.0, patience=1)
    assert res.stop_reason == "completed"
    assert len(res.frames) == 8
    assert all(np.isnan(f.info["trust"]) for f in res.frames)


def test_same_seed_same_trajectory_other_seed_differs():
    a = walk(lambda x: 0.5, seed=11)
    b = walk(lambda x: 0.5, seed=11)
    c = walk(lambda x: 0.5, seed=12)
    assert len(a.frames) == len(b.frames) == len(c.frames) == 8
    for fa, fb in zip(a.frames, b.frames):
        np.testing.assert_array_equal(fa.positions, fb.positions)
        np.testing.assert_array_equal(fa.arrays[PRED_FORCES], fb.arrays[PRED_FORCES])
    assert not np.allclose(a.frames[-1].positions, c.frames[-1].positions)


def test_unphysical_frame_is_not_returned():
    # every pair is closer than 10 A: the first sampled frame is unphysical
    res = walk(lambda a: 0.9, min_distance_A=10.0)
    assert res.frames == []
    assert res.stop_reason.startswith(f"unphysical at step {SETTINGS.stride}")
    assert res.steps_done == SETTINGS.stride


class _Exploding(Calculator):
    implemented_properties = ["energy", "forces"]

    def __init__(self, after: int):
        super().__init__()
        self.calls, self.after = 0, after

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        self.calls += 1
        if self.calls > self.after:
            raise RuntimeError("boom")
        self.results = {"energy": 0.0, "forces": np.zeros((len(self.atoms), 3))}


def test_md_error_is_data_not_a_crash():
    res = run_walker(cu13(), _Exploding(after=12), lambda a: 0.9, SETTINGS,
                     rng=np.random.default_rng(0))
    assert res.stop_reason.startswith("MD error")
    assert "boom" in res.stop_reason
    assert 0 < len(res.frames) < SETTINGS.steps // SETTINGS.stride


# ----------------------------------------------------------------------------- geometry_problem


def test_geometry_problem_fine_cluster():
    a = cu13()
    assert geometry_problem(a, 1.5, 3.5, 1) == ""


def test_geometry_problem_close_atoms_names_the_distance():
    a = cu13()
    a.positions[5] = a.positions[2] + np.array([0.3, 0.0, 0.0])
    msg = geometry_problem(a, 1.5, 3.5, 1)
    assert msg
    assert "0.30" in msg
    assert "2" in msg and "5" in msg


def test_geometry_problem_fragment_flew_off():
    a = cu13()
    centre = a.positions.mean(0)
    outer = int(np.argmax(np.linalg.norm(a.positions - centre, axis=1)))
    direction = a.positions[outer] - centre
    a.positions[outer] += 10.0 * direction / np.linalg.norm(direction)
    msg = geometry_problem(a, 1.5, 3.5, 1)
    assert "fragment" in msg and "2 groups" in msg
    # two molecules that started apart are not a problem
    assert geometry_problem(a, 1.5, 3.5, 2) == ""


def test_geometry_problem_non_finite():
    a = cu13()
    a.positions[0, 0] = np.nan
    assert "non-finite" in geometry_problem(a, 1.5, 3.5, 1)


def test_bond_change_names_a_broken_or_formed_bond():
    from ase.build import molecule

    from alprobe.frames import BROKEN, FORMED, bond_change, bonded, covalent_ratios

    start = molecule("CH3CH2OH")
    b0 = bonded(start)
    assert b0.sum() // 2 == 8  # C-C, C-O, O-H, 5 C-H
    # thermal-size displacements keep every bond
    rng = np.random.default_rng(0)
    for _ in range(20):
        a = start.copy()
        a.positions += rng.normal(0, 0.05, a.positions.shape)
        assert bond_change(a, b0) == ""
    # the hydroxyl H pulled away along its bond until just past the threshold
    o, h = 2, 3
    assert b0[o, h]
    a = start.copy()
    u = (a.positions[h] - a.positions[o]) / a.get_distance(o, h)
    radii_sum = start.get_distance(o, h) / covalent_ratios(start)[o, h]
    reach = BROKEN * radii_sum
    a.positions[h] = a.positions[o] + 1.01 * reach * u
    msg = bond_change(a, b0)
    assert "broke" in msg and "O2-H3" in msg
    a.positions[h] = a.positions[o] + 0.98 * reach * u
    assert bond_change(a, b0) == ""
    # a methylene H moved onto the oxygen: its C-H bond broken, a new O-H bond
    c1, h4 = 1, 4
    assert b0[c1, h4] and not b0[o, h4]
    a = start.copy()
    a.positions[h4] = a.positions[o] + np.array([0.0, 0.0, 0.8])
    assert covalent_ratios(a)[o, h4] < FORMED
    msg = bond_change(a, b0)
    assert "bond C1-H4 broke" in msg and "bond O2-H4 formed (0.80 A" in msg
    # geometry_problem checks bonds only when given the start's
    assert "O2-H4" in geometry_problem(a, 0.5, 3.0, 1, b0)
    assert geometry_problem(a, 0.5, 3.0, 1) == ""


def test_walker_that_breaks_a_bond_stops_as_unphysical():
    """Real MD: ethanol on ASE's EMT (a metal potential that tears molecules apart) breaks a
    bond within a few steps; with keep_bonds the walker stops there and every returned frame
    keeps the start's bonds, without it the walker runs on."""
    from ase.build import molecule

    from alprobe.frames import bond_change, bonded

    start = molecule("CH3CH2OH")
    s = settings(temperature_K=600.0, timestep_fs=0.5, steps=200, stride=5, min_distance_A=0.5,
                 fragment_distance_A=3.0, keep_bonds=True)
    res = run_walker(start, EMT(), None, s, rng=np.random.default_rng(0))
    assert res.stop_reason.startswith("unphysical at step")
    assert "bond" in res.stop_reason
    assert res.steps_done < 200 and res.end is None
    assert all(bond_change(a, bonded(start)) == "" for a in res.frames)
    free = run_walker(start, EMT(), None, dataclasses.replace(s, keep_bonds=False),
                      rng=np.random.default_rng(0))
    assert "bond" not in free.stop_reason and free.steps_done > res.steps_done


def test_unphysical_test_walkers_are_run_again_with_new_seeds(monkeypatch):
    """Generation 0's test set: a test walker that turned unphysical is replaced by a new seed
    (its frames dropped), and one unphysical on every attempt contributes no frames."""
    from types import SimpleNamespace

    from alprobe.stages import initial

    calls = []

    def fake_run_walkers(ctx, gen, model, probe, steps, stream, which=None, attempt=0, **kw):
        which = list(which)
        calls.append((stream, which, attempt))
        frames, stops = [], []
        for w in which:
            # walker 1 is unphysical on its first run only; walker 2 on every attempt
            bad = (w == 1 and attempt == 0) or w == 2
            for step in range(0, 50 if bad else 100, 10):
                a = Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]])
                a.info.update(walker=w, step=step, temperature_K=300.0, attempt=attempt)
                frames.append(a)
            stops.append("unphysical at step 50: a fragment flew off" if bad else "completed")
        return frames, {"stops": stops, "wall_s": 1.0}

    monkeypatch.setattr(initial, "run_walkers", fake_run_walkers)
    said = []
    cfg = SimpleNamespace(initial=SimpleNamespace(test_walkers=3, test_size=9, test_md_steps=None,
                                                  md_steps=100),
                          explore=SimpleNamespace(stride=10))
    frames, info = initial._test_walkers(SimpleNamespace(cfg=cfg, say=said.append), "m.model")
    assert calls[0] == ("test_md", [0, 1, 2], 0)
    assert calls[1] == ("test_md_retry", [1, 2], 1)
    assert calls[2:] == [("test_md_retry", [2], k) for k in (2, 3)]
    assert info["dropped"] == [2] and info["stops"][1] == "completed"
    assert [(r["walker"], r["attempt"]) for r in info["replaced"]] == [(1, 0), (2, 0), (2, 1),
                                                                   (2, 2)]
    by_walker = {w: [a for a in frames if a.info["test_walker"] == w] for w in range(3)}
    assert len(by_walker[0]) == 3 and len(by_walker[2]) == 0
    # walker 1's frames come from its second (complete, 100-step) run, not the first
    assert len(by_walker[1]) == 3 and max(a.info["step"] for a in by_walker[1]) == 90
    assert info["wall_s"] == 4.0
    assert any("still turned unphysical" in s for s in said)
