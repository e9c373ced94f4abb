"""Tests of the PySCF adapter with real (small) PySCF calculations."""

from __future__ import annotations

import time

import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule
from ase.units import Bohr, Hartree

pytest.importorskip("pyscf")

from alprobe import label as label_mod  # noqa: E402
from alprobe.label import (  # noqa: E402
    DFTLevel,
    LabelResult,
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
    orig = label_mod._build_mf

    def spy(mol, level):
        mf = orig(mol, level)
        built.append(mf)
        return mf

    monkeypatch.setattr(label_mod, "_build_mf", spy)
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
    orig = label_mod._build_mf

    def spy(mol, lv):
        built.append(orig(mol, lv))
        return built[-1]

    monkeypatch.setattr(label_mod, "_build_mf", spy)
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


def test_scf_failure_is_recorded():
    level = DFTLevel(method="hf", basis="sto-3g", density_fit=False, max_cycle=2)
    res = label_atoms(_water(), level)
    assert res.status == "failed"
    assert res.energy is None and res.forces is None
    assert "converge" in res.reason
    assert "\n" not in res.reason


def test_pyscf_exception_becomes_failed(monkeypatch):
    def boom(mol, level):
        raise RuntimeError("simulated\npyscf error")

    monkeypatch.setattr(label_mod, "_build_mf", boom)
    res = label_atoms(_water(), HF_STO3G)
    assert res.status == "failed"
    assert "simulated pyscf error" in res.reason
    assert "\n" not in res.reason


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
    label_atoms(Atoms("UH", positions=[[0, 0, 0], [0, 0, 2.0]]), HF_STO3G)
    out, err = capfd.readouterr()
    assert out == ""
    assert err == ""
