"""Tests of the PySCF adapter with real (small) PySCF calculations."""

from __future__ import annotations

import os
import signal
import tempfile
import time
from dataclasses import replace

import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule
from ase.units import Bohr, Hartree

pytest.importorskip("pyscf")

from alprobe.dft import rescue  # noqa: E402
from alprobe.dft import scf as dft_scf  # noqa: E402
from alprobe.dft import (  # noqa: E402
    RESCUE_LADDER,
    DFTLevel,
    LabelResult,
    Rung,
    check_level,
    check_structure,
    label_atoms,
    label_many,
)

HF_STO3G = DFTLevel(method="hf", basis="sto-3g", density_fit=False)


@pytest.fixture(autouse=True, scope="module")
def _one_pyscf_thread():
    """PySCF's OpenMP threads thrash on a loaded 2-core machine (25x slower): use one here."""
    from pyscf import lib

    before = lib.num_threads()
    lib.num_threads(1)
    yield
    lib.num_threads(before)


def _water() -> Atoms:
    return molecule("H2O")


def _oh(distance: float = 0.97) -> Atoms:
    return Atoms("OH", positions=[[0.0, 0.0, 0.0], [0.0, 0.0, distance]])


def _fd_forces(
    atoms: Atoms, level: DFTLevel, coords: list[tuple[int, int]], h: float
) -> np.ndarray:
    """Central finite differences -dE/dx (eV/A) for the listed (atom, axis) pairs."""
    out = []
    for i, k in coords:
        energies = []
        for sign in (+1, -1):
            a = atoms.copy()
            a.positions[i, k] += sign * h
            res = label_atoms(a, level)
            assert res.status == "ok", res.reason
            energies.append(res.energy)
        out.append(-(energies[0] - energies[1]) / (2 * h))
    return np.array(out)


# water is asymmetric enough once displaced: break symmetry so x, y, z components are nonzero
def _distorted_water() -> Atoms:
    a = _water()
    a.positions += np.array([[0.02, -0.03, 0.01], [-0.04, 0.05, 0.02], [0.03, 0.01, -0.05]])
    return a


@pytest.fixture(scope="module")
def hf_water() -> tuple[Atoms, LabelResult]:
    atoms = _distorted_water()
    return atoms, label_atoms(atoms, HF_STO3G)


def test_hf_water_energy_sane_and_forces_shape(hf_water):
    atoms, res = hf_water
    assert res.status == "ok", res.reason
    assert res.reason == ""
    assert res.forces.shape == (3, 3)
    assert np.isfinite(res.forces).all()
    # HF/STO-3G water is about -74.96 Hartree; a wrong unit conversion is off by orders.
    assert res.energy < 0
    assert abs(res.energy - (-74.96 * Hartree)) < 1.0
    assert res.n_cycles is not None and res.n_cycles > 0
    assert res.wall_s > 0
    # Translation invariance: total force vanishes.
    np.testing.assert_allclose(res.forces.sum(axis=0), 0.0, atol=1e-6)
    # A distorted geometry has real forces (not an all-zeros placeholder).
    assert np.abs(res.forces).max() > 0.05


def test_hf_water_forces_match_finite_differences(hf_water):
    atoms, res = hf_water
    coords = [(0, 2), (1, 0), (1, 1), (2, 2)]
    fd = _fd_forces(atoms, HF_STO3G, coords, h=1e-3)
    analytic = np.array([res.forces[i, k] for i, k in coords])
    np.testing.assert_allclose(analytic, fd, atol=1e-3)


def test_energy_matches_independent_pyscf_in_ev():
    from pyscf import gto, scf

    atoms = _water()
    res = label_atoms(atoms, HF_STO3G)
    mol = gto.M(
        atom=[(s, tuple(p / Bohr)) for s, p in zip(atoms.get_chemical_symbols(), atoms.positions)],
        unit="Bohr",
        basis="sto-3g",
        verbose=0,
    )
    e_ref = scf.RHF(mol).kernel()
    assert res.energy == pytest.approx(e_ref * Hartree, abs=1e-5)


