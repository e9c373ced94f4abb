"""End to end: a real 2-generation campaign (tiny MACE, PySCF HF/STO-3G, real LocalCluster)."""

from __future__ import annotations

import copy
import filecmp
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from alprobe import open_ledger, run
from alprobe.cli import main
from alprobe.config import ConfigError, parse_campaign
from alprobe.ledger import read_stages

from .conftest import TINY_CAMPAIGN


@pytest.fixture(scope="module")
def finished(tiny_finished):
    return tiny_finished


def _stage(directory: Path, name: str) -> dict:
    return read_stages(directory)[name]


def test_ledger_counts_and_labels(finished):
    directory, result, _ = finished
    L = open_ledger(directory)
    ini = TINY_CAMPAIGN["initial"]
    assert L.count(generation=0) == (ini["n_rattle"] + ini["n_md"] + ini["test_size"]
                                     + ini["stress_size"])
    for gen in (1, 2):
        chosen = L.count(generation=gen, status="labeled") + L.count(generation=gen, status="failed") \
            + L.count(generation=gen, status="rejected") + L.count(generation=gen, status="timeout")
        assert chosen == TINY_CAMPAIGN["select"]["budget"]
        assert L.count(generation=gen, status="candidate") > 0  # the rest stay candidates
        assert L.count(generation=gen, status="selected") == 0  # nothing left half-done
    labeled = L.frames(status="labeled")
    assert all(np.isfinite(a.info["ref_energy"]) for a in labeled)
    assert all(a.arrays["ref_forces"].shape == (3, 3) and np.isfinite(a.arrays["ref_forces"]).all()
               for a in labeled)
    # energies are HF/STO-3G water in eV (about -74.96 Hartree)
    assert all(-2050 < a.info["ref_energy"] < -2030 for a in labeled)
    # every candidate carries the probe's trust and the backbone's prediction
    cands = L.frames(generation=1)
    assert all(0.0 <= a.info["trust"] <= 1.0 for a in cands)
    assert all("pred_forces" in a.arrays for a in cands)


def test_stress_set_and_md_stability(finished, capsys):
    """The stress set: walkers of their own at 1.5x the hottest explore temperature, labeled,
    never counted as labels, trained on or selected; every model measured on it. The final
    model's MD stability at that temperature is recorded and shown by status."""
    directory, result, _ = finished
    L, st = open_ledger(directory), read_stages(directory)
    stress = L.frames(split="stress")
    hot = 1.5 * max(TINY_CAMPAIGN["explore"]["temperatures_K"])
    assert len(stress) == TINY_CAMPAIGN["initial"]["stress_size"]
    assert all(a.info["status"] == "stress" and a.info["temperature_K"] == hot for a in stress)
    assert all(np.isfinite(a.arrays["ref_forces"]).all() for a in stress)
    ids = {a.info["fid"] for a in stress}
    trained = set().union(*(set(st[f"gen{g:03d}/train"]["train_ids"]) for g in range(3)))
    assert not ids & trained and not ids & set(L.fids(split="test"))
    for r in result.metrics:
        assert r["labels"] == L.count(status="labeled", generation=0) - L.count(
            status="labeled", split="test") + sum(L.count(generation=g, status="labeled")
                                                  for g in range(1, r["generation"] + 1))
        assert r["stress_n_test"] == len(stress) and r["stress_force_mae_eV_A"] > 0
    stab = st["gen002/stability"]
    assert stab["walkers"] == 2 and stab["temperature_K"] == hot
    assert len(stab["stops"]) == 2 and 0 <= stab["stable_fraction"] <= 1
    assert stab["run_fs"] == 40 * 0.5 and 0 < stab["first_failure_fs"] <= 20
    assert main(["status", str(directory)]) == 0
    out = capsys.readouterr().out
    assert f"stress frames: {len(stress)}" in out and "MD stability of backbone 2" in out


