"""Selection rules: which candidate frames go to DFT under a budget (pure numpy)."""

from __future__ import annotations

from bisect import bisect_left, insort

import numpy as np

__all__ = ["deviation_window", "select_by_deviation", "select_least_trusted", "select_random"]


def select_least_trusted(trust: np.ndarray, walker: np.ndarray, sample: np.ndarray, budget: int,
                         min_spacing: int, *, rng: np.random.Generator) -> np.ndarray:
    """Indices of up to ``budget`` candidates with the lowest trust, greedily.

    trust: (n,) P(reliable), NaN = unscored (taken last, in random order); walker, sample: (n,)
    ints locating each frame in its walker's trajectory. A frame is skipped when an already
    chosen frame of the same walker lies fewer than ``min_spacing`` samples away
    (``min_spacing`` 0 or 1 disables the rule). Ties are broken by ``rng``.
    """
    trust = np.asarray(trust, dtype=float)
    n = len(trust)
    if budget <= 0 or n == 0:
        return np.zeros(0, dtype=np.int64)
    key = np.where(np.isnan(trust), np.inf, trust)
    order = np.lexsort((rng.random(n), key))
    if min_spacing <= 1:
        return np.sort(order[:budget]).astype(np.int64)
    taken: dict[int, list[int]] = {}
    chosen: list[int] = []
    for i in order:
        w, s = int(walker[i]), int(sample[i])
        picks = taken.setdefault(w, [])
        k = bisect_left(picks, s)
        near_left = k > 0 and s - picks[k - 1] < min_spacing
        near_right = k < len(picks) and picks[k] - s < min_spacing
        if near_left or near_right:
            continue
        insort(picks, s)
        chosen.append(int(i))
        if len(chosen) == budget:
            break
    return np.sort(np.array(chosen, dtype=np.int64))


def select_random(n: int, budget: int, *, rng: np.random.Generator) -> np.ndarray:
    """``budget`` indices out of ``n`` uniformly without replacement (sorted)."""
    return np.sort(rng.choice(n, size=min(budget, n), replace=False)).astype(np.int64)


def deviation_window(sigma: np.ndarray, lo: float, hi: float | None) -> np.ndarray:
    """Boolean mask (n,) of finite sigma with lo <= sigma < hi (hi None: no ceiling)."""
    sigma = np.asarray(sigma, dtype=float)
    ok = np.isfinite(sigma) & (sigma >= lo)
    return ok if hi is None else ok & (sigma < hi)


def select_by_deviation(sigma: np.ndarray, walker: np.ndarray, sample: np.ndarray, budget: int,
                        min_spacing: int, lo: float, hi: float | None, *,
                        rng: np.random.Generator) -> np.ndarray:
    """The ensemble arm's rule: up to ``budget`` indices with the largest committee
    disagreement ``sigma`` (n,) inside the trust window lo <= sigma < hi, with the same
    per-walker spacing rule as select_least_trusted. Frames outside the window (below lo:
    already well described; at or above hi: treated as broken) are never chosen."""
    sigma = np.asarray(sigma, dtype=float)
    idx = np.flatnonzero(deviation_window(sigma, lo, hi))
    pick = select_least_trusted(-sigma[idx], np.asarray(walker)[idx], np.asarray(sample)[idx],
                                budget, min_spacing, rng=rng)
    return np.sort(idx[pick]).astype(np.int64)