@pytest.mark.parametrize(("grid_level", "atol"), [(1, 5e-2), (3, 2e-3)])
def test_dft_density_fit_forces_match_finite_differences(grid_level, atol):
    level = DFTLevel(
        method="dft", xc="pbe", basis="sto-3g", density_fit=True, grid_level=grid_level
    )
    atoms = _distorted_water()
    res = label_atoms(atoms, level)
    assert res.status == "ok", res.reason
    hf = label_atoms(atoms, HF_STO3G)
    # PBE and HF differ: the xc setting is really used.
    assert abs(res.energy - hf.energy) > 0.1
    coords = [(0, 2), (1, 1)]
    fd = _fd_forces(atoms, level, coords, h=1e-3)
    analytic = np.array([res.forces[i, k] for i, k in coords])
    assert abs(fd[0]) > 1.0  # a real force, so unit or sign errors show
    # The analytic gradient has no grid response: coarse grids differ from FD by ~0.03 eV/A.
    np.testing.assert_allclose(analytic, fd, atol=atol)


def test_radical_uses_unrestricted(monkeypatch):
    from pyscf import scf

    built = []
    orig = dft_scf.build_mf

    def spy(mol, level, *args, **kwargs):
        mf = orig(mol, level, *args, **kwargs)
        built.append(mf)
        return mf

    monkeypatch.setattr(dft_scf, "build_mf", spy)
    level = DFTLevel(method="hf", basis="sto-3g", density_fit=False, spin=1)
    res = label_atoms(_oh(), level)
    assert res.status == "ok", res.reason
    assert res.forces.shape == (2, 3) and np.isfinite(res.forces).all()
    assert len(built) == 1
    assert isinstance(built[0], scf.uhf.UHF)
    assert not isinstance(built[0], scf.rohf.ROHF)

    # UHF energy is at or below ROHF energy (more variational freedom).
    from pyscf import gto

    a = _oh()
    mol = gto.M(
        atom=[(s, tuple(p / Bohr)) for s, p in zip(a.get_chemical_symbols(), a.positions)],
        unit="Bohr",
        basis="sto-3g",
        spin=1,
        verbose=0,
    )
    e_uhf = scf.UHF(mol).kernel() * Hartree
    assert res.energy == pytest.approx(e_uhf, abs=1e-5)


def test_closed_shell_uses_restricted(monkeypatch):
    from pyscf import dft

    built = []
    orig = dft_scf.build_mf

    def spy(mol, lv, *args, **kwargs):
        built.append(orig(mol, lv, *args, **kwargs))
        return built[-1]

    monkeypatch.setattr(dft_scf, "build_mf", spy)
    level = DFTLevel(method="dft", xc="lda,vwn", basis="sto-3g", density_fit=True, grid_level=1)
    res = label_atoms(Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]]), level)
    assert res.status == "ok", res.reason
    mf = built[0]
    assert isinstance(mf, dft.rks.RKS)
    assert not isinstance(mf, dft.uks.UKS)
    assert mf.with_df is not None  # density fitting was switched on
    assert mf.grids.level == 1
    assert mf.chkfile is None


def test_odd_electrons_with_spin_zero_rejected():
    msg = check_structure(_oh(), DFTLevel(basis="sto-3g", spin=0))
    assert msg
    assert "electron" in msg and "spin" in msg
    res = label_atoms(_oh(), DFTLevel(basis="sto-3g", spin=0))
    assert res.status == "rejected"
    assert res.energy is None and res.forces is None
    # charge fixes the parity
    assert check_structure(_oh(), DFTLevel(basis="sto-3g", spin=0, charge=-1)) == ""


