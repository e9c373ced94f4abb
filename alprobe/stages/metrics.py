"""The generation's metrics row: labels, test errors with their interval, the trust signal's
audits, hit rates, and where the time and CPU went."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from ase import Atoms

from ..dataset import hit_rate
from ..metrics import auroc_unreliable, frame_errors, spearman
from ..records import ACCOUNTS, STAGES, stage_key
from .base import Commit, Stage
from .context import Context
from .label import LABEL_OUTCOMES

__all__ = ["REPLAY_KEYS", "TEST_KEYS", "Metrics", "replay_columns", "signal_metrics",
           "train_frames"]

_NAN = float("nan")


def _with_pool_labels(ctx: Context, frames: Sequence[Atoms]) -> None:
    """Pool candidates get their reference labels (known, though not bought) in place."""
    if ctx.pool is None:
        return
    for a in frames:
        if "ref_forces" not in a.arrays:
            a.info["ref_energy"], a.arrays["ref_forces"] = ctx.pool.label(a.info["fid"])


#: The evaluate stage's keys a metrics row carries (test set; stress set with ``stress_``).
TEST_KEYS = tuple(p + k for p in ("", "stress_") for k in (
    "energy_mae_eV_per_atom", "force_mae_eV_A", "force_rmse_eV_A", "force_mae_lo_eV_A",
    "force_mae_hi_eV_A", "force_rmse_p95_eV_A", "force_rmse_p95_lo_eV_A",
    "force_rmse_p95_hi_eV_A", "force_rmse_max_eV_A", "n_test"))


def train_frames(ctx: Context, gen: int) -> int:
    """Frames backbone ``gen`` was trained on (a frozen generation keeps its predecessor's;
    0 for a user's model used as it is): beside the labels paid for, the data tax of an arm
    that holds labels out of backbone training."""
    for g in range(gen, -1, -1):
        ids = ctx.ledger.stage_info(stage_key(g, "train")).get("train_ids", [])
        if ids:
            return len(ids)
    return 0


def _pool_size(probe: dict[str, Any]) -> int:
    """The probe's training examples (frames): the current backbone's and, with
    probe.lineage, earlier backbones'; with probe.crossfit, the fold models'."""
    return len(probe.get("train_ids", [])) + sum(
        len(v) for v in probe.get("lineage_ids", {}).values()) \
        + len(probe.get("crossfit_ids", []))


def signal_metrics(ctx: Context, gen: int) -> dict[str, Any]:
    """The arm's trust signal of generation g-1 (PROBE, or the committee's sigma) measured on
    generation g: the probe's training pool, the candidates' P(reliable) quantiles, and AUROC
    and Spearman rho (errors from the raw predictions) on the frames the rule picked (a
    range-restricted sample), on the random audit sample (select.audit_random) and, in a
    pool, on every candidate (their labels are known).

    ``trust_auroc_<set>`` is at the median error of the set (the worse half against the better
    half: defined whenever the errors differ, comparable between arms and generations while
    the model improves); ``trust_auroc_abs_<set>`` at select.hit_threshold_force_rmse_eV_A
    (force RMSE; NaN when that threshold leaves one class, or is not set)."""
    L = ctx.ledger
    row: dict[str, Any] = {
        "probe_pool": _pool_size(L.stage_info(stage_key(gen, "probe")))}
    row.update({f"trust_q{q}": _NAN for q in (10, 25, 50, 75, 90)})
    for where in ("new", "audit", "candidates"):
        row.update({f"trust_auroc_{where}": _NAN, f"trust_auroc_abs_{where}": _NAN,
                    f"trust_spearman_{where}": _NAN, f"n_{where}": 0})
    row["probe_auroc_new"] = _NAN
    if gen == 0:
        return row
    cands = [a for a in L.frames(generation=gen) if "pred_forces" in a.arrays]
    trust = np.array([a.info.get("trust", np.nan) for a in cands], dtype=float)
    if np.isfinite(trust).any():
        for q, v in zip((10, 25, 50, 75, 90), np.nanpercentile(trust, [10, 25, 50, 75, 90])):
            row[f"trust_q{q}"] = float(v)
    hit = ctx.cfg.select.hit_threshold_force_rmse_eV_A
    _with_pool_labels(ctx, cands)
    labeled = [a for a in cands if a.info.get("status") == "labeled"]
    sets = {"new": [a for a in labeled if not a.info.get("audit")],
            "audit": [a for a in labeled if a.info.get("audit")],
            "candidates": cands if ctx.pool is not None else []}
    for where, frames in sets.items():
        row[f"n_{where}"] = len(frames)
        conf = ctx.arm.confidence(frames)
        if conf is None or len(frames) < 2 or not np.isfinite(conf).all():
            continue
        errors = frame_errors(frames, ctx.cfg.probe.error)
        row[f"trust_auroc_{where}"] = auroc_unreliable(conf, errors, float(np.median(errors)))
        row[f"trust_spearman_{where}"] = float(spearman(conf, errors))
        if hit is not None:
            row[f"trust_auroc_abs_{where}"] = auroc_unreliable(
                conf, frame_errors(frames, "force_rmse"), hit)
    if ctx.arm.trains_probe():
        row["probe_auroc_new"] = row["trust_auroc_new"]
    return row


def _audit_columns(ctx: Context, gen: int) -> dict[str, Any]:
    audit = ctx.ledger.stage_info(stage_key(gen, "audit"))
    name = ctx.arm.audit_signal()
    at_med = audit.get("auroc_median", audit.get("auroc_tau0", {}))
    return {"probe_auroc_test": float(audit.get("auroc", {}).get("test", {}).get("probe", _NAN)),
            "rule": ctx.arm.rule, "signal": name or "random",
            "unbiased_selection": ctx.arm.unbiased,
            "signal_auroc_test": float(at_med.get("test", {}).get(name, _NAN)),
            "signal_auroc_new": float(at_med.get("new", {}).get(name, _NAN))}


def _hit_rates(ctx: Context, gen: int) -> dict[str, Any]:
    """Frames the rule selected (not the audit sample) whose true error under the model that
    picked them exceeds generation 0's threshold (relative, the same for every arm) or
    select.hit_threshold_force_rmse_eV_A (absolute), and that fraction over every candidate
    where their labels are known (a pool: the base rate)."""
    L, cfg = ctx.ledger, ctx.cfg
    tau, hit = ctx.tau(), cfg.select.hit_threshold_force_rmse_eV_A
    new = [a for a in L.frames(generation=gen, status="labeled")
           if "pred_energy" in a.info and gen > 0 and not a.info.get("audit")]
    row = {"tau": _NAN if tau is None else tau,
           "hit_rate": hit_rate(frame_errors(new, cfg.probe.error), tau) if new else _NAN,
           "hit_threshold_force_rmse_eV_A": _NAN if hit is None else hit,
           "hit_rate_abs": hit_rate(frame_errors(new, "force_rmse"), hit) if new else _NAN,
           "hit_base_rate_abs": _NAN}
    if ctx.pool is not None and hit is not None and gen > 0:
        cands = [a for a in L.frames(generation=gen) if "pred_forces" in a.arrays]
        for a in cands:
            a.info["ref_energy"], a.arrays["ref_forces"] = ctx.pool.label(a.info["fid"])
        if cands:
            row["hit_base_rate_abs"] = hit_rate(frame_errors(cands, "force_rmse"), hit)
    return row


def _costs(ctx: Context, gen: int) -> dict[str, Any]:
    """Task CPU per account, the driver's own CPU, and wall time per stage."""
    L = ctx.ledger
    cpu = ctx.executor.take_cpu()
    row: dict[str, Any] = {f"{acc}_cpu_s": float(cpu.get(acc, 0.0)) for acc in ACCOUNTS}
    row["driver_cpu_s"] = time.thread_time() - ctx.driver_cpu
    ctx.driver_cpu = time.thread_time()
    row["cpu_s"] = float(sum(cpu.values())) + row["driver_cpu_s"]
    for s in STAGES:
        if s == "committee":  # generation 0's committee trains at the start of generation 1
            continue
        row[f"{s}_s"] = float(L.stage_info(stage_key(gen, s)).get("wall_s", 0.0))
    row["committee_s"] = (float(L.stage_info("gen000/committee").get("wall_s", 0.0))
                          if gen == 1 else 0.0)
    ex = L.stage_info(stage_key(gen, "explore"))
    row["md_s"] = float(ex.get("md_s", 0.0))
    row["score_s"] = float(ex.get("score_s", 0.0))
    row["dft_s"] = float(L.stage_info(stage_key(gen, "label")).get("dft_s", 0.0))
    gen_t = L.stage_info(stage_key(gen, "start")).get("t", None)
    row["wall_s"] = float(time.time() - gen_t) if gen_t else _NAN
    # seconds since the campaign started (time to reach an accuracy; stops not subtracted)
    t_start = L.stage_info("gen000/start").get("t", None)
    row["elapsed_s"] = float(time.time() - t_start) if t_start else _NAN
    row["task_span_s"] = ctx.executor.take_spans()
    row["overhead_fraction"] = (float(max(0.0, 1 - row["task_span_s"] / row["wall_s"]))
                                if row["wall_s"] == row["wall_s"] and row["wall_s"] > 0
                                else _NAN)
    return row


