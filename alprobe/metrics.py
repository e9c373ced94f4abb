"""Accuracy and reliability metrics (pure numpy / scikit-learn)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from ase import Atoms

from .frames import PRED_ENERGY, PRED_FORCES, REF_ENERGY, REF_FORCES, structure_errors

__all__ = ["auroc_unreliable", "frame_errors", "regression_errors"]


def regression_errors(frames: Sequence[Atoms]) -> dict[str, float]:
    """Energy MAE per atom (eV/atom), force MAE and RMSE over components (eV/A).

    Each frame needs ref_/pred_ energy and forces.
    """
    if not frames:
        return {"energy_mae_eV_per_atom": float("nan"), "force_mae_eV_A": float("nan"),
                "force_rmse_eV_A": float("nan")}
    de = np.array([abs(a.info[PRED_ENERGY] - a.info[REF_ENERGY]) / len(a) for a in frames])
    df = np.concatenate([(np.asarray(a.arrays[PRED_FORCES]) - a.arrays[REF_FORCES]).ravel()
                         for a in frames])
    return {
        "energy_mae_eV_per_atom": float(de.mean()),
        "force_mae_eV_A": float(np.abs(df).mean()),
        "force_rmse_eV_A": float(np.sqrt(np.mean(df**2))),
    }


def auroc_unreliable(trust: np.ndarray, errors: np.ndarray, tau: float) -> float:
    """AUROC of ``trust`` (P(reliable)) for telling reliable (error <= tau) from unreliable.

    Equals ``roc_auc_score(1 - y, trust)`` with y = 1[error > tau]; NaN when only one class is
    present or any trust is NaN. 1 = perfect ranking, 0.5 = chance, 0 = reversed.
    """
    from sklearn.metrics import roc_auc_score

    trust = np.asarray(trust, dtype=float)
    reliable = (np.asarray(errors, dtype=float) <= tau).astype(int)
    if len(trust) == 0 or np.isnan(trust).any() or reliable.min() == reliable.max():
        return float("nan")
    return float(roc_auc_score(reliable, trust))


def frame_errors(frames: Sequence[Atoms], kind: str) -> np.ndarray:
    """Per-frame error of the stored prediction (see frames.structure_errors), (n,)."""
    return np.array([structure_errors(a, kind) for a in frames], dtype=float)
