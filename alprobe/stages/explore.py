"""Exploration: MD walkers on the backbone (scored by the arm's probe), or, in a pool
campaign, the pool's unlabeled non-test frames scored by the backbone and the probe."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from ase import Atoms

from ..executor import Job
from ..explore import WalkerSettings
from ..frames import bare_copy, set_embedding, set_prediction
from .base import Commit, Stage
from .context import Context

__all__ = ["Explore", "run_walkers", "walker_failed", "walker_job", "walker_settings"]


def walker_settings(cfg: Any, w: int, steps: int) -> WalkerSettings:
    """Walker ``w``'s MD protocol from the campaign's explore section (temperatures taken in
    turn), for ``steps`` MD steps."""
    ex = cfg.explore
    return WalkerSettings(
        temperature_K=ex.temperatures_K[w % len(ex.temperatures_K)],
        timestep_fs=ex.timestep_fs, steps=steps, stride=ex.stride,
        friction_per_fs=ex.friction_per_fs, trust_floor=ex.trust_floor,
        patience=ex.patience, min_distance_A=ex.min_distance_A,
        fragment_distance_A=ex.fragment_distance_A, keep_bonds=ex.keep_bonds,
        embeddings=cfg.select.diversity != "none")


def walker_job(ctx: Context, w: int, start: Atoms, model: str, probe: str | None,
               settings: WalkerSettings, seed: Sequence[int], key: str, tag: Any,
               resume: tuple[Any, int] | None = None) -> Job:
    """The MD task of walker ``w`` from ``start`` on ``model`` (scored by ``probe``), in either
    schedule; ``resume``: (momenta, samples so far) of a walker that goes on where its last
    segment ended (streaming)."""
    from ..tasks import walker_task

    args = (start, model, probe, settings, seed, w, ctx.cfg.backbone.device)
    return Job(walker_task, args + (tuple(resume) if resume is not None else ()), kind="md",
               key=key, tag=tag)


def walker_failed(exc: BaseException) -> dict[str, Any]:
    """The result of a walker task that raised: no frames, and why."""
    why = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
    return {"frames": [], "stop_reason": f"walker task failed: {why}", "steps": 0,
            "md_s": 0.0, "score_s": 0.0, "end": None}


def run_walkers(ctx: Context, gen: int, model: str, probe: str | None, steps: int, stream: str,
                which: Sequence[int] | None = None, attempt: int = 0,
                temperature_K: float | None = None, starts: Sequence[Atoms] | None = None,
                check_every: int | None = None, timestep_fs: float | None = None
                ) -> tuple[list[Atoms], dict[str, Any]]:
    """MD walkers ``which`` (default: the first explore.walkers) of seed stream ``stream``
    (explore, bootstrap_md, test_md, test_md_retry) on ``model``, scored by ``probe``; their
    frames and what the stage records (wall, MD and scoring seconds, why each walker stopped,
    in walker order). A walker's index sets its temperature and seed; ``attempt`` > 0 gives
    each walker a seed of its own for that attempt. ``temperature_K``, ``timestep_fs`` and
    ``check_every`` (steps between sampled, checked frames) replace the explore section's;
    ``starts`` replaces the seeds (walker w starts from ``starts[w % len(starts)]``)."""
    ex = ctx.cfg.explore
    mtime = Path(model).stat().st_mtime_ns
    jobs = []
    for w in range(ex.walkers) if which is None else which:
        settings = walker_settings(ctx.cfg, w, steps)
        if temperature_K is not None:
            settings = replace(settings, temperature_K=float(temperature_K))
        if check_every is not None:
            settings = replace(settings, stride=int(check_every))
        if timestep_fs is not None:
            settings = replace(settings, timestep_fs=float(timestep_fs))
        pool = ctx.seeds if starts is None else starts
        start = pool[w % len(pool)]
        seed = ctx.walker_seed(gen, stream, w, *([attempt] if attempt else []))
        suffix = f"-a{attempt}" if attempt else ""
        jobs.append(walker_job(ctx, w, start, model, probe, settings, seed,
                               f"walk-{stream}-g{gen}-w{w}{suffix}-{mtime}", w))
    results: dict[int, Any] = {}

    def record(w: int, r: dict[str, Any]) -> bool:
        results[w] = r
        return not r["stop_reason"].startswith("completed")

    t0 = time.perf_counter()
    ctx.run(jobs, f"gen {gen} {stream}", record, on_error=lambda _w, exc: walker_failed(exc))
    frames: list[Atoms] = []
    for w in sorted(results):
        r = results[w]
        ctx.say(f"  walker {w} ({r['frames'][0].info['temperature_K'] if r['frames'] else '-'}"
                f" K): {len(r['frames'])} frames, {r['stop_reason']}")
        frames += r["frames"]
    info = {"wall_s": time.perf_counter() - t0,
            "md_s": float(sum(r["md_s"] for r in results.values())),
            "score_s": float(sum(r["score_s"] for r in results.values())),
            "stops": [results[w]["stop_reason"] for w in sorted(results)],
            "n_frames": len(frames)}
    return frames, info


def _score_pool(ctx: Context, gen: int, model: str, probe: str | None
                ) -> tuple[list[Atoms], dict[str, Any]]:
    """The pool's unlabeled non-test frames (or a seeded random subset), with the raw
    predictions of backbone g-1 and the trust of probe g-1."""
    from ..dataset import random_subset
    from ..tasks import score_task

    taken = {k["fid"] for k in ctx.ledger.keys() if k["status"] != "candidate"}
    unlabeled = [a for a in ctx.pool.frames if a.info["fid"] not in taken]
    cands = [unlabeled[i] for i in random_subset(len(unlabeled), ctx.cfg.pool.candidates,
                                                 ctx.rng(gen, "explore"))]
    chunk = 500
    embed = ctx.cfg.select.diversity != "none"
    jobs = [Job(score_task, (model, probe, [bare_copy(a) for a in cands[i:i + chunk]],
                             ctx.cfg.backbone.device, embed),
                kind="md", key=f"score-g{gen}-c{i}", tag=i)
            for i in range(0, len(cands), chunk)]
    t0 = time.perf_counter()
    out: list[Atoms] = []

    def record(i: int, r: dict[str, Any]) -> bool:
        for k, a in enumerate(cands[i:i + chunk]):
            b = bare_copy(a)
            b.info.update({key: a.info[key] for key in ("fid", "group", "walker", "sample")})
            set_prediction(b, r["energy"][k], r["forces"][k])
            b.info["trust"] = float(r["trust"][k])
            if r.get("embedding") is not None:
                set_embedding(b, r["embedding"][k])
            out.append(b)
        return False

    ctx.run(jobs, f"gen {gen} score", record)
    out.sort(key=lambda a: a.info["fid"])
    return out, {"wall_s": time.perf_counter() - t0, "n_frames": len(out),
                 "n_unlabeled": len(unlabeled), "source": "pool"}


class Explore(Stage):
    """The generation's candidates, from MD walkers on backbone g-1 (scored and stopped by
    the arm's probe) or, in a pool campaign, from the pool."""

    name = "explore"

    def run(self, ctx: Context, gen: int) -> Commit:
        model, probe = ctx.model(gen - 1), ctx.arm.walker_probe(ctx, gen)
        if ctx.pool is not None:
            frames, info = _score_pool(ctx, gen, model, probe)
            return Commit(info, rows=lambda L: L.put(frames, generation=gen, origin="pool",
                                                     status="candidate"))
        frames, info = run_walkers(ctx, gen, model, probe, ctx.cfg.explore.steps, "explore")
        return Commit(info, rows=lambda L: L.add(frames, generation=gen, origin="explore",
                                                 status="candidate"))
