"""A campaign folder is safe: no silent restart, no writes where the user did not ask, no
model file from outside the folder, and one line (never a traceback) for bad input. The
data-loss cases run the real command on a copy of a real finished campaign folder."""

from __future__ import annotations

import copy
import json
import os
import shutil
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from ase.build import molecule

from alprobe import open_ledger
from alprobe.cli import main
from alprobe.export import ExportError, _level, export_campaign
from alprobe.folder import FolderError, check_folder
from alprobe.frames import set_reference, write_extxyz
from alprobe.ledger import Ledger, LedgerError

from .conftest import TINY_CAMPAIGN


def _copy(tiny_finished, where: Path) -> Path:
    d, _, _ = tiny_finished
    out = where / "copy"
    shutil.copytree(d, out)
    return out


def _err(capsys) -> str:
    """stderr of the last command; asserts it is one line."""
    err = capsys.readouterr().err.strip()
    assert err and "\n" not in err and "Traceback" not in err, err
    return err


def _snapshot(d: Path) -> dict[str, float]:
    return {str(p.relative_to(d)): p.stat().st_mtime_ns for p in d.rglob("*") if p.is_file()}


# ----- data loss and writes where the user did not ask -------------------------------------

def test_resume_and_run_refuse_earlier_work_without_a_ledger(tiny_finished, tmp_path, capsys):
    d = _copy(tiny_finished, tmp_path)
    n_spooled = len(list((d / "spool").glob("*.json")))
    assert n_spooled > 0 and (d / "models" / "gen_000" / "bootstrap.model").is_file()
    for name in ("ledger.db", "ledger.db-wal", "ledger.db-shm", "metrics.json"):
        (d / name).unlink(missing_ok=True)
    before = _snapshot(d)
    assert main(["resume", str(d)]) == 2
    err = _err(capsys)
    assert "earlier work" in err and "models/" in err and "spool/" in err
    assert "metrics.csv" in err and "alprobe.log" in err and "start afresh" in err
    file = tmp_path / "tiny.yaml"
    file.write_text(yaml.safe_dump(TINY_CAMPAIGN))
    assert main(["run", str(file), "--dir", str(d)]) == 2
    assert "earlier work" in _err(capsys)
    # nothing was written: the spooled labels and the models are untouched
    assert _snapshot(d) == before
    assert len(list((d / "spool").glob("*.json"))) == n_spooled
    assert not (d / "ledger.db").exists()


def test_run_refuses_a_folder_that_is_not_a_campaign(tmp_path, capsys):
    file = tmp_path / "tiny.yaml"
    file.write_text(yaml.safe_dump(TINY_CAMPAIGN))
    mine = tmp_path / "mine"
    mine.mkdir()
    hand = "# my notes, keep them\nname: tiny\n"
    (mine / "campaign.yaml").write_text(hand)
    assert main(["run", str(file), "--dir", str(mine)]) == 2
    assert "not an alprobe campaign folder" in _err(capsys)
    assert (mine / "campaign.yaml").read_text() == hand
    (mine / "campaign.yaml").unlink()
    (mine / "thesis.tex").write_text("x")
    assert main(["run", str(file), "--dir", str(mine)]) == 2
    assert "thesis.tex" in _err(capsys)
    assert sorted(p.name for p in mine.iterdir()) == ["thesis.tex"]
    # a name that is not a plain name never becomes a folder outside runs/
    for bad in ("/etc", "../../../../etc"):
        file.write_text(yaml.safe_dump({**TINY_CAMPAIGN, "name": bad}))
        assert main(["validate", str(file)]) == 1
        assert "name" in capsys.readouterr().out


def test_check_folder_read_only_and_damaged_ledger(tiny_finished, tmp_path, monkeypatch):
    d = _copy(tiny_finished, tmp_path)
    check_folder(d)  # a finished campaign may be continued
    check_folder(tmp_path / "new")  # so may a new folder
    real = os.access
    monkeypatch.setattr("alprobe.folder.os.access",
                        lambda p, mode: False if Path(p) == d else real(p, mode))
    with pytest.raises(FolderError, match="read-only"):
        check_folder(d)
    monkeypatch.undo()
    (d / "ledger.db").write_bytes(b"not a database" * 100)
    for name in ("ledger.db-wal", "ledger.db-shm"):
        (d / name).unlink(missing_ok=True)
    with pytest.raises(LedgerError, match="damaged"):
        check_folder(d)


