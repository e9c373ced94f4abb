"""Cheap single-model trust signals to compare PROBE against (pure numpy / scikit-learn).

Each returns a confidence s per structure: higher = more trusted, like P(reliable).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["energy_confidence", "knn_confidence"]


def knn_confidence(train_features: Sequence[np.ndarray], query_features: Sequence[np.ndarray],
                   k: int = 5, reduce: str = "max") -> np.ndarray:
    """Minus the latent-space distance to the training set, (n_query,).

    Per atom: mean Euclidean distance to its k nearest training atoms in the backbone's
    embedding space (features standardised with training statistics); per structure: the
    ``reduce`` ("max" or "mean") over its atoms. train/query features: per-structure (N_i, F).
    """
    from sklearn.neighbors import NearestNeighbors

    train = np.concatenate([np.asarray(f, dtype=np.float64) for f in train_features])
    mu, sd = train.mean(0), train.std(0) + 1e-8
    nn = NearestNeighbors(n_neighbors=min(k, len(train))).fit((train - mu) / sd)
    sizes = [len(f) for f in query_features]
    query = (np.concatenate([np.asarray(f, dtype=np.float64) for f in query_features]) - mu) / sd
    dist = nn.kneighbors(query)[0].mean(1)
    agg = np.max if reduce == "max" else np.mean
    bounds = np.cumsum([0, *sizes])
    return -np.array([agg(dist[a:b]) for a, b in zip(bounds[:-1], bounds[1:])])


def energy_confidence(pred_energy: np.ndarray, n_atoms: np.ndarray, train_energy_per_atom: float
                      ) -> np.ndarray:
    """Minus the predicted energy per atom above the training mean (eV/atom), (n,).

    The trivial baseline: hot, strained structures have high energies and large errors.
    """
    e = np.asarray(pred_energy, dtype=float) / np.asarray(n_atoms, dtype=float)
    return -(e - train_energy_per_atom)
