"""Comparisons of acquisition strategies ("arms") under one DFT budget: ``alprobe compare``.

A comparison file names the shared settings (a campaign file, an inline campaign, or just a
labeled pool) and the arms. An arm may change only its selection rule (and sampling), its
committee and its probe settings (``probe:``, a variant of the signal; generation 0's probe,
which picks generation 1, is the shared campaign's); everything else (system or pool, DFT level, initial data, walkers, budget, backbone,
generations, seed) is shared::

    name: ethanol_arms
    campaign: quickstart.yaml        # path relative to this file; or `shared: {...}` inline
    replicas: 3                      # every arm runs 3 times, replica r sharing r's seeds
    target_force_mae_meV_A: 80       # for "labels needed to reach it"
    arms:
      probe: {}                      # the shared campaign's rule (probe by default)
      ensemble: {select: {rule: ensemble}, committee: {members: 4}}
      random: {select: {rule: random}}

A file that names only a pool (``pool: {file, energy_key, forces_key, group_key}``) runs the
three strategies above on it with the pool defaults (:data:`POOL_DEFAULTS`: 5 replicas, 6
generations).

**Replicas.** Replica r of every strategy shares r's seeds (MD walkers, selection, training,
probe), so strategies are compared replica by replica (``alprobe.paired``). Generation 0 (the
initial labels, the held-out test set, backbone 0, probe 0) runs once per replica in a pool
comparison (each replica has its own initial set and test split), and once for all replicas
in a prospective one (DFT is expensive; the test set is fixed). Every arm starts from a copy of
its generation 0 in ``<dir>/arms/<arm>`` (``<arm>-r<r>`` with several replicas). All runs go
on one Dask cluster at once (one driver thread each; task keys carry the run's name).

**Noise floor.** Afterwards the final training set of replica 0 of the first arm is trained
again with ``noise_floor_seeds`` other seeds; the spread of their test force MAE is the
smallest difference the comparison can detect, reported in the summary.

Outputs: ``learning_curves.{csv,png}``, ``costs.csv``, ``noise_floor.json`` and
``summary.md`` in ``<dir>`` (written by :mod:`alprobe.report`), beside ``comparison.yaml``
(the resolved comparison) and ``comparison.json`` (its plan, which the report reads).
"""

from __future__ import annotations

import math
import os
import re
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .config import CampaignConfig, ConfigError, parse_campaign, read_yaml
from .errors import AlprobeError
from .report import ComparisonPlan, RunInfo
from .report import write_comparison_outputs as write_outputs

__all__ = ["POOL_DEFAULTS", "Comparison", "ComparisonError", "ComparisonResult",
           "comparison_plan", "load_comparison", "parse_comparison", "run_comparison",
           "strategy", "write_comparison_outputs"]

#: What an arm may set: {section: allowed keys (None: the whole section)}.
ARM_KEYS: dict[str, set[str] | None] = {"select": {"rule", "sampling", "power", "hold_out",
                                                    "diversity", "shortlist"},
                                        "committee": None, "probe": None}
