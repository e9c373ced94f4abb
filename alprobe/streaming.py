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
from .frames import bare_copy, frame_id, pooled_embeddings
from .records import stage_key
from .stages import Context, execute
from .stages.explore import walker_failed, walker_job, walker_settings
from .stages.label import (LABEL_OUTCOMES, failed_label, label_job, record_label,
                           recover_spooled)
from .stages.plan import retrain_stages
from .stages.select import choose, failure_pause, mark_selected

__all__ = ["StreamSettings", "run_streaming", "stream_settings"]

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


class _Cycles:
    """Retrain cycles: when one is due, one at a time in a background thread running the
    generations schedule's own retrain stages (cycle k is "generation k" of every table)."""

    def __init__(self, ctx: Context, settings: StreamSettings):
        self.ctx, self.L, self.s = ctx, ctx.ledger, settings
        self.thread: threading.Thread | None = None
        self.error: BaseException | None = None
        self.cycle = 0

    @property
    def busy(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def start(self, gen: int, outcomes: dict[str, int] | None = None) -> None:
        if not self.L.done(stage_key(gen, "start")):
            self.L.mark_done(stage_key(gen, "start"), t=time.time(), outcomes=outcomes or {})
        self.cycle = gen
        self.thread = threading.Thread(target=self._run, args=(gen,), daemon=True,
                                       name=f"retrain-{gen}")
        self.thread.start()

    def _run(self, gen: int) -> None:
        self.ctx.executor.set_priority(TRAIN_PRIORITY)
        try:
            for stage in retrain_stages():
                execute(stage, self.ctx, gen)
            self.L.mark_done(stage_key(gen, "done"))
        except BaseException as exc:  # noqa: BLE001 - reported by the driver loop
            self.error = exc

    def ready(self) -> int:
        """The newest generation whose backbone, probe and committee are all in place."""
        g = 0
        while self.L.done(stage_key(g + 1, "probe")) and (
                self.ctx.arm.committee_size() == 1 or self.L.done(stage_key(g + 1, "committee"))):
            g += 1
        return g

    def last_started(self) -> int:
        g = 0
        while self.L.done(stage_key(g + 1, "start")):
            g += 1
        return g

    def labeled_since(self) -> int:
        """Labels finished since the newest cycle's training snapshot."""
        L, g = self.L, self.last_started()
        done = L.count(status="labeled") - L.count(status="labeled", split="test")
        return done - int(L.stage_info(stage_key(g, "train")).get("labels", done)) if g else \
            done - (L.count(status="labeled", generation=0)
                    - L.count(status="labeled", split="test"))

    def outcomes(self) -> dict[str, int]:
        """Label outcomes of the streaming frames so far (generation >= 1)."""
        return {s: self.L.count(status=s) - self.L.count(status=s, generation=0)
                for s in LABEL_OUTCOMES}

    def maybe_start(self, drained: bool) -> None:
        """Start the cycle due: one a stop interrupted, or one after ``retrain_every`` new
        labels (``drained``: the budget is spent and nothing is pending: any new label). The
        failure ceiling is checked first, over the labels sent since the last cycle."""
        if self.busy:
            return
        g = self.last_started()
        if g and not self.L.done(stage_key(g, "done")):  # a cycle a stop interrupted
            self.start(g)
            return
        new = self.labeled_since()
        outcomes = self.outcomes()
        before = self.L.stage_info(stage_key(g, "start")).get("outcomes", {})
        since = {s: n - int(before.get(s, 0)) for s, n in outcomes.items()}
        sent = sum(since.values())
        if sent >= self.s.retrain_every or (drained and sent > 0):  # also when none labeled
            failure_pause(self.ctx, f"cycle {g + 1}", sent - since["labeled"], sent,
                          after=" since the last cycle")
        if new >= self.s.retrain_every or (drained and new > 0):
            self.ctx.say(f"  cycle {g + 1}: retraining on {new} new label(s) in the background")
            self.start(g + 1, outcomes)


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

    def advance(self, res: dict[str, Any]) -> bool:
        """After a segment: the next segment and sample numbers, and where to go on from
        (False: it stopped, and starts again from its seed structure)."""
        self.busy = False
        self.segment += 1
        self.sample += len(res["frames"])
        if res.get("end") is not None:
            self.positions, self.momenta = (np.asarray(x) for x in res["end"])
            return True
        self.positions = self.momenta = None
        self.restarts += 1
        return False


class Stream:
    """The schedule of one streaming campaign (see the module docstring): which task goes on
    a free worker slot next; the work itself is the stages' (explore, score, select, label)."""

    def __init__(self, ctx: Context):
        self.ctx, self.L, self.cfg = ctx, ctx.ledger, ctx.cfg
        self.s = stream_settings(ctx.cfg)
        self.ex = ctx.executor
        self.cycles = _Cycles(ctx, self.s)
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

    def run(self) -> None:
        s = self.s
        self.ctx.say(f"streaming: {s.total_budget} labels in all, a retrain every "
                     f"{s.retrain_every}; segments of {s.segment_steps} MD steps, "
                     f"{s.picks_per_segment} pick(s) each; {self.picked} picked so far, "
                     f"{len(self.queue)} queued")
        n = len(self.queue)
        self.queue = recover_spooled(self.ctx, self.queue, self._label_done)
        if len(self.queue) < n:
            self.ctx.say(f"  {n - len(self.queue)} finished label(s) recovered")
        try:
            while True:
                if self.cycles.error is not None:
                    raise self.cycles.error
                for job, res, err in self.ex.finished(timeout_s=0.5):
                    self._collect(job, res, err)
                self.cycles.maybe_start(self._drained())
                if self._finished():
                    break
                self._fill()
                self._progress()
        finally:
            self.ex.cancel_started()
        if self.cycles.thread is not None:
            self.cycles.thread.join()
            if self.cycles.error is not None:
                raise self.cycles.error

    def _drained(self) -> bool:
        return self.picked >= self.s.total_budget and not self.queue and not self.in_flight

    def _finished(self) -> bool:
        """Every label of the budget is done and the last cycle trained on all of them."""
        return (self._drained() and not self.scoring and not self.cycles.busy
                and self.cycles.labeled_since() == 0 and not any(w.busy for w in self.walkers))

    def _rate_allows(self) -> bool:
        rate = self.s.max_labels_per_hour
        if not rate:
            return True
        now = time.time()
        self.label_times = [t for t in self.label_times if now - t < 3600]
        return len(self.label_times) < rate

    def _fill(self) -> None:
        """Labels first (when the rate allows), else a walker segment, up to twice the worker
        threads: a queued task waits on the scheduler, ready the moment a worker frees (labels
        of 0.5 s would lose several per cent to a driver round trip); a retrain cycle's tasks
        still go first (higher priority)."""
        slots = 2 * (self.s.label_slots or self.ex.slots())
        mine = len(self.in_flight) + sum(w.busy for w in self.walkers) + sum(
            len(v["jobs"]) for v in self.scoring.values())
        while mine < slots:
            if self.queue and self._rate_allows():
                fid = self.queue.pop(0)
                self.in_flight.add(fid)
                self.label_times.append(time.time())
                self.ex.start(label_job(self.ctx, self.L.frames(fid=fid)[0], ("label", fid)))
            elif not (self.picked < self.s.total_budget and self._start_segment()):
                break
            mine += 1

    def _start_segment(self) -> bool:
        """Start the idle walker with the fewest segments; False when every walker runs."""
        idle = [w for w in self.walkers if not w.busy]
        if not idle:
            return False
        w = min(idle, key=lambda x: (x.segment, x.w))
        gen = self.cycles.ready()
        start = bare_copy(w.start)
        if w.positions is not None:
            start.positions = w.positions
        w.busy = True
        self.ex.start(walker_job(
            self.ctx, w.w, start, self.ctx.model(gen), self.ctx.arm.walker_probe(self.ctx, gen + 1),
            walker_settings(self.cfg, w.w, self.s.segment_steps),
            self.ctx.walker_seed(w.segment, "explore", w.w),
            f"segment-w{w.w}-s{w.segment}-r{w.restarts}", ("segment", w.w, w.segment, gen),
            resume=(w.momenta, w.sample)))
        return True

    def _label_done(self, fid: str, res: dict[str, Any]) -> None:
        record_label(self.ctx, fid, res, "stream")

    def _collect(self, job: Job, res: Any, err: BaseException | None) -> None:
        kind = job.tag[0]
        if kind == "label":
            fid = job.tag[1]
            self.in_flight.discard(fid)
            self._label_done(fid, failed_label(fid, err) if err is not None else res)
        elif kind == "segment":
            self._segment_done(job, walker_failed(err) if err is not None else res)
        elif kind == "score":
            seg = self.scoring[job.tag[1]]
            seg["results"][job.tag[2]] = res
            seg["jobs"].discard(job.key)
            if err is not None:
                seg["error"] = f"{type(err).__name__}: {err}"
            if not seg["jobs"]:
                self._scored(job.tag[1])

    def _segment_done(self, job: Job, res: dict[str, Any]) -> None:
        """A segment's frames become candidates, scored by the arm's per-candidate work."""
        _, w_index, segment, gen = job.tag
        w = self.walkers[w_index]
        frames = res["frames"]
        for a in frames:
            a.info.update(scored_by=gen, segment=segment, fid=a.info.get("fid") or frame_id(a))
        if not w.advance(res):
            self.ctx.say(f"  walker {w.w} segment {segment}: {res['stop_reason']}; restarting "
                         "from its seed structure")
        key = f"w{w.w}-s{segment}"
        jobs = self.ctx.arm.score_jobs(self.ctx, gen, frames, f"score-{key}") if frames \
            else []
        self.scoring[key] = {"frames": frames, "results": {}, "w": w, "gen": gen,
                             "jobs": {j.key for j in jobs}}
        for j in jobs:
            self.ex.start(Job(j.fn, j.args, kind=j.kind, key=j.key, tag=("score", key, j.tag),
                              account=j.account))
        if not jobs:
            self._scored(key)

    def _scored(self, key: str) -> None:
        """Candidates, the picks among them and the walker's new place: one transaction."""
        seg = self.scoring.pop(key)
        frames, w, gen = seg["frames"], seg["w"], seg["gen"]
        if "error" in seg:
            self.ctx.say(f"  segment {key}: scoring failed ({seg['error']}); its frames stay "
                         "candidates, none picked")
        elif seg["results"] or self.ctx.arm.scoring:
            for a, k in zip(frames, self.ctx.arm.score_keys(self.ctx, frames, seg["results"])):
                a.info.update(k)
        n = min(self.s.picks_per_segment, self.s.total_budget - self.picked)
        chosen, audit, calib = [], [], np.zeros(0, dtype=bool)
        if frames and n > 0 and "error" not in seg:
            n_audit = min(max(0, math.floor((self.picked + n) * self.s.audit_fraction)
                              - self.audited), n)
            rng = self.ctx.rng(gen + 1, "select", w.w, int(frames[0].info["segment"]))
            chosen, audit, calib, _ = choose(
                self.ctx, [dict(a.info) for a in frames], n - n_audit, n_audit, rng,
                self.ctx.rng(gen + 1, "select", w.w, int(frames[0].info["segment"]), 1),
                pooled_embeddings(frames))
        with self.L.transaction():
            if frames:
                self.L.add(frames, generation=gen + 1, origin="explore", status="candidate")
            mark_selected(self.L, chosen, audit, calib)
            self.L.mark_done(f"stream/walker{w.w:03d}", **w.record())
        self.picked += len(chosen) + len(audit)
        self.audited += len(audit)
        self.queue += chosen + audit

    def _progress(self) -> None:
        now = time.time()
        if now - self.t_say < 15:
            return
        self.t_say = now
        done = self.L.count(status="labeled") - self.L.count(status="labeled", split="test")
        train = (f"cycle {self.cycles.cycle} training" if self.cycles.busy else "no training")
        self.ctx.say(f"  [stream] picked {self.picked}/{self.s.total_budget}, {len(self.queue)} "
                     f"queued, {len(self.in_flight)} labeling, {done} labels in all; "
                     f"{sum(w.busy for w in self.walkers)} walker(s) running on generation "
                     f"{self.cycles.ready()}'s models; {train}")


def run_streaming(ctx: Context) -> None:
    """The streaming campaign after generation 0 (see the module docstring)."""
    from .stages.train import Committee

    if ctx.arm.committee_size() > 1:  # generation 0's committee, before the first segment
        execute(Committee(offset=-1), ctx, 1)
    Stream(ctx).run()
