"""Selection: the arm's rule picks the generation's frames under the budget (plus an optional
random audit sample); the failure ceiling pauses a generation whose labels mostly failed."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ..acquire import select_random
from ..frames import pooled_embeddings
from ..records import stage_key
from .base import CampaignPaused, Commit, Stage
from .context import Context
from .label import LABEL_OUTCOMES

__all__ = ["FailureCeiling", "Select", "choose", "failure_pause", "mark_selected"]


def choose(ctx: Context, cands: list[dict[str, Any]], n_rule: int, n_audit: int,
           rng: np.random.Generator, audit_rng: np.random.Generator,
           features: np.ndarray | None) -> tuple[list[str], list[str], np.ndarray, dict]:
    """One batch, in either schedule: up to ``n_rule`` candidates (their ledger keys) by the
    arm's rule (``Arm.pick``, with ``select.diversity``), then ``n_audit`` at random among the
    rest (``audit_rng``), and which of them the arm holds out of backbone training (drawn from
    ``rng`` after the picks, with probability initial.calibration_fraction). Returns the
    chosen fids (sorted), the audit fids, the hold-out mask (bool, len chosen + audit) and
    what the rule recorded."""
    arm = ctx.arm
    pick, extra = arm.pick(cands, n_rule, rng, features)
    chosen = sorted(cands[i]["fid"] for i in pick)
    audit: list[str] = []
    if n_audit:
        taken = set(chosen)
        rest = [k["fid"] for k in cands if k["fid"] not in taken]
        audit = [rest[i] for i in select_random(len(rest), n_audit, rng=audit_rng)]
        extra["audit"] = len(audit)
    calib = rng.random(len(chosen) + len(audit)) < ctx.cfg.initial.calibration_fraction
    if not arm.holds_calibration():
        calib[:] = False
    return chosen, audit, calib, extra


def mark_selected(L: Any, chosen: list[str], audit: list[str], calib: np.ndarray) -> None:
    """The picks become ``selected`` (split calib or train; ``audit`` marks the random ones)."""
    for fid, c in zip(chosen + audit, calib):
        L.update(fid, status="selected", split="calib" if c else "train", audit=fid in audit)


def failure_pause(ctx: Context, what: str, bad: int, sent: int, query: str = "",
                  after: str = "") -> None:
    """Raise CampaignPaused when ``bad`` of the ``sent`` labels of ``what`` (a generation, or
    the labels since the last streaming cycle) failed, more than select.max_failed_fraction,
    unless the campaign accepts failures. ``query``: an ase-db filter naming those frames."""
    if ctx.accept_failures or not sent or bad / sent <= ctx.cfg.select.max_failed_fraction:
        return
    raise CampaignPaused(
        f"{what}: {bad} of {sent} labels{after} failed (more than "
        f"{ctx.cfg.select.max_failed_fraction:.0%}); paused before training. Inspect "
        f"the reasons with `ase db {ctx.dir / 'ledger.db'} {query}status!=labeled -c "
        f"fid,status,reason`, then resume with --accept-failures"
        + (f" to train on the {sent - bad} good labels" if not after else ""))


class Select(Stage):
    """``select.budget`` frames: ``budget - audit_random`` by the arm's rule, then
    ``audit_random`` at random among the rest (marked ``audit``: they measure the trust signal
    without selection bias); a calibration share of them held out of backbone training when
    the arm wants one. Their status and split are written with the record."""

    name = "select"

    def run(self, ctx: Context, gen: int) -> Commit:
        cfg, arm = ctx.cfg, ctx.arm
        t0 = time.perf_counter()
        cands = ctx.ledger.keys(generation=gen, status="candidate")
        budget = cfg.select.budget - cfg.select.audit_random
        features = None
        if cfg.select.diversity != "none":
            by_fid = {a.info["fid"]: a
                      for a in ctx.ledger.frames(generation=gen, status="candidate")}
            features = pooled_embeddings([by_fid[k["fid"]] for k in cands])
        chosen, audit, calib, extra = choose(ctx, cands, budget, cfg.select.audit_random,
                                             ctx.rng(gen, "select"), ctx.rng(gen, "select", 1),
                                             features)
        if "fallback" in extra:
            ctx.say(f"  gen {gen} WARNING: no frame has a probe score (probe {gen - 1} was not "
                    "trained); the probe arm selects at random this generation")
        if "diversity" in extra:
            ctx.say(f"  gen {gen} WARNING: select.diversity {extra['diversity']}; the rule's "
                    "batch is used as it is")
        if len(chosen) < budget:
            ctx.say(f"  gen {gen} WARNING: only {len(chosen)} frame(s) eligible for a budget "
                    f"of {budget} ({len(cands)} candidates)")

        def rows(L: object) -> None:
            mark_selected(L, chosen, audit, calib)

        ctx.say(f"  gen {gen} selected {len(chosen)} of {len(cands)} candidates by {arm.rule}"
                + (f" and {len(audit)} at random for the audit" if audit else "")
                + (f" ({int(calib.sum())} held out of backbone training)"
                   if arm.holds_calibration() else "") + arm.describe(extra)
                + (f"; spread out among {extra['shortlist']} shortlisted (nearest-pick "
                   f"distance {extra['spread']:.2f} vs {extra['spread_rule']:.2f} for the rule's "
                   "own batch)" if "shortlist" in extra else ""))
        return Commit({"n": len(chosen), "n_candidates": len(cands), "rule": arm.rule,
                       "wall_s": time.perf_counter() - t0, **extra}, rows=rows)


class FailureCeiling(Stage):
    """More failed labels than select.max_failed_fraction: pause before training (resume with
    accept_failures to train on the good ones; that acceptance is the record)."""

    name = "failures_accepted"

    def applies(self, ctx: Context, gen: int) -> bool:
        info = ctx.ledger.stage_info(stage_key(gen, "label"))
        sent = sum(info.get(s, 0) for s in LABEL_OUTCOMES)
        return bool(sent) and (sent - info.get("labeled", 0)) / sent > \
            ctx.cfg.select.max_failed_fraction

    def run(self, ctx: Context, gen: int) -> Commit:
        info = ctx.ledger.stage_info(stage_key(gen, "label"))
        sent = sum(info.get(s, 0) for s in LABEL_OUTCOMES)
        bad = sent - info.get("labeled", 0)
        failure_pause(ctx, f"generation {gen}", bad, sent, f"generation={gen} ")
        return Commit({"failed": bad, "sent": sent})