def test_close_pair_rejected_with_distance():
    atoms = Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.1]])
    res = label_atoms(atoms, HF_STO3G)
    assert res.status == "rejected"
    assert "0.100" in res.reason and "atoms 0" in res.reason and "1 (H)" in res.reason
    assert res.energy is None and res.forces is None
    # the threshold is the level's
    assert check_structure(atoms, DFTLevel(basis="sto-3g", min_distance=0.05)) == ""


def test_nan_coordinate_rejected():
    atoms = _water()
    atoms.positions[1, 0] = np.nan
    res = label_atoms(atoms, HF_STO3G)
    assert res.status == "rejected"
    assert "finite" in res.reason and "1" in res.reason


def test_uncovered_element_rejected():
    atoms = Atoms("UH", positions=[[0, 0, 0], [0, 0, 2.0]])
    res = label_atoms(atoms, DFTLevel(method="hf", basis="sto-3g", spin=1))
    assert res.status == "rejected"
    assert "sto-3g" in res.reason and "U" in res.reason
    assert "\n" not in res.reason


def test_empty_and_periodic_rejected():
    assert check_structure(Atoms(), HF_STO3G) != ""
    atoms = _water()
    atoms.cell = [10, 10, 10]
    atoms.pbc = True
    assert "periodic" in check_structure(atoms, HF_STO3G)


def test_scf_failure_without_rescue_is_one_attempt(monkeypatch):
    """rescue=False keeps the old behaviour: the plain SCF once, then "failed"."""
    built = []
    orig = dft_scf.build_mf

    def spy(mol, lv, *args, **kwargs):
        built.append(orig(mol, lv, *args, **kwargs))
        return built[-1]

    monkeypatch.setattr(dft_scf, "build_mf", spy)
    level = DFTLevel(method="hf", basis="sto-3g", density_fit=False, max_cycle=2, rescue=False)
    res = label_atoms(_water(), level)
    assert res.status == "failed"
    assert res.energy is None and res.forces is None
    assert res.reason == "SCF not converged after 2 cycles"
    assert len(built) == 1
    assert len(res.attempts) == 1 and "not converged" in res.attempts[0]
    assert res.n_cycles == 2
    # the same level with the ladder (the default) is rescued
    assert label_atoms(_water(), DFTLevel(method="hf", basis="sto-3g", density_fit=False,
                                          max_cycle=2)).status == "ok"


@pytest.mark.parametrize(("rescue", "n_attempts"), [(False, 1), (True, len(RESCUE_LADDER))])
def test_pyscf_exception_becomes_failed(monkeypatch, rescue, n_attempts):
    def boom(mol, level, *args, **kwargs):
        raise RuntimeError("simulated\npyscf error")

    monkeypatch.setattr(dft_scf, "build_mf", boom)
    res = label_atoms(_water(), DFTLevel(method="hf", basis="sto-3g", density_fit=False,
                                         rescue=rescue))
    assert res.status == "failed"
    assert "simulated pyscf error" in res.reason
    assert "\n" not in res.reason
    assert len(res.attempts) == n_attempts
    assert all("RuntimeError: simulated pyscf error" in a for a in res.attempts)
    if rescue:
        assert f"{n_attempts} attempts" in res.reason


def test_label_many_keeps_order_and_continues_after_rejection():
    bad = Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.1]])
    h2 = Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]])
    results = label_many([bad, h2, bad], HF_STO3G)
    assert [r.status for r in results] == ["rejected", "ok", "rejected"]
    assert results[1].forces.shape == (2, 3)


