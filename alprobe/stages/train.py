"""Training the backbone and the committee with mace-torch's trainer, and the noise floor."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from ..dataset import bootstrap_resample, group_folds, group_split, random_subset
from ..executor import Job
from ..files import atomic_write
from ..frames import bare_copy, bare_with_ref, set_prediction
from ..records import stage_key
from .base import Commit, Stage
from .context import Context

__all__ = ["Committee", "Spec", "Train", "crossfit_specs", "head_specs", "noise_floor",
           "replay_set",
           "start_point", "train_models"]


@dataclass(frozen=True)
class Spec:
    """One model to train: its ``name`` (file stem), the model it starts from (None: from
    scratch), epochs (None: backbone.epochs), frames, and its committee ``member`` index
    (0: the backbone), or its cross-fitting ``fold`` (k + 1 for fold k)."""

    name: str
    foundation: str | None
    epochs: int | None
    frames: Sequence[Atoms]
    member: int = 0
    fold: int = 0  # k + 1 for fold model k of probe.crossfit (0: not a fold model)
    head_of: str | None = None  # a head-committee member: readouts on this backbone's body


def train_models(ctx: Context, gen: int, specs: Sequence[Spec], reseed: int = 0,
                 folder: Path | None = None) -> list[dict[str, Any]]:
    """Train several models at once, each with 10% of its frames for validation.

    Member k > 0 (a committee member) gets its own seed and validation split and, with
    committee.bootstrap, a bootstrap resample of the frames. ``reseed`` > 0: the same models
    with other seeds (the noise floor), written to ``folder``. Writes ``<name>.json`` (training
    ids) beside each model; returns one {"path", "train_ids", "wall_s"} per spec.
    """
    from ..tasks import train_task

    jobs = []
    for spec in specs:
        extra = ([spec.member] if spec.member else []) + ([20_000 + spec.fold] if spec.fold
                                                           else []) \
            + ([10_000 + reseed] if reseed else [])
        rng = ctx.rng(gen, "train", *extra)
        frames = list(spec.frames)
        if spec.member and ctx.cfg.committee.bootstrap:
            frames = [frames[i] for i in bootstrap_resample(len(frames), rng)]
        idx = rng.permutation(len(frames))
        n_val = max(1, len(frames) // 10)
        valid = [bare_with_ref(frames[i]) for i in idx[:n_val]]
        train = [bare_with_ref(frames[i]) for i in idx[n_val:]]
        out = (folder or ctx.model_dir(gen)) / f"{spec.name}.model"
        ctx.say(f"  gen {gen} training {spec.name} on {len(train)} + {n_val} validation frames"
                + (" (readout head on the backbone's frozen body)" if spec.head_of
                   else " (fine-tune)" if spec.foundation else " (from scratch)"))
        replay = (replay_set(ctx) if spec.foundation and ctx.cfg.backbone.foundation
                  and not spec.head_of else None)
        jobs.append(Job(train_task, (train, valid, str(out), ctx.cfg.backbone,
                                     ctx.seed(gen, "train", *extra), spec.foundation,
                                     spec.epochs, replay, spec.head_of),
                        kind="train", key=f"train-{spec.name}-g{gen}"
                        + (f"-s{reseed}" if reseed else ""),
                        tag=(spec.name, spec.foundation, frames, str(out))))
    done: dict[str, dict[str, Any]] = {}

    def record(tag: tuple[str, str | None, list[Atoms], str], res: dict[str, Any]) -> bool:
        name, foundation, frames, out = tag
        ids = sorted({a.info["fid"] for a in frames})
        atomic_write(Path(out).with_suffix(".json"), json.dumps(
            {"train_ids": ids, "foundation": foundation, "epochs": res["epochs"],
             "wall_s": res["wall_s"]}, indent=1))
        done[name] = {"path": out, "train_ids": ids, "wall_s": res["wall_s"]}
        if "replay" in res:
            done[name]["replay"] = res["replay"]
        return False

    ctx.run(jobs, f"gen {gen} train", record)
    return [done[s.name] for s in specs]


def replay_set(ctx: Context) -> Any:
    """The campaign's replay set for backbone.foundation, split once into the frames mace-torch
    replays (``replay/replay_train.extxyz``, in its keys: a random subset of at most
    backbone.replay_samples frames, the same for every fine-tune) and the held-back share that
    measures forgetting (``replay/replay_holdout.extxyz``); the split is seeded, whole groups
    (info ``traj_id`` or ``group``) stay together, and later calls reuse the files."""
    from ..backbone import Replay
    from ..frames import read_labeled, write_extxyz

    bb = ctx.cfg.backbone
    folder = ctx.dir / "replay"
    train_file, hold_file = folder / "replay_train.extxyz", folder / "replay_holdout.extxyz"
    if not hold_file.is_file():
        frames = read_labeled(ctx.cfg.resolve(bb.replay_file), bb.replay_energy_key,
                              bb.replay_forces_key, keep_info=True)
        groups = [str(a.info.get("traj_id", a.info.get("group", i)))
                  for i, a in enumerate(frames)]
        rng = ctx.rng(0, "replay")
        held_mask = group_split(groups, bb.replay_holdout, rng)
        keep = [a for a, h in zip(frames, held_mask) if not h]
        held = [a for a, h in zip(frames, held_mask) if h]
        keep = [keep[i] for i in sorted(random_subset(len(keep), bb.replay_samples, rng))]
        folder.mkdir(exist_ok=True)
        write_extxyz(train_file, [_mace_keys(a) for a in keep])
        write_extxyz(hold_file, [bare_with_ref(a) for a in held])
    holdout = read_labeled(hold_file)
    return Replay(str(train_file), bb.replay_labels == "foundation", tuple(holdout))


def _mace_keys(a: Atoms) -> Atoms:
    """A labeled frame under mace-torch's key names (REF_energy, REF_forces)."""
    from ..frames import REF_ENERGY, REF_FORCES

    b = Atoms(numbers=a.numbers, positions=a.positions)
    b.info["REF_energy"] = float(a.info[REF_ENERGY])
    b.arrays["REF_forces"] = np.asarray(a.arrays[REF_FORCES], dtype=float)
    return b


