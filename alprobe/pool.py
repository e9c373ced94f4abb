"""Labeled pools for retrospective campaigns: frames with reference labels read from a file.

A pool campaign replaces MD and DFT: its candidates are the pool's unlabeled, non-test frames
and "labeling" one looks its reference label up (it still counts as one DFT label). Frames
keep their group (``group_key``, e.g. a trajectory id) so that no group straddles the test
set and the rest, and their position inside the group (for the per-walker spacing rule).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from .errors import AlprobeError
from .frames import REF_ENERGY, REF_FORCES, frame_id, is_file, read_labeled

__all__ = ["MAX_FORCE_EV_A", "Pool", "PoolError", "label_frame", "read_pool", "sample_trajectory"]

#: Largest reference force component a pool may hold (eV/A). Thermal MD of molecules stays
#: below ~10 eV/A; the repository's ethanol pool tops out at 24 eV/A (an H migrating from C to
#: O), and two atoms at dft.min_distance_A (0.5 A) see a few tens. 1000 eV/A is far beyond any
#: of them, while forces written in meV/A (1000 times too large) or kcal/mol/A of a broken
#: structure land beyond it.
MAX_FORCE_EV_A = 1000.0


class PoolError(AlprobeError):
    """A pool file cannot be used (the message names the file and the problem)."""


@dataclass
class Pool:
    """The labeled frames of a pool (and of its separate test file, if any).

    Every frame carries ``fid``, ``ref_energy`` (eV) and ``ref_forces`` (eV/A), ``group``
    (str) and ``walker`` / ``sample`` (group index, position in the group).
    """

    frames: list[Atoms]
    test: list[Atoms] | None = None
    #: frames at the largest value of pool.stress_key: never candidates, never test frames
    stress: list[Atoms] = field(default_factory=list)
    by_fid: dict[str, Atoms] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.by_fid = {a.info["fid"]: a
                       for a in [*self.frames, *(self.test or []), *self.stress]}

    @property
    def groups(self) -> list[str]:
        return [a.info["group"] for a in self.frames]

    def elements(self) -> list[str]:
        return sorted({s for a in [*self.frames, *(self.test or [])]
                       for s in a.get_chemical_symbols()})

    def label(self, fid: str) -> tuple[float, np.ndarray]:
        """The reference energy (eV) and forces (eV/A) of pool frame ``fid``."""
        a = self.by_fid[fid]
        return float(a.info[REF_ENERGY]), np.asarray(a.arrays[REF_FORCES])


def _prepare(frames: list[Atoms], path: Path, group_key: str | None, tag: str,
             keep: str | None = None) -> list[Atoms]:
    seen: dict[str, int] = {}
    groups: dict[str, int] = {}
    counts: dict[str, int] = {}
    out = []
    for i, a in enumerate(frames):
        if group_key is not None:
            if group_key not in a.info:
                raise PoolError(f"{path}: frame {i} has no info[{group_key!r}] (pool.group_key)")
            group = str(a.info[group_key])
        else:
            group = f"{tag}{i}"  # no groups: every frame its own
        fid = frame_id(a)
        if fid in seen:
            raise PoolError(f"{path}: frames {seen[fid]} and {i} are the same structure")
        seen[fid] = i
        forces = np.asarray(a.arrays[REF_FORCES], dtype=float)
        if forces.size and np.abs(forces).max() > MAX_FORCE_EV_A:
            k = int(np.abs(forces).max(axis=1).argmax())
            raise PoolError(f"{path}: frame {i}: reference force {np.abs(forces).max():.3g} "
                            f"eV/A on atom {k} exceeds {MAX_FORCE_EV_A:g} eV/A "
                            "(pool.MAX_FORCE_EV_A: no molecular structure comes close; are the "
                            "forces in meV/A or another unit?)")
        b = Atoms(numbers=a.numbers, positions=a.positions, cell=a.cell, pbc=a.pbc)
        b.info.update(fid=fid, ref_energy=float(a.info[REF_ENERGY]), group=group,
                      walker=groups.setdefault(group, len(groups)), sample=counts.get(group, 0))
        counts[group] = counts.get(group, 0) + 1
        if keep is not None and keep in a.info:
            b.info[keep] = a.info[keep]
        b.arrays[REF_FORCES] = np.asarray(a.arrays[REF_FORCES], dtype=float)
        out.append(b)
    return out


def read_pool(cfg: Any, source_dir: str | Path = ".") -> Pool:
    """Read the pool a ``PoolConfig`` names (paths relative to ``source_dir``).

    Raises PoolError with a one-line reason naming the file (and the frame where it applies):
    missing, empty or unreadable file, a frame without a label, a label that is not finite,
    of the wrong shape or beyond ``MAX_FORCE_EV_A``, missing group key, duplicate structures.
    """
    def resolve(p: str) -> Path:
        path = Path(p).expanduser()
        return path if path.is_absolute() else Path(source_dir) / path

    def read(p: str, tag: str) -> list[Atoms]:
        path = resolve(p)
        if not is_file(path):
            raise PoolError(f"pool file not found: {path}")
        try:
            raw = read_labeled(path, cfg.energy_key, cfg.forces_key, keep_info=True)
        except (ValueError, OSError) as exc:
            msg = " ".join(str(exc).split())
            raise PoolError(msg if str(path) in msg else f"{path}: {msg}") from None
        if not raw:
            raise PoolError(f"{path}: no frames")
        return _prepare(raw, path, cfg.group_key, tag, getattr(cfg, "stress_key", None))

    frames = read(cfg.file, "frame")
    stress: list[Atoms] = []
    if getattr(cfg, "stress_key", None):
        frames, stress = split_stress(frames, cfg.stress_key, resolve(cfg.file))
    test = read(cfg.test_file, "test") if cfg.test_file else None
    if test is not None:
        overlap = {a.info["fid"] for a in frames} & {a.info["fid"] for a in test}
        if overlap:
            raise PoolError(f"{resolve(cfg.test_file)}: {len(overlap)} test frame(s) are also "
                            "in the pool file")
    return Pool(frames, test, stress)


def split_stress(frames: list[Atoms], key: str, path: Path) -> tuple[list[Atoms], list[Atoms]]:
    """The frames below the largest value of info ``key`` and those at it (the stress set);
    PoolError when a frame lacks a finite number there or when every frame has that value."""
    values = []
    for i, a in enumerate(frames):
        v = a.info.get(key)
        if isinstance(v, bool) or not isinstance(v, (int, float, np.number)) \
                or not np.isfinite(v):
            raise PoolError(f"{path}: frame {i} has no finite number in info[{key!r}] "
                            "(pool.stress_key)")
        values.append(float(v))
    top = max(values)
    rest = [a for a, v in zip(frames, values) if v < top]
    stress = [a for a, v in zip(frames, values) if v == top]
    if not rest:
        raise PoolError(f"{path}: every frame has {key} = {top:g}: pool.stress_key leaves no "
                        "frame outside the stress set")
    for a in stress:
        a.info["stress_value"] = top
    return rest, stress


def sample_trajectory(molecule: str, temperature_K: float, md_level: Any, *, frames: int,
                      stride: int, equilibrate: int, timestep_fs: float, friction_per_fs: float,
                      traj_id: str, seed: Any,
                      torsion: tuple[int, int, int, int, float] | None = None) -> list[Atoms]:
    """Frames of one Langevin trajectory driven by PySCF at ``md_level`` (a DFTLevel, e.g.
    HF/STO-3G), centre of mass fixed: after ``equilibrate`` steps, one frame every ``stride``
    steps, each with info traj_id, temperature_K, step, time_fs (unlabeled). ``torsion``
    (i, j, k, l, degrees): start from the conformer with dihedral i-j-k-l set to that angle
    (atom l moved; e.g. ethanol's hydroxyl H: (0, 1, 2, 3, 60) is gauche, 180 trans), recorded
    as info conformer_deg."""
    from ase import units
    from ase.constraints import FixCom
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import Stationary, ZeroRotation

    try:
        from ase.md.velocitydistribution import thermalize_momenta
    except ImportError:  # ASE < 3.29: the same sampling under its older name
        from ase.md.velocitydistribution import MaxwellBoltzmannDistribution as _mb

        def thermalize_momenta(atoms: Atoms, temperature_K: float, rng: Any) -> None:
            _mb(atoms, temperature_K=temperature_K, rng=rng)

    from .frames import bare_copy, load_seeds
    from .dft import pyscf_calculator

    rng = np.random.default_rng(seed)
    atoms = bare_copy(load_seeds([molecule])[0])
    if torsion is not None:
        i, j, k, m, angle = torsion
        atoms.set_dihedral(int(i), int(j), int(k), int(m), float(angle))
    atoms.calc = pyscf_calculator(md_level)
    atoms.set_constraint(FixCom())
    thermalize_momenta(atoms, temperature_K, rng=rng)
    Stationary(atoms)
    ZeroRotation(atoms)
    dyn = Langevin(atoms, timestep_fs * units.fs, temperature_K=temperature_K,
                   friction=friction_per_fs / units.fs, fixcm=False, rng=rng)
    out = []
    for _ in dyn.irun(steps=equilibrate + frames * stride):
        step = dyn.nsteps
        if step > equilibrate and (step - equilibrate) % stride == 0:
            f = bare_copy(atoms)
            f.info.update(traj_id=traj_id, temperature_K=float(temperature_K), step=int(step),
                          time_fs=float(step * timestep_fs))
            if torsion is not None:
                f.info["conformer_deg"] = float(torsion[4])
            out.append(f)
    return out


def label_frame(frame: Atoms, level: Any) -> tuple[Atoms | None, str]:
    """``frame`` with its reference label at ``level`` (alprobe's labeler: checks, rescue
    ladder), or (None, reason) when the label failed."""
    from .frames import set_reference
    from .dft import label_atoms

    r = label_atoms(frame, level)
    if not r.ok:
        return None, f"{r.status}: {r.reason}"
    return set_reference(frame, r.energy, r.forces), ""
