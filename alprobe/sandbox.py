"""Child processes with a time limit that die with their parent: DFT labels and MACE training.

Both ways in are safe inside a multi-threaded Dask worker that has torch and OpenMP loaded:
nothing forks the calling process and nothing needs ``subprocess``'s ``preexec_fn`` (which
Python's documentation says can deadlock in a threaded process).

* :func:`call` runs a Python function in a child forked from a *fork server*: multiprocessing's
  ``forkserver``, a fresh interpreter started once per process, single-threaded, with PySCF
  imported and warmed up and mace-torch's trainer imported (:mod:`alprobe._warm`), so forking
  it is safe and a child starts warm. DFT labels and MACE training both run this way. Start the
  server once per worker process (about 10 s on 2 cores, mostly importing mace); then each call
  costs tens of milliseconds, against about 1.4 s for a fresh interpreter importing PySCF and
  about 8 s for one importing mace (``scripts/bench_sandbox.py``).
* :func:`run_module` runs ``python -m alprobe.sandbox PARENT_PID MODULE ARGS...``: a fresh
  interpreter that first asks Linux to kill it when its parent dies, then runs MODULE as
  ``__main__`` (for programs that must start clean).

Every child dies with its caller (a :func:`call` child watches the caller's end of a pipe;
a :func:`run_module` child asks Linux for SIGKILL when the thread that started it exits,
PR_SET_PDEATHSIG), so a killed worker leaves no orphan computing on; a child past its time
limit is killed and reaped.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Outcome", "call", "die_with_parent", "helper_pids", "run_module", "server_pid"]

#: Imported (and so warmed up) by the fork server before it forks any child.
PRELOAD = ["alprobe._warm"]

_LOCK = threading.Lock()
_CTX: Any = None
_CTX_PID: int | None = None  # the process whose fork server _CTX uses


def die_with_parent(parent_pid: int) -> None:
    """Linux: SIGKILL this process when the thread that started it exits (best effort)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - not Linux: the parent still kills us at the limit
        return
    if os.getppid() != parent_pid:  # the parent died before prctl
        os._exit(1)


@dataclass
class Outcome:
    """How a child ended.

    status: "ok" (``value`` is what the function returned), "error" (it raised: ``detail`` is
    "Type: message"), "timeout" (killed at the limit) or "died" (ended without a result:
    ``detail`` says how, e.g. "signal 9"). messages: what the function emitted, in order.
    wall_s: seconds from the call to the end of the child. cpu_s: the child's user + system
    CPU seconds (its own and its waited-for children's; 0 when it was killed), which the
    caller's own rusage does not include (the child is the fork server's, not the caller's).
    """

    status: str
    value: Any = None
    detail: str = ""
    messages: list[Any] = field(default_factory=list)
    wall_s: float = 0.0
    cpu_s: float = 0.0


_STARTING = threading.local()


def _forget_parents_server() -> None:
    """In a process forked from one that started a fork server (a script's process pool, for
    example): that server belongs to the parent, and multiprocessing would fail to reach it
    (``ChildProcessError``), so give this process a fork server of its own."""
    from multiprocessing import forkserver

    server = forkserver.ForkServer()
    forkserver._forkserver = server  # noqa: SLF001
    for name in ("ensure_running", "get_inherited_fds", "connect_to_new_process",
                 "set_forkserver_preload"):
        setattr(forkserver, name, getattr(server, name))


def _context() -> Any:
    global _CTX, _CTX_PID
    with _LOCK:
        if _CTX is not None and _CTX_PID != os.getpid():
            _forget_parents_server()
            _CTX.set_forkserver_preload(PRELOAD)
            _CTX_PID = os.getpid()
        if _CTX is None:
            _CTX_PID = os.getpid()
            from multiprocessing import spawn

            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload(PRELOAD)
            original = spawn.get_preparation_data

            def preparation_data(name: str) -> dict[str, Any]:
                # multiprocessing re-imports the caller's __main__ in every child (a user's
                # script, the `dask worker` CLI): the sandbox's children never need it.
                data = original(name)
                if getattr(_STARTING, "sandbox", False):
                    data.pop("init_main_from_name", None)
                    data.pop("init_main_from_path", None)
                return data

            spawn.get_preparation_data = preparation_data
            _CTX = ctx
    return _CTX


def server_pid() -> int | None:
    """Process id of this process's fork server, None before the first :func:`call`."""
    from multiprocessing import forkserver

    return getattr(forkserver._forkserver, "_forkserver_pid", None)  # noqa: SLF001


def helper_pids() -> set[int]:
    """The long-lived helpers :func:`call` starts once per process: the fork server and
    multiprocessing's resource tracker."""
    from multiprocessing import resource_tracker

    pids = {server_pid(), getattr(resource_tracker._resource_tracker, "_pid", None)}  # noqa: SLF001
    return {p for p in pids if p}


