"""The campaign: its folder, resume, and the stages of every generation in order.

Generation 0 builds the data (rattled seeds, a bootstrap backbone's MD, the held-out test set
from test walkers, or a labeled pool's initial set and test split) and backbone 0; generation
g >= 1 explores with backbone g-1 (walkers scored by the arm's probe), runs the arm's
per-candidate work, selects, labels, trains backbone g, then trains probe g, evaluates,
audits and writes the generation's metrics row. Each stage is recorded with its rows in one
ledger transaction, and a resumed campaign skips every recorded stage.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import CampaignConfig, ConfigError, load_campaign, parse_campaign
from .files import atomic_write
from .folder import prepare_folder, record_environment
from .records import stage_key
from .stages import CampaignError, CampaignPaused, Context, Stage, Together, execute_all
from .validate import campaign_problems, check_campaign

__all__ = ["CampaignError", "CampaignPaused", "CampaignResult", "campaign_problems",
           "check_campaign", "noise_floor", "plan", "prepare_folder", "resume_campaign",
           "run_campaign", "run_in_folder"]


@dataclass
class CampaignResult:
    """What run_campaign returns: the folder and the per-generation metrics."""

    directory: Path
    metrics: list[dict[str, Any]]


def plan(ctx: Context, gen: int) -> list[Stage | Together]:
    """The stages of generation ``gen``, in order (each skips itself where it does not
    apply: the prospective stages in a pool campaign, the committee for a one-model arm)."""
    from .stages.evaluate import Audit, Evaluate
    from .stages.explore import Explore
    from .stages.initial import (
        Bootstrap,
        BootstrapTrain,
        InitialLabels,
        PoolStart,
        Rattle,
        Split,
        StressLabeled,
        StressWalkers,
        TestWalkers,
        TrainBackbone0,
    )
    from .stages.label import Label
    from .stages.metrics import Metrics
    from .stages.plan import retrain_stages
    from .stages.probe import Probe
    from .stages.score import Score
    from .stages.select import FailureCeiling, Select
    from .stages.train import Committee

    after = [Probe(), Evaluate(), Audit(), Metrics()]
    if gen == 0:
        if ctx.pool is not None:
            return [PoolStart(), TrainBackbone0(), *after]
        # the test set (walkers of its own, then labels) beside backbone 0's training
        return [Rattle(), Label("label_rattle"), BootstrapTrain(), Bootstrap(),
                Label("label_md"), Split(),
                Together([TrainBackbone0()], [TestWalkers(), StressWalkers(),
                                              Label("label_test"), StressLabeled()]),
                InitialLabels(), *after]
    score = [Score(ctx.arm.scoring)] if ctx.arm.scoring else []
    return [Committee(offset=-1), Explore(), *score, Select(), Label(), FailureCeiling(),
            *retrain_stages()]


def run_in_folder(cfg: CampaignConfig, directory: Path, client: Any,
                  log: Callable[[str], None] | None, accept_failures: bool = False,
                  key_prefix: str = "", stability: bool = True) -> CampaignResult:
    """Run the campaign in a prepared ``directory`` (see prepare_folder) on ``client``; task
    keys start with ``key_prefix`` (runs sharing a cluster keep theirs apart). ``stability``:
    measure the final model's MD stability at the end (a comparison's shared generation-0
    folders do not)."""
    from .console import with_log_file

    log = with_log_file(log, directory / "alprobe.log")  # the folder keeps every message
    ctx = Context(cfg, directory, client, log, accept_failures, key_prefix)
    record_environment(directory, ctx.executor)
    L = ctx.ledger
    if cfg.schedule == "streaming":
        from .streaming import run_streaming

        _generation(ctx, 0)
        run_streaming(ctx)
    else:
        for gen in range(cfg.generations + 1):
            _generation(ctx, gen)
    if stability:
        _stability(ctx)
    ctx.say(f"campaign {cfg.name} finished: {directory}")
    return CampaignResult(directory, L.metrics())


def _stability(ctx: Context) -> None:
    """The final model's MD stability (stages.stability), once, after the last generation."""
    from .stages.base import execute
    from .stages.stability import Stability

    rows = ctx.ledger.metrics()
    if rows:
        execute(Stability(), ctx, int(rows[-1]["generation"]))


def _generation(ctx: Context, gen: int) -> None:
    """Run generation ``gen``'s stages that are not yet done."""
    L = ctx.ledger
    if L.done(stage_key(gen, "done")):
        return
    if not L.done(stage_key(gen, "start")):
        L.mark_done(stage_key(gen, "start"), t=time.time())
    ctx.say(f"generation {gen}" + (" (initial data, backbone, probe)" if gen == 0 else ""))
    execute_all(plan(ctx, gen), ctx, gen)
    L.mark_done(stage_key(gen, "done"))


def run_campaign(config: CampaignConfig | str | Path, directory: str | Path, *,
                 log: Callable[[str], None] | None = print, client: Any = None,
                 allow_changes: bool = False, accept_failures: bool = False) -> CampaignResult:
    """Run a campaign in ``directory`` (created if needed); continue it if it was started.

    config: a CampaignConfig or the path of a campaign file. client: an existing
    ``distributed.Client`` to use instead of the campaign's cluster section.
    allow_changes: continue a folder whose stored science settings differ. accept_failures:
    train on the good labels of a generation that crossed ``select.max_failed_fraction``.
    Returns the folder and its per-generation metrics.
    """
    cfg = config if isinstance(config, CampaignConfig) else load_campaign(config)
    problems = check_campaign(cfg)
    if problems:
        raise ConfigError(problems, cfg.name)
    directory = Path(directory).resolve()  # workers may run elsewhere: absolute paths only
    prepare_folder(cfg, directory, allow_changes)
    if client is None:
        from .cluster import open_client

        with open_client(cfg.cluster, log=log or (lambda _m: None), folder=directory) as c:
            return run_in_folder(cfg, directory, c, log, accept_failures)
    return run_in_folder(cfg, directory, client, log, accept_failures)


def resume_campaign(directory: str | Path, **kwargs: Any) -> CampaignResult:
    """Continue the campaign stored in ``directory`` with its stored campaign file."""
    from .folder import check_folder, read_stored_campaign

    directory = Path(directory)
    data = read_stored_campaign(directory)
    check_folder(directory)  # earlier work without a ledger, a damaged ledger: refused here
    source_dir = data.pop("source_dir", ".")
    if not isinstance(source_dir, str):
        source_dir = "."
    return run_campaign(parse_campaign(data, source_dir, str(directory / "campaign.yaml")),
                        directory, **kwargs)


def noise_floor(cfg: CampaignConfig, directory: Path, client: Any, seeds: int, out_path: Path,
                log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The training noise of the finished campaign in ``directory`` (see
    stages.train.noise_floor), also written to ``out_path`` (JSON)."""
    from .stages.train import noise_floor as measure

    ctx = Context(cfg, Path(directory), client, log, key_prefix=f"{cfg.name}-noise-")
    info = measure(ctx, seeds)
    atomic_write(out_path, json.dumps(info, indent=1))
    return info
