"""What a campaign says, and where: progress bars on a terminal (tqdm; one line per running
batch, stacked when several arms run at once), plain lines elsewhere (pipes, CI, notebooks),
nothing with ``quiet``; and every message with a time stamp in a log file.

A log function here is any ``Callable[[str], None]``. One that also has ``bar(label, total)``
(a :class:`Console` or its :meth:`Console.tagged` view) gets progress bars from
:class:`alprobe.executor.Progress`; a plain one (``print``) gets a few lines per batch.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

__all__ = ["Console", "with_log_file"]


class _Bar:
    """One tqdm bar at a free screen row; ``close`` gives the row back."""

    def __init__(self, console: Console, label: str, total: int):
        from tqdm import tqdm

        self.console = console
        with console._lock:
            rows = console._rows
            self.row = next(i for i in range(len(rows) + 1) if i not in rows)
            rows.add(self.row)
        self.bar = tqdm(total=total, desc=label, position=self.row, leave=False,
                        file=console.stream, dynamic_ncols=True, mininterval=0.5,
                        bar_format="{desc}: {n_fmt}/{total_fmt} |{bar:20}| {elapsed}")

    def update(self, n: int, failed: int) -> None:
        if failed:
            self.bar.set_postfix_str(f"{failed} failed", refresh=False)
        self.bar.update(n - self.bar.n)

    def close(self) -> None:
        self.bar.close()
        with self.console._lock:
            self.console._rows.discard(self.row)


class Console:
    """Messages to ``stream`` (unless ``quiet``) and, with time stamps, to ``log_file``.

    Progress bars are drawn only when ``stream`` is a terminal and not quiet; messages printed
    while bars are up go above them (tqdm.write).
    """

    def __init__(self, log_file: str | Path | None = None, quiet: bool = False,
                 stream: TextIO | None = None):
        self.stream = stream or sys.stdout
        self.quiet = quiet
        self.bars = (not quiet) and bool(getattr(self.stream, "isatty", lambda: False)())
        self._lock = threading.RLock()
        self._rows: set[int] = set()
        self._fh = None
        if log_file is not None:
            Path(log_file).parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(log_file, "a", buffering=1)  # noqa: SIM115 - closed in close()

    def __call__(self, msg: str) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {msg}\n")
            if self.quiet:
                return
            if self.bars and self._rows:
                from tqdm import tqdm

                tqdm.write(msg, file=self.stream)
            else:
                print(msg, file=self.stream, flush=True)

    def bar(self, label: str, total: int) -> _Bar | None:
        """A progress bar (None when bars are off: the caller prints lines instead)."""
        return _Bar(self, label, total) if self.bars else None

    def tagged(self, tag: str) -> Callable[[str], None]:
        """A view that prefixes ``[tag]`` (one run of a comparison)."""
        return _Tagged(self, tag)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


class _Tagged:
    def __init__(self, console: Console, tag: str):
        self.console, self.tag = console, tag

    def __call__(self, msg: str) -> None:
        self.console(f"[{self.tag}] {msg}")

    def bar(self, label: str, total: int) -> _Bar | None:
        return self.console.bar(f"[{self.tag}] {label.strip()}", total)


class _WithFile:
    """``log`` plus a time-stamped copy of every message in a file (bars pass through)."""

    def __init__(self, log: Callable[[str], None] | None, path: Path):
        self.log, self.path = log, path
        self._lock = threading.Lock()

    def __call__(self, msg: str) -> None:
        with self._lock, open(self.path, "a") as fh:
            fh.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {msg}\n")
        if self.log is not None:
            self.log(msg)

    def bar(self, label: str, total: int) -> Any:
        bar = getattr(self.log, "bar", None)
        return bar(label, total) if bar is not None else None


def with_log_file(log: Callable[[str], None] | None, path: str | Path
                  ) -> Callable[[str], None]:
    """``log`` that also appends every message, time-stamped, to ``path`` (the campaign's
    ``alprobe.log``)."""
    return _WithFile(log, Path(path))
