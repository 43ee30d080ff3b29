"""Budgets, counters and fault draws: everything decided per request before a handler runs.

All windows are sliding logs in real seconds whose length is the sandbox length divided by the
time scale (one sandbox second = ``1/time_scale`` real seconds). One lock guards the lot; the
work under it is a few deque operations.
"""

from __future__ import annotations

import random
import threading
from collections import Counter, deque
from dataclasses import dataclass

from sandbox.config import Faults, SandboxConfig

RESET = "reset"
LOST_RESPONSE = "lost_response"
HTTP_503 = "http_503"
HTTP_429 = "http_429"
SLOW = "slow"


class Window:
    """Event times within the last ``span`` seconds."""

    __slots__ = ("span", "times")

    def __init__(self, span: float) -> None:
        self.span = span
        self.times: deque[float] = deque()

    def count(self, now: float) -> int:
        """Events still inside the window at ``now``."""
        times, edge = self.times, now - self.span
        while times and times[0] <= edge:
            times.popleft()
        return len(times)

    def wait(self, now: float, limit: int) -> float:
        """Seconds until fewer than ``limit`` events remain (call after :meth:`count`)."""
        return max(self.times[len(self.times) - limit] + self.span - now, 0.0)


@dataclass(frozen=True)
class Decision:
    """The injected fault for one request: ``kind`` (None, or one of the module constants
    ``RESET``, ``LOST_RESPONSE``, ``HTTP_503``, ``HTTP_429``) and whether to answer late."""

    kind: str | None
    slow: bool


_NO_FAULT = Decision(None, False)


class Meter:
    """Rate budgets, traffic statistics and the seeded fault generator of one sandbox."""

    def __init__(self, config: SandboxConfig) -> None:
        self.lock = threading.Lock()
        scale = config.time_scale
        self._time_scale = scale
        self.limits = config.limits
        self.rate_limit = config.rate_per_second
        self.multi_limit = config.bulk_multi_per_minute
        self.single_limit = config.bulk_single_per_minute
        self._second = 1.0 / scale
        self._minute = 60.0 / scale
        self._rate = Window(self._second)
        self._multi = Window(self._minute)
        self._single = Window(self._minute)
        self._seen = Window(self._second)
        self._seen_bulk = Window(self._minute)
        self._rng = random.Random(config.seed)
        self.faults = config.faults
        self._reset_counters()

    def _reset_counters(self) -> None:
        self.requests: Counter[str] = Counter()
        self.injected: Counter[str] = Counter()
        self.throttled = 0
        self.throttled_by: Counter[str] = Counter()
        self.largest_body = 0
        self.peak_second = 0
        self.peak_minute = 0
        self.bulk_accepted = 0
        self.first_bulk: float | None = None
        self.last_bulk: float | None = None

    def reset(self) -> None:
        """Forget the statistics (budgets keep their windows: they are the account's state)."""
        with self.lock:
            self._reset_counters()
            self._seen = Window(self._second)
            self._seen_bulk = Window(self._minute)

    def set_faults(self, faults: Faults) -> None:
        """Swap the fault settings; the generator continues its sequence."""
        with self.lock:
            self.faults = faults

    def arrive(self, endpoint: str, body_bytes: int, now: float) -> Decision:
        """Count an authenticated API request and draw its fault (two draws, always, so the
        sequence does not depend on which endpoints the faults target)."""
        with self.lock:
            self.requests[endpoint] += 1
            if body_bytes > self.largest_body:
                self.largest_body = body_bytes
            seen = self._seen
            seen.count(now)
            seen.times.append(now)
            if len(seen.times) > self.peak_second:
                self.peak_second = len(seen.times)
            pick, late = self._rng.random(), self._rng.random()
            faults = self.faults
            if faults.endpoints is not None and endpoint not in faults.endpoints:
                return _NO_FAULT
            kind: str | None = None
            edge = 0.0
            for name, rate in (
                (RESET, faults.reset_rate),
                (LOST_RESPONSE, faults.lost_response_rate),
                (HTTP_503, faults.http_503_rate),
                (HTTP_429, faults.http_429_rate),
            ):
                edge += rate
                if pick < edge:
                    kind = name
                    break
            slow = late < faults.slow_rate
            if kind is None and not slow:
                return _NO_FAULT
            if kind is not None:
                self.injected[kind] += 1
            if slow:
                self.injected[SLOW] += 1
            return Decision(kind, slow)

    def admit(self, now: float) -> tuple[float | None, int]:
        """Charge the account budget. Returns (None, remaining) when admitted, or
        (seconds to wait, 0) when over budget (counted as throttled)."""
        with self.lock:
            used = self._rate.count(now)
            if not self.limits:
                self._rate.times.append(now)
                return None, max(self.rate_limit - used - 1, 0)
            if used >= self.rate_limit:
                self.throttled += 1
                self.throttled_by["per_second"] += 1
                return self._rate.wait(now, self.rate_limit), 0
            self._rate.times.append(now)
            return None, self.rate_limit - used - 1

    def admit_bulk(self, now: float, *, single: bool) -> bool:
        """Charge the bulk-import budget (single- or multi-contact). False when over it."""
        with self.lock:
            seen = self._seen_bulk
            seen.count(now)
            seen.times.append(now)
            if len(seen.times) > self.peak_minute:
                self.peak_minute = len(seen.times)
            window = self._single if single else self._multi
            limit = self.single_limit if single else self.multi_limit
            used = window.count(now)
            if self.limits and used >= limit:
                self.throttled += 1
                self.throttled_by["bulk_single" if single else "bulk_multi"] += 1
                return False
            window.times.append(now)
            if not single:
                self.bulk_accepted += 1
                self.first_bulk = now if self.first_bulk is None else self.first_bulk
                self.last_bulk = now
            return True

    def count_injected(self, kind: str, n: int = 1) -> None:
        """Record faults injected outside request handling (batch outcomes, failure emails)."""
        with self.lock:
            self.injected[kind] += n

    def draw_batch_outcome(self) -> str:
        """``completed``, ``failed`` or ``interrupted`` for a newly queued batch."""
        with self.lock:
            pick = self._rng.random()
            faults = self.faults
            if pick < faults.batch_failed_rate:
                self.injected["batch_failed"] += 1
                return "failed"
            if pick < faults.batch_failed_rate + faults.batch_interrupted_rate:
                self.injected["batch_interrupted"] += 1
                return "interrupted"
            return "completed"

    def failure_emails(self) -> frozenset[str]:
        """The lower-cased emails the current faults make fail at import."""
        with self.lock:
            return self.faults.failure_emails

    def snapshot(self) -> dict[str, object]:
        """The statistics as plain JSON-friendly values (see ``Sandbox`` for their meaning)."""
        with self.lock:
            return {
                "request_counts": dict(self.requests),
                "throttled": self.throttled,
                "throttled_by_budget": dict(self.throttled_by),
                "injected_faults": dict(self.injected),
                "largest_request_bytes": self.largest_body,
                "peak_requests_per_second": float(self.peak_second),
                "bulk_requests_per_minute_peak": float(self.peak_minute),
                "bulk_accepted": self.bulk_accepted,
                "bulk_span_seconds": (
                    (self.last_bulk - self.first_bulk) * self._time_scale
                    if self.first_bulk is not None and self.last_bulk is not None
                    else 0.0
                ),
            }

    def rng_bytes(self) -> bytes:
        """16 seeded random bytes (batch ids are reproducible under a seed)."""
        with self.lock:
            return self._rng.randbytes(16)
