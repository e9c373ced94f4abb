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
            "arms": copy.deepcopy(ARMS if arms is None else arms), "noise_floor_seeds": 0,
            **extra}


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
    assert any(p.startswith("arms.r2: same settings as arms.r1") and "replicas: N" in p
               for p in probs)
    assert any(p.startswith("arms.e.committee.members") for p in probs)
    # replicas are the comparison's: an arm's own replica key is refused with the fix
    probs = _problems(_cmp({"r1": {"select": {"rule": "random"}, "replica": 1}}))
    assert any(p.startswith("arms.r1.replica:") and "replicas: N" in p for p in probs)
    ok = parse_comparison(_cmp({"r1": {"select": {"rule": "random"}}}, replicas=3))
    assert [(r.name, r.replica) for r in ok.runs()] == [("r1-r0", 0), ("r1-r1", 1),
                                                         ("r1-r2", 2)]
    assert ok.run_config(ok.runs()[2]).replica == 2
    assert ok.shared_replicas() == [0]  # prospective: one generation 0 for all replicas
    for bad in ({"replicas": 0}, {"noise_floor_seeds": 1}, {"target_force_mae_meV_A": -3}):
        key = next(iter(bad))
        assert any(p.startswith(f"{key}:") for p in _problems(_cmp(**bad)))


def test_comparison_file_needs_one_source_and_arms(tmp_path):
    assert any("exactly one of `campaign`" in p
               for p in _problems({"name": "x", "arms": {"a": {}}}))
    # a file naming only a pool gets the three strategies and the pool defaults
    only = parse_comparison({"pool": {"file": "p.extxyz", "group_key": "traj_id"}}, tmp_path)
    assert sorted(only.arms) == ["ensemble", "probe", "random"]
    assert only.replicas == 5 and only.base.generations == 6 and only.pool_mode
    assert only.name == "p" and only.shared_replicas() == [0, 1, 2, 3, 4]
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
    assert rules == ["ensemble", "probe", "random"] and cmp.base.generations >= 3
    assert cmp.replicas >= 3 and cmp.base.initial.test_size >= 480  # paired, +-5% test MAE


# ----------------------------------------------------------------------------- the summary

def _curve(arm, replica, rule, maes, labels0=20, step=10):
    return [{"run": f"{arm}-r{replica}", "arm": arm, "replica": replica, "rule": rule,
             "generation": g, "labels": labels0 + step * g, "dft_calls": labels0 + step * g,
             "force_mae_meV_A": m, "force_mae_lo_meV_A": 0.95 * m,
             "force_mae_hi_meV_A": 1.05 * m, "force_rmse_meV_A": m,
             "energy_mae_meV_atom": m / 10, "hit_rate": 0.5 if g else math.nan,
             "hit_rate_abs": (0.99 if rule == "random" else 0.6) if g else math.nan,
             "hit_base_rate_abs": math.nan, "unbiased_selection": rule == "random",
             "signal_auroc_test": 0.7,
             "signal_auroc_new": math.nan, "wall_s": 1.0, "cpu_s": 1.0}
            for g, m in enumerate(maes)]


def test_paired_statistics_on_curves_with_a_known_answer():
    """Arm a is 10% more accurate than r at every label count in each of 4 replicas, with
    replica-to-replica variation larger than the gap: the paired intervals resolve it."""
    from alprobe.paired import paired_tables

    curves = []
    for rep, scale in enumerate((1.0, 1.3, 0.8, 1.15)):
        base = [100 * scale, 70 * scale, 50 * scale]
        curves += _curve("r", rep, "random", base)
        curves += _curve("a", rep, "probe", [base[0]] + [0.9 * m for m in base[1:]])
    t = paired_tables(curves, target=60)
    d = t.at_labels[("r", "a")][2]
    assert d.n == 4 and d.resolved and d.mean > 0  # r - a > 0: a is more accurate
    assert d.mean == pytest.approx(np.mean([5 * s for s in (1.0, 1.3, 0.8, 1.15)]))
    au = t.aulc[("r", "a")]
    assert au.resolved and au.mean > 0
    assert t.aulc_range == (20, 40)
    # labels to 60 meV/A: replica 0 of r crosses between 30 (70) and 40 (50) labels
    from alprobe.paired import labels_to_target

    assert t.to_target_values["r"][0] == pytest.approx(labels_to_target(
        [20, 30, 40], [100, 70, 50], 60))