def start_point(ctx: Context, previous: str) -> tuple[str | None, int | None]:
    """(foundation model, epochs) of a generation's training run: fine-tune ``previous``
    (backbone.retrain: finetune), or start again from the user's model file or from scratch
    (retrain: scratch)."""
    bb = ctx.cfg.backbone
    if bb.foundation:  # multihead replay always starts from the pretrained file
        return str(ctx.cfg.resolve(bb.foundation)), bb.finetune_epochs
    if bb.retrain == "finetune":
        return previous, bb.finetune_epochs
    if bb.model_file:
        return str(ctx.cfg.resolve(bb.model_file)), bb.finetune_epochs
    return None, None


def _group(a: Atoms) -> str:
    """The trajectory a frame belongs to: the pool's group, or its generation and walker."""
    if "group" in a.info:
        return str(a.info["group"])
    if "walker" in a.info:
        return f"{a.info.get('generation', 0)}:{a.info['walker']}"
    return str(a.info["fid"])


def crossfit_specs(ctx: Context, gen: int, frames: Sequence[Atoms], previous: str
                   ) -> tuple[list[Spec], list[list[str]]]:
    """The fold models of probe.crossfit K for generation ``gen``: the frames none of the
    start point's lineage trained on (with retrain: finetune, those new since generation
    gen-1; from scratch, all of them) split by trajectory into K folds; fold model k starts
    where the backbone starts and trains on every frame but fold k. Returns the specs and,
    for each, the ids of its held-out fold (frames it never saw: honest probe labels)."""
    K = ctx.cfg.probe.crossfit
    seen = ctx.lineage(gen - 1) if ctx.cfg.backbone.retrain == "finetune" else set()
    new = [a for a in frames if a.info["fid"] not in seen]
    if K < 2 or len(new) < 2:
        return [], []
    fold = group_folds([_group(a) for a in new], K, ctx.rng(gen, "crossfit"))
    specs, held = [], []
    for k in range(K):
        out = {a.info["fid"] for a, f in zip(new, fold) if f == k}
        if not out:
            continue
        specs.append(Spec(f"fold{k}", *start_point(ctx, previous),
                          [a for a in frames if a.info["fid"] not in out], fold=k + 1))
        held.append(sorted(out))
    return specs, held