def test_resume_of_a_damaged_ledger_or_bad_campaign_file_starts_nothing(tiny_finished, tmp_path,
                                                                       capsys):
    d = _copy(tiny_finished, tmp_path)
    (d / "ledger.db").write_bytes(b"not a database" * 100)
    for name in ("ledger.db-wal", "ledger.db-shm"):
        (d / name).unlink(missing_ok=True)
    t0 = time.perf_counter()
    assert main(["resume", str(d)]) == 2
    assert "damaged" in _err(capsys) and time.perf_counter() - t0 < 10  # no cluster started
    assert not (d / "dask-worker-space").exists()
    # campaign.yaml that is not a mapping: report, export and resume say so in one line
    e = _copy(tiny_finished, tmp_path / "b")
    (e / "campaign.yaml").write_text("- just\n- a list\n")
    assert main(["resume", str(e)]) == 2
    assert "campaign.yaml is not a campaign" in _err(capsys)
    assert main(["export", str(e), "-o", str(tmp_path / "x")]) == 2
    assert "campaign.yaml is not a campaign" in _err(capsys)
    assert main(["report", str(e)]) == 0  # the report shows the folder anyway
    # no campaign.yaml, but a ledger with labels: says so, and how to continue
    (e / "campaign.yaml").unlink()
    n = open_ledger(e).count(status="labeled")
    assert main(["resume", str(e)]) == 2
    err = _err(capsys)
    assert f"holds {n} labeled frame(s)" in err and "alprobe run" in err


def test_export_refuses_a_non_empty_folder_unless_forced(tiny_finished, tmp_path, capsys):
    d, _, _ = tiny_finished
    out = tmp_path / "mine"
    out.mkdir()
    (out / "train.xyz").write_text("my own data\n")
    (out / "README.md").write_text("mine\n")
    assert main(["export", str(d), "-o", str(out)]) == 2
    err = _err(capsys)
    assert "not empty" in err and "--force" in err
    assert (out / "train.xyz").read_text() == "my own data\n"
    assert main(["export", str(d), "-o", str(out), "--force"]) == 0
    assert (out / "train.xyz").read_text() != "my own data\n"
    with pytest.raises(ExportError, match="inside the campaign folder"):
        export_campaign(d, d / "export")


def test_export_provenance_states_the_systems_charge_and_spin():
    campaign = {"system": {"seeds": ["water"], "charge": 1, "spin": 1},
                "dft": {"method": "dft", "xc": "pbe", "basis": "def2-svp"}}
    assert "charge 1, spin 2S = 1" in _level(campaign, Path("."))
    assert "charge 0, spin 2S = 0" in _level({"dft": {"method": "hf"}}, Path("."))


def _raw_stage_paths(d: Path) -> dict[str, object]:
    con = sqlite3.connect(str(d / "ledger.db"))
    try:
        rows = con.execute("SELECT name, info FROM alprobe_stages").fetchall()
    finally:
        con.close()
    out = {}
    for name, info in rows:
        info = json.loads(info)
        for k in ("path", "members"):
            if info.get(k) is not None and not isinstance(info[k], int):
                out[f"{name}:{k}"] = info[k]
    return out


def _set_path(d: Path, stage: str, path: str) -> None:
    con = sqlite3.connect(str(d / "ledger.db"))
    try:
        (info,) = con.execute("SELECT info FROM alprobe_stages WHERE name = ?", (stage,)).fetchone()
        info = json.loads(info)
        info["path"] = path
        con.execute("UPDATE alprobe_stages SET info = ? WHERE name = ?", (json.dumps(info), stage))
        con.commit()
    finally:
        con.close()


def test_a_copied_folder_loads_models_only_from_itself(tiny_finished, tmp_path, capsys):
    orig, _, _ = tiny_finished
    d = _copy(tiny_finished, tmp_path)
    raw = _raw_stage_paths(d)
    assert raw and "gen002/train:path" in raw
    flat = [p for v in raw.values() for p in (v if isinstance(v, list) else [v])]
    assert all(not Path(p).is_absolute() and p.startswith("models/") for p in flat), flat
    L = Ledger(d, readonly=True)
    model = Path(L.stage_info("gen002/train")["path"])
    assert model.is_file() and model.is_relative_to(d.resolve())
    # models/ deleted: nothing is exported from the original folder
    shutil.rmtree(d / "models")
    assert main(["export", str(d), "-o", str(tmp_path / "e1")]) == 0
    out = capsys.readouterr().out
    assert "no model files" in out
    assert not (tmp_path / "e1" / "backbone.model").exists()
    assert not (tmp_path / "e1" / "probe.pt").exists()
    assert (orig / "models" / "gen_002" / "backbone.model").is_file()
    # ledgers written before paths were relative: an absolute path of the original place is
    # re-anchored at its models/ part inside the folder the ledger is in
    e = _copy(tiny_finished, tmp_path / "b")
    _set_path(e, "gen002/train", str(orig.resolve() / "models" / "gen_002" / "backbone.model"))
    assert Ledger(e, readonly=True).stage_info("gen002/train")["path"] == str(
        e.resolve() / "models" / "gen_002" / "backbone.model")
    info = export_campaign(e, tmp_path / "e2")
    assert info["models"]["backbone.model"]["source"] == "models/gen_002/backbone.model"
    # a received ledger naming a file outside its folder: never loaded, never exported
    evil = tmp_path / "evil.model"
    evil.write_bytes(b"pickled code")
    for bad in (str(evil), "../evil.model", "models/../../evil.model"):
        _set_path(e, "gen002/train", bad)
        with pytest.raises(LedgerError, match="outside the campaign folder"):
            Ledger(e, readonly=True).stage_info("gen002/train")
        info = export_campaign(e, tmp_path / f"e3{len(bad)}")
        assert info["models"]["backbone.model"]["generation"] == 1  # the last one inside
    link = e / "models" / "gen_002" / "backbone.model"
    link.unlink()
    link.symlink_to(evil)
    _set_path(e, "gen002/train", "models/gen_002/backbone.model")
    with pytest.raises(LedgerError, match="outside the campaign folder"):
        Ledger(e, readonly=True).stage_info("gen002/train")


