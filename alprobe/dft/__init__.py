"""DFT labels with PySCF: one structure -> energy (eV) and forces (eV/A), failures as data.

This package is the only part of alprobe that imports PySCF (``level``: levels and checks;
``scf``: SCF objects, gradients, unit conversion; ``rescue``: the rescue ladder). Everything entering or leaving it is in
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

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from . import rescue
from .level import (METHODS, DFTLevel, LabelResult, check_level, check_structure, one_line,
                    timeout_problem)
from .rescue import RESCUE_LADDER, Rung
from .scf import SCFError, pyscf_calculator

if TYPE_CHECKING:
    from ase import Atoms

__all__ = ["RESCUE_LADDER", "DFTLevel", "LabelResult", "Rung", "SCFError", "check_level",
           "check_structure", "label", "label_atoms", "label_many", "pyscf_calculator"]


# ---------------------------------------------------------------- wall-time limit (child process)
#
# With a time limit the ladder runs in a sandboxed child (alprobe.sandbox.call: forked from a
# warm, single-threaded fork server, never from the worker itself). The child emits one message
# per SCF attempt, so a label killed at the limit still reports the attempts it finished, and
# dies with its parent (PR_SET_PDEATHSIG), so a killed worker leaves no orphan computing on.


def _label_child(emit: Callable[[str], None], work: Callable[..., LabelResult], atoms: Atoms,
                 level: DFTLevel, threads: int, tmpdir: str) -> LabelResult:
    """In the sandbox child: ``work`` (normally :func:`rescue.run_ladder`) with the caller's
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

    from ..sandbox import call

    timeout = float(level.timeout_s)  # type: ignore[arg-type]
    plain = _Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell,
                   pbc=atoms.pbc)  # no calculator or info to pickle
    tmpdir = tempfile.mkdtemp(prefix="alprobe-label-")
    try:
        out = call(_label_child, rescue.run_ladder, plain, level, lib.num_threads(), tmpdir,
                   timeout_s=max(0.0, t0 + timeout - time.perf_counter()))
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    wall = time.perf_counter() - t0
    attempts = tuple(out.messages)
    if out.status == "ok":
        return replace(out.value, wall_s=wall, child_cpu_s=out.cpu_s)
    if out.status == "timeout":
        return LabelResult("timeout", None, None, f"wall time limit {timeout} s exceeded", None,
                           wall, attempts)
    why = (f"label process ended ({out.detail}) without a result" if out.status == "died"
           else f"label process error: {out.detail}")
    return LabelResult("failed", None, None, one_line(why), None, wall, attempts)


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
    if level.method not in METHODS:
        raise ValueError(f"unknown method {level.method!r} (a config error, see check_level)")
    problem = timeout_problem(level.timeout_s)
    if problem:
        raise ValueError(f"{problem} (a config error, see check_level)")
    t0 = time.perf_counter()
    reason = check_structure(atoms, level)
    if reason:
        return LabelResult("rejected", None, None, reason, None, time.perf_counter() - t0)
    if level.timeout_s is None:
        return rescue.run_ladder(atoms, level, t0)
    return _label_with_timeout(atoms, level, t0)


def label_many(atoms_list: Sequence[Atoms] | Iterable[Atoms], level: DFTLevel) -> list[LabelResult]:
    """Label each structure in turn with :func:`label_atoms` (same units, same order)."""
    return [label_atoms(atoms, level) for atoms in atoms_list]


#: ``label(atoms, level) -> LabelResult``: the facade of this package.
label = label_atoms
