"""Generation 0: the initial labels, the held-out test set and backbone 0.

Prospective: rattled seeds (labeled) train a bootstrap backbone, which drives short MD:
training walkers give ``n_md`` training frames, separate test walkers the test set (no frame
of a test walker's trajectory is ever trained on, selected or seen by a probe). Pool mode: the
test set (a separate file, or whole groups of the pool) and the initial labels drawn from the
rest, with no DFT. Then backbone 0 is trained (or a user's model file is taken as it is).
"""

from __future__ import annotations

import shutil
from typing import Any

from ase import Atoms

from ..frames import bare_copy
from .base import CampaignError, Commit, Stage
from .context import Context
from .explore import run_walkers
from .label import LABEL_OUTCOMES
from .train import Spec, train_models

__all__ = ["Bootstrap", "BootstrapTrain", "InitialLabels", "PoolStart", "Rattle", "Split",
           "StressLabeled", "StressWalkers", "TestWalkers", "TrainBackbone0"]


class _Gen0(Stage):
    def applies(self, ctx: Context, gen: int) -> bool:
        return ctx.pool is None


class Rattle(_Gen0):
    """``n_rattle`` copies of the seeds, each displaced by Gaussian noise of increasing width
    (up to ``rattle_A``), to be labeled."""

    name = "rattle"

    def run(self, ctx: Context, gen: int) -> Commit:
        ini = ctx.cfg.initial
        rng = ctx.rng(0, "rattle")
        frames = []
        for i in range(ini.n_rattle):
            a = bare_copy(ctx.seeds[i % len(ctx.seeds)])
            sigma = ini.rattle_A * (i + 1) / ini.n_rattle
            a.positions += rng.normal(0.0, sigma, a.positions.shape)
            frames.append(a)
        return Commit({"n": len(frames)}, rows=lambda L: L.add(
            frames, generation=0, origin="initial", status="selected"))