# ----- one line instead of a traceback -----------------------------------------------------

def test_frame_files_empty_or_with_a_nan_label_get_one_line(tmp_path, capsys):
    empty = tmp_path / "empty.extxyz"
    empty.write_text("")
    for cmd in (["evaluate", str(empty), "--backbone", "m.model"],
                ["probe", "fit", str(empty), "--backbone", "m.model", "-o", "p.pt"]):
        assert main(cmd) == 2
        err = _err(capsys)
        assert str(empty) in err
    a = molecule("H2O")
    frames = [set_reference(a.copy(), -2000.0, np.zeros((3, 3))) for _ in range(3)]
    frames[1].arrays["ref_forces"][0, 0] = np.nan
    bad = tmp_path / "nan.extxyz"
    write_extxyz(bad, frames)
    for cmd in (["evaluate", str(bad), "--backbone", "m.model"],
                ["probe", "fit", str(bad), "--backbone", "m.model", "-o", "p.pt"]):
        assert main(cmd) == 2
        err = _err(capsys)
        assert "frame 1" in err and "non-finite" in err


class _NotAProbe:
    pass


def test_bad_probe_files_get_one_line_and_never_weights_only_advice(tmp_path):
    from alprobe.probe import ProbeError, load_probe

    pickled = tmp_path / "pickled.pt"
    torch.save({"config": _NotAProbe()}, pickled)
    with pytest.raises(ProbeError) as exc:
        load_probe(pickled)
    msg = str(exc.value)
    assert "weights_only" not in msg and "not a probe checkpoint" in msg and "\n" not in msg
    other = tmp_path / "weights.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, other)
    with pytest.raises(ProbeError, match="'config'"):
        load_probe(other)
    with pytest.raises(ProbeError, match="not a probe checkpoint"):
        load_probe(other)


def test_missing_tls_files_at_run_time_get_one_line(tmp_path):
    from alprobe.cluster import resolve_tls
    from alprobe.config import ClusterConfig
    from alprobe.errors import AlprobeError

    from alprobe.config import TLSConfig

    tls = TLSConfig.model_construct(ca_file=str(tmp_path / "ca.pem"),
                                    cert=str(tmp_path / "c.pem"), key=str(tmp_path / "k.pem"))
    cfg = ClusterConfig().model_copy(update={"tls": tls})
    with pytest.raises(AlprobeError, match=r"cluster.tls.ca_file: file not found"):
        resolve_tls(cfg, tmp_path)


def test_compare_refuses_a_bad_pool_before_creating_its_folder(tmp_path, capsys):
    pool = tmp_path / "pool.extxyz"
    pool.write_text("")
    file = tmp_path / "cmp.yaml"
    file.write_text(yaml.safe_dump({"name": "c", "pool": {"file": "pool.extxyz"}}))
    out = tmp_path / "out"
    assert main(["compare", str(file), "--dir", str(out)]) in (1, 2)
    assert "pool" in capsys.readouterr().err
    assert not out.exists()
    # a non-empty folder that is not a comparison: refused, nothing written into it
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("x")
    from alprobe.comparison import check_comparison_folder

    with pytest.raises(FolderError, match="not an alprobe comparison folder"):
        check_comparison_folder(tmp_path / "busy")


def test_a_campaign_without_test_frames_stops_with_an_error(tiny_model, tmp_path, capsys):
    """Real MD on a real model: every test walker breaks its bonds on every attempt, so the
    test set is empty; the run ends with a non-zero exit instead of NaN metrics."""
    cfg = copy.deepcopy(TINY_CAMPAIGN)
    cfg.update(generations=0)
    cfg["initial"] = {"n_rattle": 8, "n_md": 0, "test_size": 4, "test_walkers": 1,
                      "test_md_steps": 20, "calibration_fraction": 0.3}
    cfg["backbone"] = {"model_file": tiny_model, "finetune": False}
    cfg["explore"] = {**cfg["explore"], "temperatures_K": [100000]}
    file = tmp_path / "hot.yaml"
    file.write_text(yaml.safe_dump(cfg))
    assert main(["run", str(file), "--dir", str(tmp_path / "hot"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "no labeled test frame" in err
    assert not open_ledger(tmp_path / "hot").metrics()
