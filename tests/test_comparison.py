"""Comparisons of acquisition strategies: the comparison file, the summary, and a real
two-arm comparison (tiny MACE, HF/STO-3G water, one LocalCluster) with its fairness checks."""

from __future__ import annotations

import copy
import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from alprobe import open_ledger
from alprobe.cli import main
from alprobe.comparison import load_comparison, parse_comparison, run_comparison
from alprobe.config import ConfigError, parse_campaign
from alprobe.ledger import read_stages

from .conftest import TINY_CAMPAIGN

ARMS = {"ensemble": {"select": {"rule": "ensemble"}, "committee": {"members": 2}},
        "random": {"select": {"rule": "random"}}}


def _cmp(arms=None, **extra):
    return {"name": "tinycmp", "shared": copy.deepcopy(TINY_CAMPAIGN),
            "arms": copy.deepcopy(ARMS if arms is None else arms), **extra}


def _problems(data) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_comparison(data)
    return info.value.problems


# ----------------------------------------------------------------------------- the file

def test_arms_inherit_the_shared_settings():
    cmp = parse_comparison(_cmp())
    assert list(cmp.arms) == ["ensemble", "random"]
    ens, rnd = cmp.arms["ensemble"], cmp.arms["random"]
    assert ens.select.rule == "ensemble" and ens.committee.members == 2
    assert rnd.select.rule == "random"
    for arm in (ens, rnd):
        for section in ("system", "dft", "initial", "backbone", "probe", "explore"):
            assert getattr(arm, section) == getattr(cmp.base, section)
        assert arm.select.budget == cmp.base.select.budget and arm.seed == cmp.base.seed
    shared = cmp.shared()
    assert shared.generations == 0 and shared.select.rule == "probe"


def test_an_arm_may_not_change_shared_settings():
    probs = _problems(_cmp({"a": {"select": {"rule": "random", "budget": 99}},
                            "b": {"dft": {"basis": "6-31g"}}, "c": {"seed": 4}}))
    assert any(p.startswith("arms.a.select.budget: shared by all arms") for p in probs)
    assert any(p.startswith("arms.b.dft: shared by all arms") for p in probs)
    assert any(p.startswith("arms.c.seed: shared by all arms") for p in probs)


def test_identical_arms_and_bad_values_are_reported():
    probs = _problems(_cmp({"r1": {"select": {"rule": "random"}},
                            "r2": {"select": {"rule": "random"}},
                            "e": {"select": {"rule": "ensemble"},
                                  "committee": {"members": 1}}}))
    assert any(p.startswith("arms.r2: same settings as arms.r1") and "replica: 1" in p
               for p in probs)
    assert any(p.startswith("arms.e.committee.members") for p in probs)
    # a replica makes the second arm legitimate
    ok = parse_comparison(_cmp({"r1": {"select": {"rule": "random"}},
                                "r2": {"select": {"rule": "random"}, "replica": 1}}))
    assert ok.arms["r2"].replica == 1


def test_comparison_file_needs_one_source_and_arms(tmp_path):
    assert any("exactly one of `campaign`" in p
               for p in _problems({"name": "x", "arms": {"a": {}}}))
    assert any(p.startswith("arms:") for p in _problems(_cmp(arms={})))
    assert any(p.startswith("bogus: unknown key") for p in _problems(_cmp(bogus=1)))
    data = {"name": "x", "campaign": "nowhere.yaml", "arms": {"a": {}}}
    (tmp_path / "c.yaml").write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="campaign: file not found"):
        load_comparison(tmp_path / "c.yaml")


def test_comparison_file_can_name_a_campaign_file(tmp_path, capsys):
    import yaml

    (tmp_path / "base.yaml").write_text(yaml.safe_dump(TINY_CAMPAIGN))
    (tmp_path / "cmp.yaml").write_text(yaml.safe_dump(
        {"name": "viafile", "campaign": "base.yaml", "arms": ARMS}))
    cmp = load_comparison(tmp_path / "cmp.yaml")
    assert cmp.base.source_dir == str(tmp_path.resolve())
    assert main(["validate", str(tmp_path / "cmp.yaml")]) == 0
    assert "ok" in capsys.readouterr().out


def test_repository_comparison_file_is_valid():
    repo = Path(__file__).resolve().parents[1]
    cmp = load_comparison(repo / "campaigns" / "compare_ethanol.yaml")
    rules = sorted({c.select.rule for c in cmp.arms.values()})
    assert rules == ["ensemble", "probe", "random"] and cmp.base.generations >= 5


# ----------------------------------------------------------------------------- the summary

def _curve(arm, rule, maes, labels0=20, step=10):
    return [{"arm": arm, "rule": rule, "generation": g, "labels": labels0 + step * g,
             "dft_calls": labels0 + step * g, "force_mae_meV_A": m, "force_rmse_meV_A": m,
             "energy_mae_meV_atom": m / 10, "hit_rate": 0.5 if g else math.nan,
             "signal_auroc_test": 0.7, "signal_auroc_new": math.nan, "wall_s": 1.0,
             "cpu_s": 1.0} for g, m in enumerate(maes)]