def test_summary_says_what_the_intervals_resolve():
    from alprobe.report import comparison_summary

    curves = []
    for rep, scale in enumerate((1.0, 1.3, 0.8, 1.15)):
        base = [100 * scale, 70 * scale, 50 * scale]
        curves += _curve("r", rep, "random", base)
        curves += _curve("a", rep, "probe", [base[0]] + [0.9 * m for m in base[1:]])
        curves += _curve("b", rep, "ensemble", [m * (1 + 0.08 * (-1) ** rep) for m in base])
    floor = {"run": "r-r0", "labels": 40, "generation": 2, "retrain": "finetune",
             "force_mae_meV_A": [50.0, 51.0, 49.5, 50.5], "sd_meV_A": 0.65,
             "range_meV_A": 1.5}
    text = comparison_summary("t", curves, [], budget=10, generations=2, target=60,
                              noise_floor=floor)
    assert "| gen | labels | r − a | r − b | a − b |" in text
    assert "r vs a:" in text and "resolved, a is better" in text
    assert "r vs b:" in text and "not resolved" in text  # b alternates around r
    assert "## Noise floor" in text and "range 1.5" in text
    # random's absolute hit rate of 0.99: the threshold says nothing
    assert "the threshold is below almost every candidate's error" in text
    # a is resolved better than r; b (r +- 8%, alternating) is resolved against neither
    assert "No arm beats every other; resolved by the intervals: a better than r." in text


def test_summary_says_how_precise_the_test_set_is():
    """Half-widths of 5% everywhere pass; one point at 8% is named as the worst."""
    from alprobe.paired import test_precision
    from alprobe.report import comparison_summary

    curves = _curve("a", 0, "probe", [100, 80]) + _curve("r", 0, "random", [100, 70])
    text = comparison_summary("t", curves, [], budget=1, generations=1)
    assert "±5.0% at worst" in text and "every point is within ±5%" in text
    curves[-1]["force_mae_lo_meV_A"], curves[-1]["force_mae_hi_meV_A"] = 70 * 0.92, 70 * 1.08
    p = test_precision(curves)
    assert p.max == pytest.approx(0.08) and p.worst_run == "r-r0"
    assert p.mean == pytest.approx((3 * 0.05 + 0.08) / 4)
    text = comparison_summary("t", curves, [], budget=1, generations=1)
    assert "±8.0% at worst (r-r0, generation 1): wider than ±5% there" in text


def test_summary_without_replicas_gives_no_interval():
    from alprobe.report import comparison_summary

    curves = _curve("a", 0, "probe", [9, 8]) + _curve("r", 0, "random", [9, 7])
    text = comparison_summary("t", curves, [], budget=1, generations=1)
    assert "no interval" in text


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
                 "comparison.yaml", "comparison.json"):
        assert (directory / name).stat().st_size > 0, name
    # the plan the report reads: every run with its arm and rule, from the validated file
    from alprobe.report.gather import read_plan

    plan = read_plan(directory)
    assert {r: (i.arm, i.rule) for r, i in plan.runs.items()} == {
        arm: (arm, ARMS[arm]["select"]["rule"]) for arm in ARMS}
    assert plan.shared == ["shared"] and plan.budget == TINY_CAMPAIGN["select"]["budget"]
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
    ini = TINY_CAMPAIGN["initial"]
    assert len(shared) == ini["n_rattle"] + ini["n_md"] + ini["test_size"] + ini["stress_size"]
    assert sum(1 for row in shared if row[2] == "test") == ini["test_size"]
    for arm in ARMS:
        assert _gen0(directory / "arms" / arm) == shared
    # each run holds its own copy of the shared models (its ledger names paths inside it)
    state = read_stages(directory / "arms" / "random")
    own = Path(state["gen000/train"]["path"])
    assert own.is_relative_to((directory / "arms" / "random").resolve())
    assert own.read_bytes() == (directory / "shared" / "models" / "gen_000" /
                                "backbone.model").read_bytes()


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
    from alprobe.campaign import prepare_folder, run_in_folder
    from alprobe.comparison import seed_run

    directory, _, _, _ = compared
    cmp = parse_comparison(_cmp())
    cfg = parse_campaign({**cmp.arms["ensemble"].model_dump(mode="json",
                                                           exclude={"source_dir"}),
                          "generations": 1})
    again = tmp_path / "again"
    seed_run(directory / "shared", again)
    prepare_folder(cfg, again, False)
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as lc, Client(lc) as client:
        run_in_folder(cfg, again, client, None, False, key_prefix="again-")
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


