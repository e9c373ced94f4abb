"""DFT levels and checks: what a label is computed at, and what may be labeled at all.

``DFTLevel`` names the electronic-structure level (method, functional, basis, density fitting,
grid, charge, spin, SCF limits, rescue ladder, time limit); ``check_level`` validates one for a
campaign's elements, ``check_structure`` refuses a structure before any SCF (close atoms,
elements the basis lacks, an electron count inconsistent with the spin, periodic cells).
``LabelResult`` is what labeling one structure returns. Units: eV, Angstrom; conv_tol Hartree.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from ase.data import atomic_numbers

if TYPE_CHECKING:
    from ase import Atoms

__all__ = ["METHODS", "DFTLevel", "LabelResult", "check_level", "check_structure", "load_ecp",
           "one_line", "timeout_problem"]

METHODS = ("dft", "hf")


@dataclass(frozen=True)
class DFTLevel:
    """Electronic-structure level used for labels.

    ``conv_tol`` is in Hartree, ``min_distance`` in Angstrom. ``spin`` is 2S = N_alpha - N_beta
    (PySCF convention). ``xc`` and ``grid_level`` are used only for ``method="dft"``.
    ``rescue``: walk :data:`RESCUE_LADDER` when the plain SCF does not converge (False: the plain
    SCF only). ``timeout_s``: wall-time limit of one label in seconds, enforced by running it in
    a child process (None: no limit, run in this process).
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
    rescue: bool = True
    timeout_s: float | None = None


@dataclass(frozen=True)
class LabelResult:
    """Outcome of labeling one structure.

    status: "ok", "failed" (SCF not converged or PySCF error), "rejected" (refused before DFT) or
    "timeout" (killed at ``DFTLevel.timeout_s``).
    energy: total energy in eV (None unless ok). forces: (N, 3) in eV/A (None unless ok).
    reason: one line; "" when ok, except that a label from the broken-symmetry rung says so
    here. n_cycles: SCF cycles of all attempts together, if known. wall_s: seconds spent.
    attempts: one line per SCF attempt of the rescue ladder, in order (for a timeout: those
    finished before the limit). child_cpu_s: CPU seconds of the sandboxed child that ran the
    SCF (with a time limit; 0 otherwise: the caller's own rusage has it).
    """

    status: str
    energy: float | None
    forces: np.ndarray | None
    reason: str
    n_cycles: int | None
    wall_s: float
    attempts: tuple[str, ...] = ()
    child_cpu_s: float = 0.0

    @property
    def ok(self) -> bool:
        """True when status is "ok"."""
        return self.status == "ok"


def one_line(text: str, limit: int = 300) -> str:
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


def load_ecp(basis: str, element: str) -> Any:
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
    conv_tol > 0 (Hartree), min_distance >= 0 (Angstrom) and timeout_s (None or > 0 seconds).
    """
    problems: list[str] = []
    if level.method not in METHODS:
        problems.append(f"unknown method {level.method!r} (expected one of {', '.join(METHODS)})")
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
            problems.append(f"unknown xc functional {level.xc!r}: {one_line(exc)}")
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
    if timeout_problem(level.timeout_s):
        problems.append(timeout_problem(level.timeout_s))
    return problems


def timeout_problem(timeout_s: float | None) -> str:
    if timeout_s is None:
        return ""
    try:
        ok = math.isfinite(float(timeout_s)) and float(timeout_s) > 0
    except (TypeError, ValueError):
        ok = False
    return "" if ok else f"timeout_s {timeout_s!r} must be None or a positive number of seconds"


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


