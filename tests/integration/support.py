"""A store with a connection and an export, and an engine over it: what engine tests share."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from exporter.management.config import parse_connection, parse_export
from exporter.management.repository import ConfigRepository
from exporter.management.secrets import LocalSecretProvider
from exporter.run.engine import ClientFactory, Engine, RunOptions, RunRequest
from exporter.settings import HostPolicy
from exporter.storage.runs import LOCAL
from exporter.storage.store import LocalStore
from sandbox import Field, SandboxConfig

KEY = "engine-test-key-0123456789"
KEY_VAR = "AC_TEST_KEY"
LIST = "1"
EXPORT = "newsletter"
CONNECTION = "test-conn"
COLUMNS = ["Email", "FirstName", "LastName", "Phone", "City", "Birthday", "Tier"]


def export_payload(**overrides: Any) -> dict[str, Any]:
    """The test export, custom fields already resolved (as the service saves them)."""
    data: dict[str, Any] = {
        "name": EXPORT,
        "display_name": "Newsletter",
        "connection": CONNECTION,
        "segment": "snapshots/newsletter/",
        "list_id": LIST,
        "email": "Email",
        "first_name": "FirstName",
        "last_name": "LastName",
        "phone": "Phone",
        "fields": [
            {"column": "City", "field": "1", "field_id": "1", "field_type": "text"},
            {"column": "Birthday", "field": "2", "field_id": "2", "field_type": "date"},
            {"column": "Tier", "field": "3", "field_id": "3", "field_type": "dropdown"},
        ],
    }
    data.update(overrides)
    return data


@dataclass
class World:
    """A local store holding one connection and one export, and an engine over it."""

    tmp: Path
    store: LocalStore
    env: dict[str, str]
    engine: Engine
    snapshots: list[Path] = field(default_factory=list)

    def write_csv(self, rows: list[list[str]], name: str | None = None) -> Path:
        import csv

        path = self.tmp / (name or f"snapshot-{len(self.snapshots)}.csv")
        with path.open("w", encoding="utf-8", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(COLUMNS)
            writer.writerows(rows)
        self.snapshots.append(path)
        return path

    def request(self, path: Path, **options: bool) -> RunRequest:
        return self.engine.new_run(
            EXPORT,
            snapshot=Engine.local_snapshot(path),
            options=RunOptions(**options),
            snapshot_location=LOCAL,
        )

    def set_export(self, **overrides: Any) -> None:
        repo = ConfigRepository(self.store)
        _old, etag = repo.get_export(EXPORT)
        repo.put_export(parse_export(export_payload(**overrides)), if_match=etag)


def make_world(
    tmp: Path,
    hostname: str = "127.0.0.1:9",
    *,
    time_scale: float = 1.0,
    chunk_batches: int = 40,
    client_factory: ClientFactory | None = None,
    **export_overrides: Any,
) -> World:
    """``client_factory``: how the engine builds its ActiveCampaign client (a test's own
    limiter or transport); default the engine's."""
    store = LocalStore(tmp / "home")
    repo = ConfigRepository(store)
    repo.put_connection(
        parse_connection(
            {
                "name": CONNECTION,
                "display_name": "Test",
                "hostname": hostname,
                "api_key_ref": f"env:{KEY_VAR}",
                "consent": {"agreed": True, "by": "tester", "at": datetime.now(UTC).isoformat()},
            }
        ),
        create_only=True,
    )
    repo.put_export(parse_export(export_payload(**export_overrides)), create_only=True)
    env = {KEY_VAR: KEY}
    engine = Engine(
        store,
        LocalSecretProvider(env),
        host_policy=HostPolicy(allow_loopback_sandbox=True),
        client_factory=client_factory,
        time_scale=time_scale,
        chunk_batches=chunk_batches,
    )
    return World(tmp, store, env, engine)


def contact_row(i: int, *, city: str = "Berlin", email: str | None = None) -> list[str]:
    """A valid row for contact ``i``."""
    return [
        f"person{i}@example.com" if email is None else email,
        f"First{i}",
        f"Last{i}",
        f"+1 555 {i:07d}",
        city,
        "1980-01-02",
        "Gold",
    ]


def sandbox_config(time_scale: float, *, seed: int = 1) -> SandboxConfig:
    """The sandbox these tests' export talks to: its list and the three custom fields."""
    return SandboxConfig(
        api_key=KEY,
        lists={LIST: "Newsletter"},
        fields=[Field("1", "City"), Field("2", "Birthday", "date"), Field("3", "Tier", "dropdown")],
        time_scale=time_scale,
        seed=seed,
    )
