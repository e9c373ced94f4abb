"""The base of alprobe's own exceptions: the CLI prints these as one line, not a traceback."""

from __future__ import annotations


class AlprobeError(Exception):
    """Bad input or a damaged campaign folder; the message names the problem."""


class CampaignError(AlprobeError):
    """A stage could not finish (a training or evaluation task failed); resumable."""


class CampaignPaused(AlprobeError):
    """Too many labels of a generation failed; the campaign stopped before training on the rest."""
