"""Fault injection on real campaigns (tiny MACE, PySCF HF/STO-3G, real LocalCluster).

Faults: SIGKILL of the whole driver process group (driver, scheduler, nannies, workers, MACE
trainers) at chosen stages followed by a resume; a worker killed on every attempt at one label
(KilledWorker); transient worker deaths (a label, a training task); a generation whose labels
all fail (failure ceiling, pause, --accept-failures); a damaged ledger.db / state.json.

Accounting: every finished DFT label is written by its worker to ``spool/<fid>.json``
(atomically, a fresh inode each time), so the spool's file names are the DFT calls that
completed, and a spool file whose inode/mtime changed was computed twice.

The window of a kill "during a label stage" is held open with the fault hook
(ALPROBE_FAULT_KILL_LABEL on one frame of that stage, in the killed run only): that frame's
worker dies and is restarted (seconds), while the other labels of the stage arrive.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest
import yaml

import alprobe
from alprobe.campaign import CampaignPaused
from alprobe.config import parse_campaign
from alprobe.errors import AlprobeError
from alprobe.ledger import LedgerError, read_stages

from .conftest import TINY_CAMPAIGN

KILL_ENV = "ALPROBE_FAULT_KILL_LABEL"
N_RATTLE = TINY_CAMPAIGN["initial"]["n_rattle"]

# Generation 0 only, no bootstrap MD: the same rattled frames (same fids) as TINY_CAMPAIGN,
# for the worker-death tests.
GEN0_ONLY = copy.deepcopy(TINY_CAMPAIGN)
GEN0_ONLY.update(name="tiny-gen0", generations=0)
GEN0_ONLY["initial"].update(n_md=0, test_size=4)


# ------------------------------------------------------------------------------- helpers

def _cli() -> list[str]:
    exe = Path(sys.executable).with_name("alprobe")
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "alprobe.cli"]


def _stages(d: Path) -> dict[str, Any]:
    return read_stages(d)  # read-only, never blocks the driver


def _spool(d: Path) -> dict[str, tuple[int, int]]:
    """fid -> (inode, mtime_ns) of every finished DFT label in the spool."""
    out = {}
    for p in (d / "spool").glob("*.json"):
        st = p.stat()
        out[p.stem] = (st.st_ino, st.st_mtime_ns)
    return out


def _spooled(d: Path, fids: list[str]) -> list[str]:
    return [f for f in fids if (d / "spool" / f"{f}.json").is_file()]


def _training(d: Path, gen: int) -> bool:
    """A MACE trainer of backbone ``gen`` has started writing its log."""
    m = d / "models" / f"gen_{gen:03d}"
    log = m / "backbone.log"
    return any(m.glob("backbone_work*")) and log.is_file() and log.stat().st_size > 0


def _group_members(pgid: int) -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter():
        try:
            if os.getpgid(p.pid) == pgid and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except (psutil.Error, ProcessLookupError):
            pass
    return out


def _is_trainer(p: psutil.Process, d: Path) -> bool:
    """A MACE trainer working in campaign folder ``d``: a child of the sandbox's fork server
    that runs mace's trainer in a model's work folder (``*_work_<pid>``) under ``d``."""
    try:
        cwd = p.cwd()
        return "_work_" in cwd and Path(cwd).is_relative_to(d)
    except psutil.Error:
        return False


def _mace_trainers(d: Path) -> list[psutil.Process]:
    """Live MACE trainer processes working in campaign folder ``d``."""
    out = []
    for p in psutil.process_iter():
        try:
            if _is_trainer(p, d) and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.Error:
            pass
    return out


def _summary(d: Path) -> dict[str, Any]:
    L = alprobe.open_ledger(d)
    frames = L.frames()
    return {
        "fids": {a.info["fid"] for a in frames},
        "status": {a.info["fid"]: a.info["status"] for a in frames},
        # every DFT label kept (the stress set's are measured, never trained on)
        "labeled": {a.info["fid"] for a in frames if a.info["status"] in ("labeled", "stress")},
        "labeled_frames": [a for a in frames if a.info["status"] == "labeled"],
        "spool": _spool(d),
        "stages": _stages(d),
        "metrics": L.metrics(),
    }


def _assert_same_campaign(d: Path, ref: dict[str, Any]) -> dict[str, Any]:
    """``d`` ended with exactly the reference's frames, labels and DFT calls."""
    got = _summary(d)
    assert got["fids"] == ref["fids"], (
        f"frames lost: {sorted(ref['fids'] - got['fids'])}; "
        f"frames not in the reference: {sorted(got['fids'] - ref['fids'])}")
    assert got["labeled"] == ref["labeled"]
    assert got["status"] == ref["status"]
    assert set(got["spool"]) == set(ref["spool"])  # the same DFT calls completed ...
    assert len(got["spool"]) == len(ref["spool"])  # ... and as many (no extra labels)
    assert set(got["spool"]) == got["labeled"]
    for a in got["labeled_frames"]:
        assert np.isfinite(a.info["ref_energy"]), a.info["fid"]
        assert a.arrays["ref_forces"].shape == (len(a), 3)
        assert np.isfinite(a.arrays["ref_forces"]).all(), a.info["fid"]
    assert sorted(got["stages"]) == sorted(ref["stages"])
    for stage, info in ref["stages"].items():
        if "train_ids" in info:
            assert got["stages"][stage]["train_ids"] == info["train_ids"], stage
    assert [r["generation"] for r in got["metrics"]] == [r["generation"] for r in ref["metrics"]]
    for r, g in zip(ref["metrics"], got["metrics"]):
        assert g["labels"] == r["labels"] and g["failed_new"] == r["failed_new"]
        # not bitwise: the first MACE forward pass in a fresh worker differs by 1 float32 ulp
        for k in ("energy_mae_eV_per_atom", "force_mae_eV_A", "force_rmse_eV_A"):
            assert g[k] == pytest.approx(r[k], rel=1e-6), (r["generation"], k)
    return got


