"""PySCF adapter: one structure -> energy (eV) and forces (eV/A), failures as data.

This is the only module of alprobe that imports PySCF. Everything entering or leaving it is in
eV and Angstrom; Hartree and Bohr are used only inside. Coordinates are handed to PySCF in Bohr
converted with ``ase.units.Bohr`` so that energies and forces are consistent with ASE's
constants to machine precision.

Two safety nets (see :class:`DFTLevel`; the ladder is on by default, the limit off):

* an SCF rescue ladder (:data:`RESCUE_LADDER`): when the plain SCF does not converge, retry with
  damping + level shift, second-order SCF, other initial guesses and finally (spin 0 only) a
  broken-symmetry unrestricted SCF; every attempt is recorded in ``LabelResult.attempts``;
* a per-label wall-time limit (``timeout_s``): the calculation runs in a sandboxed child process
  (:mod:`alprobe.sandbox`) that is killed at the limit (status "timeout").
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
from ase.data import atomic_numbers
from ase.units import Bohr, Hartree

if TYPE_CHECKING:
    from ase import Atoms

__all__ = [
    "RESCUE_LADDER",
    "DFTLevel",
    "LabelResult",
    "Rung",
    "check_level",
    "check_structure",
    "SCFError",
    "label_atoms",
    "label_many",
    "pyscf_calculator",
]

_METHODS = ("dft", "hf")


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
    finished before the limit).
    """

    status: str
    energy: float | None
    forces: np.ndarray | None
    reason: str
    n_cycles: int | None
    wall_s: float
    attempts: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """True when status is "ok"."""
        return self.status == "ok"


@dataclass(frozen=True)
class Rung:
    """One SCF attempt of the rescue ladder.

    guess: initial guess, "minao" (PySCF's default), "atom", "huckel", or "last" (the density
    of the previous attempt; minao if there is none). solver: "diis" (PySCF's default SCF) or
    "newton" (second-order SCF, ``mf.newton()``; its cycles are macro iterations).
    cycle_factor: this attempt's max_cycle is ``ceil(cycle_factor * level.max_cycle)``.
    damp: Fock damping factor, applied in the cycles before DIIS starts at ``diis_start_cycle``
    (PySCF applies damping only there). level_shift: virtual-orbital shift in Hartree (removed
    before the final energy). broken_symmetry: spin-0 levels only (skipped otherwise): an
    unrestricted UHF/UKS whose guess rotates the alpha and beta HOMO/LUMO by +-45 degrees
    (PySCF ``init_guess_breaksym="mix"``), so that stretched bonds can break spin symmetry.
    """

    name: str
    guess: str = "minao"
    solver: str = "diis"
    cycle_factor: float = 1.0
    damp: float = 0.0
    diis_start_cycle: int = 1
    level_shift: float = 0.0
    broken_symmetry: bool = False


#: The SCF rescue ladder, tried top to bottom until one attempt converges. The first rung is
#: the plain SCF (the only one when ``DFTLevel.rescue`` is False).
RESCUE_LADDER: tuple[Rung, ...] = (
    Rung("diis"),
    Rung("damped", guess="last", cycle_factor=2, damp=0.5, diis_start_cycle=5, level_shift=0.25),
    Rung("newton", guess="last", solver="newton"),
    Rung("guess=atom", guess="atom", cycle_factor=2),
    Rung("guess=huckel", guess="huckel", cycle_factor=2),
    Rung("broken-symmetry", cycle_factor=2, broken_symmetry=True),
)


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
    conv_tol > 0 (Hartree), min_distance >= 0 (Angstrom) and timeout_s (None or > 0 seconds).
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
    if _timeout_problem(level.timeout_s):
        problems.append(_timeout_problem(level.timeout_s))
    return problems


def _timeout_problem(timeout_s: float | None) -> str:
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


def _build_mf(mol: Any, level: DFTLevel, unrestricted: bool | None = None) -> Any:
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


def _ladder(level: DFTLevel) -> tuple[Rung, ...]:
    """The rungs ``level`` walks: the first only without rescue; broken symmetry only at spin 0."""
    rungs = RESCUE_LADDER if level.rescue else RESCUE_LADDER[:1]
    return tuple(r for r in rungs if not (r.broken_symmetry and level.spin != 0))


@dataclass
class _Attempt:
    line: str
    mf: Any = None  # the converged SCF object, else None
    dm: Any = None  # last density (for the next rung's guess="last"), None after an error
    cycles: int | None = None
    error: str = ""  # "Type: message" of an exception, "" if none