def test_summary_names_the_winner_and_weighs_the_replica_spread():
    from alprobe.report import comparison_summary

    curves = (_curve("a", "probe", [100, 80, 60]) + _curve("a2", "probe", [100, 82, 64])
              + _curve("r", "random", [100, 90, 80]))
    groups = {"a": "p", "a2": "p", "r": "r"}
    text = comparison_summary("t", curves, [], groups, budget=10, generations=2)
    # strategies are compared by the mean of their replicas
    assert "**a/a2** (62.0 meV/Å, mean of 2 replicas, 40 labels)" in text
    assert "r (80.0 meV/Å), by 18.0 meV/Å" in text
    assert "is **larger than** the largest replica spread (4.0)" in text
    # every arm reached 80 meV/A: a at 30 labels, a2 and r at 40
    assert "- a: 30 labels" in text and "- a2: 40 labels" in text and "- r: 40 labels" in text
    close = _curve("b", "probe", [100, 80, 60]) + _curve("b2", "probe", [100, 80, 90]) \
        + _curve("s", "random", [100, 80, 70])
    text = comparison_summary("t", close, [], {"b": "p", "b2": "p", "s": "r"}, budget=10,
                              generations=2)
    assert "**s** (70.0 meV/Å" in text and "is **not larger than**" in text
    solo = comparison_summary("t", _curve("a", "probe", [9, 8]) + _curve("r", "random", [9, 7]),
                              [], {"a": "p", "r": "r"}, budget=1, generations=1)
    assert "No replicas were run" in solo


def test_summary_compares_arms_where_all_of_them_have_been():
    from alprobe.report import comparison_summary

    curves = _curve("x", "probe", [100, 70]) + _curve("y", "random", [100, 90, 50])
    text = comparison_summary("t", curves, [], {"x": "p", "y": "r"}, budget=10, generations=2)
    assert "Arms that stopped early: x (at generation 1)" in text
    assert "at generation 1: **x** (70.0 meV/Å" in text  # not y's 50 at generation 2


# ----------------------------------------------------------------------------- a real comparison

@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    """The comparison runs on one real LocalCluster; its task stream is kept."""
    from distributed import Client, LocalCluster, get_task_stream

    directory = tmp_path_factory.mktemp("compare") / "out"
    lines: list[str] = []
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as lc, Client(lc) as client, \
            get_task_stream(client) as ts:
        result = run_comparison(parse_comparison(_cmp()), directory, log=lines.append,
                                client=client)
    return directory, result, lines, ts.data


def _gen0(directory: Path) -> list[tuple]:
    out = []
    for a in open_ledger(directory).frames(generation=0):
        out.append((a.info["fid"], a.info["status"], a.info.get("split"),
                    a.numbers.tobytes(), a.positions.tobytes(),
                    float(a.info.get("ref_energy", math.nan)),
                    a.arrays["ref_forces"].tobytes() if "ref_forces" in a.arrays else b""))
    return sorted(out)


def test_outputs_exist_and_cover_every_arm(compared):
    directory, result, lines, _ = compared
    for name in ("learning_curves.csv", "learning_curves.png", "costs.csv", "summary.md",
                 "comparison.yaml"):
        assert (directory / name).stat().st_size > 0, name
    rows = list(csv.DictReader(open(directory / "learning_curves.csv")))
    gens = TINY_CAMPAIGN["generations"]
    assert sorted((r["arm"], int(r["generation"])) for r in rows) == sorted(
        (arm, g) for arm in ARMS for g in range(gens + 1))
    for r in rows:
        assert float(r["force_mae_meV_A"]) > 0 and math.isfinite(float(r["force_mae_meV_A"]))
        if int(r["generation"]) > 0:
            assert 0.0 <= float(r["hit_rate"]) <= 1.0
            assert int(r["labels"]) > int(rows[0]["labels"])
    summary = result.summary
    assert all(f"| {arm} |" in summary for arm in ARMS)
    assert "Lowest test force MAE at generation 2" in summary
    costs = list(csv.DictReader(open(directory / "costs.csv")))
    by = {(c["arm"], c["stage"]): float(c["cpu_s"]) for c in costs}
    # the committee's extra cost is real and counted: M = 2 models trained per generation
    assert by[("ensemble", "train")] > 1.3 * by[("random", "train")]
    assert by[("ensemble", "deviation")] > 0 and by[("random", "deviation")] == 0
    assert by[("ensemble", "total")] > 0 and by[("shared (gen 0)", "label")] > 0
    assert any(line.startswith("[ensemble]") for line in lines)
    assert any(line.startswith("[random]") for line in lines)


