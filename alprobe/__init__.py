"""alprobe: active learning for MACE potentials with PROBE reliability scores, PySCF labels
and Dask scheduling.

Python API (heavy modules are imported only when used)::

    import alprobe
    cfg = alprobe.load_campaign("campaigns/quickstart.yaml")
    result = alprobe.run(cfg, "runs/quickstart")       # or alprobe.resume("runs/quickstart")
    ledger = alprobe.open_ledger("runs/quickstart")
    print(ledger.metrics())                             # one dict per generation
"""

from __future__ import annotations

from typing import Any

from .config import CampaignConfig, ConfigError, load_campaign
from .version import __version__

__all__ = ["CampaignConfig", "ConfigError", "TrustCalculator", "__version__", "compare",
           "load_campaign", "open_ledger", "resume", "run", "status_table", "write_report"]


def __getattr__(name: str) -> Any:
    if name == "TrustCalculator":  # imports torch and mace: only when asked for
        from .trust import TrustCalculator

        return TrustCalculator
    raise AttributeError(f"module 'alprobe' has no attribute {name!r}")


def compare(comparison: Any, directory: Any, **kwargs: Any) -> Any:
    """Run (or continue) a comparison of arms; see alprobe.comparison.run_comparison."""
    from .comparison import run_comparison

    return run_comparison(comparison, directory, **kwargs)


def run(config: Any, directory: Any, **kwargs: Any) -> Any:
    """Run (or continue) a campaign in ``directory``; see alprobe.campaign.run_campaign."""
    from .campaign import run_campaign

    return run_campaign(config, directory, **kwargs)


def resume(directory: Any, **kwargs: Any) -> Any:
    """Resume the campaign stored in ``directory``; see alprobe.campaign.resume_campaign."""
    from .campaign import resume_campaign

    return resume_campaign(directory, **kwargs)


def open_ledger(directory: Any, writable: bool = False) -> Any:
    """The campaign's ledger (frames, labels, stage records, metrics), read-only unless
    ``writable``; see alprobe.ledger.Ledger. Safe while a campaign runs in ``directory``."""
    from .ledger import Ledger

    return Ledger(directory, readonly=not writable)


def status_table(directory: Any) -> str:
    """The per-generation table that ``alprobe status`` prints."""
    from .report import status_table as _table

    return _table(directory)


def write_report(directory: Any) -> Any:
    """Write ``directory/report.html`` (the page ``alprobe report`` writes) and return its
    path; see alprobe.report.write_report."""
    from .report import write_report as _write

    return _write(directory)
