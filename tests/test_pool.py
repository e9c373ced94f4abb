"""Retrospective (pool) mode end to end: a tiny labeled water pool made with alprobe's own
pool sampler (HF/STO-3G MD and labels), a real tiny MACE, a real LocalCluster; a pool
campaign and a paired two-replica pool comparison."""

from __future__ import annotations

import copy
import csv
import json

import numpy as np
import pytest
from ase.io import write

from alprobe import open_ledger, run
from alprobe.comparison import parse_comparison, run_comparison
from alprobe.config import parse_campaign
from alprobe.ledger import read_stages

from .conftest import TINY_CAMPAIGN


def _pool_campaign(path, **over):
    cfg = copy.deepcopy(TINY_CAMPAIGN)
    del cfg["system"]
    cfg.update(name="tinypool", generations=2,
               pool={"file": str(path), "group_key": "traj_id", "test_fraction": 0.3,
                     "initial_size": 10},
               select={"budget": 4, "min_spacing": 2, "hit_threshold_force_rmse_eV_A": 0.05},
               # the pool defaults' per-atom target: 3 held-out frames are 9 atom examples
               probe={**TINY_CAMPAIGN["probe"], "target": "atom", "atom_pool": "mean"})
    cfg.update(over)
    return cfg


def test_pool_campaign_end_to_end(water_pool, tmp_path):
    from alprobe.frames import read_labeled

    d = tmp_path / "pool"
    cfg = _pool_campaign(water_pool)
    cfg["probe"] = {**cfg["probe"], "lineage": 3}  # earlier backbones' errors too
    result = run(parse_campaign(cfg), d, log=None)
    L = open_ledger(d)
    from alprobe.frames import frame_id

    by_fid = {frame_id(a): a for a in read_labeled(water_pool, keep_info=True)}
    assert len(by_fid) == 48 and len({a.info["traj_id"] for a in by_fid.values()}) == 6
    # no DFT ran: labels are the pool's own, and nothing was spooled
    assert not (d / "spool").exists() or not list((d / "spool").glob("*.json"))
    labeled = L.frames(status="labeled")
    for a in labeled:
        src = by_fid[a.info["fid"]]
        assert a.info["ref_energy"] == pytest.approx(src.info["ref_energy"], abs=1e-9)
        np.testing.assert_allclose(a.arrays["ref_forces"], src.arrays["ref_forces"], atol=1e-9)
    # the test set is whole trajectories, none of which is trained on or a candidate
    test = L.frames(split="test")
    test_groups = {a.info["group"] for a in test}
    other = [a for a in L.frames() if a.info.get("split") != "test"]
    assert test_groups and not test_groups & {a.info["group"] for a in other}
    st = read_stages(d)
    seen = set().union(*(set(st[f"gen{g:03d}/train"]["train_ids"]) for g in range(3)))
    assert not seen & {a.info["fid"] for a in test}
    # candidates: the unlabeled non-test pool frames, scored with raw predictions
    n_test, n_init = len(test), st["gen000/split"]["train"] + st["gen000/split"]["calib"]
    assert st["gen001/explore"]["n_frames"] == len(by_fid) - n_test - n_init
    assert st["gen002/explore"]["n_frames"] == len(by_fid) - n_test - n_init - 4
    rows = result.metrics
    assert [r["labels"] for r in rows] == [n_init, n_init + 4, n_init + 8]
    for r in rows:
        assert r["force_mae_lo_eV_A"] < r["force_mae_eV_A"] < r["force_mae_hi_eV_A"]
        assert r["n_test"] == n_test
    for r in rows[1:]:
        assert 0 <= r["hit_rate_abs"] <= 1 and 0 <= r["hit_base_rate_abs"] <= 1
        # the previous probe measured on every candidate (their labels are in the pool)
        assert r["n_candidates"] == st[f"gen{r['generation']:03d}/explore"]["n_frames"]
        assert -1 <= r["trust_spearman_candidates"] <= 1, r
        assert r["probe_pool"] > 0 and r["trust_q75"] >= r["trust_q25"]
    # probe.lineage: every (backbone, frame) pair is out of sample for that backbone
    for g in (1, 2):
        probe = st[f"gen{g:03d}/probe"]
        assert sorted(probe["lineage_ids"]) == [str(k) for k in range(g)]
        for k, ids in [(g, probe["train_ids"]), *((int(k), v) for k, v in
                                                    probe["lineage_ids"].items())]:
            trained = set().union(*(set(st[f"gen{j:03d}/train"]["train_ids"])
                                    for j in range(k + 1)))
            assert ids and not set(ids) & trained, (g, k)
        assert rows[g]["probe_pool"] == len(probe["train_ids"]) + sum(
            len(v) for v in probe["lineage_ids"].values()) > len(probe["train_ids"])


