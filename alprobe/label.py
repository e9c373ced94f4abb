"""PySCF adapter: one structure -> energy (eV) and forces (eV/A), failures as data.

This is the only module of alprobe that imports PySCF. Everything entering or leaving it is in
eV and Angstrom; Hartree and Bohr are used only inside. Coordinates are handed to PySCF in Bohr
converted with ``ase.units.Bohr`` so that energies and forces are consistent with ASE's
constants to machine precision.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from ase.data import atomic_numbers
from ase.units import Bohr, Hartree

if TYPE_CHECKING:
    from ase import Atoms

__all__ = [
    "DFTLevel",
    "LabelResult",
    "check_level",
    "check_structure",
    "label_atoms",
    "label_many",
]

_METHODS = ("dft", "hf")


@dataclass(frozen=True)
class DFTLevel:
    """Electronic-structure level used for labels.

    ``conv_tol`` is in Hartree, ``min_distance`` in Angstrom. ``spin`` is 2S = N_alpha - N_beta
    (PySCF convention). ``xc`` and ``grid_level`` are used only for ``method="dft"``.
    """

    method: str = "dft"
    xc: str = "pbe"
    basis: str = "def2-svp"
    density_fit: bool = True
    grid_level: int = 1
    charge: int = 0
    spin: int = 0
    max_cycle: int = 100
    conv_tol: float = 1e-9
    min_distance: float = 0.5


@dataclass(frozen=True)
class LabelResult:
    """Outcome of labeling one structure.

    status: "ok", "failed" (SCF not converged or PySCF error) or "rejected" (refused before DFT).
    energy: total energy in eV (None unless ok). forces: (N, 3) in eV/A (None unless ok).
    reason: "" when ok, else one line. n_cycles: SCF cycles if known. wall_s: seconds spent.
    """

    status: str
    energy: float | None
    forces: np.ndarray | None
    reason: str
    n_cycles: int | None
    wall_s: float

    @property
    def ok(self) -> bool:
        """True when status is "ok"."""
        return self.status == "ok"


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _load_basis(basis: str, element: str) -> Any:
    """Basis of one element, or raise (PySCF's 'install basis-set-exchange' warning muted)."""
    from pyscf import gto

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        shells = gto.basis.load(basis, element)
    if not shells:
        raise ValueError(f"no shells for {element}")
    return shells


def _load_ecp(basis: str, element: str) -> Any:
    """ECP that belongs to ``basis`` for one element (e.g. def2 for Z > 36), or [] if none."""
    from pyscf import gto

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return gto.basis.load_ecp(basis, element) or []
    except Exception:  # noqa: BLE001 - no ECP of that name is the common case
        return []


def _basis_problem(basis: str, elements: Iterable[str]) -> str:
    missing = []
    for el in sorted(set(elements)):
        try:
            _load_basis(basis, el)
        except Exception:  # noqa: BLE001 - any load failure means "not covered"
            missing.append(el)
    if missing:
        return f"basis {basis!r} cannot be loaded for element(s) {', '.join(missing)}"
    return ""


def check_level(level: DFTLevel, elements: Iterable[str]) -> list[str]:
    """Problems with ``level`` itself (for config validation) as one-line messages; [] if fine.

    Checks the method, that the basis loads for every element in ``elements`` (H if none given),
    the xc functional (via ``pyscf.dft.libxc.parse_xc``), grid_level in 0..9, max_cycle >= 0,
    conv_tol > 0 (Hartree) and min_distance >= 0 (Angstrom).
    """
    problems: list[str] = []
    if level.method not in _METHODS:
        problems.append(f"unknown method {level.method!r} (expected one of {', '.join(_METHODS)})")
    elements = list(elements) or ["H"]
    unknown = [el for el in elements if el not in atomic_numbers]
    if unknown:
        problems.append(f"unknown element(s) {', '.join(sorted(set(unknown)))}")
    msg = _basis_problem(level.basis, [el for el in elements if el in atomic_numbers])
    if msg:
        problems.append(msg)
    if level.method == "dft":
        from pyscf.dft import libxc

        try:
            libxc.parse_xc(level.xc)
        except Exception as exc:  # noqa: BLE001 - parse_xc raises KeyError and others
            problems.append(f"unknown xc functional {level.xc!r}: {_one_line(exc)}")
        else:
            if not str(level.xc).strip():
                problems.append("empty xc functional")
        if not 0 <= level.grid_level <= 9:
            problems.append(f"grid_level {level.grid_level} outside 0..9")
    if level.max_cycle < 0:
        problems.append(f"max_cycle {level.max_cycle} is negative")
    if not level.conv_tol > 0:
        problems.append(f"conv_tol {level.conv_tol} Hartree must be positive")
    if not level.min_distance >= 0:
        problems.append(f"min_distance {level.min_distance} A must be >= 0")
    return problems


def check_structure(atoms: Atoms, level: DFTLevel) -> str:
    """Return "" if ``atoms`` can be labeled at ``level``, else a one-line reason.

    Refuses: empty or periodic structures, NaN/inf coordinates, a pair closer than
    ``level.min_distance`` (Angstrom), elements the basis does not cover, and an electron count
    whose parity does not match ``level.spin`` (or that is too small for it).
    """
    n = len(atoms)
    if n == 0:
        return "empty structure"
    if np.any(atoms.pbc):
        return "periodic structure: PySCF labels here are molecular (set pbc=False)"
    pos = np.asarray(atoms.positions, dtype=float)
    if not np.all(np.isfinite(pos)):
        bad = np.flatnonzero(~np.all(np.isfinite(pos), axis=1))
        return f"non-finite coordinates for atom(s) {', '.join(map(str, bad[:10]))}"
    if n > 1:
        diff = pos[:, None, :] - pos[None, :, :]
        dist = np.sqrt(np.einsum("ijk,ijk->ij", diff, diff))
        dist[np.diag_indices(n)] = np.inf
        i, j = np.unravel_index(np.argmin(dist), dist.shape)
        i, j = sorted((int(i), int(j)))
        if dist[i, j] < level.min_distance:
            sym = atoms.get_chemical_symbols()
            return (
                f"atoms {i} ({sym[i]}) and {j} ({sym[j]}) are {dist[i, j]:.3f} A apart "
                f"(< min_distance {level.min_distance} A)"
            )
    msg = _basis_problem(level.basis, atoms.get_chemical_symbols())
    if msg:
        return msg
    n_elec = int(np.sum(atoms.numbers)) - level.charge
    if n_elec <= 0:
        return f"{n_elec} electrons with charge {level.charge}"
    if n_elec % 2 != abs(level.spin) % 2 or abs(level.spin) > n_elec:
        return (
            f"{n_elec} electrons (charge {level.charge}) inconsistent with spin "
            f"{level.spin} (2S = N_alpha - N_beta)"
        )
    return ""


def _build_mol(atoms: Atoms, level: DFTLevel) -> Any:
    from pyscf import gto

    symbols = atoms.get_chemical_symbols()
    coords = np.asarray(atoms.positions, dtype=float) / Bohr
    ecp = {el: e for el in set(symbols) if (e := _load_ecp(level.basis, el))}
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


def _build_mf(mol: Any, level: DFTLevel) -> Any:
    from pyscf import dft, scf

    restricted = level.spin == 0
    if level.method == "hf":
        mf = scf.RHF(mol) if restricted else scf.UHF(mol)
    elif level.method == "dft":
        mf = dft.RKS(mol) if restricted else dft.UKS(mol)
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


def label_atoms(atoms: Atoms, level: DFTLevel) -> LabelResult:
    """Energy (eV) and forces ((N, 3), eV/A) of one structure with PySCF.

    Never raises for a bad structure or a failed SCF: returns status "rejected" (refused by
    :func:`check_structure`) or "failed" (SCF not converged, or any PySCF exception, with its
    text). Restricted (RHF/RKS) when spin == 0, unrestricted (UHF/UKS) otherwise.
    Raises ValueError only for an unknown ``level.method`` (a bad config, not a bad structure).
    """
    if level.method not in _METHODS:
        raise ValueError(f"unknown method {level.method!r} (a config error, see check_level)")
    t0 = time.perf_counter()
    reason = check_structure(atoms, level)
    if reason:
        return LabelResult("rejected", None, None, reason, None, time.perf_counter() - t0)
    n_cycles: int | None = None
    try:
        mol = _build_mol(atoms, level)
        mf = _build_mf(mol, level)
        e_ha = float(mf.kernel())
        cycles = getattr(mf, "cycles", None)
        n_cycles = int(cycles) if cycles is not None else None
        if not mf.converged:
            return LabelResult(
                "failed",
                None,
                None,
                f"SCF not converged after {n_cycles if n_cycles is not None else level.max_cycle}"
                " cycles",
                n_cycles,
                time.perf_counter() - t0,
            )
        grad = mf.nuc_grad_method()
        grad.verbose = 0
        g_ha_bohr = np.asarray(grad.kernel(), dtype=float).reshape(len(atoms), 3)
    except Exception as exc:  # noqa: BLE001 - failures are data
        reason = _one_line(f"{type(exc).__name__}: {exc}")
        return LabelResult("failed", None, None, reason, n_cycles, time.perf_counter() - t0)
    energy = e_ha * Hartree
    forces = -g_ha_bohr * (Hartree / Bohr)
    if not (np.isfinite(energy) and np.all(np.isfinite(forces))):
        return LabelResult(
            "failed", None, None, "non-finite energy or forces", n_cycles, time.perf_counter() - t0
        )
    return LabelResult("ok", energy, forces, "", n_cycles, time.perf_counter() - t0)


def label_many(atoms_list: Sequence[Atoms] | Iterable[Atoms], level: DFTLevel) -> list[LabelResult]:
    """Label each structure in turn with :func:`label_atoms` (same units, same order)."""
    return [label_atoms(atoms, level) for atoms in atoms_list]
