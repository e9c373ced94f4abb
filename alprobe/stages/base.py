"""Stage, Commit and execute: the pattern "unless done: do it; record it with its rows"."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import CampaignError, CampaignPaused
from ..records import stage_key

if TYPE_CHECKING:
    from ..ledger import Ledger
    from .context import Context

__all__ = ["CampaignError", "CampaignPaused", "Commit", "Stage", "Together", "execute",
           "execute_all"]


@dataclass
class Commit:
    """What a stage produced: its record (plain JSON values), the rows to write with it
    (``rows(ledger)``, called inside the same transaction), and records of other keys that
    belong to the same step (e.g. the committee trained with the backbone)."""

    record: dict[str, Any] = field(default_factory=dict)
    rows: Callable[[Ledger], None] | None = None
    also: dict[str, dict[str, Any]] = field(default_factory=dict)


class Stage:
    """One step of a generation. ``name`` makes the key ``genNNN/<name>``; ``offset`` shifts
    the generation it records (-1: a step for the previous generation, run at the start of
    this one). ``run(ctx, gen)`` does the work (tasks through ``ctx.run``) and returns a
    Commit; it may write rows itself only where each row must land the moment it exists
    (labels). ``applies(ctx, gen)``: False skips the stage for this campaign or generation."""

    name = ""
    offset = 0

    def key(self, gen: int) -> str:
        return stage_key(gen + self.offset, self.name)

    def applies(self, ctx: Context, gen: int) -> bool:
        return True

    def run(self, ctx: Context, gen: int) -> Commit:
        raise NotImplementedError


def execute(stage: Stage, ctx: Context, gen: int) -> dict[str, Any]:
    """Run ``stage`` for generation ``gen`` unless its record exists; commit its rows and
    records in one transaction. Returns the record."""
    key = stage.key(gen)
    if ctx.ledger.done(key):
        return ctx.ledger.stage_info(key)
    if not stage.applies(ctx, gen):
        return {}
    import time

    t_start = time.time()
    out = stage.run(ctx, gen)
    record = {**out.record, "t_start": t_start, "t_end": time.time()}  # epoch seconds
    with ctx.ledger.transaction():
        if out.rows is not None:
            out.rows(ctx.ledger)
        for other, info in out.also.items():
            ctx.ledger.mark_done(other, **info)
        ctx.ledger.mark_done(key, **record)
    return record


class Together:
    """Branches of stages that need nothing of each other, run at the same time: each branch in
    order in a thread of its own (their tasks share the workers; e.g. backbone 0 trains while
    the test set is labeled)."""

    def __init__(self, *branches: list[Stage]):
        self.branches = branches


def execute_all(stages: list[Stage | Together], ctx: Context, gen: int) -> None:
    """Execute ``stages`` in order (a Together's branches at once); the first error of a
    branch is raised after every branch stopped."""
    import threading

    for stage in stages:
        if not isinstance(stage, Together):
            execute(stage, ctx, gen)
            continue
        errors: list[BaseException] = []

        def branch(stages: list[Stage]) -> None:
            try:
                for st in stages:
                    execute(st, ctx, gen)
            except BaseException as exc:  # noqa: BLE001 - raised below, after the others
                errors.append(exc)

        threads = [threading.Thread(target=branch, args=(b,), daemon=True)
                   for b in stage.branches]
        for t in threads:
            t.start()
        for t in threads:
            while t.is_alive():
                t.join(0.5)
        if errors:
            raise errors[0]