def test_summary_reports_training_frames_tails_stress_and_the_oracles_share():
    """An oracle 20% below random everywhere, an arm 10% below (half the oracle's gain, in
    log terms close to it), per-frame tails and a stress set: the summary says how many frames
    each backbone trained on, tabulates the tails, pairs every yardstick and gives the share
    of the oracle's gain with an interval."""
    from alprobe.paired import oracle_recovery
    from alprobe.report import comparison_summary

    curves = []
    for rep, scale in enumerate((1.0, 1.2, 0.9, 1.1, 0.95)):
        base = [100 * scale, 70 * scale, 50 * scale]
        for arm, rule, f, tf in (("random", "random", 1.0, 1.0), ("oracle", "oracle", 0.8, 1.0),
                                 ("probe", "probe", 0.9, 0.75)):
            rows = _curve(arm, rep, rule, [base[0]] + [f * m for m in base[1:]])
            for r in rows:
                m = r["force_mae_meV_A"]
                r.update(train_frames=int(tf * r["labels"]), force_rmse_p95_meV_A=3 * m,
                         force_rmse_max_meV_A=5 * m, stress_force_mae_meV_A=2 * m,
                         stress_force_rmse_p95_meV_A=6 * m, stress_force_rmse_max_meV_A=9 * m)
            curves += rows
    rec = oracle_recovery(curves)
    assert rec.control == "random" and rec.ceiling == "oracle"
    f, lo, hi, n = rec.arms["probe"]
    expected = np.log10(0.9) / np.log10(0.8)  # AULC gains in mean log10 MAE
    assert n == 5 and 0.4 < f < 0.6 and lo <= f <= hi
    # the stress MAE is twice the test MAE everywhere: the same share of log gains
    assert oracle_recovery(curves, "stress_force_mae_meV_A").arms["probe"].fraction == \
        pytest.approx(f)
    assert f == pytest.approx(expected, rel=0.25)
    text = comparison_summary("t", curves, [], budget=10, generations=2)
    assert "labels (trained on)" in text and "| 40 (30) |" in text
    assert "## Tails and stress set" in text and "| oracle | 123.6 | 206.0 | 82.4 | 247.2 | 370.8 |" in text
    assert "## Other yardsticks" in text and "stress-set force MAE" in text
    assert "## Share of the oracle's gain" in text and "probe +0." in text
    assert "The verdict rests on the area under the learning curve of the test force MAE" in text
    assert "the oracle's own gain, random − oracle: +0.0" in text and "**resolved**" in text


def test_summary_measures_the_data_tax_and_the_share_of_probes_loss_it_explains():
    """random_hold (random paying the hold-out) 6% worse than random, PROBE (which pays it)
    12% worse, replica by replica: the tax is resolved and explains about half of PROBE's loss
    (in log terms); an untaxed PROBE arm is not mistaken for a control."""
    from alprobe.paired import data_tax
    from alprobe.report import comparison_summary

    curves = []
    for rep, scale in enumerate((1.0, 1.2, 0.9, 1.1, 0.95)):
        base = [100 * scale, 70 * scale, 50 * scale]
        for arm, rule, f, tf in (("random", "random", 1.0, 1.0),
                                 ("random_hold", "random", 1.06 + 0.01 * rep, 0.75),
                                 ("probe", "probe", 1.12, 0.75),
                                 ("probe_notax", "probe", 0.95, 1.0)):
            rows = _curve(arm, rep, rule, [base[0]] + [f * m for m in base[1:]])
            for r in rows:
                r["train_frames"] = int(tf * r["labels"])
            curves += rows
    (rec,) = data_tax(curves)
    assert rec.arm == "random_hold" and rec.base == "random" and rec.probe == "probe"
    assert rec.tax.resolved and rec.tax.mean > 0 and rec.loss.resolved
    f, lo, hi, n = rec.share
    expected = np.mean([np.log10(1.06 + 0.01 * r) for r in range(5)]) / np.log10(1.12)
    assert n == 5 and f == pytest.approx(expected, rel=0.2) and lo <= f <= hi < 1
    text = comparison_summary("t", curves, [], budget=10, generations=2)
    assert "## The data tax" in text and "random_hold − random +0.0" in text
    assert "share of that loss the tax explains +0." in text
    # without the taxed control there is nothing to measure
    assert data_tax([r for r in curves if r["arm"] != "random_hold"]) == []


def test_stability_summary_counts_failures_and_censors_the_rest():
    from alprobe.stages.stability import stability_summary

    out = stability_summary(["completed", "unphysical at step 300: bond broken",
                             "completed", "MD error at step 120: ValueError"],
                            [1000, 300, 1000, 120], 1000, 0.5)
    assert out["stable_fraction"] == 0.5 and out["walkers"] == 4
    assert out["time_to_failure_fs"] == [500.0, 150.0, 500.0, 60.0]
    assert out["first_failure_fs"] == 60.0 and out["run_fs"] == 500.0


def test_summary_pairs_md_stability_across_replicas():
    from alprobe.report import comparison_summary

    curves, stab = [], {}
    for rep in range(3):
        curves += _curve("a", rep, "probe", [100, 80]) + _curve("r", rep, "random", [100, 90])
        stab[f"a-r{rep}"] = {"walkers": 4, "temperature_K": 900.0, "run_fs": 500.0,
                             "stable_fraction": 1.0, "first_failure_fs": 500.0}
        stab[f"r-r{rep}"] = {"walkers": 4, "temperature_K": 900.0, "run_fs": 500.0,
                             "stable_fraction": 0.5 + 0.05 * rep,
                             "first_failure_fs": 100.0 + 10 * rep}
    text = comparison_summary("t", curves, [], budget=10, generations=1, stability=stab)
    assert "## MD stability of the final models" in text
    assert "| a | 1.00 | 500 |" in text and "| r | 0.55 | 110 |" in text
    assert "- a − r: stable fraction +0.45 [" in text and "**resolved**" in text
