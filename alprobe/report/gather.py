"""A campaign or comparison folder, read once into plain objects for every section.

``read_campaign`` reads aggregates only: metrics rows, stage records, frame counts by status
(key-only ledger queries), the few failed / rejected / timed-out frames' keys, the audit JSONs
and the paths of the audit and atom-importance PNGs. ``read_comparison`` reads every run and
generation-0 folder of a comparison the same way, with the comparison's plan
(``comparison.json``, written by ``alprobe compare``): its arms, replicas, rules and budget.
Learning-curve and cost rows (the CSVs of a comparison) are made here from the metrics.
Units: metrics rows in eV, Å, s; learning-curve rows in meV/Å and meV/atom.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from ..errors import AlprobeError
from ..paired import PairedTables
from ..records import STAGES, stage_key

__all__ = ["PLAN_FILE", "CampaignData", "ComparisonData", "ComparisonPlan", "ReportError",
           "RunInfo", "cost_rows", "learning_curve_rows", "read_campaign", "read_comparison",
           "read_plan"]

#: Longest text file (campaign.yaml, versions.json) kept, in characters.
MAX_TEXT = 40_000
#: The comparison's plan, written by ``alprobe compare`` beside ``comparison.yaml``.
PLAN_FILE = "comparison.json"
STATUSES = ("candidate", "selected", "labeled", "failed", "rejected", "timeout")
BAD = ("failed", "rejected", "timeout")
_NAN = float("nan")


class ReportError(AlprobeError):
    """The folder is not a campaign or comparison folder (the message names it)."""


@dataclass
class CampaignData:
    """What the report shows of one campaign folder (aggregates only). ``config``: the
    campaign file's mapping ({} when it is damaged: shown, not used)."""

    directory: Path
    name: str
    metrics: list[dict[str, Any]]
    stages: dict[str, dict[str, Any]]
    status: dict[str, int]
    splits: dict[str, int]
    stress: int = 0
    problems: list[dict[str, Any]] = field(default_factory=list)
    audits: dict[int, dict[str, dict[str, Any]]] = field(default_factory=dict)
    audit_pngs: list[Path] = field(default_factory=list)
    importance: list[Path] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    campaign_yaml: str = ""
    versions: str = ""

    @property
    def last(self) -> dict[str, Any]:
        """The last metrics row ({} before generation 0 finishes)."""
        return self.metrics[-1] if self.metrics else {}

    def stage(self, generation: int, name: str) -> dict[str, Any]:
        """A stage record ({} if not done)."""
        return self.stages.get(stage_key(generation, name), {})


def read_text(path: Path) -> str:
    """A text file, cut at MAX_TEXT characters ("" if missing)."""
    if not path.is_file():
        return ""
    text = path.read_text(errors="replace")
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + "\n… (cut)\n"


def _mapping(path: Path) -> dict[str, Any]:
    """A campaign file's mapping through the config's YAML reader; {} if it is damaged."""
    from ..config import ConfigError, read_yaml

    try:
        data = read_yaml(path)
    except ConfigError:
        return {}
    return data if isinstance(data, dict) else {}


def gen_of(path: Path) -> int:
    """The generation of an ``audits/gen_NNN_*`` file."""
    return int(path.name[4:7])


def read_campaign(directory: str | Path, images: bool = True, details: bool = True
                  ) -> CampaignData:
    """Read a campaign folder: metrics rows, stage records, frame counts by status; with
    ``details`` also the failed / rejected / timed-out frames' keys and the audit JSONs,
    with ``images`` the PNGs of the last generation's audit and atom-importance pictures."""
    from ..ledger import Ledger

    d = Path(directory)
    L = Ledger(d, readonly=True)
    yaml_text = read_text(d / "campaign.yaml")
    config = _mapping(d / "campaign.yaml") if yaml_text else {}
    data = CampaignData(
        directory=d, name=str(config.get("name") or d.name), metrics=L.metrics(),
        stages=L.stages(), status={s: L.count(status=s) for s in STATUSES},
        splits={s: L.count(status="labeled", split=s) for s in ("train", "calib", "test")},
        stress=L.count(split="stress", status="stress"), config=config,
        campaign_yaml=yaml_text, versions=read_text(d / "versions.json"))
    if details:
        keep = ("fid", "status", "reason", "generation", "origin")
        data.problems = [{k: kv.get(k) for k in keep} for s in BAD for kv in L.keys(status=s)]
        data.audits = _audits(d / "audits")
    if images:
        data.audit_pngs, data.importance = _pngs(d / "audits")
    return data


