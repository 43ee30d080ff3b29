"""The console as the Functions app serves it: the registered function's handler with App
Service Authentication's principal header, for an administrator, a contributor and a reader."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import azure.durable_functions as df
import azure.functions as func
import pytest

from blueprints import console
from blueprints.auth import PRINCIPAL_HEADER, principal_header
from blueprints.runtime import Runtime, use_runtime
from exporter.management.config import Connection
from exporter.management.local_keys import LocalKeyStore
from exporter.management.permissions import ADMIN, CONTRIBUTOR, Caller
from exporter.management.repository import ConfigRepository
from exporter.management.secret_names import new_key_ref
from exporter.management.service import ClientLike, ManagementService
from exporter.run.engine import Engine
from exporter.run.report import RunReport
from exporter.settings import FunctionSettings, HostPolicy
from exporter.storage import runs
from exporter.storage.records import write_record
from exporter.storage.store import LocalStore
from sandbox import Sandbox
from tests.console.conftest import API_KEY, LIST_ID, SEGMENT, segment_csv
from tests.functions.fake_durable import NOW, FakeDurableClient

ADMIN_HEADERS = {PRINCIPAL_HEADER: principal_header("ada@example.com", [ADMIN])}
CONTRIBUTOR_HEADERS = {PRINCIPAL_HEADER: principal_header("cy@example.com", [CONTRIBUTOR])}
READER_HEADERS = {PRINCIPAL_HEADER: principal_header("rey@example.com", [])}


@pytest.fixture
def runtime(tmp_path: Path, account: Sandbox) -> Iterator[Runtime]:
    hosts = HostPolicy(allow_loopback_sandbox=True)
    settings = FunctionSettings(None, None, None, None, hosts=hosts)
    store = LocalStore(tmp_path / "store")
    keys = LocalKeyStore({}, tmp_path / "keys")
    engine = Engine(store, keys, host_policy=hosts)

    def factory(connection: Connection, key: str) -> ClientLike:
        client: ClientLike = engine.default_client(connection, key)
        return client

    service = ManagementService(ConfigRepository(store), keys, factory, hosts)
    admin = Caller.local_admin("ada@example.com")
    host = f"127.0.0.1:{account.port}"
    for name, open_ in (("private", False), ("shared", True)):
        service.create_connection(
            admin,
            {
                "name": name,
                "display_name": f"{name.title()} <i>acct</i>",
                "hostname": host,
                "api_key_ref": new_key_ref(name),
                "allow_contributors": open_,
                "consent": True,
            },
            API_KEY,
        )
        service.create_export(
            admin,
            {
                "name": f"{name}-news",
                "display_name": f"{name} news",
                "connection": name,
                "segment": SEGMENT,
                "list_id": LIST_ID,
                "email": "Email",
            },
        )
    run_id = "20260105T000000Z-1a2b3c4d"
    report = RunReport(
        export="shared-news",
        run_id=run_id,
        snapshot="seed",
        started_at="2026-01-05T00:00:00+00:00",
        status="completed",
        rows_read=3,
        rejected=1,
        confirmed=2,
        rejected_by_reason={"invalid email <x>": 1},
    )
    write_record(store, runs.report_path("shared-news", run_id), report)
    store.write_bytes(runs.rejected_path("shared-news", run_id), b"row,reason\n2,bad\n")
    with use_runtime(Runtime(settings, store, keys, engine, service)) as rt:
        yield rt


def call(
    method: str, path: str, headers: dict[str, str], body: bytes = b"", client: Any = None
) -> func.HttpResponse:
    req = func.HttpRequest(
        method,
        f"https://exporter.example.net/api/console/{path}",
        headers=headers,
        params={},
        route_params={"path": path},
        body=body,
    )
    return asyncio.run(console.handle_console(req, client))


def text(resp: func.HttpResponse) -> str:
    return resp.get_body().decode()


def test_the_app_registers_the_console_route_without_function_keys() -> None:
    app = df.DFApp()
    app.register_functions(console.bp)
    (function,) = app.get_functions()
    trigger = next(b for b in function.get_bindings() if b.type == "httpTrigger")
    assert function.get_function_name() == "console"
    assert trigger.route == "console/{*path}"
    assert sorted(str(m) for m in trigger.methods) == ["GET", "POST"]
    assert trigger.auth_level == func.AuthLevel.ANONYMOUS  # Easy Auth is in front instead
    client = next(b for b in function.get_bindings() if b.type == "durableClient")
    assert client.name == "client"


def test_an_administrator_sees_every_connection_and_may_download(runtime: Runtime) -> None:
    page = call("GET", "connections", ADMIN_HEADERS)
    assert page.status_code == 200
    body = text(page)
    assert "Private &lt;i&gt;acct&lt;/i&gt;" in body and "Shared" in body
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    history = text(call("GET", "exports/shared-news/runs", ADMIN_HEADERS))
    found = re.search(r'data-run="([^"]+)"', history)
    assert found, history
    run_id = found.group(1)
    detail = text(call("GET", f"exports/shared-news/runs/{run_id}", ADMIN_HEADERS))
    assert "invalid email &lt;x&gt;" in detail and "rejected.csv" in detail
    csv = call("GET", f"exports/shared-news/runs/{run_id}/rejected.csv", ADMIN_HEADERS)
    assert csv.status_code == 200 and csv.get_body() == b"row,reason\n2,bad\n"
    assert "Run now" not in history  # runs start through Durable Functions in Azure


def test_a_contributor_sees_only_what_the_role_allows(runtime: Runtime) -> None:
    listing = text(call("GET", "connections", CONTRIBUTOR_HEADERS))
    assert "Shared" in listing and "Private" not in listing
    assert "127.0.0.1" not in listing  # contributors do not see hostnames
    exports = text(call("GET", "exports", CONTRIBUTOR_HEADERS))
    assert "shared-news" in exports and "private-news" not in exports
    assert call("GET", "connections/new", CONTRIBUTOR_HEADERS).status_code == 403
    assert call("GET", "exports/private-news/runs", CONTRIBUTOR_HEADERS).status_code == 403
    history = text(call("GET", "exports/shared-news/runs", CONTRIBUTOR_HEADERS))
    run_id = re.search(r'data-run="([^"]+)"', history).group(1)  # type: ignore[union-attr]
    detail = text(call("GET", f"exports/shared-news/runs/{run_id}", CONTRIBUTOR_HEADERS))
    assert "rejected.csv</a>" not in detail and "administrators may download" in detail
    csv = call("GET", f"exports/shared-news/runs/{run_id}/rejected.csv", CONTRIBUTOR_HEADERS)
    assert csv.status_code == 403 and b"row,reason" not in csv.get_body()


def test_a_reader_sees_nothing_and_an_anonymous_caller_must_sign_in(runtime: Runtime) -> None:
    for path in ("exports", "connections", "exports/shared-news/runs"):
        answer = call("GET", path, READER_HEADERS)
        assert answer.status_code == 403 and "shared" not in text(answer).lower()
    # Without a principal a browser is sent to Microsoft Entra sign-in and back to its page.
    anonymous = call("GET", "exports/shared-news/runs", {})
    assert anonymous.status_code == 302
    assert anonymous.headers["Location"] == (
        "/.auth/login/aad?post_login_redirect_uri=/api/console/exports/shared-news/runs"
    )
    assert "shared" not in text(anonymous).lower()
    # A form posted without one is refused, not redirected (its data would be lost).
    assert call("POST", "exports/new", {}).status_code == 401


def test_without_trusted_app_service_authentication_every_page_is_401(runtime: Runtime) -> None:
    untrusted = dataclasses.replace(runtime.settings, principal_header_trusted=False)
    with use_runtime(dataclasses.replace(runtime, settings=untrusted)):
        for headers in ({}, ADMIN_HEADERS):
            answer = call("GET", "exports", headers)
            assert answer.status_code == 401 and "Location" not in answer.headers


def test_a_contributors_post_needs_the_csrf_token_of_its_session(runtime: Runtime) -> None:
    page = call("GET", "exports/shared-news/edit", CONTRIBUTOR_HEADERS)
    cookie = page.headers["Set-Cookie"].split(";", 1)[0]
    token = re.search(r'name="csrf_token" value="([0-9a-f]+)"', text(page)).group(1)  # type: ignore[union-attr]
    form = (
        "csrf_token={}&action=save&display_name=Renamed&connection=shared&segment={}"
        "&list_id={}&email=Email&max_shrink_percent=20&enabled=yes"
    )
    headers = {**CONTRIBUTOR_HEADERS, "Content-Type": "application/x-www-form-urlencoded"}
    forged = call(
        "POST",
        "exports/shared-news/edit",
        {**headers, "Cookie": cookie},
        form.format("0" * 64, SEGMENT, LIST_ID).encode(),
    )
    assert forged.status_code == 403
    saved = call(
        "POST",
        "exports/shared-news/edit",
        {**headers, "Cookie": cookie},
        form.format(token, SEGMENT, LIST_ID).encode(),
    )
    assert saved.status_code == 303, text(saved)
    assert "Renamed" in text(call("GET", "exports", CONTRIBUTOR_HEADERS))


def test_run_now_in_azure_starts_the_apis_orchestration_and_follows_it(runtime: Runtime) -> None:
    runtime.store.write_bytes(SEGMENT + "2026-01-07.csv", segment_csv(10))
    durable = FakeDurableClient()
    history = call("GET", "exports/shared-news/runs", CONTRIBUTOR_HEADERS, client=durable)
    assert "Run now" in text(history)
    cookie = history.headers["Set-Cookie"].split(";", 1)[0]
    token = re.search(r'name="csrf_token" value="([0-9a-f]+)"', text(history)).group(1)  # type: ignore[union-attr]
    headers = {
        **CONTRIBUTOR_HEADERS,
        "Cookie": cookie,
        "Content-Type": "application/x-www-form-urlencoded",
    }
    body = f"csrf_token={token}".encode()
    started = call("POST", "exports/shared-news/run", headers, body, durable)
    assert started.status_code == 303, text(started)
    run_id = started.headers["Location"].rsplit("/", 1)[1]
    ((_orchestrator, iid, run_input),) = durable.started()
    assert run_input["request"]["run_id"] == run_id
    assert run_input["request"]["requested_by"] == "console:cy@example.com"
    durable.set(
        iid,
        "Running",
        customStatus={"phase": "sending", "sent": 6, "confirmed": 2, "contacts_to_send": 10},
        lastUpdatedTime=(NOW + timedelta(seconds=4)).isoformat(),
    )
    url = f"exports/shared-news/runs/{run_id}"
    answer = call("GET", url + "/progress.json", headers, client=durable)
    assert answer.status_code == 200, text(answer)[-800:]
    progress = json.loads(answer.get_body())
    assert (progress["phase"], progress["sent"], progress["confirmed"]) == ("sending", 6, 2)
    # 2 confirmed in the 4 s since the orchestration started: 0.5/s, 8 left take 16 s.
    assert (progress["rate_per_second"], progress["seconds_left"]) == (0.5, 16)
    assert "requests/s" in progress["budget"]
    assert 'id="progress"' in text(call("GET", url, headers, client=durable))
    cancelled = call("POST", url + "/cancel", headers, body, durable)
    assert cancelled.status_code == 303
    assert ("raise_event", (iid, "cancel", {"by": "console"})) in durable.calls
    assert call("POST", url + "/cancel", READER_HEADERS, body, durable).status_code == 403


def test_the_csrf_secret_is_shared_by_the_apps_instances_and_never_hard_coded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(console.SECRET_SETTING, raising=False)
    monkeypatch.delenv(console.PLATFORM_KEY_SETTING, raising=False)
    assert console._secret() != console._secret()  # random per worker process
    monkeypatch.setenv(console.PLATFORM_KEY_SETTING, "k" * 64)
    derived = console._secret()
    assert derived == console._secret() and b"k" * 32 not in derived  # same on every instance
    monkeypatch.setenv(console.SECRET_SETTING, "s" * 40)
    assert console._secret() == b"s" * 40
