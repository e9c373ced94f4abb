"""Comparisons of acquisition strategies ("arms") under one DFT budget: ``alprobe compare``.

A comparison file names the shared settings (a campaign file, or an inline campaign) and the
arms. An arm may change only its selection rule, its committee and its replica number;
everything else (system, DFT level, initial data, walkers, budget, backbone, probe,
generations, seed) is shared::

    name: ethanol_arms
    campaign: quickstart.yaml        # path relative to this file; or `shared: {...}` inline
    arms:
      probe: {}                      # the shared campaign's rule (probe by default)
      ensemble: {select: {rule: ensemble}, committee: {members: 4}}
      random: {select: {rule: random}}
      random_b: {select: {rule: random}, replica: 1}   # a second seed of the same arm

Generation 0 (initial labels, held-out test set, backbone 0, probe 0) runs once, in
``<dir>/shared``; every arm starts from a byte-for-byte copy of that ledger in
``<dir>/arms/<arm>`` and then runs its own generations. All arms run at the same time on one
Dask cluster (one driver thread per arm; task keys carry the arm's name). Outputs:
``learning_curves.{csv,png}``, ``costs.csv`` and ``summary.md`` in ``<dir>``.
"""

from __future__ import annotations

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

__all__ = ["Comparison", "ComparisonError", "ComparisonResult", "load_comparison",
           "parse_comparison", "run_comparison", "strategy"]

#: What an arm may set: {section: allowed keys (None: the whole section)}; top-level scalars
#: map to None too.
ARM_KEYS: dict[str, set[str] | None] = {"select": {"rule"}, "committee": None, "replica": None}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class ComparisonError(AlprobeError):
    """One or more arms stopped; the others finished and their outputs were written."""


@dataclass(frozen=True)
class Comparison:
    """A validated comparison: the shared campaign and one campaign config per arm."""

    name: str
    base: CampaignConfig
    arms: dict[str, CampaignConfig]
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)

    def shared(self) -> CampaignConfig:
        """The generation-0 campaign every arm starts from (probe rule, no later generation)."""
        data = self.base.model_dump(mode="json", exclude={"source_dir"})
        data.update(name=f"{self.name}-shared", generations=0, replica=0)
        data["select"] = {**data["select"], "rule": "probe"}
        return parse_campaign(data, self.base.source_dir, f"{self.name} (shared)")


def _deep_merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = _deep_merge(a[k], v) if isinstance(v, dict) and isinstance(a.get(k), dict) else v
    return out


