"""The only holder of Dask futures: submit jobs, gather them as they complete, turn task
failures into data, account CPU and wall time, show progress.

A stage describes its tasks as :class:`Job` values (function, arguments, kind, key, tag) and
hands them to :meth:`Executor.run` with a callback per result; nothing outside this module sees
a future. Task keys are the campaign's prefix plus the job's key (content hashes for labels),
so a resubmission after a restart is harmless.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import AlprobeError

__all__ = ["Executor", "Job", "Progress", "TaskError", "span"]



class TaskError(AlprobeError):
    """A task failed and its stage cannot go on (a training or evaluation task); resumable."""


@dataclass(frozen=True)
class Job:
    """One task: ``fn(*args)`` on a worker offering the resources of ``kind`` (md, label,
    train, probe, evaluate), keyed ``key`` (unique per campaign), identified by ``tag`` in the
    result callback, CPU booked to ``account`` (default: the kind; md books to explore)."""

    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kind: str
    key: str
    tag: Any = None
    retries: int = 1
    account: str | None = None


class Progress:
    """One status per batch: a progress bar when ``log`` offers one (alprobe.console on a
    terminal; the finished batch then leaves one line), else a few lines (0, 25, 50, 75 and
    100 %)."""

    def __init__(self, log: Callable[[str], None] | None, label: str, total: int):
        self.log, self.label, self.total, self.done, self.failed = log, label, total, 0, 0
        self.t0 = time.perf_counter()
        self._last_pct = -1
        make = getattr(log, "bar", None)
        self.bar = make(label.strip(), total) if make is not None and total else None
        if self.bar is None:
            self._show()

    def step(self, failed: bool = False) -> None:
        self.done += 1
        self.failed += int(failed)
        if self.bar is None:
            self._show()
            return
        self.bar.update(self.done, self.failed)
        if self.done == self.total:
            self.bar.close()
            self.log(self._line())

    def _line(self) -> str:
        return (f"  {self.label}: {self.done}/{self.total}"
                + (f" ({self.failed} failed)" if self.failed else "")
                + f"  [{time.perf_counter() - self.t0:.0f} s]")

    def _show(self) -> None:
        if self.log is None:
            return
        pct = 100 * self.done // max(1, self.total)
        if self.done in (0, self.total) or pct >= self._last_pct + 25:
            self._last_pct = pct
            self.log(self._line())


class Executor:
    """Runs :class:`Job` batches on a ``distributed.Client``.

    ``resources``: worker resources per task kind (cluster.resources), checked to exist before
    the first task of a kind (waiting up to ``wait_s``). ``cpu``: task CPU seconds per account
    since the last :meth:`take_cpu`; ``spans``: task wall intervals per batch label.
    """

    def __init__(self, client: Any, *, key_prefix: str = "",
                 resources: dict[str, dict[str, float]] | None = None, wait_s: float = 60.0,
                 log: Callable[[str], None] | None = None, cpu: dict[str, float] | None = None):
        self.client, self.key_prefix, self.log = client, key_prefix, log
        self.resources, self.wait_s = dict(resources or {}), wait_s
        self.cpu: dict[str, float] = dict(cpu or {})
        self.spans: dict[str, list[tuple[float, float]]] = {}
        self._checked: set[str] = set()
        self._lock = threading.Lock()  # cpu and spans are booked from several threads
        self._thread = threading.local()  # per-thread submit priority
        self._flow: Any = None  # as_completed of the jobs started with start()
        self._started: dict[str, tuple[Any, Job]] = {}

    def run(self, jobs: Sequence[Job], label: str, on_result: Callable[[Any, Any], bool],
            on_error: Callable[[Any, BaseException], Any] | None = None) -> None:
        """Submit ``jobs`` and consume their results as they complete:
        ``on_result(tag, result) -> failed?`` (for the progress line). A task that raised (or
        whose workers kept dying: KilledWorker) goes to ``on_error(tag, exc)``, which turns it
        into a result; without on_error the batch stops with a one-line TaskError."""
        from distributed import as_completed

        futures = {}
        for job in jobs:
            fut = self._submit(job)
            futures[fut.key] = (fut, job)
        bar = Progress(self.log, label, len(futures))
        for fut in as_completed([f for f, _ in futures.values()]):
            job = futures[fut.key][1]
            try:
                res = fut.result()
            except Exception as exc:  # noqa: BLE001 - task failures are data or a clean stop
                if on_error is None:
                    for f, _ in futures.values():
                        f.cancel()
                    raise TaskError(f"{label}: task {fut.key} failed: "
                                    f"{type(exc).__name__}: {exc}") from exc
                res = on_error(job.tag, exc)
            self._book(job, res, label.split()[-1])
            bar.step(bool(on_result(job.tag, res)))

    def _book(self, job: Job, res: Any, span_label: str) -> None:
        """Book a result's task wall interval (under ``span_label``) and CPU seconds."""
        if not isinstance(res, dict):
            return
        with self._lock:
            if "t0" in res:
                self.spans.setdefault(span_label, []).append((res["t0"], res["t1"]))
            if "cpu_s" in res:
                acc = job.account or {"md": "explore"}.get(job.kind, job.kind)
                self.cpu[acc] = self.cpu.get(acc, 0.0) + float(res["cpu_s"])

    # ----- jobs that run while the caller goes on (the streaming schedule) -------------------
    def start(self, job: Job) -> None:
        """Submit ``job`` now; its outcome comes back from :meth:`finished`."""
        from distributed import as_completed

        fut = self._submit(job)
        self._started[fut.key] = (fut, job)
        if self._flow is None:
            self._flow = as_completed([fut])
        else:
            self._flow.add(fut)

    @property
    def running(self) -> list[Job]:
        """Jobs started with :meth:`start` whose outcome has not been collected yet."""
        return [job for _, job in self._started.values()]

    def slots(self) -> int:
        """Worker threads of the cluster now (tasks it can run at once; 1 if the scheduler
        does not answer, so that one task keeps going)."""
        try:
            info = self.client.scheduler_info()["workers"]
            return max(1, sum(int(w.get("nthreads", 1)) for w in info.values()))
        except Exception:  # noqa: BLE001 - a scheduler hiccup: keep one task going
            return 1

    def finished(self, timeout_s: float = 1.0) -> list[tuple[Job, Any, BaseException | None]]:
        """Outcomes of started jobs that ended: (job, result, None) or (job, None, exception);
        waits up to ``timeout_s`` for the first one (an empty list when none ended)."""
        if self._flow is None or not self._started:
            time.sleep(min(timeout_s, 0.05))
            return []
        out = []
        try:
            batch = self._flow.next_batch(block=False)
            if not batch:
                t_end = time.monotonic() + timeout_s
                while not batch and time.monotonic() < t_end and self._started:
                    time.sleep(0.02)
                    batch = self._flow.next_batch(block=False)
        except StopIteration:
            batch = []
        for fut in batch:
            if fut.key not in self._started:
                continue
            job = self._started.pop(fut.key)[1]
            try:
                res, err = fut.result(), None
            except Exception as exc:  # noqa: BLE001 - failures are data for the caller
                res, err = None, exc
            self._book(job, res, job.kind)
            out.append((job, res, err))
        return out

    def cancel_started(self) -> None:
        """Cancel every started job not yet collected (the driver stops)."""
        for fut, _ in self._started.values():
            fut.cancel()
        self._started.clear()
        self._flow = None

    def _submit(self, job: Job) -> Any:
        from .cluster import wait_for_resources

        resources = dict(self.resources.get(job.kind, {}))
        if job.kind not in self._checked:
            wait_for_resources(self.client, job.kind, resources, self.wait_s)
            self._checked.add(job.kind)
        return self.client.submit(job.fn, *job.args, key=self.key_prefix + job.key,
                                  retries=job.retries, pure=False, resources=resources or None,
                                  priority=getattr(self._thread, "priority", 0))

    def set_priority(self, priority: int) -> None:
        """Dask priority of every job this thread submits from now on (higher runs first
        among queued tasks; a streaming campaign's retrain cycle goes before labels and MD)."""
        self._thread.priority = priority

    def cpu_snapshot(self) -> dict[str, float]:
        """A copy of the CPU seconds per account (safe while other threads book)."""
        with self._lock:
            return dict(self.cpu)

    def take_cpu(self) -> dict[str, float]:
        """The CPU seconds per account so far; the account starts again from zero."""
        with self._lock:
            out, self.cpu = self.cpu, {}
        return out

    def take_spans(self) -> float:
        """Seconds during which some task of each batch label ran (union of intervals, summed
        over labels) since the last call."""
        with self._lock:
            spans, self.spans = self.spans, {}
        return float(sum(span(v) for v in spans.values()))


def span(intervals: list[tuple[float, float]]) -> float:
    """Length of the union of [t0, t1] intervals (s)."""
    total, end = 0.0, float("-inf")
    for t0, t1 in sorted(intervals):
        if t0 > end:
            total += t1 - t0
            end = t1
        elif t1 > end:
            total += t1 - end
            end = t1
    return total
