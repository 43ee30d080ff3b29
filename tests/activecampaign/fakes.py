"""Test doubles for the ActiveCampaign client: a fake clock and a scripted transport."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from exporter.activecampaign import Response
from exporter.errors import RetriableApiError


class FakeClock:
    """A monotonic clock that only moves when someone sleeps; records every sleep."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.sleeps.append(seconds)
        self.now += seconds


@dataclass
class Sent:
    """One request as the transport saw it."""

    method: str
    url: str
    headers: dict[str, str]
    params: dict[str, str]
    body: bytes | None
    timeout: float
    at: float

    def json(self) -> Any:
        assert self.body is not None
        return json.loads(self.body)


Step = Response | Exception | Callable[["Sent"], Response]


def reply(
    status: int = 200, body: Any = None, headers: Mapping[str, str] | None = None
) -> Response:
    """A JSON response (``body`` may be bytes for a raw one)."""
    raw = body if isinstance(body, bytes) else json.dumps({} if body is None else body).encode()
    return Response(status=status, headers=dict(headers or {}), body=raw)


def reset() -> RetriableApiError:
    """What RequestsTransport raises on a connection reset."""
    return RetriableApiError("POST /api/3/x: connection failed (ConnectionError)")


@dataclass
class ScriptedTransport:
    """Answers requests from a script, in order; a callable step builds the answer from the
    request. Raises if the script runs out."""

    script: list[Step] = field(default_factory=list)
    clock: Callable[[], float] = lambda: 0.0
    sent: list[Sent] = field(default_factory=list)

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        params: Mapping[str, str] | None,
        body: bytes | None,
        timeout: float,
    ) -> Response:
        req = Sent(method, url, dict(headers), dict(params or {}), body, timeout, self.clock())
        self.sent.append(req)
        if not self.script:
            raise AssertionError(f"unexpected request {method} {url}")
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        if isinstance(step, Response):
            return step
        return step(req)
