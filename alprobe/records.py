"""Names shared by every layer, kept in one place: the stages of a generation (their order, and
which of them book task CPU), the ledger's stage-record keys, and the kinds of walker stops.

Nothing here imports alprobe: any module may use it.
"""

from __future__ import annotations

import re

__all__ = ["ACCOUNTS", "STAGES", "STOP_KINDS", "parse_stage_key", "stage_key", "stop_kind"]

#: The stages of a generation in running order. A metrics row records the driver's wall time in
#: each (``<stage>_s``, seconds); the cost tables and figures list them in this order.
STAGES = ("explore", "deviation", "latent", "oracle", "select", "label", "train", "committee",
          "probe", "evaluate", "audit")

#: The stages whose tasks book CPU time to an account of their own (``<account>_cpu_s``); the
#: others run in the driver (select, oracle) or book to another (the committee trains as
#: ``train``). The driver's own thread is the extra account ``driver``.
ACCOUNTS = ("explore", "deviation", "latent", "label", "train", "probe", "evaluate", "audit")

#: Kinds of a walker's stop reason (alprobe.explore), in the order figures stack them; a reason
#: starts with its kind's words, except ``other`` (e.g. a walker task that failed).
STOP_KINDS = ("completed", "low trust", "unphysical", "MD error", "other")

_KEY = re.compile(r"gen(\d{3,})/(.+)")


def stage_key(gen: int, name: str) -> str:
    """The ledger key of stage ``name``'s record for generation ``gen`` (``gen007/train``)."""
    return f"gen{int(gen):03d}/{name}"


def parse_stage_key(key: str) -> tuple[int, str] | None:
    """(generation, stage name) of a stage-record key, or None for another key."""
    m = _KEY.fullmatch(key)
    return (int(m.group(1)), m.group(2)) if m else None


def stop_kind(reason: str) -> str:
    """The kind (one of :data:`STOP_KINDS`) of a walker's stop reason."""
    for kind in STOP_KINDS[:-1]:
        if reason.startswith(kind):
            return kind
    return "other"