def parse_comparison(data: Any, source_dir: str | Path = ".",
                     source: str = "comparison") -> Comparison:
    """Validate a comparison mapping (as read from YAML); ConfigError lists every problem."""
    if not isinstance(data, dict):
        raise ConfigError([f"<top>: expected a mapping, got {type(data).__name__}"], source)
    problems = [f"{k}: unknown key (known: name, campaign, shared, arms)"
                for k in sorted(set(data) - {"name", "campaign", "shared", "arms"})]
    source_dir = Path(source_dir)
    if ("campaign" in data) == ("shared" in data):
        problems.append("give exactly one of `campaign` (a campaign file) and `shared` "
                        "(an inline campaign)")
        raise ConfigError(problems, source)
    if "campaign" in data:
        path = Path(str(data["campaign"])).expanduser()
        path = path if path.is_absolute() else source_dir / path
        if not path.is_file():
            raise ConfigError(problems + [f"campaign: file not found: {path}"], source)
        try:
            base_data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(problems + [f"campaign: {path} is not valid YAML: "
                                          f"{' '.join(str(exc).split())}"], source) from None
        base_dir = path.resolve().parent
    else:
        base_data, base_dir = data["shared"], source_dir.resolve()
    try:
        base = parse_campaign(base_data, base_dir, f"{source}: shared campaign")
    except ConfigError as exc:
        raise ConfigError(problems + [f"shared campaign: {p}" for p in exc.problems],
                          source) from None
    name = str(data.get("name") or base.name)
    if not _NAME.match(name):
        problems.append(f"name: {name!r} must be letters, digits, '_', '-' or '.'")
    arms_in = data.get("arms")
    if not isinstance(arms_in, dict) or not arms_in:
        raise ConfigError(problems + ["arms: a mapping of at least one arm name to its settings "
                                      "(e.g. `random: {select: {rule: random}}`)"], source)
    arms: dict[str, CampaignConfig] = {}
    overrides: dict[str, dict[str, Any]] = {}
    for arm, over in arms_in.items():
        arm = str(arm)
        over = {} if over is None else over
        where = f"arms.{arm}"
        if not _NAME.match(arm) or arm == "shared":
            problems.append(f"{where}: arm names are letters, digits, '_', '-', '.' (not 'shared')")
            continue
        if not isinstance(over, dict):
            problems.append(f"{where}: expected a mapping of settings, got {type(over).__name__}")
            continue
        bad = []
        for k, v in over.items():
            if k not in ARM_KEYS:
                bad.append(f"{where}.{k}: shared by all arms (set it in the shared campaign); "
                           f"an arm may set only {sorted(ARM_KEYS)}")
            elif ARM_KEYS[k] is not None:
                if not isinstance(v, dict):
                    bad.append(f"{where}.{k}: expected a mapping")
                    continue
                bad += [f"{where}.{k}.{kk}: shared by all arms (an arm may set only "
                        f"{k}.{sorted(ARM_KEYS[k])[0]})" for kk in v if kk not in ARM_KEYS[k]]
        if bad:
            problems += bad
            continue
        merged = _deep_merge(base.model_dump(mode="json", exclude={"source_dir"}),
                             {**over, "name": arm})
        try:
            arms[arm] = parse_campaign(merged, base_dir, where)
        except ConfigError as exc:
            problems += [f"{where}.{p}" for p in exc.problems]
            continue
        overrides[arm] = over
    seen: dict[str, str] = {}
    for arm, cfg in arms.items():
        key = strategy(cfg) + f" replica {cfg.replica}"
        if key in seen:
            problems.append(f"arms.{arm}: same settings as arms.{seen[key]} (give one of them "
                            "`replica: 1` to run a second seed)")
        seen.setdefault(key, arm)
    if problems:
        raise ConfigError(problems, source)
    return Comparison(name=name, base=base, arms=arms, overrides=overrides)


def strategy(cfg: CampaignConfig) -> str:
    """What makes an arm's strategy (replicas of one strategy share it): the rule, and the
    committee settings for the ensemble rule only."""
    if cfg.select.rule == "ensemble":
        return f"ensemble {cfg.committee.model_dump(mode='json')}"
    return cfg.select.rule


def load_comparison(path: str | Path) -> Comparison:
    """Read and validate a comparison YAML file (ConfigError, one line per problem)."""
    path = Path(path)
    return parse_comparison(read_yaml(path, "comparison"), path.resolve().parent, str(path))


@dataclass
class ComparisonResult:
    """What run_comparison returns: the folder, per-arm metrics and the written outputs."""

    directory: Path
    metrics: dict[str, list[dict[str, Any]]]
    outputs: dict[str, Path]
    summary: str


