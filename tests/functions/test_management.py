"""The management API through its HTTP handlers: Key Vault via the real SecretClient against
the HTTPS stub, ActiveCampaign via the real client against the sandbox, a local store."""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import azure.durable_functions as df
import azure.functions as func
import pytest

from bench.durable.app import registered
from blueprints import management
from blueprints.management import (
    Cancelled,
    export_of_input,
    handle_delete_connection,
    handle_delete_export,
    handle_get_connection,
    handle_get_export,
    handle_list_connections,
    handle_list_exports,
    handle_put_connection,
    handle_put_export,
    handle_verify_connection,
)
from blueprints.orchestration import group_instance_id
from exporter.errors import SecretError
from exporter.management.secret_names import is_generated_key_ref
from exporter.run.engine import instance_id
from exporter.settings import HostPolicy
from sandbox import Sandbox
from tests.functions.mgmt_fixtures import (
    ADMIN_NAME,
    NOW_JSON,
    SANDBOX_KEY,
    TIER_FIELD_ID,
    World,
    conn_body,
    export_body,
    make_world,
    mgmt_sandbox_fixture,  # noqa: F401  (pytest fixture)
    mgmt_vault_fixture,  # noqa: F401  (pytest fixture)
    payload,
    request,
    world_fixture,  # noqa: F401  (pytest fixture)
)
from tests.keyvault_stub import KeyVaultStub

REF = re.compile(r"keyvault:(ac-shop-[0-9a-f]{8})")


def create_shop(world: World, **changes: Any) -> func.HttpResponse:
    body = conn_body(world, api_key=SANDBOX_KEY, **changes)
    resp = handle_put_connection(request("PUT", "connections/shop", body=body), world.service)
    assert resp.status_code == 201, payload(resp)
    return resp


def secret_of(resp: func.HttpResponse) -> str:
    match = REF.fullmatch(payload(resp)["connection"]["api_key_ref"])
    assert match, payload(resp)
    return match.group(1)


def field_names(resp: func.HttpResponse) -> set[str | None]:
    return {e["field"] for e in payload(resp)["errors"]}


# --- connections and their keys ------------------------------------------------------------


def test_saving_a_connection_writes_its_key_to_key_vault_only(world: World) -> None:
    resp = create_shop(world)

    secret = secret_of(resp)
    assert world.vault.value(secret) == SANDBOX_KEY
    assert world.vault.hits("PUT", secret) == 1
    stored = world.stored_files()
    assert list(stored) == ["config/connections/shop.json"]
    document = json.loads(stored["config/connections/shop.json"])
    assert document["api_key_ref"] == f"keyvault:{secret}"
    assert all(SANDBOX_KEY.encode() not in data for data in stored.values())
    assert SANDBOX_KEY not in resp.get_body().decode()
    assert SANDBOX_KEY not in json.dumps(dict(resp.headers))
    assert resp.headers["ETag"].startswith('"')
    view = payload(resp)["connection"]
    assert view["consent"] == {"agreed": True, "by": ADMIN_NAME, "at": NOW_JSON}
    assert view["created_by"] == ADMIN_NAME

    verified = handle_verify_connection(request("POST", "connections/shop/verify"), world.service)
    assert verified.status_code == 200
    assert payload(verified)["verified"] is True


def test_a_pasted_url_is_normalised_and_the_note_returned(world: World) -> None:
    resp = create_shop(world, hostname=f"http://{world.sandbox_host}/api/3/")
    assert payload(resp)["connection"]["hostname"] == world.sandbox_host
    assert payload(resp)["notes"]


def test_verify_before_saving_refuses_a_wrong_key_and_saves_nothing(world: World) -> None:
    body = conn_body(world, api_key="f" * 72)
    req = request("PUT", "connections/shop", body=body, params={"verify": "true"})
    resp = handle_put_connection(req, world.service)
    assert resp.status_code == 422
    assert payload(resp)["code"] == "activecampaign_key_rejected"
    assert world.stored_files() == {}