def test_check_level():
    elements = ["H", "O"]
    assert check_level(DFTLevel(), elements) == []
    assert check_level(HF_STO3G, elements) == []
    t0 = time.perf_counter()
    msgs = check_level(DFTLevel(basis="def2-svvp"), elements)
    assert time.perf_counter() - t0 < 1.0
    assert len(msgs) == 1 and "def2-svvp" in msgs[0]
    msgs = check_level(DFTLevel(xc="pbeX"), elements)
    assert len(msgs) == 1 and "pbeX" in msgs[0]
    # xc is not checked for HF
    assert check_level(DFTLevel(method="hf", xc="pbeX", basis="sto-3g"), elements) == []
    assert any("method" in m for m in check_level(DFTLevel(method="ccsd"), elements))
    assert any("grid_level" in m for m in check_level(DFTLevel(grid_level=10), elements))
    assert any("max_cycle" in m for m in check_level(DFTLevel(max_cycle=-1), elements))
    # basis that exists but does not cover an element
    msgs = check_level(DFTLevel(basis="6-31g"), ["H", "Au"])
    assert len(msgs) == 1 and "Au" in msgs[0] and "6-31g" in msgs[0]


def test_unknown_method_is_a_config_error():
    with pytest.raises(ValueError, match="method"):
        label_atoms(_water(), DFTLevel(method="ccsd", basis="sto-3g"))


def test_unknown_xc_at_label_time_is_failed_not_raised():
    res = label_atoms(_water(), DFTLevel(method="dft", xc="pbeX", basis="sto-3g"))
    assert res.status == "failed"
    assert "PBEX" in res.reason.upper()


def test_labeling_prints_nothing(capfd):
    label_atoms(_water(), DFTLevel(method="dft", xc="pbe", basis="sto-3g", grid_level=1))
    label_atoms(_water(), DFTLevel(method="hf", basis="sto-3g", max_cycle=1))
    assert label_atoms(_water(), replace(HF_STO3G, max_cycle=2, timeout_s=30)).ok
    label_atoms(Atoms("UH", positions=[[0, 0, 0], [0, 0, 2.0]]), HF_STO3G)
    out, err = capfd.readouterr()
    assert out == ""
    assert err == ""


# ------------------------------------------------------------------------------- rescue ladder


def _spy_build_mf(monkeypatch) -> list:
    built = []
    orig = dft_scf.build_mf

    def spy(mol, lv, *args, **kwargs):
        built.append(orig(mol, lv, *args, **kwargs))
        return built[-1]

    monkeypatch.setattr(dft_scf, "build_mf", spy)
    return built


def test_rescue_ladder_is_the_documented_one():
    names = [r.name for r in RESCUE_LADDER]
    assert names == ["diis", "damped", "newton", "guess=atom", "guess=huckel", "broken-symmetry"]
    first, damped, newton = RESCUE_LADDER[:3]
    assert first == Rung("diis")  # the plain SCF
    assert (damped.guess, damped.cycle_factor, damped.damp, damped.level_shift) == (
        "last", 2, 0.5, 0.25)
    assert damped.diis_start_cycle > 1  # PySCF damps only before DIIS starts
    assert (newton.solver, newton.guess) == ("newton", "last")
    assert [r.guess for r in RESCUE_LADDER[3:5]] == ["atom", "huckel"]
    assert RESCUE_LADDER[-1].broken_symmetry
    assert not any(r.broken_symmetry for r in RESCUE_LADDER[:-1])


def _spy_gradient(monkeypatch) -> list:
    graded = []
    orig = dft_scf.gradient

    def spy(mf, n):
        graded.append(mf)
        return orig(mf, n)

    monkeypatch.setattr(dft_scf, "gradient", spy)
    return graded


def test_damped_rung_rescues_from_the_last_density(monkeypatch, hf_water):
    atoms, plain = hf_water
    built = _spy_build_mf(monkeypatch)
    graded = _spy_gradient(monkeypatch)
    res = label_atoms(atoms, replace(HF_STO3G, max_cycle=4))
    assert res.status == "ok", res.reason
    assert res.reason == ""
    assert len(res.attempts) == 2 and len(built) == 2
    assert res.attempts[0].startswith("diis max_cycle=4: not converged after 4 cycles")
    assert res.attempts[1].startswith("damped max_cycle=8: converged")
    mf = built[1]
    assert (mf.damp, mf.level_shift, mf.max_cycle) == (0.5, 0.25, 8)
    assert mf.diis_start_cycle == RESCUE_LADDER[1].diis_start_cycle
    # Started from the first attempt's density: converged at once. From the minao guess, damping
    # plus level shift need more than 8 cycles here.
    assert mf.cycles <= 3
    assert res.n_cycles == 4 + mf.cycles
    assert graded == [mf]  # forces from the object that converged
    assert res.energy == pytest.approx(plain.energy, abs=3e-5)
    # The level shift makes small steps, so this rung stops just inside PySCF's orbital-gradient
    # threshold sqrt(conv_tol): forces ~3e-4 eV/A from the (overshooting) plain DIIS ones.
    np.testing.assert_allclose(res.forces, plain.forces, atol=1e-3)


