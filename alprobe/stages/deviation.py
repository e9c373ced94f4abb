"""Per-candidate work some arms need before selecting: committee disagreement (ensemble arm),
latent-space distance to the training set (latent arm) and the true error (oracle arm). The stages score a generation's
candidates; the functions they use also score one streaming segment's frames."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from ase import Atoms

from ..executor import Job
from ..frames import bare_copy
from .base import Commit, Stage
from .context import Context, bare_with_ref

__all__ = ["Deviation", "LatentDistance", "OracleError", "true_force_rmse", "deviation_jobs", "deviation_keys", "latent_job",
           "latent_keys"]

_CHUNK = 2000


def deviation_jobs(ctx: Context, gen: int, frames: Sequence[Atoms], key: str) -> list[Job]:
    """Committee ``gen``'s members 1..M-1 on ``frames``: one predict task per member and
    chunk of 2000 frames (member 0, the backbone that drove the walkers, already predicted
    each frame); tags (member, chunk start)."""
    from ..tasks import predict_task

    members = ctx.committee_paths(gen)
    return [Job(predict_task, (path, [bare_copy(a) for a in frames[s:s + _CHUNK]],
                               ctx.cfg.backbone.device), kind="md", account="deviation",
                key=f"{key}-m{k}-c{s}", tag=(k, s))
            for k, path in enumerate(members) if k > 0 for s in range(0, len(frames), _CHUNK)]


def deviation_keys(frames: Sequence[Atoms], results: dict[tuple[int, int], dict[str, Any]]
                   ) -> list[dict[str, float]]:
    """sigma_f (DP-GEN's eps_F, eV/A) and sigma_e (energy std per atom, eV) of each frame
    from its own prediction (member 0) and the members' ``results`` by (member, chunk)."""
    from ..committee import energy_std_per_atom, max_force_deviation

    m = 1 + max((k for k, _ in results), default=0)
    energies = np.full((m, len(frames)), np.nan)
    forces: list[list[Any]] = [[None] * len(frames) for _ in range(m)]
    for i, a in enumerate(frames):
        energies[0, i] = a.info["pred_energy"]
        forces[0][i] = a.arrays["pred_forces"]
    for (k, s), r in results.items():
        energies[k, s:s + len(r["energy"])] = r["energy"]
        forces[k][s:s + len(r["forces"])] = r["forces"]
    return [{"sigma_f": max_force_deviation([forces[k][i] for k in range(m)]),
             "sigma_e": energy_std_per_atom(energies[:, i], len(a))}
            for i, a in enumerate(frames)]


class Deviation(Stage):
    """Committee g-1's disagreement on every candidate of generation g (sigma_f, sigma_e in
    the ledger; see deviation_keys)."""

    name = "deviation"

    def run(self, ctx: Context, gen: int) -> Commit:
        t0 = time.perf_counter()
        cands = ctx.ledger.frames(generation=gen, status="candidate")
        jobs = deviation_jobs(ctx, gen - 1, cands, f"deviation-g{gen}")
        results: dict[tuple[int, int], dict[str, Any]] = {}
        if jobs:
            ctx.run(jobs, f"gen {gen} deviation", lambda tag, r: results.update({tag: r}) or False)
        keys = deviation_keys(cands, results)

        def rows(L: Any) -> None:
            for a, k in zip(cands, keys):
                L.update(a.info["fid"], **k)

        return Commit({"n": len(cands), "members": len(ctx.committee_paths(gen - 1)),
                       "wall_s": time.perf_counter() - t0}, rows=rows)


def latent_job(ctx: Context, gen: int, frames: Sequence[Atoms], key: str) -> Job:
    """Distance of ``frames`` to backbone ``gen``'s training set in its embedding space."""
    from ..tasks import latent_distance_task

    L = ctx.ledger
    ids = set(L.stage_info(f"gen{gen:03d}/train").get("train_ids", []))
    train = [bare_with_ref(a) for a in L.frames(status="labeled") if a.info["fid"] in ids]
    if not train:  # a user model used as is: the generation-0 training split stands in
        train = [bare_with_ref(a) for a in L.frames(status="labeled", split="train")]
    return Job(latent_distance_task, (ctx.model(gen), train, [bare_copy(a) for a in frames],
                                      ctx.cfg.backbone.device),
               kind="md", account="deviation", key=key, tag=len(train))


def latent_keys(result: dict[str, Any]) -> list[dict[str, float]]:
    return [{"latent_dist": float(d)} for d in result["distance"]]


class LatentDistance(Stage):
    """Every candidate's distance to backbone g-1's training set in its embedding space
    (``latent_dist``: mean over atoms of the mean distance to the 5 nearest training atoms,
    features standardised with the training statistics)."""

    name = "latent"

    def run(self, ctx: Context, gen: int) -> Commit:
        t0 = time.perf_counter()
        cands = ctx.ledger.frames(generation=gen, status="candidate")
        job = latent_job(ctx, gen - 1, cands, f"latent-g{gen}")
        keys = latent_keys(ctx.one(job, f"gen {gen} latent distance"))

        def rows(L: Any) -> None:
            for a, k in zip(cands, keys):
                L.update(a.info["fid"], **k)

        return Commit({"n": len(cands), "n_train": job.tag,
                       "wall_s": time.perf_counter() - t0}, rows=rows)


def true_force_rmse(pred_forces: np.ndarray, ref_forces: np.ndarray) -> float:
    """Force RMSE (eV/A) of one frame over its 3N components; shapes (N, 3)."""
    return float(np.sqrt(np.mean((np.asarray(pred_forces) - np.asarray(ref_forces)) ** 2)))


class OracleError(Stage):
    """Pool mode: every candidate's true force RMSE under backbone g-1 (``true_force_rmse``,
    eV/A), from the raw forces the explore stage stored and the pool's reference forces."""

    name = "oracle"

    def applies(self, ctx: Context, gen: int) -> bool:
        return ctx.pool is not None

    def run(self, ctx: Context, gen: int) -> Commit:
        t0 = time.perf_counter()
        cands = ctx.ledger.frames(generation=gen, status="candidate")
        errs = [true_force_rmse(a.arrays["pred_forces"], ctx.pool.label(a.info["fid"])[1])
                for a in cands]

        def rows(L: Any) -> None:
            for a, e in zip(cands, errs):
                L.update(a.info["fid"], true_force_rmse=e)

        return Commit({"n": len(cands), "max_eV_A": max(errs, default=float("nan")),
                       "wall_s": time.perf_counter() - t0}, rows=rows)