class BootstrapTrain(_Gen0):
    """The backbone that drives generation 0's MD, from scratch on the labeled rattled
    frames (unless the user's model file drives it)."""

    name = "bootstrap_train"

    def applies(self, ctx: Context, gen: int) -> bool:
        return (super().applies(ctx, gen) and not ctx.cfg.backbone.start_file
                and not ctx.ledger.done("gen000/bootstrap"))

    def run(self, ctx: Context, gen: int) -> Commit:
        boot = ctx.ledger.frames(generation=0, status="labeled")
        (info,) = train_models(ctx, 0, [Spec("bootstrap", None,
                                             max(10, ctx.cfg.backbone.epochs // 2), boot)])
        return Commit(info)


def _driver(ctx: Context) -> str:
    cfg = ctx.cfg
    if cfg.backbone.start_file:
        return str(cfg.resolve(cfg.backbone.start_file))
    return ctx.ledger.stage_info("gen000/bootstrap_train")["path"]


#: How many times a test walker whose trajectory turned unphysical is run again (new seed).
TEST_WALKER_RETRIES = 3


def _test_walkers(ctx: Context, model: str, size: int | None = None, stream: str = "test_md",
                  temperature_K: float | None = None) -> tuple[list[Atoms], dict[str, Any]]:
    """``size`` (default ``initial.test_size``) frames spread evenly over the trajectories of
    ``initial.test_walkers`` walkers of their own (seed stream ``stream``; at
    ``temperature_K`` instead of the explore temperatures when given).

    A test walker whose geometry turns unphysical (atoms too close, a fragment flying off, a
    bond broken or formed: ``alprobe.explore.geometry_problem``) is run again with a seed of
    its own for that attempt, up to ``TEST_WALKER_RETRIES`` times, and its earlier trajectory
    is dropped: the frames leading up to such an event sample the bootstrap backbone's failure
    (ethanol: a bond breaking, an H migrating from C to O), not the molecule's thermal
    ensemble, and a few of them can dominate the test MAE. A walker still unphysical after the
    retries contributes no frames; both are recorded (``replaced``, ``dropped``).
    """
    from ..dataset import spread_pick

    ini, ex = ctx.cfg.initial, ctx.cfg.explore
    n, size = ini.test_walkers, ini.test_size if size is None else size
    per = [size // n + (1 if w < size % n else 0) for w in range(n)]
    steps = ini.test_md_steps or max(ini.md_steps, max(per) * ex.stride)
    frames, info = run_walkers(ctx, 0, model, None, steps, stream, which=range(n),
                               temperature_K=temperature_K)
    stops = dict(zip(range(n), info.get("stops", [])))
    what = "test" if stream == "test_md" else "stress"
    mine = {w: [a for a in frames if a.info["walker"] == w] for w in range(n)}
    wall, replaced = info["wall_s"], []
    for attempt in range(1, TEST_WALKER_RETRIES + 1):
        bad = [w for w in range(n) if stops.get(w, "").startswith("unphysical")]
        if not bad:
            break
        replaced += [{"walker": w, "attempt": attempt - 1, "stop": stops[w]} for w in bad]
        ctx.say(f"  gen 0: {what} walker(s) {', '.join(map(str, bad))} turned unphysical; "
                f"running them again with new seeds (attempt {attempt} of "
                f"{TEST_WALKER_RETRIES})")
        more, again = run_walkers(ctx, 0, model, None, steps, f"{stream}_retry", which=bad,
                                  attempt=attempt, temperature_K=temperature_K)
        wall += again["wall_s"]
        for w, stop in zip(bad, again["stops"]):
            stops[w] = stop
            mine[w] = [a for a in more if a.info["walker"] == w]
    dropped = [w for w in range(n) if stops.get(w, "").startswith("unphysical")]
    if dropped:
        ctx.say(f"  gen 0 WARNING: {what} walker(s) {', '.join(map(str, dropped))} still turned "
                f"unphysical after {TEST_WALKER_RETRIES} new seeds; their frames are left out "
                f"of the {what} set")
    out = []
    for w in range(n):
        if w in dropped:
            continue
        for i in spread_pick(len(mine[w]), per[w]):
            b = bare_copy(mine[w][i])
            b.info.update(test_walker=w, step=mine[w][i].info["step"],
                          temperature_K=mine[w][i].info["temperature_K"])
            out.append(b)
    return out, {"steps": steps, "stops": [stops.get(w, "") for w in range(n)],
                 "replaced": replaced, "dropped": dropped, "wall_s": wall}


class Bootstrap(_Gen0):
    """Short MD on the bootstrap backbone: ``n_md`` training frames drawn at random from the
    training walkers, to be labeled."""

    name = "bootstrap"

    def run(self, ctx: Context, gen: int) -> Commit:
        ini = ctx.cfg.initial
        frames, info = ([], {})
        if ini.n_md > 0:
            frames, info = run_walkers(ctx, 0, _driver(ctx), None, ini.md_steps,
                                       "bootstrap_md")
        rng = ctx.rng(0, "bootstrap_md")
        pick = rng.choice(len(frames), size=min(ini.n_md, len(frames)), replace=False)
        chosen = [bare_copy(frames[i]) for i in sorted(pick)]
        if len(chosen) < ini.n_md:
            ctx.say(f"  gen 0 WARNING: {len(chosen)} of {ini.n_md} MD training frames "
                    "(walkers stopped early)")
        return Commit({"n": len(chosen), **info}, rows=lambda L: L.add(
            chosen, generation=0, origin="initial", status="selected"))


class TestWalkers(_Gen0):
    """The held-out test set: ``initial.test_size`` frames of test walkers of their own on the
    bootstrap backbone, to be labeled (it runs beside backbone 0's training: nothing trains on
    it). A folder whose test set an older alprobe made with the bootstrap MD skips it."""

    name = "test_walkers"

    def applies(self, ctx: Context, gen: int) -> bool:
        return super().applies(ctx, gen) and not ctx.ledger.count(split="test")

    def run(self, ctx: Context, gen: int) -> Commit:
        ini = ctx.cfg.initial
        test, info = _test_walkers(ctx, _driver(ctx))
        if len(test) < ini.test_size:
            ctx.say(f"  gen 0 WARNING: {len(test)} of {ini.test_size} test frames (walkers "
                    "stopped early)")
        return Commit({"n_test": len(test), **info}, rows=lambda L: L.add(
            test, generation=0, origin="test_walker", status="selected", split="test"))


class StressWalkers(_Gen0):
    """The stress set: ``initial.stress_size`` frames of walkers of their own at
    ``initial.stress_temperature_K`` (beyond the exploration's temperatures) on the bootstrap
    backbone, to be labeled with the test set; like it, never trained on, selected or seen by
    a probe (split ``stress``; status ``stress`` once labeled)."""

    name = "stress_walkers"

    def applies(self, ctx: Context, gen: int) -> bool:
        return (super().applies(ctx, gen) and ctx.cfg.initial.stress_size > 0
                and not ctx.ledger.count(split="stress"))

    def run(self, ctx: Context, gen: int) -> Commit:
        size, T = ctx.cfg.initial.stress_size, ctx.cfg.stress_temperature_K()
        ctx.say(f"  gen 0: stress set of {size} frames from walkers at {T:g} K")
        frames, info = _test_walkers(ctx, _driver(ctx), size, "stress_md", T)
        if len(frames) < size:
            ctx.say(f"  gen 0 WARNING: {len(frames)} of {size} stress frames (walkers stopped "
                    "early)")
        return Commit({"n_stress": len(frames), "temperature_K": T, **info},
                      rows=lambda L: L.add(frames, generation=0, origin="stress_walker",
                                           status="selected", split="stress"))


class StressLabeled(_Gen0):
    """Labeled stress frames leave the labeled pool (status ``stress``): they are measured,
    never counted as labels or trained on."""

    name = "stress_labeled"

    def run(self, ctx: Context, gen: int) -> Commit:
        done = ctx.ledger.fids(status="labeled", split="stress")
        return Commit({"n": len(done)}, rows=lambda L: L.update_many(done, status="stress"))


class InitialLabels(_Gen0):
    """Generation 0's label counts: the rattled, MD and test labels together."""

    name = "label"

    def run(self, ctx: Context, gen: int) -> Commit:
        parts = [ctx.ledger.stage_info(f"gen000/label_{p}") for p in ("rattle", "md", "test")]
        if not ctx.ledger.count(status="labeled", split="test"):
            t = parts[2]
            raise CampaignError(
                f"{ctx.dir}: no labeled test frame ({ctx.ledger.count(split='test')} test frames "
                f"sampled, {t.get('labeled', 0)} labeled, {t.get('failed', 0)} failed, "
                f"{t.get('rejected', 0)} rejected): every metric would be NaN; see alprobe.log "
                "for why the test walkers stopped, change initial.* or explore.* and start a "
                "new folder")
        return Commit({k: sum(p.get(k, 0) for p in parts)
                       for k in (*LABEL_OUTCOMES, "wall_s", "dft_s")})


class Split(_Gen0):
    """The labeled non-test frames of generation 0 into training and calibration frames."""

    name = "split"

    def run(self, ctx: Context, gen: int) -> Commit:
        L = ctx.ledger
        test = sorted(L.fids(generation=0, status="labeled", split="test"))
        rest = sorted(set(L.fids(generation=0, status="labeled")) - set(test))
        rest = [rest[i] for i in ctx.rng(0, "split").permutation(len(rest))]
        n_cal = max(2, int(round(ctx.cfg.initial.calibration_fraction * len(rest))))

        def rows(L: Any) -> None:
            L.update_many(rest[:n_cal], split="calib")
            L.update_many(rest[n_cal:], split="train")

        return Commit({"test": len(test), "calib": n_cal, "train": len(rest) - n_cal},
                      rows=rows)


class PoolStart(Stage):
    """Pool mode: the test set and the initial labels (train + calibration), all from the
    pool, in one transaction with both records."""

    name = "split"

    def applies(self, ctx: Context, gen: int) -> bool:
        return ctx.pool is not None

    def run(self, ctx: Context, gen: int) -> Commit:
        from ..dataset import calibration_mask, group_split, random_subset

        cfg, pool = ctx.cfg, ctx.pool
        rng = ctx.rng(0, "split")
        if pool.test is not None:
            test, rest = pool.test, pool.frames
        else:
            mask = group_split(pool.groups, cfg.pool.test_fraction, rng)
            test = [a for a, m in zip(pool.frames, mask) if m]
            rest = [a for a, m in zip(pool.frames, mask) if not m]
        init = [rest[i] for i in random_subset(len(rest), cfg.pool.initial_size, rng)]
        calib = calibration_mask(len(init), cfg.initial.calibration_fraction, rng, minimum=2)
        train = [a for a, c in zip(init, calib) if not c]
        held = [a for a, c in zip(init, calib) if c]

        def rows(L: Any) -> None:
            L.add(test, generation=0, origin="pool", status="labeled", split="test")
            if pool.stress:  # measured, never trained on, never a candidate
                L.add(pool.stress, generation=0, origin="pool", status="stress", split="stress")
            L.add(train, generation=0, origin="pool", status="labeled", split="train")
            L.add(held, generation=0, origin="pool", status="labeled", split="calib")

        ctx.say(f"  gen 0: pool of {len(pool.frames)} frames; {len(test)} test frames, "
                f"{len(init)} initial labels ({len(held)} held out for the probe)"
                + (f"; stress set: {len(pool.stress)} frames at {cfg.pool.stress_key} = "
                   f"{pool.stress[0].info['stress_value']:g}" if pool.stress else ""))
        labels = {"labeled": len(init), "failed": 0, "rejected": 0, "timeout": 0,
                  "wall_s": 0.0, "dft_s": 0.0}
        return Commit({"test": len(test), "calib": len(held), "train": len(train),
                       "pool": len(pool.frames), "stress": len(pool.stress),
                       "test_groups": len({a.info["group"] for a in test})},
                      rows=rows, also={"gen000/label": labels})


class TrainBackbone0(Stage):
    """Backbone 0: from scratch on generation 0's training frames, fine-tuned from the user's
    model file, or that file as it is (backbone.finetune off)."""

    name = "train"

    def run(self, ctx: Context, gen: int) -> Commit:
        cfg = ctx.cfg
        train = ctx.ledger.frames(status="labeled", split="train")
        user = cfg.resolve(cfg.backbone.start_file) if cfg.backbone.start_file else None
        if user is not None and not cfg.backbone.finetune:
            from ..backbone import load_model

            load_model(user)  # clear error now if the file is unusable
            dest = ctx.model_dir(0) / "backbone.model"
            shutil.copyfile(user, dest)
            return Commit({"path": str(dest), "train_ids": [], "wall_s": 0.0})
        (info,) = train_models(ctx, 0, [Spec("backbone", str(user) if user else None,
                                             cfg.backbone.finetune_epochs if user else None,
                                             train)])
        return Commit(info)
