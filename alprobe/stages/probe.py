"""PROBE: retrained every generation on the new backbone's errors on labeled frames it (and
every backbone it descends from) never trained on; the backbone is evaluated on the test set
at the same time."""

from __future__ import annotations

from typing import Any

from ..executor import Job
from ..frames import bare_with_ref
from ..records import stage_key
from .base import Commit, Stage
from .context import Context
from .evaluate import evaluate_job, evaluate_record

__all__ = ["Probe"]


class Probe(Stage):
    """Probe g on the out-of-sample errors of backbone g (an arm without a probe records
    none). Runs beside the test-set evaluation of backbone g, whose record it commits too."""

    name = "probe"

    def run(self, ctx: Context, gen: int) -> Commit:
        from ..tasks import fit_probe_task

        L, cfg = ctx.ledger, ctx.cfg
        if gen > 0 and not ctx.arm.trains_probe():
            return Commit({"path": None, "train_ids": [], "threshold": None,
                           "reason": f"the {ctx.arm.rule} arm does not use PROBE", "wall_s": 0.0})
        model = ctx.model(gen)
        labeled = [a for split in ("calib", "train")
                   for a in L.frames(status="labeled", split=split)]
        seen = ctx.lineage(gen)
        pool = [a for a in labeled if a.info["fid"] not in seen]
        ids = sorted(a.info["fid"] for a in pool)
        # probe.lineage: earlier backbones' errors on frames none of their lineage trained on
        earlier, lineage_ids, models = [], {}, {model}
        for g in range(gen - 1, max(-1, gen - cfg.probe.lineage), -1):
            if ctx.model(g) in models:  # a frozen generation: the same backbone
                continue
            models.add(ctx.model(g))
            seen_g = ctx.lineage(g)
            mine = [a for a in labeled if a.info["fid"] not in seen_g]
            earlier.append((ctx.model(g), [bare_with_ref(a) for a in mine]))
            lineage_ids[str(g)] = sorted(a.info["fid"] for a in mine)
        # probe.crossfit: the fold models' errors on the folds they never saw come first (the
        # closest to backbone g; with no hold-out they set the error scale)
        cross = L.stage_info(stage_key(gen, "crossfit")) if cfg.probe.crossfit >= 2 else {}
        byid = {a.info["fid"]: a for a in labeled}
        folds = [(path, [bare_with_ref(byid[i]) for i in held if i in byid])
                 for path, held in zip(cross.get("members", []), cross.get("held_out", []))]
        earlier = [f for f in folds if f[1]] + earlier
        crossfit_ids = sorted(i for _, held in folds for i in (a.info["fid"] for a in held))
        meta = {"train_ids": ids, "backbone": model, "generation": gen,
                "lineage_ids": lineage_ids, "crossfit_ids": crossfit_ids}
        out = str(ctx.model_dir(gen) / "probe.pt")
        n_more = sum(len(f) for _, f in earlier)
        n_lin = n_more - len(crossfit_ids)
        ctx.say(f"  gen {gen} training probe on {len(pool)} out-of-sample frames"
                + (f", {len(crossfit_ids)} of {len(folds)} fold models" if folds else "")
                + (f" and {n_lin} of {len(earlier) - len(folds)} earlier backbone(s)"
                   if len(earlier) > len(folds) else ""))
        jobs = [Job(fit_probe_task, (model, [bare_with_ref(a) for a in pool], cfg.probe,
                                     ctx.seed(gen, "probe"), out, meta, earlier),
                    kind="probe", key=f"probe-g{gen}-{len(pool)}-{n_more}", tag="probe")]
        evaluate = not L.done(stage_key(gen, "evaluate"))
        if evaluate:
            jobs.append(evaluate_job(ctx, gen, tag="eval"))
        got: dict[str, Any] = {}

        def record(tag: str, r: dict[str, Any]) -> bool:
            got[tag] = r
            if tag == "probe" and r["path"] is None:
                ctx.say(f"  probe not trained: {r['reason']} (selection falls back to random)")
            return tag == "probe" and r["path"] is None

        ctx.run(jobs, f"gen {gen} probe+evaluate", record)
        r = got["probe"]
        also = {stage_key(gen, "evaluate"): evaluate_record(ctx, gen, got["eval"])} if evaluate \
            else {}
        return Commit({"path": r["path"], "reason": r["reason"],
                       "train_ids": r["meta"].get("train_ids", []),
                       "lineage_ids": lineage_ids, "crossfit_ids": crossfit_ids,
                       "threshold": r["meta"].get("threshold"), "wall_s": r["t1"] - r["t0"]},
                      also=also)
