"""Reliability metrics of alprobe.metrics against hand-computed cases (shared/PROBE.md, Metrics)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from alprobe.metrics import (
    audit_table,
    auprc,
    aurc,
    auroc,
    bootstrap_ci,
    brier,
    e_aurc,
    ece,
    enrichment_at_k,
    error_by_decile,
    format_table,
    reliability_diagram,
    risk_coverage,
    spearman,
)

# Hand-worked example, tau = 0.5 (y = 1[e > tau], s higher = more trusted):
#   index  0    1    2    3    4    5
#   s     0.9  0.8  0.7  0.6  0.5  0.4
#   e     0.1  0.6  0.2  0.3  0.9  0.7
#   y      0    1    0    0    1    1      -> prevalence 1/2
S = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
E = np.array([0.1, 0.6, 0.2, 0.3, 0.9, 0.7])
TAU = 0.5
Y = np.array([0, 1, 0, 0, 1, 1], dtype=float)


def _strictly_monotone(n: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    e = np.sort(np.random.default_rng(seed).uniform(0.0, 1.0, n))
    return -e, e  # confidence strictly decreasing in error


# ---------------------------------------------------------------- perfect / reversed rankings

def test_perfect_ranking():
    s, e = _strictly_monotone()
    tau = float(np.median(e))
    y = (e > tau).astype(float)
    assert auroc(s, e, tau) == pytest.approx(1.0)
    assert auprc(s, e, tau) == pytest.approx(1.0)
    assert e_aurc(s, y) == pytest.approx(0.0, abs=1e-12)
    assert e_aurc(s, e) == pytest.approx(0.0, abs=1e-12)
    assert spearman(s, e) == pytest.approx(-1.0)
    # the k = #unreliable least trusted are all unreliable: enrichment = 1 / prevalence
    k = int(y.sum())
    assert enrichment_at_k(s, e, tau, k) == pytest.approx(1.0 / y.mean())


def test_reversed_ranking():
    s, e = _strictly_monotone()
    tau = float(np.median(e))
    y = (e > tau).astype(float)
    assert auroc(-s, e, tau) == pytest.approx(0.0)
    assert spearman(-s, e) == pytest.approx(1.0)
    assert e_aurc(-s, y) > 0.1
    assert e_aurc(-s, e) > 0.1
    assert enrichment_at_k(-s, e, tau, int(y.sum())) == pytest.approx(0.0)


def test_nan_cases():
    s, e = np.array([0.1, 0.5, 0.9]), np.array([0.1, 0.2, 0.3])
    assert math.isnan(auroc(s, e, 1.0))         # all reliable: one class
    assert math.isnan(auroc(s, e, 0.0))         # all unreliable: one class
    assert math.isnan(auprc(s, e, 1.0))         # no unreliable: AP undefined
    assert math.isnan(spearman(np.ones(3), e))  # constant confidence
    assert math.isnan(enrichment_at_k(s, e, 1.0, 1))  # base rate 0
    assert not math.isnan(auroc(s, e, 0.25))


# ---------------------------------------------------------------- hand-worked example

def test_auroc_hand():
    # reliable s = {0.9, 0.7, 0.6}, unreliable s = {0.8, 0.5, 0.4}; pairs with s_rel > s_unrel:
    # 0.9 beats 3, 0.7 beats 2 (0.5, 0.4), 0.6 beats 2  ->  7 of 9 pairs
    assert auroc(S, E, TAU) == pytest.approx(7 / 9)


def test_error_equal_to_tau_is_reliable():
    # e == tau is reliable (y = 1[e > tau]): raising e[0] from 0.1 to exactly 0.5 changes nothing
    e = E.copy()
    e[0] = TAU
    assert auroc(S, e, TAU) == pytest.approx(7 / 9)
    assert auprc(S, e, TAU) == pytest.approx(2.6 / 3)
    assert enrichment_at_k(S, e, TAU, 3) == pytest.approx((2 / 3) / 0.5)  # base rate 1/2
    assert brier(np.ones(6), e, TAU) == pytest.approx(3 / 6)    # 3 unreliable, each costs 1
    assert ece(np.ones(6), e, TAU, n_bins=2) == pytest.approx(0.5)
    # just above tau it becomes unreliable: reliable {0.7, 0.6} vs unreliable {0.9, 0.8, 0.5,
    # 0.4}: 0.7 and 0.6 each beat 2 of 4 -> 4/8
    e[0] = TAU + 1e-9
    assert auroc(S, e, TAU) == pytest.approx(4 / 8)
    assert brier(np.ones(6), e, TAU) == pytest.approx(4 / 6)


def test_auprc_hand():
    # rank by -s (least trusted first): 0.4 U, 0.5 U, 0.6 R, 0.7 R, 0.8 U, 0.9 R
    # precision at each unreliable hit: 1/1, 2/2, 3/5  ->  AP = (1 + 1 + 0.6) / 3
    assert auprc(S, E, TAU) == pytest.approx(2.6 / 3)


def test_aurc_hand_01_loss():
    # kept in s order, y = 0 1 0 0 1 1; cumulative 0 1 1 1 2 3
    # risks 0/1, 1/2, 1/3, 1/4, 2/5, 3/6 -> sum = (0 + 30 + 20 + 15 + 24 + 30)/60 = 119/60
    # AURC = 119/360; oracle y = 0 0 0 1 1 1: risks 0, 0, 0, 1/4, 2/5, 3/6 -> 69/360
    assert aurc(S, Y) == pytest.approx(119 / 360)
    assert e_aurc(S, Y) == pytest.approx(50 / 360)


def test_aurc_hand_error_loss():
    # loss in s order: 0.1 0.6 0.2 0.3 0.9 0.7; cumulative 0.1 0.7 0.9 1.2 2.1 2.8
    # risks 0.1, 0.35, 0.3, 0.3, 0.42, 2.8/6 -> sum 1.936667, AURC = 1.936667/6
    # oracle (e ascending) 0.1 0.2 0.3 0.6 0.7 0.9: cumulative 0.1 0.3 0.6 1.2 1.9 2.8
    # risks 0.1, 0.15, 0.2, 0.3, 0.38, 2.8/6 -> sum 1.596667; E-AURC = (1.936667-1.596667)/6
    assert aurc(S, E) == pytest.approx((0.1 + 0.35 + 0.3 + 0.3 + 0.42 + 2.8 / 6) / 6)
    assert e_aurc(S, E) == pytest.approx(0.34 / 6)


def test_spearman_hand():
    # ranks of s: 6 5 4 3 2 1; ranks of e: 1 4 2 3 6 5; d = 5 1 2 0 -4 -4, sum d^2 = 62
    # rho = 1 - 6*62 / (6*(36-1)) = 1 - 372/210
    assert spearman(S, E) == pytest.approx(1 - 372 / 210)


def test_enrichment_hand():
    # least trusted: s 0.4 (U), 0.5 (U), 0.6 (R), ...; base rate 1/2
    assert enrichment_at_k(S, E, TAU, 2) == pytest.approx((2 / 2) / 0.5)
    assert enrichment_at_k(S, E, TAU, 3) == pytest.approx((2 / 3) / 0.5)
    assert enrichment_at_k(S, E, TAU, 6) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        enrichment_at_k(S, E, TAU, 0)


def test_risk_coverage_hand():
    # s = 0.5 0.9 0.5 -> kept order: index 1 (0.9), then the tie 0.5 by input order: 0, 2
    # losses 0, 1, 3 -> risks 0/1, 1/2, 4/3
    cov, risk = risk_coverage(np.array([0.5, 0.9, 0.5]), np.array([1.0, 0.0, 3.0]))
    np.testing.assert_allclose(cov, [1 / 3, 2 / 3, 1.0])
    np.testing.assert_allclose(risk, [0.0, 0.5, 4 / 3])


# ---------------------------------------------------------------- calibration (2-bin case)

# p = P(reliable); tau = 0.5, e -> reliable 0 1 1 1 0
P = np.array([0.1, 0.3, 0.6, 0.8, 0.9])
EP = np.array([0.9, 0.2, 0.1, 0.4, 0.7])


def test_ece_two_bins():
    # bin [0, 0.5): p 0.1, 0.3 (mean 0.2), reliable 0, 1 (0.5)
    # bin [0.5, 1]: p 0.6, 0.8, 0.9 (mean 2.3/3), reliable 1, 1, 0 (2/3)
    # ECE = 2/5 * |0.5 - 0.2| + 3/5 * |2/3 - 2.3/3| = 0.12 + 0.06 = 0.18
    assert ece(P, EP, TAU, n_bins=2) == pytest.approx(0.18)
    # a perfectly calibrated constant: p = 0.6 with 3 of 5 reliable -> 0
    assert ece(np.full(5, 0.6), EP, TAU, n_bins=15) == pytest.approx(0.0, abs=1e-12)


def test_brier_hand():
    # (0.1-0)^2 + (0.3-1)^2 + (0.6-1)^2 + (0.8-1)^2 + (0.9-0)^2 = 0.01+0.49+0.16+0.04+0.81 = 1.51
    assert brier(P, EP, TAU) == pytest.approx(1.51 / 5)
    # all reliable (one class) is still defined: mean (1 - p)^2
    assert brier(P, np.zeros(5), TAU) == pytest.approx(np.mean((1 - P) ** 2))


def test_reliability_diagram_two_bins():
    d = reliability_diagram(P, EP, TAU, n_bins=2)
    np.testing.assert_allclose(d["bin_center"], [0.25, 0.75])
    np.testing.assert_allclose(d["p_mean"], [0.2, 2.3 / 3])
    np.testing.assert_allclose(d["frac_reliable"], [0.5, 2 / 3])
    np.testing.assert_array_equal(d["count"], [2, 3])
    # p = 1 falls in the last bin; empty bins are NaN with count 0
    d = reliability_diagram(np.array([1.0, 1.0]), np.array([0.0, 0.0]), TAU, n_bins=4)
    np.testing.assert_array_equal(d["count"], [0, 0, 0, 2])
    assert np.isnan(d["p_mean"][:3]).all() and d["frac_reliable"][3] == 1.0
    # bins are [0, 0.5) and [0.5, 1]: an edge value goes to the upper bin
    d = reliability_diagram(np.array([0.0, 0.5, 1.0]), np.zeros(3), TAU, n_bins=2)
    np.testing.assert_array_equal(d["count"], [1, 2])
    with pytest.raises(ValueError):
        ece(np.array([1.2]), np.array([0.0]), TAU)


# ---------------------------------------------------------------- deciles

def test_error_by_decile():
    rng = np.random.default_rng(1)
    s = rng.permutation(np.arange(20.0))
    e = 20.0 - s
    d = error_by_decile(s, e, n_bins=4)   # bins of 5 by s: {0..4}, {5..9}, ...
    np.testing.assert_allclose(d["s_mean"], [2, 7, 12, 17])
    np.testing.assert_allclose(d["e_mean"], [18, 13, 8, 3])
    np.testing.assert_array_equal(d["count"], [5, 5, 5, 5])
    d = error_by_decile(np.arange(10.0), np.arange(10.0), n_bins=3)
    np.testing.assert_array_equal(d["count"], [4, 3, 3])
    np.testing.assert_allclose(d["e_mean"], [1.5, 5.0, 8.0])


# ---------------------------------------------------------------- E-AURC properties

def test_e_aurc_nonnegative_random_and_zero_for_oracle():
    for seed in range(200):
        rng = np.random.default_rng(seed)
        n = int(rng.integers(2, 60))
        e = np.round(rng.gamma(1.5, 0.2, n), 1)       # rounded: ties in the loss
        s = np.round(rng.normal(size=n) - e, 1)       # rounded: ties in the score
        y = (e > np.median(e)).astype(float)
        for loss in (y, e):
            assert e_aurc(s, loss) >= -1e-12
            assert aurc(s, loss) >= aurc(-loss, loss) - 1e-12
            assert e_aurc(-loss, loss) == pytest.approx(0.0, abs=1e-12)
            # AURC is bounded by the worst order (most lossy first)
            assert aurc(s, loss) <= aurc(loss, loss) + 1e-12


# ---------------------------------------------------------------- bootstrap

def test_bootstrap_brackets_and_width():
    x = np.random.default_rng(2).normal(1.0, 1.0, 2000)
    lo, hi = bootstrap_ci(np.mean, x, n_boot=400, rng=np.random.default_rng(3))
    assert lo < x.mean() < hi
    # normal-theory 95% width 2 * 1.96 * sd / sqrt(n)
    assert hi - lo == pytest.approx(2 * 1.96 * x.std() / np.sqrt(len(x)), rel=0.2)
    lo90, hi90 = bootstrap_ci(np.mean, x, n_boot=400, alpha=0.1, rng=np.random.default_rng(3))
    assert lo < lo90 < hi90 < hi


def test_bootstrap_deterministic_for_fixed_rng():
    x = np.random.default_rng(4).normal(size=200)
    a = bootstrap_ci(np.median, x, n_boot=200, rng=np.random.default_rng(7))
    b = bootstrap_ci(np.median, x, n_boot=200, rng=np.random.default_rng(7))
    c = bootstrap_ci(np.median, x, n_boot=200, rng=np.random.default_rng(8))
    assert a == b
    assert a != c


def test_bootstrap_resamples_jointly_and_skips_nan():
    x = np.random.default_rng(5).normal(size=100)
    # the same index for both arrays: x - x is 0 in every replicate
    assert bootstrap_ci(lambda a, b: float(np.mean(a - b)), x, x.copy(), n_boot=100,
                        rng=np.random.default_rng(0)) == (0.0, 0.0)
    # one unreliable structure in 10: many replicates miss it (AUROC NaN) and are skipped
    s = np.linspace(1, 0, 10)
    e = np.r_[np.zeros(9), 1.0]
    lo, hi = bootstrap_ci(lambda s_, e_: auroc(s_, e_, 0.5), s, e, n_boot=200,
                          rng=np.random.default_rng(0))
    assert lo == pytest.approx(1.0) and hi == pytest.approx(1.0)


# ---------------------------------------------------------------- audit table, text, plots

def _signals(n: int = 200, seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray, float]:
    rng = np.random.default_rng(seed)
    e = rng.gamma(2.0, 0.1, n)
    sigma = e * rng.lognormal(0.0, 0.5, n)
    p = 1.0 / (1.0 + np.exp((sigma - 0.2) * 20.0))
    return {"probe": p, "neg_sigma": -sigma, "random": rng.normal(size=n)}, e, 0.2


def test_audit_table_rows():
    signals, e, tau = _signals()
    rows = audit_table(signals, e, tau, probabilities={"probe"}, n_boot=100,
                       rng=np.random.default_rng(0))
    assert [r["signal"] for r in rows] == list(signals)
    keys = {"signal", "n", "prevalence", "auroc", "auroc_lo", "auroc_hi", "auprc", "auprc_lo",
            "auprc_hi", "aurc_01", "e_aurc_01", "aurc_err", "e_aurc_err", "spearman",
            "spearman_lo", "spearman_hi", "enrichment_at_10pct", "ece", "brier"}
    y = (e > tau).astype(float)
    for r in rows:
        assert set(r) == keys
        s = signals[r["signal"]]
        assert r["n"] == len(e) and r["prevalence"] == pytest.approx(y.mean())
        assert r["auroc"] == pytest.approx(auroc(s, e, tau))
        assert r["auprc"] == pytest.approx(auprc(s, e, tau))
        assert r["aurc_01"] == pytest.approx(aurc(s, y))
        assert r["e_aurc_err"] == pytest.approx(e_aurc(s, e))
        assert r["spearman"] == pytest.approx(spearman(s, e))
        assert r["enrichment_at_10pct"] == pytest.approx(enrichment_at_k(s, e, tau, 20))
        for m in ("auroc", "auprc", "spearman"):
            assert r[f"{m}_lo"] <= r[m] <= r[f"{m}_hi"]
    probe, sig, rand = rows
    assert probe["ece"] == pytest.approx(ece(signals["probe"], e, tau))
    assert probe["brier"] == pytest.approx(brier(signals["probe"], e, tau))
    assert math.isnan(sig["ece"]) and math.isnan(sig["brier"])
    assert math.isnan(rand["ece"]) and math.isnan(rand["brier"])
    # a real signal beats noise, and its CI excludes chance
    assert probe["auroc_lo"] > 0.5 and rand["auroc_lo"] < 0.5 < rand["auroc_hi"]
    with pytest.raises(ValueError):
        audit_table(signals, e, tau, probabilities={"nope"}, n_boot=10,
                    rng=np.random.default_rng(0))


def test_format_table():
    row = {"signal": "probe", "n": 120, "prevalence": 0.25, "auroc": 0.8124, "auroc_lo": 0.7512,
           "auroc_hi": 0.8691, "auprc": 0.6, "auprc_lo": 0.5, "auprc_hi": 0.7, "aurc_01": 0.1,
           "e_aurc_01": 0.05, "aurc_err": 0.12, "e_aurc_err": 0.03, "spearman": -0.61234,
           "spearman_lo": -0.7, "spearman_hi": -0.52, "enrichment_at_10pct": 2.5,
           "ece": float("nan"), "brier": 0.1}
    text = format_table([row, {**row, "signal": "neg_sigma_long_name"}])
    lines = text.splitlines()
    assert len(lines) == 4                       # header, rule, 2 rows
    assert len({len(line) for line in lines}) == 1  # fixed width
    assert "0.812 [0.75, 0.87]" in lines[2]
    assert "-0.612 [-0.70, -0.52]" in lines[2]
    assert "0.250" in lines[2] and "120" in lines[2] and "nan" in lines[2]
    assert lines[3].startswith("neg_sigma_long_name")


def test_plot_audit_writes_pngs(tmp_path):
    from alprobe.plots import plot_audit

    signals, e, tau = _signals(n=120)
    prefix = str(tmp_path / "audit")
    paths = plot_audit(signals, e, tau, prefix, probabilities={"probe"})
    assert paths == [f"{prefix}_risk_coverage.png", f"{prefix}_reliability.png",
                     f"{prefix}_deciles.png"]
    for p in paths:
        with open(p, "rb") as fh:
            data = fh.read()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_fast_auprc_and_spearman_match_sklearn_and_scipy_with_ties():
    """The audit's own average precision and Spearman (no input checks, bootstrapped
    thousands of times) give scikit-learn's and SciPy's values, ties included."""
    from scipy.stats import spearmanr
    from sklearn.metrics import average_precision_score

    rng = np.random.default_rng(3)
    checked = 0
    for _ in range(200):
        n = int(rng.integers(3, 50))
        s = np.round(rng.normal(size=n), int(rng.integers(0, 3)))  # 0 decimals: many ties
        e = rng.gamma(2.0, size=n)
        tau = float(np.quantile(e, rng.uniform(0.1, 0.9)))
        y = (e > tau).astype(int)
        if y.sum() == 0 or np.ptp(s) == 0:
            continue
        assert auprc(s, e, tau) == pytest.approx(average_precision_score(y, -s), abs=1e-12)
        assert spearman(s, e) == pytest.approx(spearmanr(s, e).statistic, abs=1e-12)
        checked += 1
    assert checked > 150