@contextmanager
def _children_allowed() -> Iterator[None]:
    """Let a daemonic process start a child (Dask runs workers as daemonic processes).

    multiprocessing forbids it because a daemon is killed without cleanup and would orphan its
    children; these children die with their parent (PR_SET_PDEATHSIG) and are always joined
    before :func:`call` returns, so that reason does not apply. Call with ``_LOCK`` held.
    """
    config = multiprocessing.current_process()._config  # noqa: SLF001
    was = config.get("daemon")
    config["daemon"] = False
    try:
        yield
    finally:
        if was is None:
            config.pop("daemon", None)
        else:
            config["daemon"] = was


def _watch_caller() -> None:
    """In the child: exit at once when the process that called :func:`call` is gone (its end
    of multiprocessing's parent sentinel closes); PR_SET_PDEATHSIG covers the fork server."""
    from multiprocessing.connection import wait

    wait([multiprocessing.parent_process().sentinel])
    os._exit(1)


def _own_cpu_s() -> float:
    import resource

    return sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                                  resource.getrusage(resource.RUSAGE_CHILDREN)))


def _child(conn: Any, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    """In the child: die with the caller and the fork server; run ``fn(emit, *args)``; send
    its result."""
    die_with_parent(os.getppid())
    threading.Thread(target=_watch_caller, daemon=True, name="alprobe-watch-caller").start()
    try:
        value = fn(lambda message: conn.send(("message", message)), *args)
    except BaseException as exc:  # noqa: BLE001 - reported to the parent as data
        tail = traceback.format_exception_only(type(exc), exc)[-1].strip()
        conn.send(("cpu", _own_cpu_s()))
        conn.send(("error", tail))
    else:
        conn.send(("cpu", _own_cpu_s()))
        conn.send(("result", value))
    conn.close()


def call(fn: Callable[..., Any], *args: Any, timeout_s: float | None = None,
         on_message: Callable[[Any], None] | None = None) -> Outcome:
    """Run ``fn(emit, *args)`` in a child forked from this process's fork server.

    ``fn`` must be importable by name (a module-level function) and ``args`` picklable; the
    child sees the environment the fork server started with, not later changes (pass what it
    needs as arguments). ``emit(message)`` sends a picklable message back at once
    (``on_message`` sees it, and ``Outcome.messages`` keeps it, even if the child is killed
    later). ``timeout_s``: wall-time limit in seconds (None: no limit).
    """
    t0 = time.perf_counter()
    ctx = _context()
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(send, fn, args), daemon=True, name="alprobe-sandbox")
    with _LOCK, _children_allowed():
        _STARTING.sandbox = True
        try:
            proc.start()
        finally:
            _STARTING.sandbox = False
    send.close()
    out = Outcome("died")
    deadline = None if timeout_s is None else t0 + float(timeout_s)
    try:
        while True:
            wait = None if deadline is None else max(0.0, deadline - time.perf_counter())
            if not recv.poll(wait):
                out.status = "timeout"
                break
            try:
                kind, value = recv.recv()
            except (EOFError, OSError):
                break  # the child ended without a result
            if kind == "cpu":
                out.cpu_s = float(value)
                continue
            if kind == "message":
                out.messages.append(value)
                if on_message is not None:
                    on_message(value)
                continue
            out.status, out.value = ("ok", value) if kind == "result" else ("error", None)
            out.detail = "" if kind == "result" else str(value)
            break
    finally:
        recv.close()
        if out.status == "died":  # ended without a result: let it finish dying, then be sure
            proc.join(5.0)
        if proc.exitcode is None:  # at the limit, or interrupted: no survivor
            proc.kill()
        proc.join()
        code = proc.exitcode
        proc.close()
    if out.status == "died":
        out.detail = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
    out.wall_s = time.perf_counter() - t0
    return out


def run_module(module: str, args: Sequence[str], *, log: str | Path, cwd: str | Path,
               env: dict[str, str] | None = None, timeout_s: float | None = None
               ) -> tuple[int | None, bool]:
    """Run ``python -m MODULE ARGS`` in a fresh interpreter that dies with this thread.

    stdout and stderr go to ``log``. Returns (exit code, timed out); at ``timeout_s``
    seconds the child is killed (exit code None).
    """
    cmd = [sys.executable, "-m", "alprobe.sandbox", str(os.getpid()), module, *map(str, args)]
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=cwd, env=env,
                                stdin=subprocess.DEVNULL)
        try:
            return proc.wait(timeout_s), False
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return None, True
        except BaseException:  # interrupted: the child must not outlive the call
            proc.kill()
            proc.wait()
            raise


def _launch(argv: list[str]) -> None:
    """``python -m alprobe.sandbox PARENT_PID MODULE ARGS...``: die with the parent, run MODULE."""
    import runpy

    die_with_parent(int(argv[0]))
    sys.argv = [argv[1], *argv[2:]]
    runpy.run_module(argv[1], run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    _launch(sys.argv[1:])
