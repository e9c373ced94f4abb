"""The streaming schedule: no generation barrier (``schedule: streaming``).

After generation 0 (the same stages as the generations schedule), one driver loop keeps every
worker busy:

- **walkers** run in segments of ``streaming.segment_steps`` MD steps, each continuing where
  the last one ended (positions and momenta), with the newest models ready at its start;
- each segment's frames become candidates the moment it returns, scored by the models that
  drove it (``scored_by``: their generation), and the arm's rule picks up to
  ``picks_per_segment`` of them (plus the random audit share); picked frames queue for DFT;
- **label** tasks are taken from the queue whenever a worker slot is free (MD runs only when
  the queue is empty), each result written at once (and spooled by its worker);
- after every ``retrain_every`` new labels a **retrain cycle** starts in a background thread:
  the generations schedule's own stages (train, committee, probe, evaluate, audit, metrics),
  so cycle k is "generation k" of every table (``alprobe status``, learning curves); its
  tasks have priority over labels and MD on the workers;
- it ends after ``total_budget`` labels and a last cycle trained on all of them.

Everything persists in the ledger as it happens (candidates, picks and the walker's state in
one transaction; labels as they arrive): a killed driver resumes with no finished label lost
and none computed twice, within the same total budget. The frames picked may differ from an
uninterrupted run: arrival order depends on timing.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from ase import Atoms

from .executor import Job
from .frames import bare_copy
from .stages import CampaignPaused, Context, execute

__all__ = ["StreamSettings", "run_streaming", "stream_settings"]

#: The stages of one retrain cycle (generation k >= 1), run in the trainer thread.
#: Dask priority of a retrain cycle's tasks (higher runs first among queued tasks).
TRAIN_PRIORITY = 10


@dataclass(frozen=True)
class StreamSettings:
    """The resolved streaming settings (see config.StreamingConfig)."""

    total_budget: int
    retrain_every: int
    segment_steps: int
    picks_per_segment: int
    audit_fraction: float
    max_labels_per_hour: float | None
    label_slots: int | None


def stream_settings(cfg: Any) -> StreamSettings:
    """The defaults of config.StreamingConfig resolved against the rest of the campaign."""
    s, sel, ex = cfg.streaming, cfg.select, cfg.explore
    segment = s.segment_steps or max(2 * ex.stride, ex.steps // 3)
    picks = s.picks_per_segment or max(1, round(
        sel.budget * segment / (ex.walkers * max(ex.steps, 1))))
    return StreamSettings(
        total_budget=s.total_budget or sel.budget * max(1, cfg.generations),
        retrain_every=s.retrain_every or sel.budget, segment_steps=segment,
        picks_per_segment=picks, audit_fraction=sel.audit_random / sel.budget,
        max_labels_per_hour=s.max_labels_per_hour, label_slots=s.label_slots)


class _Trainer:
    """Retrain cycles, one at a time, in a background thread."""

    def __init__(self, ctx: Context):
        self.ctx = ctx
        self.thread: threading.Thread | None = None
        self.error: BaseException | None = None
        self.cycle = 0

    @property
    def busy(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def start(self, gen: int, outcomes: dict[str, int] | None = None) -> None:
        L = self.ctx.ledger
        if not L.done(f"gen{gen:03d}/start"):
            L.mark_done(f"gen{gen:03d}/start", t=time.time(), outcomes=outcomes or {})
        self.cycle = gen
        self.thread = threading.Thread(target=self._run, args=(gen,), daemon=True,
                                       name=f"retrain-{gen}")
        self.thread.start()

    def _run(self, gen: int) -> None:
        from .stages import evaluate, metrics, probe, train

        stages = [train.Train(), train.Committee(), probe.Probe(), evaluate.Evaluate(),
                  evaluate.Audit(), metrics.Metrics()]
        self.ctx.executor.set_priority(TRAIN_PRIORITY)
        try:
            for stage in stages:
                execute(stage, self.ctx, gen)
            self.ctx.ledger.mark_done(f"gen{gen:03d}/done")
        except BaseException as exc:  # noqa: BLE001 - reported by the driver loop
            self.error = exc


class _Walker:
    """One walker's place: where it is, its next segment and sample numbers."""

    def __init__(self, w: int, record: dict[str, Any], start: Atoms):
        self.w = w
        self.segment = int(record.get("segment", 0))
        self.sample = int(record.get("sample", 0))
        self.restarts = int(record.get("restarts", 0))
        self.positions = (np.asarray(record["positions"]) if record.get("positions")
                          else None)
        self.momenta = np.asarray(record["momenta"]) if record.get("momenta") else None
        self.start = start
        self.busy = False

    def record(self) -> dict[str, Any]:
        return {"segment": self.segment, "sample": self.sample, "restarts": self.restarts,
                "positions": None if self.positions is None else self.positions.tolist(),
                "momenta": None if self.momenta is None else self.momenta.tolist()}


