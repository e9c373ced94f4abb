"""Selection: the arm's rule picks the generation's frames under the budget (plus an optional
random audit sample); the failure ceiling pauses a generation whose labels mostly failed."""

from __future__ import annotations

import time

from ..acquire import select_random
from ..frames import pooled_embeddings
from .base import CampaignPaused, Commit, Stage
from .context import Context
from .label import LABEL_OUTCOMES

__all__ = ["FailureCeiling", "Select"]


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
        rng = ctx.rng(gen, "select")
        budget = cfg.select.budget - cfg.select.audit_random
        features = None
        if cfg.select.diversity != "none":
            by_fid = {a.info["fid"]: a
                      for a in ctx.ledger.frames(generation=gen, status="candidate")}
            features = pooled_embeddings([by_fid[k["fid"]] for k in cands])
        pick, extra = arm.pick(cands, budget, rng, features)
        chosen = sorted(cands[i]["fid"] for i in pick)
        audit: list[str] = []
        if cfg.select.audit_random:
            taken = set(chosen)
            rest = [k["fid"] for k in cands if k["fid"] not in taken]
            audit = [rest[i] for i in select_random(len(rest), cfg.select.audit_random,
                                                    rng=ctx.rng(gen, "select", 1))]
            extra["audit"] = len(audit)
        if "fallback" in extra:
            ctx.say(f"  gen {gen} WARNING: no frame has a probe score (probe {gen - 1} was not "
                    "trained); the probe arm selects at random this generation")
        if "diversity" in extra:
            ctx.say(f"  gen {gen} WARNING: select.diversity {extra['diversity']}; the rule's "
                    "batch is used as it is")
        if len(chosen) < budget:
            ctx.say(f"  gen {gen} WARNING: only {len(chosen)} frame(s) eligible for a budget "
                    f"of {budget} ({len(cands)} candidates)")
        calib = rng.random(len(chosen) + len(audit)) < cfg.initial.calibration_fraction
        if not arm.holds_calibration():
            calib[:] = False

        def rows(L: object) -> None:
            for fid, c in zip(chosen + audit, calib):
                L.update(fid, status="selected", split="calib" if c else "train",
                         audit=fid in audit)

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
        info = ctx.ledger.stage_info(f"gen{gen:03d}/label")
        sent = sum(info.get(s, 0) for s in LABEL_OUTCOMES)
        return bool(sent) and (sent - info.get("labeled", 0)) / sent > \
            ctx.cfg.select.max_failed_fraction

    def run(self, ctx: Context, gen: int) -> Commit:
        info = ctx.ledger.stage_info(f"gen{gen:03d}/label")
        sent = sum(info.get(s, 0) for s in LABEL_OUTCOMES)
        bad = sent - info.get("labeled", 0)
        if not ctx.accept_failures:
            raise CampaignPaused(
                f"generation {gen}: {bad} of {sent} labels failed (more than "
                f"{ctx.cfg.select.max_failed_fraction:.0%}); paused before training. Inspect "
                f"the reasons with `ase db {ctx.dir / 'ledger.db'} generation={gen} "
                f"status!=labeled -c fid,status,reason`, then resume with --accept-failures "
                f"to train on the {sent - bad} good labels")
        return Commit({"failed": bad, "sent": sent})
