"""The base of alprobe's own exceptions: the CLI prints these as one line, not a traceback."""

from __future__ import annotations


class AlprobeError(Exception):
    """Bad input or a damaged campaign folder; the message names the problem."""
