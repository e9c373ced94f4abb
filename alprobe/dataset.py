"""Pure data decisions: held-out splits by group (trajectory), calibration shares, subsets,
bootstrap resamples. Each takes its data and an explicit ``numpy.random.Generator``; nothing
here reads files or chooses seeds.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["bootstrap_resample", "calibration_mask", "group_folds", "group_split", "hit_rate",
           "random_subset", "spread_pick"]


def group_split(groups: Sequence[object], test_fraction: float, rng: np.random.Generator
                ) -> np.ndarray:
    """Boolean mask (n,) of the test frames: whole groups (e.g. trajectories) drawn in random
    order until at least ``test_fraction`` of the frames are test frames, so that no group
    straddles test and training. At least one group stays out of the test set."""
    groups = list(groups)
    n = len(groups)
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    names, inverse, counts = np.unique(np.asarray(groups, dtype=str), return_inverse=True,
                                       return_counts=True)
    if len(names) < 2:
        raise ValueError(f"a held-out split by group needs at least 2 groups, got {len(names)}")
    order = rng.permutation(len(names))
    take, total = [], 0
    for g in order[:-1]:  # never every group
        if total >= test_fraction * n:
            break
        take.append(g)
        total += counts[g]
    return np.isin(inverse, take)


def group_folds(groups: Sequence[object], k: int, rng: np.random.Generator) -> np.ndarray:
    """Fold index (n,) in 0..k-1 of every frame for K-fold cross-fitting: whole groups (e.g.
    trajectories) in random order, each to the fold with the fewest frames so far, so that no
    group straddles two folds and the folds are about equally large. With fewer groups than
    ``k`` some folds stay empty."""
    if k < 2:
        raise ValueError(f"cross-fitting needs k >= 2 folds, got {k}")
    names, inverse, counts = np.unique(np.asarray(list(groups), dtype=str), return_inverse=True,
                                       return_counts=True)
    sizes = np.zeros(k, dtype=int)
    fold_of = np.empty(len(names), dtype=int)
    for g in rng.permutation(len(names)):
        f = int(np.argmin(sizes))
        fold_of[g] = f
        sizes[f] += counts[g]
    return fold_of[inverse].astype(int)


def calibration_mask(n: int, fraction: float, rng: np.random.Generator, minimum: int = 0
                     ) -> np.ndarray:
    """Boolean mask (n,) of frames held out of backbone training (for the probe): each frame
    independently with probability ``fraction``, at least ``minimum`` of them (when n allows)."""
    mask = rng.random(n) < fraction
    short = min(minimum, n) - int(mask.sum())
    if short > 0:
        mask[rng.choice(np.flatnonzero(~mask), size=short, replace=False)] = True
    return mask


def random_subset(n: int, k: int | None, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of a uniform random subset of size ``k`` of range(n) (all if k is None
    or k >= n)."""
    if k is None or k >= n:
        return np.arange(n)
    return np.sort(rng.choice(n, size=k, replace=False))


def spread_pick(n: int, k: int) -> np.ndarray:
    """``k`` indices of range(n) spread evenly from the end backwards (the last one included),
    e.g. frames of a trajectory far apart in time; all if k >= n."""
    if k >= n:
        return np.arange(n)
    if k <= 0:
        return np.zeros(0, dtype=int)
    return np.unique(np.round(np.linspace(n - 1, (n - 1) / k, k)).astype(int))


def hit_rate(errors: Sequence[float], tau: float | None) -> float:
    """Fraction of ``errors`` above ``tau`` (NaN when there are none or tau is None)."""
    errors = np.asarray(errors, dtype=float)
    if tau is None or len(errors) == 0:
        return float("nan")
    return float(np.mean(errors > tau))


def bootstrap_resample(n: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of a bootstrap resample (with replacement) of range(n)."""
    return np.sort(rng.integers(0, n, n))
