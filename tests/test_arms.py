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


def _cfg(rule: str):
    data = copy.deepcopy(TINY_CAMPAIGN)
    data["select"]["rule"] = rule
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
    assert [s.name for s in arm.extra_stages()] == ["latent"]
    frames = [Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]], info={"latent_dist": d})
              for d in (0.1, 0.5)]
    conf = arm.confidence(frames)
    assert conf[0] > conf[1]  # nearer the training set: more trusted


def test_arms_differ_where_their_strategies_do():
    probe, ens, rnd = (make_arm(_cfg(r)) for r in ("probe", "ensemble", "random"))
    assert probe.trains_probe() and probe.holds_calibration() and probe.training_splits() == (
        "train",)
    assert ens.committee_size() == ens.cfg.committee.members > 1
    assert [s.name for s in ens.extra_stages()] == ["deviation"]
    assert rnd.unbiased and not probe.unbiased and not ens.unbiased
    trust = np.linspace(0.0, 1.0, 20)
    pick, _ = probe.select(_cands(trust, "trust"), 3, np.random.default_rng(0))
    assert 0 in pick and max(trust[pick]) < 0.5  # the least trusted
    pick, _ = rnd.select(_cands(trust, "trust"), 3, np.random.default_rng(0))
    assert len(set(pick.tolist())) == 3
