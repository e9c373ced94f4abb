"""Accuracy and reliability metrics (pure numpy / scipy / scikit-learn).

Reliability conventions (shared/PROBE.md, "Metrics"): ``s`` is a confidence score, shape (n,),
higher = more trusted (P(reliable), or minus an ensemble sigma); ``e`` is the true per-structure
error, shape (n,), >= 0, in the units of the error kind (e.g. eV/A); ``tau`` is the reliability
threshold in the same units; ``y = 1[e > tau]`` marks unreliable structures.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from collections.abc import Set as AbstractSet

import numpy as np
from ase import Atoms

from .frames import PRED_ENERGY, PRED_FORCES, REF_ENERGY, REF_FORCES, structure_errors

__all__ = [
    "audit_table", "aurc", "auprc", "auroc", "auroc_unreliable", "bootstrap_ci", "brier",
    "e_aurc", "ece", "enrichment_at_k", "error_by_decile", "format_table", "frame_errors",
    "regression_errors", "reliability_diagram", "risk_coverage", "spearman",
    "true_force_rmse",
]


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
    trust = np.asarray(trust, dtype=float)
    reliable = np.asarray(errors, dtype=float) <= tau
    if len(trust) == 0 or np.isnan(trust).any() or reliable.min() == reliable.max():
        return float("nan")
    return _rank_auc(trust, reliable)


def _rank_auc(score: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of ``score`` for the boolean labels ``positive`` by the
    Mann-Whitney rank sum (ties count one half): the value sklearn's roc_auc_score gives,
    without its input validation (the audit bootstraps it thousands of times)."""
    from scipy.stats import rankdata

    ranks = rankdata(score)
    n_pos = int(positive.sum())
    n_neg = len(score) - n_pos
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def true_force_rmse(pred_forces: np.ndarray, ref_forces: np.ndarray) -> float:
    """Force RMSE (eV/A) of one frame over its 3N components; shapes (N, 3)."""
    return float(np.sqrt(np.mean((np.asarray(pred_forces) - np.asarray(ref_forces)) ** 2)))


def frame_errors(frames: Sequence[Atoms], kind: str) -> np.ndarray:
    """Per-frame error of the stored prediction (see frames.structure_errors), (n,)."""
    return np.array([structure_errors(a, kind) for a in frames], dtype=float)


def test_errors(frames: Sequence[Atoms], rng: np.random.Generator, prefix: str = ""
                ) -> dict[str, float]:
    """What a test set says about a model from its raw predictions stored on ``frames``:
    energy MAE (eV/atom), force MAE and RMSE (eV/A) with the 95% bootstrap interval of the
    force MAE over frames, and the tails of the per-frame force RMSE (eV/A): its 95th
    percentile with a bootstrap interval, and its maximum; keys start with ``prefix``."""
    from .paired import bootstrap_mae_ci, bootstrap_quantile_ci

    _, lo, hi = bootstrap_mae_ci(
        [np.abs(a.arrays["pred_forces"] - a.arrays["ref_forces"]).ravel() for a in frames], rng)
    per_frame = frame_errors(frames, "force_rmse") if frames else np.zeros(0)
    p95, p95_lo, p95_hi = bootstrap_quantile_ci(per_frame, 0.95, rng)
    row = {**regression_errors(frames), "force_mae_lo_eV_A": lo, "force_mae_hi_eV_A": hi,
           "force_rmse_p95_eV_A": p95, "force_rmse_p95_lo_eV_A": p95_lo,
           "force_rmse_p95_hi_eV_A": p95_hi,
           "force_rmse_max_eV_A": float(per_frame.max()) if per_frame.size else float("nan"),
           "n_test": len(frames)}
    return {prefix + k: v for k, v in row.items()}


# --------------------------------------------------------------------------------------------
# Reliability audit: ranking, selective prediction and calibration of a confidence score.
# --------------------------------------------------------------------------------------------

def _vec(x: np.ndarray, name: str) -> np.ndarray:
    """1-D float copy of ``x``; ValueError otherwise."""
    x = np.asarray(x, dtype=float)
    if x.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {x.shape}")
    return x


