"""Labeling: PySCF energy and forces for every selected frame, each written the moment it
arrives; a pool campaign looks its labels up instead (each one still counts as a DFT call)."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from ..executor import Job
from ..frames import bare_copy
from .base import Commit, Stage
from .context import Context

__all__ = ["LABEL_OUTCOMES", "Label", "failed_label", "label_job", "read_spooled_label",
           "record_label", "recover_spooled"]

#: Final statuses of a frame sent to DFT (only "labeled" is ever trained on).
LABEL_OUTCOMES = ("labeled", "failed", "rejected", "timeout")


def read_spooled_label(spool: Path, fid: str) -> dict[str, Any] | None:
    """A label result a worker wrote to ``spool/<fid>.json`` (plain JSON), or None."""
    path = spool / f"{fid}.json"
    if not path.is_file():
        return None
    try:
        r = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None  # a torn file cannot exist (atomic rename), but never trust one
    if r.get("forces") is not None:
        r["forces"] = np.asarray(r["forces"], dtype=float)
    return r


def record_label(ctx: Context, fid: str, r: dict[str, Any], stage: str = "label") -> bool:
    """Write one label result to the ledger (``label_stage``: the stage that sent it); True if
    it is not a label (failed, rejected, timeout: recorded with its reason, never trained
    on)."""
    attempts = {"attempts": " | ".join(r["attempts"])} if r["attempts"] else {}
    if r["status"] == "ok":
        note = {"reason": r["reason"]} if r["reason"] else {}
        ctx.ledger.update(fid, status="labeled", ref_energy=r["energy"], label_s=r["wall_s"],
                          label_stage=stage,
                          data={"ref_forces": np.asarray(r["forces"], dtype=float)},
                          **note, **attempts)
        return False
    ctx.ledger.update(fid, status=r["status"], reason=r["reason"] or "unknown",
                      label_s=r["wall_s"], label_stage=stage, **attempts)
    return True


def failed_label(fid: str, exc: BaseException) -> dict[str, Any]:
    """The label result of a task that raised (or whose worker died on it repeatedly)."""
    kind = type(exc).__name__
    why = (f"worker died on this structure repeatedly ({kind})" if kind == "KilledWorker"
           else f"label task error: {kind}: {exc}")
    return {"status": "failed", "reason": " ".join(why.split())[:300], "wall_s": 0.0,
            "attempts": []}


def label_job(ctx: Context, frame: Atoms, tag: Any) -> Job:
    """The PySCF label task of ``frame`` (keyed by its content id; the worker spools its
    result to ``<folder>/spool`` before returning it)."""
    from ..tasks import label_task

    return Job(label_task, (bare_copy(frame), ctx.level, str(ctx.dir / "spool")), kind="label",
               key=f"label-{frame.info['fid']}", tag=tag, retries=2)


def recover_spooled(ctx: Context, fids: Sequence[str], record: Any) -> list[str]:
    """Labels a worker finished before a stop, from the spool (never computed again): each
    passed to ``record(fid, result)``; the fids still to label."""
    spool = ctx.dir / "spool"
    spool.mkdir(exist_ok=True)
    left = []
    for fid in fids:
        r = read_spooled_label(spool, fid)
        if r is None:
            left.append(fid)
        else:
            record(fid, r)
    return left


class Label(Stage):
    """Label every selected, not yet labeled frame of the generation; ``name`` is the stage
    (``label``, or generation 0's ``label_rattle`` / ``label_md``). Labels that a worker
    finished before a stop are taken from the spool, never computed twice."""

    def __init__(self, name: str = "label"):
        self.name = name

    def run(self, ctx: Context, gen: int) -> Commit:
        todo = ctx.ledger.frames(generation=gen, status="selected")
        t0 = time.perf_counter()
        dft_s = [0.0]

        def record(fid: str, r: dict[str, Any]) -> bool:
            dft_s[0] += r["wall_s"]
            return record_label(ctx, fid, r, self.name)

        if ctx.pool is not None:
            with ctx.ledger.transaction():
                for a in todo:
                    e, f = ctx.pool.label(a.info["fid"])
                    record(a.info["fid"], {"status": "ok", "energy": e, "forces": f,
                                           "reason": "", "wall_s": 0.0, "attempts": []})
            todo = []
        left = set(recover_spooled(ctx, [a.info["fid"] for a in todo], record))
        pending = [a for a in todo if a.info["fid"] in left]
        if len(pending) < len(todo):
            ctx.say(f"  gen {gen}: {len(todo) - len(pending)} finished label(s) recovered")
        jobs = [label_job(ctx, a, a.info["fid"]) for a in pending]
        ctx.run(jobs, f"gen {gen} label", record, on_error=failed_label)
        # this stage's frames (also those a stopped run of it labeled before the stop)
        mine = ctx.ledger.keys(generation=gen, label_stage=self.name)
        counts = {s: sum(k["status"] == s for k in mine) for s in LABEL_OUTCOMES}
        for k in mine:
            if k["status"] != "labeled":
                ctx.say(f"  label {k['fid']} {k['status']}: {k.get('reason', '')}")
        return Commit({**counts, "wall_s": time.perf_counter() - t0, "dft_s": dft_s[0]})
