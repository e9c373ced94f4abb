"""`alprobe evaluate`: the reliability audit of trust signals on a labeled extxyz file."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase.io import write

from alprobe.cli import main


def test_evaluate_cli_writes_audit(tiny_model, water_frames, tmp_path, capsys):
    from alprobe.config import ProbeConfig
    from alprobe.tasks import fit_probe_task

    probe = tmp_path / "probe.pt"
    r = fit_probe_task(tiny_model, water_frames[:12], ProbeConfig(members=1, epochs=10,
                                                                  error="energy"), 0,
                       str(probe), {})
    assert r["path"], r["reason"]
    write(tmp_path / "test.extxyz", water_frames[8:], format="extxyz")
    write(tmp_path / "train.extxyz", water_frames[:8], format="extxyz")
    code = main(["evaluate", str(tmp_path / "test.extxyz"), "--backbone", tiny_model,
                 "--probe", str(probe), "--committee", tiny_model, tiny_model,
                 "--train-frames", str(tmp_path / "train.extxyz"), "--error", "energy",
                 "--out", str(tmp_path / "audit"), "--n-boot", "50"])
    assert code == 0
    out = capsys.readouterr().out
    for name in ("probe", "ensemble_epsF", "ensemble_Estd", "knn_max", "knn_mean", "energy"):
        assert f"\n{name} " in out
    data = json.loads((tmp_path / "audit" / "audit_audit.json").read_text())
    rows = {r["signal"]: r for r in data["rows"]}
    assert data["n"] == 8 and data["tau"] == pytest.approx(r["meta"]["threshold"])
    # identical committee members never disagree: the ensemble signal is a constant (chance)
    assert rows["ensemble_epsF"]["auroc"] in (0.5,) or np.isnan(rows["ensemble_epsF"]["auroc"])
    assert np.isnan(rows["knn_max"]["ece"]) and np.isfinite(rows["probe"]["brier"])
    for suffix in ("risk_coverage", "reliability", "deciles"):
        assert (tmp_path / "audit" / f"audit_{suffix}.png").stat().st_size > 1000


def test_evaluate_refuses_unlabeled_frames(tiny_model, tmp_path, capsys):
    from ase.build import molecule

    write(tmp_path / "bare.extxyz", [molecule("H2O")], format="extxyz")
    code = main(["evaluate", str(tmp_path / "bare.extxyz"), "--backbone", tiny_model])
    assert code == 2
    assert "frame 0 has no reference energy and forces" in capsys.readouterr().err