def test_pool_comparison_pairs_replicas(water_pool, tmp_path):
    """Three strategies x two replicas: replica r of every strategy starts from the same
    generation 0 (initial set, test split), the two replicas from different ones; the summary
    has the paired intervals and the noise floor. The latent arm (added through the arm
    protocol alone) runs beside the others: its candidates carry their latent distance and it
    picks the farthest."""
    from distributed import Client, LocalCluster

    # the structure target: probe 0 cannot be trained on 3 held-out frames (it needs 2 of each
    # class), yet generation 0's threshold is recorded, so every arm's signal is still measured
    shared = _pool_campaign(water_pool, generations=1, probe=TINY_CAMPAIGN["probe"])
    data = {"name": "pcmp", "shared": shared, "replicas": 2, "noise_floor_seeds": 2,
            "arms": {"random": {"select": {"rule": "random"}},
                     "probe": {},
                     "latent": {"select": {"rule": "latent"}}}}
    d = tmp_path / "cmp"
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as lc, Client(lc) as client:
        res = run_comparison(parse_comparison(data), d, log=None, client=client)
    gen0 = {}
    for name in ("random-r0", "probe-r0", "random-r1", "probe-r1"):
        L = open_ledger(d / "arms" / name)
        gen0[name] = sorted((k["fid"], k.get("split")) for k in L.keys(generation=0))
    assert gen0["random-r0"] == gen0["probe-r0"] and gen0["random-r1"] == gen0["probe-r1"]
    assert gen0["random-r0"] != gen0["random-r1"]
    rows = list(csv.DictReader(open(d / "learning_curves.csv")))
    assert {(r["arm"], r["replica"]) for r in rows} == {
        (a, str(k)) for a in ("random", "probe", "latent") for k in (0, 1)}
    for k in (0, 1):
        L = open_ledger(d / "arms" / f"latent-r{k}")
        assert L.keys(generation=0) and sorted(
            (x["fid"], x.get("split")) for x in L.keys(generation=0)) == gen0[f"random-r{k}"]
        st = read_stages(d / "arms" / f"latent-r{k}")
        assert st["gen001/latent"]["n"] == st["gen001/explore"]["n_frames"] > 0
        scored = L.keys(generation=1)
        dist = {x["fid"]: x["latent_dist"] for x in scored}
        assert len(dist) == st["gen001/latent"]["n"]
        assert all(np.isfinite(v) and v >= 0 for v in dist.values())
        picked = [x["fid"] for x in scored if x["status"] == "labeled"]
        rest = [v for f, v in dist.items() if f not in picked]
        assert len(picked) == shared["select"]["budget"]
        # the farthest candidate of all is always picked; the rest follow min_spacing per group
        assert max(dist, key=dist.get) in picked
        assert np.mean([dist[f] for f in picked]) > np.mean(rest)
    for k in (0, 1):
        st = read_stages(d / "arms" / f"latent-r{k}")
        assert st["gen000/probe"]["path"] is None and st["gen000/probe"]["threshold"] > 0
        row = open_ledger(d / "arms" / f"latent-r{k}").metrics()[1]
        assert row["n_candidates"] == st["gen001/explore"]["n_frames"]
        # rank correlation with the true errors (AUROC needs both classes at tau: not
        # guaranteed with a model this small)
        assert -1 <= row["trust_spearman_candidates"] <= 1 and row["tau"] > 0
    # the latent arm's per-candidate work is booked to its own account and reaches costs.csv
    # (and, from it, the report's cost tables)
    costs = {(c["arm"], c["stage"]): c for c in csv.DictReader(open(d / "costs.csv"))}
    for k in (0, 1):
        assert float(costs[(f"latent-r{k}", "latent")]["cpu_s"]) > 0
        assert float(costs[(f"latent-r{k}", "latent")]["wall_s"]) > 0
        assert float(costs[(f"random-r{k}", "latent")]["cpu_s"]) == 0
        assert float(costs[(f"latent-r{k}", "deviation")]["cpu_s"]) == 0
    floor = json.loads((d / "noise_floor.json").read_text())
    assert len(floor["force_mae_meV_A"]) == 3 and floor["sd_meV_A"] >= 0
    text = res.summary
    assert "## Paired differences" in text and "random − probe" in text
    assert "| latent |" in text and "probe − latent" in text
    assert "## Noise floor" in text and "## Verdict" in text
    # every run's final model ran MD at the stability temperature; paired in the summary
    stab = list(csv.DictReader(open(d / "stability.csv")))
    assert {r["run"] for r in stab} == {r["run"] for r in rows}
    for r in stab:
        assert 0 <= float(r["stable_fraction"]) <= 1 and int(r["walkers"]) == 2
        assert 0 < float(r["first_failure_fs"]) <= float(r["run_fs"]) == 20.0
    assert "## MD stability of the final models" in text and "random − probe: stable" in text
    assert not any(k.endswith("/stability") for k in read_stages(d / "shared-r0"))