def test_test_set_never_trained_or_selected(finished):
    directory, _, _ = finished
    L = open_ledger(directory)
    test = set(L.fids(split="test"))
    assert len(test) == TINY_CAMPAIGN["initial"]["test_size"]
    assert all(a.info["generation"] == 0 for a in L.frames(split="test"))
    for gen in range(3):
        assert not test & set(_stage(directory, f"gen{gen:03d}/train")["train_ids"])
        assert not test & set(_stage(directory, f"gen{gen:03d}/probe")["train_ids"])
        # model files record the same training set
        meta = json.loads((directory / "models" / f"gen_{gen:03d}" / "backbone.json").read_text())
        assert not test & set(meta["train_ids"])
    # nor any other model, the bootstrap backbone that drove the first MD included
    models = list((directory / "models").glob("gen_*/*.json"))
    assert any(p.name == "bootstrap.json" for p in models)
    for p in models:
        assert not test & set(json.loads(p.read_text())["train_ids"]), p
    # the test frames come from test walkers of their own: no frame of those trajectories is
    # anything but a test frame
    origins = {a.info["origin"] for a in L.frames(split="test")}
    assert len(test) > 1 and origins == {"test_walker"}
    assert set(L.fids(origin="test_walker")) == test
    walkers = {a.info["test_walker"] for a in L.frames(split="test")}
    from alprobe.config import InitialConfig

    n_walkers = TINY_CAMPAIGN["initial"].get(
        "test_walkers", InitialConfig.model_fields["test_walkers"].default)
    assert len(walkers) == min(n_walkers, len(test))  # spread over the test walkers
    explored = set(L.fids(origin="explore"))
    assert not test & explored
    # the test set was made and labeled while backbone 0 trained (nothing trains on it)
    st = read_stages(directory)
    assert st["gen000/test_walkers"]["n_test"] == len(test)
    # (the stress set is labeled in the same stage)
    assert st["gen000/label_test"]["labeled"] == len(test) + L.count(split="stress",
                                                                     status="stress")
    train0, walk, lab = st["gen000/train"], st["gen000/test_walkers"], st["gen000/label_test"]
    assert walk["t_start"] < train0["t_end"] and train0["t_start"] < lab["t_end"]
    # every label paid for in generation 0, the stress set's included
    assert st["gen000/label"]["labeled"] == (L.count(generation=0, status="labeled")
                                             + L.count(generation=0, status="stress"))


def test_probe_only_sees_out_of_sample_errors(finished):
    directory, _, _ = finished
    backbone_seen: set[str] = set()
    for gen in range(3):
        backbone_seen |= set(_stage(directory, f"gen{gen:03d}/train")["train_ids"])
        probe = _stage(directory, f"gen{gen:03d}/probe")
        assert probe["path"], probe["reason"]
        ids = set(probe["train_ids"])
        assert len(ids) >= 4
        assert not ids & backbone_seen  # never an error on a frame the backbone trained on
        import torch

        blob = torch.load(probe["path"], weights_only=True)
        assert set(blob["meta"]["train_ids"]) == ids
    # the probe's pool grows as held-out labels arrive
    sizes = [len(_stage(directory, f"gen{g:03d}/probe")["train_ids"]) for g in range(3)]
    assert sizes[2] > sizes[0]


def test_metrics_and_status(finished, capsys):
    directory, result, lines = finished
    rows = result.metrics
    assert [r["generation"] for r in rows] == [0, 1, 2]
    for r in rows:
        assert np.isfinite(r["force_mae_eV_A"]) and r["force_mae_eV_A"] > 0
        assert r["force_rmse_eV_A"] >= r["force_mae_eV_A"]
        assert np.isfinite(r["energy_mae_eV_per_atom"])
    assert rows[1]["labels"] > rows[0]["labels"]
    assert (directory / "metrics.csv").read_text().count("\n") == 4
    assert main(["status", str(directory)]) == 0
    out = capsys.readouterr().out
    table = [ln.split() for ln in out.splitlines()]
    assert [t[0] for t in table[1:4]] == ["0", "1", "2"]
    assert any("dashboard http://127.0.0.1:" in ln for ln in lines)
    for gen in range(3):
        assert (directory / "models" / f"gen_{gen:03d}" / "backbone.model").is_file()
        assert (directory / "models" / f"gen_{gen:03d}" / "probe.pt").is_file()
    assert json.loads((directory / "versions.json").read_text())["pyscf"] != "not installed"


def test_audit_per_generation(finished):
    """Each generation writes an audit table (test set; and new frames for g >= 1), plots and
    atom-importance pictures; the table's probe row agrees with the metrics."""
    directory, result, _ = finished
    audits = directory / "audits"
    for gen in range(3):
        text = (audits / f"gen_{gen:03d}_test_audit.txt").read_text()
        assert "probe" in text and "AUROC" in text and "knn_max" in text and "energy" in text
        rows = json.loads((audits / f"gen_{gen:03d}_test_audit.json").read_text())["rows"]
        probe = next(r for r in rows if r["signal"] == "probe")
        auroc = result.metrics[gen]["probe_auroc_test"]
        assert (np.isnan(probe["auroc"]) and np.isnan(auroc)) or probe["auroc"] == pytest.approx(auroc)
        if not np.isnan(probe["auroc"]):
            assert probe["auroc_lo"] <= probe["auroc"] <= probe["auroc_hi"]
        pictures = list(audits.glob(f"gen_{gen:03d}_importance_*.png"))
        assert len(pictures) == 3 and all(p.stat().st_size > 1000 for p in pictures)
        assert (audits / f"gen_{gen:03d}_test_risk_coverage.png").stat().st_size > 1000
    for gen in (1, 2):
        assert (audits / f"gen_{gen:03d}_new_audit.txt").is_file()