def test_replacing_needs_the_etag(world: World) -> None:
    created = create_shop(world)
    secret = secret_of(created)
    etag = created.headers["ETag"]

    with_key = conn_body(world, api_key="c" * 72)
    again = handle_put_connection(request("PUT", "connections/shop", body=with_key), world.service)
    assert again.status_code == 409
    assert "If-Match" in payload(again)["errors"][0]["message"]
    assert world.vault.value(secret) == SANDBOX_KEY  # a refused create writes no key

    create_only = request("PUT", "connections/shop", body=with_key, headers={"If-None-Match": "*"})
    assert handle_put_connection(create_only, world.service).status_code == 412

    stale = request("PUT", "connections/shop", body=with_key, headers={"If-Match": '"x"'})
    assert handle_put_connection(stale, world.service).status_code == 412

    rotated = "a" * 72
    replace = request(
        "PUT",
        "connections/shop",
        body={"display_name": "Renamed", "api_key": rotated},
        headers={"If-Match": etag},
    )
    resp = handle_put_connection(replace, world.service)
    assert resp.status_code == 200, payload(resp)
    assert secret_of(resp) == secret  # a new version of the same secret
    assert len(world.vault.versions(secret)) == 2
    assert world.vault.value(secret) == rotated
    assert payload(resp)["connection"]["display_name"] == "Renamed"
    assert resp.headers["ETag"] != etag

    reused = request(
        "PUT", "connections/shop", body={"display_name": "Again"}, headers={"If-Match": etag}
    )
    assert handle_put_connection(reused, world.service).status_code == 412

    missing = request("PUT", "connections/other", body=conn_body(world), headers={"If-Match": etag})
    assert handle_put_connection(missing, world.service).status_code == 412


def test_a_new_key_for_a_shared_reference_gets_a_secret_of_its_own(world: World) -> None:
    world.seed_connection("shop", ref="keyvault:shared-key")
    world.seed_connection("outlet", ref="keyvault:shared-key")
    etag = handle_get_connection(request("GET", "connections/shop"), world.service).headers["ETag"]
    req = request("PUT", "connections/shop", body={"api_key": "b" * 72}, headers={"If-Match": etag})
    resp = handle_put_connection(req, world.service)

    assert resp.status_code == 200, payload(resp)
    assert is_generated_key_ref(payload(resp)["connection"]["api_key_ref"], "shop")
    assert world.vault.value("shared-key") == SANDBOX_KEY  # the other connection's key stays
    assert world.vault.value(secret_of(resp)) == "b" * 72


def test_views_show_consent_to_admins_and_only_name_and_type_to_contributors(
    world: World,
) -> None:
    world.seed_connection("shop", allow_contributors=True)
    world.seed_connection("vault", allow_contributors=False)

    admin = payload(handle_get_connection(request("GET", "connections/shop"), world.service))
    assert admin["connection"]["consent"]["by"] == ADMIN_NAME
    assert admin["connection"]["consent"]["at"] == NOW_JSON
    assert admin["connection"]["hostname"] == world.sandbox_host

    contributor = handle_get_connection(
        request("GET", "connections/shop", role="contributor"), world.service
    )
    assert payload(contributor)["connection"] == {
        "name": "shop",
        "display_name": "Shop account",
        "type": "activecampaign",
    }
    listed = handle_list_connections(
        request("GET", "connections", role="contributor"), world.service
    )
    assert [c["name"] for c in payload(listed)["connections"]] == ["shop"]
    everything = handle_list_connections(request("GET", "connections"), world.service)
    assert [c["name"] for c in payload(everything)["connections"]] == ["shop", "vault"]


def test_verify_with_a_wrong_stored_key_is_422_not_403(world: World) -> None:
    world.seed_connection("shop", key="0" * 72)
    resp = handle_verify_connection(request("POST", "connections/shop/verify"), world.service)
    assert resp.status_code == 422
    assert payload(resp)["code"] == "activecampaign_key_rejected"


