"""A clock tests can step: pass ``ManualClock()`` as ``SandboxConfig.clock``."""

from __future__ import annotations

import threading


class ManualClock:
    """Monotonic seconds that only move when :meth:`advance` is called (thread-safe)."""

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        """Move time forward (real seconds, i.e. sandbox seconds divided by the time scale)."""
        with self._lock:
            self._now += seconds