def test_rerun_is_a_no_op_and_changed_config_is_refused(finished, tmp_path):
    source, result, _ = finished
    directory = tmp_path / "tiny"  # a copy: the shared campaign folder stays read-only
    shutil.copytree(source, directory)
    L = open_ledger(directory)
    before = sorted(L.fids())
    again = run(parse_campaign(TINY_CAMPAIGN), directory, log=None)
    assert sorted(open_ledger(directory).fids()) == before
    keys = ("generation", "labels", "force_mae_eV_A", "energy_mae_eV_per_atom")
    assert [[r[k] for k in keys] for r in again.metrics] == \
        [[r[k] for k in keys] for r in result.metrics]
    changed = copy.deepcopy(TINY_CAMPAIGN)
    changed["select"]["budget"] = 7
    with pytest.raises(ConfigError, match="select.budget: stored 5, now 7"):
        run(parse_campaign(changed), directory, log=None)


def test_user_model_file_without_finetune(tiny_model, tmp_path):
    """A local model file named in the campaign is the backbone, loaded as is."""
    cfg = copy.deepcopy(TINY_CAMPAIGN)
    cfg.update(generations=1)
    cfg["initial"] = {"n_rattle": 14, "n_md": 0, "test_size": 4, "calibration_fraction": 0.3}
    cfg["backbone"] = {"model_file": tiny_model, "finetune": False}
    result = run(parse_campaign(cfg), tmp_path / "user", log=None)
    for gen in (0, 1):
        assert filecmp.cmp(_stage(tmp_path / "user", f"gen{gen:03d}/train")["path"], tiny_model,
                           shallow=False)
    # without fine-tuning, every labeled non-test frame is out of sample for the probe
    L = open_ledger(tmp_path / "user")
    probe_ids = set(_stage(tmp_path / "user", "gen001/probe")["train_ids"])
    pool = set(L.fids(status="labeled")) - set(L.fids(split="test"))
    assert probe_ids == pool
    assert len(result.metrics) == 2


def test_stored_walker_predictions_are_the_models_raw_outputs(finished):
    """Every candidate's stored pred_forces / pred_energy is what backbone g-1 predicts for that
    frame (not the forces FixCom adjusted for the MD of the mixed-mass water walkers)."""
    from alprobe.backbone import load_model, predict

    directory, _, _ = finished
    L = open_ledger(directory)
    for gen in (1, 2):
        model = load_model(_stage(directory, f"gen{gen - 1:03d}/train")["path"])
        cands = L.frames(generation=gen)
        assert len(cands) > 5
        for a, p in zip(cands, predict(model, cands)):
            # float32 model: equal to 1e-5 eV/A, or to float32 rounding of large forces
            np.testing.assert_allclose(a.arrays["pred_forces"], p.forces, atol=1e-5, rtol=2e-6)
            assert a.info["pred_energy"] == pytest.approx(p.energy, rel=1e-6)


def test_test_walker_that_turns_unphysical_is_run_again_then_dropped(tiny_model, tmp_path):
    """Real MD on a real model: a test walker at an absurd temperature breaks its bonds on
    every attempt (first seed and 3 new ones) and is left out of the test set; the 300 K one
    completes and gives all the test frames."""
    from alprobe.stages.initial import TEST_WALKER_RETRIES

    cfg = copy.deepcopy(TINY_CAMPAIGN)
    cfg.update(generations=0)
    cfg["initial"] = {"n_rattle": 8, "n_md": 0, "test_size": 6, "test_walkers": 2,
                      "test_md_steps": 40, "calibration_fraction": 0.3}
    cfg["backbone"] = {"model_file": tiny_model, "finetune": False}
    cfg["explore"] = {**cfg["explore"], "temperatures_K": [300, 100000]}
    run(parse_campaign(cfg), tmp_path / "hot", log=None)
    rec = _stage(tmp_path / "hot", "gen000/test_walkers")
    assert rec["dropped"] == [1]
    assert [(r["walker"], r["attempt"]) for r in rec["replaced"]] == [
        (1, k) for k in range(TEST_WALKER_RETRIES)]
    assert all(r["stop"].startswith("unphysical") for r in rec["replaced"])
    assert rec["stops"][0] == "completed" and rec["stops"][1].startswith("unphysical")
    test = open_ledger(tmp_path / "hot").frames(split="test")
    assert len(test) == rec["n_test"] == 3
    assert {a.info["test_walker"] for a in test} == {0}