class Driver:
    """``alprobe ARGS`` as a subprocess in its own process group (its LocalCluster's nannies,
    workers and MACE trainers are in that group too)."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None):
        full_env = {k: v for k, v in os.environ.items() if k != KILL_ENV}
        full_env.update(PYTHONUNBUFFERED="1", **(env or {}))
        self.log = log
        with open(log, "a") as fh:
            fh.write(f"\n$ {KILL_ENV}={(env or {}).get(KILL_ENV, '')} alprobe {' '.join(args)}\n")
        self._fh = open(log, "a")  # noqa: SIM115 - closed in _reap
        self.proc = subprocess.Popen([*_cli(), *args], env=full_env, stdout=self._fh,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self.start_offset = log.stat().st_size

    def output(self) -> str:
        return self.log.read_text()[self.start_offset:]

    def _tail(self) -> str:
        return "\n".join(self.output().splitlines()[-25:])

    def wait_for(self, what: str, ready, missed, timeout: float = 480.0) -> None:
        """Poll every 20 ms until ready(); fail if missed() (the window passed) or it exits."""
        t0 = time.monotonic()
        while True:
            if ready():
                return
            if missed():
                self.kill()
                pytest.fail(f"the kill window '{what}' passed before it was seen:\n{self._tail()}")
            if self.proc.poll() is not None:
                pytest.fail(f"alprobe exited (rc {self.proc.returncode}) before {what}:\n"
                            f"{self._tail()}")
            if time.monotonic() - t0 > timeout:
                self.kill()
                pytest.fail(f"no '{what}' after {timeout} s:\n{self._tail()}")
            time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL the whole process group; check that nothing of it survives."""
        pgid = self.proc.pid
        if self.proc.poll() is None:
            os.killpg(pgid, signal.SIGKILL)
        self._reap()
        deadline = time.monotonic() + 15
        while (left := _group_members(pgid)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not left, f"processes of the killed group survive: {left}"

    def finish(self, timeout: float = 480.0) -> None:
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"alprobe did not finish in {timeout} s:\n{self._tail()}")
        self._reap()
        assert rc == 0, f"alprobe exited with {rc}:\n{self._tail()}"

    def _reap(self) -> None:
        self.proc.wait()
        if not self._fh.closed:
            self._fh.close()