@pytest.mark.parametrize(
    "hostname",
    [
        "10.0.0.5",
        "192.168.1.20",
        "172.16.0.1",
        "169.254.169.254",
        "127.0.0.1",
        "localhost:8080",
        "[::1]:8080",
        "[fd00::1]",
        "8.8.8.8",
        "evil.example.com",
        "acct.api-us1.com.evil.example",
        "https://user:pw@acct.api-us1.com",
        "acct.api-us1.com:8443",
        "acct.api-us1.com/../../x?y",
    ],
)
def test_the_key_only_goes_to_activecampaign_hosts(
    tmp_path: Path,
    mgmt_sandbox: Sandbox,
    mgmt_vault: KeyVaultStub,
    hostname: str,
) -> None:
    strict = make_world(tmp_path, mgmt_sandbox, mgmt_vault, policy=HostPolicy())
    before = len(mgmt_vault.requests)
    body = conn_body(strict, hostname=hostname, api_key=SANDBOX_KEY)
    resp = handle_put_connection(request("PUT", "connections/shop", body=body), strict.service)

    assert resp.status_code == 400
    assert "hostname" in field_names(resp)
    assert strict.stored_files() == {}
    assert [r for r in mgmt_vault.requests[before:] if r.method == "PUT"] == []


def test_connect_checks_the_key_first_unless_verify_is_false(world: World) -> None:
    """A new connection's key is checked with ActiveCampaign before anything is saved, as
    Customer Insights' Connect does; ``?verify=false`` saves offline."""
    body = conn_body(world, api_key="wrong-" + SANDBOX_KEY)
    refused = handle_put_connection(request("PUT", "connections/shop", body=body), world.service)
    assert refused.status_code == 422, refused.get_body()  # the request named a bad key
    assert payload(refused)["code"] == "activecampaign_key_rejected"
    assert world.stored_files() == {}
    offline = request("PUT", "connections/shop", body=body, params={"verify": "false"})
    assert handle_put_connection(offline, world.service).status_code == 201


def test_an_activecampaign_host_is_accepted_by_the_strict_policy(
    tmp_path: Path,
    mgmt_sandbox: Sandbox,
    mgmt_vault: KeyVaultStub,
) -> None:
    strict = make_world(tmp_path, mgmt_sandbox, mgmt_vault, policy=HostPolicy())
    body = conn_body(strict, hostname="Acct.API-us1.com", api_key=SANDBOX_KEY)
    # Saved offline: the strict policy would not let the check reach the loopback sandbox.
    put = request("PUT", "connections/shop", body=body, params={"verify": "false"})
    resp = handle_put_connection(put, strict.service)
    assert resp.status_code == 201
    assert payload(resp)["connection"]["hostname"] == "acct.api-us1.com"


def test_bad_payloads_get_field_level_errors(world: World) -> None:
    def put(**kw: Any) -> func.HttpResponse:
        return handle_put_connection(request("PUT", "connections/shop", **kw), world.service)

    everything_wrong = put(body={"hostname": "10.1.1.1", "display_name": "", "colour": "red"})
    assert everything_wrong.status_code == 400
    assert {"hostname", "consent", "display_name", "colour", "api_key_ref"} <= field_names(
        everything_wrong
    )
    assert field_names(put(body=conn_body(world, api_key=5))) == {"api_key"}
    assert field_names(put(body=conn_body(world, name="other", api_key="k"))) == {"name"}
    assert field_names(put(body=conn_body(world, api_key="has space"))) == {"api_key"}
    assert (
        put(raw=b'{"display_name": ', headers={"Content-Type": "application/json"}).status_code
        == 400
    )
    assert put(raw=b"display_name=x", headers={"Content-Type": "text/plain"}).status_code == 415
    assert put(body=["not", "an", "object"]).status_code == 400
    big = conn_body(world, display_name="x" * 70_000)
    assert put(body=big).status_code == 413
    bad_name = handle_put_connection(
        request("PUT", "connections/Bad_Name", body=conn_body(world, api_key_ref="env:K")),
        world.service,
    )
    assert bad_name.status_code == 400
    assert field_names(bad_name) == {"name"}
    assert world.stored_files() == {}


