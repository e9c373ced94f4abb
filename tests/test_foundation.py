"""Campaigns from a pretrained backbone (backbone.foundation): a tiny "foundation" MACE the
test pretrains itself (HF/STO-3G labels of rattled CH4, NH3 and CH3OH), fine-tuned with
mace-torch's multihead replay through alprobe's training path, forgetting measured on the
held-back replay frames, and the one-line errors for bad foundation input."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from alprobe.config import ConfigError, parse_campaign

from .conftest import TINY_CAMPAIGN
from .test_pool import _pool_campaign


def _rattled_labeled(names, per, seed):
    from ase.build import molecule

    from alprobe.dft import DFTLevel, label_atoms
    from alprobe.frames import set_reference

    level = DFTLevel(method="hf", basis="sto-3g", density_fit=False)
    rng = np.random.default_rng(seed)
    out = []
    for name in names:
        for k in range(per):
            a = molecule(name)
            a.positions += rng.normal(0, 0.03 + 0.01 * k, a.positions.shape)
            r = label_atoms(a, level)
            assert r.ok, r.reason
            a = set_reference(a, r.energy, r.forces)
            a.info["traj_id"] = f"{name}-{k // 3}"
            out.append(a)
    return out


@pytest.fixture(scope="module")
def foundation(tmp_path_factory):
    """(model path, replay extxyz path): a tiny MACE pretrained from scratch on 24 frames of
    three molecules (H, C, N, O), and those frames as the replay set."""
    from alprobe.backbone import train_backbone
    from alprobe.config import BackboneConfig
    from alprobe.frames import write_extxyz

    d = tmp_path_factory.mktemp("foundation")
    frames = _rattled_labeled(["CH4", "NH3", "CH3OH"], 8, 0)
    write_extxyz(d / "pretrain.extxyz", frames)
    settings = BackboneConfig(channels=8, epochs=4)
    info = train_backbone(frames[1::2] + frames[::4], frames[2::8], d / "foundation.model",
                          settings, seed=0)
    return info["path"], str(d / "pretrain.extxyz")


def test_replay_finetune_keeps_both_heads_and_measures_forgetting(foundation, water_frames,
                                                                  tmp_path):
    from alprobe.backbone import (Replay, campaign_head, load_model, model_heads, predict,
                                  train_backbone)
    from alprobe.config import BackboneConfig
    from alprobe.frames import read_labeled, write_extxyz
    from alprobe.stages.train import _mace_keys

    model, replay_file = foundation
    replay = read_labeled(replay_file)
    write_extxyz(tmp_path / "replay.extxyz", [_mace_keys(a) for a in replay[:18]])
    settings = BackboneConfig(foundation=model, replay_file=replay_file, finetune_epochs=3)
    info = train_backbone(water_frames[:10], water_frames[10:12], tmp_path / "ft.model",
                          settings, seed=1, foundation=model, epochs=3,
                          replay=Replay(str(tmp_path / "replay.extxyz"), False,
                                        tuple(replay[18:])))
    ft = load_model(info["path"])
    assert model_heads(ft) == ["pt_head", "Default"] and campaign_head(ft) == "Default"
    # the campaign reads the fine-tuned head; the pretraining head answers differently
    mine, pt = predict(ft, water_frames[12:14]), predict(ft, water_frames[12:14], head="pt_head")
    assert [p.energy for p in mine] == [p.energy for p in
                                        predict(ft, water_frames[12:14], head="Default")]
    assert abs(mine[0].energy - pt[0].energy) > 1e-3
    np.testing.assert_allclose(mine[0].features, pt[0].features)  # one shared body
    # the fused readouts (hidden units masked to the campaign head) match mace's own forward
    from alprobe.backbone import committee_predict

    (fused,) = committee_predict([ft], water_frames[12:14])
    for (e, f), p in zip(fused, mine):
        assert e == pytest.approx(p.energy, rel=1e-6, abs=1e-5)
        np.testing.assert_allclose(f, p.forces, rtol=1e-4, atol=1e-5)
    rep = info["replay"]
    assert rep["frames"] == 6
    assert rep["force_mae_eV_A"] > 0 and rep["foundation_force_mae_eV_A"] > 0
    assert rep["force_mae_growth"] == pytest.approx(
        rep["force_mae_eV_A"] / rep["foundation_force_mae_eV_A"] - 1)
    # the fine-tuned head learned the water labels: better than the foundation on them
    from alprobe.frames import REF_FORCES

    def mae(preds):
        return np.mean([np.abs(p.forces - a.arrays[REF_FORCES]).mean()
                        for p, a in zip(preds, water_frames[12:16])])

    assert mae(predict(ft, water_frames[12:16])) < mae(predict(load_model(model),
                                                               water_frames[12:16]))


def test_replay_that_mace_turned_off_is_refused(foundation, tmp_path):
    from alprobe.backbone import BackboneError, check_replay_on

    with pytest.raises(BackboneError, match="without multihead replay"):
        check_replay_on(foundation[0], tmp_path / "train.log")


def _campaign(made, **backbone):
    cfg = copy.deepcopy(TINY_CAMPAIGN)
    cfg["backbone"] = {**cfg["backbone"], "foundation": made[0], "replay_file": made[1],
                       **backbone}
    return cfg


def test_bad_foundation_input_gets_one_line(foundation, tmp_path):
    from alprobe.validate import check_campaign

    model, replay = foundation
    for over, needle in [({"replay_file": None}, "foundation needs replay_file"),
                         ({"model_file": model}, "foundation and model_file exclude")]:
        with pytest.raises(ConfigError, match=needle):
            parse_campaign(_campaign(foundation, **over))
    text = tmp_path / "notes.model"
    text.write_text("not a model\n")
    not_mace = tmp_path / "tensor.model"
    import torch

    torch.save({"weights": torch.zeros(3)}, not_mace)
    keys = tmp_path / "replay_keys.extxyz"
    keys.write_text(open(replay).read().replace("ref_energy", "energy_hf"))
    cases = [
        ({"foundation": str(tmp_path / "missing.model")}, "backbone.foundation: file not found"),
        ({"foundation": str(text)}, "backbone.foundation: cannot load model file"),
        ({"foundation": str(not_mace)}, "is not a MACE model file"),
        ({"replay_file": str(keys)}, "backbone.replay_file: .*info\\['ref_energy'\\]"),
        ({"replay_file": str(keys), "replay_energy_key": "energy_hf"}, None),
    ]
    for over, needle in cases:
        problems = check_campaign(parse_campaign(_campaign(foundation, **over)))
        if needle is None:
            assert problems == []
            continue
        assert len(problems) == 1 and "\n" not in problems[0], problems
        assert __import__("re").search(needle, problems[0]), problems
    # elements the campaign needs that the model lacks
    cfg = _campaign(foundation)
    cfg["system"] = {"seeds": ["PH3"]}
    (problem,) = [p for p in check_campaign(parse_campaign(cfg)) if "foundation" in p]
    assert "['P']" in problem and "which the campaign's structures hold" in problem


def test_pool_campaign_from_foundation(foundation, water_pool, tmp_path):
    """A pool campaign from the foundation end to end (real MACE, real LocalCluster): every
    backbone is a multihead replay fine-tune of the foundation, the replay set is split once
    (held-back frames never replayed), and every metrics row carries the forgetting."""
    from alprobe import open_ledger, run
    from alprobe.backbone import load_model, model_heads
    from alprobe.frames import read_labeled
    from alprobe.ledger import read_stages

    cfg = _pool_campaign(water_pool, generations=1)
    cfg["backbone"] = {**cfg["backbone"], "foundation": foundation[0],
                       "replay_file": foundation[1], "replay_samples": 12,
                       "replay_holdout": 0.25, "replay_weight": 4.0}
    d = tmp_path / "fnd"
    result = run(parse_campaign(cfg), d, log=None)
    st = read_stages(d)
    for g in (0, 1):
        path = st[f"gen{g:03d}/train"]["path"]
        assert model_heads(load_model(path)) == ["pt_head", "Default"]
    held = read_labeled(d / "replay" / "replay_holdout.extxyz")
    replayed = read_labeled(d / "replay" / "replay_train.extxyz", "REF_energy", "REF_forces")
    # held back: whole groups (a quarter of the frames); replayed: 12 of the rest
    assert len(replayed) == 12 and 6 <= len(held) <= 12
    key = {tuple(np.round(a.positions.ravel(), 6)) for a in held}
    assert not key & {tuple(np.round(a.positions.ravel(), 6)) for a in replayed}
    for row in result.metrics:
        assert row["replay_force_mae_eV_A"] > 0
        assert row["replay_foundation_force_mae_eV_A"] > 0
        assert np.isfinite(row["replay_force_mae_growth"])
    assert open_ledger(d).count(status="labeled") > 0
    # alprobe status and the report show the forgetting
    from alprobe.report import status_table, write_report

    text = status_table(d)
    assert "replay F MAE meV/Å" in text and "forgetting (backbone.foundation)" in text
    row = [ln for ln in text.splitlines() if "forgetting" in ln]
    assert row
    page = write_report(d).read_text()
    assert "replay F MAE meV/Å" in page
    growth = f"{100 * result.metrics[-1]['replay_force_mae_growth']:+.1f}"
    assert growth in text and growth in page


def test_replay_weight_reaches_mace_through_per_property_loss_weights(tmp_path):
    """mace-torch's fine-tuning loss reads config_energy_weight / config_forces_weight (its
    --weight_pt_head applies only to its MP data): replay_weight writes them into a copy."""
    from ase import Atoms
    from ase.io import read, write

    from alprobe.backbone import Replay, _trainer_args
    from alprobe.config import BackboneConfig

    src = tmp_path / "replay.extxyz"
    a = Atoms("H2O", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
    a.info["REF_energy"] = -2000.0
    a.arrays["REF_forces"] = np.zeros((3, 3))
    write(src, [a, a], format="extxyz")

    def pt_file(weight):
        s = BackboneConfig(foundation="f.model", replay_file="r.extxyz", replay_weight=weight)
        args = _trainer_args(tmp_path / f"w{weight}", s, 2, 2, 0, [], "f.model",
                             Replay(str(src)))
        return args[args.index("--pt_train_file") + 1]

    assert pt_file(1.0) == str(src)
    weighted = read(pt_file(10.0), ":")
    assert len(weighted) == 2
    for b in weighted:
        assert b.info["config_energy_weight"] == b.info["config_forces_weight"] == 10.0
        assert b.info["REF_energy"] == -2000.0
    with pytest.raises(ConfigError, match="replay_weight"):
        cfg = copy.deepcopy(TINY_CAMPAIGN)
        cfg["backbone"] = {**cfg.get("backbone", {}), "replay_weight": 0}
        parse_campaign(cfg)
