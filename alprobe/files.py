"""Atomic file writes: every file alprobe writes appears whole or not at all.

A writer gets a temporary path in the same folder and the file is moved into place with
``os.replace`` only once it is complete (and flushed), so a reader, or a campaign resumed after
a kill, never sees half a file.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_path", "atomic_write"]


@contextmanager
def atomic_path(path: str | Path, mode: int | None = None) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; moved onto ``path`` when the block ends
    without an error (removed otherwise). ``mode``: permission bits of the new file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write(path: str | Path, data: str | bytes, mode: int | None = None) -> None:
    """Write ``data`` (text is UTF-8 encoded) to ``path`` atomically, flushed to disk.
    ``mode``: permission bits (e.g. 0o600 for a key); default 0o666 less the umask."""
    raw = data.encode() if isinstance(data, str) else data
    with atomic_path(path) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666 if mode is None else mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
            fh.flush()
            os.fsync(fh.fileno())