def test_unknown_names_are_404(world: World) -> None:
    for handler, method, route in [
        (handle_get_connection, "GET", "connections/nope"),
        (handle_verify_connection, "POST", "connections/nope/verify"),
        (handle_delete_connection, "DELETE", "connections/nope"),
        (handle_get_export, "GET", "exports/nope"),
    ]:
        resp = handler(request(method, route), world.service)
        assert resp.status_code == 404, route
        assert payload(resp)["errors"][0]["field"] == "name"
    resp = asyncio.run(
        handle_delete_export(request("DELETE", "exports/nope"), world.service, world.runs)
    )
    assert resp.status_code == 404
    assert world.runs.calls == []


def test_deleting_a_connection_and_its_key_then_reusing_the_name(world: World) -> None:
    secret = secret_of(create_shop(world))
    put_export = request("PUT", "exports/daily", body=export_body())
    assert handle_put_export(put_export, world.service).status_code == 201

    in_use = handle_delete_connection(request("DELETE", "connections/shop"), world.service)
    assert in_use.status_code == 409
    assert "daily" in payload(in_use)["errors"][0]["message"]

    req = request("DELETE", "connections/shop", params={"force": "true", "delete_secret": "true"})
    deleted = handle_delete_connection(req, world.service)
    assert deleted.status_code == 200
    assert payload(deleted) == {
        "name": "shop",
        "deleted": True,
        "orphaned_exports": ["daily"],
        "secret_deleted": True,
    }
    assert world.vault.value(secret) is None
    # Soft delete keeps the old name reserved: writing it again would fail...
    with pytest.raises(SecretError, match="deleted but recoverable"):
        world.service.secrets.set(f"keyvault:{secret}", SANDBOX_KEY, owner="shop")
    # ...so a new connection of the same name gets a new secret name and simply works.
    again = create_shop(world)
    assert secret_of(again) != secret
    verify = handle_verify_connection(request("POST", "connections/shop/verify"), world.service)
    assert verify.status_code == 200


def test_deleting_a_connection_keeps_its_key_unless_asked(world: World) -> None:
    secret = secret_of(create_shop(world))
    resp = handle_delete_connection(request("DELETE", "connections/shop"), world.service)
    assert payload(resp)["secret_deleted"] is False
    assert world.vault.value(secret) == SANDBOX_KEY


def test_an_operator_secret_is_read_but_never_overwritten_or_deleted(world: World) -> None:
    """Regression (issue 15): an administrator pointed api_key_ref at an operator's secret,
    sent api_key and overwrote it; delete_secret=true then deleted it."""
    world.vault.seed("operator-ac-key", SANDBOX_KEY, tags={"owner": "platform-team"})
    body = conn_body(world, api_key_ref="keyvault:operator-ac-key")
    resp = handle_put_connection(request("PUT", "connections/shop", body=body), world.service)
    assert resp.status_code == 201, payload(resp)  # referring to it is fine: it is only read
    verify = handle_verify_connection(request("POST", "connections/shop/verify"), world.service)
    assert verify.status_code == 200, payload(verify)

    headers = {"If-Match": resp.headers["ETag"]}
    changed = {"api_key_ref": "keyvault:operator-ac-key", "api_key": "e" * 72}
    req = request("PUT", "connections/shop", body=changed, headers=headers)
    overwrite = handle_put_connection(req, world.service)
    assert overwrite.status_code == 400
    assert field_names(overwrite) == {"api_key_ref"}
    other = conn_body(world, api_key_ref="keyvault:operator-ac-key", api_key="e" * 72)
    created = handle_put_connection(request("PUT", "connections/two", body=other), world.service)
    assert created.status_code == 400 and field_names(created) == {"api_key_ref"}

    req = request("DELETE", "connections/shop", params={"delete_secret": "true"})
    refused = handle_delete_connection(req, world.service)
    assert refused.status_code == 400 and field_names(refused) == {"delete_secret"}
    assert world.vault.value("operator-ac-key") == SANDBOX_KEY
    assert len(world.vault.versions("operator-ac-key")) == 1
    assert world.vault.hits("PUT", "operator-ac-key") == 0
    assert world.vault.hits("DELETE", "operator-ac-key") == 0


