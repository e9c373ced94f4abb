"""The arm's per-candidate work between explore and select (committee disagreement, latent
distance, the pool's true error: see ``Arm.scoring``), one stage for every arm."""

from __future__ import annotations

import time
from typing import Any

from .base import Commit, Stage
from .context import Context

__all__ = ["Score"]


class Score(Stage):
    """Every candidate of generation g scored by the arm with the models of generation g-1
    (``Arm.score_jobs``, then ``Arm.score_keys`` stored on the candidates). ``name`` is the
    arm's ``scoring`` (its record key and CPU account)."""

    def __init__(self, name: str):
        self.name = name

    def run(self, ctx: Context, gen: int) -> Commit:
        t0 = time.perf_counter()
        cands = ctx.ledger.frames(generation=gen, status="candidate")
        jobs = ctx.arm.score_jobs(ctx, gen - 1, cands, f"{self.name}-g{gen}")
        results: dict[Any, Any] = {}
        if jobs:
            ctx.run(jobs, f"gen {gen} {self.name}",
                    lambda tag, r: results.update({tag: r}) or False)
        keys = ctx.arm.score_keys(ctx, cands, results)

        def rows(L: Any) -> None:
            for a, k in zip(cands, keys):
                L.update(a.info["fid"], **k)

        return Commit({"n": len(cands), **ctx.arm.score_record(ctx, gen - 1, jobs, keys),
                       "wall_s": time.perf_counter() - t0}, rows=rows)