def _refreshes(ctx: Context, gen: int) -> bool:
    """Generation ``gen`` (>= 1) trains its backbone (not frozen, not a user model as is)."""
    bb = ctx.cfg.backbone
    return bb.finetune and gen % bb.refresh_every == 0


class Train(Stage):
    """Generation g's backbone (and committee members 1..M-1 of an ensemble arm, at the same
    time) on every training label, from the start point of backbone.retrain; a frozen
    generation (backbone.finetune off, or between refresh_every) keeps backbone g-1."""

    name = "train"

    def run(self, ctx: Context, gen: int) -> Commit:
        t0 = time.perf_counter()
        prev_model = ctx.model(gen - 1)
        L = ctx.ledger
        # the DFT labels this generation's models had (training pool, test set excluded):
        # the x of the learning curve (in a streaming campaign labels arrive during training)
        labels = L.count(status="labeled") - L.count(status="labeled", split="test")
        if not _refreshes(ctx, gen):
            return Commit({"path": prev_model, "train_ids": [], "wall_s": 0.0,
                           "labels": labels})
        frames = [a for sp in ctx.arm.training_splits()
                  for a in L.frames(status="labeled", split=sp)]
        if ctx.arm.rotates():  # earlier generations' held-out shares join now
            frames += [a for a in L.frames(status="labeled", split="calib")
                       if int(a.info.get("generation", 0)) < gen]
        heads = _head_committee(ctx)
        prev = (ctx.committee_paths(gen - 1) if ctx.arm.committee_size() > 1 and not heads
                else [prev_model])
        names = ["backbone", *(f"member{k}" for k in range(1, len(prev)))]
        specs = [Spec(name, *start_point(ctx, prev[k]), frames, k)
                 for k, name in enumerate(names)]
        folds, held = (crossfit_specs(ctx, gen, frames, prev_model) if ctx.arm.trains_probe()
                       else ([], []))
        infos = train_models(ctx, gen, specs + folds)
        if heads:  # the heads train on the new backbone's body, so after it
            infos[1:1] = train_models(ctx, gen, head_specs(ctx, infos[0]["path"], frames))
        n = max(1, ctx.arm.committee_size())  # backbone and members lead ``infos``
        wall = time.perf_counter() - t0
        also = ({stage_key(gen, "committee"): {"members": [i["path"] for i in infos[1:n]],
                                             "wall_s": wall}}
                if ctx.arm.committee_size() > 1 else {})
        if folds:  # probe.crossfit: the fold models and the frames each never saw
            fold_infos = infos[n:]
            also[stage_key(gen, "crossfit")] = {
                "members": [i["path"] for i in fold_infos], "held_out": held,
                "train_s": [i["wall_s"] for i in fold_infos],
                "backbone_train_s": infos[0]["wall_s"]}
        return Commit({**infos[0], "wall_s": wall, "labels": labels}, also=also)


def _head_committee(ctx: Context) -> bool:
    """The arm's committee is readout heads on the backbone's body (committee.kind heads)."""
    return ctx.arm.committee_size() > 1 and ctx.cfg.committee.kind == "heads"


def head_specs(ctx: Context, backbone: str, frames: Sequence[Atoms]) -> list[Spec]:
    """Members 1..M-1 of a head committee: readout-only fine-tunes (finetune_epochs) of
    ``backbone`` with readouts drawn afresh per member seed, on ``frames``."""
    return [Spec(f"member{k}", None, ctx.cfg.backbone.finetune_epochs, frames, k,
                 head_of=backbone) for k in range(1, ctx.arm.committee_size())]