class Stream:
    """The driver loop of one streaming campaign (see the module docstring)."""

    def __init__(self, ctx: Context):
        self.ctx, self.L, self.cfg = ctx, ctx.ledger, ctx.cfg
        self.s = stream_settings(ctx.cfg)
        self.ex = ctx.executor
        self.trainer = _Trainer(ctx)
        self.walkers = [_Walker(w, self.L.stage_info(f"stream/walker{w:03d}"),
                                ctx.seeds[w % len(ctx.seeds)])
                        for w in range(self.cfg.explore.walkers)]
        keys = [k for k in self.L.keys() if int(k.get("generation", 0)) >= 1
                and k.get("status") != "candidate"]
        self.picked = len(keys)
        self.audited = sum(bool(k.get("audit")) for k in keys)
        self.queue = [k["fid"] for k in keys if k["status"] == "selected"]
        self.in_flight: set[str] = set()
        self.scoring: dict[str, dict[str, Any]] = {}  # segment key -> frames, results, jobs
        self.label_times: list[float] = []
        self.t_say = 0.0

    # ----- the loop ------------------------------------------------------------------------
    def run(self) -> None:
        ctx = self.ctx
        s = self.s
        ctx.say(f"streaming: {s.total_budget} labels in all, a retrain every "
                f"{s.retrain_every}; segments of {s.segment_steps} MD steps, "
                f"{s.picks_per_segment} pick(s) each; {self.picked} picked so far, "
                f"{len(self.queue)} queued")
        self._recover_spooled()
        try:
            while True:
                if self.trainer.error is not None:
                    raise self.trainer.error
                for job, res, err in self.ex.finished(timeout_s=0.5):
                    self._collect(job, res, err)
                self._maybe_retrain()
                if self._finished():
                    break
                self._fill()
                self._progress()
        finally:
            self.ex.cancel_started()
        if self.trainer.thread is not None:
            self.trainer.thread.join()
            if self.trainer.error is not None:
                raise self.trainer.error

    def _finished(self) -> bool:
        """Every label of the budget is done and the last cycle trained on all of them."""
        return (self.picked >= self.s.total_budget and not self.queue and not self.in_flight
                and not self.scoring and not self.trainer.busy
                and self._labeled_since_cycle() == 0 and not self._segments_running())

    def _segments_running(self) -> bool:
        return any(w.busy for w in self.walkers)

    # ----- models --------------------------------------------------------------------------
    def _ready_gen(self) -> int:
        """The newest generation whose backbone, probe and committee are all in place."""
        L, g = self.L, 0
        while L.done(f"gen{g + 1:03d}/probe") and (
                self.ctx.arm.committee_size() == 1 or L.done(f"gen{g + 1:03d}/committee")):
            g += 1
        return g

    def _labeled_since_cycle(self) -> int:
        """Labels finished since the newest cycle's training snapshot."""
        L = self.L
        g = self._last_cycle_started()
        done = L.count(status="labeled") - L.count(status="labeled", split="test")
        return done - int(L.stage_info(f"gen{g:03d}/train").get("labels", done)) if g else \
            done - (L.count(status="labeled", generation=0)
                    - L.count(status="labeled", split="test"))

    def _last_cycle_started(self) -> int:
        g = 0
        while self.L.done(f"gen{g + 1:03d}/start"):
            g += 1
        return g

    def _maybe_retrain(self) -> None:
        if self.trainer.busy:
            return
        g = self._last_cycle_started()
        if g and not self.L.done(f"gen{g:03d}/done"):  # a cycle a stop interrupted
            self.trainer.start(g)
            return
        new = self._labeled_since_cycle()
        drained = self.picked >= self.s.total_budget and not self.queue and not self.in_flight
        outcomes = self._outcomes()
        before = self.L.stage_info(f"gen{g:03d}/start").get("outcomes", {})
        sent = sum(n - int(before.get(s, 0)) for s, n in outcomes.items())
        if sent >= self.s.retrain_every or (drained and sent > 0):
            self._failure_ceiling(g + 1, outcomes, before)  # also when none was labeled
        if new >= self.s.retrain_every or (drained and new > 0):
            self.ctx.say(f"  cycle {g + 1}: retraining on {new} new label(s) in the background")
            self.trainer.start(g + 1, outcomes)

    def _outcomes(self) -> dict[str, int]:
        """Label outcomes of the streaming frames so far (generation >= 1)."""
        from .stages.label import LABEL_OUTCOMES

        return {s: self.L.count(status=s) - self.L.count(status=s, generation=0)
                for s in LABEL_OUTCOMES}

    def _failure_ceiling(self, gen: int, outcomes: dict[str, int],
                         before: dict[str, int]) -> None:
        """Pause (CampaignPaused) when more labels failed since the last cycle than
        select.max_failed_fraction, unless the campaign accepts failures."""
        since = {s: n - int(before.get(s, 0)) for s, n in outcomes.items()}
        sent = sum(since.values())
        bad = sent - since["labeled"]
        if self.ctx.accept_failures or not sent:
            return
        if bad / sent > self.cfg.select.max_failed_fraction:
            raise CampaignPaused(
                f"cycle {gen}: {bad} of {sent} labels since the last cycle failed (more than "
                f"{self.cfg.select.max_failed_fraction:.0%}); paused before training. Inspect "
                f"the reasons with `ase db {self.ctx.dir / 'ledger.db'} status!=labeled -c "
                f"fid,status,reason`, then resume with --accept-failures")

    # ----- filling the workers -------------------------------------------------------------
    def _slots(self) -> int:
        if self.s.label_slots:
            return self.s.label_slots
        try:
            info = self.ctx.executor.client.scheduler_info()["workers"]
            return max(1, sum(int(w.get("nthreads", 1)) for w in info.values()))
        except Exception:  # noqa: BLE001 - a scheduler hiccup: keep one task going
            return 1

    def _rate_allows(self) -> bool:
        rate = self.s.max_labels_per_hour
        if not rate:
            return True
        now = time.time()
        self.label_times = [t for t in self.label_times if now - t < 3600]
        return len(self.label_times) < rate

    def _fill(self) -> None:
        # twice the worker threads: a queued task is on the scheduler, ready to go the moment
        # a worker frees, instead of a driver round trip later (labels of 0.5 s would lose
        # several per cent to that); a retrain's tasks still go first (higher priority)
        slots = 2 * self._slots()
        mine = len(self.in_flight) + sum(w.busy for w in self.walkers) + sum(
            len(v["jobs"]) for v in self.scoring.values())
        while mine < slots:
            if self.queue and self._rate_allows():
                self._start_label(self.queue.pop(0))
            elif self.picked < self.s.total_budget and self._start_segment():
                pass
            else:
                break
            mine += 1

    def _start_label(self, fid: str) -> None:
        from .tasks import label_task

        a = self.L.frames(fid=fid)[0]
        self.in_flight.add(fid)
        self.label_times.append(time.time())
        self.ex.start(Job(label_task, (bare_copy(a), self.ctx.level,
                                       str(self.ctx.dir / "spool")),
                          kind="label", key=f"label-{fid}", tag=("label", fid), retries=2))

    def _start_segment(self) -> bool:
        """Start the idle walker with the fewest segments; False when every walker runs."""
        from .stages.explore import walker_settings
        from .tasks import walker_task

        idle = [w for w in self.walkers if not w.busy]
        if not idle:
            return False
        w = min(idle, key=lambda x: (x.segment, x.w))
        gen = self._ready_gen()
        model, probe = self.ctx.model(gen), self.ctx.arm.walker_probe(self.ctx, gen + 1)
        start = bare_copy(w.start)
        if w.positions is not None:
            start.positions = w.positions
        settings = walker_settings(self.cfg, w.w, self.s.segment_steps)
        seed = self.ctx.walker_seed(w.segment, "explore", w.w)
        w.busy = True
        self.ex.start(Job(walker_task, (start, model, probe, settings, seed, w.w,
                                        self.cfg.backbone.device, w.momenta, w.sample),
                          kind="md", key=f"segment-w{w.w}-s{w.segment}-r{w.restarts}",
                          tag=("segment", w.w, w.segment, gen)))
        return True

    # ----- results -------------------------------------------------------------------------
    def _collect(self, job: Job, res: Any, err: BaseException | None) -> None:
        kind = job.tag[0]
        if kind == "label":
            from .stages.label import _crashed, _record

            fid = job.tag[1]
            self.in_flight.discard(fid)
            if err is not None:
                res = _crashed(fid, err)
            _record(self.ctx, fid, res, "stream")
        elif kind == "segment":
            self._segment_done(job, res, err)
        elif kind == "score":
            seg = self.scoring[job.tag[1]]
            seg["results"][job.tag[2]] = res
            seg["jobs"].discard(job.key)
            if err is not None:
                seg["error"] = f"{type(err).__name__}: {err}"
            if not seg["jobs"]:
                self._select(job.tag[1])

    def _segment_done(self, job: Job, res: dict[str, Any] | None,
                      err: BaseException | None) -> None:
        _, w_index, segment, gen = job.tag
        w = self.walkers[w_index]
        w.busy = False
        if err is not None:
            res = {"frames": [], "stop_reason": f"walker task failed: {type(err).__name__}: "
                   f"{' '.join(str(err).split())[:200]}", "end": None}
        frames = res["frames"]
        for a in frames:
            a.info.update(scored_by=gen, segment=segment)
        w.segment += 1
        w.sample += len(frames)
        if res.get("end") is not None:
            w.positions, w.momenta = (np.asarray(x) for x in res["end"])
        else:  # stopped (low trust, unphysical, crashed): start again from the seed
            w.positions = w.momenta = None
            w.restarts += 1
            self.ctx.say(f"  walker {w.w} segment {segment}: {res['stop_reason']}; restarting "
                         "from its seed structure")
        key = f"w{w.w}-s{segment}"
        jobs = self.ctx.arm.segment_jobs(self.ctx, gen, frames, f"score-{key}") if frames \
            else []
        if not jobs:
            self._commit_segment(w, gen, frames, [{} for _ in frames], key)
            return
        self.scoring[key] = {"frames": frames, "results": {}, "w": w, "gen": gen,
                             "jobs": {j.key for j in jobs}}
        for j in jobs:
            self.ex.start(Job(j.fn, j.args, kind=j.kind, key=j.key, tag=("score", key, j.tag),
                              account=j.account))

    def _select(self, key: str) -> None:
        seg = self.scoring.pop(key)
        frames = seg["frames"]
        if "error" in seg:
            self.ctx.say(f"  segment {key}: scoring failed ({seg['error']}); its frames stay "
                         "candidates, none picked")
            self._commit_segment(seg["w"], seg["gen"], frames, [{} for _ in frames], key,
                                 pick=False)
            return
        keys = self.ctx.arm.segment_keys(frames, seg["results"])
        self._commit_segment(seg["w"], seg["gen"], frames, keys, key)

    def _commit_segment(self, w: _Walker, gen: int, frames: list[Atoms],
                        keys: list[dict[str, Any]], key: str, pick: bool = True) -> None:
        """Candidates, the picks among them and the walker's new place: one transaction."""
        for a, k in zip(frames, keys):
            a.info.update(k)
        seg = int(frames[0].info["segment"]) if frames else 0
        chosen, audit, calib = (self._pick(frames, gen, (w.w, seg)) if pick and frames
                                else ([], [], []))
        with self.L.transaction():
            if frames:
                self.L.add(frames, generation=gen + 1, origin="explore", status="candidate")
            for fid, c in zip(chosen + audit, calib):
                self.L.update(fid, status="selected", split="calib" if c else "train",
                              audit=fid in audit)
            self.L.mark_done(f"stream/walker{w.w:03d}", **w.record())
        self.picked += len(chosen) + len(audit)
        self.audited += len(audit)
        self.queue += chosen + audit

    def _pick(self, frames: list[Atoms], gen: int, key: tuple[int, int]
              ) -> tuple[list[str], list[str], list[bool]]:
        """The rule's picks of one segment, the random audit picks due, and which are held
        out for the probe."""
        from .acquire import select_random
        from .frames import frame_id, pooled_embeddings

        left = self.s.total_budget - self.picked
        n = min(self.s.picks_per_segment, left)
        if n <= 0:
            return [], [], []
        fids = [a.info.get("fid") or frame_id(a) for a in frames]
        for a, f in zip(frames, fids):
            a.info["fid"] = f
        due = math.floor((self.picked + n) * self.s.audit_fraction) - self.audited
        n_audit = min(max(0, due), n)
        rng = self.ctx.rng(gen + 1, "select", *key)
        pick, _ = self.ctx.arm.pick([dict(a.info) for a in frames], n - n_audit, rng,
                                    pooled_embeddings(frames))
        chosen = [fids[i] for i in pick]
        rest = [f for f in fids if f not in set(chosen)]
        audit = [rest[i] for i in select_random(len(rest), n_audit, rng=rng)]
        calib = rng.random(len(chosen) + len(audit)) < self.cfg.initial.calibration_fraction
        if not self.ctx.arm.holds_calibration():
            calib[:] = False
        return chosen, audit, [bool(c) for c in calib]

    def _recover_spooled(self) -> None:
        """Labels a worker finished before a stop: from the spool, never computed again."""
        from .stages.label import _record, read_spooled_label

        spool = self.ctx.dir / "spool"
        spool.mkdir(exist_ok=True)
        left = []
        for fid in self.queue:
            r = read_spooled_label(spool, fid)
            if r is None:
                left.append(fid)
            else:
                _record(self.ctx, fid, r, "stream")
        if len(left) < len(self.queue):
            self.ctx.say(f"  {len(self.queue) - len(left)} finished label(s) recovered")
        self.queue = left

    def _progress(self) -> None:
        now = time.time()
        if now - self.t_say < 15:
            return
        self.t_say = now
        L = self.L
        done = L.count(status="labeled") - L.count(status="labeled", split="test")
        ready = self._ready_gen()
        train = (f"cycle {self.trainer.cycle} training" if self.trainer.busy
                 else "no training")
        self.ctx.say(f"  [stream] picked {self.picked}/{self.s.total_budget}, {len(self.queue)} "
                     f"queued, {len(self.in_flight)} labeling, {done} labels in all; "
                     f"{sum(w.busy for w in self.walkers)} walker(s) running on generation "
                     f"{ready}'s models; {train}")


def run_streaming(ctx: Context) -> None:
    """The streaming campaign after generation 0 (see the module docstring)."""
    from .stages.train import Committee

    if ctx.arm.committee_size() > 1:  # generation 0's committee, before the first segment
        execute(Committee(offset=-1), ctx, 1)
    Stream(ctx).run()