@pytest.mark.parametrize(
    "level",
    [
        replace(HF_STO3G, max_cycle=2),
        DFTLevel(method="dft", xc="pbe", basis="sto-3g", density_fit=True, grid_level=3,
                 max_cycle=2),
    ],
    ids=["hf", "pbe-df"],
)
def test_newton_rung_energy_and_forces(monkeypatch, level):
    """max_cycle=2 water: diis and damped fail, second-order SCF converges (rung c)."""
    from pyscf.soscf.newton_ah import _CIAH_SOSCF

    atoms = _distorted_water()
    graded = _spy_gradient(monkeypatch)
    res = label_atoms(atoms, level)
    assert res.status == "ok", res.reason
    assert [a.split(" ")[0] for a in res.attempts] == ["diis", "damped", "newton"]
    assert "not converged" in res.attempts[0] and "not converged" in res.attempts[1]
    assert "converged in" in res.attempts[2]
    # the gradient came from the converged second-order object itself
    assert len(graded) == 1 and isinstance(graded[0], _CIAH_SOSCF) and graded[0].converged

    converged = replace(level, max_cycle=100)
    ref = label_atoms(atoms, converged)
    assert len(ref.attempts) == 1  # plain SCF: a well-converged reference
    assert res.energy == pytest.approx(ref.energy, abs=3e-5)  # 1e-6 Hartree
    np.testing.assert_allclose(res.forces, ref.forces, atol=1e-4)
    if level.method == "hf":
        coords = [(0, 2), (1, 0), (2, 1)]
        fd = _fd_forces(atoms, converged, coords, h=1e-3)
        np.testing.assert_allclose([res.forces[i, k] for i, k in coords], fd, atol=1e-3)


def test_all_rungs_fail():
    res = label_atoms(_water(), replace(HF_STO3G, max_cycle=1))
    assert res.status == "failed"
    assert res.energy is None and res.forces is None
    n = len(RESCUE_LADDER)
    assert len(res.attempts) == n
    assert [a.split(" ")[0] for a in res.attempts] == [r.name for r in RESCUE_LADDER]
    assert all("not converged" in a for a in res.attempts)
    assert f"after {n} attempts" in res.reason and "converge" in res.reason
    assert "broken-symmetry" in res.reason  # names the last attempt
    assert "\n" not in res.reason
    assert res.n_cycles is not None and res.n_cycles >= n


def test_broken_symmetry_only_for_spin_zero():
    res = label_atoms(_oh(), DFTLevel(method="hf", basis="sto-3g", density_fit=False, spin=1,
                                      max_cycle=1))
    assert res.status == "failed"
    assert len(res.attempts) == len(RESCUE_LADDER) - 1
    assert not any("broken-symmetry" in a for a in res.attempts)


def _h2(d: float) -> Atoms:
    return Atoms("H2", positions=[[0.0, 0.0, 0.0], [0.0, 0.0, d]])


def _uhf_mix_energy(atoms: Atoms) -> float:
    from pyscf import gto, scf

    mol = gto.M(atom=[(s, tuple(p / Bohr)) for s, p in zip(atoms.get_chemical_symbols(),
                                                             atoms.positions)],
                unit="Bohr", basis="sto-3g", verbose=0)
    mf = scf.UHF(mol)
    mf.init_guess_breaksym = "mix"
    mf.conv_tol = 1e-10
    e = mf.kernel()
    assert mf.converged
    return e * Hartree


