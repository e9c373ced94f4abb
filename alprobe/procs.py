"""Child-process hygiene shared by the adapters that start processes (PySCF, mace-torch)."""

from __future__ import annotations

import os
import signal

__all__ = ["die_with_parent"]


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
