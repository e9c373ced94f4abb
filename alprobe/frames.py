"""Conventions for ``ase.Atoms`` between stages.

Reference labels live in ``atoms.info["ref_energy"]`` (eV) and ``atoms.arrays["ref_forces"]``
(eV/A); backbone predictions in ``pred_energy`` / ``pred_forces``. Labels are never kept only
in ``atoms.calc``. Every frame has a content-hash id (``frame_id``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from ase import Atoms

REF_ENERGY = "ref_energy"
REF_FORCES = "ref_forces"
PRED_ENERGY = "pred_energy"
PRED_FORCES = "pred_forces"
#: the backbone's last-layer invariant per-atom embeddings (N, F) from the same forward pass
#: as pred_forces (kept only when select.diversity needs them)
EMBEDDING = "embedding"

#: Friendly names for a few common molecules (anything else goes to ase.build.molecule as is).
ALIASES = {
    "water": "H2O",
    "methane": "CH4",
    "ethanol": "CH3CH2OH",
    "methanol": "CH3OH",
    "ammonia": "NH3",
    "benzene": "C6H6",
    "acetaldehyde": "CH3CHO",
    "formaldehyde": "H2CO",
    "ethylene": "C2H4",
}


def frame_id(atoms: Atoms) -> str:
    """Content hash ("f" + 16 hex chars) of numbers, positions (rounded to 1e-6 A), cell and pbc."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(atoms.numbers, dtype=np.int64).tobytes())
    h.update((np.round(np.asarray(atoms.positions, dtype=np.float64), 6) + 0.0).tobytes())  # -0 -> 0
    h.update((np.round(np.asarray(atoms.cell[:], dtype=np.float64), 6) + 0.0).tobytes())
    h.update(np.asarray(atoms.pbc, dtype=bool).tobytes())
    return "f" + h.hexdigest()[:16]


def set_reference(atoms: Atoms, energy: float, forces: np.ndarray) -> Atoms:
    """Store a reference label (eV, eV/A (N, 3)) on ``atoms`` in place; return it."""
    atoms.info[REF_ENERGY] = float(energy)
    atoms.arrays[REF_FORCES] = np.asarray(forces, dtype=np.float64).reshape(len(atoms), 3)
    return atoms


def set_prediction(atoms: Atoms, energy: float, forces: np.ndarray) -> Atoms:
    """Store a backbone prediction (eV, eV/A (N, 3)) on ``atoms`` in place; return it."""
    atoms.info[PRED_ENERGY] = float(energy)
    atoms.arrays[PRED_FORCES] = np.asarray(forces, dtype=np.float64).reshape(len(atoms), 3)
    return atoms


def set_embedding(atoms: Atoms, features: np.ndarray) -> Atoms:
    """Store the backbone's per-atom invariant embeddings (N, F) on ``atoms`` in place."""
    atoms.arrays[EMBEDDING] = np.asarray(features, dtype=np.float32).reshape(len(atoms), -1)
    return atoms


def pooled_embeddings(frames: Sequence[Atoms]) -> np.ndarray | None:
    """(n, F) mean over atoms of each frame's stored embedding; None when a frame has none."""
    if not frames or any(EMBEDDING not in a.arrays for a in frames):
        return None
    return np.stack([np.asarray(a.arrays[EMBEDDING], dtype=float).mean(axis=0) for a in frames])


def has_reference(atoms: Atoms) -> bool:
    return REF_ENERGY in atoms.info and REF_FORCES in atoms.arrays


def bare_copy(atoms: Atoms) -> Atoms:
    """Numbers, positions, cell and pbc only (no calculator, info or extra arrays)."""
    return Atoms(numbers=atoms.numbers.copy(), positions=atoms.positions.copy(),
                 cell=atoms.cell.copy(), pbc=atoms.pbc.copy())


def bare_with_ref(a: Atoms) -> Atoms:
    """Positions plus reference label and id only (what a worker needs)."""
    b = bare_copy(a)
    for k in ("fid", "ref_energy"):
        if k in a.info:
            b.info[k] = a.info[k]
    if "ref_forces" in a.arrays:
        b.arrays["ref_forces"] = a.arrays["ref_forces"]
    return b


