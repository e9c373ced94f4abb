"""The sandbox (alprobe.sandbox): time limits and dying with the parent, for DFT and training.

Real processes throughout: the fork server, its children, a fresh interpreter, a real Dask
worker (a daemonic process, which multiprocessing normally forbids to have children).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from alprobe.sandbox import call, run_module

ROOT = Path(__file__).resolve().parents[1]


def _echo(emit, *values):
    for v in values:
        emit(v)
    return sum(values)


def _sleep(emit, seconds):
    emit(os.getpid())
    time.sleep(seconds)
    return "woke"


def _burn(emit, seconds):
    t = time.process_time()
    while time.process_time() - t < seconds:
        pass
    return "burnt"


def _raise(emit):
    raise RuntimeError("boom in the child")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_call_returns_value_and_messages_in_order():
    out = call(_echo, 1, 2, 3)
    assert out.status == "ok" and out.value == 6 and out.messages == [1, 2, 3]
    err = call(_raise)
    assert err.status == "error" and err.detail == "RuntimeError: boom in the child"


def test_call_reports_the_childs_cpu_which_the_callers_rusage_lacks():
    """The child belongs to the fork server, so the caller's RUSAGE_CHILDREN never sees its
    CPU: the outcome carries it (training and timed-label tasks add it to their cpu_s)."""
    import resource

    def children():
        r = resource.getrusage(resource.RUSAGE_CHILDREN)
        return r.ru_utime + r.ru_stime

    before = children()
    out = call(_burn, 1.0)
    assert out.status == "ok" and out.value == "burnt"
    assert 1.0 <= out.cpu_s < 1.0 + out.wall_s
    assert children() - before < 0.5
    assert call(_raise).cpu_s > 0


def test_call_kills_at_the_time_limit_and_keeps_earlier_messages():
    t0 = time.perf_counter()
    out = call(_sleep, 60, timeout_s=3.0)  # the child first imports this module to find _sleep
    assert out.status == "timeout" and time.perf_counter() - t0 < 8
    (pid,) = out.messages
    assert pid != os.getpid() and not _alive(pid)  # killed and reaped


@pytest.mark.parametrize("how", ["call", "run_module"])
def test_children_die_with_their_parent(tmp_path, how):
    """A process running a sandboxed child is SIGKILLed: the child dies too (no orphan)."""
    if how == "call":
        code = ("import sys; from alprobe.sandbox import call; from tests.test_sandbox import "
                "_sleep; call(_sleep, 120, on_message=lambda pid: print(pid, flush=True))")
    else:
        code = ("import os, sys, time; from alprobe.sandbox import run_module; "
                f"run_module('tests._sandbox_sleeper', [], log={str(tmp_path / 'log')!r}, "
                f"cwd={str(ROOT)!r})")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        if how == "call":
            child = int(proc.stdout.readline())
        else:
            deadline = time.monotonic() + 60
            while not (tmp_path / "log").is_file() or not (tmp_path / "log").read_text():
                assert time.monotonic() < deadline, "the sleeper never started"
                time.sleep(0.05)
            child = int((tmp_path / "log").read_text().split()[0])
        assert _alive(child) and child != proc.pid
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    deadline = time.monotonic() + 10
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child), "the sandboxed child outlived its parent"


def test_run_module_exit_code_log_and_time_limit(tmp_path):
    code, timed_out = run_module("tests._sandbox_sleeper", ["0"], log=tmp_path / "a.log",
                                 cwd=ROOT)
    assert (code, timed_out) == (0, False)
    assert "slept 0" in (tmp_path / "a.log").read_text()
    t0 = time.perf_counter()
    code, timed_out = run_module("tests._sandbox_sleeper", ["60"], log=tmp_path / "b.log",
                                 cwd=ROOT, timeout_s=1.0)
    assert timed_out and code is None and time.perf_counter() - t0 < 10


def test_timed_label_inside_a_real_dask_worker():
    """Dask workers are daemonic processes; a label with a time limit still runs there, in a
    sandboxed child, and gives the in-process answer."""
    from ase.build import molecule
    from distributed import Client, LocalCluster

    from alprobe.dft import DFTLevel, label_atoms
    from alprobe.tasks import label_task

    level = DFTLevel(method="hf", basis="sto-3g", density_fit=False)
    ref = label_atoms(molecule("H2O"), level)
    timed = DFTLevel(method="hf", basis="sto-3g", density_fit=False, timeout_s=60)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as lc, Client(lc) as client:
        r = client.submit(label_task, molecule("H2O"), timed, pure=False).result(timeout=120)
        quick = client.submit(label_task, molecule("H2O"), DFTLevel(
            method="dft", basis="def2-svp", timeout_s=0.05), pure=False).result(timeout=120)
    assert r["status"] == "ok", r["reason"]
    assert r["energy"] == pytest.approx(ref.energy, abs=1e-8)
    assert quick["status"] == "timeout"


def _pid_child(emit):
    return os.getpid()


def _call_in_forked_process(queue) -> None:
    from alprobe.sandbox import call, server_pid

    out = call(_pid_child)
    queue.put((out.status, out.detail, server_pid()))


def test_call_works_in_a_process_forked_after_the_server_started():
    """A script that used the sandbox (a training, a timed label) and then forks workers (a
    process pool): each forked process gets a fork server of its own instead of failing on
    its parent's (ChildProcessError)."""
    import multiprocessing

    from alprobe.sandbox import server_pid

    assert call(_pid_child).status == "ok"
    parent_server = server_pid()
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_call_in_forked_process, args=(queue,))
    proc.start()
    status, detail, child_server = queue.get(timeout=120)
    proc.join(30)
    assert (status, detail) == ("ok", "")
    assert child_server not in (None, parent_server)
    assert call(_pid_child).status == "ok" and server_pid() == parent_server