# ----- a bad pool file: one line naming the file (and the frame), before any work -----------


def _pool_frames(n: int = 12) -> list:
    from ase.build import molecule

    rng = np.random.default_rng(1)
    out = []
    for i in range(n):
        a = molecule("H2O")
        a.positions += rng.normal(0, 0.05, a.positions.shape)
        a.info["ref_energy"] = -2080.0 + 0.01 * i
        a.info["traj_id"] = f"t{i % 4}"
        a.arrays["ref_forces"] = rng.normal(0, 1.0, (3, 3))
        out.append(a)
    return out


def _spoil(kind: str, path):
    frames = _pool_frames()
    if kind == "nan_energy":
        frames[2].info["ref_energy"] = float("nan")
    elif kind == "inf_energy":
        frames[2].info["ref_energy"] = float("inf")
    elif kind == "string_energy":
        frames[2].info["ref_energy"] = "minus two thousand"
    elif kind == "nan_forces":
        frames[2].arrays["ref_forces"][1, 2] = float("nan")
    elif kind == "inf_forces":
        frames[2].arrays["ref_forces"][0, 0] = -float("inf")
    elif kind == "huge_forces":
        frames[2].arrays["ref_forces"][1, 1] = 5000.0  # meV/A written as eV/A
    write(path, frames, format="extxyz")
    if kind == "wrong_shape":  # forces with 2 columns
        lines = path.read_text().splitlines()
        out = []
        for line in lines:
            if line.startswith("Properties="):
                line = line.replace("ref_forces:R:3", "ref_forces:R:2")
            elif line.split() and line.split()[0] in ("H", "O"):
                line = " ".join(line.split()[:-1])
            out.append(line)
        path.write_text("\n".join(out) + "\n")
    return path


@pytest.mark.parametrize("kind, words", [
    ("nan_energy", ["frame 2", "non-finite energy"]),
    ("inf_energy", ["frame 2", "non-finite energy"]),
    ("string_energy", ["frame 2", "not a number"]),
    ("nan_forces", ["frame 2", "non-finite forces", "atom(s) 1"]),
    ("inf_forces", ["frame 2", "non-finite forces", "atom(s) 0"]),
    ("huge_forces", ["frame 2", "exceeds 1000 eV/A", "MAX_FORCE_EV_A"]),
    ("wrong_shape", ["frame 0", "shape (3, 2), expected (3, 3)"]),
])
def test_bad_pool_labels_are_one_line_naming_file_and_frame(tmp_path, capsys, kind, words):
    from alprobe.cli import main
    from alprobe.config import PoolConfig
    from alprobe.pool import PoolError, read_pool

    path = _spoil(kind, tmp_path / "pool.extxyz")
    with pytest.raises(PoolError) as info:
        read_pool(PoolConfig(file=str(path), group_key="traj_id"))
    msg = str(info.value)
    assert "\n" not in msg and str(path) in msg and all(w in msg for w in words), msg
    # alprobe validate: a campaign file and a comparison file, one line each, no traceback
    for name, text in (("c.yaml", "name: x\npool: {file: pool.extxyz, group_key: traj_id}\n"),
                       ("cmp.yaml", "pool: {file: pool.extxyz, group_key: traj_id}\n")):
        (tmp_path / name).write_text(text)
        assert main(["validate", str(tmp_path / name)]) == 1
        out = capsys.readouterr()
        lines = [ln.strip() for ln in out.out.splitlines()[1:]]
        assert lines == [f"pool: {msg}"], (name, lines)
        assert "Traceback" not in out.out + out.err


