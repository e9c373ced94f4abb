"""Acquisition strategies ("arms"): one class each behind one small protocol.

An arm says how walkers are scored (and stopped), what extra per-candidate work it needs
(its tasks and the keys they add to each candidate, run between explore and select by the one
generic scoring stage in either schedule), how it selects under a budget, whether it holds a
calibration share of its new labels out of backbone training, how many models it trains, which
trust signal its audits report, and that signal's value on frames. The orchestrator asks the
arm and never branches on the rule. Add a strategy by writing a class and registering it in
:data:`ARMS`; ``select.rule`` accepts every registered name.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .acquire import (
    batch_spread,
    deviation_window,
    farthest_point,
    select_by_deviation,
    select_least_trusted,
    select_random,
    standardise,
)
from .frames import bare_copy, bare_with_ref
from .metrics import true_force_rmse
from .records import stage_key

__all__ = ["ARMS", "Arm", "EnsembleArm", "LatentArm", "OracleArm", "ProbeArm", "RandomArm",
           "committee_keys", "make_arm"]


class Arm:
    """The protocol, with the defaults of a strategy that needs nothing extra.

    ``cfg`` is the campaign's CampaignConfig. Frames passed in are ``ase.Atoms`` with their
    ledger keys in ``info``; candidate keys are dicts of those keys.
    """

    rule = ""
    #: the selection is independent of the candidates' errors (its hit rate is the base rate)
    unbiased = False
    #: the arm's own choice when ``select.hold_out`` is null (see :meth:`holds_calibration`)
    default_hold_out = False
    #: the arm can only run on a labeled pool (it reads the candidates' reference labels)
    needs_pool = False

    def __init__(self, cfg: Any):
        self.cfg = cfg

    # ----- exploring and scoring
    def walker_probe(self, ctx: Any, gen: int) -> str | None:
        """The probe checkpoint that scores (and may stop) generation ``gen``'s walkers."""
        return None

    #: the arm's per-candidate work between explore and select: its stage name, record key
    #: and CPU account (alprobe.records.STAGES); "" for none
    scoring = ""

    def score_jobs(self, ctx: Any, gen: int, frames: Sequence[Any], key: str) -> list[Any]:
        """The per-candidate work on ``frames`` (a generation's candidates, or one streaming
        segment's frames) with the models of generation ``gen``: executor Jobs (task keys
        start with ``key``) whose results, by tag, :meth:`score_keys` reads."""
        return []

    def score_keys(self, ctx: Any, frames: Sequence[Any], results: dict[Any, Any]
                   ) -> list[dict[str, Any]]:
        """The keys to store on each of ``frames`` from the results of :meth:`score_jobs`."""
        return [{} for _ in frames]

    def score_record(self, ctx: Any, gen: int, jobs: Sequence[Any],
                     keys: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """What the scoring stage records beside the candidate count and its wall time."""
        return {}

    # ----- selecting
    def select(self, cands: Sequence[dict[str, Any]], budget: int, rng: np.random.Generator
               ) -> tuple[np.ndarray, dict[str, Any]]:
        """Indices of up to ``budget`` candidates, and what the select stage records."""
        raise NotImplementedError

    def wanted(self, cands: Sequence[dict[str, Any]]) -> np.ndarray | None:
        """How much the rule wants each candidate (n,), higher = sooner, NaN = not at all;
        None for a rule with no order (random)."""
        return None

    def pick(self, cands: Sequence[dict[str, Any]], budget: int, rng: np.random.Generator,
             features: np.ndarray | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """:meth:`select`, then ``select.diversity``: among the rule's ``select.shortlist`` x
        ``budget`` picks, a batch spread out in ``features`` (n, F), the candidates' pooled
        backbone embeddings (greedy farthest-point on standardised features, starting from
        the most wanted shortlisted candidate, or a random one for a rule with no order).
        The record gains ``shortlist`` and the batch's ``spread`` (mean distance to the
        nearest other pick, standardised units) beside ``spread_rule``, that of the rule's
        own first ``budget`` shortlisted picks."""
        sel = self.cfg.select
        if sel.diversity == "none" or budget <= 0:
            return self.select(cands, budget, rng)
        if features is None or len(features) != len(cands) or not np.isfinite(features).all():
            pick, info = self.select(cands, budget, rng)
            return pick, {**info, "diversity": "skipped: candidates without embeddings"}
        short, info = self.select(cands, math.ceil(sel.shortlist * budget), rng)
        x = standardise(features)
        want = self.wanted(cands)
        if want is None:
            order = rng.permutation(len(short))
        else:
            w = np.where(np.isfinite(want[short]), want[short], -np.inf)
            order = np.lexsort((rng.random(len(short)), -w))
        rule_batch = short[order[:budget]]
        chosen = short[farthest_point(x[short], int(order[0]), budget)] if len(short) else short
        return np.sort(chosen).astype(np.int64), {
            **info, "shortlist": int(len(short)), "spread": batch_spread(x[chosen]),
            "spread_rule": batch_spread(x[rule_batch])}

    def describe(self, info: dict[str, Any]) -> str:
        """Extra words for the selection's log line."""
        return ""

    def holds_calibration(self) -> bool:
        """A share (``initial.calibration_fraction``) of the new labels is kept out of
        backbone training: the probe's calibration split, or, for any other arm with
        ``select.hold_out: true``, the same data tax paid by itself (a control)."""
        hold = self.cfg.select.hold_out
        return self.default_hold_out if hold is None else bool(hold)

    def rotates(self) -> bool:
        """``select.hold_out: rotate``: a generation's calibration share joins backbone
        training at the next generation."""
        return self.cfg.select.hold_out == "rotate"

    # ----- training
    def training_splits(self) -> tuple[str, ...]:
        """The splits the backbone (and committee) train on."""
        return ("train",) if self.holds_calibration() else ("train", "calib")

    def committee_size(self) -> int:
        """Models trained per generation (the backbone is model 0)."""
        return 1

    def trains_probe(self) -> bool:
        return False

    # ----- auditing
    def audit_signal(self) -> str | None:
        """The row of the audit tables that is this arm's own signal (None: none)."""
        return None

    def confidence(self, frames: Sequence[Any]) -> np.ndarray | None:
        """The arm's trust in frames (higher = more trusted) as scored before their labels
        existed; None when the arm has no signal."""
        return None

    def strategy(self) -> str:
        """What makes the strategy (two arms with the same one are the same arm)."""
        sel = self.cfg.select
        return (self.rule + ("" if sel.sampling == "top" or self.unbiased
                             else f" power {sel.power:g}")
                + ("" if self.holds_calibration() == self.default_hold_out
                   and not self.rotates()
                   else f" hold-out {'rotate' if self.rotates() else self.holds_calibration()}")
                + ("" if sel.diversity == "none"
                   else f" diversity {sel.diversity} x{sel.shortlist:g}"))


#: frames per predict task of the committee's disagreement
_CHUNK = 2000


def committee_keys(frames: Sequence[Any], results: dict[tuple[int, int], dict[str, Any]]
                   ) -> list[dict[str, float]]:
    """sigma_f (DP-GEN's eps_F, eV/A) and sigma_e (energy std per atom, eV) of each frame from
    its own prediction (``pred_energy``, ``pred_forces``: member 0) and the other members'
    predictions (``results`` by (member, chunk start), each {"energy": (n,), "forces": n x
    (N, 3)})."""
    from .committee import energy_std_per_atom, max_force_deviation

    m = 1 + max((k for k, _ in results), default=0)
    energies = np.full((m, len(frames)), np.nan)
    forces: list[list[Any]] = [[None] * len(frames) for _ in range(m)]
    for i, a in enumerate(frames):
        energies[0, i] = a.info["pred_energy"]
        forces[0][i] = a.arrays["pred_forces"]
    for (k, s), r in results.items():
        energies[k, s:s + len(r["energy"])] = r["energy"]
        forces[k][s:s + len(r["forces"])] = r["forces"]
    return [{"sigma_f": (max_force_deviation([forces[k][i] for k in range(m)])
                         if all(forces[k][i] is not None for k in range(m)) else float("nan")),
             "sigma_e": energy_std_per_atom(energies[:, i], len(a))}
            for i, a in enumerate(frames)]


def _walker_sample(cands: Sequence[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    return (np.array([k["walker"] for k in cands], dtype=int),
            np.array([k["sample"] for k in cands], dtype=int))


def _largest_first(cfg: Any, cands: Sequence[dict[str, Any]], key: str, budget: int,
                   rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
    """Up to ``budget`` candidates with the largest ``key`` (no window), ``min_spacing``
    apart per walker, by the campaign's sampling; and how many had a finite value."""
    value = np.array([k.get(key, np.nan) for k in cands], dtype=float)
    walker, sample = _walker_sample(cands)
    sel = cfg.select
    pick = select_by_deviation(value, walker, sample, budget, sel.min_spacing, 0.0, None,
                               rng=rng, sampling=sel.sampling, power=sel.power)
    return pick, {"scored": int(np.isfinite(value).sum())}


class ProbeArm(Arm):
    """PROBE: walkers scored every stride steps and stopped when trust stays low; the least
    trusted candidates, ``min_spacing`` apart per walker; a calibration share kept out of
    backbone training so that the probe learns from out-of-sample errors."""

    rule = "probe"
    default_hold_out = True

    def walker_probe(self, ctx: Any, gen: int) -> str | None:
        return ctx.ledger.stage_info(stage_key(gen - 1, "probe")).get("path")

    def select(self, cands: Sequence[dict[str, Any]], budget: int, rng: np.random.Generator
               ) -> tuple[np.ndarray, dict[str, Any]]:
        trust = np.array([k.get("trust", np.nan) for k in cands], dtype=float)
        walker, sample = _walker_sample(cands)
        sel = self.cfg.select
        pick = select_least_trusted(trust, walker, sample, budget, sel.min_spacing, rng=rng,
                                    sampling=sel.sampling, power=sel.power)
        info = {}
        if len(cands) and not np.isfinite(trust).any():
            info["fallback"] = "no probe scores: least-trusted order is random"
        return pick, info

    def describe(self, info: dict[str, Any]) -> str:
        return ""

    def wanted(self, cands: Sequence[dict[str, Any]]) -> np.ndarray | None:
        return 1.0 - np.array([k.get("trust", np.nan) for k in cands], dtype=float)

    def trains_probe(self) -> bool:
        return True

    def audit_signal(self) -> str | None:
        return "probe"

    def strategy(self) -> str:
        return f"{super().strategy()} {self.cfg.probe.model_dump(mode='json')}"

    def confidence(self, frames: Sequence[Any]) -> np.ndarray | None:
        return np.array([a.info.get("trust", np.nan) for a in frames], dtype=float)


class EnsembleArm(Arm):
    """A committee of ``committee.members`` backbones (member 0 is the arm's backbone): the
    largest disagreement (eps_F or energy std per atom) inside the trust window
    sigma_lo <= sigma < sigma_hi, ``min_spacing`` apart per walker."""

    rule = "ensemble"

    @property
    def _key(self) -> str:
        return "sigma_f" if self.cfg.committee.signal == "force" else "sigma_e"

    scoring = "deviation"

    def score_jobs(self, ctx: Any, gen: int, frames: Sequence[Any], key: str) -> list[Any]:
        """Committee ``gen``'s members 1..M-1 on ``frames``: one predict task per member and
        chunk of 2000 frames (member 0, the backbone that drove the walkers, already predicted
        each frame); tags (member, chunk start)."""
        from .executor import Job
        from .tasks import committee_task, predict_task

        paths = ctx.committee_paths(gen)
        if self.cfg.committee.kind == "heads":  # every head from one body pass per chunk
            return [Job(committee_task, (paths, [bare_copy(a) for a in frames[s:s + _CHUNK]],
                                         ctx.cfg.backbone.device,
                                         self.cfg.committee.signal == "force"),
                        kind="md", account="deviation", key=f"{key}-heads-c{s}", tag=(0, s))
                    for s in range(0, len(frames), _CHUNK)]
        return [Job(predict_task, (path, [bare_copy(a) for a in frames[s:s + _CHUNK]],
                                   ctx.cfg.backbone.device), kind="md", account="deviation",
                    key=f"{key}-m{k}-c{s}", tag=(k, s))
                for k, path in enumerate(paths) if k > 0
                for s in range(0, len(frames), _CHUNK)]

    def score_keys(self, ctx: Any, frames: Sequence[Any], results: dict[Any, Any]
                   ) -> list[dict[str, Any]]:
        """sigma_f (DP-GEN's eps_F, eV/A; NaN for a head committee on the energy signal,
        which computes no member forces) and sigma_e (energy std per atom, eV) of each frame
        from its own prediction (member 0) and the members' ``results`` by (member, chunk)
        (a head committee's by (0, chunk), every member at once)."""
        flat = {}
        for (k, s), r in results.items():
            for j, m in enumerate(r["members"]) if k == 0 else [(k - 1, r)]:
                flat[(j + 1, s)] = m
        return committee_keys(frames, flat)

    def score_record(self, ctx: Any, gen: int, jobs: Sequence[Any],
                     keys: Sequence[dict[str, Any]]) -> dict[str, Any]:
        return {"members": len(ctx.committee_paths(gen))}

    def select(self, cands: Sequence[dict[str, Any]], budget: int, rng: np.random.Generator
               ) -> tuple[np.ndarray, dict[str, Any]]:
        c = self.cfg.committee
        sigma = np.array([k.get(self._key, np.nan) for k in cands], dtype=float)
        walker, sample = _walker_sample(cands)
        sel = self.cfg.select
        pick = select_by_deviation(sigma, walker, sample, budget, sel.min_spacing, c.sigma_lo,
                                   c.sigma_hi, rng=rng, sampling=sel.sampling, power=sel.power)
        inside = deviation_window(sigma, c.sigma_lo, c.sigma_hi)
        return pick, {"in_window": int(inside.sum()),
                      "above_hi": int(np.sum(sigma >= c.sigma_hi)) if c.sigma_hi else 0}

    def describe(self, info: dict[str, Any]) -> str:
        return (f" ({info['in_window']} inside the trust window, {info['above_hi']} above it)"
                if "in_window" in info else "")

    def wanted(self, cands: Sequence[dict[str, Any]]) -> np.ndarray | None:
        c = self.cfg.committee
        sigma = np.array([k.get(self._key, np.nan) for k in cands], dtype=float)
        return np.where(deviation_window(sigma, c.sigma_lo, c.sigma_hi), sigma, np.nan)

    def committee_size(self) -> int:
        return self.cfg.committee.members

    def audit_signal(self) -> str | None:
        return "ensemble_epsF" if self.cfg.committee.signal == "force" else "ensemble_Estd"

    def confidence(self, frames: Sequence[Any]) -> np.ndarray | None:
        return -np.array([a.info.get(self._key, np.nan) for a in frames], dtype=float)

    def strategy(self) -> str:
        return f"{super().strategy()} {self.cfg.committee.model_dump(mode='json')}"


class RandomArm(Arm):
    """Uniform among the candidates: the control."""

    rule = "random"
    unbiased = True

    def select(self, cands: Sequence[dict[str, Any]], budget: int, rng: np.random.Generator
               ) -> tuple[np.ndarray, dict[str, Any]]:
        return select_random(len(cands), budget, rng=rng), {}


class LatentArm(Arm):
    """Latent-space distance: the candidates farthest from the backbone's training set in its
    own embedding space (mean over atoms of the distance to the 5 nearest training atoms,
    features standardised), ``min_spacing`` apart per walker. One backbone, no probe: the cheap
    single-model baseline."""

    rule = "latent"

    scoring = "latent"

    def score_jobs(self, ctx: Any, gen: int, frames: Sequence[Any], key: str) -> list[Any]:
        """One task: the distance of ``frames`` to backbone ``gen``'s training set in its
        embedding space (tag: the training-frame count)."""
        from .executor import Job
        from .tasks import latent_distance_task

        L = ctx.ledger
        ids = set(L.stage_info(stage_key(gen, "train")).get("train_ids", []))
        train = [bare_with_ref(a) for a in L.frames(status="labeled") if a.info["fid"] in ids]
        if not train:  # a user model used as is: the generation-0 training split stands in
            train = [bare_with_ref(a) for a in L.frames(status="labeled", split="train")]
        return [Job(latent_distance_task, (ctx.model(gen), train,
                                           [bare_copy(a) for a in frames],
                                           ctx.cfg.backbone.device),
                    kind="md", account="latent", key=key, tag=len(train))]

    def score_keys(self, ctx: Any, frames: Sequence[Any], results: dict[Any, Any]
                   ) -> list[dict[str, Any]]:
        if not results:
            return [{} for _ in frames]
        return [{"latent_dist": float(d)} for d in next(iter(results.values()))["distance"]]

    def score_record(self, ctx: Any, gen: int, jobs: Sequence[Any],
                     keys: Sequence[dict[str, Any]]) -> dict[str, Any]:
        return {"n_train": jobs[0].tag if jobs else 0}

    def select(self, cands: Sequence[dict[str, Any]], budget: int, rng: np.random.Generator
               ) -> tuple[np.ndarray, dict[str, Any]]:
        return _largest_first(self.cfg, cands, "latent_dist", budget, rng)

    def wanted(self, cands: Sequence[dict[str, Any]]) -> np.ndarray | None:
        return np.array([k.get("latent_dist", np.nan) for k in cands], dtype=float)

    def audit_signal(self) -> str | None:
        return "knn_mean"

    def confidence(self, frames: Sequence[Any]) -> np.ndarray | None:
        return -np.array([a.info.get("latent_dist", np.nan) for a in frames], dtype=float)


class OracleArm(Arm):
    """The ceiling of any error-seeking signal (pool mode only): the candidates with the
    largest true force RMSE (``true_force_rmse``, eV/A, backbone g-1's raw forces against the
    pool's reference forces), ``min_spacing`` apart per walker. No real campaign can run it;
    a comparison reports how much of its gain over random each arm recovers."""

    rule = "oracle"
    needs_pool = True

    scoring = "oracle"

    def score_keys(self, ctx: Any, frames: Sequence[Any], results: dict[Any, Any]
                   ) -> list[dict[str, Any]]:
        """Each frame's true force RMSE under the backbone that explored it (eV/A), from the
        raw forces the explore stage stored and the pool's reference forces (no task)."""
        return [{"true_force_rmse": true_force_rmse(a.arrays["pred_forces"],
                                                    ctx.pool.label(a.info["fid"])[1])}
                for a in frames]

    def score_record(self, ctx: Any, gen: int, jobs: Sequence[Any],
                     keys: Sequence[dict[str, Any]]) -> dict[str, Any]:
        return {"max_eV_A": max((k["true_force_rmse"] for k in keys), default=float("nan"))}

    def select(self, cands: Sequence[dict[str, Any]], budget: int, rng: np.random.Generator
               ) -> tuple[np.ndarray, dict[str, Any]]:
        return _largest_first(self.cfg, cands, "true_force_rmse", budget, rng)

    def wanted(self, cands: Sequence[dict[str, Any]]) -> np.ndarray | None:
        return np.array([k.get("true_force_rmse", np.nan) for k in cands], dtype=float)

    def confidence(self, frames: Sequence[Any]) -> np.ndarray | None:
        return -np.array([a.info.get("true_force_rmse", np.nan) for a in frames], dtype=float)


#: Every strategy by its ``select.rule`` name.
ARMS: dict[str, type[Arm]] = {a.rule: a for a in (ProbeArm, EnsembleArm, RandomArm, LatentArm,
                                                   OracleArm)}


def make_arm(cfg: Any) -> Arm:
    """The arm of a campaign (its ``select.rule``)."""
    return ARMS[cfg.select.rule](cfg)