def test_another_connections_secret_cannot_be_taken_over(world: World) -> None:
    shop_secret = secret_of(create_shop(world))
    body = conn_body(world, api_key_ref=f"keyvault:{shop_secret}", api_key="e" * 72)
    resp = handle_put_connection(request("PUT", "connections/other", body=body), world.service)
    assert resp.status_code == 400 and field_names(resp) == {"api_key_ref"}
    assert world.vault.value(shop_secret) == SANDBOX_KEY


def test_a_key_vault_refusal_on_delete_says_the_connection_went(world: World) -> None:
    create_shop(world)
    world.vault.forbidden = True
    try:
        req = request("DELETE", "connections/shop", params={"delete_secret": "true"})
        resp = handle_delete_connection(req, world.service)
    finally:
        world.vault.forbidden = False
    assert resp.status_code == 502
    assert payload(resp)["deleted"] is True
    assert "Key Vault Secrets Officer" in payload(resp)["errors"][0]["message"]
    assert world.stored_files() == {}


def test_a_key_vault_refusal_on_create_leaves_no_connection(world: World) -> None:
    world.vault.forbidden = True
    try:
        body = conn_body(world, api_key=SANDBOX_KEY)
        resp = handle_put_connection(request("PUT", "connections/shop", body=body), world.service)
    finally:
        world.vault.forbidden = False
    assert resp.status_code == 502
    assert payload(resp)["code"] == "secret_unavailable"
    assert world.stored_files() == {}


# --- exports ---------------------------------------------------------------------------------


def test_an_export_is_checked_against_the_account(world: World) -> None:
    world.seed_connection("shop")
    tier = {"column": "Tier", "field": "%TIER%"}
    before = world.sandbox.request_counts().get("GET /fields", 0)
    resp = handle_put_export(
        request("PUT", "exports/daily", body=export_body(fields=[tier])), world.service
    )
    assert resp.status_code == 201, payload(resp)
    field = payload(resp)["export"]["fields"][0]
    assert (field["field_id"], field["field_type"]) == (TIER_FIELD_ID, "dropdown")
    assert world.sandbox.request_counts().get("GET /fields", 0) - before == 2  # both pages

    missing_list = handle_put_export(
        request("PUT", "exports/other", body=export_body(list_id="99")), world.service
    )
    assert missing_list.status_code == 400
    assert field_names(missing_list) == {"list_id"}
    unknown_field = handle_put_export(
        request("PUT", "exports/other", body=export_body(fields=[{"column": "X", "field": "Y"}])),
        world.service,
    )
    assert field_names(unknown_field) == {"fields.0.field"}
    no_connection = handle_put_export(
        request("PUT", "exports/other", body=export_body(connection="gone")), world.service
    )
    assert field_names(no_connection) == {"connection"}
    bad = handle_put_export(
        request("PUT", "exports/other", body=export_body(list_id="x", schedule="daily")),
        world.service,
    )
    assert field_names(bad) == {"list_id", "schedule"}


