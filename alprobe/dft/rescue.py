"""The SCF rescue ladder: when the plain SCF does not converge, try again differently.

Rungs are tried top to bottom until one converges: damping + level shift from the last
density, second-order SCF, other initial guesses, and (spin 0 only) a broken-symmetry
unrestricted SCF. Every attempt becomes one line of ``LabelResult.attempts``; the forces are
always those of the SCF object that converged. Failures are data: nothing here raises for a
structure that does not converge.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from . import scf
from .level import DFTLevel, LabelResult, one_line

if TYPE_CHECKING:
    from ase import Atoms

__all__ = ["RESCUE_LADDER", "Rung", "ladder", "run_ladder", "run_rung"]


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


def ladder(level: DFTLevel) -> tuple[Rung, ...]:
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


def run_rung(mol: Any, level: DFTLevel, rung: Rung, last_dm: Any) -> _Attempt:
    """One SCF attempt; never raises (an exception becomes the attempt's line)."""
    max_cycle = max(0, math.ceil(rung.cycle_factor * level.max_cycle))
    label = f"{rung.name} max_cycle={max_cycle}"
    t0 = time.perf_counter()
    macro = [0]
    try:
        if rung.broken_symmetry:
            mf = scf.build_mf(mol, level, unrestricted=True)
            mf.init_guess_breaksym = "mix"
        else:
            mf = scf.build_mf(mol, level)
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
        error = one_line(f"{type(exc).__name__}: {exc}")
        took = f"{time.perf_counter() - t0:.2f} s"
        return _Attempt(f"{label}: {one_line(error, 200)} ({took})", error=error)
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


def run_ladder(
    atoms: Atoms, level: DFTLevel, t0: float, on_attempt: Callable[[str], None] | None = None
) -> LabelResult:
    """The SCF ladder and gradient in this process (structure already checked)."""
    attempts: list[str] = []
    total_cycles: int | None = None

    def fail(reason: str) -> LabelResult:
        return LabelResult("failed", None, None, one_line(reason), total_cycles,
                           time.perf_counter() - t0, tuple(attempts))

    try:
        mol = scf.build_mol(atoms, level)
    except Exception as exc:  # noqa: BLE001 - failures are data
        return fail(f"{type(exc).__name__}: {exc}")
    rungs = ladder(level)
    last_dm = None
    done: _Attempt | None = None
    rung = rungs[0]
    for rung in rungs:
        att = run_rung(mol, level, rung, last_dm)
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
        energy, forces = scf.energy_and_forces(done.mf, len(atoms))
    except Exception as exc:  # noqa: BLE001 - failures are data
        return fail(f"gradient after SCF rung {rung.name!r} failed: {type(exc).__name__}: {exc}")
    if not (np.isfinite(energy) and np.all(np.isfinite(forces))):
        return fail("non-finite energy or forces")
    reason = ""
    if rung.broken_symmetry:
        kind = "UHF" if level.method == "hf" else "UKS"
        reason = one_line(
            f"label from broken-symmetry {kind} after {len(attempts) - 1} failed restricted "
            f"SCF attempts: {done.line}"
        )
    return LabelResult("ok", energy, forces, reason, total_cycles, time.perf_counter() - t0,
                       tuple(attempts))


