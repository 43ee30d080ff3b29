"""The principal header is believed only when App Service Authentication can vouch for it."""

from __future__ import annotations

import asyncio
import inspect
import json
import re
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest

from bench.durable.app import registered
from blueprints import triggers
from blueprints.runtime import Runtime, use_runtime
from exporter.management.repository import ConfigRepository
from exporter.management.secrets import LocalSecretProvider
from exporter.management.service import ManagementService
from exporter.run.engine import Engine
from exporter.settings import FunctionSettings, HostPolicy
from exporter.storage.store import LocalStore
from tests.functions.fake_durable import BINDING, FakeDurableClient
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


def test_every_http_function_refuses_a_request_without_a_principal(tmp_path: Path) -> None:
    """App Service Authentication lets unauthenticated requests through (so that the console
    can send browsers to sign in): every HTTP function must then refuse them itself — 401, or
    for a console page a redirect to sign-in that shows nothing."""
    seen = []
    with use_runtime(_runtime(tmp_path, trusted=True)):
        for name, function in registered().items():
            trigger = next((b for b in function.get_bindings() if b.type == "httpTrigger"), None)
            if trigger is None:
                continue
            route = re.sub(r"\{\*path\}", "exports/new", trigger.route)
            route = re.sub(r"\{(\w+)(:\w+)?\}", lambda m: f"x{m.group(1)}", route)
            for method in trigger.methods:
                answer = _call(
                    function,
                    func.HttpRequest(
                        str(method),
                        f"https://exporter.example.net/api/{route}",
                        headers={},
                        params={},
                        route_params={"name": "xname", "run_id": "xrun", "path": "exports/new"},
                        body=b"{}",
                    ),
                )
                seen.append((name, str(method)))
                if trigger.route.startswith("console/") and str(method) == "GET":
                    assert answer.status_code == 302, name
                    assert answer.headers["Location"].startswith("/.auth/login/aad?"), name
                else:
                    assert answer.status_code == 401, (name, method, answer.get_body()[:200])
    assert len(seen) >= 10  # the management API, runs and status, and the console


def _call(function: Any, req: func.HttpRequest) -> func.HttpResponse:
    kwargs: dict[str, Any] = {}
    for binding in function.get_bindings():
        if binding.type == "httpTrigger":
            kwargs[binding.name] = req
        elif binding.type == "durableClient":
            kwargs[binding.name] = json.dumps(BINDING)  # as the host passes it
    result = function.get_user_function()(**kwargs)
    return asyncio.run(result) if inspect.iscoroutine(result) else result  # type: ignore[no-any-return]
