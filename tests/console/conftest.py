"""Fixtures of the console's tests: a sandbox account, a store with a segment snapshot, and the
console over them (the local host, as ``python -m exporter console`` builds it)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from exporter.console.app import ConsoleHost, create_app
from exporter.console.local import local_host
from sandbox import Field, Sandbox, SandboxConfig

API_KEY = "console-test-key-0123456789"
LIST_ID = "7"
SEGMENT = "snapshots/newsletter/"
TIME_SCALE = 20.0
"""Sandbox time and the exporter's pacing run this much faster than real time."""


def segment_csv(rows: int = 60, bad: int = 3) -> bytes:
    """A segment snapshot: ``rows`` profiles, the first ``bad`` of them with invalid emails
    (one of which carries markup, to be shown inert)."""
    lines = ["Email,FirstName,LastName,Phone,City"]
    for i in range(rows):
        email = f"person{i}@example.com" if i >= bad else f"not-an-email-{i}"
        if i == 0:
            email = "<b>bold</b>@@example"
        lines.append(f"{email},First{i},Last{i},+4420700{i:05d},City{i % 5}")
    return ("\n".join(lines) + "\n").encode()


def sandbox_config(**changes: object) -> SandboxConfig:
    base: dict[str, object] = {
        "api_key": API_KEY,
        "lists": {LIST_ID: "Newsletter", "8": "Customers <VIP>"},
        "fields": [Field("1", "City")],
        "time_scale": TIME_SCALE,
    }
    base.update(changes)
    return SandboxConfig(**base)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def account() -> Iterator[Sandbox]:
    with Sandbox(sandbox_config()) as sb:
        yield sb


@pytest.fixture
def home(tmp_path: Path) -> Path:
    folder = tmp_path / "home"
    from exporter.storage.store import LocalStore

    LocalStore(folder).write_bytes(SEGMENT + "2026-01-05.csv", segment_csv())
    return folder


@pytest.fixture
def host(home: Path) -> ConsoleHost:
    env = {"EXPORTER_ALLOW_LOOPBACK_SANDBOX": "true"}
    return local_host(home, env, "ada", time_scale=TIME_SCALE)


@pytest.fixture
def client(host: ConsoleHost) -> Iterator[TestClient]:
    with TestClient(create_app(host), base_url="http://127.0.0.1") as c:
        yield c


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([0-9a-f]+)"', html)
    assert found, "the page has no CSRF token"
    return found.group(1)
