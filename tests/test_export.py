"""alprobe export on a real finished campaign: the labeled frames by split with mace-torch's
keys, the final models, a README; mace-torch's own trainer (``mace_run_train``) trains on the
export as it is; alprobe status --json."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from ase.io import read

from alprobe import open_ledger
from alprobe.cli import main
from alprobe.export import ExportError, export_campaign


def test_export_has_every_label_by_split_and_mace_trains_on_it(tiny_finished, tmp_path, capsys):
    d, _, _ = tiny_finished
    out = tmp_path / "export"
    assert main(["export", str(d), "-o", str(out)]) == 0
    assert "train" in capsys.readouterr().out
    L = open_ledger(d)
    info = json.loads((out / "export.json").read_text())
    fids = {}
    for split in ("train", "calib", "test"):
        want = {a.info["fid"]: a for a in L.frames(status="labeled", split=split)}
        assert info["counts"][split] == len(want)
        if not want:
            assert not (out / f"{split}.xyz").exists()
            continue
        got = read(out / f"{split}.xyz", index=":")
        fids[split] = {a.info["fid"] for a in got}
        assert fids[split] == set(want)
        for a in got:
            src = want[a.info["fid"]]
            assert a.info["REF_energy"] == pytest.approx(src.info["ref_energy"], abs=1e-8)
            np.testing.assert_allclose(a.arrays["REF_forces"], src.arrays["ref_forces"],
                                       atol=1e-8)
            np.testing.assert_allclose(a.positions, src.positions, atol=1e-8)
            assert a.info["split"] == split and "pred_forces" not in a.arrays
    assert fids["train"] and fids["test"] and not fids["train"] & fids["test"]
    # the final backbone is the last generation's
    last = max(int(k[3:6]) for k in L.stages() if k.endswith("/train"))
    assert info["models"]["backbone.model"]["generation"] == last
    assert (out / "backbone.model").read_bytes() == open(
        L.stage_info(f"gen{last:03d}/train")["path"], "rb").read()
    readme = (out / "README.md").read_text()
    assert "hf/sto-3g" in readme and f"{info['counts']['train']} in `train.xyz`" in readme

    # mace-torch's trainer reads the export with its default keys
    work = tmp_path / "mace"
    work.mkdir()
    cmd = [sys.executable, "-m", "mace.cli.run_train", "--name", "exported",
           "--train_file", str(out / "train.xyz"), "--valid_fraction", "0.2",
           "--test_file", str(out / "test.xyz"), "--E0s", "average", "--model", "MACE",
           "--hidden_irreps", "8x0e", "--r_max", "4.0", "--max_num_epochs", "2",
           "--batch_size", "2", "--device", "cpu", "--default_dtype", "float32",
           "--seed", "1"]
    run = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert (work / "exported.model").is_file()
    log = "".join(p.read_text() for p in (work / "logs").glob("*_run-1.log"))
    # it read the exported energies and forces of every frame, under its default keys
    n, m = info["counts"]["train"], info["counts"]["test"]
    assert f"Training set 1/1 [energy: {n}," in log and f"forces: {n}, charges" in log
    assert f"Test set 1/1 [energy: {m}," in log


def test_export_and_status_json_errors_and_renamed_keys(tiny_finished, tmp_path, capsys):
    d, _, _ = tiny_finished
    info = export_campaign(d, tmp_path / "e", energy_key="energy_dft", forces_key="forces_dft")
    a = read(tmp_path / "e" / "train.xyz", index=0)
    assert "energy_dft" in a.info and "forces_dft" in a.arrays and "REF_energy" not in a.info
    assert "--energy_key energy_dft" in (tmp_path / "e" / "README.md").read_text()
    assert info["keys"] == {"energy": "energy_dft", "forces": "forces_dft"}
    with pytest.raises(ExportError, match="no ledger.db"):
        export_campaign(tmp_path, tmp_path / "x")
    assert main(["export", str(tmp_path / "nowhere"), "-o", str(tmp_path / "y")]) == 2
    assert "not a campaign folder" in capsys.readouterr().err
    # status --json: one row per finished generation, NaN as null
    assert main(["status", str(d), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    rows = open_ledger(d).metrics()
    assert [r["generation"] for r in status["generations"]] == [r["generation"] for r in rows]
    assert status["generations"][-1]["labels"] == rows[-1]["labels"]
    assert "gen000/train" in status["stages_done"]
