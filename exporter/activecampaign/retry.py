"""Retries as a value: how many times, how long to wait, and when to give up.

A :class:`RetryPolicy` is immutable and says nothing about *what* is retried; the caller decides
that only safe-to-repeat requests (idempotent ones) go through :meth:`RetryPolicy.call`. Only
:class:`~exporter.errors.RetriableApiError` is retried. A server's ``Retry-After`` wins over
the computed backoff; waits are capped, and the whole call is bounded by ``deadline``.
``sleep``, ``clock`` and the jitter's random source are injected so tests run instantly and
deterministically.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from exporter.errors import RetriableApiError

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """Capped exponential backoff with jitter, honouring ``Retry-After``, within a deadline."""

    max_attempts: int = 6
    """Attempts in total, the first included (1 = never retry)."""
    initial_backoff: float = 1.0
    """Seconds before the first retry (before jitter)."""
    multiplier: float = 2.0
    """Growth of the backoff per retry."""
    max_backoff: float = 30.0
    """Cap on a computed backoff, in seconds."""
    jitter: float = 0.25
    """Fraction of each backoff drawn at random (0 = none): waits fall in
    ``[backoff * (1 - jitter), backoff]`` so workers do not retry in lock-step."""
    max_retry_after: float = 120.0
    """Cap on an honoured ``Retry-After``: a server asking for longer is obeyed up to this."""
    deadline: float = 600.0
    """Seconds from the first attempt after which no further attempt starts."""

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError("jitter must be within [0, 1]")
        if self.initial_backoff < 0 or self.max_backoff < 0 or self.deadline < 0:
            raise ValueError("backoffs and deadline must not be negative")

    def backoff(self, retry: int, rng: random.Random) -> float:
        """The computed wait before retry number ``retry`` (1-based), jitter applied."""
        base = min(self.max_backoff, self.initial_backoff * self.multiplier ** (retry - 1))
        return base * (1.0 - self.jitter * rng.random())

    def delay(self, retry: int, error: RetriableApiError, rng: random.Random) -> float:
        """The wait before retry number ``retry`` after ``error``."""
        if error.retry_after is not None:
            return min(error.retry_after, self.max_retry_after)
        return self.backoff(retry, rng)

    def call(
        self,
        attempt: Callable[[], T],
        *,
        sleep: Callable[[float], None],
        clock: Callable[[], float],
        rng: random.Random | None = None,
        what: str = "request",
    ) -> T:
        """Run ``attempt`` until it returns, retrying :class:`RetriableApiError` within limits.

        The last error is re-raised when attempts run out or the next wait would cross the
        deadline. Anything else propagates at once.
        """
        rng = rng or random.Random()
        started = clock()
        for number in range(1, self.max_attempts + 1):
            try:
                return attempt()
            except RetriableApiError as error:
                if number == self.max_attempts:
                    raise
                wait = self.delay(number, error, rng)
                if clock() - started + wait > self.deadline:
                    raise
                logger.warning(
                    "%s failed (%s); retry %d/%d in %.2fs",
                    what,
                    error,
                    number,
                    self.max_attempts - 1,
                    wait,
                )
                sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover


NO_RETRY = RetryPolicy(max_attempts=1)
"""A policy that never retries (for requests that are not safe to repeat)."""
