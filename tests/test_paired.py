"""Paired comparison statistics and data decisions on hand-made inputs with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from alprobe.dataset import calibration_mask, group_split, random_subset, spread_pick
from alprobe.paired import (aulc, bootstrap_mae_ci, labels_to_target, paired_difference,
                            value_at)


def test_paired_difference_resolves_a_consistent_gap_and_not_noise():
    # A is better than B by 2 in every replica, with small noise: resolved, A better
    a = np.array([10.0, 12.0, 11.0, 13.0, 9.0])
    b = a + np.array([2.1, 1.9, 2.0, 2.2, 1.8])
    d = paired_difference(a, b)
    assert d.mean == pytest.approx(-2.0)
    assert d.lo < -2.0 < d.hi < 0 and d.resolved and d.n == 5
    assert "resolved, A is better" in d.verdict("A", "B", "meV/Å")
    # the same per-replica values, unpaired noise of +-3 around 0: not resolved
    b2 = a + np.array([3.0, -3.0, 2.5, -2.0, -0.5])
    d2 = paired_difference(a, b2)
    assert d2.lo < 0 < d2.hi and not d2.resolved
    assert "not resolved" in d2.verdict("A", "B")
    # the t-interval by hand: mean -2, sd 0.158, t(0.975, 4) = 2.776
    assert d.hi - d.mean == pytest.approx(2.776 * np.std(b - a, ddof=1) / np.sqrt(5), rel=1e-3)


def test_paired_difference_skips_missing_replicas_and_needs_two():
    d = paired_difference([1.0, np.nan, 3.0], [2.0, 5.0, np.nan])
    assert d.n == 1 and d.mean == -1.0 and not d.resolved
    assert paired_difference([], []).n == 0


def test_aulc_is_mean_log_mae_over_the_label_range():
    labels, mae = [10, 20, 40], [100.0, 100.0, 100.0]
    assert aulc(labels, mae, 10, 40) == pytest.approx(2.0)
    # log10 MAE falls linearly from 2 to 1 over [0, 100]: mean 1.5
    assert aulc([0, 100], [100.0, 10.0], 0, 100) == pytest.approx(1.5)
    assert aulc([0, 100], [100.0, 10.0], 0, 50) == pytest.approx(1.75)
    assert np.isnan(aulc([10, 20], [1.0, 1.0], 5, 20))  # the curve does not span it


def test_labels_to_target_interpolates_the_first_crossing():
    labels, mae = [10, 20, 30], [100.0, 50.0, 20.0]
    assert labels_to_target(labels, mae, 100.0) == 10
    assert labels_to_target(labels, mae, 50.0) == pytest.approx(20.0)
    # log-linear between (20, 50) and (30, 20): 50 * (20/50)^0.5 = 31.6 at 25 labels
    assert labels_to_target(labels, mae, 50 * (20 / 50) ** 0.5) == pytest.approx(25.0)
    assert np.isnan(labels_to_target(labels, mae, 10.0))


def test_value_at():
    assert value_at([10, 20], [4.0, 2.0], 15) == pytest.approx(3.0)
    assert np.isnan(value_at([10, 20], [4.0, 2.0], 25))


def test_bootstrap_mae_ci_covers_the_mae_and_shrinks_with_frames():
    rng = np.random.default_rng(0)
    small = [np.abs(rng.normal(0, 0.1, 27)) for _ in range(10)]
    large = [np.abs(rng.normal(0, 0.1, 27)) for _ in range(400)]
    m, lo, hi = bootstrap_mae_ci(small, np.random.default_rng(1))
    assert lo < m < hi and m == pytest.approx(np.concatenate(small).mean())
    M, LO, HI = bootstrap_mae_ci(large, np.random.default_rng(1))
    assert (HI - LO) / M < (hi - lo) / m and (HI - LO) / M < 0.1


def test_group_split_keeps_groups_whole():
    groups = [f"t{i // 10}" for i in range(100)]  # 10 trajectories of 10 frames
    test = group_split(groups, 0.25, np.random.default_rng(3))
    assert test.sum() == 30  # whole trajectories until >= 25 frames
    for g in set(groups):
        members = test[[i for i, x in enumerate(groups) if x == g]]
        assert members.all() or not members.any()
    other = group_split(groups, 0.25, np.random.default_rng(4))
    assert not np.array_equal(test, other)  # another replica, another split
    with pytest.raises(ValueError, match="2 groups"):
        group_split(["a"] * 5, 0.5, np.random.default_rng(0))


def test_calibration_subset_and_spread():
    m = calibration_mask(10, 0.0, np.random.default_rng(0), minimum=2)
    assert m.sum() == 2
    assert random_subset(5, None, np.random.default_rng(0)).tolist() == [0, 1, 2, 3, 4]
    s = random_subset(100, 7, np.random.default_rng(0))
    assert len(s) == 7 and len(set(s)) == 7
    assert spread_pick(10, 3).tolist() == [3, 6, 9]
    assert spread_pick(4, 10).tolist() == [0, 1, 2, 3]


def test_recovered_fraction_of_the_ceilings_gain():
    from alprobe.paired import recovered_fraction

    rng = np.random.default_rng(0)
    control = np.array([2.0, 2.1, 1.9, 2.05, 1.95])
    ceiling = control - 0.2  # the oracle gains 0.2 in every replica
    half = control - 0.1 + np.array([0.01, -0.01, 0.0, 0.005, -0.005])
    f, lo, hi, n = recovered_fraction(control, half, ceiling, rng)
    assert n == 5 and f == pytest.approx(0.5) and lo < 0.5 < hi and hi - lo < 0.2
    worse = control + 0.05
    f, lo, hi, _ = recovered_fraction(control, worse, ceiling, rng)
    assert f == pytest.approx(-0.25) and hi < 0
    # no gain to share, or too few replicas: no number
    assert np.isnan(recovered_fraction(control, half, control + 0.1, rng)[0])
    assert np.isnan(recovered_fraction([1.0], [0.9], [0.8], rng)[0])
    # a missing replica is left out of all three
    f, _, _, n = recovered_fraction([2.0, np.nan, 2.0], [1.9, 1.0, 1.9], [1.8, 1.0, 1.8], rng)
    assert n == 2 and f == pytest.approx(0.5)


def test_bootstrap_quantile_interval_brackets_the_quantile():
    from alprobe.paired import bootstrap_quantile_ci

    v = np.random.default_rng(1).exponential(1.0, 400)
    q, lo, hi = bootstrap_quantile_ci(v, 0.95, np.random.default_rng(2))
    assert q == pytest.approx(np.quantile(v, 0.95))
    assert lo < q < hi and lo > np.quantile(v, 0.85)
    assert all(np.isnan(bootstrap_quantile_ci([], 0.95, np.random.default_rng(0))))
