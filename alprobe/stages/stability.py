"""MD stability of a campaign's final model: walkers at the stress temperature on the last
backbone, checked by the explore section's geometry rules; the fraction that stay physical and
the time to the first failure."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from ase import Atoms

from .base import Commit, Stage
from .context import Context
from .explore import run_walkers

__all__ = ["Stability", "describe_stability", "stability_summary", "stability_temperature"]


def stability_temperature(ctx: Context) -> float:
    """stability.temperature_K, else the stress set's temperature: a pool's stress-set value
    when pool.stress_key is temperature_K, otherwise CampaignConfig.stress_temperature_K."""
    cfg = ctx.cfg
    if cfg.stability.temperature_K:
        return float(cfg.stability.temperature_K)
    if ctx.pool is not None and ctx.pool.stress and cfg.pool.stress_key == "temperature_K":
        return float(ctx.pool.stress[0].info["stress_value"])
    return float(cfg.stress_temperature_K())


def _starts(ctx: Context, n: int) -> list[Atoms]:
    """Start structures: the seeds; in a pool campaign the first frame of each stress-set
    (else test-set) trajectory, in turn."""
    if ctx.pool is None:
        return list(ctx.seeds)
    L = ctx.ledger
    frames = L.frames(status="stress", split="stress") or L.frames(status="labeled",
                                                                    split="test")
    first: dict[str, Atoms] = {}
    for a in frames:
        first.setdefault(str(a.info.get("group", a.info["fid"])), a)
    return list(first.values())[:max(n, 1)]


def stability_summary(stops: list[str], steps: list[int], n_steps: int, timestep_fs: float
                      ) -> dict[str, Any]:
    """From each walker's stop reason and MD steps done: the fraction that stayed physical
    (completed the run), each walker's time to failure (fs; the run length where it did not
    fail: censored) and the earliest of them."""
    failed = [not s.startswith("completed") for s in stops]
    t_fail = [float(k * timestep_fs) if f else float(n_steps * timestep_fs)
              for f, k in zip(failed, steps)]
    return {"walkers": len(stops), "stable_fraction": float(1 - np.mean(failed)) if stops
            else float("nan"),
            "time_to_failure_fs": t_fail,
            "first_failure_fs": float(min(t_fail)) if t_fail else float("nan"),
            "run_fs": float(n_steps * timestep_fs)}


def describe_stability(rec: dict[str, Any]) -> str:
    """One line on a stability record."""
    first = (f"first failure at {rec['first_failure_fs']:g} fs"
             if rec["stable_fraction"] < 1 else "no walker failed")
    return (f"{rec['stable_fraction']:.0%} of {rec['walkers']} walkers stayed physical for "
            f"{rec['run_fs']:g} fs; {first}")


class Stability(Stage):
    """After the last generation: ``stability.walkers`` walkers on its backbone at the stress
    temperature for ``stability.steps`` steps (seed stream ``stability``), no probe; recorded
    with the per-walker stop reasons."""

    name = "stability"

    def applies(self, ctx: Context, gen: int) -> bool:
        return ctx.cfg.stability.walkers > 0

    def run(self, ctx: Context, gen: int) -> Commit:
        st = ctx.cfg.stability
        T = stability_temperature(ctx)
        t0 = time.perf_counter()
        ctx.say(f"stability: {st.walkers} walkers on backbone {gen} at {T:g} K for "
                f"{st.steps} steps of {st.timestep_fs:g} fs")
        frames, info = run_walkers(ctx, gen, ctx.model(gen), None, st.steps, "stability",
                                   which=range(st.walkers), temperature_K=T,
                                   starts=_starts(ctx, st.walkers),
                                   check_every=st.check_every, timestep_fs=st.timestep_fs)
        steps_done = [0] * st.walkers
        for a in frames:  # the last checked step of each walker
            w = int(a.info["walker"])
            steps_done[w] = max(steps_done[w], int(a.info["step"]))
        stops = info["stops"]
        for w, s in enumerate(stops):  # the step a failed walker stopped at
            if not s.startswith("completed") and " at step " in s:
                steps_done[w] = int(s.split(" at step ")[1].split(":")[0])
        out = stability_summary(stops, steps_done, st.steps, st.timestep_fs)
        ctx.say(f"stability: {describe_stability(out)}")
        return Commit({**out, "generation": gen, "temperature_K": T, "steps": st.steps,
                       "timestep_fs": st.timestep_fs, "stops": stops,
                       "wall_s": time.perf_counter() - t0})