def _cut(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def is_file(path: str | Path) -> bool:
    """``Path(path).is_file()``, False (not an error) for a name no file can have: too long,
    a NUL byte, a component that is not a folder."""
    try:
        return Path(path).is_file()
    except (OSError, ValueError):
        return False


def load_seeds(specs: Sequence[str], base_dir: str | Path = ".") -> list[Atoms]:
    """Seed structures from molecule names (ase.build.molecule, ALIASES) or xyz/extxyz files.

    Raises ValueError naming the spec that could not be read.
    """
    from ase.build import molecule
    from ase.collections import g2
    from ase.io import read

    if isinstance(specs, (str, Path)):
        specs = [str(specs)]
    seeds: list[Atoms] = []
    for spec in specs:
        name = ALIASES.get(spec.lower(), spec)
        path = Path(spec).expanduser()
        if not path.is_absolute():
            path = Path(base_dir) / path
        try:
            exists = path.exists()
        except (OSError, ValueError):  # a name no file can have (too long, NUL byte)
            exists = False
        if path.suffix.lower() in {".xyz", ".extxyz"} or exists:
            if not is_file(path):
                raise ValueError(f"seed file not found: {_cut(str(path))}")
            try:
                read_frames = read(path, index=":")
            except Exception as exc:  # noqa: BLE001 - ase raises many kinds
                why = " ".join(str(exc).split())
                raise ValueError(f"cannot read seed file {_cut(str(path))}: {_cut(why)}") from None
            seeds.extend(bare_copy(a) for a in read_frames)
        elif name in g2.names:
            seeds.append(bare_copy(molecule(name)))
        else:
            raise ValueError(
                f"unknown seed {_cut(repr(spec), 80)}: not a file and not a molecule name known to "
                "ase.build.molecule (e.g. 'CH3CH2OH', 'H2O') or an alias "
                f"({', '.join(sorted(ALIASES))})"
            )
    for a in seeds:
        if not np.all(np.isfinite(a.positions)):
            raise ValueError("a seed structure has non-finite coordinates")
    return seeds


def distances(atoms: Atoms) -> np.ndarray:
    """All pair distances (N, N) in A (minimum image if periodic)."""
    return atoms.get_all_distances(mic=bool(atoms.pbc.any()))


def min_distance(atoms: Atoms) -> float:
    """Shortest interatomic distance (A); inf for a single atom."""
    if len(atoms) < 2:
        return float("inf")
    d = distances(atoms)
    return float(d[np.triu_indices(len(atoms), 1)].min())


#: Bond thresholds as multiples of the sum of two atoms' covalent radii (ase.data):
#: bonded at a walker's start below BONDED; a start bond is broken beyond BROKEN; two atoms
#: not bonded at the start have formed a bond below FORMED. Measured on 480 PBE-labeled
#: ethanol test frames at 300-600 K: bonds reach 1.17, non-bonded pairs come no closer than
#: 1.58, while an H migrating from C to O reached 0.82 (reference forces 24 eV/A).
BONDED, BROKEN, FORMED = 1.25, 1.5, 1.1


def covalent_ratios(atoms: Atoms, d: np.ndarray | None = None) -> np.ndarray:
    """Pair distances (``d``, (N, N) A, computed when not given) over the sum of the two
    atoms' covalent radii, (N, N), diagonal inf."""
    from ase.data import covalent_radii

    r = covalent_radii[atoms.numbers]
    ratio = (distances(atoms) if d is None else d) / (r[:, None] + r[None, :])
    np.fill_diagonal(ratio, np.inf)
    return ratio


def bonded(atoms: Atoms) -> np.ndarray:
    """(N, N) bool: pairs closer than ``BONDED`` times their covalent radii's sum."""
    return covalent_ratios(atoms) < BONDED


def bond_change(atoms: Atoms, bonded_start: np.ndarray) -> str:
    """'' if ``atoms`` keeps the bonds ``bonded_start`` (from ``bonded``), else a one-line
    reason naming the first pair of each kind: a start bond stretched beyond ``BROKEN`` or a
    new pair closer than ``FORMED`` times the covalent radii's sum (hysteresis, so thermal
    motion never counts)."""
    d = distances(atoms)
    ratio = covalent_ratios(atoms, d)
    sym = atoms.get_chemical_symbols()
    said = []
    for kind, pairs, limit in (("broke", bonded_start & (ratio > BROKEN), f"> {BROKEN}"),
                               ("formed", ~bonded_start & (ratio < FORMED), f"< {FORMED}")):
        found = np.argwhere(np.triu(pairs))
        if len(found):
            i, j = found[0]
            said.append(f"bond {sym[i]}{i}-{sym[j]}{j} {kind} ({d[i, j]:.2f} A, {limit} x "
                        "the covalent radii)")
    return "; ".join(said)


def n_fragments(atoms: Atoms, bond_distance: float) -> int:
    """Connected groups when atoms closer than ``bond_distance`` (A) are linked."""
    from scipy.sparse.csgraph import connected_components

    if len(atoms) < 2:
        return len(atoms)
    adjacency = distances(atoms) < bond_distance
    return int(connected_components(adjacency, directed=False)[0])


def write_extxyz(path: str | Path, frames: Iterable[Atoms]) -> None:
    """Write frames to extxyz atomically (temporary file, then os.replace)."""
    from ase.io import write

    from .files import atomic_path

    with atomic_path(path) as tmp:
        write(tmp, list(frames), format="extxyz")


def structure_errors(atoms: Atoms, kind: str) -> float:
    """Error of the prediction against the reference for one frame.

    kind: "energy" (|dE|, eV), "energy_per_atom" (eV/atom), "force_rmse" (eV/A, over all
    components), "force_max" (largest atomic force-vector error, eV/A).
    """
    de = abs(atoms.info[PRED_ENERGY] - atoms.info[REF_ENERGY])
    if kind == "energy":
        return float(de)
    if kind == "energy_per_atom":
        return float(de / len(atoms))
    df = np.asarray(atoms.arrays[PRED_FORCES]) - np.asarray(atoms.arrays[REF_FORCES])
    if kind == "force_rmse":
        return float(np.sqrt(np.mean(df**2)))
    if kind == "force_max":
        return float(np.linalg.norm(df, axis=1).max())
    raise ValueError(f"unknown error kind {kind!r}")


def prediction_errors(frames: Sequence[Atoms], energies: Sequence[float],
                      forces: Sequence[np.ndarray], kind: str
                      ) -> tuple[list[float], list[np.ndarray]]:
    """Errors of raw predictions (energy eV, forces (n_atoms, 3) eV/A per frame) against the
    frames' references: the structure error of ``kind`` (see structure_errors) per frame, and
    each atom's force-vector error norm (eV/A, shape (n_atoms,)) per frame."""
    errors, atom_errors = [], []
    for a, e, f in zip(frames, energies, forces):
        b = a.copy()
        set_prediction(b, e, f)
        errors.append(structure_errors(b, kind))
        atom_errors.append(np.linalg.norm(np.asarray(f) - a.arrays[REF_FORCES], axis=1))
    return errors, atom_errors


def read_labeled(path: str | Path, energy_key: str = "ref_energy", forces_key: str = "ref_forces",
                 keep_info: bool = False) -> list[Atoms]:
    """Labeled frames from an extxyz file: reference energy (eV) in info[energy_key] and forces
    (eV/A) in arrays[forces_key], or else the file's own energy/forces (a calculator block).

    Returns bare frames with ``ref_energy`` / ``ref_forces`` (and, with ``keep_info``, the
    file's other scalar info entries). Raises ValueError (one line naming the file, and the
    frame index where it applies) for an empty or unreadable file, a frame without a label, an
    energy that is not one finite number, forces that are not finite numbers of shape
    (n_atoms, 3), and non-finite positions.
    """
    from ase.io import read

    path = Path(path)
    if is_file(path) and path.stat().st_size == 0:
        raise ValueError(f"{path}: empty file (no frames)")
    try:
        frames = read(path, index=":")
    except Exception as exc:  # noqa: BLE001 - ase raises many kinds for a file it cannot parse
        why = " ".join(f"{type(exc).__name__}: {exc}".split())
        raise ValueError(f"{path}: cannot be read as extxyz ({why[:160]})") from None
    out = []
    for i, a in enumerate(frames):
        if energy_key in a.info and forces_key in a.arrays:
            e, f = a.info[energy_key], a.arrays[forces_key]
            where = f"info[{energy_key!r}]", f"arrays[{forces_key!r}]"
        elif a.calc is not None and "energy" in a.calc.results and "forces" in a.calc.results:
            e, f = a.calc.results["energy"], a.calc.results["forces"]
            where = "energy", "forces"
        else:
            raise ValueError(f"{path}: frame {i} has no reference energy and forces "
                             f"(looked for info[{energy_key!r}], arrays[{forces_key!r}], "
                             "or energy/forces written by a calculator)")
        problem = label_problem(a, e, f, *where)
        if problem:
            raise ValueError(f"{path}: frame {i}: {problem}")
        b = bare_copy(a)
        if keep_info:
            b.info.update({k: v for k, v in a.info.items()
                           if isinstance(v, (str, int, float, np.integer, np.floating))})
        out.append(set_reference(b, e, f))
    return out


def label_problem(atoms: Atoms, energy: object, forces: object, energy_name: str = "energy",
                  forces_name: str = "forces") -> str:
    """'' if ``energy`` is one finite number (eV) and ``forces`` finite numbers of shape
    (len(atoms), 3) (eV/A) on finite positions, else a one-line reason."""
    if len(atoms) == 0:
        return "no atoms"
    if not np.all(np.isfinite(np.asarray(atoms.positions, dtype=float))):
        return "non-finite positions"
    e = np.asarray(energy)
    if e.dtype.kind not in "iuf" or e.size != 1:
        got = repr(energy) if e.size == 1 else f"{e.size} values"
        return f"energy {energy_name} is not a number (got {got[:40]})"
    if not np.isfinite(float(e.reshape(()))):
        return f"non-finite energy {energy_name} ({float(e.reshape(()))})"
    f = np.asarray(forces)
    if f.dtype.kind not in "iuf":
        return f"forces {forces_name} are not numbers"
    if f.shape != (len(atoms), 3):
        return f"forces {forces_name} have shape {f.shape}, expected ({len(atoms)}, 3)"
    bad = np.flatnonzero(~np.all(np.isfinite(f), axis=1))
    if len(bad):
        return f"non-finite forces {forces_name} on atom(s) {', '.join(map(str, bad[:5]))}"
    return ""
