"""PySCF's SCF objects for a level, their gradients, and the Hartree/Bohr conversion.

Coordinates go to PySCF in Bohr converted with ``ase.units.Bohr``, energies come back in
Hartree and gradients in Hartree/Bohr; :func:`energy_and_forces` turns them into eV and eV/A
with ASE's constants, so labels agree with ASE to machine precision. This and ``rescue`` are
the only places that build PySCF objects.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import numpy as np
from ase.units import Bohr, Hartree

from .level import DFTLevel, load_ecp

if TYPE_CHECKING:
    from ase import Atoms

__all__ = ["SCFError", "build_mf", "build_mol", "energy_and_forces", "gradient",
           "pyscf_calculator"]


def build_mol(atoms: Atoms, level: DFTLevel) -> Any:
    from pyscf import gto

    symbols = atoms.get_chemical_symbols()
    coords = np.asarray(atoms.positions, dtype=float) / Bohr
    ecp = {el: e for el in set(symbols) if (e := load_ecp(level.basis, el))}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return gto.M(
            atom=[(s, tuple(c)) for s, c in zip(symbols, coords)],
            unit="Bohr",
            basis=level.basis,
            ecp=ecp or None,
            charge=level.charge,
            spin=level.spin,
            verbose=0,
            output=None,
        )


def build_mf(mol: Any, level: DFTLevel, unrestricted: bool | None = None) -> Any:
    """SCF object for ``level``: restricted when spin == 0 unless ``unrestricted`` says so."""
    from pyscf import dft, scf

    if unrestricted is None:
        unrestricted = level.spin != 0
    if level.method == "hf":
        mf = scf.UHF(mol) if unrestricted else scf.RHF(mol)
    elif level.method == "dft":
        mf = dft.UKS(mol) if unrestricted else dft.RKS(mol)
        mf.xc = level.xc
        mf.grids.level = level.grid_level
    else:
        raise ValueError(f"unknown method {level.method!r}")
    if level.density_fit:
        mf = mf.density_fit()
    mf.verbose = 0
    mf.chkfile = None
    mf.max_cycle = level.max_cycle
    mf.conv_tol = level.conv_tol
    return mf


def gradient(mf: Any, n_atoms: int) -> np.ndarray:
    """Nuclear gradient (Hartree/Bohr, (N, 3)) of the converged SCF object ``mf``.

    A second-order (``mf.newton()``) object is unwrapped first (``undo_soscf`` keeps the
    converged orbitals), so the gradient is that of the ordinary RHF/RKS/UHF/UKS object.
    """
    from pyscf.soscf.newton_ah import _CIAH_SOSCF

    base = mf.undo_soscf() if isinstance(mf, _CIAH_SOSCF) else mf
    grad = base.nuc_grad_method()
    grad.verbose = 0
    return np.asarray(grad.kernel(), dtype=float).reshape(n_atoms, 3)


def energy_and_forces(mf: Any, n_atoms: int) -> tuple[float, np.ndarray]:
    """Total energy (eV) and forces ((N, 3), eV/A) of the converged SCF object ``mf``."""
    return float(mf.e_tot) * Hartree, -gradient(mf, n_atoms) * (Hartree / Bohr)


class SCFError(RuntimeError):
    """The SCF of a PySCFCalculator step did not converge."""


def pyscf_calculator(level: DFTLevel) -> Any:
    """An ASE calculator: energy (eV) and forces (eV/A) from PySCF at ``level``.

    Each step starts from the previous step's density (PySCF's ``as_scanner``), so neighbouring
    MD frames converge in a few cycles. Meant for *driving* MD at a cheap level to sample
    geometries (``scripts/make_pool.py``); labels go through :func:`label_atoms` (checks,
    rescue ladder, failures as data). Raises SCFError when a step does not converge.
    """
    from ase.calculators.calculator import Calculator, all_changes

    class PySCFCalculator(Calculator):
        implemented_properties = ["energy", "free_energy", "forces"]

        def __init__(self) -> None:
            super().__init__()
            self.scanner: Any = None
            self.n_cycles = 0

        def calculate(self, atoms: Atoms | None = None, properties: Any = None,
                      system_changes: Any = all_changes) -> None:
            super().calculate(atoms, properties, system_changes)
            coords = np.asarray(self.atoms.positions, dtype=float) / Bohr
            if self.scanner is None or "numbers" in system_changes:
                mol = build_mol(self.atoms, level)
                grad = build_mf(mol, level).nuc_grad_method()
                grad.verbose = 0
                self.scanner = grad.as_scanner()
                e_ha, g = self.scanner(mol)
            else:
                e_ha, g = self.scanner(self.scanner.mol.set_geom_(coords, unit="Bohr",
                                                                  inplace=False))
            if not self.scanner.converged:
                raise SCFError(f"SCF not converged at {level.method}/{level.basis}")
            self.n_cycles += int(getattr(self.scanner.base, "cycles", 0) or 0)
            e = float(e_ha) * Hartree
            self.results = {"energy": e, "free_energy": e,
                            "forces": -np.asarray(g, dtype=float) * (Hartree / Bohr)}

    return PySCFCalculator()