def _audits(folder: Path) -> dict[int, dict[str, dict[str, Any]]]:
    audits: dict[int, dict[str, dict[str, Any]]] = defaultdict(dict)
    for p in sorted(folder.glob("gen_[0-9][0-9][0-9]_*_audit.json")):
        where = p.name[8:-len("_audit.json")]
        try:
            audits[gen_of(p)][where] = json.loads(p.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
            continue
    return dict(audits)


#: Atom-importance pictures kept (those of the last generations that have any).
MAX_IMPORTANCE = 6


def _pngs(folder: Path) -> tuple[list[Path], list[Path]]:
    """The last generation's risk-coverage and reliability PNGs; the atom-importance PNGs of
    the last generations that have any (at most MAX_IMPORTANCE)."""
    if not folder.is_dir():
        return [], []
    audit = sorted(folder.glob("gen_[0-9][0-9][0-9]_*_risk_coverage.png"))
    last = max((gen_of(p) for p in audit), default=None)
    pngs = [folder / f"gen_{last:03d}_{w}_{k}.png" for w in ("test", "new")
            for k in ("risk_coverage", "reliability")] if last is not None else []
    imp = sorted(folder.glob("gen_[0-9][0-9][0-9]_importance_*.png"),
                 key=lambda p: (-gen_of(p), p.name))
    return [p for p in pngs if p.is_file()], imp[:MAX_IMPORTANCE]


# ----- learning-curve and cost rows -----------------------------------------------------------

#: Tail and stress-set columns of a metrics row (eV/A), shown in meV/A.
TAIL_KEYS = ("force_rmse_p95_eV_A", "force_rmse_p95_lo_eV_A", "force_rmse_p95_hi_eV_A",
             "force_rmse_max_eV_A", "stress_force_mae_eV_A", "stress_force_mae_lo_eV_A",
             "stress_force_mae_hi_eV_A", "stress_force_rmse_p95_eV_A",
             "stress_force_rmse_max_eV_A")


def _unbiased(rule: str) -> bool:
    """Whether an arm's selection is blind to the errors (for rows written before the metrics
    carried it)."""
    from ..arms import ARMS

    return bool(getattr(ARMS.get(rule), "unbiased", False))


def learning_curve_rows(metrics: dict[str, list[dict[str, Any]]],
                        runs: dict[str, tuple[str, int, str]]) -> list[dict[str, Any]]:
    """One row per run and generation: the run's arm, replica and rule; DFT labels used
    (training pool, test set excluded); test force MAE (meV/A) with its 95% bootstrap interval
    over test frames, RMSE, energy MAE (meV/atom); the frames its backbone trained on
    (``train_frames``); the tails of the per-frame force RMSE (p95 with its interval, max) and
    the same on the stress set (NaN without one); hit rates (relative and absolute threshold,
    and the candidates' base rate where known); the AUROC of the arm's own signal; wall and
    CPU s. ``runs``: {run name: (arm, replica, rule)}."""
    rows = []
    for name, ms in metrics.items():
        arm, replica, rule = runs[name]
        for m in ms:
            rows.append({
                "run": name, "arm": arm, "replica": int(replica), "rule": rule,
                "generation": int(m["generation"]), "labels": int(m["labels"]),
                "train_frames": int(m.get("train_frames", -1)),
                "dft_calls": int(m.get("dft_calls", m["labels"])),
                "force_mae_meV_A": 1000 * float(m["force_mae_eV_A"]),
                "force_mae_lo_meV_A": 1000 * float(m.get("force_mae_lo_eV_A", _NAN)),
                "force_mae_hi_meV_A": 1000 * float(m.get("force_mae_hi_eV_A", _NAN)),
                "force_rmse_meV_A": 1000 * float(m["force_rmse_eV_A"]),
                "energy_mae_meV_atom": 1000 * float(m["energy_mae_eV_per_atom"]),
                **{k.replace("_eV_A", "_meV_A"): 1000 * float(m.get(k, _NAN))
                   for k in TAIL_KEYS},
                "hit_rate": float(m.get("hit_rate", _NAN)),
                "hit_rate_abs": float(m.get("hit_rate_abs", _NAN)),
                "hit_base_rate_abs": float(m.get("hit_base_rate_abs", _NAN)),
                "unbiased_selection": bool(m.get("unbiased_selection", _unbiased(rule))),
                "signal_auroc_test": float(m.get("signal_auroc_test", _NAN)),
                "signal_auroc_new": float(m.get("signal_auroc_new", _NAN)),
                "wall_s": float(m.get("wall_s", _NAN)),
                "cpu_s": float(m.get("cpu_s", _NAN))})
    return rows


def cost_rows(metrics: dict[str, list[dict[str, Any]]],
              shared: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Wall (driver, per stage) and CPU seconds (tasks, per account) of each run, summed over
    its own generations (>= 1), plus one row per generation-0 folder."""
    out = []

    def add(arm: str, ms: list[dict[str, Any]]) -> None:
        for st in [*STAGES, "driver"]:
            out.append({"arm": arm, "stage": st,
                        "wall_s": float(sum(m.get(f"{st}_s", 0.0) for m in ms)),
                        "cpu_s": float(sum(m.get(f"{st}_cpu_s", 0.0) for m in ms))})
        out.append({"arm": arm, "stage": "total",
                    "wall_s": float(sum(m.get("wall_s", 0.0) for m in ms)),
                    "cpu_s": float(sum(m.get("cpu_s", 0.0) for m in ms))})

    for name, ms in shared.items():
        add(f"{name} (gen 0)", [m for m in ms if m["generation"] == 0])
    for arm, ms in metrics.items():
        add(arm, [m for m in ms if m["generation"] > 0])
    return out


# ----- comparisons ----------------------------------------------------------------------------

@dataclass(frozen=True)
class RunInfo:
    """One run of a comparison: its arm, replica and selection rule."""

    arm: str
    replica: int
    rule: str


@dataclass(frozen=True)
class ComparisonPlan:
    """What a comparison set out to do: its name, labels per generation (``budget``),
    generations planned, whether it runs on a labeled pool, the target force MAE (meV/Å)
    for "labels needed", every run (folder name -> RunInfo) and its generation-0 folders."""

    name: str
    budget: int
    generations: int
    runs: dict[str, RunInfo]
    shared: list[str]
    pool: bool = False
    target: float | None = None

    def write(self, directory: str | Path) -> Path:
        """``directory/comparison.json`` (atomically)."""
        from ..files import atomic_write

        path = Path(directory) / PLAN_FILE
        atomic_write(path, json.dumps(asdict(self), indent=1) + "\n")
        return path

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ComparisonPlan:
        runs = {k: RunInfo(str(v["arm"]), int(v["replica"]), str(v["rule"]))
                for k, v in data["runs"].items()}
        target = data.get("target")
        return cls(str(data["name"]), int(data["budget"]), int(data["generations"]), runs,
                   [str(s) for s in data["shared"]], bool(data.get("pool", False)),
                   None if target is None else float(target))


def read_plan(directory: str | Path) -> ComparisonPlan:
    """The comparison's plan from ``comparison.json``; for a folder written before alprobe
    kept one: runs from the folders in ``arms/`` ("<arm>" or "<arm>-r<replica>"), each run's
    rule from its last metrics row (or its campaign file), the budget and generations from a
    run's campaign file."""
    from ..ledger import Ledger

    d = Path(directory)
    try:
        return ComparisonPlan.from_dict(json.loads((d / PLAN_FILE).read_text()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    folders = sorted(p for p in (d / "arms").glob("*") if (p / "ledger.db").is_file()) \
        if (d / "arms").is_dir() else []
    runs, cfg = {}, {}
    for p in folders:
        m = re.fullmatch(r"(.+)-r(\d+)", p.name)
        own = _mapping(p / "campaign.yaml")
        cfg = cfg or own
        last = (Ledger(p, readonly=True).metrics() or [{}])[-1]
        runs[p.name] = RunInfo(m[1] if m else p.name, int(m[2]) if m else 0, str(
            last.get("rule") or (own.get("select") or {}).get("rule", "probe")))
    select = cfg.get("select") or {}
    return ComparisonPlan(d.name, int(select.get("budget", 0)), int(cfg.get("generations", 0)),
                          runs, sorted(p.name for p in d.glob("shared*")
                                       if (p / "ledger.db").is_file()), bool(cfg.get("pool")))


@dataclass
class ComparisonData:
    """A comparison folder: its plan, the runs and generation-0 folders that exist (read as
    :func:`read_campaign`), learning-curve and cost rows, each run's final MD stability
    record, the noise floor (noise_floor.json), and the comparison file as text."""

    directory: Path
    plan: ComparisonPlan
    runs: dict[str, CampaignData]
    shared: dict[str, CampaignData]
    curves: list[dict[str, Any]]
    costs: list[dict[str, Any]]
    stability: dict[str, dict[str, Any]]
    noise_floor: dict[str, Any] | None = None
    noise_floor_text: str = ""
    spec_text: str = ""
    versions: str = ""

    @property
    def arms(self) -> list[str]:
        return list(dict.fromkeys(r["arm"] for r in self.curves))

    @cached_property
    def paired(self) -> PairedTables | None:
        """The paired statistics of the test force MAE (None with fewer than 2 arms)."""
        from ..paired import paired_tables

        return paired_tables(self.curves, self.plan.target) if len(self.arms) >= 2 else None


def read_comparison(directory: str | Path, plan: ComparisonPlan | None = None,
                    details: bool = True) -> ComparisonData:
    """Read a comparison folder (``plan``: default :func:`read_plan`); ``details``: each
    run's failures, audits and (at most 3) atom-importance pictures too."""
    d = Path(directory)
    plan = plan or read_plan(d)
    runs = {}
    for name in plan.runs:
        if (d / "arms" / name / "ledger.db").is_file():
            cd = read_campaign(d / "arms" / name, images=details, details=details)
            cd.audit_pngs, cd.importance = [], cd.importance[:3]
            runs[name] = cd
    shared = {n: read_campaign(d / n, images=False, details=details) for n in plan.shared
              if (d / n / "ledger.db").is_file()}
    metrics = {r: runs[r].metrics if r in runs else [] for r in plan.runs}
    curves = learning_curve_rows(
        {r: [m for m in ms if "force_mae_eV_A" in m] for r, ms in metrics.items()},
        {r: (i.arm, i.replica, i.rule) for r, i in plan.runs.items()})
    stability = {r: c.stage(int(c.last["generation"]), "stability") for r, c in runs.items()
                 if c.metrics}
    floor_text = read_text(d / "noise_floor.json")
    try:
        floor = json.loads(floor_text) if floor_text else None
    except ValueError:
        floor = None
    versions = next((c.versions for c in [*shared.values(), *runs.values()] if c.versions), "")
    return ComparisonData(d, plan, runs, shared, curves,
                          cost_rows(metrics, {s: c.metrics for s, c in shared.items()}),
                          stability, floor, floor_text, read_text(d / "comparison.yaml"),
                          versions)
