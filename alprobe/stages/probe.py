"""PROBE: retrained every generation on the new backbone's errors on labeled frames it (and
every backbone it descends from) never trained on; the backbone is evaluated on the test set
at the same time."""

from __future__ import annotations

from typing import Any

from ..executor import Job
from .base import Commit, Stage
from .context import Context, bare_with_ref
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
        seen = ctx.lineage(gen)
        pool = [a for split in ("calib", "train") for a in L.frames(status="labeled", split=split)
                if a.info["fid"] not in seen]
        ids = sorted(a.info["fid"] for a in pool)
        meta = {"train_ids": ids, "backbone": model, "generation": gen}
        out = str(ctx.model_dir(gen) / "probe.pt")
        ctx.say(f"  gen {gen} training probe on {len(pool)} out-of-sample frames")
        jobs = [Job(fit_probe_task, (model, [bare_with_ref(a) for a in pool], cfg.probe,
                                     ctx.seed(gen, "probe"), out, meta),
                    kind="probe", key=f"probe-g{gen}-{len(pool)}", tag="probe")]
        evaluate = not L.done(f"gen{gen:03d}/evaluate")
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
        also = {f"gen{gen:03d}/evaluate": evaluate_record(ctx, gen, got["eval"])} if evaluate \
            else {}
        return Commit({"path": r["path"], "reason": r["reason"],
                       "train_ids": r["meta"].get("train_ids", []),
                       "threshold": r["meta"].get("threshold"), "wall_s": r["t1"] - r["t0"]},
                      also=also)
