"""Fixtures for the management API tests: real parts wherever the app meets them.

ActiveCampaign is the sandbox over real HTTP (spoken to by the real client), Key Vault is the
local HTTPS stub behind the real ``SecretClient`` and ``KeyVaultSecretProvider``, and the store
is a ``LocalStore`` in the test's temporary folder. Requests are real ``func.HttpRequest``s.

Import the fixtures into a test module with::

    from tests.functions.mgmt_fixtures import (  # noqa: F401  (pytest fixtures)
        mgmt_sandbox_fixture,
        mgmt_vault_fixture,
        world_fixture,
    )
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest

from blueprints.auth import PRINCIPAL_HEADER, principal_header
from blueprints.management import Cancelled
from exporter.activecampaign.client import ActiveCampaignClient
from exporter.activecampaign.limiter import RateLimiter
from exporter.activecampaign.retry import RetryPolicy
from exporter.adapters.keyvault import OWNER_TAG, KeyVaultSecretProvider
from exporter.management.config import Connection, Consent, Export
from exporter.management.hostnames import base_url
from exporter.management.permissions import ADMIN, CONTRIBUTOR
from exporter.management.repository import ConfigRepository
from exporter.management.secret_names import new_key_ref
from exporter.management.service import ManagementService
from exporter.settings import HostPolicy
from exporter.storage.store import LocalStore
from sandbox import Field, Sandbox, SandboxConfig
from tests.keyvault_stub import KeyVaultStub, start_keyvault_stub

SANDBOX_KEY = "5b1c0de5" * 9
"""The key the sandbox accepts (72 hex characters, like ActiveCampaign's)."""
LIST_ID = "3"
FIELD_COUNT = 150
"""Custom fields on the sandbox account: two pages of ``/fields`` (100 per page)."""
TIER_FIELD_ID = str(FIELD_COUNT)
"""The ``Tier`` field is the last one, on the second page."""
NOW = datetime(2025, 3, 1, 9, 30, tzinfo=UTC)
NOW_JSON = "2025-03-01T09:30:00Z"
"""``NOW`` as the API writes times."""

ADMIN_NAME = "ada@example.com"
CONTRIB_NAME = "cy@example.com"
NOBODY_NAME = "nn@example.com"

ROLE_HEADERS: dict[str, dict[str, str]] = {
    "admin": {PRINCIPAL_HEADER: principal_header(ADMIN_NAME, [ADMIN])},
    "contributor": {PRINCIPAL_HEADER: principal_header(CONTRIB_NAME, [CONTRIBUTOR])},
    "none": {PRINCIPAL_HEADER: principal_header(NOBODY_NAME, ["Some.Other.Role"])},
    "missing": {},
}
"""Request headers per kind of caller: the two roles, a signed-in user with neither, nobody."""


def sandbox_fields() -> list[Field]:
    """Many fields, the one exports map (``Tier``) on the second page."""
    fields = [Field(id=str(i), title=f"Field {i}", perstag=f"F{i}") for i in range(1, FIELD_COUNT)]
    fields.append(Field(id=TIER_FIELD_ID, title="Tier", type="dropdown", perstag="TIER"))
    return fields


def account_sandbox(api_key: str) -> Sandbox:
    """A sandbox account with the list and fields these tests use, and no rate budgets (the
    management tests are about rules, not pacing). Use it as a context manager."""
    return Sandbox(
        SandboxConfig(
            api_key=api_key,
            lists={LIST_ID: "Newsletter"},
            fields=sandbox_fields(),
            limits=False,
            port=0,
        )
    )


@pytest.fixture(scope="session", name="mgmt_sandbox")
def mgmt_sandbox_fixture() -> Iterator[Sandbox]:
    """One sandbox account for the session."""
    with account_sandbox(SANDBOX_KEY) as sb:
        yield sb


@pytest.fixture(scope="session", name="mgmt_vault")
def mgmt_vault_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeyVaultStub]:
    """One Key Vault stub for the session; secret names are unique per connection."""
    stub = start_keyvault_stub(tmp_path_factory.mktemp("mgmt-vault"))
    try:
        yield stub
    finally:
        stub.close()


def client_factory(connection: Connection, api_key: str) -> ActiveCampaignClient:
    """The real client, with a limiter sped up (the sandbox has no budgets here) and no
    retries (a failure should show at once)."""
    return ActiveCampaignClient(
        base_url(connection.hostname),
        api_key,
        limiter=RateLimiter(time_scale=100.0),
        retry=RetryPolicy(max_attempts=1),
        timeout=10.0,
    )


@dataclass
class RecordingCanceller:
    """The run canceller of the handler-level tests: records what it was asked to stop."""

    running: dict[str, list[str]] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)

    async def cancel(self, export: str, reason: str) -> Cancelled:
        self.calls.append(export)
        return Cancelled(cancelled=self.running.pop(export, []))


