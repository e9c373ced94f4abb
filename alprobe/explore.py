"""MD walkers: ASE Langevin dynamics on the backbone, with trust monitoring and early stop.

A walker samples a frame every ``stride`` steps, asks ``score`` for P(reliable), and stops
early (saying why) when trust stays below a floor for ``patience`` consecutive samples, or when
the geometry turns unphysical (atoms too close, a fragment flying off, and with ``keep_bonds`` a
bond broken or formed). The unphysical frame and anything after a stop are never returned.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from ase import Atoms, units
from ase.constraints import FixCom
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary, ZeroRotation

from .frames import (bare_copy, bond_change, bonded, distances, frame_id, n_fragments,
                     set_embedding, set_prediction)

__all__ = ["WalkerResult", "WalkerSettings", "geometry_problem", "run_walker"]


@dataclass(frozen=True)
class WalkerSettings:
    """One walker's MD protocol (units in the names)."""

    temperature_K: float
    timestep_fs: float
    steps: int
    stride: int
    friction_per_fs: float
    trust_floor: float
    patience: int
    min_distance_A: float
    fragment_distance_A: float
    #: a bond of the start structure breaking, or a new one forming, is unphysical
    #: (thresholds: alprobe.frames.BROKEN / FORMED); off for reactive chemistry
    keep_bonds: bool = False
    #: keep the backbone's per-atom embeddings of each sampled frame (select.diversity)
    embeddings: bool = False


@dataclass
class WalkerResult:
    """Sampled frames (with pred_energy/pred_forces, trust, walker, sample, step) and why it stopped."""

    frames: list[Atoms] = field(default_factory=list)
    stop_reason: str = "completed"
    steps_done: int = 0
    md_s: float = 0.0
    score_s: float = 0.0
    #: where the walker ended (positions A, momenta amu A/fs in ASE units), to continue it;
    #: None after a stop (it restarts from a seed structure)
    end: tuple[np.ndarray, np.ndarray] | None = None


def geometry_problem(atoms: Atoms, min_distance_A: float, fragment_distance_A: float,
                     n_fragments_start: int, bonded_start: np.ndarray | None = None) -> str:
    """'' if the geometry is physical, else a one-line reason. ``bonded_start`` (N, N) bool,
    from ``alprobe.frames.bonded`` at the start: a bond broken or formed since is a problem
    too."""
    pos = atoms.positions
    if not np.all(np.isfinite(pos)):
        return "non-finite coordinates"
    if len(atoms) > 1:
        d = distances(atoms)
        iu = np.triu_indices(len(atoms), 1)
        k = int(np.argmin(d[iu]))
        if d[iu][k] < min_distance_A:
            i, j = iu[0][k], iu[1][k]
            return f"atoms {i} and {j} are {d[iu][k]:.2f} A apart (< {min_distance_A} A)"
    nf = n_fragments(atoms, fragment_distance_A)
    if nf > n_fragments_start:
        return f"a fragment flew off ({nf} groups farther than {fragment_distance_A} A apart)"
    if bonded_start is not None:
        return bond_change(atoms, bonded_start)
    return ""


def run_walker(
    atoms: Atoms,
    calc: object,
    score: Callable[[Atoms], float] | None,
    settings: WalkerSettings,
    *,
    rng: np.random.Generator,
    walker: int = 0,
    momenta: np.ndarray | None = None,
    first_sample: int = 0,
) -> WalkerResult:
    """Run one Langevin walker from ``atoms`` (not modified) with ASE calculator ``calc``.

    ``score(atoms)`` is called on each sampled frame after its forces were computed (the
    calculator's results are current) and returns P(reliable) in [0, 1]; None means no probe
    yet (trust recorded as NaN, never stops the walker). The MD keeps the centre of mass fixed
    (``FixCom``); the stored ``pred_energy`` / ``pred_forces`` are the calculator's raw
    outputs at each sampled geometry, never the constraint-adjusted forces.

    ``momenta`` (N, 3), ASE units: continue a trajectory (a streaming segment) instead of
    drawing Maxwell-Boltzmann velocities; samples are then numbered from ``first_sample``.
    """
    s = settings
    a = bare_copy(atoms)
    a.calc = calc
    a.set_constraint(FixCom())  # no centre-of-mass drift (ASE's recommended form)
    if momenta is None:
        MaxwellBoltzmannDistribution(a, temperature_K=s.temperature_K, rng=rng)
        Stationary(a)
        ZeroRotation(a)
    else:
        a.set_momenta(np.asarray(momenta, dtype=float), apply_constraint=False)
    dyn = Langevin(a, s.timestep_fs * units.fs, temperature_K=s.temperature_K,
                   friction=s.friction_per_fs / units.fs, fixcm=False, rng=rng)
    res = WalkerResult()
    n_frag0 = n_fragments(a, s.fragment_distance_A)
    bonds0 = bonded(a) if s.keep_bonds else None
    low = 0
    t0 = time.perf_counter()
    try:
        for _ in dyn.irun(steps=s.steps):
            step = dyn.nsteps
            if step == 0 or step % s.stride:
                continue
            problem = geometry_problem(a, s.min_distance_A, s.fragment_distance_A, n_frag0,
                                       bonds0)
            if problem:
                res.stop_reason = f"unphysical at step {step}: {problem}"
                break
            frame = bare_copy(a)
            # The model's own outputs of this step's forward pass: FixCom's adjusted forces
            # (what a.get_forces() returns) are for the integrator, not predictions.
            set_prediction(frame, a.get_potential_energy(apply_constraint=False),
                           a.get_forces(apply_constraint=False))
            feats = getattr(a.calc, "results", {}).get("node_features")
            if s.embeddings and feats is not None:
                set_embedding(frame, feats)
            ts = time.perf_counter()
            trust = float(score(a)) if score is not None else float("nan")
            res.score_s += time.perf_counter() - ts
            frame.info["fid"] = frame_id(frame)  # on the worker: the driver has enough to do
            frame.info.update(walker=walker, sample=first_sample + len(res.frames), step=step,
                              time_fs=step * s.timestep_fs, temperature_K=s.temperature_K,
                              trust=trust)
            res.frames.append(frame)
            low = low + 1 if trust < s.trust_floor else 0
            if low >= s.patience:
                res.stop_reason = (f"low trust at step {step}: P(reliable) < {s.trust_floor} "
                                   f"for {low} consecutive samples")
                break
    except Exception as exc:  # noqa: BLE001 - a blown-up MD is data, not a crash
        res.stop_reason = f"MD error at step {dyn.nsteps}: {type(exc).__name__}: {exc}"
    res.steps_done = int(dyn.nsteps)
    res.md_s = time.perf_counter() - t0 - res.score_s
    if res.stop_reason == "completed":
        res.end = (a.positions.copy(), a.get_momenta().copy())
    return res