@pytest.fixture
def drivers():
    """Start Drivers; any still running at teardown are killed (their own group only)."""
    started: list[Driver] = []

    def start(args: list[str], log: Path, env: dict[str, str] | None = None) -> Driver:
        drv = Driver(args, log, env)
        started.append(drv)
        return drv

    yield start
    for drv in started:
        if drv.proc.poll() is None:
            drv.kill()


@pytest.fixture(scope="module")
def campaign_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("faults_cfg") / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY_CAMPAIGN, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def reference(tiny_finished) -> dict[str, Any]:
    """The shared uninterrupted TINY_CAMPAIGN run (2 generations) and its summary."""
    d = tiny_finished[0]
    ref = _summary(d)
    ref["dir"] = d
    L = alprobe.open_ledger(d)
    # test and stress frames: labeled beside backbone 0's training
    test = set(L.fids(split="test")) | set(L.fids(split="stress"))
    gen0 = [f for f in L.fids(generation=0) if f not in test]  # id order: rattled, then MD
    ref["rattle"], ref["md"] = gen0[:N_RATTLE], gen0[N_RATTLE:]
    ref["gen1"] = L.fids(generation=1, status="labeled")
    assert len(ref["md"]) >= 2 and len(ref["gen1"]) >= 2
    assert not (set(ref["status"].values()) - {"labeled", "candidate", "stress"})  # no failure
    return ref


# ------------------------------------------------------------ 1. driver SIGKILL + resume

def _kill_point(stage: str, ref: dict[str, Any], d: Path):
    """(env of the run to kill, ready(), missed()) for a kill during ``stage``."""
    st = lambda: _stages(d)  # noqa: E731
    if stage in ("gen000/label_md", "gen001/label"):
        fids = ref["md"] if stage == "gen000/label_md" else ref["gen1"]
        # the last frame's worker dies (and is restarted) on every attempt: the stage stays
        # open while the other labels of the stage arrive
        return ({KILL_ENV: fids[-1]},
                lambda: stage not in st() and len(_spooled(d, fids)) >= 1,
                lambda: stage in st())
    if stage == "gen001/train":
        return ({}, lambda: "gen001/label" in st() and stage not in st() and _training(d, 1),
                lambda: stage in st())
    if stage == "gen002/explore":
        return ({}, lambda: "gen002/start" in st() and stage not in st(), lambda: stage in st())
    raise ValueError(stage)


def _kill_during(stage: str, args: list[str], ref: dict[str, Any], d: Path, log: Path,
                 drivers) -> dict[str, Any]:
    """Run ``alprobe ARGS``, SIGKILL its process group during ``stage``; what was on disk."""
    env, ready, missed = _kill_point(stage, ref, d)
    drv = drivers(args, log, env)
    drv.wait_for(stage, ready, missed)
    trainers = _mace_trainers(d)
    drv.kill()
    stages = _stages(d)
    assert stage not in stages, f"killed too late: {stage} was already done"
    if stage == "gen001/train":
        assert trainers, "no MACE trainer was running at the kill"
        assert not _mace_trainers(d), "a MACE trainer survived the kill"
    # labels that reached the spool but not the ledger: the resume must recover, not redo them
    L = alprobe.open_ledger(d)
    gen = int(stage[3:6])
    unrecorded = [f for f in L.fids(generation=gen, status="selected")
                  if (d / "spool" / f"{f}.json").is_file()]
    info = {"stage": stage, "spool": _spool(d), "unrecorded": len(unrecorded), "gen": gen,
            "frames": len(L)}
    print(f"killed during {stage}: {len(L)} frames, {len(info['spool'])} labels spooled, "
          f"{len(unrecorded)} of them not yet in the ledger")
    return info


def _check_recovery(kill: dict[str, Any], output: str) -> None:
    if kill["unrecorded"] and kill["stage"].split("/")[1].startswith("label"):
        assert f"gen {kill['gen']}: {kill['unrecorded']} finished label(s) recovered" in output


