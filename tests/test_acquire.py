"""Selection rules (alprobe.acquire): pure numpy, no heavy imports."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from alprobe.acquire import select_least_trusted, select_random


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def one_walker(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.zeros(n, dtype=int), np.arange(n)


def test_lowest_trust_first_without_spacing():
    r = rng(1)
    trust = r.permutation(np.linspace(0.0, 1.0, 20))
    walker, sample = one_walker(20)
    for budget in (1, 3, 7):
        got = select_least_trusted(trust, walker, sample, budget, 0, rng=rng(0))
        expected = np.sort(np.argsort(trust)[:budget])
        np.testing.assert_array_equal(got, expected)
        assert got.dtype == np.int64


def test_budget_is_respected_and_indices_are_unique_and_sorted():
    r = rng(2)
    trust = r.random(50)
    walker = r.integers(0, 4, 50)
    sample = np.concatenate([np.arange(k) for k in np.bincount(walker, minlength=4)])
    walker = np.sort(walker)
    for budget, spacing in [(5, 0), (5, 2), (12, 3), (1, 1)]:
        got = select_least_trusted(trust, walker, sample, budget, spacing, rng=rng(0))
        assert len(got) == budget
        assert len(np.unique(got)) == len(got)
        assert np.all(np.diff(got) > 0)


def test_zero_budget_and_empty_input():
    trust = np.array([0.1, 0.2])
    walker, sample = one_walker(2)
    assert len(select_least_trusted(trust, walker, sample, 0, 2, rng=rng())) == 0
    empty = np.zeros(0)
    assert len(select_least_trusted(empty, empty.astype(int), empty.astype(int), 3, 2,
                                    rng=rng())) == 0


def test_min_spacing_on_one_walker():
    # trust rises with the sample index: without the rule the picks would be 0, 1, 2
    trust = np.linspace(0.0, 0.9, 10)
    walker, sample = one_walker(10)
    got = select_least_trusted(trust, walker, sample, 3, 3, rng=rng())
    np.testing.assert_array_equal(got, [0, 3, 6])
    got = select_least_trusted(trust, walker, sample, 3, 2, rng=rng())
    np.testing.assert_array_equal(got, [0, 2, 4])
    # 0 and 1 disable the rule
    for spacing in (0, 1):
        got = select_least_trusted(trust, walker, sample, 3, spacing, rng=rng())
        np.testing.assert_array_equal(got, [0, 1, 2])


def test_min_spacing_checks_both_sides():
    # the lowest trust sits in the middle; its neighbours on both sides are next lowest
    trust = np.array([0.9, 0.8, 0.3, 0.2, 0.1, 0.25, 0.35, 0.85, 0.95])
    walker, sample = one_walker(9)
    got = select_least_trusted(trust, walker, sample, 3, 2, rng=rng())
    # 4 first; 3 and 5 are too close; then 2 (0.3) and 6 (0.35)
    np.testing.assert_array_equal(got, [2, 4, 6])


def test_min_spacing_is_per_walker():
    # two walkers with the same (low) trust at the same samples: adjacent across walkers is fine
    walker = np.array([0, 0, 0, 1, 1, 1])
    sample = np.array([0, 1, 2, 0, 1, 2])
    trust = np.array([0.1, 0.2, 0.9, 0.15, 0.25, 0.95])
    got = select_least_trusted(trust, walker, sample, 4, 2, rng=rng())
    # 0 (w0 s0), 3 (w1 s0) are taken; 1 and 4 are 1 sample from a pick on their walker;
    # then 2 (w0 s2) and 5 (w1 s2)
    np.testing.assert_array_equal(got, [0, 2, 3, 5])
    assert np.all(np.abs(np.diff(sample[got][walker[got] == 0])) >= 2)
    # with spacing 2 and budget 2 the two lowest (on different walkers, same sample) are taken
    got = select_least_trusted(trust, walker, sample, 2, 2, rng=rng())
    np.testing.assert_array_equal(got, [0, 3])


def test_min_spacing_invariant_on_random_data():
    r = rng(5)
    n_w, n_s = 5, 30
    walker = np.repeat(np.arange(n_w), n_s)
    sample = np.tile(np.arange(n_s), n_w)
    order = r.permutation(len(walker))  # candidates arrive in any order
    walker, sample = walker[order], sample[order]
    trust = r.random(len(walker))
    spacing = 4
    got = select_least_trusted(trust, walker, sample, 25, spacing, rng=rng(1))
    assert len(got) == 25
    for w in range(n_w):
        s = np.sort(sample[got][walker[got] == w])
        assert np.all(np.diff(s) >= spacing), (w, s)
    # greedy: every candidate left out is either more trusted than every pick, or too close
    # to a pick of its own walker that is at least as little trusted
    chosen = set(got.tolist())
    worst_pick = trust[got].max()
    for i in range(len(trust)):
        if i in chosen or trust[i] >= worst_pick:
            continue
        blockers = [j for j in got if walker[j] == walker[i] and abs(sample[j] - sample[i]) < spacing
                    and trust[j] <= trust[i]]
        assert blockers, i


def test_nan_trust_is_taken_last():
    trust = np.array([np.nan, 0.9, np.nan, 0.5, 0.99, np.nan])
    walker = np.arange(6)  # one walker each: no spacing conflicts
    sample = np.zeros(6, dtype=int)
    got = select_least_trusted(trust, walker, sample, 3, 2, rng=rng())
    np.testing.assert_array_equal(got, [1, 3, 4])
    got = select_least_trusted(trust, walker, sample, 4, 2, rng=rng())
    assert set(got.tolist()) >= {1, 3, 4} and np.isnan(trust[sorted(set(got) - {1, 3, 4})]).all()
    # which NaN comes first is random, but always one of them
    picks = {int(np.setdiff1d(select_least_trusted(trust, walker, sample, 4, 0, rng=rng(s)),
                              [1, 3, 4])[0]) for s in range(30)}
    assert picks == {0, 2, 5}


def test_all_nan_is_still_selectable():
    trust = np.full(8, np.nan)
    walker, sample = one_walker(8)
    got = select_least_trusted(trust, walker, sample, 3, 3, rng=rng(4))
    assert len(got) == 3
    assert np.all(np.diff(sample[got]) >= 3)


def test_same_seed_same_result():
    r = rng(7)
    trust = np.round(r.random(60), 1)  # many ties
    walker = r.integers(0, 3, 60)
    sample = r.integers(0, 40, 60)
    a = select_least_trusted(trust, walker, sample, 10, 2, rng=rng(42))
    b = select_least_trusted(trust, walker, sample, 10, 2, rng=rng(42))
    np.testing.assert_array_equal(a, b)


def test_ties_are_broken_by_rng():
    trust = np.full(40, 0.5)
    walker = np.arange(40)  # no spacing conflicts
    sample = np.zeros(40, dtype=int)
    results = {tuple(select_least_trusted(trust, walker, sample, 5, 2, rng=rng(s)))
               for s in range(10)}
    assert len(results) > 1
    # and not always the first indices (a stable sort would give 0..4 every time)
    assert results != {(0, 1, 2, 3, 4)}


def test_budget_larger_than_candidates():
    trust = np.array([0.3, 0.1, 0.2, np.nan])
    walker = np.arange(4)
    sample = np.zeros(4, dtype=int)
    got = select_least_trusted(trust, walker, sample, 100, 2, rng=rng())
    np.testing.assert_array_equal(got, [0, 1, 2, 3])
    # on one walker only the eligible ones come back: with spacing 2 at most every other sample
    trust = np.linspace(0.1, 0.5, 5)
    walker, sample = one_walker(5)
    got = select_least_trusted(trust, walker, sample, 100, 2, rng=rng())
    np.testing.assert_array_equal(got, [0, 2, 4])


@pytest.mark.parametrize("n, budget", [(10, 3), (10, 10), (5, 20), (1, 1), (30, 0)])
def test_select_random(n, budget):
    got = select_random(n, budget, rng=rng(3))
    assert len(got) == min(n, budget)
    assert len(np.unique(got)) == len(got)
    assert np.all(np.diff(got) > 0)
    assert got.dtype == np.int64
    if len(got):
        assert got.min() >= 0 and got.max() < n


def test_select_random_is_seeded_and_random():
    a = select_random(100, 10, rng=rng(9))
    b = select_random(100, 10, rng=rng(9))
    np.testing.assert_array_equal(a, b)
    results = {tuple(select_random(100, 10, rng=rng(s))) for s in range(5)}
    assert len(results) > 1
    # over many draws every index shows up (uniform, not a fixed subset)
    seen = np.concatenate([select_random(20, 5, rng=rng(s)) for s in range(60)])
    assert set(seen.tolist()) == set(range(20))


def test_light_modules_do_not_import_torch_or_pyscf():
    code = (
        "import sys, json\n"
        "import alprobe.acquire, alprobe.config, alprobe.metrics, alprobe.frames, "
        "alprobe.explore\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('torch', 'pyscf', 'mace', 'e3nn', 'distributed', 'dask'))\n"
        "print(json.dumps(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True)
    heavy = json.loads(out.stdout.strip().splitlines()[-1])
    assert heavy == [], heavy


def test_deviation_window_bounds():
    from alprobe.acquire import deviation_window

    s = np.array([0.01, 0.05, 0.1, 0.3, np.nan, 0.2])
    assert deviation_window(s, 0.05, 0.3).tolist() == [False, True, True, False, False, True]
    assert deviation_window(s, 0.0, None).tolist() == [True, True, True, True, False, True]


def test_select_by_deviation_takes_the_largest_inside_the_window():
    from alprobe.acquire import select_by_deviation

    sigma = np.array([0.02, 0.50, 0.12, 0.25, 0.08, 0.30, 0.15])
    walker = np.arange(7)  # one frame per walker: spacing never binds
    sample = np.zeros(7, dtype=int)
    rng = np.random.default_rng(0)
    # window [0.05, 0.3): 0.50 and 0.30 are broken, 0.02 is below lo
    pick = select_by_deviation(sigma, walker, sample, 3, 2, 0.05, 0.3, rng=rng)
    assert sorted(sigma[pick].tolist()) == [0.12, 0.15, 0.25]
    # no ceiling: pure top of the ranking
    pick = select_by_deviation(sigma, walker, sample, 2, 2, 0.0, None, rng=rng)
    assert sorted(sigma[pick].tolist()) == [0.30, 0.50]
    # fewer frames in the window than the budget: only those
    pick = select_by_deviation(sigma, walker, sample, 5, 2, 0.2, 0.4, rng=rng)
    assert sorted(sigma[pick].tolist()) == [0.25, 0.30]


def test_select_by_deviation_spacing_and_determinism():
    from alprobe.acquire import select_by_deviation

    rng = np.random.default_rng(4)
    sigma = rng.random(200)
    walker = np.repeat(np.arange(4), 50)
    sample = np.tile(np.arange(50), 4)
    a = select_by_deviation(sigma, walker, sample, 20, 3, 0.1, 0.9,
                            rng=np.random.default_rng([1, 2]))
    b = select_by_deviation(sigma, walker, sample, 20, 3, 0.1, 0.9,
                            rng=np.random.default_rng([1, 2]))
    assert np.array_equal(a, b) and len(a) == 20
    assert np.all((sigma[a] >= 0.1) & (sigma[a] < 0.9))
    for w in range(4):
        s = np.sort(sample[a][walker[a] == w])
        assert np.all(np.diff(s) >= 3)


def test_power_sampling_draws_in_proportion_to_score_and_respects_spacing():
    from alprobe.acquire import acquisition_order, select_least_trusted

    score = np.array([0.0, 1.0, 2.0, 3.0, np.nan])
    rng = np.random.default_rng(0)
    firsts = np.array([acquisition_order(score, rng=rng, sampling="power", power=1.0)[0]
                       for _ in range(6000)])
    freq = np.bincount(firsts, minlength=5) / len(firsts)
    pos = score[:4] - 0.0 + 1e-3 * 3.0  # shifted to be positive, as documented
    np.testing.assert_allclose(freq[:4], pos / pos.sum(), atol=0.02)
    assert freq[4] == 0  # an unscored frame is never drawn before a scored one
    # a large power is the top rule; power 0 is uniform
    top = acquisition_order(score, rng=rng, sampling="top")
    assert list(acquisition_order(score, rng=rng, sampling="power", power=1e6)[:4]) == \
        list(top[:4]) == [3, 2, 1, 0]
    uni = [acquisition_order(score, rng=rng, sampling="power", power=0.0)[0] for _ in range(4000)]
    np.testing.assert_allclose(np.bincount(uni, minlength=5)[:4] / 4000, 0.25, atol=0.03)
    # the walker spacing rule still holds for a drawn batch
    trust = rng.random(60)
    walker, sample = np.repeat(np.arange(3), 20), np.tile(np.arange(20), 3)
    pick = select_least_trusted(trust, walker, sample, 12, 3, rng=rng, sampling="power")
    assert len(pick) == 12
    for w in range(3):
        s = np.sort(sample[pick][walker[pick] == w])
        assert np.all(np.diff(s) >= 3)
    with pytest.raises(ValueError, match="unknown sampling"):
        acquisition_order(score, rng=rng, sampling="softmax")


def test_farthest_point_takes_the_far_end_then_the_middle():
    from alprobe.acquire import farthest_point

    x = np.array([[0.0], [1.0], [2.0], [5.0], [10.0]])
    assert farthest_point(x, 0, 3).tolist() == [0, 4, 3]  # 10 away, then 5 (5 from both)
    assert farthest_point(x, 4, 2).tolist() == [4, 0]
    assert farthest_point(x, 2, 9).tolist()[:1] == [2] and len(farthest_point(x, 2, 9)) == 5
    assert len(farthest_point(x, 0, 0)) == 0


def test_farthest_point_never_repeats_even_for_identical_rows():
    from alprobe.acquire import farthest_point

    x = np.zeros((6, 3))
    got = farthest_point(x, 2, 6).tolist()
    assert sorted(got) == list(range(6)) and got[0] == 2


def test_standardise_and_batch_spread():
    from alprobe.acquire import batch_spread, standardise

    x = np.array([[1.0, 5.0, 3.0], [3.0, 5.0, 9.0], [5.0, 5.0, 6.0]])
    z = standardise(x)
    np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(z.std(axis=0), [1.0, 0.0, 1.0], atol=1e-12)  # constant: 0
    # nearest-neighbour distances 1, 1, 3 -> 5/3
    assert batch_spread(np.array([[0.0], [1.0], [4.0]])) == pytest.approx(5 / 3)
    assert np.isnan(batch_spread(np.zeros((1, 2))))
