"""The stages of a campaign, one object each: a name, a key per generation, and a ``run`` that
returns what is recorded.

:func:`execute` runs a stage unless its record exists, and writes the rows the stage produced
and its record in one ledger transaction (a kill between them cannot happen). Generation 0's
stages are in :mod:`.initial`; a later generation runs :mod:`.explore`, the arm's per-candidate work
(:mod:`.score`), :mod:`.select`, :mod:`.label`, :mod:`.train`, then, like generation 0,
:mod:`.probe`, :mod:`.evaluate` and :mod:`.metrics`. :class:`Context` carries what every stage
needs (config, folder, ledger, executor, arm, pool, seed streams).
"""

from __future__ import annotations

from .base import CampaignError, CampaignPaused, Commit, Stage, Together, execute, execute_all
from .context import Context

__all__ = ["CampaignError", "CampaignPaused", "Commit", "Context", "Stage", "Together",
           "execute", "execute_all"]
