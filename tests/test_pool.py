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


@pytest.fixture(scope="session")
def water_pool(tmp_path_factory):
    """48 water frames: 2 temperatures x 3 trajectories x 8 frames, HF/STO-3G."""
    from alprobe.dft import DFTLevel
    from alprobe.pool import label_frame, sample_trajectory

    level = DFTLevel(method="hf", basis="sto-3g", density_fit=False)
    frames = []
    for ti, T in enumerate((300.0, 900.0)):
        for k in range(3):
            traj = sample_trajectory("water", T, level, frames=8, stride=3, equilibrate=4,
                                     timestep_fs=0.5, friction_per_fs=0.02,
                                     traj_id=f"w-T{T:g}-{k}", seed=[ti, k])
            for f in traj:
                labeled, why = label_frame(f, level)
                assert labeled is not None, why
                frames.append(labeled)
    path = tmp_path_factory.mktemp("pool") / "water_pool.extxyz"
    write(path, frames, format="extxyz")
    return path


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
    floor = json.loads((d / "noise_floor.json").read_text())
    assert len(floor["force_mae_meV_A"]) == 3 and floor["sd_meV_A"] >= 0
    text = res.summary
    assert "## Paired differences" in text and "random − probe" in text
    assert "| latent |" in text and "probe − latent" in text
    assert "## Noise floor" in text and "## Verdict" in text


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