class Metrics(Stage):
    """The generation's row (metrics.csv / .json), committed with its record and the emptied
    CPU account; written once (a resume after it never overwrites it)."""

    name = "metrics"

    def run(self, ctx: Context, gen: int) -> Commit:
        L = ctx.ledger
        ev = L.stage_info(stage_key(gen, "evaluate"))
        row: dict[str, Any] = {"generation": gen}
        row["labels"] = L.stage_info(stage_key(gen, "train")).get(
            "labels", L.count(status="labeled") - L.count(status="labeled", split="test"))
        row["labels_new"] = L.count(generation=gen, status="labeled")
        row["failed_new"] = sum(L.count(generation=gen, status=s) for s in LABEL_OUTCOMES[1:])
        row["train_frames"] = train_frames(ctx, gen)
        row.update({k: ev.get(k, _NAN) for k in TEST_KEYS})
        row.update(signal_metrics(ctx, gen))
        row.update(_audit_columns(ctx, gen))
        row.update(_hit_rates(ctx, gen))
        row["dft_calls"] = sum(L.count(status=s) for s in LABEL_OUTCOMES) - L.count(
            status="labeled", split="test")
        row.update(replay_columns(ctx, gen))
        row.update(_costs(ctx, gen))

        def rows(L: Any) -> None:
            L.add_metrics(row)
            L.mark_done("cpu_pending")

        stress = row["stress_force_mae_eV_A"]
        ctx.say(f"gen {gen}: {row['labels']} labels ({row['train_frames']} trained on), test "
                f"E MAE {1000 * row['energy_mae_eV_per_atom']:.1f} meV/atom, F MAE "
                f"{1000 * row['force_mae_eV_A']:.0f} meV/A (95% CI "
                f"{1000 * row['force_mae_lo_eV_A']:.0f}-{1000 * row['force_mae_hi_eV_A']:.0f}), "
                f"p95 frame F RMSE {1000 * row['force_rmse_p95_eV_A']:.0f} meV/A"
                + (f", stress F MAE {1000 * stress:.0f} meV/A" if stress == stress else "")
                + f", trust AUROC on the picked frames {row['trust_auroc_new']:.2f}"
                + (f", replay F MAE {1000 * row['replay_force_mae_eV_A']:.0f} meV/A "
                   f"({100 * row['replay_force_mae_growth']:+.0f}% vs the foundation)"
                   if "replay_force_mae_eV_A" in row else ""))
        return Commit({}, rows=rows)


#: The forgetting columns of a campaign from backbone.foundation (replay-set hold-out).
REPLAY_KEYS = ("replay_force_mae_eV_A", "replay_energy_mae_eV_per_atom",
               "replay_foundation_force_mae_eV_A", "replay_force_mae_growth")


def replay_columns(ctx: Context, gen: int) -> dict[str, float]:
    """Forgetting of backbone ``gen`` (the latest trained one at or before ``gen``) on the
    held-back replay frames, with the foundation's own error beside it: only for campaigns
    from backbone.foundation."""
    if not ctx.cfg.backbone.foundation:
        return {}
    for g in range(gen, -1, -1):
        rep = ctx.ledger.stage_info(stage_key(g, "train")).get("replay")
        if rep:
            return {"replay_force_mae_eV_A": rep["force_mae_eV_A"],
                    "replay_energy_mae_eV_per_atom": rep["energy_mae_eV_per_atom"],
                    "replay_foundation_force_mae_eV_A": rep["foundation_force_mae_eV_A"],
                    "replay_force_mae_growth": rep["force_mae_growth"]}
    return dict.fromkeys(REPLAY_KEYS, _NAN)