def test_an_export_is_replaced_with_its_etag(world: World) -> None:
    world.seed_connection("shop")
    world.seed_export("weekly")
    got = handle_get_export(request("GET", "exports/weekly"), world.service)
    etag = got.headers["ETag"]
    req = request("PUT", "exports/weekly", body={"enabled": False}, headers={"If-Match": etag})
    resp = handle_put_export(req, world.service)
    assert resp.status_code == 200
    assert payload(resp)["export"]["enabled"] is False
    assert handle_put_export(req, world.service).status_code == 412
    listed = handle_list_exports(request("GET", "exports"), world.service)
    assert [e["name"] for e in payload(listed)["exports"]] == ["weekly"]


def test_deleting_an_export_cancels_its_run_and_keeps_its_history(world: World) -> None:
    world.seed_connection("shop")
    world.seed_export("weekly")
    world.store.write_bytes("runs/weekly/r1/report.json", b"{}")
    world.runs.running["weekly"] = ["weekly:r1"]

    resp = asyncio.run(
        handle_delete_export(request("DELETE", "exports/weekly"), world.service, world.runs)
    )
    assert resp.status_code == 200
    assert payload(resp) == {
        "name": "weekly",
        "deleted": True,
        "connection": "shop",
        "cancelled_runs": ["weekly:r1"],
    }
    assert "runs/weekly/r1/report.json" in world.stored_files()
    assert "config/exports/weekly.json" not in world.stored_files()
    assert handle_get_export(request("GET", "exports/weekly"), world.service).status_code == 404


def test_state_a_cancelled_run_wrote_after_the_delete_is_removed_too(world: World) -> None:
    world.seed_connection("shop")
    world.seed_export("weekly")
    world.store.write_bytes("state/weekly/state.bin", b"ada@example.com")
    store = world.store

    class LateWriter:
        async def cancel(self, export: str, reason: str) -> Cancelled:
            # The run's last activity finished between the delete and the termination.
            store.write_bytes("state/weekly/state.bin", b"ada@example.com")
            store.write_bytes("runs/weekly/r1/chunks/00000.jsonl", b"ada@example.com")
            return Cancelled(cancelled=["weekly:r1"])

    resp = asyncio.run(
        handle_delete_export(request("DELETE", "exports/weekly"), world.service, LateWriter())
    )
    assert resp.status_code == 200
    assert not store.exists("state/weekly/state.bin")
    assert not store.exists("runs/weekly/r1/chunks/00000.jsonl")


def test_runs_that_cannot_be_cancelled_are_reported(world: World) -> None:
    world.seed_connection("shop")
    world.seed_export("weekly")

    class Stubborn:
        async def cancel(self, export: str, reason: str) -> Cancelled:
            return Cancelled(cancelled=[], failed=[f"{export}:r9"])

    resp = asyncio.run(
        handle_delete_export(request("DELETE", "exports/weekly"), world.service, Stubborn())
    )
    assert resp.status_code == 502
    assert payload(resp)["deleted"] is True
    assert "weekly:r9" in payload(resp)["errors"][0]["message"]


def test_deleting_with_a_stale_etag_is_412(world: World) -> None:
    world.seed_connection("shop")
    world.seed_export("weekly")
    req = request("DELETE", "exports/weekly", headers={"If-Match": '"stale"'})
    resp = asyncio.run(handle_delete_export(req, world.service, world.runs))
    assert resp.status_code == 412
    assert world.runs.calls == []


# --- through the registered functions ------------------------------------------------------


@pytest.fixture(scope="module")
def functions() -> dict[str, Any]:
    """This blueprint's functions as ``function_app`` registers them, by name."""
    everything = registered()
    return {name: everything[name] for name in management.FUNCTION_NAMES}


def test_the_app_registers_each_management_route_once(functions: dict[str, Any]) -> None:
    blueprint_only = df.DFApp()
    blueprint_only.register_functions(management.bp)
    assert sorted(f.get_function_name() for f in blueprint_only.get_functions()) == sorted(
        functions
    )
    routes = set()
    for f in functions.values():
        trigger = next(b for b in f.get_bindings() if b.type == "httpTrigger")
        assert trigger.auth_level == func.AuthLevel.FUNCTION
        routes.add((trigger.route, tuple(m.value for m in trigger.methods)))
    assert len(routes) == len(functions)