def test_broken_symmetry_rung_labels_stretched_h2(monkeypatch):
    """Restricted rung fails (1 cycle), then a broken-symmetry UHF converges below RHF."""
    from pyscf import scf

    monkeypatch.setattr(rescue, "RESCUE_LADDER", (
        Rung("diis"), Rung("broken-symmetry", cycle_factor=60, broken_symmetry=True)))
    built = _spy_build_mf(monkeypatch)
    atoms = _h2(2.5)
    res = label_atoms(atoms, replace(HF_STO3G, max_cycle=1))
    assert res.status == "ok", res.reason
    assert "broken-symmetry UHF" in res.reason and "<S^2>=0.99" in res.reason
    assert res.attempts[1].startswith("broken-symmetry max_cycle=60: converged")
    assert isinstance(built[1], scf.uhf.UHF)
    e_rhf = label_atoms(atoms, HF_STO3G).energy
    e_uhf = _uhf_mix_energy(atoms)
    assert res.energy == pytest.approx(e_uhf, abs=3e-5)
    assert res.energy < e_rhf - 5.0  # really broken: about 6 eV below RHF at 2.5 A
    h = 1e-3
    fd = -(_uhf_mix_energy(_h2(2.5 + h)) - _uhf_mix_energy(_h2(2.5 - h))) / (2 * h)
    assert abs(fd) > 0.01
    assert res.forces[1, 2] == pytest.approx(fd, abs=1e-3)
    assert res.forces[0, 2] == pytest.approx(-fd, abs=1e-3)


# ------------------------------------------------------------------------------ wall-time limit


def _children_of(parent: int) -> set[int]:
    me = str(parent)
    out = set()
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/stat") as f:
                    if f.read().rsplit(")", 1)[1].split()[1] == me:
                        out.add(int(pid))
            except (OSError, IndexError):
                pass
    return out


def _children() -> set[int]:
    """Label processes of this test process: its children except the sandbox's helpers (fork
    server and resource tracker, started once and kept), plus the fork server's children (the
    sandboxed labels)."""
    from alprobe.sandbox import helper_pids, server_pid

    server = server_pid()
    out = _children_of(os.getpid()) - helper_pids()
    return out | (_children_of(server) if server else set())


def _crash_in_child(atoms, level, t0, on_attempt):  # runs in the sandbox child
    os.kill(os.getpid(), signal.SIGKILL)  # as the kernel's OOM killer would


def _stuck_in_damped_rung(atoms, level, t0, on_attempt):  # runs in the sandbox child
    orig = rescue.run_rung

    def stuck(mol, level, rung, last_dm):
        if rung.name == "damped":
            time.sleep(60)
        return orig(mol, level, rung, last_dm)

    rescue.run_rung = stuck
    return rescue.run_ladder(atoms, level, t0, on_attempt)


def _scratch_dirs() -> set[str]:
    return {d for d in os.listdir(tempfile.gettempdir()) if d.startswith("alprobe-label-")}


def test_timeout_kills_the_label_and_the_process_stays_usable():
    before, scratch = _children(), _scratch_dirs()
    slow = DFTLevel(method="dft", xc="pbe", basis="def2-svp", timeout_s=0.05)
    t0 = time.perf_counter()
    res = label_atoms(molecule("CH3CH2OH"), slow)  # ~2.5 s without the limit
    wall = time.perf_counter() - t0
    assert res.status == "timeout"
    assert res.reason == "wall time limit 0.05 s exceeded"
    assert res.energy is None and res.forces is None
    assert 0.05 <= res.wall_s <= wall < 0.05 + 5
    assert _children() == before  # killed and reaped
    assert _scratch_dirs() == scratch

    atoms = _distorted_water()
    ok = label_atoms(atoms, replace(HF_STO3G, timeout_s=30))
    assert ok.status == "ok", ok.reason
    ref = label_atoms(atoms, HF_STO3G)
    assert ok.energy == pytest.approx(ref.energy, abs=1e-8)
    np.testing.assert_allclose(ok.forces, ref.forces, atol=1e-8)
    assert len(ok.attempts) == 1 and ok.attempts[0].startswith("diis max_cycle=100: converged")
    assert _children() == before