_TOP = {"name", "campaign", "shared", "pool", "arms", "replicas", "target_force_mae_meV_A",
        "noise_floor_seeds"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

#: The three strategies a comparison runs when its file names none.
DEFAULT_ARMS: dict[str, dict[str, Any]] = {
    "probe": {}, "ensemble": {"select": {"rule": "ensemble"}, "committee": {"members": 4}},
    "random": {"select": {"rule": "random"}}}

#: The shared campaign of a comparison file that names only a pool: sized so that 3 strategies
#: x 5 replicas x 6 generations of a few-hundred-frame pool fit in about 45 minutes on 2 cores.
POOL_DEFAULTS: dict[str, Any] = {
    "generations": 6,
    "initial": {"calibration_fraction": 0.25},
    "pool": {"test_fraction": 0.25, "initial_size": 16},
    "backbone": {"channels": 16, "max_L": 0, "r_max_A": 4.5, "epochs": 40, "finetune_epochs": 20,
                 "batch_size": 4},
    # per-atom targets: generation 0 holds out only ~3 frames, too few structures for the
    # structure target (it needs 2 of each class) but ~27 atom examples (issue 12 note)
    "probe": {"error": "force_rmse", "members": 3, "target": "atom", "atom_pool": "mean"},
    "select": {"budget": 12, "min_spacing": 2},
    "cluster": {"kind": "local", "n_workers": 2, "threads_per_worker": 1},
}
#: Most replicas (and noise-floor seeds) a comparison may ask for: each is a full campaign.
MAX_REPLICAS = 100

_COMPARISON_DEFAULTS = {"replicas": 1, "noise_floor_seeds": 3}
_POOL_COMPARISON_DEFAULTS = {"replicas": 5, "noise_floor_seeds": 3}


class ComparisonError(AlprobeError):
    """One or more runs stopped; the others finished and their outputs were written."""


@dataclass(frozen=True)
class Run:
    """One run of a comparison: an arm's replica, in its own folder."""

    arm: str
    replica: int
    name: str  # folder and task-key prefix: the arm, or "<arm>-r<replica>"


@dataclass(frozen=True)
class Comparison:
    """A validated comparison: the shared campaign, one campaign config per arm, replicas."""

    name: str
    base: CampaignConfig
    arms: dict[str, CampaignConfig]
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    replicas: int = 1
    target_force_mae_meV_A: float | None = None
    noise_floor_seeds: int = 3

    @property
    def pool_mode(self) -> bool:
        return self.base.pool is not None

    def runs(self) -> list[Run]:
        """Every (arm, replica) run, replica by replica."""
        return [Run(arm, r, arm if self.replicas == 1 else f"{arm}-r{r}")
                for r in range(self.replicas) for arm in self.arms]

    def run_config(self, run: Run) -> CampaignConfig:
        data = self.arms[run.arm].model_dump(mode="json", exclude={"source_dir"})
        data.update(name=run.name, replica=run.replica)
        return parse_campaign(data, self.base.source_dir, f"{self.name}: {run.name}")

    def shared_replicas(self) -> list[int]:
        """Replicas with a generation 0 of their own: each one in a pool comparison, one
        (replica 0, for all) in a prospective one."""
        return list(range(self.replicas)) if self.pool_mode else [0]

    def shared_name(self, replica: int) -> str:
        return "shared" if len(self.shared_replicas()) == 1 else f"shared-r{replica}"

    def shared_of(self, run: Run) -> str:
        return self.shared_name(run.replica if self.pool_mode else 0)

    def shared(self, replica: int = 0) -> CampaignConfig:
        """Generation 0 of ``replica`` (probe rule, no later generation)."""
        data = self.base.model_dump(mode="json", exclude={"source_dir"})
        data.update(name=f"{self.name}-{self.shared_name(replica)}", generations=0,
                    replica=replica, schedule="generations")  # generation 0 only
        data["select"] = {**data["select"], "rule": "probe"}
        return parse_campaign(data, self.base.source_dir, f"{self.name} (shared)")


def _deep_merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = _deep_merge(a[k], v) if isinstance(v, dict) and isinstance(a.get(k), dict) else v
    return out


def _base_data(data: dict[str, Any], source_dir: Path, problems: list[str]
               ) -> tuple[Any, Path] | None:
    """The shared campaign's mapping and folder, from `campaign`, `shared` and/or `pool`."""
    sources = [k for k in ("campaign", "shared") if k in data]
    if len(sources) > 1 or (not sources and "pool" not in data):
        problems.append("give exactly one of `campaign` (a campaign file) and `shared` "
                        "(an inline campaign), or `pool` (a labeled pool)")
        return None
    if "campaign" in data:
        path = Path(str(data["campaign"])).expanduser()
        path = path if path.is_absolute() else source_dir / path
        if not path.is_file():
            problems.append(f"campaign: file not found: {path}")
            return None
        try:
            base = read_yaml(path)
        except ConfigError as exc:
            problems += [f"campaign: {path}: {p}" for p in exc.problems]
            return None
        base_dir = path.resolve().parent
    elif "shared" in data:
        base, base_dir = data["shared"], source_dir.resolve()
    else:
        base, base_dir = {}, source_dir.resolve()
    if "pool" in data:
        if not isinstance(base, dict) or not isinstance(data["pool"], dict):
            problems.append("pool: expected a mapping (file, energy_key, forces_key, group_key)")
            return None
        if not sources:  # only a pool: the pool defaults
            name = data.get("name") or Path(str(data["pool"].get("file", "pool"))).stem
            base = _deep_merge(POOL_DEFAULTS, {"name": str(name)})
        base = _deep_merge(base, {"pool": data["pool"]})
    return base, base_dir


def parse_comparison(data: Any, source_dir: str | Path = ".",
                     source: str = "comparison") -> Comparison:
    """Validate a comparison mapping (as read from YAML); ConfigError lists every problem."""
    if not isinstance(data, dict):
        raise ConfigError([f"<top>: expected a mapping, got {type(data).__name__}"], source)
    problems = [f"{k}: unknown key (known: {', '.join(sorted(_TOP))})"
                for k in sorted(set(data) - _TOP)]
    got = _base_data(data, Path(source_dir), problems)
    if got is None:
        raise ConfigError(problems, source)
    base_data, base_dir = got
    try:
        base = parse_campaign(base_data, base_dir, f"{source}: shared campaign")
    except ConfigError as exc:
        raise ConfigError(problems + [f"shared campaign: {p}" for p in exc.problems],
                          source) from None
    name = str(data.get("name") or base.name)
    if not _NAME.match(name):
        problems.append(f"name: {name!r} must be letters, digits, '_', '-' or '.'")
    defaults = _POOL_COMPARISON_DEFAULTS if base.pool is not None else _COMPARISON_DEFAULTS
    replicas = data.get("replicas", defaults["replicas"])
    if (not isinstance(replicas, int) or isinstance(replicas, bool)
            or not 1 <= replicas <= MAX_REPLICAS):
        problems.append(f"replicas: a whole number from 1 to {MAX_REPLICAS} (got {replicas!r})")
        replicas = 1
    seeds = data.get("noise_floor_seeds", defaults["noise_floor_seeds"])
    if (not isinstance(seeds, int) or isinstance(seeds, bool) or seeds < 0 or seeds == 1
            or seeds > MAX_REPLICAS):
        problems.append(f"noise_floor_seeds: 0 (off) or a whole number from 2 to {MAX_REPLICAS}"
                        f" (got {seeds!r})")
        seeds = 0
    target = data.get("target_force_mae_meV_A")
    if target is not None and not (isinstance(target, (int, float)) and not isinstance(
            target, bool) and math.isfinite(target) and target > 0):
        problems.append(f"target_force_mae_meV_A: a positive finite number in meV/Å "
                        f"(got {target!r})")
        target = None
    arms_in = data.get("arms", DEFAULT_ARMS)
    if not isinstance(arms_in, dict) or not arms_in:
        raise ConfigError(problems + [("arms: a mapping of at least one arm name to its "
                                       "settings (e.g. `random: {select: {rule: random}}`)")],
                          source)
    arms: dict[str, CampaignConfig] = {}
    overrides: dict[str, dict[str, Any]] = {}
    for arm, over in arms_in.items():
        cfg = _parse_arm(str(arm), {} if over is None else over, base, base_dir, problems)
        if cfg is not None:
            arms[str(arm)], overrides[str(arm)] = cfg, over or {}
    seen: dict[str, str] = {}
    for arm, cfg in arms.items():
        key = strategy(cfg)
        if key in seen:
            problems.append(f"arms.{arm}: same settings as arms.{seen[key]} (to run a strategy "
                            "several times, set `replicas: N`)")
        seen.setdefault(key, arm)
    if problems:
        raise ConfigError(problems, source)
    return Comparison(name=name, base=base, arms=arms, overrides=overrides, replicas=replicas,
                      target_force_mae_meV_A=None if target is None else float(target),
                      noise_floor_seeds=seeds)


def _parse_arm(arm: str, over: Any, base: CampaignConfig, base_dir: Path, problems: list[str]
               ) -> CampaignConfig | None:
    """One arm's campaign (the shared one with the arm's settings), or None after adding its
    problems to ``problems``."""
    where = f"arms.{arm}"
    if not _NAME.match(arm) or arm.startswith("shared") or re.search(r"-r\d+$", arm):
        problems.append(f"{where}: arm names are letters, digits, '_', '-', '.' (not "
                        "'shared...', not ending in -r<number>)")
        return None
    if not isinstance(over, dict):
        problems.append(f"{where}: expected a mapping of settings, got {type(over).__name__}")
        return None
    bad = []
    for k, v in over.items():
        if k == "replica":
            bad.append(f"{where}.replica: replicas are a property of the comparison: set "
                       "`replicas: N` at the top of the file")
        elif k not in ARM_KEYS:
            bad.append(f"{where}.{k}: shared by all arms (set it in the shared campaign); "
                       f"an arm may set only {sorted(ARM_KEYS)}")
        elif ARM_KEYS[k] is not None:
            if not isinstance(v, dict):
                bad.append(f"{where}.{k}: expected a mapping")
                continue
            allowed = ", ".join(f"{k}.{a}" for a in sorted(ARM_KEYS[k]))
            bad += [f"{where}.{k}.{kk}: shared by all arms (an arm may set only {allowed})"
                    for kk in v if kk not in ARM_KEYS[k]]
    if bad:
        problems += bad
        return None
    merged = _deep_merge(base.model_dump(mode="json", exclude={"source_dir"}),
                         {**over, "name": arm})
    try:
        return parse_campaign(merged, base_dir, where)
    except ConfigError as exc:
        problems += [f"{where}.{p}" for p in exc.problems]
        return None


def strategy(cfg: CampaignConfig) -> str:
    """What makes an arm's strategy (see arms.Arm.strategy): two arms with the same one are
    the same arm."""
    from .arms import make_arm

    return make_arm(cfg).strategy()


def load_comparison(path: str | Path) -> Comparison:
    """Read and validate a comparison YAML file (ConfigError, one line per problem)."""
    path = Path(path)
    return parse_comparison(read_yaml(path, "comparison"), path.resolve().parent, str(path))


@dataclass
class ComparisonResult:
    """What run_comparison returns: the folder, per-run metrics and the written outputs."""

    directory: Path
    metrics: dict[str, list[dict[str, Any]]]
    outputs: dict[str, Path]
    summary: str


def seed_run(shared: Path, run_dir: Path) -> None:
    """Start a run from its generation 0: a copy of the shared ledger (frames, stage records
    and metrics, through SQLite's backup) and of the shared models (hard links where the file
    system allows), so that the run folder holds every model its ledger names."""
    from .ledger import copy_ledger

    tmp = run_dir.with_name(f".{run_dir.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    copy_ledger(shared, tmp)
    share_models(shared, tmp)
    for name in ("metrics.json", "metrics.csv"):
        if (shared / name).is_file():
            shutil.copyfile(shared / name, tmp / name)
    tmp.replace(run_dir)


def check_comparison_folder(d: Path, allow: tuple[str, ...] = ()) -> None:
    """Refuse a folder that is not empty and is not a comparison folder (files named in
    ``allow`` do not count: the CLI's log)."""
    from .folder import FolderError

    if d.exists() and not d.is_dir():
        raise FolderError(f"{d} is a file, not a folder")
    held = sorted(p.name for p in d.iterdir() if p.name not in allow) if d.is_dir() else []
    if held and not (d / "comparison.yaml").is_file():
        raise FolderError(f"{d} is not empty and is not an alprobe comparison folder (it holds "
                          f"{', '.join(held[:5])}{', ...' if len(held) > 5 else ''}); choose "
                          "a new or empty folder (--dir)")


def share_models(shared: Path, run_dir: Path) -> None:
    """Every file under ``shared``/models that ``run_dir``/models lacks, hard-linked (or
    copied) there; a run folder seeded before runs held their own copies gets them too."""
    src = shared / "models"
    if not src.is_dir():
        return
    for f in sorted(src.rglob("*")):
        dest = run_dir / "models" / f.relative_to(src)
        if f.is_symlink() or not f.is_file() or dest.exists():
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(f, dest)
        except OSError:
            shutil.copy2(f, dest)


def _threads(jobs: dict[str, Callable[[], None]]) -> dict[str, BaseException]:
    """Run every job in its own thread; the exceptions of those that raised."""
    errors: dict[str, BaseException] = {}

    def one(name: str) -> None:
        try:
            jobs[name]()
        except BaseException as exc:  # noqa: BLE001 - reported after the others
            errors[name] = exc

    threads = [threading.Thread(target=one, args=(n,), name=f"run-{n}", daemon=True)
               for n in jobs]
    for t in threads:
        t.start()
    for t in threads:
        while t.is_alive():
            t.join(0.5)
    return errors


def run_comparison(comparison: Comparison | str | Path, directory: str | Path, *,
                   log: Callable[[str], None] | None = print, client: Any = None,
                   allow_changes: bool = False, accept_failures: bool = False
                   ) -> ComparisonResult:
    """Run (or continue) every run of a comparison in ``directory``, all on one cluster.

    Generation 0 runs in ``<directory>/shared`` (``shared-r<r>`` per replica of a pool
    comparison); then every (arm, replica) run in its own thread in
    ``<directory>/arms/<run>``; then the noise floor. ``client``: an existing
    distributed.Client instead of the shared campaign's cluster section. Writes the learning
    curves, costs and summary (also when a run stopped; ComparisonError then names it).
    """
    from .campaign import check_campaign, noise_floor

    cmp = comparison if isinstance(comparison, Comparison) else load_comparison(comparison)
    problems = check_campaign(cmp.base)
    if problems:
        raise ConfigError(problems, cmp.name)
    directory = Path(directory).resolve()
    check_comparison_folder(directory, allow=("alprobe.log",))
    directory.mkdir(parents=True, exist_ok=True)
    say = log or (lambda _m: None)
    tagged = _tagger(log)

    def work(c: Any) -> ComparisonResult:
        _write_comparison_file(cmp, directory)
        say(f"comparison {cmp.name}: {len(cmp.arms)} arms x {cmp.replicas} replica(s); "
            f"generation 0 in {len(cmp.shared_replicas())} folder(s)")
        _run_shared(cmp, directory, c, tagged, allow_changes, accept_failures)
        t0 = time.perf_counter()
        errors = _run_arms(cmp, directory, c, tagged, allow_changes, accept_failures)
        say(f"comparison {cmp.name}: runs finished in {time.perf_counter() - t0:.0f} s")
        first = cmp.runs()[0]
        if cmp.noise_floor_seeds and first.name not in errors:
            noise_floor(cmp.run_config(first), directory / "arms" / first.name, c,
                        cmp.noise_floor_seeds, directory / "noise_floor.json", tagged("noise"))
        result = write_comparison_outputs(cmp, directory)
        say(result.summary)
        if errors:
            raise ComparisonError(
                "; ".join(f"run {a} stopped: {type(e).__name__}: {' '.join(str(e).split())}"
                          for a, e in errors.items())
                + " (the other runs finished; rerun `alprobe compare` to continue)")
        return result

    if client is not None:
        return work(client)
    from .cluster import open_client

    with open_client(cmp.base.cluster, log=say, folder=directory) as c:
        return work(c)


def _tagger(log: Callable[[str], None] | None) -> Callable[[str], Any]:
    """A run's log: the console's own view of it (progress bars per run), or lines prefixed
    with ``[<run>]``; None without a log."""

    def tagged(name: str) -> Callable[[str], None] | None:
        if not log:
            return None
        view = getattr(log, "tagged", None)  # an alprobe.console.Console: bars per run
        return view(name) if view is not None else (lambda m: log(f"[{name}] {m}"))

    return tagged


def _write_comparison_file(cmp: Comparison, directory: Path) -> None:
    """``comparison.yaml``: the resolved comparison (shared campaign and arm overrides); and
    ``comparison.json``: its plan as the report reads it (:func:`comparison_plan`)."""
    from .files import atomic_write

    comparison_plan(cmp).write(directory)
    atomic_write(directory / "comparison.yaml", yaml.safe_dump(
        {"name": cmp.name, "replicas": cmp.replicas,
         "target_force_mae_meV_A": cmp.target_force_mae_meV_A,
         "noise_floor_seeds": cmp.noise_floor_seeds,
         "shared": cmp.base.model_dump(mode="json", exclude={"source_dir"}),
         "arms": cmp.overrides}, sort_keys=False))


def _run_shared(cmp: Comparison, directory: Path, c: Any, tagged: Callable[[str], Any],
                allow_changes: bool, accept_failures: bool) -> None:
    """Generation 0 of every shared folder, at once; ComparisonError if one stops."""
    from .campaign import prepare_folder, run_in_folder

    jobs = {}
    for r in cmp.shared_replicas():
        name = cmp.shared_name(r)
        cfg = cmp.shared(r)
        prepare_folder(cfg, directory / name, allow_changes)
        jobs[name] = (lambda cfg=cfg, name=name: run_in_folder(
            cfg, directory / name, c, tagged(name), accept_failures, key_prefix=f"{name}-",
            stability=False))
    errors = _threads(jobs)
    if errors:
        raise ComparisonError("; ".join(f"{n} stopped: {type(e).__name__}: {e}"
                                        for n, e in errors.items()))


def _run_arms(cmp: Comparison, directory: Path, c: Any, tagged: Callable[[str], Any],
              allow_changes: bool, accept_failures: bool) -> dict[str, BaseException]:
    """Every (arm, replica) run from its shared generation 0, at once; the errors by run."""
    from .campaign import prepare_folder, run_in_folder

    jobs = {}
    for run in cmp.runs():
        d = directory / "arms" / run.name
        if not (d / "ledger.db").is_file():
            d.parent.mkdir(parents=True, exist_ok=True)
            seed_run(directory / cmp.shared_of(run), d)
        share_models(directory / cmp.shared_of(run), d)
        cfg = cmp.run_config(run)
        prepare_folder(cfg, d, allow_changes)
        jobs[run.name] = (lambda cfg=cfg, d=d, run=run: run_in_folder(
            cfg, d, c, tagged(run.name), accept_failures, key_prefix=f"{run.name}-"))
    return _threads(jobs)


def comparison_plan(cmp: Comparison) -> ComparisonPlan:
    """What the report needs to know of a comparison (written as ``comparison.json``): its
    runs with their arm, replica and rule, its generation-0 folders, budget and target."""
    return ComparisonPlan(
        name=cmp.name, budget=cmp.base.select.budget, generations=cmp.base.generations,
        runs={r.name: RunInfo(r.arm, r.replica, cmp.arms[r.arm].select.rule)
              for r in cmp.runs()},
        shared=[cmp.shared_name(r) for r in cmp.shared_replicas()], pool=cmp.pool_mode,
        target=cmp.target_force_mae_meV_A)


def write_comparison_outputs(cmp: Comparison, directory: str | Path) -> ComparisonResult:
    """Learning curves (CSV + PNG), costs (CSV), stability (CSV) and summary.md from the
    runs' ledgers (:func:`alprobe.report.write_comparison_outputs`)."""
    directory = Path(directory)
    out = write_outputs(directory, comparison_plan(cmp))
    metrics = {r.name: out.data.runs[r.name].metrics if r.name in out.data.runs else []
               for r in cmp.runs()}
    return ComparisonResult(directory, metrics, out.paths, out.summary)
