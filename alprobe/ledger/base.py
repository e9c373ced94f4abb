"""What every part of the ledger shares: its error, JSON reads, model paths kept inside
the campaign folder, plain JSON values, and the crash test hook."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import AlprobeError

__all__ = ["CRASH_ENV", "PATH_KEYS", "LedgerError", "read_stages", "relative_paths",
           "resolve_paths"]

#: Test hook: SIGKILL the driver right before the record of this stage is written (its rows
#: are already written in the same transaction).
CRASH_ENV = "ALPROBE_FAULT_CRASH_BEFORE_RECORD"


class LedgerError(AlprobeError):
    """The campaign folder's state is missing or damaged (the message says which file)."""


def _read_json(path: Path, default: Any) -> Any:
    if not path.exists():
        return default
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LedgerError(f"{path} is damaged ({exc}); refusing to reset it") from None


def read_stages(directory: str | Path) -> dict[str, dict[str, Any]]:
    """Stage records of a campaign folder, read-only ({} if it has none yet).

    Safe to call from another process while the driver runs (never blocks it)."""
    directory = Path(directory)
    path = directory / "ledger.db"
    if not path.is_file() or path.stat().st_size == 0:
        return {k: v for k, v in _read_json(directory / "state.json", {"stages": {}})[
            "stages"].items()}
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=20)
        try:
            rows = con.execute("SELECT name, info FROM alprobe_stages").fetchall()
        finally:
            con.close()
    except sqlite3.OperationalError:  # no stage table: a legacy folder, or not started
        return dict(_read_json(directory / "state.json", {"stages": {}})["stages"])
    return {name: resolve_paths(json.loads(info), directory, strict=False)
            for name, info in rows}


#: Keys of stage records that hold model files (str, or a list of str): stored relative to
#: the campaign folder, resolved inside it when read.
PATH_KEYS = ("path", "members")


def _inside(path: Path, root: Path) -> bool:
    """Whether ``path`` (symlinks followed) lies inside the folder ``root``."""
    try:
        return path.resolve().is_relative_to(root.resolve())
    except (OSError, RuntimeError):
        return False


def _map_paths(info: dict[str, Any], fn: Any) -> dict[str, Any]:
    """``info`` with ``fn`` applied to every model path (PATH_KEYS; a path or a list)."""
    out = dict(info)
    for k in PATH_KEYS:
        if k in out:
            v = out[k]
            out[k] = [fn(x) for x in v] if isinstance(v, list) else fn(v)
    return out


def relative_paths(info: dict[str, Any], directory: Path) -> dict[str, Any]:
    """``info`` with every model path (PATH_KEYS) inside ``directory`` made relative to it
    (POSIX form), so that a copied or moved folder still finds its own models."""
    root = Path(directory).resolve()

    def rel(v: Any) -> Any:
        if isinstance(v, str) and Path(v).is_absolute() and _inside(Path(v), root):
            return Path(v).resolve().relative_to(root.resolve()).as_posix()
        return v

    return _map_paths(info, rel)


def resolve_paths(info: dict[str, Any], directory: Path, strict: bool = True) -> dict[str, Any]:
    """``info`` with every model path (PATH_KEYS) as an absolute path inside ``directory``.

    Relative paths are taken from the folder. An absolute path (ledgers written before paths
    were stored relative) is used if it lies inside the folder, or else re-anchored at its
    ``models/`` part (a copied folder finds its own copy). A path that still leaves the
    folder (``..``, a symlink out, no ``models/`` part) is never loaded: LedgerError, or None
    with ``strict=False``.
    """
    root = Path(directory).resolve()

    def one(v: Any) -> Any:
        if not isinstance(v, str):
            return v
        p = Path(v)
        if not p.is_absolute():
            p = root / p
        elif not _inside(p, root) and "models" in p.parts:
            i = len(p.parts) - 1 - p.parts[::-1].index("models")
            p = root.joinpath(*p.parts[i:])
        if _inside(p, root):
            return str(p)
        if strict:
            raise LedgerError(f"{root / 'ledger.db'} names a model file outside the campaign "
                              f"folder ({v}); alprobe loads models only from inside the folder")
        return None

    return _map_paths(info, one)


def _crash() -> None:
    """Die at once, as a SIGKILL would (the whole process group if this process leads it)."""
    if os.getpgrp() == os.getpid():
        os.killpg(os.getpgrp(), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


def _plain(v: Any) -> Any:
    if isinstance(v, np.bool_):
        return bool(v)
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        return float(v)
    if isinstance(v, np.ndarray):
        return v.tolist()
    return v