def test_timeout_keeps_finished_attempts_and_rescue(monkeypatch):
    """Ladder results come back from the child; a child stuck in a later rung is killed."""
    res = label_atoms(_water(), replace(HF_STO3G, max_cycle=2, timeout_s=30))
    assert res.status == "ok" and [a.split(" ")[0] for a in res.attempts] == [
        "diis", "damped", "newton"]

    # the child runs what _label_in_process names in the caller; this one sticks in "damped"
    monkeypatch.setattr(rescue, "run_ladder", _stuck_in_damped_rung)
    t0 = time.perf_counter()
    # 5 s: the child imports this test module (to find the stuck rung) before its first rung
    res = label_atoms(_water(), replace(HF_STO3G, max_cycle=2, timeout_s=5.0))
    assert time.perf_counter() - t0 < 5.0 + 5
    assert res.status == "timeout" and res.reason == "wall time limit 5.0 s exceeded"
    assert len(res.attempts) == 1 and "not converged" in res.attempts[0]


def test_child_crash_is_failed_not_timeout(monkeypatch):
    monkeypatch.setattr(rescue, "run_ladder", _crash_in_child)
    before = _children()
    t0 = time.perf_counter()
    res = label_atoms(_water(), replace(HF_STO3G, timeout_s=30))
    assert time.perf_counter() - t0 < 5
    assert res.status == "failed"
    assert "signal 9" in res.reason and "without a result" in res.reason
    assert _children() == before


def test_timeout_with_several_openmp_threads_in_the_caller(monkeypatch):
    """The caller ran a multi-thread OpenMP pool (which makes a forked copy of it deadlock in
    GNU libgomp): the sandboxed label is forked from the fork server, never from the caller,
    runs with the caller's thread count and gives the in-process answer."""
    from pyscf import lib

    from alprobe.sandbox import server_pid

    atoms = _distorted_water()
    ref = label_atoms(atoms, HF_STO3G)
    assert label_atoms(atoms, replace(HF_STO3G, timeout_s=30)).ok
    server = server_pid()
    assert server is not None and server != os.getpid()
    before = _children()
    lib.num_threads(2)
    try:
        label_atoms(atoms, HF_STO3G)  # an OpenMP pool of 2 threads in this process
        res = label_atoms(atoms, replace(HF_STO3G, timeout_s=60))
    finally:
        lib.num_threads(1)
    assert res.status == "ok", res.reason
    assert server_pid() == server  # the same warm server, no new interpreter
    assert res.energy == pytest.approx(ref.energy, abs=1e-8)
    np.testing.assert_allclose(res.forces, ref.forces, atol=1e-7)
    assert _children() == before


def test_timeout_config_checked():
    assert check_level(replace(HF_STO3G, timeout_s=30.0), ["H", "O"]) == []
    for bad in (0, -1.0, float("nan"), float("inf")):
        msgs = check_level(replace(HF_STO3G, timeout_s=bad), ["H", "O"])
        assert len(msgs) == 1 and "timeout_s" in msgs[0]
        with pytest.raises(ValueError, match="timeout_s"):
            label_atoms(_water(), replace(HF_STO3G, timeout_s=bad))


def test_old_constructors_still_work():
    r = LabelResult("ok", 1.0, np.zeros((1, 3)), "", 3, 0.1)
    assert r.attempts == () and r.ok
    lv = DFTLevel("hf", "pbe", "sto-3g", False, 1, 0, 0, 50, 1e-9, 0.5)
    assert lv.rescue is True and lv.timeout_s is None
