"""Labeling: PySCF energy and forces for every selected frame, each written the moment it
arrives; a pool campaign looks its labels up instead (each one still counts as a DFT call)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..executor import Job
from ..frames import bare_copy
from .base import Commit, Stage
from .context import Context

__all__ = ["LABEL_OUTCOMES", "Label", "read_spooled_label"]

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


def _record(ctx: Context, fid: str, r: dict[str, Any], stage: str = "label") -> bool:
    """Write one label result to the ledger (``label_stage``: the stage that sent it); True if
    it is not a label."""
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


def _crashed(fid: str, exc: BaseException) -> dict[str, Any]:
    kind = type(exc).__name__
    why = (f"worker died on this structure repeatedly ({kind})" if kind == "KilledWorker"
           else f"label task error: {kind}: {exc}")
    return {"status": "failed", "reason": " ".join(why.split())[:300], "wall_s": 0.0,
            "attempts": []}


class Label(Stage):
    """Label every selected, not yet labeled frame of the generation; ``name`` is the stage
    (``label``, or generation 0's ``label_rattle`` / ``label_md``). Labels that a worker
    finished before a stop are taken from the spool, never computed twice."""

    def __init__(self, name: str = "label"):
        self.name = name

    def run(self, ctx: Context, gen: int) -> Commit:
        from ..tasks import label_task

        todo = ctx.ledger.frames(generation=gen, status="selected")
        t0 = time.perf_counter()
        dft_s = [0.0]

        def record(fid: str, r: dict[str, Any]) -> bool:
            dft_s[0] += r["wall_s"]
            return _record(ctx, fid, r, self.name)

        if ctx.pool is not None:
            with ctx.ledger.transaction():
                for a in todo:
                    e, f = ctx.pool.label(a.info["fid"])
                    record(a.info["fid"], {"status": "ok", "energy": e, "forces": f,
                                           "reason": "", "wall_s": 0.0, "attempts": []})
            todo = []
        spool = ctx.dir / "spool"
        spool.mkdir(exist_ok=True)
        pending = []
        for a in todo:
            r = read_spooled_label(spool, a.info["fid"])
            if r is not None:
                record(a.info["fid"], r)
            else:
                pending.append(a)
        if len(pending) < len(todo):
            ctx.say(f"  gen {gen}: {len(todo) - len(pending)} finished label(s) recovered")
        jobs = [Job(label_task, (bare_copy(a), ctx.level, str(spool)), kind="label",
                    key=f"label-{a.info['fid']}", tag=a.info["fid"], retries=2)
                for a in pending]
        ctx.run(jobs, f"gen {gen} label", record, on_error=_crashed)
        # this stage's frames (also those a stopped run of it labeled before the stop)
        mine = ctx.ledger.keys(generation=gen, label_stage=self.name)
        counts = {s: sum(k["status"] == s for k in mine) for s in LABEL_OUTCOMES}
        for k in mine:
            if k["status"] != "labeled":
                ctx.say(f"  label {k['fid']} {k['status']}: {k.get('reason', '')}")
        return Commit({**counts, "wall_s": time.perf_counter() - t0, "dft_s": dft_s[0]})
