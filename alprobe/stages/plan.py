"""What happens after a batch of labels, in both schedules: the retrain stages."""

from __future__ import annotations

from .base import Stage
from .evaluate import Audit, Evaluate
from .metrics import Metrics
from .probe import Probe
from .train import Committee, Train

__all__ = ["retrain_stages"]


def retrain_stages() -> list[Stage]:
    """Backbone (and committee), then probe, test-set evaluation, audit and the metrics row:
    the end of a generation, and a streaming retrain cycle."""
    return [Train(), Committee(), Probe(), Evaluate(), Audit(), Metrics()]
