"""The principal header is believed only when App Service Authentication can vouch for it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from blueprints import triggers
from blueprints.runtime import Runtime, use_runtime
from exporter.management.repository import ConfigRepository
from exporter.management.secrets import LocalSecretProvider
from exporter.management.service import ManagementService
from exporter.run.engine import Engine
from exporter.settings import FunctionSettings, HostPolicy
from exporter.storage.store import LocalStore
from tests.functions.app_functions import registered
from tests.functions.fake_durable import FakeDurableClient
from tests.functions.mgmt_fixtures import payload, request


@pytest.mark.parametrize(
    ("env", "trusted"),
    [
        ({}, False),
        ({"WEBSITE_AUTH_ENABLED": "False"}, False),
        ({"AZURE_FUNCTIONS_ENVIRONMENT": "Production"}, False),
        ({"WEBSITE_AUTH_ENABLED": "True"}, True),
        ({"AZURE_FUNCTIONS_ENVIRONMENT": "Development"}, True),
        # In Azure (the platform sets WEBSITE_INSTANCE_ID) a stray Development setting is
        # ignored: only App Service Authentication makes the header believable there.
        ({"AZURE_FUNCTIONS_ENVIRONMENT": "Development", "WEBSITE_INSTANCE_ID": "abc123"}, False),
        ({"WEBSITE_AUTH_ENABLED": "true", "WEBSITE_INSTANCE_ID": "abc123"}, True),
    ],
)
def test_trust_comes_from_the_platform_settings(env: dict[str, str], trusted: bool) -> None:
    assert FunctionSettings.from_env(env).principal_header_trusted is trusted


def _runtime(tmp_path: Path, *, trusted: bool) -> Runtime:
    settings = FunctionSettings(
        blob_service_uri=None,
        storage_connection_string=None,
        keyvault_url=None,
        managed_identity_client_id=None,
        principal_header_trusted=trusted,
    )
    store = LocalStore(tmp_path / "store")
    secrets = LocalSecretProvider({})
    hosts = HostPolicy()
    engine = Engine(store, secrets, host_policy=hosts)
    service = ManagementService(ConfigRepository(store), secrets, lambda c, k: None, hosts)  # type: ignore[arg-type,return-value]
    return Runtime(settings, store, secrets, engine, service)


@pytest.mark.parametrize("trusted", [True, False])
def test_without_easy_auth_even_an_admin_header_is_refused(tmp_path: Path, trusted: bool) -> None:
    functions = registered()
    with use_runtime(_runtime(tmp_path, trusted=trusted)):
        listed = functions["connections_list"].get_user_function()(request("GET", "connections"))
        runs = functions["list_export_runs"].get_user_function()(
            request("GET", "exports/nope/runs")
        )
        started = asyncio.run(
            triggers.start_export_run(
                request("POST", "exports/nope/runs", body={}), FakeDurableClient()
            )
        )
    if trusted:
        assert listed.status_code == 200 and payload(listed)["connections"] == []
        assert runs.status_code == 404 and started.status_code == 404
    else:
        for resp in (listed, runs, started):
            assert resp.status_code == 401
            assert "App Service Authentication is not enabled" in resp.get_body().decode()


def test_a_forged_admin_header_in_azure_with_a_stray_development_setting_is_401(
    tmp_path: Path,
) -> None:
    """Regression (issue 15): an ``AZURE_FUNCTIONS_ENVIRONMENT=Development`` app setting made a
    forged principal header trusted in Azure, where the platform sets ``WEBSITE_INSTANCE_ID``."""
    env = {"AZURE_FUNCTIONS_ENVIRONMENT": "Development", "WEBSITE_INSTANCE_ID": "0a1b2c"}
    trusted = FunctionSettings.from_env(env).principal_header_trusted
    functions = registered()
    with use_runtime(_runtime(tmp_path, trusted=trusted)):
        forged = request("GET", "connections")  # carries an administrator's principal header
        listed = functions["connections_list"].get_user_function()(forged)
    assert listed.status_code == 401