@pytest.mark.parametrize("content, words", [
    (b"", ["empty file"]),
    (bytes(range(256)) * 8, ["cannot be read as extxyz"]),
    (b"3\nnot a comment line\nH 0 0\n", ["cannot be read as extxyz"]),
])
def test_empty_or_unreadable_pool_file_gets_one_line(tmp_path, capsys, content, words):
    from alprobe.cli import main

    (tmp_path / "pool.extxyz").write_bytes(content)
    for name, text in (("c.yaml", "name: x\npool: {file: pool.extxyz}\n"),
                       ("cmp.yaml", "pool: {file: pool.extxyz}\n")):
        (tmp_path / name).write_text(text)
        assert main(["validate", str(tmp_path / name)]) == 1
        out = capsys.readouterr()
        lines = [ln.strip() for ln in out.out.splitlines()[1:]]
        assert len(lines) == 1 and "Traceback" not in out.out + out.err, (name, out)
        assert lines[0].startswith(f"pool: {tmp_path / 'pool.extxyz'}: ")
        assert all(w in lines[0] for w in words), lines


def test_a_good_pool_reads(tmp_path):
    from alprobe.config import PoolConfig
    from alprobe.pool import read_pool

    path = _spoil("none", tmp_path / "pool.extxyz")
    pool = read_pool(PoolConfig(file=str(path), group_key="traj_id"))
    assert len(pool.frames) == 12 and len(set(pool.groups)) == 4


# ----- controls and yardsticks: the oracle arm, the hold-out as a setting, the stress set ---

def test_oracle_arm_with_hold_out_and_a_stress_set(water_pool, tmp_path):
    """The oracle picks the candidates with the largest true force error under the previous
    backbone; select.hold_out keeps a calibration share of its labels out of backbone training
    (train_frames < labels); pool.stress_key holds the hottest trajectories out of candidates,
    test set and training, and every model is measured on them."""
    from alprobe.metrics import true_force_rmse

    d = tmp_path / "oracle"
    cfg = _pool_campaign(water_pool, generations=2, select={
        "rule": "oracle", "hold_out": True, "budget": 2, "min_spacing": 0},
        pool={"file": str(water_pool), "group_key": "traj_id", "test_fraction": 0.3,
              "initial_size": 10, "stress_key": "temperature_K"})
    result = run(parse_campaign(cfg), d, log=None)
    L, st = open_ledger(d), read_stages(d)
    stress = L.frames(split="stress")
    assert len(stress) == 24 and {a.info["temperature_K"] for a in stress} == {900.0}
    assert all(a.info["status"] == "stress" for a in stress)
    stress_ids = {a.info["fid"] for a in stress}
    cands = [k for k in L.keys() if k.get("generation", 0) > 0]
    assert cands and not stress_ids & {k["fid"] for k in cands}
    assert not stress_ids & {a.info["fid"] for a in L.frames(split="test")}
    trained = set().union(*(set(st[f"gen{g:03d}/train"]["train_ids"]) for g in range(3)))
    assert not stress_ids & trained
    # the oracle's key is the candidate's true force RMSE under backbone g-1; it picks the top
    # (unpicked candidates are candidates again in the next generation: check the last one)
    for g in (1, 2):
        assert st[f"gen{g:03d}/oracle"]["n"] == st[f"gen{g:03d}/explore"]["n_frames"] > 2
    frames = L.frames(generation=2)
    assert len(frames) == st["gen002/explore"]["n_frames"]
    for a in frames:
        ref = water_pool_forces(water_pool, a)
        assert a.info["true_force_rmse"] == pytest.approx(
            true_force_rmse(a.arrays["pred_forces"], ref), rel=1e-9)
    err = {a.info["fid"]: a.info["true_force_rmse"] for a in frames}
    picked = {a.info["fid"] for a in frames if a.info["status"] == "labeled"}
    assert len(picked) == 2 and picked == set(sorted(err, key=err.get)[-2:])
    # hold-out: calibration frames are labels paid for, never trained into the backbone
    calib = {a.info["fid"] for a in L.frames(status="labeled", split="calib")}
    assert calib and not calib & trained
    rows = result.metrics
    for r in rows:
        assert r["train_frames"] == len(st[f"gen{r['generation']:03d}/train"]["train_ids"])
        assert r["train_frames"] < r["labels"]
        assert r["stress_n_test"] == 24 and r["stress_force_mae_eV_A"] > 0
        assert r["stress_force_mae_lo_eV_A"] < r["stress_force_mae_eV_A"] < \
            r["stress_force_mae_hi_eV_A"]
        assert r["force_rmse_p95_eV_A"] <= r["force_rmse_max_eV_A"]
        assert r["force_rmse_p95_lo_eV_A"] <= r["force_rmse_p95_eV_A"] <= \
            r["force_rmse_p95_hi_eV_A"]


