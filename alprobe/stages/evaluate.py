"""Evaluation on the fixed held-out test set, and the reliability audit of every trust
signal (test set; and the frames just labeled, scored before their labels existed)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from ase import Atoms

from ..executor import Job
from ..frames import bare_copy, bare_with_ref, set_prediction
from ..records import stage_key
from .base import Commit, Stage
from .context import Context

__all__ = ["Audit", "Evaluate", "evaluate_job", "evaluate_record"]


def _test_sets(ctx: Context) -> list[Atoms]:
    """The test set, then the stress set (pool.stress_key; empty without one)."""
    L = ctx.ledger
    return L.frames(status="labeled", split="test") + L.frames(status="stress", split="stress")


def evaluate_job(ctx: Context, gen: int, tag: Any = "eval") -> Job:
    """Backbone g's predictions on the test set and the stress set, in one task."""
    from ..tasks import predict_task

    return Job(predict_task, (ctx.model(gen), [bare_copy(a) for a in _test_sets(ctx)],
                              ctx.cfg.backbone.device), kind="evaluate", key=f"eval-g{gen}",
               tag=tag)


def evaluate_record(ctx: Context, gen: int, r: dict[str, Any]) -> dict[str, Any]:
    """Errors on the test set (metrics.test_errors: energy MAE per atom eV/atom, force MAE
    with its 95% bootstrap interval over frames and RMSE eV/A, the 95th percentile and the
    maximum of the per-frame force RMSE) and the same with ``stress_`` keys on the stress set
    (NaN without one)."""
    from ..metrics import test_errors

    frames = _test_sets(ctx)
    for a, e, f in zip(frames, r["energy"], r["forces"]):
        set_prediction(a, e, f)
    test = [a for a in frames if a.info.get("split") == "test"]
    stress = [a for a in frames if a.info.get("split") == "stress"]
    rng = ctx.rng(gen, "evaluate")
    return {**test_errors(test, rng), **test_errors(stress, rng, "stress_"),
            "wall_s": r["t1"] - r["t0"]}


class Evaluate(Stage):
    """Backbone g on the test set (when the probe stage did not already do it)."""

    name = "evaluate"

    def run(self, ctx: Context, gen: int) -> Commit:
        return Commit(evaluate_record(ctx, gen, ctx.one(evaluate_job(ctx, gen),
                                                        f"gen {gen} evaluate")))


class Audit(Stage):
    """Probe g (and every other signal) on the test set, and probe g-1 on the frames labeled
    in generation g: audits/gen_NNN_{test,new}_audit.{txt,json,png}, importance pictures of
    the least trusted test frames. Both sets are out of sample for the probe audited."""

    name = "audit"

    def run(self, ctx: Context, gen: int) -> Commit:
        from ..audit import write_audit
        from ..metrics import auroc_unreliable
        from ..plots import draw_importance
        from ..tasks import audit_task

        L, cfg = ctx.ledger, ctx.cfg
        t0 = time.perf_counter()
        out_dir = ctx.dir / "audits"
        sets = {"test": (gen, L.frames(status="labeled", split="test"))}
        if gen > 0:
            sets["new"] = (gen - 1, L.frames(generation=gen, status="labeled"))
        jobs = []
        labeled = L.frames(status="labeled")  # read once for both audits
        for name, (g, frames) in sets.items():
            if len(frames) < 2:
                continue
            probe = L.stage_info(stage_key(g, "probe")).get("path")
            tinfo = L.stage_info(stage_key(g, "train"))
            ids = set(tinfo["train_ids"])
            train = [bare_with_ref(a) for a in labeled if a.info["fid"] in ids]
            committee = (ctx.committee_paths(g) if ctx.arm.committee_size() > 1
                         and L.done(stage_key(g, "committee")) else [])
            jobs.append(Job(audit_task, ([bare_with_ref(a) for a in frames], tinfo["path"], probe,
                                         train, cfg.probe.error, 3 if name == "test" and probe
                                         else 0, cfg.backbone.device, committee),
                            kind="evaluate", account="audit", key=f"audit-{name}-g{gen}",
                            tag=(name, frames)))
        summary: dict[str, Any] = {}
        shared: dict[str, Any] = {}
        tau0 = ctx.tau()

        def record(tag: tuple[str, list[Atoms]], r: dict[str, Any]) -> bool:
            name, frames = tag
            errors = r["errors"]
            tau = r["tau_probe"] if r["tau_probe"] is not None else tau0
            tau = float(np.median(errors)) if tau is None else tau
            res = write_audit(out_dir, f"gen_{gen:03d}_{name}", r["signals"], errors, tau,
                              r["probabilities"], rng=ctx.rng(gen, "probe"), n_boot=500)
            summary[name] = {row["signal"]: row["auroc"] for row in res["rows"]}
            # every signal's AUROC at the median error of the set (the worse half against
            # the better half): defined while the model improves, comparable between arms
            med = float(np.median(errors))
            shared[name] = {sig: float(auroc_unreliable(np.asarray(conf), errors, med))
                            for sig, conf in r["signals"].items()}
            for i, imp in r["importance"].items():
                a = frames[i]
                draw_importance(a, imp, out_dir / f"gen_{gen:03d}_importance_{a.info['fid']}.png",
                                title=f"gen {gen} {a.info['fid']}: P(reliable) "
                                      f"{r['signals']['probe'][i]:.2f}, error {errors[i]:.3f}")
            return False

        if jobs:
            ctx.run(jobs, f"gen {gen} audit", record)
        return Commit({"auroc": summary, "auroc_median": shared,
                       "wall_s": time.perf_counter() - t0})
