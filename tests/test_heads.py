"""Head committees (committee.kind: heads): members are readout heads trained on the
backbone's frozen body, scored from one body pass. Real tiny MACE models, real mace-torch
readout-only fine-tunes, and a pool campaign on a real LocalCluster."""

from __future__ import annotations

import numpy as np
import pytest

from alprobe.config import parse_campaign

from .test_pool import _pool_campaign


@pytest.fixture(scope="module")
def head_member(tiny_model, water_frames, tmp_path_factory):
    """A head-committee member of the tiny model: fresh readouts, body frozen (freeze 6)."""
    from alprobe.tasks import train_task
    from alprobe.config import BackboneConfig

    out = tmp_path_factory.mktemp("heads") / "member1.model"
    settings = BackboneConfig(channels=8, dtype="float64", finetune_epochs=3)
    info = train_task(water_frames[:10], water_frames[10:12], str(out), settings, 5, None, 3,
                      None, tiny_model)
    return info["path"]


def test_head_member_shares_the_body_and_one_pass_matches_separate_passes(
        tiny_model, head_member, water_frames):
    import torch

    from alprobe.backbone import committee_predict, load_model, predict, shares_body

    a = torch.load(tiny_model, weights_only=False)
    b = torch.load(head_member, weights_only=False)
    assert shares_body(a, b)
    # the readouts were drawn afresh and trained: they differ from the backbone's
    ra, rb = a.readouts.state_dict(), b.readouts.state_dict()
    assert any(not torch.equal(ra[k], rb[k]) for k in ra)
    frames = water_frames[12:16]
    one = committee_predict([a, b], frames)
    for k, m in enumerate((a, b)):
        sep = predict(m, frames)
        for (e, f), p in zip(one[k], sep):
            assert e == pytest.approx(p.energy, abs=1e-9)
            np.testing.assert_allclose(f, p.forces, atol=1e-9)
    assert abs(one[0][0][0] - one[1][0][0]) > 1e-6  # two heads, two answers
    energy_only = committee_predict([a, b], frames, forces=False)
    assert [e for e, _ in energy_only[1]] == pytest.approx([e for e, _ in one[1]])
    assert all(f is None for _, f in energy_only[1])
    first = committee_predict([a, b], frames, forces="first")  # what an MD step needs
    np.testing.assert_allclose(first[0][0][1], one[0][0][1], atol=1e-12)
    assert first[1][0][1] is None and first[1][0][0] == pytest.approx(one[1][0][0])
    # a model with another body is predicted on its own, not through the shared pass
    other = load_model(tiny_model)
    c = torch.load(head_member, weights_only=False)
    with torch.no_grad():
        next(c.interactions.parameters()).add_(0.1)
    assert not shares_body(other, c)
    mixed = committee_predict([other, c], frames)
    assert mixed[1][0][0] == pytest.approx(predict(c, frames[:1])[0].energy, abs=1e-9)


def test_pool_campaign_with_a_head_committee(water_pool, tmp_path):
    """The ensemble rule on a head committee: members 1..M-1 of every generation share the
    backbone's body, candidates carry sigma_e (energy signal: no member forces)."""
    import torch

    from alprobe import open_ledger, run
    from alprobe.backbone import shares_body
    from alprobe.ledger import read_stages

    cfg = _pool_campaign(water_pool, generations=1)
    cfg["select"] = {**cfg["select"], "rule": "ensemble"}
    cfg["committee"] = {"members": 3, "kind": "heads", "signal": "energy"}
    d = tmp_path / "heads"
    result = run(parse_campaign(cfg), d, log=None)
    st = read_stages(d)
    for g in (0, 1):
        backbone = torch.load(st[f"gen{g:03d}/train"]["path"], weights_only=False)
        members = st[f"gen{g:03d}/committee"]["members"]
        assert len(members) == 2
        for p in members:
            assert shares_body(backbone, torch.load(p, weights_only=False))
    cands = open_ledger(d).keys(generation=1)
    scored = [k for k in cands if "sigma_e" in k]
    assert scored and all(np.isfinite(k["sigma_e"]) and k["sigma_e"] >= 0 for k in scored)
    assert all(not np.isfinite(k["sigma_f"]) for k in scored)
    assert result.metrics[-1]["labels"] == result.metrics[0]["labels"] + 4
