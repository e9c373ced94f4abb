"""Per-candidate work some arms need before selecting: committee disagreement (ensemble arm)
and latent-space distance to the training set (latent arm)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ..executor import Job
from ..frames import bare_copy
from .base import Commit, Stage
from .context import Context, bare_with_ref

__all__ = ["Deviation", "LatentDistance"]

_CHUNK = 2000


class Deviation(Stage):
    """Committee g-1's disagreement on every candidate of generation g.

    Member 0 (the backbone that drove the walkers) already predicted each frame; members
    1..M-1 predict them here in chunks of 2000 frames, one task per member and chunk. Stores
    sigma_f (DP-GEN's eps_F, eV/A) and sigma_e (energy std per atom, eV) in the ledger.
    """

    name = "deviation"

    def run(self, ctx: Context, gen: int) -> Commit:
        from ..committee import energy_std_per_atom, max_force_deviation
        from ..tasks import predict_task

        t0 = time.perf_counter()
        cands = ctx.ledger.frames(generation=gen, status="candidate")
        members = ctx.committee_paths(gen - 1)
        energies = np.full((len(members), len(cands)), np.nan)
        forces: list[list[Any]] = [[None] * len(cands) for _ in members]
        for i, a in enumerate(cands):
            energies[0, i] = a.info["pred_energy"]
            forces[0][i] = a.arrays["pred_forces"]
        jobs = [Job(predict_task, (path, [bare_copy(a) for a in cands[s:s + _CHUNK]],
                                   ctx.cfg.backbone.device), kind="md", account="deviation",
                    key=f"deviation-g{gen}-m{k}-c{s}", tag=(k, s))
                for k, path in enumerate(members) if k > 0
                for s in range(0, len(cands), _CHUNK)]

        def record(tag: tuple[int, int], r: dict[str, Any]) -> bool:
            k, s = tag
            energies[k, s:s + len(r["energy"])] = r["energy"]
            forces[k][s:s + len(r["forces"])] = r["forces"]
            return False

        if jobs:
            ctx.run(jobs, f"gen {gen} deviation", record)

        def rows(L: Any) -> None:
            for i, a in enumerate(cands):
                L.update(a.info["fid"],
                         sigma_f=max_force_deviation([forces[k][i] for k in range(len(members))]),
                         sigma_e=energy_std_per_atom(energies[:, i], len(a)))

        return Commit({"n": len(cands), "members": len(members),
                       "wall_s": time.perf_counter() - t0}, rows=rows)


class LatentDistance(Stage):
    """Every candidate's distance to backbone g-1's training set in its embedding space
    (``latent_dist``: mean over atoms of the mean distance to the 5 nearest training atoms,
    features standardised with the training statistics)."""

    name = "latent"

    def run(self, ctx: Context, gen: int) -> Commit:
        from ..tasks import latent_distance_task

        t0 = time.perf_counter()
        L = ctx.ledger
        cands = L.frames(generation=gen, status="candidate")
        ids = set(L.stage_info(f"gen{gen - 1:03d}/train").get("train_ids", []))
        train = [bare_with_ref(a) for a in L.frames(status="labeled") if a.info["fid"] in ids]
        if not train:  # a user model used as is: the generation-0 training split stands in
            train = [bare_with_ref(a) for a in L.frames(status="labeled", split="train")]
        dist = ctx.one(Job(latent_distance_task,
                           (ctx.model(gen - 1), train, [bare_copy(a) for a in cands],
                            ctx.cfg.backbone.device),
                           kind="md", account="deviation", key=f"latent-g{gen}"),
                       f"gen {gen} latent distance")

        def rows(L: Any) -> None:
            for a, d in zip(cands, dist["distance"]):
                L.update(a.info["fid"], latent_dist=float(d))

        return Commit({"n": len(cands), "n_train": len(train),
                       "wall_s": time.perf_counter() - t0}, rows=rows)
