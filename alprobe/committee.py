"""Ensemble (committee) disagreement statistics: pure numpy.

For M models predicting the same structure: energy standard deviation per atom and DP-GEN's
maximal atomic force deviation eps_F = max_i sqrt(< |F_i - <F_i>|^2 >), averages over members.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["energy_std_per_atom", "max_force_deviation"]


def energy_std_per_atom(energies: np.ndarray, n_atoms: int) -> float:
    """Population std over members of total energies (M,) in eV, divided by the atom count."""
    return float(np.std(np.asarray(energies, dtype=float)) / n_atoms)


def max_force_deviation(forces: Sequence[np.ndarray] | np.ndarray) -> float:
    """DP-GEN's eps_F (eV/A) from member forces (M, N, 3)."""
    f = np.asarray(forces, dtype=float)
    dev = np.sqrt(np.mean(np.sum((f - f.mean(axis=0)) ** 2, axis=-1), axis=0))  # (N,)
    return float(dev.max())
