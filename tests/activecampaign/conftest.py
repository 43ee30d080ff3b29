"""Fixtures for the ActiveCampaign client tests."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest

from exporter.activecampaign import ActiveCampaignClient, RateLimiter, RetryPolicy

from .fakes import FakeClock, ScriptedTransport, Step

API_KEY = "k3y-0123456789abcdef-SECRET"
BASE = "https://acme.api-us1.com"

# Deterministic retries: no jitter, 1 s doubling, three attempts.
TEST_RETRY = RetryPolicy(max_attempts=3, initial_backoff=1.0, multiplier=2.0, jitter=0.0)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_client(clock: FakeClock) -> Callable[..., tuple[ActiveCampaignClient, ScriptedTransport]]:
    """``make_client(script, **overrides)`` -> (client, transport) on the fake clock."""

    def make(script: list[Step], **kw: Any) -> tuple[ActiveCampaignClient, ScriptedTransport]:
        transport = ScriptedTransport(list(script), clock=clock)
        kw.setdefault("retry", TEST_RETRY)
        kw.setdefault("limiter", RateLimiter(clock=clock, sleep=clock.sleep))
        client = ActiveCampaignClient(
            kw.pop("base_url", BASE),
            API_KEY,
            transport=transport,
            sleep=clock.sleep,
            clock=clock,
            rng=random.Random(0),
            **kw,
        )
        return client, transport

    return make
