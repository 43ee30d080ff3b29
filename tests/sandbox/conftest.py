"""Fixtures: sandboxes started in-process on free ports, talked to over real HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

import pytest
import requests

from sandbox import Faults, Field, Sandbox, SandboxConfig
from sandbox.clock import ManualClock

KEY = "test-key"


class Client:
    """A keep-alive ``requests`` session bound to one sandbox's ``/api/3``."""

    def __init__(self, sandbox: Sandbox, key: str = KEY) -> None:
        self.sandbox = sandbox
        self.base = f"{sandbox.base_url}/api/3"
        self.session = requests.Session()
        self.session.headers["Api-Token"] = key

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.session.get(self.base + path, timeout=10, **kwargs)

    def post(self, path: str, body: Any = None, **kwargs: Any) -> requests.Response:
        return self.session.post(self.base + path, json=body, timeout=10, **kwargs)

    def bulk(self, contacts: list[dict[str, Any]], **top: Any) -> requests.Response:
        return self.post("/import/bulk_import", {"contacts": contacts, **top})

    def info(self, batch_id: str) -> dict[str, Any]:
        response = self.get("/import/info", params={"batchId": batch_id})
        assert response.status_code == 200
        body: dict[str, Any] = response.json()
        return body


Env = tuple[Sandbox, Client, ManualClock]
"""A started sandbox, a client for it and its manual clock."""


class Make(Protocol):
    def __call__(self, **overrides: Any) -> Env: ...


def config(clock: ManualClock, **overrides: Any) -> SandboxConfig:
    """A small account: two lists, three fields (one a date), one tag; budgets lifted unless
    a test turns them on; time frozen on a manual clock."""
    values: dict[str, Any] = {
        "api_key": KEY,
        "lists": {"1": "Newsletter", "2": "Customers"},
        "fields": [
            Field(id="1", title="Loyalty tier", type="text", perstag="LOYALTY_TIER"),
            Field(id="2", title="Member since", type="date"),
            Field(id="3", title="Colours", type="multiselect"),
        ],
        "tags": ["vip"],
        "limits": False,
        "faults": Faults(),
        "clock": clock,
    }
    values.update(overrides)
    return SandboxConfig(**values)


@pytest.fixture
def make() -> Iterator[Make]:
    """Start sandboxes with config overrides; each gets its own manual clock and client."""
    started: list[Sandbox] = []

    def start(**overrides: Any) -> Env:
        clock = overrides.pop("clock", None) or ManualClock()
        sandbox = Sandbox(config(clock, **overrides)).start()
        started.append(sandbox)
        return sandbox, Client(sandbox), clock

    yield start
    for sandbox in started:
        sandbox.stop()


@pytest.fixture
def sb(make: Make) -> Env:
    """One sandbox with budgets lifted and a frozen clock."""
    return make()


def person(n: int, **extra: Any) -> dict[str, Any]:
    """A valid bulk-import contact."""
    return {"email": f"person{n}@example.com", "first_name": f"P{n}", **extra}


def complete(client: Client, clock: ManualClock, batch_id: str) -> dict[str, Any]:
    """Advance the clock past any batch's processing time and read its final status."""
    clock.advance(10.0)
    info = client.info(batch_id)
    assert info["status"] in ("completed", "failed", "interrupted"), info
    return info