def test_the_registered_functions_answer(
    functions: dict[str, Any], world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(management, "_service", lambda: world.service)
    put = functions["connections_put"].get_user_function()
    body = conn_body(world, api_key=SANDBOX_KEY)
    assert put(request("PUT", "connections/shop", body=body)).status_code == 201
    listed = functions["connections_list"].get_user_function()(request("GET", "connections"))
    assert [c["name"] for c in payload(listed)["connections"]] == ["shop"]
    verify = functions["connections_verify"].get_user_function()
    assert verify(request("POST", "connections/shop/verify")).status_code == 200


def test_a_broken_runtime_still_answers_json_without_details(
    functions: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken() -> Any:
        raise RuntimeError("connection string AccountKey=c2VjcmV0 is invalid")

    monkeypatch.setattr(management, "_service", broken)
    resp = functions["exports_list"].get_user_function()(request("GET", "exports"))
    assert resp.status_code == 500
    assert "AccountKey" not in resp.get_body().decode()


class DurableHost:
    """The Functions host's Durable HTTP API, as far as the delete needs it: list instances
    (honouring ``instanceIdPrefix`` and ``runtimeStatus``), read one, terminate one.

    ``instances`` maps an id to ``(runtime status, input)``; ids in ``hide_input`` are listed
    without their input, as a host may do, so the canceller has to read them one by one.
    """

    def __init__(self, instances: dict[str, tuple[str, Any]], hide_input: set[str]) -> None:
        self.instances = dict(instances)
        self.hide_input = hide_input
        self.queries: list[dict[str, list[str]]] = []
        self.reads: list[str] = []
        self.terminated: list[tuple[str, str]] = []
        host = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                """Quiet."""

            def _send(self, status: int, body: object) -> None:
                data = b"" if body is None else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                url = urlsplit(self.path)
                query = parse_qs(url.query)
                instance = url.path.split("/instances/", 1)[1]
                if instance:
                    host.reads.append(instance)
                    status, given = host.instances[instance]
                    self._send(
                        200, {"instanceId": instance, "runtimeStatus": status, "input": given}
                    )
                    return
                host.queries.append(query)
                prefix = query.get("instanceIdPrefix", [""])[0]
                wanted = set(query.get("runtimeStatus", [""])[0].split(",")) - {""}
                found = [
                    {"instanceId": i, "runtimeStatus": s}
                    | ({} if i in host.hide_input else {"input": given})
                    for i, (s, given) in host.instances.items()
                    if i.startswith(prefix) and (not wanted or s in wanted)
                ]
                self._send(200, found)

            def do_POST(self) -> None:
                url = urlsplit(self.path)
                instance = url.path.split("/")[-2]
                host.terminated.append((instance, parse_qs(url.query)["reason"][0]))
                host.instances[instance] = ("Terminated", host.instances[instance][1])
                self._send(202, None)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> DurableHost:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    @property
    def binding(self) -> str:
        """The client binding's JSON, as the host passes it to the function."""
        port = self.server.server_address[1]
        return json.dumps(
            {
                "taskHubName": "exporter",
                "creationUrls": {},
                "managementUrls": {},
                "rpcBaseUrl": f"http://127.0.0.1:{port}/durabletask/",
            }
        )


def run_of(export: str) -> dict[str, Any]:
    """A run orchestration's input, in the shape the starters write."""
    path = f"snapshots/{export}/2025-03-01.csv"
    return {
        "request": {
            "schema_version": 1,
            "export": export,
            "run_id": "20250301T090000Z-1a2b3c4d",
            "snapshot": {
                "kind": "csv",
                "path": path,
                "files": [{"path": path, "size": 10, "etag": '"0x1"'}],
                "modified": "2025-03-01T09:00:00+00:00",
                "entity": None,
                "location": "store",
            },
            "snapshot_identity": "1a2b3c4d" * 4,
            "options": {"dry_run": False, "full_resync": False, "allow_shrink": False},
            "requested_by": "timer",
            "requested_at": "2025-03-01T09:00:00+00:00",
        },
        "wave_width": 4,
        "group_size": 50,
        "account": "",
        "member": "",
    }


WEEKLY_NOW = instance_id("weekly", "snapshot-2025-03-01")
WEEKLY_GROUP = group_instance_id(WEEKLY_NOW, "20250301T090000Z-1a2b3c4d", 0)
WEEKLY_NEXT = instance_id("weekly", "snapshot-2025-03-02")
WEEKLY_DONE = instance_id("weekly", "snapshot-2025-02-01")
EXTRA_NOW = instance_id("weekly-extra", "snapshot-2025-03-01")


@pytest.fixture
def durable_host() -> Iterator[DurableHost]:
    instances = {
        WEEKLY_NOW: ("Running", run_of("weekly")),
        WEEKLY_GROUP: ("Running", {"run": run_of("weekly"), "chunks": ["c/00001.jsonl"]}),
        WEEKLY_NEXT: ("Pending", json.dumps(run_of("weekly"))),
        WEEKLY_DONE: ("Completed", run_of("weekly")),
        EXTRA_NOW: ("Running", run_of("weekly-extra")),  # "weekly-" is its prefix too
    }
    with DurableHost(instances, hide_input={WEEKLY_NEXT, EXTRA_NOW}) as host:
        yield host


async def _call_and_close(fn: Any, **kwargs: Any) -> func.HttpResponse:
    from azure.durable_functions.models.utils import http_utils

    try:
        return await fn(**kwargs)  # type: ignore[no-any-return]
    finally:
        await http_utils._close_session()  # the SDK's session belongs to this event loop


def test_the_registered_delete_terminates_only_that_exports_active_runs(
    functions: dict[str, Any],
    world: World,
    durable_host: DurableHost,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world.seed_connection("shop", allow_contributors=True)
    world.seed_export("weekly")
    world.seed_export("weekly-extra")
    world.store.write_bytes("runs/weekly/20250201T090000Z-1a2b3c4d/report.json", b"{}")
    monkeypatch.setattr(management, "_service", lambda: world.service)
    delete = functions["exports_delete"].get_user_function()

    req = request("DELETE", "exports/weekly", role="contributor")
    resp = asyncio.run(_call_and_close(delete, req=req, client=durable_host.binding))

    assert resp.status_code == 200, payload(resp)
    assert sorted(payload(resp)["cancelled_runs"]) == sorted(
        [WEEKLY_NOW, WEEKLY_GROUP, WEEKLY_NEXT]
    )
    assert durable_host.instances[EXTRA_NOW][0] == "Running"
    assert durable_host.instances[WEEKLY_DONE][0] == "Completed"
    assert {reason for _i, reason in durable_host.terminated} == {"export weekly was deleted"}
    assert durable_host.queries[0]["instanceIdPrefix"] == ["weekly-"]
    assert set(durable_host.queries[0]["runtimeStatus"][0].split(",")) >= {"Pending", "Running"}
    assert sorted(durable_host.reads) == sorted([WEEKLY_NEXT, EXTRA_NOW])
    assert "runs/weekly/20250201T090000Z-1a2b3c4d/report.json" in world.stored_files()
    extra = handle_get_export(request("GET", "exports/weekly-extra"), world.service)
    assert extra.status_code == 200


@pytest.mark.parametrize(
    ("value", "export"),
    [
        (run_of("a"), "a"),
        ({"run": run_of("b"), "chunks": []}, "b"),
        (json.dumps(run_of("c")), "c"),
        ("not json", None),
        ({"request": "x"}, None),
        (None, None),
    ],
)
def test_the_export_of_an_orchestration_input(value: object, export: str | None) -> None:
    assert export_of_input(value) == export