def test_driver_sigkill_at_three_stages_then_resume(reference, campaign_file, tmp_path,
                                                    drivers, monkeypatch):
    """One folder, killed three times (during gen000/label_md, gen001/label, gen001/train),
    then resumed to the end: the same frames, labels and DFT calls as the reference run."""
    d = tmp_path / "killed"
    kills = []
    args = ["run", str(campaign_file), "--dir", str(d)]
    for i, stage in enumerate(("gen000/label_md", "gen001/label", "gen001/train")):
        log = tmp_path / f"run{i}.log"
        kills.append(_kill_during(stage, args, reference, d, log, drivers))
        if i:
            _check_recovery(kills[i - 1], log.read_text())
        args = ["resume", str(d)]
    monkeypatch.delenv(KILL_ENV, raising=False)
    lines: list[str] = []
    alprobe.resume(d, log=lines.append)
    got = _assert_same_campaign(d, reference)
    # no DFT label was computed twice: every spool file of a kill is the same file at the end
    for k in kills:
        for fid, ident in k["spool"].items():
            assert got["spool"][fid] == ident, f"label {fid} recomputed ({k['stage']} kill)"
    assert kills[0]["frames"] < kills[1]["frames"] <= kills[2]["frames"] <= len(got["fids"])


def _crash_before_record(stage: str, reference, campaign_file, tmp_path, drivers) -> None:
    from alprobe.ledger import CRASH_ENV

    d, log = tmp_path / "crashed", tmp_path / "crashed.log"
    drv = drivers(["run", str(campaign_file), "--dir", str(d)], log, {CRASH_ENV: stage})
    try:
        rc = drv.proc.wait(480)
    except subprocess.TimeoutExpired:
        drv.kill()
        pytest.fail(f"no crash at {stage}:\n{drv._tail()}")
    drv.kill()  # reaps it and checks that nothing of its process group survives
    assert rc == -signal.SIGKILL, f"exit {rc}:\n{drv._tail()}"
    st = _stages(d)
    gen = int(stage[3:6])
    assert stage not in st and f"gen{gen:03d}/start" in st
    L = alprobe.open_ledger(d)
    if stage.endswith("/select"):  # the rows written before the record were rolled back
        assert L.count(generation=gen, status="selected") == 0
        assert L.count(generation=gen, status="candidate") > 0
    if stage.endswith("/explore"):
        assert L.count(generation=gen) == 0
    drv = drivers(["resume", str(d)], log)
    drv.finish()
    got = _assert_same_campaign(d, reference)  # same selections, same DFT calls
    assert sorted(got["labeled"]) == sorted(reference["labeled"])


def test_crash_between_select_rows_and_record_changes_nothing(reference, campaign_file,
                                                              tmp_path, drivers):
    """SIGKILL right after gen001/select's rows (status selected) are written, before its
    record: nothing of the stage is kept, and the resumed campaign selects the same frames
    and makes exactly as many DFT calls as the uninterrupted run (not a second budget)."""
    _crash_before_record("gen001/select", reference, campaign_file, tmp_path, drivers)


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["gen001/explore", "gen000/split", "gen001/metrics"])
def test_crash_between_rows_and_record_at_other_stages(stage, reference, campaign_file,
                                                       tmp_path, drivers):
    _crash_before_record(stage, reference, campaign_file, tmp_path, drivers)


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["gen001/label", "gen001/train", "gen002/explore"])
def test_driver_sigkill_once_then_resume(stage, reference, campaign_file, tmp_path, drivers):
    """A fresh folder killed once during ``stage``, resumed by the CLI to the end.

    gen002/explore: the resumed walkers run in fresh workers, whose first MACE forward pass
    differs from a warmed-up one by 1 float32 ulp; the explored positions then differ from the
    reference's by ~1e-10 A, below the 1e-6 A rounding of frame ids (see the report).
    """
    d, log = tmp_path / "killed", tmp_path / "killed.log"
    kill = _kill_during(stage, ["run", str(campaign_file), "--dir", str(d)], reference, d, log,
                        drivers)
    drv = drivers(["resume", str(d)], log)
    drv.finish()
    _check_recovery(kill, drv.output())
    got = _assert_same_campaign(d, reference)
    for fid, ident in kill["spool"].items():
        assert got["spool"][fid] == ident, f"label {fid} recomputed after the kill"


# ------------------------------------------------------------------- 2. worker deaths