def test_probe_without_tax_learns_from_the_labels_picked_after_each_backbone(water_pool,
                                                                             tmp_path):
    """select.hold_out false with probe.lineage 2: every label trains the backbone (train
    frames = labels), and probe g learns from backbone g-1's errors on the labels picked after
    it (out of sample when the errors were made), scored through backbone g-1."""
    d = tmp_path / "notax"
    cfg = _pool_campaign(water_pool, generations=2,
                         select={"budget": 3, "min_spacing": 0, "hold_out": False},
                         probe={**TINY_CAMPAIGN["probe"], "target": "atom",
                                "atom_pool": "mean", "lineage": 2})
    result = run(parse_campaign(cfg), d, log=None)
    L, st = open_ledger(d), read_stages(d)
    assert not L.count(split="calib", generation=1) and not L.count(split="calib", generation=2)
    for g in (1, 2):
        picked = set(L.fids(generation=g, status="labeled"))
        assert len(picked) == 3
        assert picked <= set(st[f"gen{g:03d}/train"]["train_ids"])  # no tax
        probe = st[f"gen{g:03d}/probe"]
        assert probe["path"] and probe["train_ids"] == []  # nothing out of sample for g
        # backbone g-1's errors on what it never trained on, the labels picked after it
        earlier = set(probe["lineage_ids"][str(g - 1)])
        assert picked <= earlier
        assert not earlier & set(st[f"gen{g - 1:03d}/train"]["train_ids"])
    last = result.metrics[-1]
    assert last["train_frames"] == len(st["gen002/train"]["train_ids"])
    assert last["train_frames"] + L.count(split="calib") >= last["labels"]


def water_pool_forces(path, frame):
    """The pool file's reference forces of ``frame`` (by its content id)."""
    from alprobe.frames import frame_id, read_labeled

    cache = water_pool_forces.__dict__.setdefault("cache", {})
    if path not in cache:
        cache[path] = {frame_id(a): a.arrays["ref_forces"]
                       for a in read_labeled(path, keep_info=True)}
    return cache[path][frame["fid"] if isinstance(frame, dict) else frame.info["fid"]]


def test_oracle_needs_a_pool_and_the_probe_keeps_its_hold_out(water_pool):
    from alprobe.config import ConfigError

    bad = copy.deepcopy(TINY_CAMPAIGN)
    bad["select"] = {**bad["select"], "rule": "oracle"}
    with pytest.raises(ConfigError, match="oracle.*pool"):
        parse_campaign(bad)
    bad = copy.deepcopy(TINY_CAMPAIGN)
    bad["select"] = {**bad["select"], "hold_out": False}
    with pytest.raises(ConfigError, match="hold_out.*lineage"):
        parse_campaign(bad)
    bad["probe"] = {**bad["probe"], "lineage": 2}
    assert parse_campaign(bad).select.hold_out is False
    assert parse_campaign(_pool_campaign(water_pool, select={"rule": "oracle", "budget": 4}))