def _pair(s: np.ndarray, e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s, e = _vec(s, "s"), _vec(e, "e")
    if s.shape != e.shape:
        raise ValueError(f"s and e differ in shape: {s.shape} vs {e.shape}")
    return s, e


def _unreliable(e: np.ndarray, tau: float) -> np.ndarray:
    """y = 1[e > tau] as int, (n,)."""
    return (e > tau).astype(int)


def auroc(s: np.ndarray, e: np.ndarray, tau: float) -> float:
    """AUROC of confidence ``s`` (n,) for separating reliable (e <= tau) from unreliable.

    ``roc_auc_score(1 - y, s)``: 1 = every reliable structure trusted more than every unreliable
    one, 0.5 = chance, 0 = reversed. NaN when empty, only one class, or any s is NaN.
    """
    s, e = _pair(s, e)
    return auroc_unreliable(s, e, tau)


def auprc(s: np.ndarray, e: np.ndarray, tau: float) -> float:
    """Average precision for detecting unreliable structures (positive: e > tau, score: -s).

    Chance level is the prevalence mean(y). NaN when there is no unreliable structure or any s
    is NaN. Same value as scikit-learn's ``average_precision_score(y, -s)`` (sum over distinct
    thresholds of recall gain times precision), without its input checks: the audit
    bootstraps it thousands of times.
    """
    s, e = _pair(s, e)
    y = _unreliable(e, tau)
    if len(s) == 0 or y.sum() == 0 or np.isnan(s).any():
        return float("nan")
    order = np.argsort(s, kind="mergesort")  # least trusted first
    score, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(score)), len(score) - 1]  # end of each tie group
    tps = np.cumsum(y)[last]
    precision = tps / (last + 1)
    recall = tps / tps[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def risk_coverage(s: np.ndarray, loss: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Risk-coverage curve: (coverage (n,), selective risk (n,)).

    Structures are kept in order of decreasing ``s``; coverage[k-1] = k/n and risk[k-1] = mean
    ``loss`` of the k most trusted. Ties in ``s`` are broken by input order (stable sort), so
    with tied scores the curve depends on that order. ``loss`` is per structure: y (0/1) or e.
    """
    s, loss = _pair(s, loss)
    n = len(s)
    if n == 0:
        return np.zeros(0), np.zeros(0)
    order = np.argsort(-s, kind="stable")
    k = np.arange(1, n + 1)
    return k / n, np.cumsum(loss[order]) / k


def aurc(s: np.ndarray, loss: np.ndarray) -> float:
    """Area under the risk-coverage curve = mean of the selective risks (loss units)."""
    _, risk = risk_coverage(s, loss)
    return float(risk.mean()) if len(risk) else float("nan")


def e_aurc(s: np.ndarray, loss: np.ndarray) -> float:
    """Excess AURC: aurc(s, loss) minus the AURC of the oracle order (loss ascending); >= 0."""
    loss = _vec(loss, "loss")
    return aurc(s, loss) - aurc(-loss, loss)


def spearman(s: np.ndarray, e: np.ndarray) -> float:
    """Spearman rank correlation of s and e (should be negative); NaN if either is constant.

    Pearson correlation of the average ranks, as ``scipy.stats.spearmanr``."""
    from scipy.stats import rankdata

    s, e = _pair(s, e)
    if len(s) < 2 or np.ptp(s) == 0 or np.ptp(e) == 0 or np.isnan(s).any() or np.isnan(e).any():
        return float("nan")
    rs, re = rankdata(s), rankdata(e)
    rs -= rs.mean()
    re -= re.mean()
    return float(np.dot(rs, re) / np.sqrt(np.dot(rs, rs) * np.dot(re, re)))


def error_by_decile(s: np.ndarray, e: np.ndarray, n_bins: int = 10) -> dict[str, np.ndarray]:
    """Mean error per confidence quantile bin, ordered from least to most trusted.

    Structures sorted by s ascending (stable) are split into min(n_bins, n) bins of equal count
    (sizes differ by at most one). Returns arrays "s_mean", "e_mean" (units of e), "count",
    each of shape (n_bins_used,).
    """
    s, e = _pair(s, e)
    order = np.argsort(s, kind="stable")
    parts = np.array_split(order, min(n_bins, len(s))) if len(s) else []
    return {
        "s_mean": np.array([s[i].mean() for i in parts]),
        "e_mean": np.array([e[i].mean() for i in parts]),
        "count": np.array([len(i) for i in parts], dtype=int),
    }


def enrichment_at_k(s: np.ndarray, e: np.ndarray, tau: float, k: int) -> float:
    """Fraction unreliable among the k least trusted structures over the overall fraction.

    1 = no better than random, 1/prevalence = all k flagged are unreliable (k <= #unreliable).
    Ties in s broken by input order. NaN if the base rate is 0. ``k`` is a count in [1, n].
    """
    s, e = _pair(s, e)
    if not 1 <= int(k) <= len(s):
        raise ValueError(f"k must be in [1, {len(s)}], got {k}")
    y = _unreliable(e, tau)
    base = y.mean()
    if base == 0:
        return float("nan")
    low = np.argsort(s, kind="stable")[: int(k)]
    return float(y[low].mean() / base)


def _prob(p: np.ndarray, e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p, e = _pair(p, e)
    if len(p) and (np.isnan(p).any() or p.min() < 0 or p.max() > 1):
        raise ValueError("probabilities must lie in [0, 1]")
    return p, e


def _prob_bins(p: np.ndarray, n_bins: int) -> np.ndarray:
    """Equal-width bin index in [0, n_bins) on [0, 1]; p = 1 goes to the last bin."""
    return np.minimum((p * n_bins).astype(int), n_bins - 1)


def reliability_diagram(p: np.ndarray, e: np.ndarray, tau: float,
                        n_bins: int = 10) -> dict[str, np.ndarray]:
    """Reliability diagram of P(reliable) ``p`` (n,) in equal-width bins on [0, 1].

    Returns arrays of shape (n_bins,): "bin_center", "p_mean" (mean p in bin), "frac_reliable"
    (observed fraction with e <= tau) and "count"; empty bins have NaN means and count 0.
    """
    p, e = _prob(p, e)
    rel = 1 - _unreliable(e, tau)
    b = _prob_bins(p, n_bins)
    count = np.bincount(b, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        p_mean = np.bincount(b, weights=p, minlength=n_bins) / count
        frac = np.bincount(b, weights=rel, minlength=n_bins) / count
    return {"bin_center": (np.arange(n_bins) + 0.5) / n_bins, "p_mean": p_mean,
            "frac_reliable": frac, "count": count}


def ece(p: np.ndarray, e: np.ndarray, tau: float, n_bins: int = 15) -> float:
    """Expected calibration error of P(reliable) ``p`` (n,), equal-width bins on [0, 1].

    sum_b (n_b / n) |mean(reliable in b) - mean(p in b)|; NaN when empty.
    """
    d = reliability_diagram(p, e, tau, n_bins)
    n = d["count"].sum()
    if n == 0:
        return float("nan")
    m = d["count"] > 0
    return float(np.sum(d["count"][m] / n * np.abs(d["frac_reliable"][m] - d["p_mean"][m])))


def brier(p: np.ndarray, e: np.ndarray, tau: float) -> float:
    """Brier score of P(reliable) ``p`` (n,): mean (p - 1[e <= tau])^2; NaN when empty."""
    from sklearn.metrics import brier_score_loss

    p, e = _prob(p, e)
    if len(p) == 0:
        return float("nan")
    return float(brier_score_loss(1 - _unreliable(e, tau), p, labels=[0, 1]))


def _bootstrap_values(fns: Sequence[Callable[..., float]], arrays: Sequence[np.ndarray],
                      idx: np.ndarray) -> np.ndarray:
    """Values of each fn on the joint resamples ``arrays[i] for i in idx``: (n_boot, len(fns))."""
    out = np.empty((len(idx), len(fns)))
    for b, i in enumerate(idx):
        sample = [a[i] for a in arrays]
        out[b] = [fn(*sample) for fn in fns]
    return out


def _percentile_ci(values: np.ndarray, alpha: float) -> tuple[float, float]:
    v = values[np.isfinite(values)]
    if len(v) == 0:
        return float("nan"), float("nan")
    lo, hi = np.quantile(v, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def bootstrap_ci(fn: Callable[..., float], *arrays: np.ndarray, n_boot: int = 1000,
                 alpha: float = 0.05, rng: np.random.Generator) -> tuple[float, float]:
    """Percentile bootstrap (1 - alpha) interval of ``fn(*arrays)`` over structures.

    Indices are resampled with replacement jointly across ``arrays`` (each (n, ...)); replicates
    where fn is NaN (e.g. one class only) are skipped; (NaN, NaN) if all are. ``rng`` is the
    only source of randomness.
    """
    arrays_ = [np.asarray(a) for a in arrays]
    n = len(arrays_[0]) if arrays_ else 0
    if any(len(a) != n for a in arrays_):
        raise ValueError("bootstrap arrays must share their first dimension")
    if n == 0:
        return float("nan"), float("nan")
    vals = _bootstrap_values([fn], arrays_, rng.integers(0, n, size=(n_boot, n)))[:, 0]
    return _percentile_ci(vals, alpha)


def audit_table(signals: dict[str, np.ndarray], e: np.ndarray, tau: float, *,
                probabilities: AbstractSet[str] = frozenset(), n_boot: int = 1000,
                alpha: float = 0.05, rng: np.random.Generator) -> list[dict]:
    """One row of reliability metrics per confidence signal (each (n,), higher = more trusted).

    Keys: signal, n, prevalence, auroc(+_lo/_hi), auprc(+_lo/_hi), aurc_01, e_aurc_01 (0/1 loss
    y), aurc_err, e_aurc_err (loss = e, units of e), spearman(+_lo/_hi), enrichment_at_10pct
    (k = ceil(0.1 n)), ece (15 bins) and brier — the last two only for signals named in
    ``probabilities`` (must be P(reliable) in [0, 1]), NaN otherwise. CIs: percentile bootstrap
    over structures; every signal sees the same resamples (paired). Non-finite values raise.
    """
    e = _vec(e, "e")
    if len(e) == 0 or not np.isfinite(e).all():
        raise ValueError("e must be non-empty and finite")
    unknown = set(probabilities) - set(signals)
    if unknown:
        raise ValueError(f"probabilities names unknown signals: {sorted(unknown)}")
    n = len(e)
    y = _unreliable(e, tau).astype(float)
    k10 = max(1, int(np.ceil(0.1 * n)))
    nan = float("nan")
    fns = [lambda s_, e_: auroc(s_, e_, tau), lambda s_, e_: auprc(s_, e_, tau), spearman]
    idx = rng.integers(0, n, size=(n_boot, n))  # the same resamples for every signal (paired)
    rows = []
    for name, s in signals.items():
        s = _vec(s, name)
        if s.shape != e.shape:
            raise ValueError(f"signal {name!r} has shape {s.shape}, e has {e.shape}")
        if not np.isfinite(s).all():
            raise ValueError(f"signal {name!r} has non-finite values")
        boot = _bootstrap_values(fns, [s, e], idx)
        ci = [_percentile_ci(boot[:, j], alpha) for j in range(3)]
        is_p = name in probabilities
        rows.append({
            "signal": name, "n": n, "prevalence": float(y.mean()),
            "auroc": auroc(s, e, tau), "auroc_lo": ci[0][0], "auroc_hi": ci[0][1],
            "auprc": auprc(s, e, tau), "auprc_lo": ci[1][0], "auprc_hi": ci[1][1],
            "aurc_01": aurc(s, y), "e_aurc_01": e_aurc(s, y),
            "aurc_err": aurc(s, e), "e_aurc_err": e_aurc(s, e),
            "spearman": spearman(s, e), "spearman_lo": ci[2][0], "spearman_hi": ci[2][1],
            "enrichment_at_10pct": enrichment_at_k(s, e, tau, k10),
            "ece": ece(s, e, tau) if is_p else nan,
            "brier": brier(s, e, tau) if is_p else nan,
        })
    return rows


_TABLE_COLS = [  # (header, key, with CI)
    ("signal", "signal", False), ("n", "n", False), ("prev", "prevalence", False),
    ("AUROC [CI]", "auroc", True), ("AUPRC [CI]", "auprc", True),
    ("AURC01", "aurc_01", False), ("E-AURC01", "e_aurc_01", False),
    ("AURCerr", "aurc_err", False), ("E-AURCerr", "e_aurc_err", False),
    ("Spearman [CI]", "spearman", True), ("Enr@10%", "enrichment_at_10pct", False),
    ("ECE", "ece", False), ("Brier", "brier", False),
]


def format_table(rows: Sequence[dict]) -> str:
    """Fixed-width text table of ``audit_table`` rows: 3 decimals, CI as "0.812 [0.75, 0.87]"."""
    def cell(row: dict, key: str, with_ci: bool) -> str:
        v = row[key]
        if isinstance(v, str):
            return v
        if isinstance(v, (int, np.integer)):
            return str(int(v))
        txt = f"{v:.3f}"
        if with_ci:
            txt += f" [{row[key + '_lo']:.2f}, {row[key + '_hi']:.2f}]"
        return txt

    table = [[h for h, _, _ in _TABLE_COLS]]
    table += [[cell(r, k, c) for _, k, c in _TABLE_COLS] for r in rows]
    widths = [max(len(r[j]) for r in table) for j in range(len(_TABLE_COLS))]
    lines = ["  ".join(c.ljust(w) if j == 0 else c.rjust(w)
                       for j, (c, w) in enumerate(zip(r, widths))) for r in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