def test_worker_killed_on_every_attempt_fails_only_that_frame(reference, tmp_path,
                                                               monkeypatch):
    """The worker labeling one frame dies on every attempt: after allowed-failures deaths
    the frame is recorded as failed (KilledWorker) and the campaign goes on.

    The poisoned frame is the last one submitted: it never shares a worker with a queued
    innocent label. (A frame earlier in the queue is often co-assigned with an innocent one,
    which then dies with it four times and is recorded as failed too; see the report.)
    """
    poisoned = reference["rattle"][-1]
    monkeypatch.setenv(KILL_ENV, poisoned)  # inherited by the LocalCluster's workers
    d = tmp_path / "poisoned"
    lines: list[str] = []
    result = alprobe.run(parse_campaign(GEN0_ONLY), d, log=lines.append)
    assert [r["generation"] for r in result.metrics] == [0]
    assert result.metrics[0]["failed_new"] == 1
    L = alprobe.open_ledger(d)
    test = set(L.fids(split="test"))  # the test walkers' frames, all labeled
    assert test and test == set(L.fids(split="test", status="labeled"))
    stress = set(L.fids(split="stress"))  # the stress walkers' frames, labeled like the test
    assert stress == set(L.fids(split="stress", status="stress"))
    assert sorted(set(L.fids()) - test - stress) == sorted(reference["rattle"])  # none lost
    (bad,) = L.frames(fid=poisoned)
    assert bad.info["status"] == "failed"
    assert "KilledWorker" in bad.info["reason"], bad.info["reason"]
    assert L.fids(status="failed") == [poisoned]  # no other frame failed
    assert set(L.fids(status="labeled")) - test == set(reference["rattle"]) - {poisoned}
    # 11 rattled DFT calls, the test set's and the stress set's, no more
    assert set(_spool(d)) == (set(reference["rattle"]) - {poisoned}) | test | stress
    # the labels are the reference's (same frames, same DFT level)
    ref = {a.info["fid"]: a for a in reference["labeled_frames"]}
    for a in L.frames(status="labeled"):
        if a.info["fid"] not in test:  # this run's own test walkers sampled other frames
            assert a.info["ref_energy"] == pytest.approx(ref[a.info["fid"]].info["ref_energy"],
                                                         abs=1e-6)
    assert not (set(L.fids(split="test")) & {poisoned})
    assert _stages(d)["gen000/label_rattle"]["failed"] == 1
    assert any(poisoned in ln and "KilledWorker" in ln for ln in lines)


def _poison_this_worker(fid: str) -> int:
    """Run on a worker: its next attempt at ``fid`` kills it (its replacement is clean)."""
    os.environ[KILL_ENV] = fid
    return os.getpid()