class Committee(Stage):
    """Members 1..M-1 of a generation's committee (arms with more than one model), where the
    Train stage did not make them: generation 0's (trained like backbone 0 on its training
    frames, with other seeds), and a frozen generation's (the previous members).
    ``offset=-1``: the previous generation's, made at the start of this one."""

    name = "committee"

    def __init__(self, offset: int = 0):
        self.offset = offset

    def applies(self, ctx: Context, gen: int) -> bool:
        return ctx.arm.committee_size() > 1

    def run(self, ctx: Context, gen: int) -> Commit:
        cfg, L = ctx.cfg, ctx.ledger
        g = gen + self.offset
        t0 = time.perf_counter()
        if g > 0 and not _refreshes(ctx, g):
            return Commit({"members": ctx.committee_paths(g - 1)[1:],
                           "wall_s": time.perf_counter() - t0})
        ids = set(L.stage_info(stage_key(g, "train"))["train_ids"])
        frames = [a for a in L.frames(status="labeled") if a.info["fid"] in ids]
        if not frames:  # a user model used as is: members fine-tune it on the gen-0 data
            frames = L.frames(status="labeled", split="train")
        if _head_committee(ctx):
            specs = head_specs(ctx, L.stage_info(stage_key(g, "train"))["path"], frames)
        else:
            user = (str(cfg.resolve(cfg.backbone.start_file)) if cfg.backbone.start_file
                    else None)
            epochs = cfg.backbone.finetune_epochs if user else None
            specs = [Spec(f"member{k}", user, epochs, frames, k)
                     for k in range(1, ctx.arm.committee_size())]
        infos = train_models(ctx, g, specs)
        return Commit({"members": [i["path"] for i in infos],
                       "wall_s": time.perf_counter() - t0})


def noise_floor(ctx: Context, seeds: int) -> dict[str, Any]:
    """Training noise of a finished campaign: its last generation's backbone trained again,
    from the same starting point on the same frames, with ``seeds`` other seeds, each
    evaluated on the test set. Recorded as stage ``noise_floor/<seeds>``: {"run",
    "generation", "labels", "force_mae_meV_A": [original, reseeded...], "sd_meV_A",
    "range_meV_A", "retrain"}."""
    from ..errors import CampaignError
    from ..metrics import regression_errors
    from ..tasks import predict_task

    L, cfg = ctx.ledger, ctx.cfg
    stage = f"noise_floor/{seeds}"
    if L.done(stage):
        return L.stage_info(stage)
    rows = L.metrics()
    gen = int(rows[-1]["generation"])
    ids = set(L.stage_info(stage_key(gen, "train"))["train_ids"])
    frames = [a for a in L.frames(status="labeled") if a.info["fid"] in ids]
    if gen == 0 or not frames:
        raise CampaignError(f"{ctx.dir}: no trained generation to measure the noise of")
    foundation, epochs = start_point(ctx, ctx.model(gen - 1))
    folder = ctx.dir / "models" / "noise_floor"
    folder.mkdir(parents=True, exist_ok=True)
    infos = [train_models(ctx, gen, [Spec(f"seed{k}", foundation, epochs, frames)], reseed=k,
                          folder=folder)[0] for k in range(1, seeds + 1)]
    test = L.frames(status="labeled", split="test")
    got: dict[int, float] = {}

    def record(k: int, r: dict[str, Any]) -> bool:
        for a, e, f in zip(test, r["energy"], r["forces"]):
            set_prediction(a, e, f)
        got[k] = 1000 * regression_errors(test)["force_mae_eV_A"]
        return False

    ctx.run([Job(predict_task, (i["path"], [bare_copy(a) for a in test], cfg.backbone.device),
                 kind="evaluate", key=f"eval-noise-{k}", tag=k) for k, i in enumerate(infos)],
            "noise floor evaluate", record)
    maes = [1000 * float(rows[-1]["force_mae_eV_A"])] + [got[k] for k in sorted(got)]
    L.mark_done(stage, run=cfg.name, generation=gen, labels=int(rows[-1]["labels"]),
                force_mae_meV_A=maes, sd_meV_A=float(np.std(maes, ddof=1)),
                range_meV_A=float(np.ptp(maes)), retrain=cfg.backbone.retrain)
    return L.stage_info(stage)
