"""What every stage needs: the campaign's config, folder, ledger, executor, arm and data."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..arms import Arm, make_arm
from ..config import CampaignConfig
from ..errors import CampaignError
from ..executor import Executor, Job
from ..frames import load_seeds
from ..ledger import Ledger
from ..records import stage_key

__all__ = ["STREAMS", "Context"]

#: The random stream of each stage: np.random.default_rng([seed, generation, code, ...]).
STREAMS = {"rattle": 1, "bootstrap_md": 2, "split": 3, "explore": 4, "select": 5, "train": 6,
           "probe": 7, "test_md": 8, "evaluate": 9, "test_md_retry": 10, "stress_md": 11,
           "stress_md_retry": 12, "stability": 13, "crossfit": 14, "replay": 15}


class Context:
    """One campaign folder at work: ``cfg``, ``dir``, ``ledger``, ``executor``, ``arm``,
    ``pool`` (a labeled pool, or None), ``seeds`` (seed structures), ``level`` (the DFT
    level), ``log`` and ``accept_failures``."""

    def __init__(self, cfg: CampaignConfig, directory: Path, client: Any,
                 log: Callable[[str], None] | None, accept_failures: bool = False,
                 key_prefix: str = ""):
        from ..validate import dft_level

        self.cfg, self.dir, self.log = cfg, directory, log
        self.accept_failures = accept_failures
        self.ledger = Ledger(directory, create=True)
        # task CPU of the generation in progress is kept in the ledger: a stop loses none
        cpu = {k: float(v) for k, v in self.ledger.stage_info("cpu_pending").items()}
        self.executor = Executor(client, key_prefix=key_prefix,
                                 resources=cfg.cluster.resources,
                                 wait_s=cfg.cluster.wait_for_resources_s, log=log, cpu=cpu)
        self.arm: Arm = make_arm(cfg)
        self.seeds = load_seeds(cfg.system.seeds, cfg.source_dir) if cfg.system else []
        self.level = dft_level(cfg)
        self.pool = None
        if cfg.pool is not None:
            from ..pool import read_pool

            self.pool = read_pool(cfg.pool, cfg.source_dir)
        self.driver_cpu = time.thread_time()  # the driver's own CPU (one thread per run)

    def say(self, msg: str) -> None:
        if self.log is not None:
            self.log(msg)

    def run(self, jobs: Sequence[Job], label: str, on_result: Callable[[Any, Any], bool],
            on_error: Callable[[Any, BaseException], Any] | None = None) -> None:
        """Run a batch of jobs (see Executor.run) and keep its task CPU in the ledger."""
        from ..executor import TaskError

        try:
            self.executor.run(jobs, label, on_result, on_error)
        except TaskError as exc:
            raise CampaignError(str(exc)) from exc
        if jobs:
            self.ledger.mark_done("cpu_pending", **self.executor.cpu_snapshot())

    def one(self, job: Job, label: str | None = None) -> Any:
        """Run one job (see run) and return its result."""
        out: list[Any] = []
        self.run([job], label or job.key, lambda _tag, r: out.append(r) or False)
        return out[0]

    # ----- seed streams
    def _entropy(self, gen: int, stage: str, extra: Sequence[int]) -> list[int]:
        rep = [self.cfg.replica] if self.cfg.replica else []
        return [self.cfg.seed, gen, STREAMS[stage], *extra, *rep]

    def rng(self, gen: int, stage: str, *extra: int) -> np.random.Generator:
        """The stream of one stage; a replica (cfg.replica > 0) has streams of its own (MD,
        selection, training, probe; in a pool campaign also its initial set and test split)."""
        return np.random.default_rng(self._entropy(gen, stage, extra))

    def seed(self, gen: int, stage: str, *extra: int) -> int:
        """Integer seed (0 <= s < 2**31) of a training run of ``stage`` ("train" for backbone
        members, "probe"), from the same SeedSequence as rng(gen, stage, *extra)."""
        state = np.random.SeedSequence(self._entropy(gen, stage, extra))
        return int(state.generate_state(1)[0] % 2**31)

    def walker_seed(self, gen: int, stream: str, walker: int, *extra: int) -> list[int]:
        return self._entropy(gen, stream, [walker, *extra])

    # ----- folder and records
    def model_dir(self, gen: int) -> Path:
        d = self.dir / "models" / f"gen_{gen:03d}"
        d.mkdir(parents=True, exist_ok=True)
        return d

    def model(self, gen: int) -> str:
        """The backbone model file of generation ``gen``."""
        return self.ledger.stage_info(stage_key(gen, "train"))["path"]

    def committee_paths(self, gen: int) -> list[str]:
        """Model files of the committee of generation ``gen``: the backbone first."""
        return ([self.model(gen)]
                + list(self.ledger.stage_info(stage_key(gen, "committee")).get("members", [])))

    def lineage(self, gen: int) -> set[str]:
        """Ids of every frame any backbone up to generation ``gen`` trained on (a probe of
        generation ``gen`` must not learn from their errors)."""
        seen: set[str] = set()
        for g in range(gen + 1):
            seen |= set(self.ledger.stage_info(stage_key(g, "train")).get("train_ids", []))
        return seen

    def tau(self) -> float | None:
        """The unreliability threshold of generation 0 (error units of probe.error; recorded
        even when probe 0 could not be trained), shared by every arm of a comparison; None if
        generation 0 had no out-of-sample frame."""
        t = self.ledger.stage_info("gen000/probe").get("threshold")
        return None if t is None else float(t)