@pytest.mark.slow  # about 1.5-3 min on 2 cores: kept out of the default run (pytest -m slow)
def test_transient_worker_deaths_are_retried(reference, tmp_path, monkeypatch):
    """A worker dies while labeling a frame (once per original worker) and the worker running
    the backbone training is SIGKILLed mid-training: the tasks rerun on other workers and the
    campaign finishes with every label ok."""
    from distributed import Client, LocalCluster

    monkeypatch.delenv(KILL_ENV, raising=False)  # restarted workers are clean
    poisoned = reference["rattle"][3]
    d = tmp_path / "transient"
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as client:
        original = client.run(_poison_this_worker, poisoned)  # address -> pid
        out: dict[str, Any] = {}

        def campaign() -> None:
            try:
                out["result"] = alprobe.run(parse_campaign(GEN0_ONLY), d, log=None, client=client)
            except BaseException as exc:  # noqa: BLE001 - reported by the main thread
                out["error"] = exc

        thread = threading.Thread(target=campaign, daemon=True)
        thread.start()
        # wait for the training task to run its MACE trainer, then SIGKILL that worker
        killed_pid, t0 = None, time.monotonic()
        seen = set(original)  # every worker address that ever registered
        while thread.is_alive() and killed_pid is None and time.monotonic() - t0 < 400:
            seen |= set(client.scheduler_info()["workers"])
            for addr, keys in client.processing().items():
                if any(str(k).startswith("train-backbone-g0") for k in keys) and _training(d, 0):
                    pid = client.run(os.getpid, workers=[addr])[addr]
                    trainers = [c for c in psutil.Process(pid).children(recursive=True)
                                if _is_trainer(c, d)]
                    if trainers:
                        os.kill(pid, signal.SIGKILL)
                        killed_pid = pid
                        # The trainer dies with its worker (PR_SET_PDEATHSIG): no orphan
                        # racing the retried training.
                        time.sleep(1.0)
                        alive = []
                        for t in trainers:
                            try:
                                if t.status() != psutil.STATUS_ZOMBIE:
                                    alive.append(t.pid)
                            except psutil.NoSuchProcess:
                                pass
                        assert not alive, f"trainer(s) {alive} outlived their worker"
                        break
            time.sleep(0.05)
        thread.join(600)
        assert not thread.is_alive(), "campaign did not finish"
        if "error" in out:
            raise out["error"]
        assert killed_pid is not None, "the training task was never seen running"
        # the label death and the training kill: two restarted workers (a nanny restart
        # takes a few seconds to register again; the training may have run on a worker that
        # had already been restarted once, so count every address that ever registered)
        t0 = time.monotonic()
        while len(seen - set(original)) < 2 and time.monotonic() - t0 < 120:
            seen |= set(client.scheduler_info()["workers"])
            time.sleep(0.5)
        assert len(seen - set(original)) >= 2, (seen, original)
        assert len(client.scheduler_info()["workers"]) == 2  # both nannies restarted theirs
    L = alprobe.open_ledger(d)
    test = set(L.fids(split="test"))
    stress = set(L.fids(split="stress"))
    assert test and sorted(set(L.fids()) - test - stress) == sorted(reference["rattle"])
    assert set(L.fids(status="labeled")) == set(reference["rattle"]) | test
    assert set(_spool(d)) == set(reference["rattle"]) | test | stress
    assert "gen000/train" in _stages(d)
    assert Path(_stages(d)["gen000/train"]["path"]).is_file()
    assert [r["generation"] for r in out["result"].metrics] == [0]
    assert out["result"].metrics[0]["failed_new"] == 0


# ----------------------------------------------------------------- 3. failure ceiling

def test_failure_ceiling_pauses_then_accept_failures(reference, tmp_path, monkeypatch):
    """Every label of a new generation dies with its worker: the campaign pauses before
    training that generation; a plain resume pauses again; --accept-failures finishes."""
    import dask

    d = tmp_path / "ceiling"
    shutil.copytree(reference["dir"], d)
    more = copy.deepcopy(TINY_CAMPAIGN)
    more["generations"] = 3  # one more generation (a science change: allow_changes)
    budget = TINY_CAMPAIGN["select"]["budget"]
    monkeypatch.setenv(KILL_ENV, "*")
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):  # one death suffices
        with pytest.raises(CampaignPaused) as info:
            alprobe.run(parse_campaign(more), d, log=None, allow_changes=True)
    msg = str(info.value)
    assert f"generation 3: {budget} of {budget} labels failed" in msg
    assert "paused before training" in msg and "accept-failures" in msg
    st = _stages(d)
    assert "gen003/label" in st and "gen003/train" not in st
    assert "gen003/failures_accepted" not in st and "gen003/done" not in st
    assert not (d / "models" / "gen_003" / "backbone.model").exists()
    L = alprobe.open_ledger(d)
    failed = L.frames(generation=3, status="failed")
    assert len(failed) == budget and L.count(generation=3, status="labeled") == 0
    assert all("KilledWorker" in a.info["reason"] for a in failed)
    assert set(_spool(d)) == set(reference["spool"])  # no gen-3 DFT call completed
    assert reference["fids"] <= set(L.fids())  # generations 0-2 untouched
    assert {f: s for f, s in _summary(d)["status"].items() if f in reference["fids"]} \
        == reference["status"]

    monkeypatch.delenv(KILL_ENV)
    with pytest.raises(CampaignPaused, match="generation 3"):
        alprobe.resume(d, log=None)  # still paused: failures are not retried silently
    assert "gen003/train" not in _stages(d)

    result = alprobe.resume(d, log=None, accept_failures=True)
    st = _stages(d)
    accepted = st["gen003/failures_accepted"]
    assert {k: accepted[k] for k in ("failed", "sent")} == {"failed": budget, "sent": budget}
    assert "gen003/train" in st and "gen003/done" in st
    assert st["gen003/train"]["train_ids"] == st["gen002/train"]["train_ids"]  # nothing new
    row = result.metrics[-1]
    assert row["generation"] == 3 and row["failed_new"] == budget and row["labels_new"] == 0
    assert L.count(generation=3, status="failed") == budget  # recorded, never retried
    assert set(_spool(d)) == set(reference["spool"])


