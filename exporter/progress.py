"""Progress events a run reports as it goes (the command line draws a progress bar from them)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

Phase = Literal["prepare", "push", "confirm", "finalize"]


@dataclass(frozen=True)
class ProgressEvent:
    """One step of progress in one phase."""

    phase: Phase
    """Which phase moved."""
    done: int
    """Units done so far in this phase: rows read (prepare), contacts sent (push), contacts
    settled, confirmed or failed (confirm)."""
    total: int | None
    """Units expected in this phase, when known."""
    message: str = ""
    """A short note for people (never personal data)."""


ProgressCallback = Callable[[ProgressEvent], None]
"""Receives events; must be quick and must not raise (it runs on the run's threads)."""


def ignore(_event: ProgressEvent) -> None:
    """The default callback: nobody is watching."""