def test_arms_share_generation_0_and_the_test_set_byte_for_byte(compared):
    directory, _, _, _ = compared
    shared = _gen0(directory / "shared")
    assert len(shared) == TINY_CAMPAIGN["initial"]["n_rattle"] + TINY_CAMPAIGN["initial"]["n_md"]
    for arm in ARMS:
        assert _gen0(directory / "arms" / arm) == shared
    state = read_stages(directory / "arms" / "random")
    assert state["gen000/train"]["path"].startswith(str(directory / "shared"))


def test_no_test_frame_is_selected_or_trained_on(compared):
    directory, _, _, _ = compared
    for arm in ARMS:
        d = directory / "arms" / arm
        L = open_ledger(d)
        test = set(L.fids(split="test"))
        assert len(test) == TINY_CAMPAIGN["initial"]["test_size"]
        later = {k["fid"] for k in L.keys() if k["generation"] > 0}
        assert not test & later
        trained = set()
        for js in list((d / "models").glob("gen_*/*.json")) + list(
                (directory / "shared" / "models").glob("gen_*/*.json")):
            trained |= set(json.loads(js.read_text())["train_ids"])
        assert trained and not test & trained


def test_each_arm_selects_by_its_rule(compared):
    from alprobe.acquire import select_by_deviation, select_random

    directory, _, _, _ = compared
    budget = TINY_CAMPAIGN["select"]["budget"]
    for arm in ARMS:
        L = open_ledger(directory / "arms" / arm)
        for gen in range(1, TINY_CAMPAIGN["generations"] + 1):
            keys = L.keys(generation=gen)
            chosen = sorted(k["fid"] for k in keys if k["status"] != "candidate")
            assert len(chosen) == budget
            rng = np.random.default_rng([TINY_CAMPAIGN["seed"], gen, 5])
            if arm == "random":
                pick = select_random(len(keys), budget, rng=rng)
            else:
                sigma = np.array([k["sigma_f"] for k in keys])
                assert np.all(np.isfinite(sigma)) and np.all(sigma >= 0)
                pick = select_by_deviation(
                    sigma, np.array([k["walker"] for k in keys]),
                    np.array([k["sample"] for k in keys]), budget,
                    TINY_CAMPAIGN["select"]["min_spacing"], 0.0, None, rng=rng)
            assert sorted(keys[i]["fid"] for i in pick) == chosen
            if arm == "ensemble":  # the chosen frames are among the most disputed
                ranks = sorted(sigma, reverse=True)
                assert min(k["sigma_f"] for k in keys if k["fid"] in chosen) >= ranks[
                    min(len(ranks) - 1, 3 * budget)]
    d = directory / "arms" / "ensemble"
    for gen in range(TINY_CAMPAIGN["generations"] + 1):
        members = read_stages(d)[f"gen{gen:03d}/committee"]
        assert len(members["members"]) == 1 and Path(members["members"][0]).is_file()


def test_same_seed_gives_the_same_selections(compared, tmp_path):
    """A second run of the ensemble arm's generation 1 from the shared start, in another
    folder, draws the same candidates and selects the same frames."""
    from alprobe.campaign import _prepare_folder, _run
    from alprobe.comparison import _seed_arm

    directory, _, _, _ = compared
    cmp = parse_comparison(_cmp())
    cfg = parse_campaign({**cmp.arms["ensemble"].model_dump(mode="json",
                                                           exclude={"source_dir"}),
                          "generations": 1})
    again = tmp_path / "again"
    _seed_arm(directory / "shared", again)
    _prepare_folder(cfg, again, False)
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as lc, Client(lc) as client:
        _run(cfg, again, client, None, False, key_prefix="again-")
    first, second = open_ledger(directory / "arms" / "ensemble"), open_ledger(again)
    assert sorted(second.fids(generation=1)) == sorted(first.fids(generation=1))
    assert sorted(second.fids(generation=1, status="labeled")) == sorted(
        first.fids(generation=1, status="labeled"))
    shutil.rmtree(again)


def test_status_of_a_comparison_folder(compared, capsys):
    directory, _, _, _ = compared
    assert main(["status", str(directory)]) == 0
    out = capsys.readouterr().out
    assert "== arm ensemble" in out and "== arm random" in out and "# Comparison" in out


def test_arms_interleave_on_one_cluster(compared):
    """Tasks of both arms ran at the same time on the shared workers."""
    *_, stream = compared
    spans: dict[str, list[tuple[float, float]]] = {}
    for t in stream:
        key = t.get("key")
        arm = key.split("-")[0] if isinstance(key, str) else ""
        for ss in t.get("startstops", []):
            if ss.get("action") == "compute" and arm in ARMS:
                spans.setdefault(arm, []).append((ss["start"], ss["stop"]))
    assert set(spans) == set(ARMS)
    overlap = sum(max(0.0, min(b1, b2) - max(a1, a2))
                  for a1, b1 in spans["ensemble"] for a2, b2 in spans["random"])
    assert overlap > 0.5, overlap  # seconds during which both arms computed
