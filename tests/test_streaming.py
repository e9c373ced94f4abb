"""The streaming schedule on real campaigns (tiny MACE, PySCF HF/STO-3G, a real LocalCluster):
no generation barrier, labels exactly once across a SIGKILL of the whole driver group and a
resume, the total budget kept, walkers continued segment after segment, frames saying which
generation's models scored them; and the settings' defaults (pure logic)."""

from __future__ import annotations

import copy
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

import alprobe
from alprobe.config import parse_campaign
from alprobe.ledger import read_stages
from alprobe.streaming import stream_settings

from .conftest import TINY_CAMPAIGN
from .test_faults import _spool, drivers  # noqa: F401 - the fixture is used by name

STREAM = copy.deepcopy(TINY_CAMPAIGN)
STREAM.update(name="tinystream", schedule="streaming",
              streaming={"total_budget": 12, "retrain_every": 5, "segment_steps": 20})


def test_settings_default_to_the_generations_schedule():
    cfg = parse_campaign({**TINY_CAMPAIGN, "schedule": "streaming"})
    s = stream_settings(cfg)
    sel, ex = cfg.select, cfg.explore
    assert s.total_budget == sel.budget * cfg.generations and s.retrain_every == sel.budget
    assert s.segment_steps == max(2 * ex.stride, ex.steps // 3)
    # the same fraction of candidates picked as a generation picks
    assert s.picks_per_segment == max(1, round(sel.budget * s.segment_steps
                                               / (ex.walkers * ex.steps)))
    cfg = parse_campaign(STREAM)
    assert stream_settings(cfg).total_budget == 12
    with pytest.raises(alprobe.ConfigError, match="schedule: streaming"):
        parse_campaign({**STREAM, "system": None,
                        "pool": {"file": "pool.extxyz"}})


def _streamed(d: Path) -> list[dict]:
    return [k for k in alprobe.open_ledger(d).keys() if int(k.get("generation", 0)) >= 1]


def test_streaming_kill_and_resume_loses_no_label_and_labels_none_twice(tmp_path, drivers):
    """SIGKILL the driver's whole process group while labels are in flight and a retrain may
    run, resume: every label finished before the kill is in the ledger (none computed again),
    the total budget is kept exactly, and the campaign ends with a cycle on all labels."""
    path = tmp_path / "stream.yaml"
    path.write_text(yaml.safe_dump(STREAM, sort_keys=False))
    d = tmp_path / "run"
    slow = {"ALPROBE_FAULT_DELAY_LABEL_S": "1.5"}  # keeps labels in flight at the kill
    drv = drivers(["run", str(path), "--dir", str(d)], tmp_path / "run0.log", slow)

    def streamed_spool() -> list[str]:
        from alprobe.ledger import Ledger, LedgerError

        try:  # read-only, and the driver may be creating the file at this moment
            keys = Ledger(d, readonly=True).keys() if (d / "ledger.db").is_file() else []
        except LedgerError:
            return []
        gen1 = {k["fid"] for k in keys if int(k.get("generation", 0)) >= 1}
        return [f for f in _spool(d) if f in gen1]

    drv.wait_for("streaming labels", lambda: len(streamed_spool()) >= 3, lambda: False)
    drv.kill()
    before = {f: v for f, v in _spool(d).items()}
    picked_before = [k for k in _streamed(d) if k["status"] != "candidate"]
    assert 0 < len(picked_before) <= 12
    assert "gen000/done" in read_stages(d)

    lines: list[str] = []
    alprobe.resume(d, log=lines.append)
    L = alprobe.open_ledger(d)
    keys = _streamed(d)
    status = {k["fid"]: k["status"] for k in keys}
    picked = [k for k in keys if k["status"] != "candidate"]
    # the total budget, exactly: every pick labeled (or failed), none left selected
    assert len(picked) == 12 and not [k for k in picked if k["status"] == "selected"]
    assert all(status[k["fid"]] != "candidate" for k in picked_before)  # no pick undone
    after = _spool(d)
    for fid, ident in before.items():  # finished before the kill: kept, never recomputed
        assert after[fid] == ident, f"label {fid} was computed again after the resume"
        if fid in status:
            assert status[fid] == "labeled"
    assert set(after) >= {k["fid"] for k in picked if k["status"] == "labeled"}
    # which models scored each pick, and walkers continued segment after segment
    for k in picked:
        assert k["scored_by"] == k["generation"] - 1 and k["segment"] >= 0
    walkers = {k["walker"] for k in keys}
    stages = read_stages(d)
    for w in walkers:
        assert stages[f"stream/walker{w:03d}"]["segment"] >= 1
    samples = sorted(k["sample"] for k in keys if k["walker"] == min(walkers))
    assert len(samples) == len(set(samples))  # sample numbers run on across segments
    # retrain cycles are the rows: the last one trained on every label
    rows = L.metrics()
    assert [r["generation"] for r in rows] == list(range(len(rows))) and len(rows) >= 3
    labels = [r["labels"] for r in rows]
    assert labels == sorted(labels)
    n_labeled = L.count(status="labeled") - L.count(status="labeled", split="test")
    assert labels[-1] == n_labeled
    for r in rows[1:]:
        assert np.isfinite(r["force_mae_eV_A"]) and r["elapsed_s"] > 0
    assert any("finished label(s) recovered" in m or "streaming:" in m for m in lines)


def test_streaming_ensemble_scores_segments_with_the_committee(tmp_path):
    """The ensemble arm in streaming: every segment's frames get the committee's eps_F before
    the rule picks, and the pick is the largest disagreement of its segment."""
    cfg = copy.deepcopy(STREAM)
    cfg.update(name="streamens", select={"rule": "ensemble", "budget": 5, "min_spacing": 2},
               committee={"members": 2},
               streaming={"total_budget": 6, "retrain_every": 6, "segment_steps": 20})
    t0 = time.time()
    res = alprobe.run(parse_campaign(cfg), tmp_path / "ens", log=None)
    keys = _streamed(tmp_path / "ens")
    picked = [k for k in keys if k["status"] != "candidate" and not k.get("audit")]
    assert len([k for k in keys if k["status"] != "candidate"]) == 6
    assert all(np.isfinite(k["sigma_f"]) for k in keys if "sigma_f" in k)
    for k in picked:
        seg = [c for c in keys if c["walker"] == k["walker"] and c["segment"] == k["segment"]]
        assert k["sigma_f"] == max(c["sigma_f"] for c in seg)
    assert len(res.metrics) >= 2 and time.time() - t0 > 0


def test_streaming_comparison_gives_every_arm_the_same_total_budget(tmp_path):
    """alprobe compare with streaming arms: one shared generation 0, every arm's run on the
    same workers with the same total budget; the summary pairs them."""
    shared = copy.deepcopy(STREAM)
    shared["streaming"] = {"total_budget": 6, "retrain_every": 6, "segment_steps": 20}
    from alprobe.comparison import parse_comparison

    cmp = parse_comparison({"name": "scmp", "shared": shared, "noise_floor_seeds": 0,
                            "arms": {"probe": {}, "random": {"select": {"rule": "random"}}}},
                           tmp_path)
    res = alprobe.compare(cmp, tmp_path / "cmp", log=None)
    for arm in ("probe", "random"):
        d = tmp_path / "cmp" / "arms" / arm
        picked = [k for k in _streamed(d) if k["status"] != "candidate"]
        assert len(picked) == 6  # the same total budget for every arm
        mine, shared = (read_stages(x)["gen000/train"] for x in (d, tmp_path / "cmp" / "shared"))
        # the same backbone 0, as the run folder's own copy (a folder loads only its models)
        assert {k: v for k, v in mine.items() if k != "path"} == {
            k: v for k, v in shared.items() if k != "path"}
        assert Path(mine["path"]).parent.parent.parent == d
        assert Path(mine["path"]).read_bytes() == Path(shared["path"]).read_bytes()
        assert len(res.metrics[arm]) >= 2
    assert "probe − random" in res.summary or "probe - random" in res.summary
