"""The arm protocol (pure logic): every registered rule is a valid ``select.rule``, and each
arm's selection, training and audit answers follow its strategy."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from ase import Atoms

from alprobe.arms import ARMS, make_arm
from alprobe.config import ConfigError, parse_campaign

from .conftest import TINY_CAMPAIGN


def _cfg(rule: str, **select):
    data = copy.deepcopy(TINY_CAMPAIGN)
    data["select"].update(rule=rule, **select)
    if ARMS.get(rule) is not None and ARMS[rule].needs_pool:
        del data["system"]
        data["pool"] = {"file": "pool.extxyz", "group_key": "traj_id"}
    return parse_campaign(data)


def _cands(values, key, walkers=4):
    return [{"fid": f"f{i}", "walker": i % walkers, "sample": i // walkers, key: v}
            for i, v in enumerate(values)]


def test_every_registered_rule_is_a_valid_config_and_unknown_rules_are_refused():
    for rule in ARMS:
        assert make_arm(_cfg(rule)).rule == rule
    with pytest.raises(ConfigError, match="rule"):
        _cfg("nearest-neighbour")


def test_latent_arm_picks_the_farthest_candidates():
    arm = make_arm(_cfg("latent"))
    rng = np.random.default_rng(0)
    dist = rng.uniform(0, 1, 40)
    pick, info = arm.select(_cands(dist, "latent_dist"), 5, np.random.default_rng(1))
    assert len(pick) == 5 and info["scored"] == 40
    assert dist.argmax() in pick
    assert np.mean(dist[pick]) > np.quantile(dist, 0.7)
    # single model, no probe, no calibration share; its audit row is the latent kNN signal
    assert arm.committee_size() == 1 and not arm.trains_probe() and not arm.holds_calibration()
    assert arm.scoring == "latent"
    frames = [Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]], info={"latent_dist": d})
              for d in (0.1, 0.5)]
    conf = arm.confidence(frames)
    assert conf[0] > conf[1]  # nearer the training set: more trusted


def test_arms_differ_where_their_strategies_do():
    probe, ens, rnd = (make_arm(_cfg(r)) for r in ("probe", "ensemble", "random"))
    assert probe.trains_probe() and probe.holds_calibration() and probe.training_splits() == (
        "train",)
    assert ens.committee_size() == ens.cfg.committee.members > 1
    assert ens.scoring == "deviation"
    assert rnd.unbiased and not probe.unbiased and not ens.unbiased
    trust = np.linspace(0.0, 1.0, 20)
    pick, _ = probe.select(_cands(trust, "trust"), 3, np.random.default_rng(0))
    assert 0 in pick and max(trust[pick]) < 0.5  # the least trusted
    pick, _ = rnd.select(_cands(trust, "trust"), 3, np.random.default_rng(0))
    assert len(set(pick.tolist())) == 3


def test_the_hold_out_is_a_setting_any_arm_can_take_and_it_makes_another_strategy():
    from alprobe.comparison import strategy

    probe, rnd, held = _cfg("probe"), _cfg("random"), _cfg("random", hold_out=True)
    assert make_arm(probe).holds_calibration() and not make_arm(rnd).holds_calibration()
    assert make_arm(held).holds_calibration() and make_arm(held).training_splits() == ("train",)
    assert make_arm(rnd).training_splits() == ("train", "calib")
    assert strategy(held) != strategy(rnd) and "hold-out True" in strategy(held)
    assert strategy(_cfg("probe", hold_out=True)) == strategy(probe)  # its own default


def test_oracle_arm_picks_the_largest_true_errors_with_spacing():
    arm = make_arm(_cfg("oracle", min_spacing=2))
    err = np.array([0.1, 0.9, 0.8, 0.2, 0.05, 0.7, 0.3, 0.6])
    # walkers 0..3 (i % 4), samples i // 4: 0.9 (w1 s0) and 0.7 (w1 s1) are adjacent samples
    pick, info = arm.select(_cands(err, "true_force_rmse"), 3, np.random.default_rng(0))
    assert info["scored"] == 8 and set(pick.tolist()) == {1, 2, 7}
    assert arm.scoring == "oracle"
    assert not arm.holds_calibration() and not arm.trains_probe() and not arm.unbiased


def _two_clusters(n_hot=6, n_cold=6, seed=0):
    """Candidates whose largest errors all sit in one tight cluster of embedding space."""
    r = np.random.default_rng(seed)
    hot = r.normal(0.0, 0.01, (n_hot, 4)) + 5.0
    cold = r.normal(0.0, 0.01, (n_cold, 4))
    err = np.r_[np.linspace(0.9, 0.8, n_hot), np.linspace(0.5, 0.4, n_cold)]
    return np.vstack([hot, cold]), err


@pytest.mark.parametrize("rule, key", [("oracle", "true_force_rmse"), ("latent", "latent_dist"),
                                       ("probe", "trust")])
def test_diversity_spreads_a_batch_that_the_rule_alone_piles_into_one_cluster(rule, key):
    feats, err = _two_clusters()
    vals = 1.0 - err if key == "trust" else err
    cands = _cands(vals, key, walkers=12)  # one sample per walker: no spacing effect
    plain = make_arm(_cfg(rule, min_spacing=0))
    pick, _ = plain.pick(cands, 4, np.random.default_rng(0), feats)
    assert set(pick.tolist()) <= set(range(6))  # all four from the hot cluster
    arm = make_arm(_cfg(rule, min_spacing=0, diversity="farthest_point", shortlist=3))
    pick, info = arm.pick(cands, 4, np.random.default_rng(0), feats)
    assert len(pick) == 4 and 0 in pick.tolist()  # starts from the most wanted
    assert set(pick.tolist()) & set(range(6, 12))  # and reaches the other cluster
    assert info["shortlist"] == 12 and info["spread"] > info["spread_rule"]
    assert arm.strategy() != plain.strategy()
    # without embeddings the rule's batch stands, and the record says why
    pick, info = arm.pick(cands, 4, np.random.default_rng(0), None)
    assert set(pick.tolist()) <= set(range(6)) and "embeddings" in info["diversity"]


def test_diversity_keeps_the_shortlist_the_rule_allows():
    """The batch comes from the rule's shortlist: a committee arm never takes a frame outside
    its trust window, however far it lies in embedding space."""
    feats, err = _two_clusters()
    feats[11] = [100.0, 100.0, 100.0, 100.0]  # the farthest point of all ...
    sigma = np.r_[err[:11], 9.0]  # ... is above the committee's sigma_hi
    cfg = _cfg("ensemble", min_spacing=0, diversity="farthest_point", shortlist=2)
    arm = make_arm(cfg.model_copy(update={"committee": cfg.committee.model_copy(
        update={"sigma_hi": 1.0})}))
    cands = _cands(sigma, "sigma_f", walkers=12)
    pick, info = arm.pick(cands, 3, np.random.default_rng(1), feats)
    assert 11 not in pick.tolist() and info["shortlist"] == 6 and len(pick) == 3


def test_random_arm_with_diversity_spreads_a_random_shortlist():
    feats, _ = _two_clusters(n_hot=20, n_cold=2)
    arm = make_arm(_cfg("random", diversity="farthest_point", shortlist=100))
    cands = [{"fid": f"f{i}", "walker": i, "sample": 0} for i in range(22)]
    pick, info = arm.pick(cands, 2, np.random.default_rng(3), feats)
    # one from each cluster: the shortlist holds every candidate
    assert info["shortlist"] == 22 and len({int(i >= 20) for i in pick}) == 2