@dataclass
class World:
    """A management service over a fresh store, the session's vault and sandbox."""

    service: ManagementService
    store: LocalStore
    vault: KeyVaultStub
    sandbox: Sandbox
    runs: RecordingCanceller

    @property
    def repo(self) -> ConfigRepository:
        return self.service.repo

    @property
    def sandbox_host(self) -> str:
        return self.sandbox.base_url.removeprefix("http://")

    def seed_connection(
        self,
        name: str = "shop",
        *,
        allow_contributors: bool = False,
        key: str = SANDBOX_KEY,
        ref: str | None = None,
    ) -> Connection:
        """A saved connection (written directly: not the subject of the test) and its key."""
        # A generated name is the app's own secret (tagged so); a given one is an operator's.
        tags = {OWNER_TAG: name} if ref is None else None
        ref = ref or new_key_ref(name)
        connection = Connection(
            name=name,
            display_name=f"{name.title()} account",
            hostname=self.sandbox_host,
            api_key_ref=ref,
            allow_contributors=allow_contributors,
            consent=Consent(agreed=True, by=ADMIN_NAME, at=NOW),
            created_by=ADMIN_NAME,
            created_at=NOW,
        )
        self.repo.put_connection(connection, create_only=True)
        self.vault.seed(ref.removeprefix("keyvault:"), key, tags=tags)
        return connection

    def seed_export(self, name: str = "weekly", connection: str = "shop") -> Export:
        export = Export(
            name=name,
            display_name=f"{name.title()} export",
            connection=connection,
            segment="snapshots/high-value/",
            list_id=LIST_ID,
            email="Email",
            created_by=ADMIN_NAME,
            created_at=NOW,
        )
        self.repo.put_export(export, create_only=True)
        return export

    def stored_files(self) -> dict[str, bytes]:
        """Every file in the store, by path relative to its root."""
        root = self.store.root
        return {
            str(p.relative_to(root)): p.read_bytes()
            for p in root.rglob("*")
            if p.is_file() and not p.name.startswith(".")  # the store's own lock file
        }


def make_world(
    tmp_path: Path,
    sandbox: Sandbox,
    vault: KeyVaultStub,
    *,
    policy: HostPolicy | None = None,
) -> World:
    vault.forbidden = False
    store = LocalStore(tmp_path / "store")
    secrets = KeyVaultSecretProvider(vault.secret_client(), ttl_seconds=0)
    service = ManagementService(
        ConfigRepository(store),
        secrets,
        client_factory,
        policy or HostPolicy(allow_loopback_sandbox=True),
        clock=lambda: NOW,
    )
    return World(service, store, vault, sandbox, RecordingCanceller())


@pytest.fixture(name="world")
def world_fixture(tmp_path: Path, mgmt_sandbox: Sandbox, mgmt_vault: KeyVaultStub) -> World:
    return make_world(tmp_path, mgmt_sandbox, mgmt_vault)


def request(
    method: str,
    route: str,
    *,
    role: str = "admin",
    body: object = None,
    raw: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    params: Mapping[str, str] | None = None,
) -> func.HttpRequest:
    """A ``func.HttpRequest`` for ``/api/<route>`` as the host would build it.

    ``route`` is e.g. ``connections/shop`` or ``connections/shop/verify``; the ``name`` route
    parameter is its second segment. ``body`` is sent as JSON unless ``raw`` is given.
    """
    all_headers = dict(ROLE_HEADERS[role])
    data = raw if raw is not None else b""
    if body is not None and raw is None:
        data = json.dumps(body).encode()
        all_headers["Content-Type"] = "application/json"
    all_headers.update(headers or {})
    parts = route.split("/")
    route_params = {"name": parts[1]} if len(parts) > 1 else {}
    return func.HttpRequest(
        method,
        f"https://exporter.example.net/api/{route}",
        headers=all_headers,
        params=dict(params or {}),
        route_params=route_params,
        body=data,
    )


def payload(resp: func.HttpResponse) -> Any:
    """The JSON body of an answer."""
    return json.loads(resp.get_body())


def conn_body(world: World, **changes: Any) -> dict[str, Any]:
    """A valid connection body pointing at the sandbox."""
    body: dict[str, Any] = {
        "display_name": "Shop ActiveCampaign",
        "hostname": world.sandbox_host,
        "allow_contributors": False,
        "consent": True,
    }
    body.update(changes)
    return body


def export_body(**changes: Any) -> dict[str, Any]:
    """A valid export body on connection ``shop``, list 3."""
    body: dict[str, Any] = {
        "display_name": "Daily export",
        "connection": "shop",
        "segment": "snapshots/high-value/",
        "list_id": LIST_ID,
        "email": "Email",
    }
    body.update(changes)
    return body