def _run_rung(mol: Any, level: DFTLevel, rung: Rung, last_dm: Any) -> _Attempt:
    """One SCF attempt; never raises (an exception becomes the attempt's line)."""
    max_cycle = max(0, math.ceil(rung.cycle_factor * level.max_cycle))
    label = f"{rung.name} max_cycle={max_cycle}"
    t0 = time.perf_counter()
    macro = [0]
    try:
        if rung.broken_symmetry:
            mf = _build_mf(mol, level, unrestricted=True)
            mf.init_guess_breaksym = "mix"
        else:
            mf = _build_mf(mol, level)
        mf.max_cycle = max_cycle
        dm0 = None
        if rung.guess == "last":
            dm0 = last_dm
            if dm0 is None:
                label += " (no previous density, minao guess)"
        elif rung.guess != "minao":
            mf.init_guess = rung.guess
        mf.damp = rung.damp
        mf.diis_start_cycle = rung.diis_start_cycle
        mf.level_shift = rung.level_shift
        if rung.solver == "newton":
            mf = mf.newton()
            mf.verbose = 0

            def count(env: dict[str, Any]) -> None:  # newton does not set mf.cycles
                macro[0] = max(macro[0], int(env.get("imacro", -1)) + 1)

            mf.callback = count
        elif rung.solver != "diis":
            raise ValueError(f"unknown solver {rung.solver!r}")
        e_ha = float(mf.kernel(dm0=dm0))
    except Exception as exc:  # noqa: BLE001 - failures are data
        error = _one_line(f"{type(exc).__name__}: {exc}")
        took = f"{time.perf_counter() - t0:.2f} s"
        return _Attempt(f"{label}: {_one_line(error, 200)} ({took})", error=error)
    if rung.solver == "newton":
        cycles: int | None = macro[0]
    else:
        c = getattr(mf, "cycles", None)
        cycles = int(c) if c is not None else None
    try:
        dm = mf.make_rdm1()
    except Exception:  # noqa: BLE001 - only the next rung's guess needs it
        dm = None
    took = f"{time.perf_counter() - t0:.2f} s"
    if not mf.converged:
        return _Attempt(f"{label}: not converged after {cycles} cycles (E={e_ha:.8f} Ha, {took})",
                        None, dm, cycles)
    extra = ""
    if rung.broken_symmetry:
        try:
            extra = f", <S^2>={float(mf.spin_square()[0]):.3f}"
        except Exception:  # noqa: BLE001 - informative only
            extra = ""
    return _Attempt(
        f"{label}: converged in {cycles} cycles (E={e_ha:.8f} Ha{extra}, {took})", mf, dm, cycles
    )


def _gradient(mf: Any, n_atoms: int) -> np.ndarray:
    """Nuclear gradient (Hartree/Bohr, (N, 3)) of the converged SCF object ``mf``.

    A second-order (``mf.newton()``) object is unwrapped first (``undo_soscf`` keeps the
    converged orbitals), so the gradient is that of the ordinary RHF/RKS/UHF/UKS object.
    """
    from pyscf.soscf.newton_ah import _CIAH_SOSCF

    base = mf.undo_soscf() if isinstance(mf, _CIAH_SOSCF) else mf
    grad = base.nuc_grad_method()
    grad.verbose = 0
    return np.asarray(grad.kernel(), dtype=float).reshape(n_atoms, 3)


def _label_in_process(
    atoms: Atoms, level: DFTLevel, t0: float, on_attempt: Callable[[str], None] | None = None
) -> LabelResult:
    """The SCF ladder and gradient in this process (structure already checked)."""
    attempts: list[str] = []
    total_cycles: int | None = None

    def fail(reason: str) -> LabelResult:
        return LabelResult("failed", None, None, _one_line(reason), total_cycles,
                           time.perf_counter() - t0, tuple(attempts))

    try:
        mol = _build_mol(atoms, level)
    except Exception as exc:  # noqa: BLE001 - failures are data
        return fail(f"{type(exc).__name__}: {exc}")
    rungs = _ladder(level)
    last_dm = None
    done: _Attempt | None = None
    rung = rungs[0]
    for rung in rungs:
        att = _run_rung(mol, level, rung, last_dm)
        attempts.append(att.line)
        if on_attempt is not None:
            on_attempt(att.line)
        if att.cycles is not None:
            total_cycles = (total_cycles or 0) + att.cycles
        if att.mf is not None:
            done = att
            break
        if att.dm is not None:
            last_dm = att.dm
    if done is None:
        if len(rungs) == 1:  # the plain SCF alone: the reason as before the ladder existed
            if att.error:
                return fail(att.error)
            n = att.cycles if att.cycles is not None else level.max_cycle
            return fail(f"SCF not converged after {n} cycles")
        return fail(f"no converged SCF after {len(rungs)} attempts (last: {attempts[-1]})")
    try:
        e_ha = float(done.mf.e_tot)
        g_ha_bohr = _gradient(done.mf, len(atoms))
    except Exception as exc:  # noqa: BLE001 - failures are data
        return fail(f"gradient after SCF rung {rung.name!r} failed: {type(exc).__name__}: {exc}")
    energy = e_ha * Hartree
    forces = -g_ha_bohr * (Hartree / Bohr)
    if not (np.isfinite(energy) and np.all(np.isfinite(forces))):
        return fail("non-finite energy or forces")
    reason = ""
    if rung.broken_symmetry:
        kind = "UHF" if level.method == "hf" else "UKS"
        reason = _one_line(
            f"label from broken-symmetry {kind} after {len(attempts) - 1} failed restricted "
            f"SCF attempts: {done.line}"
        )
    return LabelResult("ok", energy, forces, reason, total_cycles, time.perf_counter() - t0,
                       tuple(attempts))