def _seed_arm(shared: Path, arm_dir: Path) -> None:
    """Start an arm from the shared generation 0: a copy of its ledger (frames, stage records
    and metrics, through SQLite's backup), whose model paths keep pointing at the shared
    models."""
    from .ledger import Ledger

    tmp = arm_dir.with_name(f".{arm_dir.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    Ledger(shared, readonly=True).copy_to(tmp)  # frames, stage records and metrics
    for name in ("metrics.json", "metrics.csv"):
        if (shared / name).is_file():
            shutil.copyfile(shared / name, tmp / name)
    tmp.replace(arm_dir)


def run_comparison(comparison: Comparison | str | Path, directory: str | Path, *,
                   log: Callable[[str], None] | None = print, client: Any = None,
                   allow_changes: bool = False, accept_failures: bool = False
                   ) -> ComparisonResult:
    """Run (or continue) every arm of a comparison in ``directory``, all on one cluster.

    Generation 0 runs once in ``<directory>/shared``; each arm then runs in its own thread
    in ``<directory>/arms/<arm>``. ``client``: an existing distributed.Client to use instead
    of the shared campaign's cluster section. Writes the learning curves, costs and summary
    (also when an arm stopped; ComparisonError then names the arms that did).
    """
    from .campaign import _prepare_folder, _run, check_campaign

    cmp = comparison if isinstance(comparison, Comparison) else load_comparison(comparison)
    problems = check_campaign(cmp.base)
    if problems:
        raise ConfigError(problems, cmp.name)
    directory = Path(directory).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    from .ledger import atomic_write_text

    say = log or (lambda _m: None)

    def work(c: Any) -> ComparisonResult:
        shared_cfg, shared_dir = cmp.shared(), directory / "shared"
        _prepare_folder(shared_cfg, shared_dir, allow_changes)
        say(f"comparison {cmp.name}: generation 0 (shared by {len(cmp.arms)} arms)")
        _run(shared_cfg, shared_dir, c, (lambda m: say(f"[shared] {m}")) if log else None,
             accept_failures, key_prefix="shared-")
        dirs = {}
        for arm, cfg in cmp.arms.items():
            d = directory / "arms" / arm
            if not (d / "ledger.db").is_file():
                d.parent.mkdir(parents=True, exist_ok=True)
                _seed_arm(shared_dir, d)
            _prepare_folder(cfg, d, allow_changes)
            dirs[arm] = d
        atomic_write_text(directory / "comparison.yaml", yaml.safe_dump(
            {"name": cmp.name, "shared": cmp.base.model_dump(mode="json",
                                                             exclude={"source_dir"}),
             "arms": cmp.overrides}, sort_keys=False))
        errors: dict[str, BaseException] = {}

        def one(arm: str) -> None:
            try:
                _run(cmp.arms[arm], dirs[arm], c,
                     (lambda m: say(f"[{arm}] {m}")) if log else None, accept_failures,
                     key_prefix=f"{arm}-")
            except BaseException as exc:  # noqa: BLE001 - reported after the other arms
                errors[arm] = exc

        t0 = time.perf_counter()
        threads = [threading.Thread(target=one, args=(arm,), name=f"arm-{arm}", daemon=True)
                   for arm in cmp.arms]
        for t in threads:
            t.start()
        for t in threads:
            while t.is_alive():
                t.join(0.5)
        say(f"comparison {cmp.name}: arms finished in {time.perf_counter() - t0:.0f} s")
        result = write_comparison_outputs(cmp, directory)
        say(result.summary)
        if errors:
            raise ComparisonError(
                "; ".join(f"arm {a} stopped: {type(e).__name__}: {' '.join(str(e).split())}"
                          for a, e in errors.items())
                + " (the other arms finished; rerun `alprobe compare` to continue)")
        return result

    if client is not None:
        return work(client)
    from .cluster import open_client

    with open_client(cmp.base.cluster, log=say, folder=directory) as c:
        return work(c)


def write_comparison_outputs(cmp: Comparison, directory: str | Path) -> ComparisonResult:
    """Learning curves (CSV + PNG), costs (CSV) and summary.md from the arms' metrics."""
    from .ledger import Ledger, atomic_write_text
    from .report import comparison_summary, cost_rows, learning_curve_rows, plot_learning_curves

    directory = Path(directory)
    metrics = {}
    for arm in cmp.arms:
        d = directory / "arms" / arm
        metrics[arm] = Ledger(d, readonly=True).metrics() if (d / "ledger.db").is_file() else []
    shared = Ledger(directory / "shared", readonly=True).metrics()
    rules = {arm: cfg.select.rule for arm, cfg in cmp.arms.items()}
    groups = {arm: strategy(cfg) for arm, cfg in cmp.arms.items()}
    curves = learning_curve_rows(metrics, rules)
    costs = cost_rows(metrics, shared)
    out = {"learning_curves_csv": directory / "learning_curves.csv",
           "learning_curves_png": directory / "learning_curves.png",
           "costs_csv": directory / "costs.csv", "summary_md": directory / "summary.md"}
    atomic_write_text(out["learning_curves_csv"], _csv(curves))
    atomic_write_text(out["costs_csv"], _csv(costs))
    plot_learning_curves(curves, out["learning_curves_png"], title=cmp.name)
    text = comparison_summary(cmp.name, curves, costs, groups, budget=cmp.base.select.budget,
                              generations=cmp.base.generations, plot=out["learning_curves_png"].name)
    atomic_write_text(out["summary_md"], text)
    return ComparisonResult(directory, metrics, out, text)


def _csv(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    keys = list(rows[0])
    fmt = (lambda v: f"{v:.6g}" if isinstance(v, float) else str(v))
    return "\n".join([",".join(keys)] + [",".join(fmt(r.get(k, "")) for k in keys)
                                         for r in rows]) + "\n"
