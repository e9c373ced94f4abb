"""Selection rules: which candidate frames go to DFT under a budget (pure numpy)."""

from __future__ import annotations

from bisect import bisect_left, insort

import numpy as np

__all__ = ["acquisition_order", "batch_spread", "deviation_window", "farthest_point",
           "select_by_deviation", "select_least_trusted", "select_random", "standardise"]


def acquisition_order(score: np.ndarray, *, rng: np.random.Generator, sampling: str = "top",
                      power: float = 1.0) -> np.ndarray:
    """Candidates in the order a rule takes them, from ``score`` (n,): higher = wanted sooner
    (unreliability, committee disagreement); NaN = unscored, taken last in random order.

    ``sampling="top"``: by score, ties broken by ``rng``. ``"power"``: a random order drawn
    with probability proportional to score**power among the scores shifted to be positive
    (Gumbel top-k: stochastic batch acquisition, Kirsch et al., TMLR 2023), so a batch mixes
    the most wanted frames with others instead of piling onto one kind of structure; power -> inf
    gives "top", power 0 uniform random.
    """
    score = np.asarray(score, dtype=float)
    n = len(score)
    tie = rng.random(n)
    missing = np.isnan(score)
    if sampling == "top":
        key = np.where(missing, -np.inf, score)
        return np.lexsort((tie, -key))
    if sampling != "power":
        raise ValueError(f"unknown sampling {sampling!r}")
    finite = score[~missing]
    base = finite.min() if len(finite) else 0.0
    spread = (finite.max() - base) if len(finite) else 1.0
    pos = (score - base) + 1e-3 * max(spread, 1e-12)  # > 0 for every scored frame
    gumbel = -np.log(-np.log(np.clip(tie, 1e-300, 1.0 - 1e-16)))
    key = np.where(missing, -np.inf, power * np.log(np.where(missing, 1.0, pos)) + gumbel)
    return np.lexsort((rng.random(n), -key))


def _spaced(order: np.ndarray, walker: np.ndarray, sample: np.ndarray, budget: int,
            min_spacing: int) -> np.ndarray:
    """The first ``budget`` of ``order`` keeping picks of one walker ``min_spacing`` samples
    apart (0 or 1: no rule)."""
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


def select_least_trusted(trust: np.ndarray, walker: np.ndarray, sample: np.ndarray, budget: int,
                         min_spacing: int, *, rng: np.random.Generator, sampling: str = "top",
                         power: float = 1.0) -> np.ndarray:
    """Indices of up to ``budget`` candidates with the lowest trust, greedily (``sampling``
    "top"), or drawn with probability growing with 1 - trust (``"power"``, see
    acquisition_order).

    trust: (n,) P(reliable), NaN = unscored (taken last, in random order); walker, sample: (n,)
    ints locating each frame in its walker's trajectory. A frame is skipped when an already
    chosen frame of the same walker lies fewer than ``min_spacing`` samples away
    (``min_spacing`` 0 or 1 disables the rule). Ties are broken by ``rng``.
    """
    trust = np.asarray(trust, dtype=float)
    if budget <= 0 or len(trust) == 0:
        return np.zeros(0, dtype=np.int64)
    order = acquisition_order(1.0 - trust, rng=rng, sampling=sampling, power=power)
    return _spaced(order, walker, sample, budget, min_spacing)


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
                        rng: np.random.Generator, sampling: str = "top",
                        power: float = 1.0) -> np.ndarray:
    """The ensemble arm's rule: up to ``budget`` indices with the largest committee
    disagreement ``sigma`` (n,) inside the trust window lo <= sigma < hi, with the same
    per-walker spacing rule as select_least_trusted. Frames outside the window (below lo:
    already well described; at or above hi: treated as broken) are never chosen."""
    sigma = np.asarray(sigma, dtype=float)
    idx = np.flatnonzero(deviation_window(sigma, lo, hi))
    if budget <= 0 or len(idx) == 0:
        return np.zeros(0, dtype=np.int64)
    order = acquisition_order(sigma[idx], rng=rng, sampling=sampling, power=power)
    pick = _spaced(order, np.asarray(walker)[idx], np.asarray(sample)[idx], budget, min_spacing)
    return np.sort(idx[pick]).astype(np.int64)


def standardise(features: np.ndarray) -> np.ndarray:
    """Features (n, F) shifted to zero mean and scaled to unit variance per column (columns
    with no spread are left at zero)."""
    x = np.asarray(features, dtype=float)
    sd = x.std(axis=0)
    return (x - x.mean(axis=0)) / np.where(sd > 1e-12, sd, 1.0)


def farthest_point(features: np.ndarray, first: int, budget: int) -> np.ndarray:
    """Greedy farthest-point batch: ``first``, then each time the row of ``features`` (n, F)
    farthest (Euclidean) from every row already taken, until ``budget`` rows; ties go to the
    lower index. Returns the taken indices in the order taken."""
    x = np.asarray(features, dtype=float)
    n = len(x)
    budget = min(budget, n)
    if budget <= 0:
        return np.zeros(0, dtype=np.int64)
    taken = [int(first)]
    nearest = np.linalg.norm(x - x[first], axis=1)
    nearest[first] = -np.inf
    while len(taken) < budget:
        i = int(np.argmax(nearest))
        taken.append(i)
        nearest = np.minimum(nearest, np.linalg.norm(x - x[i], axis=1))
        nearest[taken] = -np.inf
    return np.array(taken, dtype=np.int64)


def batch_spread(features: np.ndarray) -> float:
    """Mean distance from each row of ``features`` (k, F) to its nearest other row (the
    batch's redundancy: small = near-copies); NaN for fewer than 2 rows."""
    x = np.asarray(features, dtype=float)
    if len(x) < 2:
        return float("nan")
    d = np.linalg.norm(x[:, None, :] - x[None, :, :], axis=-1)
    np.fill_diagonal(d, np.inf)
    return float(d.min(axis=1).mean())