# ------------------------------------------------------------------ 4. damaged state

def test_truncated_ledger_is_refused_not_reset(reference, tmp_path, monkeypatch):
    monkeypatch.delenv(KILL_ENV, raising=False)
    d = tmp_path / "truncated"
    shutil.copytree(reference["dir"], d)
    db = d / "ledger.db"
    half = db.stat().st_size // 2
    with open(db, "r+b") as fh:
        fh.truncate(half)
    files = sorted(p.name for p in d.iterdir())
    with pytest.raises(LedgerError, match="ledger.db"):
        alprobe.open_ledger(d)
    with pytest.raises(LedgerError, match="ledger.db"):
        alprobe.resume(d, log=None)
    assert db.stat().st_size == half  # left as found, never reset
    assert sorted(p.name for p in d.iterdir() if p.name not in (
        "ledger.db-wal", "ledger.db-shm")) == [f for f in files if f not in (
            "ledger.db-wal", "ledger.db-shm")]
    # the CLI prints one line, exit code 2
    proc = subprocess.run([*_cli(), "status", str(d)], capture_output=True, text=True,
                          env={k: v for k, v in os.environ.items() if k != KILL_ENV})
    assert proc.returncode == 2 and "ledger.db" in proc.stderr, proc.stderr


def _legacy_copy(src: Path, dest: Path, state_text: str | None = None) -> dict[str, Any]:
    """``src`` as alprobe wrote folders before the stage table: state.json + metrics.json
    beside an ASE ledger without alprobe's tables. Returns the stage records."""
    import sqlite3

    shutil.copytree(src, dest)
    stages = read_stages(dest)
    con = sqlite3.connect(dest / "ledger.db")
    con.execute("DROP TABLE alprobe_stages")
    con.execute("DROP TABLE alprobe_metrics")
    con.commit()
    con.close()
    (dest / "state.json").write_text(state_text if state_text is not None
                                     else json.dumps({"stages": stages}))
    return stages


def test_corrupted_legacy_state_json_is_refused_not_reset(reference, tmp_path, monkeypatch):
    monkeypatch.delenv(KILL_ENV, raising=False)
    d = tmp_path / "garbage"
    _legacy_copy(reference["dir"], d, "{garbage")
    size = (d / "ledger.db").stat().st_size
    with pytest.raises(LedgerError, match="state.json"):
        alprobe.open_ledger(d)
    with pytest.raises(LedgerError, match="state.json") as info:
        alprobe.resume(d, log=None)
    assert isinstance(info.value, AlprobeError)
    assert (d / "state.json").read_text() == "{garbage"
    assert (d / "ledger.db").stat().st_size == size


def test_legacy_state_json_is_migrated_and_resume_redoes_nothing(reference, tmp_path,
                                                                 monkeypatch):
    """A folder started before the stage table existed: its state.json and metrics.json move
    into the ledger on first open, and a resume finds every stage done."""
    monkeypatch.delenv(KILL_ENV, raising=False)
    d = tmp_path / "legacy"
    stages = _legacy_copy(reference["dir"], d)
    assert read_stages(d) == stages  # read-only readers see the legacy records as they are
    alprobe.resume(d, log=None)
    assert not (d / "state.json").exists() and (d / "state.json.migrated").is_file()
    assert read_stages(d) == stages  # nothing redone, nothing lost
    got = _summary(d)
    assert got["fids"] == reference["fids"] and set(got["spool"]) == set(reference["spool"])
    assert [r["generation"] for r in got["metrics"]] == [0, 1, 2]