# ---------------------------------------------------------------- wall-time limit (child process)
#
# With a time limit the ladder runs in a sandboxed child (alprobe.sandbox.call: forked from a
# warm, single-threaded fork server, never from the worker itself). The child emits one message
# per SCF attempt, so a label killed at the limit still reports the attempts it finished, and
# dies with its parent (PR_SET_PDEATHSIG), so a killed worker leaves no orphan computing on.


def _label_child(emit: Callable[[str], None], work: Callable[..., LabelResult], atoms: Atoms,
                 level: DFTLevel, threads: int, tmpdir: str) -> LabelResult:
    """In the sandbox child: ``work`` (normally :func:`_label_in_process`) with the caller's
    OpenMP thread count; PySCF scratch files go to ``tmpdir``, which the caller removes."""
    from pyscf import lib
    from pyscf.lib import param

    param.TMPDIR = tempfile.tempdir = os.environ["TMPDIR"] = tmpdir
    lib.num_threads(threads)
    return work(atoms, level, time.perf_counter(), emit)


def _label_with_timeout(atoms: Atoms, level: DFTLevel, t0: float) -> LabelResult:
    """Label in a sandboxed child; kill it at ``level.timeout_s`` seconds after ``t0``."""
    from ase import Atoms as _Atoms
    from pyscf import lib

    from .sandbox import call

    timeout = float(level.timeout_s)  # type: ignore[arg-type]
    plain = _Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell,
                   pbc=atoms.pbc)  # no calculator or info to pickle
    tmpdir = tempfile.mkdtemp(prefix="alprobe-label-")
    try:
        out = call(_label_child, _label_in_process, plain, level, lib.num_threads(), tmpdir,
                   timeout_s=max(0.0, t0 + timeout - time.perf_counter()))
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    wall = time.perf_counter() - t0
    attempts = tuple(out.messages)
    if out.status == "ok":
        return replace(out.value, wall_s=wall)
    if out.status == "timeout":
        return LabelResult("timeout", None, None, f"wall time limit {timeout} s exceeded", None,
                           wall, attempts)
    why = (f"label process ended ({out.detail}) without a result" if out.status == "died"
           else f"label process error: {out.detail}")
    return LabelResult("failed", None, None, _one_line(why), None, wall, attempts)


def label_atoms(atoms: Atoms, level: DFTLevel) -> LabelResult:
    """Energy (eV) and forces ((N, 3), eV/A) of one structure with PySCF.

    Never raises for a bad structure or a failed SCF: returns status "rejected" (refused by
    :func:`check_structure`), "failed" (no SCF attempt converged, or any PySCF exception, with
    its text) or "timeout" (``level.timeout_s`` exceeded; the child process is killed).
    Restricted (RHF/RKS) when spin == 0, unrestricted (UHF/UKS) otherwise; with
    ``level.rescue`` an unconverged SCF walks :data:`RESCUE_LADDER`, whose last rung may give a
    broken-symmetry UHF/UKS label at spin 0 (then ``reason`` says so). The forces are always
    those of the SCF object that converged.
    Raises ValueError only for a bad config: unknown ``level.method`` or bad ``timeout_s``.
    """
    if level.method not in _METHODS:
        raise ValueError(f"unknown method {level.method!r} (a config error, see check_level)")
    problem = _timeout_problem(level.timeout_s)
    if problem:
        raise ValueError(f"{problem} (a config error, see check_level)")
    t0 = time.perf_counter()
    reason = check_structure(atoms, level)
    if reason:
        return LabelResult("rejected", None, None, reason, None, time.perf_counter() - t0)
    if level.timeout_s is None:
        return _label_in_process(atoms, level, t0)
    return _label_with_timeout(atoms, level, t0)


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
                mol = _build_mol(self.atoms, level)
                grad = _build_mf(mol, level).nuc_grad_method()
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


def label_many(atoms_list: Sequence[Atoms] | Iterable[Atoms], level: DFTLevel) -> list[LabelResult]:
    """Label each structure in turn with :func:`label_atoms` (same units, same order)."""
    return [label_atoms(atoms, level) for atoms in atoms_list]
