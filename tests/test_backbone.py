"""The MACE adapter on a real (tiny) model trained by mace-torch's own trainer."""

from __future__ import annotations

import numpy as np
import pytest

from alprobe.backbone import (BackboneError, MaceCalculator, load_model, model_info, predict,
                              train_backbone)
from alprobe.config import BackboneConfig


def test_forces_are_minus_energy_gradient(tiny_model, water_frames):
    model = load_model(tiny_model)
    atoms = water_frames[14].copy()
    (p,) = predict(model, [atoms])
    h = 1e-4
    for i, k in [(0, 0), (1, 2), (2, 1)]:
        plus, minus = atoms.copy(), atoms.copy()
        plus.positions[i, k] += h
        minus.positions[i, k] -= h
        ep, em = (q.energy for q in predict(model, [plus, minus]))
        assert p.forces[i, k] == pytest.approx(-(ep - em) / (2 * h), abs=1e-5)
    assert np.abs(p.forces).max() > 1e-3  # a real, non-trivial force field


def test_embeddings_are_last_layer_invariants(tiny_model, water_frames):
    model = load_model(tiny_model)
    info = model_info(model)
    assert info["atomic_numbers"] == [1, 8]
    assert info["n_features"] == 8
    preds = predict(model, water_frames[:3], batch_size=2)
    assert [p.features.shape for p in preds] == [(3, 8)] * 3
    # the same structure alone or in a batch gives the same numbers
    (alone,) = predict(model, [water_frames[2]])
    assert np.allclose(alone.features, preds[2].features, atol=1e-10)
    assert alone.energy == pytest.approx(preds[2].energy, abs=1e-9)
    # rotation invariance of the embeddings and energy
    rot = water_frames[2].copy()
    rot.rotate(73, "z", center="COM")
    (r,) = predict(model, [rot])
    assert np.allclose(r.features, alone.features, atol=1e-8)
    assert r.energy == pytest.approx(alone.energy, abs=1e-8)


def test_calculator_matches_predict_and_keeps_features(tiny_model, water_frames):
    model = load_model(tiny_model)
    atoms = water_frames[5].copy()
    atoms.calc = MaceCalculator(model)
    e = atoms.get_potential_energy()
    (p,) = predict(model, [water_frames[5]])
    assert e == pytest.approx(p.energy)
    assert np.allclose(atoms.get_forces(), p.forces)
    assert np.allclose(atoms.calc.results["node_features"], p.features)


def test_training_reduces_error(tiny_model, water_frames):
    """The trained model beats a constant: its force MAE is below the mean |F| of the data."""
    model = load_model(tiny_model)
    preds = predict(model, water_frames)
    ref = np.concatenate([a.arrays["ref_forces"] for a in water_frames])
    pred = np.concatenate([p.forces for p in preds])
    assert np.abs(pred - ref).mean() < np.abs(ref).mean()


def test_finetune_from_local_model_file(tiny_model, water_frames, tmp_path):
    """A user-supplied model file is fine-tuned by mace-torch (foundation path)."""
    settings = BackboneConfig(channels=8, epochs=2, dtype="float64")
    info = train_backbone(water_frames[:14], water_frames[14:], tmp_path / "ft.model", settings,
                          seed=1, foundation=tiny_model)
    new = load_model(info["path"])
    old = load_model(tiny_model)
    (a,) = predict(new, [water_frames[0]])
    (b,) = predict(old, [water_frames[0]])
    assert a.energy != b.energy  # the weights moved
    assert model_info(new)["n_features"] == model_info(old)["n_features"]


def test_bad_model_files(tmp_path, tiny_model):
    with pytest.raises(BackboneError, match="not found"):
        load_model(tmp_path / "missing.model")
    cut = tmp_path / "cut.model"
    data = open(tiny_model, "rb").read()
    cut.write_bytes(data[: len(data) // 3])
    with pytest.raises(BackboneError, match="cannot load"):
        load_model(cut)
    import torch

    other = tmp_path / "other.model"
    torch.save(torch.nn.Linear(2, 2), other)
    with pytest.raises(BackboneError, match="not a MACE model"):
        load_model(other)


def test_first_pass_equals_later_passes(tmp_path, water_frames):
    """A fresh process gives the same forces on its first and later passes (resume = rerun)."""
    import subprocess
    import sys

    from alprobe.backbone import train_backbone

    info = train_backbone(water_frames[:6], water_frames[6:8], tmp_path / "m.model",
                          BackboneConfig(channels=8, epochs=1), seed=0)  # float32, as in runs
    assert info["cpu_s"] > 0.5  # the trainer child's CPU, reported by the sandbox
    code = (
        "import numpy as np; from ase.build import molecule; import alprobe.backbone as bb\n"
        f"m = bb.load_model({info['path']!r}); a = molecule('H2O')\n"
        "f = [bb.predict(m, [a])[0].forces for _ in range(3)]\n"
        "print(all(np.array_equal(f[0], x) for x in f))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "True"


def test_all_layer_invariants_come_from_the_same_pass(tiny_model, water_frames):
    """features_all holds the invariant channels of every interaction layer: the last layer's
    are its tail, and they equal the last-layer features."""
    from alprobe.backbone import load_model, predict

    model = load_model(tiny_model)
    (p,) = predict(model, water_frames[:1])
    assert p.features.shape == (3, 8) and p.features_all.shape == (3, 16)  # 2 layers x 8x0e
    np.testing.assert_array_equal(p.features_all[:, -8:], p.features)
    assert p.probe_features("all") is p.features_all and p.probe_features("last") is p.features


def _pid(emit):
    import os

    return os.getpid()


def test_training_runs_in_a_sandbox_child_with_a_time_limit_and_reports_failures(
        water_frames, tmp_path):
    """mace-torch's trainer runs in a child of the sandbox's fork server: killed at
    backbone.train_timeout_s (no model written), and a trainer that fails (here: a negative
    learning rate) is reported with its log, while the calling process carries on."""
    import os

    from alprobe import sandbox

    assert sandbox.call(_pid).status == "ok"  # the fork server is up (its start counts too)
    slow = BackboneConfig(channels=8, epochs=500, dtype="float64", train_timeout_s=8)
    with pytest.raises(BackboneError, match="exceeded backbone.train_timeout_s"):
        train_backbone(water_frames[:12], water_frames[12:14], tmp_path / "slow.model", slow,
                       seed=0)
    assert not (tmp_path / "slow.model").exists()
    assert (tmp_path / "slow.log").stat().st_size > 0  # the trainer's own log
    assert sandbox.server_pid() not in (None, os.getpid())
    bad = BackboneConfig.model_construct(**{**BackboneConfig(channels=8, epochs=1).model_dump(),
                                           "lr": -1.0})
    with pytest.raises(BackboneError, match="mace training failed"):
        train_backbone(water_frames[:12], water_frames[12:14], tmp_path / "bad.model", bad,
                       seed=0)
    assert not (tmp_path / "bad.model").exists()