def test_stress_key_must_be_a_number_on_every_frame_and_leave_frames(tmp_path, capsys):
    from alprobe.cli import main

    frames = _pool_frames(12)
    for i, a in enumerate(frames):
        a.info["temperature_K"] = 300.0 if i < 6 else 900.0
    frames[3].info["temperature_K"] = "hot"
    path = tmp_path / "p.extxyz"
    write(path, frames, format="extxyz")
    cfg = {"name": "s", "pool": {"file": str(path), "group_key": "traj_id",
                                 "stress_key": "temperature_K", "initial_size": 4},
           "select": {"budget": 2}}
    (tmp_path / "c.yaml").write_text(json.dumps(cfg))
    assert main(["validate", str(tmp_path / "c.yaml")]) != 0
    err = capsys.readouterr()
    assert "frame 3" in err.out + err.err and "pool.stress_key" in err.out + err.err


def test_make_pool_resumes_from_its_parts(tmp_path):
    """scripts/make_pool.py (real HF/STO-3G MD and labels): a stopped run's finished
    trajectories are reused, a lost label part is redone from its MD part, the pool and its
    provenance come out the same, and other settings against the same parts are refused."""
    import subprocess
    import sys
    from pathlib import Path

    from alprobe.frames import read_labeled

    script = Path(__file__).resolve().parents[1] / "scripts" / "make_pool.py"
    out = tmp_path / "w.extxyz"
    cmd = [sys.executable, str(script), "H2O", "--temperatures", "300", "600",
           "--trajectories", "1", "--frames", "3", "--stride", "2", "--equilibrate", "2",
           "--level", "hf/sto-3g", "--workers", "1", "--out", str(out)]
    first = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    before = read_labeled(out, keep_info=True)
    prov = json.loads(out.with_suffix(".json").read_text())
    assert prov["frames"] == 6 and prov["trajectories"] == 2 and prov["failed_labels"] == 0
    parts = tmp_path / "w.parts"
    for p in parts.glob("labels-H2O-T600-0.*"):
        p.unlink()
    again = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "reusing 1 labeled trajectories" in again.stdout
    assert "MD H2O" not in again.stdout  # both MD parts were reused
    after = read_labeled(out, keep_info=True)
    assert [f.info["traj_id"] for f in after] == [f.info["traj_id"] for f in before]
    for a, b in zip(before, after):
        assert np.allclose(a.positions, b.positions)
        assert np.allclose(a.arrays["ref_forces"], b.arrays["ref_forces"], atol=1e-6)
    other = subprocess.run(cmd[:-2] + ["--seed", "3", "--out", str(out)], capture_output=True,
                           text=True, cwd=tmp_path)
    assert other.returncode != 0 and "other settings" in other.stderr


def test_diverse_oracle_batches_come_from_the_shortlist_by_farthest_point(water_pool,
                                                                           tmp_path):
    """select.diversity on a real pool campaign: every candidate carries the backbone's
    embeddings from the scoring pass, and the batch is the farthest-point spread of the
    oracle's shortlist, recomputed here from the ledger's own embeddings and errors."""
    from alprobe.acquire import farthest_point, standardise
    from alprobe.frames import EMBEDDING, pooled_embeddings

    d = tmp_path / "diverse"
    cfg = _pool_campaign(water_pool, generations=2, select={
        "rule": "oracle", "budget": 2, "min_spacing": 0, "diversity": "farthest_point",
        "shortlist": 2.5})
    run(parse_campaign(cfg), d, log=None)
    L, st = open_ledger(d), read_stages(d)
    frames = L.frames(generation=2)  # every candidate of the last selection, in its order
    assert len(frames) == st["gen002/explore"]["n_frames"] > 5
    assert all(a.arrays[EMBEDDING].shape[0] == 3 for a in frames)
    rec = st["gen002/select"]
    assert rec["shortlist"] == 5 and rec["spread"] >= 0 and "spread_rule" in rec
    err = np.array([a.info["true_force_rmse"] for a in frames])
    short = np.argsort(-err, kind="stable")[:5]
    x = standardise(pooled_embeddings(frames))
    expect = {frames[i].info["fid"] for i in short[farthest_point(x[short], 0, 2)]}
    assert {a.info["fid"] for a in frames if a.info["status"] == "labeled"} == expect


