"""The generation loop: the only orchestrator. Checkpoints every stage; resumes where it stopped.

Generation 0 builds the data: rattled seeds (labeled), optionally short MD of a bootstrap
backbone (labeled), a fixed held-out test set, then backbone 0, probe 0 and their evaluation.
Generation g >= 1: explore (walkers on backbone g-1 scored by probe g-1) -> select -> label ->
fine-tune backbone g (optional) -> probe g -> evaluate. Every stage is recorded as done in
the ledger; labels are written the moment they arrive.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from ase import Atoms

from .acquire import deviation_window, select_by_deviation, select_least_trusted, select_random
from .config import CampaignConfig, ConfigError, load_campaign, parse_campaign
from .errors import AlprobeError
from .explore import WalkerSettings
from .frames import bare_copy, load_seeds, set_prediction
from .ledger import Ledger, atomic_write_text
from .metrics import auroc_unreliable, frame_errors, regression_errors

__all__ = ["CampaignResult", "campaign_problems", "check_campaign", "noise_floor",
           "prepare_folder", "resume_campaign", "run_campaign", "run_in_folder"]

#: Final statuses of a frame sent to DFT (only "labeled" is ever trained on).
_LABEL_OUTCOMES = ("labeled", "failed", "rejected", "timeout")

# Stage codes for the random streams: np.random.default_rng([seed, generation, code]).
_RNG = {"rattle": 1, "bootstrap_md": 2, "split": 3, "explore": 4, "select": 5, "train": 6,
        "probe": 7, "test_md": 8, "evaluate": 9}

#: Where task CPU time is booked (metrics columns <account>_cpu_s).
ACCOUNTS = ("explore", "deviation", "label", "train", "probe", "evaluate", "audit")


@dataclass
class CampaignResult:
    """What run_campaign returns: the folder and the per-generation metrics."""

    directory: Path
    metrics: list[dict[str, Any]]


def check_campaign(cfg: CampaignConfig) -> list[str]:
    """Problems a schema cannot see: seeds or a pool that cannot be read, elements, the DFT
    level, a pool too small for its splits."""
    from .dft import check_level

    problems = []
    if cfg.pool is not None:
        problems += _pool_problems(cfg)
    if cfg.system is not None:
        elements: set[str] = set(cfg.system.elements or [])
        try:
            seeds = load_seeds(cfg.system.seeds, cfg.source_dir)
            elements |= {s for a in seeds for s in a.get_chemical_symbols()}
        except ValueError as exc:
            problems.append(f"system.seeds: {exc}")
        if cfg.pool is None:  # a pool campaign runs no DFT
            problems += [f"dft: {p}" for p in check_level(_level(cfg), sorted(elements))]
    if cfg.backbone.model_file and not cfg.resolve(cfg.backbone.model_file).is_file():
        problems.append(f"backbone.model_file: file not found: {cfg.resolve(cfg.backbone.model_file)}")
    return problems


def _pool_problems(cfg: CampaignConfig) -> list[str]:
    from .pool import PoolError, read_pool

    try:
        pool = read_pool(cfg.pool, cfg.source_dir)
    except PoolError as exc:
        return [f"pool: {exc}"]
    n_groups = len(set(pool.groups))
    if pool.test is None and n_groups < 2:
        return [f"pool: {cfg.pool.file} has {n_groups} group(s) of pool.group_key; a held-out "
                "test split needs at least 2"]
    n_rest = len(pool.frames) if pool.test is not None else int(
        round(len(pool.frames) * (1 - cfg.pool.test_fraction)))
    need = cfg.pool.initial_size + cfg.select.budget
    if n_rest < need:
        return [f"pool: about {n_rest} frames outside the test set, fewer than pool.initial_size "
                f"+ select.budget ({need})"]
    return []


def campaign_problems(data: Any, source_dir: str | Path = ".", source: str = "campaign"
                      ) -> list[str]:
    """Every problem of a campaign mapping at once: schema problems (key path + reason) and the
    checks a schema cannot make (seeds, elements, basis, functional, model file), the latter on
    every value that passed the schema. [] if the campaign can run."""
    try:
        cfg = parse_campaign(data, source_dir, source)
    except ConfigError as exc:
        schema = list(exc.problems)
        cfg = _salvage(data, source_dir)
        if cfg is None:
            return schema
        extra = [p for p in check_campaign(cfg) if p not in schema]
        if _seeds_invalid(schema):  # placeholder seeds stood in: say nothing about them
            extra = [p for p in extra if not p.startswith("system.seeds")]
        return schema + extra
    return check_campaign(cfg)


def _seeds_invalid(schema: list[str]) -> bool:
    return any(p.startswith(("system:", "system.seeds")) for p in schema)


def _salvage(data: Any, source_dir: str | Path) -> CampaignConfig | None:
    """The campaign with every key the schema refused dropped (defaults in their place), so
    that the remaining values can still be checked; None if nothing can be salvaged."""
    from pydantic import ValidationError

    if not isinstance(data, dict):
        return None
    import copy

    data = copy.deepcopy({k: v for k, v in data.items() if k != "source_dir"})
    for _ in range(8):
        try:
            return CampaignConfig.model_validate({**data, "source_dir": str(source_dir)})
        except ValidationError as exc:
            for err in exc.errors():
                loc = [p for p in err["loc"] if isinstance(p, str)]
                if loc == ["name"]:
                    data["name"] = "unnamed"
                elif loc[:2] == ["system", "seeds"] or loc == ["system"]:
                    data["system"] = {**(data.get("system") if isinstance(
                        data.get("system"), dict) else {}), "seeds": ["H2"]}
                    if loc == ["system"] and err["type"] != "missing":
                        data["system"] = {"seeds": ["H2"]}
                else:
                    _drop(data, loc)
    return None


def _drop(data: dict[str, Any], loc: list[str]) -> None:
    node: Any = data
    for key in loc[:-1]:
        if not isinstance(node, dict) or key not in node:
            return
        node = node[key]
    if isinstance(node, dict) and loc:
        node.pop(loc[-1], None)


def _level(cfg: CampaignConfig) -> Any:
    from .dft import DFTLevel

    d = cfg.dft
    charge, spin = (cfg.system.charge, cfg.system.spin) if cfg.system else (0, 0)
    return DFTLevel(method=d.method, xc=d.xc, basis=d.basis, density_fit=d.density_fit,
                    grid_level=d.grid_level, charge=charge, spin=spin,
                    max_cycle=d.max_cycle, conv_tol=d.conv_tol, min_distance=d.min_distance_A,
                    rescue=d.rescue, timeout_s=d.timeout_s)


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0]}
    for pkg in ("alprobe", "torch", "mace-torch", "e3nn", "pyscf", "ase", "dask", "distributed",
                "numpy", "scipy", "scikit-learn", "threadpoolctl"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _diff(a: Any, b: Any, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _diff(a.get(k), b.get(k), f"{path}.{k}" if path else k)
        return out
    return [] if a == b else [f"{path}: stored {a!r}, now {b!r}"]


class _Progress:
    """One status line per stage: rewritten in place on a terminal, a few lines otherwise."""

    def __init__(self, log: Callable[[str], None] | None, label: str, total: int):
        self.log, self.label, self.total, self.done, self.failed = log, label, total, 0, 0
        self.tty = log is print and sys.stdout.isatty()
        self.t0 = time.perf_counter()
        self._last_pct = -1
        self._show()

    def step(self, failed: bool = False) -> None:
        self.done += 1
        self.failed += int(failed)
        self._show()

    def _show(self) -> None:
        if self.log is None:
            return
        msg = (f"  {self.label}: {self.done}/{self.total}"
               + (f" ({self.failed} failed)" if self.failed else "")
               + f"  [{time.perf_counter() - self.t0:.0f} s]")
        if self.tty:
            end = "\n" if self.done == self.total else ""
            print("\r" + msg, end=end, flush=True)
            return
        pct = 100 * self.done // max(1, self.total)
        if self.done in (0, self.total) or pct >= self._last_pct + 25:
            self._last_pct = pct
            self.log(msg)


class CampaignError(AlprobeError):
    """A stage could not finish (a training or evaluation task failed); resumable."""


class CampaignPaused(AlprobeError):
    """Too many labels of a generation failed; the campaign stopped before training on the rest."""


def read_spooled_label(spool: Path, fid: str) -> dict[str, Any] | None:
    """A label result a worker wrote to ``spool/<fid>.json`` (plain JSON), or None."""
    path = spool / f"{fid}.json"
    if not path.is_file():
        return None
    try:
        r = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None  # a torn file cannot exist (atomic rename), but never trust one
    if r.get("forces") is not None:
        r["forces"] = np.asarray(r["forces"], dtype=float)
    return r


class _Campaign:
    def __init__(self, cfg: CampaignConfig, directory: Path, client: Any,
                 log: Callable[[str], None] | None, accept_failures: bool = False,
                 key_prefix: str = ""):
        self.cfg, self.dir, self.client, self.log = cfg, directory, client, log
        self.accept_failures = accept_failures
        self.key_prefix = key_prefix  # keeps task keys of arms sharing a cluster apart
        self.rule = cfg.select.rule
        # Task CPU seconds of the generation in progress, kept in state.json so that a
        # stop and resume loses none of it.
        self.cpu: dict[str, float] = {}
        self._thread_cpu = time.thread_time()  # the driver's own CPU (one thread per arm)
        self._checked: set[str] = set()
        self.ledger = Ledger(directory, create=True)
        self.cpu = {k: float(v) for k, v in self.ledger.stage_info("cpu_pending").items()}
        self.seeds = load_seeds(cfg.system.seeds, cfg.source_dir) if cfg.system else []
        self.level = _level(cfg)
        self.pool = None
        if cfg.pool is not None:
            from .pool import read_pool

            self.pool = read_pool(cfg.pool, cfg.source_dir)
        self.spans: dict[str, list[tuple[float, float]]] = {}

    # ----- helpers --------------------------------------------------------------------------
    def say(self, msg: str) -> None:
        if self.log is not None:
            self.log(msg)

    def rng(self, gen: int, stage: str, *extra: int) -> np.random.Generator:
        """The stream of one stage; a replica (cfg.replica > 0) has streams of its own (MD,
        selection, training, probe; in a pool campaign also its initial set and test split)."""
        rep = [self.cfg.replica] if self.cfg.replica else []
        return np.random.default_rng([self.cfg.seed, gen, _RNG[stage], *extra, *rep])

    def seed(self, gen: int, stage: str, *extra: int) -> int:
        """Integer seed (0 <= s < 2**31) of a training run of ``stage`` ("train" for backbone
        members, "probe"), drawn from the same SeedSequence as rng(gen, stage, *extra)."""
        rep = [self.cfg.replica] if self.cfg.replica else []
        state = np.random.SeedSequence([self.cfg.seed, gen, _RNG[stage], *extra, *rep])
        return int(state.generate_state(1)[0] % 2**31)

    def committee_paths(self, gen: int) -> list[str]:
        """Model files of the committee of generation ``gen``: the backbone first."""
        return ([self.ledger.stage_info(f"gen{gen:03d}/train")["path"]]
                + list(self.ledger.stage_info(f"gen{gen:03d}/committee").get("members", [])))

    def model_dir(self, gen: int) -> Path:
        d = self.dir / "models" / f"gen_{gen:03d}"
        d.mkdir(parents=True, exist_ok=True)
        return d

    def _gather(self, futures: Sequence[Any], label: str, on_result: Callable[[Any, Any], bool],
                on_error: Callable[[Any, BaseException], dict[str, Any]] | None = None) -> None:
        """Consume results as they complete; on_result(tag, result) -> failed? (for display).

        A task that raised (or whose workers kept dying: KilledWorker) goes to
        ``on_error(tag, exc)``, which turns it into a result; without on_error the campaign
        stops with a one-line error (and can be resumed).
        """
        from distributed import as_completed

        bar = _Progress(self.log, label, len(futures))
        for fut in as_completed(futures):
            try:
                res = fut.result()
            except Exception as exc:  # noqa: BLE001 - task failures are data or a clean stop
                if on_error is None:
                    for f in futures:
                        f.cancel()
                    raise CampaignError(f"{label}: task {fut.key} failed: "
                                        f"{type(exc).__name__}: {exc}") from exc
                res = on_error(fut.tag, exc)
            if "t0" in res:
                self.spans.setdefault(label.split()[-1], []).append((res["t0"], res["t1"]))
            if "cpu_s" in res:
                acc = getattr(fut, "account", "other")
                self.cpu[acc] = self.cpu.get(acc, 0.0) + float(res["cpu_s"])
            bar.step(bool(on_result(fut.tag, res)))
        if futures:
            self.ledger.mark_done("cpu_pending", **self.cpu)

    def _submit(self, fn: Callable[..., Any], *args: Any, kind: str, key: str, tag: Any = None,
                retries: int = 1, account: str | None = None) -> Any:
        """Submit one task of ``kind`` (md, label, train, probe, evaluate) with the worker
        resources the cluster section asks for it (checked to exist before the first one).
        Its CPU time is booked to ``account`` (default: the kind; see ACCOUNTS)."""
        from .cluster import wait_for_resources

        resources = dict(self.cfg.cluster.resources.get(kind, {}))
        if kind not in self._checked:
            wait_for_resources(self.client, kind, resources, self.cfg.cluster.wait_for_resources_s)
            self._checked.add(kind)
        fut = self.client.submit(fn, *args, key=self.key_prefix + key, retries=retries,
                                 pure=False, resources=resources or None)
        fut.tag = tag
        fut.account = account or {"md": "explore"}.get(kind, kind)
        return fut

    # ----- stages ---------------------------------------------------------------------------
    def label_pending(self, gen: int, stage: str) -> dict[str, Any]:
        """Label every selected, not yet labeled frame of ``gen``; write each on arrival."""
        from .tasks import label_task

        if self.ledger.done(stage):
            return self.ledger.stage_info(stage)
        todo = self.ledger.frames(generation=gen, status="selected")
        t0 = time.perf_counter()
        dft_s = [0.0]
        spool = self.dir / "spool"
        spool.mkdir(exist_ok=True)

        def record(fid: str, r: dict[str, Any]) -> bool:
            dft_s[0] += r["wall_s"]
            attempts = {"attempts": " | ".join(r["attempts"])} if r["attempts"] else {}
            if r["status"] == "ok":
                note = {"reason": r["reason"]} if r["reason"] else {}
                self.ledger.update(fid, status="labeled", ref_energy=r["energy"],
                                   label_s=r["wall_s"],
                                   data={"ref_forces": np.asarray(r["forces"], dtype=float)},
                                   **note, **attempts)
                return False
            self.ledger.update(fid, status=r["status"], reason=r["reason"] or "unknown",
                               label_s=r["wall_s"], **attempts)
            return True

        def crashed(fid: str, exc: BaseException) -> dict[str, Any]:
            kind = type(exc).__name__
            why = (f"worker died on this structure repeatedly ({kind})" if kind == "KilledWorker"
                   else f"label task error: {kind}: {exc}")
            return {"status": "failed", "reason": " ".join(why.split())[:300], "wall_s": 0.0,
                    "attempts": []}

        if self.pool is not None:  # a pool campaign looks its labels up (each one a DFT call)
            with self.ledger.transaction():
                for a in todo:
                    e, f = self.pool.label(a.info["fid"])
                    record(a.info["fid"], {"status": "ok", "energy": e, "forces": f,
                                           "reason": "", "wall_s": 0.0, "attempts": []})
            todo = []
        # Labels finished on a worker but not recorded before a stop are taken from the spool.
        pending = []
        for a in todo:
            r = read_spooled_label(spool, a.info["fid"])
            if r is not None:
                record(a.info["fid"], r)
            else:
                pending.append(a)
        if len(pending) < len(todo):
            self.say(f"  gen {gen}: {len(todo) - len(pending)} finished label(s) recovered")
        futures = [self._submit(label_task, bare_copy(a), self.level, str(spool), kind="label",
                                key=f"label-{a.info['fid']}", tag=a.info["fid"], retries=2)
                   for a in pending]
        self._gather(futures, f"gen {gen} label", record, on_error=crashed)
        counts = {s: self.ledger.count(generation=gen, status=s) for s in _LABEL_OUTCOMES}
        for a in [a for s in _LABEL_OUTCOMES[1:] for a in self.ledger.frames(generation=gen,
                                                                              status=s)]:
            self.say(f"  label {a.info['fid']} {a.info['status']}: {a.info.get('reason', '')}")
        info = {**counts, "wall_s": time.perf_counter() - t0, "dft_s": dft_s[0]}
        self.ledger.mark_done(stage, **info)
        return info

    def run_walkers(self, gen: int, model_path: str, probe_path: str | None, steps: int,
                    label: str, n_walkers: int | None = None
                    ) -> tuple[list[Atoms], dict[str, Any]]:
        """``n_walkers`` (default explore.walkers) MD walkers of stream ``label`` (explore,
        bootstrap_md, test_md); returns their frames and what the stage records."""
        from .tasks import walker_task

        ex = self.cfg.explore
        futures = []
        rep = [self.cfg.replica] if self.cfg.replica else []
        for w in range(ex.walkers if n_walkers is None else n_walkers):
            settings = WalkerSettings(
                temperature_K=ex.temperatures_K[w % len(ex.temperatures_K)],
                timestep_fs=ex.timestep_fs, steps=steps, stride=ex.stride,
                friction_per_fs=ex.friction_per_fs, trust_floor=ex.trust_floor,
                patience=ex.patience, min_distance_A=ex.min_distance_A,
                fragment_distance_A=ex.fragment_distance_A)
            seed = [self.cfg.seed, gen, _RNG[label], w, *rep]
            start = self.seeds[w % len(self.seeds)]
            futures.append(self._submit(walker_task, start, model_path, probe_path, settings, seed,
                                        w, self.cfg.backbone.device, kind="md",
                                        key=f"walk-{label}-g{gen}-w{w}-{Path(model_path).stat().st_mtime_ns}",
                                        tag=w))
        results: dict[int, Any] = {}

        def record(w: int, r: dict[str, Any]) -> bool:
            results[w] = r
            return not r["stop_reason"].startswith("completed")

        def crashed(w: int, exc: BaseException) -> dict[str, Any]:
            why = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
            return {"frames": [], "stop_reason": f"walker task failed: {why}", "steps": 0,
                    "md_s": 0.0, "score_s": 0.0}

        t0 = time.perf_counter()
        self._gather(futures, f"gen {gen} {label}", record, on_error=crashed)
        frames: list[Atoms] = []
        for w in sorted(results):
            r = results[w]
            self.say(f"  walker {w} ({r['frames'][0].info['temperature_K'] if r['frames'] else '-'}"
                     f" K): {len(r['frames'])} frames, {r['stop_reason']}")
            frames += r["frames"]
        info = {"wall_s": time.perf_counter() - t0,
                "md_s": float(sum(r["md_s"] for r in results.values())),
                "score_s": float(sum(r["score_s"] for r in results.values())),
                "stops": [results[w]["stop_reason"] for w in sorted(results)],
                "n_frames": len(frames)}
        return frames, info

    def train(self, gen: int, foundation: str | None, epochs: int | None, name: str,
              frames: list[Atoms]) -> dict[str, Any]:
        """Train backbone ``name`` on ``frames`` (10% of them used for validation)."""
        return self.train_many(gen, [(name, foundation, epochs, frames, 0)])[0]

    def train_many(self, gen: int, jobs: Sequence[tuple[str, str | None, int | None,
                                                        list[Atoms], int]],
                   reseed: int = 0, folder: Path | None = None) -> list[dict[str, Any]]:
        """Train several models at once: jobs of (name, foundation, epochs, frames, member).

        Member 0 is the backbone; member k > 0 (a committee member) gets its own seed and
        validation split and, with committee.bootstrap, a bootstrap resample of ``frames``.
        ``reseed`` > 0: the same jobs with other seeds (the noise floor), written to ``folder``.
        Returns one {"path", "train_ids", "wall_s"} per job (wall_s: the task's own time).
        """
        from .tasks import train_task

        futures = []
        for name, foundation, epochs, frames, member in jobs:
            extra = ([member] if member else []) + ([10_000 + reseed] if reseed else [])
            rng = self.rng(gen, "train", *extra)
            if member and self.cfg.committee.bootstrap:
                frames = [frames[i] for i in np.sort(rng.integers(0, len(frames), len(frames)))]
            idx = rng.permutation(len(frames))
            n_val = max(1, len(frames) // 10)
            valid = [bare_with_ref(frames[i]) for i in idx[:n_val]]
            train = [bare_with_ref(frames[i]) for i in idx[n_val:]]
            out = (folder or self.model_dir(gen)) / f"{name}.model"
            self.say(f"  gen {gen} training {name} on {len(train)} + {n_val} validation frames"
                     + (" (fine-tune)" if foundation else " (from scratch)"))
            futures.append(self._submit(
                train_task, train, valid, str(out), self.cfg.backbone,
                self.seed(gen, "train", *extra), foundation, epochs,
                kind="train", key=f"train-{name}-g{gen}" + (f"-s{reseed}" if reseed else ""),
                tag=(name, foundation, frames, str(out))))
        out_info: dict[str, dict[str, Any]] = {}

        def record(tag: tuple[str, str | None, list[Atoms], str], res: dict[str, Any]) -> bool:
            name, foundation, frames, out = tag
            ids = sorted({a.info["fid"] for a in frames})
            atomic_write_text(Path(out).with_suffix(".json"), json.dumps(
                {"train_ids": ids, "foundation": foundation, "epochs": res["epochs"],
                 "wall_s": res["wall_s"]}, indent=1))
            out_info[name] = {"path": out, "train_ids": ids, "wall_s": res["wall_s"]}
            return False

        self._gather(futures, f"gen {gen} train", record)
        return [out_info[j[0]] for j in jobs]

    def committee(self, gen: int, jobs_frames: list[Atoms] | None = None) -> None:
        """Members 1..M-1 of generation ``gen``'s committee (ensemble arm only).

        Generation 0: trained like backbone 0 on its training frames, with other seeds.
        Later: each member fine-tuned from its predecessor on the same frames as the backbone
        (done together with the backbone in generation(); this handles generation 0 and a
        backbone that is not fine-tuned).
        """
        L, cfg = self.ledger, self.cfg
        stage = f"gen{gen:03d}/committee"
        if self.rule != "ensemble" or L.done(stage):
            return
        t0 = time.perf_counter()
        M = cfg.committee.members
        if gen > 0 and (not cfg.backbone.finetune or gen % cfg.backbone.refresh_every):
            members = self.committee_paths(gen - 1)[1:]  # frozen with the backbone
        else:
            ids = set(L.stage_info(f"gen{gen:03d}/train")["train_ids"])
            frames = [a for a in L.frames(status="labeled") if a.info["fid"] in ids]
            if not frames:  # a user model used as is: members fine-tune it on the gen-0 data
                frames = L.frames(status="labeled", split="train")
            user = cfg.resolve(cfg.backbone.model_file) if cfg.backbone.model_file else None
            epochs = cfg.backbone.finetune_epochs if user else None
            infos = self.train_many(gen, [(f"member{k}", str(user) if user else None, epochs,
                                           frames, k) for k in range(1, M)])
            members = [i["path"] for i in infos]
        L.mark_done(stage, members=members, wall_s=time.perf_counter() - t0)

    # ----- generation 0 ---------------------------------------------------------------------
    def initial(self) -> None:
        """Generation 0: the initial labels, the held-out test set, backbone 0 and probe 0."""
        if self.pool is not None:
            self.initial_from_pool()
        else:
            self.initial_from_md()
        L, cfg = self.ledger, self.cfg
        if not L.done("gen000/train"):
            train = L.frames(status="labeled", split="train")
            user = cfg.resolve(cfg.backbone.model_file) if cfg.backbone.model_file else None
            if user is not None and not cfg.backbone.finetune:
                from .backbone import load_model

                load_model(user)  # clear error now if the file is unusable
                dest = self.model_dir(0) / "backbone.model"
                shutil.copyfile(user, dest)
                info = {"path": str(dest), "train_ids": [], "wall_s": 0.0}
            else:
                info = self.train(0, str(user) if user else None,
                                  cfg.backbone.finetune_epochs if user else None, "backbone", train)
            L.mark_done("gen000/train", **info)
        self.after_training(0)

    def initial_from_md(self) -> None:
        """Rattled seeds (labeled) train a bootstrap backbone, which drives short MD: training
        walkers give ``n_md`` training frames, separate test walkers the test set. No frame of
        a test walker's trajectory is ever trained on, selected or seen by a probe."""
        cfg, L = self.cfg, self.ledger
        ini = cfg.initial
        if not L.done("gen000/rattle"):
            rng = self.rng(0, "rattle")
            frames = []
            for i in range(ini.n_rattle):
                a = bare_copy(self.seeds[i % len(self.seeds)])
                sigma = ini.rattle_A * (i + 1) / ini.n_rattle
                a.positions += rng.normal(0.0, sigma, a.positions.shape)
                frames.append(a)
            with L.transaction():
                L.add(frames, generation=0, origin="initial", status="selected")
                L.mark_done("gen000/rattle", n=len(frames))
        self.label_pending(0, "gen000/label_rattle")
        if not L.done("gen000/bootstrap"):
            driver = self.bootstrap_model()
            frames, info = ([], {})
            if ini.n_md > 0:
                frames, info = self.run_walkers(0, driver, None, ini.md_steps, "bootstrap_md")
            rng = self.rng(0, "bootstrap_md")
            pick = rng.choice(len(frames), size=min(ini.n_md, len(frames)), replace=False)
            chosen = [bare_copy(frames[i]) for i in sorted(pick)]
            test, tinfo = self.test_walkers(driver)
            if len(chosen) < ini.n_md or len(test) < ini.test_size:
                self.say(f"  gen 0 WARNING: {len(chosen)} of {ini.n_md} MD training frames and "
                         f"{len(test)} of {ini.test_size} test frames (walkers stopped early)")
            with L.transaction():
                L.add(chosen, generation=0, origin="initial", status="selected")
                L.add(test, generation=0, origin="test_walker", status="selected", split="test")
                L.mark_done("gen000/bootstrap", n=len(chosen), n_test=len(test), **info,
                            test_walkers=tinfo)
        self.label_pending(0, "gen000/label_md")
        parts = [L.stage_info(f"gen000/label_{p}") for p in ("rattle", "md")]
        if not L.done("gen000/label"):
            L.mark_done("gen000/label", **{k: sum(p.get(k, 0) for p in parts)
                                           for k in (*_LABEL_OUTCOMES, "wall_s", "dft_s")})
        if not L.done("gen000/split"):
            test = sorted(L.fids(generation=0, status="labeled", split="test"))
            rest = sorted(set(L.fids(generation=0, status="labeled")) - set(test))
            rest = [rest[i] for i in self.rng(0, "split").permutation(len(rest))]
            n_cal = max(2, int(round(ini.calibration_fraction * len(rest))))
            with L.transaction():
                L.update_many(rest[:n_cal], split="calib")
                L.update_many(rest[n_cal:], split="train")
                L.mark_done("gen000/split", test=len(test), calib=n_cal,
                            train=len(rest) - n_cal)

    def bootstrap_model(self) -> str:
        """The model that drives generation 0's MD: the user's model file if one is given,
        else a bootstrap backbone trained from scratch on the labeled rattled frames."""
        cfg, L = self.cfg, self.ledger
        if cfg.backbone.model_file:
            return str(cfg.resolve(cfg.backbone.model_file))
        stage = L.stage_info("gen000/bootstrap_train")
        if not stage:
            boot = L.frames(generation=0, status="labeled")
            stage = self.train(0, None, max(10, cfg.backbone.epochs // 2), "bootstrap", boot)
            L.mark_done("gen000/bootstrap_train", **stage)
        return stage["path"]

    def test_walkers(self, model: str) -> tuple[list[Atoms], dict[str, Any]]:
        """The test set: ``initial.test_size`` frames spread evenly over the trajectories of
        ``initial.test_walkers`` walkers of their own (seed stream ``test_md``)."""
        from .dataset import spread_pick

        ini, ex = self.cfg.initial, self.cfg.explore
        n = ini.test_walkers
        per = [ini.test_size // n + (1 if w < ini.test_size % n else 0) for w in range(n)]
        steps = ini.test_md_steps or max(ini.md_steps, max(per) * ex.stride)
        frames, info = self.run_walkers(0, model, None, steps, "test_md", n_walkers=n)
        out = []
        for w in range(n):
            mine = [a for a in frames if a.info["walker"] == w]
            for i in spread_pick(len(mine), per[w]):
                b = bare_copy(mine[i])
                b.info.update(test_walker=w, step=mine[i].info["step"],
                              temperature_K=mine[i].info["temperature_K"])
                out.append(b)
        return out, {"steps": steps, "stops": info.get("stops", []), "wall_s": info["wall_s"]}

    def initial_from_pool(self) -> None:
        """Pool mode: the test set (a separate file, or whole groups of the pool) and the
        initial labels drawn from the rest, all in one transaction; no DFT."""
        from .dataset import calibration_mask, group_split, random_subset

        cfg, L, pool = self.cfg, self.ledger, self.pool
        if L.done("gen000/split"):
            return
        rng = self.rng(0, "split")
        if pool.test is not None:
            test, rest = pool.test, pool.frames
        else:
            mask = group_split(pool.groups, cfg.pool.test_fraction, rng)
            test = [a for a, m in zip(pool.frames, mask) if m]
            rest = [a for a, m in zip(pool.frames, mask) if not m]
        init = [rest[i] for i in random_subset(len(rest), cfg.pool.initial_size, rng)]
        calib = calibration_mask(len(init), cfg.initial.calibration_fraction, rng, minimum=2)
        train = [a for a, c in zip(init, calib) if not c]
        held = [a for a, c in zip(init, calib) if c]
        with L.transaction():
            L.add(test, generation=0, origin="pool", status="labeled", split="test")
            L.add(train, generation=0, origin="pool", status="labeled", split="train")
            L.add(held, generation=0, origin="pool", status="labeled", split="calib")
            L.mark_done("gen000/label", labeled=len(init), failed=0, rejected=0, timeout=0,
                        wall_s=0.0, dft_s=0.0)
            L.mark_done("gen000/split", test=len(test), calib=len(held), train=len(train),
                        pool=len(pool.frames), test_groups=len({a.info["group"] for a in test}))
        self.say(f"  gen 0: pool of {len(pool.frames)} frames; {len(test)} test frames, "
                 f"{len(init)} initial labels ({len(held)} held out for the probe)")

    def explore_pool(self, gen: int, model: str, probe: str | None) -> tuple[list[Atoms],
                                                                             dict[str, Any]]:
        """Pool mode's candidates: the pool's unlabeled non-test frames (or a seeded random
        subset), scored by backbone g-1 (raw predictions) and probe g-1."""
        from .dataset import random_subset
        from .tasks import score_task

        cfg = self.cfg
        taken = {k["fid"] for k in self.ledger.keys() if k["status"] != "candidate"}
        unlabeled = [a for a in self.pool.frames if a.info["fid"] not in taken]
        cands = [unlabeled[i] for i in random_subset(len(unlabeled), cfg.pool.candidates,
                                                     self.rng(gen, "explore"))]
        chunk = 500
        futures = [self._submit(score_task, model, probe, [bare_copy(a) for a in
                                                           cands[i:i + chunk]],
                                cfg.backbone.device, kind="md", key=f"score-g{gen}-c{i}", tag=i)
                   for i in range(0, len(cands), chunk)]
        t0 = time.perf_counter()
        out: list[Atoms] = []

        def record(i: int, r: dict[str, Any]) -> bool:
            for k, a in enumerate(cands[i:i + chunk]):
                b = bare_copy(a)
                b.info.update({key: a.info[key] for key in ("fid", "group", "walker", "sample")})
                set_prediction(b, r["energy"][k], r["forces"][k])
                b.info["trust"] = float(r["trust"][k])
                out.append(b)
            return False

        self._gather(futures, f"gen {gen} score", record)
        out.sort(key=lambda a: a.info["fid"])
        return out, {"wall_s": time.perf_counter() - t0, "n_frames": len(out),
                     "n_unlabeled": len(unlabeled), "source": "pool"}

    # ----- probe and evaluation ---------------------------------------------------------------
    def after_training(self, gen: int) -> None:
        from .tasks import fit_probe_task, predict_task

        L, cfg = self.ledger, self.cfg
        tinfo = L.stage_info(f"gen{gen:03d}/train")
        model_path, seen = tinfo["path"], set(tinfo["train_ids"])
        # Every backbone this model descends from saw its own training frames too.
        for g in range(gen):
            seen |= set(L.stage_info(f"gen{g:03d}/train").get("train_ids", []))
        futures = []
        if gen > 0 and self.rule != "probe" and not L.done(f"gen{gen:03d}/probe"):
            L.mark_done(f"gen{gen:03d}/probe", path=None, train_ids=[], threshold=None,
                        reason=f"the {self.rule} arm does not use PROBE", wall_s=0.0)
        if not L.done(f"gen{gen:03d}/probe"):
            pool = [a for split in ("calib", "train") for a in L.frames(status="labeled", split=split)
                    if a.info["fid"] not in seen]
            ids = sorted(a.info["fid"] for a in pool)
            meta = {"train_ids": ids, "backbone": model_path, "generation": gen}
            out = str(self.model_dir(gen) / "probe.pt")
            self.say(f"  gen {gen} training probe on {len(pool)} out-of-sample frames")
            futures.append(self._submit(fit_probe_task, model_path,
                                        [bare_with_ref(a) for a in pool], cfg.probe,
                                        self.seed(gen, "probe"), out, meta, kind="probe",
                                        key=f"probe-g{gen}-{len(pool)}", tag="probe"))
        if not L.done(f"gen{gen:03d}/evaluate"):
            test = L.frames(status="labeled", split="test")
            futures.append(self._submit(predict_task, model_path, [bare_copy(a) for a in test],
                                        cfg.backbone.device, kind="evaluate", key=f"eval-g{gen}", tag="eval"))
        def record(tag: str, r: dict[str, Any]) -> bool:
            if tag == "probe":
                if r["path"] is None:
                    self.say(f"  probe not trained: {r['reason']} (selection falls back to random)")
                L.mark_done(f"gen{gen:03d}/probe", path=r["path"], reason=r["reason"],
                            train_ids=r["meta"].get("train_ids", []),
                            threshold=r["meta"].get("threshold"),
                            wall_s=r["t1"] - r["t0"])
                return r["path"] is None
            test = L.frames(status="labeled", split="test")
            for a, e, f in zip(test, r["energy"], r["forces"]):
                set_prediction(a, e, f)
            from .paired import bootstrap_mae_ci

            _, lo, hi = bootstrap_mae_ci(
                [np.abs(a.arrays["pred_forces"] - a.arrays["ref_forces"]).ravel() for a in test],
                self.rng(gen, "evaluate"))
            L.mark_done(f"gen{gen:03d}/evaluate", **regression_errors(test),
                        force_mae_lo_eV_A=lo, force_mae_hi_eV_A=hi, n_test=len(test),
                        wall_s=r["t1"] - r["t0"])
            return False

        if futures:
            self._gather(futures, f"gen {gen} probe+evaluate", record)
        self.audit(gen)
        self.write_metrics(gen)

    def audit(self, gen: int) -> None:
        """Audit probe g on the test set, and probe g-1 on the frames labeled in generation g.

        Writes audits/gen_NNN_{test,new}_audit.{txt,json,png} and importance pictures of the
        least trusted test frames. Both sets are out of sample for the probe audited.
        """
        from .audit import draw_importance, write_audit
        from .tasks import audit_task

        L, cfg = self.ledger, self.cfg
        stage = f"gen{gen:03d}/audit"
        if L.done(stage):
            return
        t0 = time.perf_counter()
        out_dir = self.dir / "audits"
        jobs = {"test": (gen, L.frames(status="labeled", split="test"))}
        if gen > 0:
            jobs["new"] = (gen - 1, L.frames(generation=gen, status="labeled"))
        futures = []
        labeled = L.frames(status="labeled")  # read once for both audits
        for name, (g, frames) in jobs.items():
            if len(frames) < 2:
                continue
            probe = L.stage_info(f"gen{g:03d}/probe").get("path")
            tinfo = L.stage_info(f"gen{g:03d}/train")
            ids = set(tinfo["train_ids"])
            train = [bare_with_ref(a) for a in labeled if a.info["fid"] in ids]
            committee = (self.committee_paths(g) if self.rule == "ensemble"
                         and L.done(f"gen{g:03d}/committee") else [])
            futures.append(self._submit(
                audit_task, [bare_with_ref(a) for a in frames], tinfo["path"], probe, train,
                cfg.probe.error, 3 if name == "test" and probe else 0, cfg.backbone.device,
                committee, kind="evaluate", account="audit", key=f"audit-{name}-g{gen}",
                tag=(name, frames)))
        summary: dict[str, Any] = {}
        shared: dict[str, Any] = {}

        def record(tag: tuple[str, list[Atoms]], r: dict[str, Any]) -> bool:
            name, frames = tag
            errors = r["errors"]
            tau = r["tau_probe"] if r["tau_probe"] is not None else self.tau()
            tau = float(np.median(errors)) if tau is None else tau
            res = write_audit(out_dir, f"gen_{gen:03d}_{name}", r["signals"], errors, tau,
                              r["probabilities"], rng=self.rng(gen, "probe"), n_boot=500)
            summary[name] = {row["signal"]: row["auroc"] for row in res["rows"]}
            # the same AUROC at generation 0's threshold, comparable between arms
            shared_tau = self.tau()
            shared[name] = {sig: (float(auroc_unreliable(np.asarray(conf), errors, shared_tau))
                                  if shared_tau is not None else float("nan"))
                            for sig, conf in r["signals"].items()}
            for i, imp in r["importance"].items():
                a = frames[i]
                draw_importance(a, imp, out_dir / f"gen_{gen:03d}_importance_{a.info['fid']}.png",
                                title=f"gen {gen} {a.info['fid']}: P(reliable) "
                                      f"{r['signals']['probe'][i]:.2f}, error {errors[i]:.3f}")
            return False

        if futures:
            self._gather(futures, f"gen {gen} audit", record)
        L.mark_done(stage, auroc=summary, auroc_tau0=shared, wall_s=time.perf_counter() - t0)

    def tau(self) -> float | None:
        """The unreliability threshold of generation 0's probe (error units of probe.error),
        shared by every arm of a comparison; None if probe 0 could not be trained."""
        t = self.ledger.stage_info("gen000/probe").get("threshold")
        return None if t is None else float(t)

    def confidence(self, frames: Sequence[Atoms]) -> np.ndarray | None:
        """The arm's own trust signal (higher = more trusted) of frames as scored before their
        labels existed: P(reliable) for the probe arm, minus the committee's sigma for the
        ensemble arm; None for random."""
        if self.rule == "probe":
            return np.array([a.info.get("trust", np.nan) for a in frames], dtype=float)
        if self.rule == "ensemble":
            key = "sigma_f" if self.cfg.committee.signal == "force" else "sigma_e"
            return -np.array([a.info.get(key, np.nan) for a in frames], dtype=float)
        return None

    def signal_metrics(self, gen: int) -> dict[str, Any]:
        """The arm's trust signal of generation g-1 (PROBE, or the committee's sigma) measured
        on generation g: the probe's training pool, the candidates' P(reliable) quantiles, and
        AUROC / Spearman (errors from the raw predictions, at generation 0's threshold) on the
        frames the rule picked (a range-restricted sample), on the random audit sample
        (select.audit_random), and, in a pool, on every candidate (their labels are known)."""
        from .metrics import spearman

        L, cfg = self.ledger, self.cfg
        nan = float("nan")
        row: dict[str, Any] = {
            "probe_pool": len(L.stage_info(f"gen{gen:03d}/probe").get("train_ids", []))}
        for q in (10, 25, 50, 75, 90):
            row[f"trust_q{q}"] = nan
        for where in ("new", "audit", "candidates"):
            row[f"trust_auroc_{where}"] = row[f"trust_spearman_{where}"] = nan
            row[f"n_{where}"] = 0
        row["probe_auroc_new"] = nan
        if gen == 0:
            return row
        cands = [a for a in L.frames(generation=gen) if "pred_forces" in a.arrays]
        trust = np.array([a.info.get("trust", np.nan) for a in cands], dtype=float)
        if np.isfinite(trust).any():
            for q, v in zip((10, 25, 50, 75, 90), np.nanpercentile(trust, [10, 25, 50, 75, 90])):
                row[f"trust_q{q}"] = float(v)
        tau = self.tau()
        if self.pool is not None:
            for a in cands:
                if "ref_forces" not in a.arrays:
                    a.info["ref_energy"], a.arrays["ref_forces"] = self.pool.label(a.info["fid"])
        labeled = [a for a in cands if a.info.get("status") == "labeled"]
        sets = {"new": [a for a in labeled if not a.info.get("audit")],
                "audit": [a for a in labeled if a.info.get("audit")],
                "candidates": cands if self.pool is not None else []}
        for where, frames in sets.items():
            row[f"n_{where}"] = len(frames)
            conf = self.confidence(frames)
            if conf is None or len(frames) < 2 or tau is None or not np.isfinite(conf).all():
                continue
            errors = frame_errors(frames, cfg.probe.error)
            row[f"trust_auroc_{where}"] = auroc_unreliable(conf, errors, tau)
            row[f"trust_spearman_{where}"] = float(spearman(conf, errors))
        if self.rule == "probe":
            row["probe_auroc_new"] = row["trust_auroc_new"]
        return row

    def signal_name(self) -> str | None:
        """The audit row of the signal this arm selects by (None for random)."""
        return {"probe": "probe", "random": None,
                "ensemble": "ensemble_epsF" if self.cfg.committee.signal == "force"
                else "ensemble_Estd"}[self.rule]

    def write_metrics(self, gen: int) -> None:
        L, cfg = self.ledger, self.cfg
        if L.done(f"gen{gen:03d}/metrics"):
            return  # a resume after the row was written must not overwrite it
        ev = L.stage_info(f"gen{gen:03d}/evaluate")
        row: dict[str, Any] = {"generation": gen}
        row["labels"] = L.count(status="labeled") - L.count(status="labeled", split="test")
        row["labels_new"] = L.count(generation=gen, status="labeled")
        row["failed_new"] = sum(L.count(generation=gen, status=s) for s in _LABEL_OUTCOMES[1:])
        row.update({k: ev.get(k, float("nan")) for k in (
            "energy_mae_eV_per_atom", "force_mae_eV_A", "force_rmse_eV_A", "force_mae_lo_eV_A",
            "force_mae_hi_eV_A", "n_test")})
        row.update(self.signal_metrics(gen))
        audits = L.stage_info(f"gen{gen:03d}/audit").get("auroc", {})
        row["probe_auroc_test"] = float(audits.get("test", {}).get("probe", float("nan")))
        name = self.signal_name()
        row["rule"] = self.rule
        row["signal"] = name or "random"
        at_tau0 = L.stage_info(f"gen{gen:03d}/audit").get("auroc_tau0", {})
        row["signal_auroc_test"] = float(at_tau0.get("test", {}).get(name, float("nan")))
        row["signal_auroc_new"] = float(at_tau0.get("new", {}).get(name, float("nan")))
        # Hit rate: frames the rule selected (not the random audit sample) whose true error
        # under the model that picked them exceeds generation 0's threshold (the same for every
        # arm).
        tau, new = self.tau(), [a for a in L.frames(generation=gen, status="labeled")
                                if "pred_energy" in a.info and gen > 0 and not a.info.get("audit")]
        row["tau"] = float("nan") if tau is None else tau
        row["hit_rate"] = (float(np.mean(frame_errors(new, cfg.probe.error) > tau))
                           if new and tau is not None else float("nan"))
        # ... and at the user's absolute threshold (force RMSE, eV/A), with the base rate over
        # every candidate where their labels are known (a pool)
        hit = cfg.select.hit_threshold_force_rmse_eV_A
        row["hit_threshold_force_rmse_eV_A"] = float("nan") if hit is None else hit
        row["hit_rate_abs"] = (float(np.mean(frame_errors(new, "force_rmse") > hit))
                               if new and hit is not None else float("nan"))
        row["hit_base_rate_abs"] = float("nan")
        if self.pool is not None and hit is not None and gen > 0:
            cands = [a for a in L.frames(generation=gen) if "pred_forces" in a.arrays]
            for a in cands:
                e, f = self.pool.label(a.info["fid"])
                a.info["ref_energy"], a.arrays["ref_forces"] = e, f
            if cands:
                row["hit_base_rate_abs"] = float(np.mean(frame_errors(cands, "force_rmse") > hit))
        row["dft_calls"] = sum(L.count(status=s) for s in _LABEL_OUTCOMES) - L.count(
            status="labeled", split="test")
        for acc in ACCOUNTS:
            row[f"{acc}_cpu_s"] = float(self.cpu.get(acc, 0.0))
        row["driver_cpu_s"] = time.thread_time() - self._thread_cpu
        self._thread_cpu = time.thread_time()
        row["cpu_s"] = float(sum(self.cpu.values())) + row["driver_cpu_s"]
        self.cpu.clear()
        stages = ("explore", "deviation", "select", "label", "train", "probe", "evaluate",
                  "audit")
        for s in stages:
            row[f"{s}_s"] = float(L.stage_info(f"gen{gen:03d}/{s}").get("wall_s", 0.0))
        # generation 0's committee is trained at the start of generation 1 (ensemble arm)
        row["committee_s"] = (float(L.stage_info("gen000/committee").get("wall_s", 0.0))
                              if gen == 1 else 0.0)
        ex = L.stage_info(f"gen{gen:03d}/explore")
        row["md_s"] = float(ex.get("md_s", 0.0))
        row["score_s"] = float(ex.get("score_s", 0.0))
        row["dft_s"] = float(L.stage_info(f"gen{gen:03d}/label").get("dft_s", 0.0))
        gen_t = L.stage_info(f"gen{gen:03d}/start").get("t", None)
        row["wall_s"] = float(time.time() - gen_t) if gen_t else float("nan")
        row["task_span_s"] = float(sum(_span(v) for v in self.spans.values()))
        row["overhead_fraction"] = (float(max(0.0, 1 - row["task_span_s"] / row["wall_s"]))
                                    if row["wall_s"] == row["wall_s"] and row["wall_s"] > 0
                                    else float("nan"))
        self.spans.clear()
        with L.transaction():  # the row, its record and the emptied CPU account together
            L.add_metrics(row)
            L.mark_done(f"gen{gen:03d}/metrics")
            L.mark_done("cpu_pending")
        self.say(f"gen {gen}: {row['labels']} labels, test E MAE "
                 f"{1000 * row['energy_mae_eV_per_atom']:.1f} meV/atom, F MAE "
                 f"{1000 * row['force_mae_eV_A']:.0f} meV/A (95% CI "
                 f"{1000 * row['force_mae_lo_eV_A']:.0f}-{1000 * row['force_mae_hi_eV_A']:.0f}), "
                 f"trust AUROC on the picked frames {row['trust_auroc_new']:.2f}")

    # ----- generation g >= 1 ------------------------------------------------------------------
    def generation(self, gen: int) -> None:
        L, cfg = self.ledger, self.cfg
        tag = f"gen{gen:03d}"
        prev_model = L.stage_info(f"gen{gen - 1:03d}/train")["path"]
        # Only the probe arm's walkers are scored (and stopped) by PROBE.
        prev_probe = (L.stage_info(f"gen{gen - 1:03d}/probe").get("path")
                      if self.rule == "probe" else None)
        self.committee(gen - 1)
        if not L.done(f"{tag}/explore"):
            if self.pool is not None:
                frames, info = self.explore_pool(gen, prev_model, prev_probe)
                with L.transaction():
                    L.put(frames, generation=gen, origin="pool", status="candidate")
                    L.mark_done(f"{tag}/explore", **info)
            else:
                frames, info = self.run_walkers(gen, prev_model, prev_probe, cfg.explore.steps,
                                                "explore")
                with L.transaction():
                    L.add(frames, generation=gen, origin="explore", status="candidate")
                    L.mark_done(f"{tag}/explore", **info)
        if self.rule == "ensemble":
            self.deviation(gen)
        if not L.done(f"{tag}/select"):
            self.select(gen)
        info = self.label_pending(gen, f"{tag}/label")
        n_sent = sum(info.get(s, 0) for s in _LABEL_OUTCOMES)
        n_bad = n_sent - info.get("labeled", 0)
        ceiling = cfg.select.max_failed_fraction
        if n_sent and n_bad / n_sent > ceiling and not L.done(f"{tag}/failures_accepted"):
            if not self.accept_failures:
                raise CampaignPaused(
                    f"generation {gen}: {n_bad} of {n_sent} labels failed (more than "
                    f"{ceiling:.0%}); paused before training. Inspect the reasons with "
                    f"`ase db {self.dir / 'ledger.db'} generation={gen} status!=labeled "
                    f"-c fid,status,reason`, then resume with --accept-failures to train on "
                    f"the {n_sent - n_bad} good labels")
            L.mark_done(f"{tag}/failures_accepted", failed=n_bad, sent=n_sent)
        if not L.done(f"{tag}/train"):
            t0 = time.perf_counter()
            if cfg.backbone.finetune and gen % cfg.backbone.refresh_every == 0:
                # The probe arm keeps its calibration frames out of backbone training (PROBE
                # needs out-of-sample errors); the other arms train on all their labels.
                splits = ("train",) if self.rule == "probe" else ("train", "calib")
                frames = [a for sp in splits for a in L.frames(status="labeled", split=sp)]
                prev = (self.committee_paths(gen - 1) if self.rule == "ensemble"
                        else [prev_model])
                jobs = [(name, *self.start_point(prev[k]), frames, k)
                        for k, name in enumerate(["backbone", *(f"member{k}" for k in
                                                                range(1, len(prev)))])]
                infos = self.train_many(gen, jobs)
                wall = time.perf_counter() - t0
                info = {**infos[0], "wall_s": wall}
            else:
                infos, wall = [], 0.0
                info = {"path": prev_model, "train_ids": [], "wall_s": 0.0}
            with L.transaction():
                if self.rule == "ensemble" and infos:
                    L.mark_done(f"{tag}/committee", members=[i["path"] for i in infos[1:]],
                                wall_s=wall)
                L.mark_done(f"{tag}/train", **info)
        self.committee(gen)
        self.after_training(gen)

    def start_point(self, previous: str) -> tuple[str | None, int | None]:
        """(foundation model, epochs) of a generation's training run: fine-tune ``previous``
        (backbone.retrain: finetune), or start again from the user's model file or from
        scratch (retrain: scratch)."""
        bb = self.cfg.backbone
        if bb.retrain == "finetune":
            return previous, bb.finetune_epochs
        if bb.model_file:
            return str(self.cfg.resolve(bb.model_file)), bb.finetune_epochs
        return None, None

    def deviation(self, gen: int) -> None:
        """Ensemble arm: committee g-1 disagreement on every candidate of generation ``gen``.

        Member 0 (the backbone that drove the walkers) already predicted each frame; members
        1..M-1 predict them here in chunks of 2000 frames, one task per member and chunk.
        Stores sigma_f (eps_F, eV/A) and sigma_e (energy std per atom, eV) in the ledger.
        """
        from .committee import energy_std_per_atom, max_force_deviation
        from .tasks import predict_task

        L, stage = self.ledger, f"gen{gen:03d}/deviation"
        if L.done(stage):
            return
        t0 = time.perf_counter()
        cands = L.frames(generation=gen, status="candidate")
        members = self.committee_paths(gen - 1)
        energies = np.full((len(members), len(cands)), np.nan)
        forces: list[list[Any]] = [[None] * len(cands) for _ in members]
        for i, a in enumerate(cands):
            energies[0, i] = a.info["pred_energy"]
            forces[0][i] = a.arrays["pred_forces"]
        chunk = 2000
        futures = [self._submit(predict_task, path, [bare_copy(a) for a in cands[s:s + chunk]],
                                self.cfg.backbone.device, kind="md", account="deviation",
                                key=f"deviation-g{gen}-m{k}-c{s}", tag=(k, s))
                   for k, path in enumerate(members) if k > 0
                   for s in range(0, len(cands), chunk)]

        def record(tag: tuple[int, int], r: dict[str, Any]) -> bool:
            k, s = tag
            energies[k, s:s + len(r["energy"])] = r["energy"]
            forces[k][s:s + len(r["forces"])] = r["forces"]
            return False

        if futures:
            self._gather(futures, f"gen {gen} deviation", record)
        with L.transaction():
            for i, a in enumerate(cands):
                L.update(a.info["fid"],
                         sigma_f=max_force_deviation([forces[k][i] for k in range(len(members))]),
                         sigma_e=energy_std_per_atom(energies[:, i], len(a)))
            L.mark_done(stage, n=len(cands), members=len(members),
                        wall_s=time.perf_counter() - t0)

    def select(self, gen: int) -> None:
        """Choose this generation's frames by the arm's rule; assign calibration frames."""
        L, cfg = self.ledger, self.cfg
        t0 = time.perf_counter()
        cands = L.keys(generation=gen, status="candidate")
        walker = np.array([k["walker"] for k in cands], dtype=int)
        sample = np.array([k["sample"] for k in cands], dtype=int)
        rng = self.rng(gen, "select")
        extra: dict[str, Any] = {}
        budget = cfg.select.budget - cfg.select.audit_random
        if self.rule == "random":
            pick = select_random(len(cands), budget, rng=rng)
        elif self.rule == "ensemble":
            c = cfg.committee
            sigma = np.array([k.get("sigma_f" if c.signal == "force" else "sigma_e", np.nan)
                              for k in cands], dtype=float)
            pick = select_by_deviation(sigma, walker, sample, budget,
                                       cfg.select.min_spacing, c.sigma_lo, c.sigma_hi, rng=rng)
            inside = deviation_window(sigma, c.sigma_lo, c.sigma_hi)
            extra = {"in_window": int(inside.sum()),
                     "above_hi": int(np.sum(sigma >= c.sigma_hi)) if c.sigma_hi else 0}
        else:
            trust = np.array([k.get("trust", np.nan) for k in cands], dtype=float)
            pick = select_least_trusted(trust, walker, sample, budget,
                                        cfg.select.min_spacing, rng=rng)
        chosen = sorted(cands[i]["fid"] for i in pick)
        audit: list[str] = []
        if cfg.select.audit_random:  # a random sample of the rest, for unbiased audits
            rest = [k["fid"] for k in cands if k["fid"] not in set(chosen)]
            audit = [rest[i] for i in select_random(len(rest), cfg.select.audit_random,
                                                    rng=self.rng(gen, "select", 1))]
            extra["audit"] = len(audit)
        if self.rule == "probe" and cands and not np.isfinite(trust).any():
            extra["fallback"] = "no probe scores: least-trusted order is random"
            self.say(f"  gen {gen} WARNING: no frame has a probe score (probe {gen - 1} was not "
                     "trained); the probe arm selects at random this generation")
        if len(chosen) < budget:
            self.say(f"  gen {gen} WARNING: only {len(chosen)} frame(s) eligible for a budget "
                     f"of {budget} ({len(cands)} candidates)")
        calib = rng.random(len(chosen) + len(audit)) < cfg.initial.calibration_fraction
        if self.rule != "probe":
            calib[:] = False  # only PROBE needs held-out frames
        with L.transaction():
            for fid, c_ in zip(chosen + audit, calib):
                L.update(fid, status="selected", split="calib" if c_ else "train",
                         audit=fid in audit)
            L.mark_done(f"gen{gen:03d}/select", n=len(chosen), n_candidates=len(cands),
                        rule=self.rule, wall_s=time.perf_counter() - t0, **extra)
        self.say(f"  gen {gen} selected {len(chosen)} of {len(cands)} candidates by {self.rule}"
                 + (f" and {len(audit)} at random for the audit" if audit else "")
                 + (f" ({int(calib.sum())} held out for the probe)" if self.rule == "probe"
                    else "")
                 + (f" ({extra['in_window']} inside the trust window, {extra['above_hi']} "
                    "above it)" if "in_window" in extra else ""))


def bare_with_ref(a: Atoms) -> Atoms:
    """Positions plus reference label and id only (what a worker needs)."""
    b = bare_copy(a)
    for k in ("fid", "ref_energy"):
        if k in a.info:
            b.info[k] = a.info[k]
    if "ref_forces" in a.arrays:
        b.arrays["ref_forces"] = a.arrays["ref_forces"]
    return b


def _span(intervals: list[tuple[float, float]]) -> float:
    """Length of the union of [t0, t1] intervals (s)."""
    total, end = 0.0, -np.inf
    for t0, t1 in sorted(intervals):
        if t0 > end:
            total += t1 - t0
            end = t1
        elif t1 > end:
            total += t1 - end
            end = t1
    return total


def prepare_folder(cfg: CampaignConfig, directory: Path, allow_changes: bool) -> None:
    """Create or check a campaign folder: refuse changed science settings (unless
    ``allow_changes``); write the resolved campaign.yaml and versions.json."""
    stored = directory / "campaign.yaml"
    science = cfg.science_dict()
    if stored.is_file():
        old = yaml.safe_load(stored.read_text())
        old_science = {k: v for k, v in old.items() if k not in ("cluster", "source_dir")}
        try:  # settings added since the folder was started compare at their defaults
            old_science = parse_campaign({**old_science, "cluster": {}}).science_dict()
        except ConfigError:
            pass
        diffs = _diff(old_science, science)
        if diffs and not allow_changes:
            raise ConfigError(
                [f"{d}" for d in diffs] + ["(pass allow_changes=True / --allow-changes to "
                                           "continue with the new settings)"],
                f"{directory}: campaign file differs from the one this folder was started with")
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write_text(stored, yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    versions = _versions()
    old = directory / "versions.json"
    if old.is_file():  # a resume: the versions now, the workers' environment from the start
        prev = json.loads(old.read_text())
        if prev.get("worker") and {k: v for k, v in prev.items() if k != "worker"} == versions:
            versions["worker"] = prev["worker"]
    atomic_write_text(directory / "versions.json", json.dumps(versions, indent=1))


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


def _record_environment(directory: Path, client: Any, key_prefix: str) -> None:
    """Add the workers' compute environment (CPU, threads, BLAS) to versions.json, once."""
    from .tasks import environment_task

    path = directory / "versions.json"
    versions = json.loads(path.read_text()) if path.is_file() else {}
    if "worker" in versions:
        return
    versions["worker"] = client.submit(environment_task, key=f"{key_prefix}environment",
                                       pure=False).result()
    atomic_write_text(path, json.dumps(versions, indent=1))


def run_in_folder(cfg: CampaignConfig, directory: Path, client: Any,
                  log: Callable[[str], None] | None, accept_failures: bool = False,
                  key_prefix: str = "") -> CampaignResult:
    """Run the campaign in a prepared ``directory`` (see prepare_folder) on ``client``; task
    keys start with ``key_prefix`` (runs sharing a cluster keep theirs apart)."""
    _record_environment(directory, client, key_prefix)
    camp = _Campaign(cfg, directory, client, log, accept_failures, key_prefix)
    L = camp.ledger
    for gen in range(cfg.generations + 1):
        if L.done(f"gen{gen:03d}/done"):
            continue
        if not L.done(f"gen{gen:03d}/start"):
            L.mark_done(f"gen{gen:03d}/start", t=time.time())
        camp.say(f"generation {gen}" + (" (initial data, backbone, probe)" if gen == 0 else ""))
        camp.initial() if gen == 0 else camp.generation(gen)
        L.mark_done(f"gen{gen:03d}/done")
    camp.say(f"campaign {cfg.name} finished: {directory}")
    return CampaignResult(directory, L.metrics())


def resume_campaign(directory: str | Path, **kwargs: Any) -> CampaignResult:
    """Continue the campaign stored in ``directory`` with its stored campaign file."""
    directory = Path(directory)
    stored = directory / "campaign.yaml"
    if not stored.is_file():
        raise ConfigError([f"no campaign.yaml in {directory}: not a campaign folder"], str(directory))
    data = yaml.safe_load(stored.read_text())
    source_dir = data.pop("source_dir", ".")
    return run_campaign(parse_campaign(data, source_dir, str(stored)), directory, **kwargs)


def noise_floor(cfg: CampaignConfig, directory: Path, client: Any, seeds: int,
                out_path: Path, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Training noise of a finished campaign: its last generation's backbone trained again,
    from the same starting point on the same frames, with ``seeds`` other seeds, each
    evaluated on the test set. Writes and returns {"run", "generation", "labels",
    "force_mae_meV_A": [original, reseeded...], "sd_meV_A", "range_meV_A"}."""
    from .tasks import predict_task

    camp = _Campaign(cfg, Path(directory), client, log, key_prefix=f"{cfg.name}-noise-")
    L = camp.ledger
    stage = f"noise_floor/{seeds}"
    if not L.done(stage):
        rows = L.metrics()
        gen = int(rows[-1]["generation"])
        tinfo = L.stage_info(f"gen{gen:03d}/train")
        ids = set(tinfo["train_ids"])
        frames = [a for a in L.frames(status="labeled") if a.info["fid"] in ids]
        if gen == 0 or not frames:
            raise CampaignError(f"{directory}: no trained generation to measure the noise of")
        previous = L.stage_info(f"gen{gen - 1:03d}/train")["path"]
        foundation, epochs = camp.start_point(previous)
        folder = Path(directory) / "models" / "noise_floor"
        folder.mkdir(parents=True, exist_ok=True)
        infos = [camp.train_many(gen, [(f"seed{k}", foundation, epochs, frames, 0)], reseed=k,
                                 folder=folder)[0] for k in range(1, seeds + 1)]
        test = L.frames(status="labeled", split="test")
        maes = [1000 * float(rows[-1]["force_mae_eV_A"])]
        futures = [camp._submit(predict_task, i["path"], [bare_copy(a) for a in test],
                                cfg.backbone.device, kind="evaluate", key=f"eval-noise-{k}",
                                tag=k) for k, i in enumerate(infos)]
        got: dict[int, float] = {}

        def record(k: int, r: dict[str, Any]) -> bool:
            for a, e, f in zip(test, r["energy"], r["forces"]):
                set_prediction(a, e, f)
            got[k] = 1000 * regression_errors(test)["force_mae_eV_A"]
            return False

        camp._gather(futures, "noise floor evaluate", record)
        maes += [got[k] for k in sorted(got)]
        L.mark_done(stage, run=cfg.name, generation=gen, labels=int(rows[-1]["labels"]),
                    force_mae_meV_A=maes, sd_meV_A=float(np.std(maes, ddof=1)),
                    range_meV_A=float(np.ptp(maes)), retrain=cfg.backbone.retrain)
    info = L.stage_info(stage)
    atomic_write_text(out_path, json.dumps(info, indent=1))
    return info
