"""PROBE on its own for a MACE model file: `alprobe probe fit/score` and TrustCalculator,
with the tiny real MACE model of conftest and HF/STO-3G water labels."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from ase.build import molecule
from ase.io import read, write

from alprobe.cli import main


@pytest.fixture(scope="module")
def unseen(tmp_path_factory):
    """36 rattled water frames the tiny model never saw, HF/STO-3G labels (extxyz)."""
    from alprobe.frames import set_reference
    from alprobe.dft import DFTLevel, label_atoms

    rng = np.random.default_rng(11)
    level = DFTLevel(method="hf", basis="sto-3g", density_fit=False)
    frames = []
    for i in range(36):
        a = molecule("H2O")
        a.positions += rng.normal(0, 0.01 + 0.004 * i, a.positions.shape)
        r = label_atoms(a, level)
        frames.append(set_reference(a, r.energy, r.forces))
    path = tmp_path_factory.mktemp("trust") / "unseen.extxyz"
    write(path, frames, format="extxyz")
    return path


def test_probe_fit_refuses_the_backbones_training_frames(tiny_model, water_frames, tmp_path,
                                                         capsys):
    write(tmp_path / "train.extxyz", water_frames[:14], format="extxyz")
    write(tmp_path / "mixed.extxyz", water_frames[10:16], format="extxyz")
    code = main(["probe", "fit", str(tmp_path / "mixed.extxyz"), "--backbone", tiny_model,
                 "-o", str(tmp_path / "p.pt"), "--train-frames", str(tmp_path / "train.extxyz")])
    assert code == 2
    err = capsys.readouterr().err
    assert "4 of 6 frames are in the backbone's training set" in err
    assert not (tmp_path / "p.pt").exists()


def test_probe_fit_and_score_cli(tiny_model, water_frames, unseen, tmp_path, capsys):
    write(tmp_path / "train.extxyz", water_frames[:14], format="extxyz")
    probe = tmp_path / "probe.pt"
    assert main(["probe", "fit", str(unseen), "--backbone", tiny_model, "-o", str(probe),
                 "--train-frames", str(tmp_path / "train.extxyz"), "--members", "3"]) == 0
    out = capsys.readouterr().out
    assert "probe fitted on 36 frames: threshold" in out and "18 reliable / 18 unreliable" in out
    assert probe.is_file()
    scored = tmp_path / "scored.extxyz"
    assert main(["probe", "score", str(unseen), "--backbone", tiny_model, "--probe", str(probe),
                 "-o", str(scored)]) == 0
    frames = read(scored, index=":")
    assert len(frames) == 36
    for a in frames:
        assert 0.0 <= a.info["trust"] <= 1.0
        assert a.arrays["atom_importance"].sum() == pytest.approx(1.0, abs=1e-5)
    rows = list(csv.DictReader(open(scored.with_suffix(".csv"))))
    assert len(rows) == 36 and float(rows[0]["trust"]) == pytest.approx(frames[0].info["trust"])


def test_trust_calculator_in_ase_md(tiny_model, unseen, tmp_path):
    from ase import units
    from ase.md.langevin import Langevin

    from alprobe import TrustCalculator
    from alprobe.backbone import load_model, predict
    from alprobe.frames import read_labeled
    from alprobe.trust import LowTrustError, fit_probe

    probe = tmp_path / "probe.pt"
    fit_probe(read_labeled(unseen), tiny_model, probe)
    atoms = molecule("H2O")
    atoms.calc = TrustCalculator(tiny_model, probe)
    dyn = Langevin(atoms, 0.5 * units.fs, temperature_K=300, friction=0.01 / units.fs,
                   rng=np.random.default_rng(0))
    seen = []
    dyn.attach(lambda: seen.append(atoms.calc.results["trust"]), interval=1)
    dyn.run(10)
    assert len(seen) == 11 and all(0 <= t <= 1 for t in seen)
    r = atoms.calc.results
    (p,) = predict(load_model(tiny_model), [atoms])
    np.testing.assert_allclose(r["forces"], p.forces, atol=1e-8)  # the backbone's own pass
    assert r["energy"] == pytest.approx(p.energy, abs=1e-8)
    assert r["atom_importance"].shape == (3,)
    # a floor above every trust stops the dynamics after `patience` steps
    stop = molecule("H2O")
    stop.calc = TrustCalculator(tiny_model, probe, floor=1.01, patience=3)
    dyn = Langevin(stop, 0.5 * units.fs, temperature_K=300, friction=0.01 / units.fs,
                   rng=np.random.default_rng(0))
    with pytest.raises(LowTrustError, match="3 consecutive"):
        dyn.run(10)
    calls = []
    cb = molecule("H2O")
    cb.calc = TrustCalculator(tiny_model, probe, floor=1.01, patience=2,
                              on_low_trust=lambda a, t: calls.append(t))
    cb.get_forces()
    cb.positions[0, 0] += 0.01
    cb.get_forces()
    assert len(calls) == 1