def test_rotating_hold_out_trains_each_batch_s_held_share_at_the_next_generation(water_pool,
                                                                                tmp_path):
    """select.hold_out: rotate: generation g's calibration share is out of backbone g (the
    probe learns from backbone g's errors on it) and in backbone g+1's training set."""
    d = tmp_path / "rotate"
    cfg = _pool_campaign(water_pool, generations=2,
                         select={"budget": 4, "min_spacing": 0, "hold_out": "rotate"},
                         pool={"file": str(water_pool), "group_key": "traj_id",
                               "test_fraction": 0.3, "initial_size": 14},
                         initial={**TINY_CAMPAIGN["initial"], "calibration_fraction": 0.4})
    c = parse_campaign(cfg)
    assert c.select.hold_out == "rotate"
    run(c, d, log=None)
    L, st = open_ledger(d), read_stages(d)
    calib = {g: set(L.fids(split="calib", status="labeled", generation=g)) for g in (0, 1, 2)}
    assert calib[0] and (calib[1] or calib[2])
    for g in (1, 2):
        ids = set(st[f"gen{g:03d}/train"]["train_ids"])
        assert calib[g - 1] <= ids and not calib[g] & ids
        assert set(L.fids(split="train", status="labeled", generation=g)) <= ids
        assert set(st[f"gen{g:03d}/probe"]["train_ids"]) == calib[g]
    assert not calib[0] & set(st["gen000/train"]["train_ids"])


def test_crossfit_fold_models_never_see_the_fold_that_trains_the_probe(water_pool, tmp_path):
    """probe.crossfit 2 with no hold-out: backbone g trains on every label; two fold models
    start where it starts, each without one fold (whole trajectories) of the frames new to
    generation g, and the probe learns from each fold model's errors on its own fold."""
    d = tmp_path / "crossfit"
    cfg = _pool_campaign(water_pool, generations=1,
                         select={"budget": 4, "min_spacing": 0, "hold_out": False},
                         probe={**TINY_CAMPAIGN["probe"], "target": "atom",
                                "atom_pool": "mean", "crossfit": 2})
    run(parse_campaign(cfg), d, log=None)
    L, st = open_ledger(d), read_stages(d)
    backbone = set(st["gen001/train"]["train_ids"])
    new = set(L.fids(generation=1, status="labeled"))
    assert len(new) == 4 and new <= backbone  # no tax
    cross = st["gen001/crossfit"]
    group = {a.info["fid"]: a.info["group"] for a in L.frames(status="labeled")}
    # the folded frames: those backbone 0 never trained on (the new picks and generation 0's
    # calibration share, which this arm now trains on); a fold is whole trajectories
    folded = backbone - set(st["gen000/train"]["train_ids"])
    assert new <= folded
    n_folds = min(2, len({group[f] for f in folded}))
    assert len(cross["members"]) == len(cross["held_out"]) == n_folds
    assert set().union(*map(set, cross["held_out"])) == folded
    for path, held in zip(cross["members"], cross["held_out"]):
        seen = set(json.loads(open(path.replace(".model", ".json")).read())["train_ids"])
        assert held and not seen & set(held)  # out of sample for its own fold model
        assert seen == backbone - set(held)
        # whole trajectories: no other fold shares one with it (earlier generations' labels
        # may: the start point saw those too)
        assert not {group[f] for f in held} & {group[f] for f in seen & folded}
    probe = st["gen001/probe"]
    assert probe["path"] and probe["train_ids"] == []
    assert sorted(probe["crossfit_ids"]) == sorted(i for h in cross["held_out"] for i in h)


def test_crossfit_needs_two_folds():
    from alprobe.config import ConfigError

    bad = copy.deepcopy(TINY_CAMPAIGN)
    bad["probe"] = {**bad["probe"], "crossfit": 1}
    with pytest.raises(ConfigError, match="crossfit"):
        parse_campaign(bad)
    bad["probe"]["crossfit"] = 3
    bad["select"] = {**bad["select"], "hold_out": False}
    assert parse_campaign(bad).probe.crossfit == 3
