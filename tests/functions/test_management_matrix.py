"""Every management endpoint × every kind of caller × both connection settings.

Each cell starts from the same world: connection ``shop`` (contributors allowed or not, its key
in the Key Vault stub) with export ``weekly`` on it, and asserts the status code. Refused cells
also assert that nothing changed: not the store, not the vault, no run cancelled.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import azure.functions as func
import pytest

from blueprints.management import (
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
from tests.functions.mgmt_fixtures import (
    SANDBOX_KEY,
    World,
    conn_body,
    export_body,
    mgmt_sandbox_fixture,  # noqa: F401  (pytest fixture)
    mgmt_vault_fixture,  # noqa: F401  (pytest fixture)
    payload,
    request,
    world_fixture,  # noqa: F401  (pytest fixture)
)

ROLES = ("admin", "contributor", "none", "missing")
SETTINGS = (True, False)
"""``allow_contributors`` of the connection the cell acts on."""

Call = Callable[[World, str], func.HttpResponse]


def _etag(world: World, kind: str, name: str) -> str:
    if kind == "connection":
        return world.repo.get_connection(name)[1]
    return world.repo.get_export(name)[1]


def create_connection(world: World, role: str) -> func.HttpResponse:
    body = conn_body(world, api_key=SANDBOX_KEY)
    return handle_put_connection(
        request("PUT", "connections/other", role=role, body=body), world.service
    )


def replace_connection(world: World, role: str) -> func.HttpResponse:
    headers = {"If-Match": _etag(world, "connection", "shop")}
    req = request(
        "PUT", "connections/shop", role=role, body={"display_name": "Changed"}, headers=headers
    )
    return handle_put_connection(req, world.service)


def get_connection(world: World, role: str) -> func.HttpResponse:
    return handle_get_connection(request("GET", "connections/shop", role=role), world.service)


def list_connections(world: World, role: str) -> func.HttpResponse:
    return handle_list_connections(request("GET", "connections", role=role), world.service)


def verify_connection(world: World, role: str) -> func.HttpResponse:
    req = request("POST", "connections/shop/verify", role=role)
    return handle_verify_connection(req, world.service)


def delete_connection(world: World, role: str) -> func.HttpResponse:
    params = {"force": "true", "delete_secret": "true"}
    req = request("DELETE", "connections/shop", role=role, params=params)
    return handle_delete_connection(req, world.service)


def create_export(world: World, role: str) -> func.HttpResponse:
    tier = [{"column": "Tier", "field": "Tier"}]
    req = request("PUT", "exports/daily", role=role, body=export_body(fields=tier))
    return handle_put_export(req, world.service)


def replace_export(world: World, role: str) -> func.HttpResponse:
    body = {"display_name": "Changed", "fields": [{"column": "Tier", "field": "%TIER%"}]}
    headers = {"If-Match": _etag(world, "export", "weekly")}
    req = request("PUT", "exports/weekly", role=role, body=body, headers=headers)
    return handle_put_export(req, world.service)


def get_export(world: World, role: str) -> func.HttpResponse:
    return handle_get_export(request("GET", "exports/weekly", role=role), world.service)


def list_exports(world: World, role: str) -> func.HttpResponse:
    return handle_list_exports(request("GET", "exports", role=role), world.service)


def delete_export(world: World, role: str) -> func.HttpResponse:
    req = request("DELETE", "exports/weekly", role=role)
    return asyncio.run(handle_delete_export(req, world.service, world.runs))


@dataclass(frozen=True)
class Endpoint:
    name: str
    call: Call
    success: int
    """The status when allowed."""
    scope: str
    """``admin``: administrators only; ``connection``: contributors if the connection allows
    them; ``any``: every exporter role (the answer is filtered instead)."""


ENDPOINTS = (
    Endpoint("PUT /connections/{name} create", create_connection, 201, "admin"),
    Endpoint("PUT /connections/{name} replace", replace_connection, 200, "admin"),
    Endpoint("GET /connections/{name}", get_connection, 200, "connection"),
    Endpoint("GET /connections", list_connections, 200, "any"),
    Endpoint("POST /connections/{name}/verify", verify_connection, 200, "admin"),
    Endpoint("DELETE /connections/{name}", delete_connection, 200, "admin"),
    Endpoint("PUT /exports/{name} create", create_export, 201, "connection"),
    Endpoint("PUT /exports/{name} replace", replace_export, 200, "connection"),
    Endpoint("GET /exports/{name}", get_export, 200, "connection"),
    Endpoint("GET /exports", list_exports, 200, "any"),
    Endpoint("DELETE /exports/{name}", delete_export, 200, "connection"),
)


def expected(endpoint: Endpoint, role: str, allow: bool) -> int:
    """The status code each cell must answer."""
    if role == "missing":
        return 401
    if role == "none":
        return 403
    if role == "admin" or endpoint.scope == "any":
        return endpoint.success
    if endpoint.scope == "connection" and allow:
        return endpoint.success
    return 403


CELLS = [
    pytest.param(e, role, allow, id=f"{e.name} | {role} | allow_contributors={allow}")
    for e in ENDPOINTS
    for role in ROLES
    for allow in SETTINGS
]


def test_the_matrix_covers_every_cell() -> None:
    assert len(CELLS) == len(ENDPOINTS) * len(ROLES) * len(SETTINGS) == 88
    statuses = {expected(e, r, a) for e in ENDPOINTS for r in ROLES for a in SETTINGS}
    assert statuses == {200, 201, 401, 403}


@pytest.mark.parametrize(("endpoint", "role", "allow"), CELLS)
def test_cell(endpoint: Endpoint, role: str, allow: bool, world: World) -> None:
    world.seed_connection("shop", allow_contributors=allow)
    world.seed_export("weekly")
    world.runs.running["weekly"] = ["weekly-run1"]
    files_before = world.stored_files()
    vault_writes_before = world.vault.hits("PUT") + world.vault.hits("DELETE")

    resp = endpoint.call(world, role)

    want = expected(endpoint, role, allow)
    assert resp.status_code == want, payload(resp)
    body: dict[str, Any] = payload(resp)
    if want >= 400:
        assert body["code"] == {401: "unauthenticated", 403: "forbidden"}[want]
        assert world.stored_files() == files_before
        assert world.vault.hits("PUT") + world.vault.hits("DELETE") == vault_writes_before
        assert world.runs.calls == []
        return
    visible = allow or role == "admin"
    if endpoint.call is list_connections:
        assert [c["name"] for c in body["connections"]] == (["shop"] if visible else [])
    if endpoint.call is list_exports:
        assert [e["name"] for e in body["exports"]] == (["weekly"] if visible else [])
    if endpoint.call is get_connection and role == "contributor":
        assert set(body["connection"]) == {"name", "display_name", "type"}
    if endpoint.call is delete_export:
        assert body["cancelled_runs"] == ["weekly-run1"]
    if endpoint.call in (create_export, replace_export):
        assert body["export"]["fields"][0]["field_id"] == "150"


# --- rights a role carries into an export's connection and segment (issue 15) -----------------
#
# Contributors may not move an export to a connection, or point it at a segment, they could not
# create an export on: connection ``vault`` is for administrators only and connection ``shop``
# opens only ``snapshots/high-value/`` to contributors.


def _restricted_world(world: World) -> None:
    shop = world.seed_connection("shop", allow_contributors=True)
    world.repo.put_connection(
        shop.model_copy(update={"contributor_segments": ["snapshots/high-value/"]}),
        if_match=world.repo.get_connection("shop")[1],
    )
    world.seed_connection("vault", allow_contributors=False)
    world.seed_export("weekly")


def _replace_weekly(world: World, role: str, **changes: Any) -> func.HttpResponse:
    headers = {"If-Match": _etag(world, "export", "weekly")}
    req = request("PUT", "exports/weekly", role=role, body=changes, headers=headers)
    return handle_put_export(req, world.service)


def move_to_admin_connection(world: World, role: str) -> func.HttpResponse:
    return _replace_weekly(world, role, connection="vault")


def segment_outside(world: World, role: str) -> func.HttpResponse:
    return _replace_weekly(world, role, segment="snapshots/other-team/")


def segment_glob_outside(world: World, role: str) -> func.HttpResponse:
    return _replace_weekly(world, role, segment="snapshots/*/vip.csv")


def segment_sibling_prefix(world: World, role: str) -> func.HttpResponse:
    return _replace_weekly(world, role, segment="snapshots/high-value-vip/")


def segment_inside(world: World, role: str) -> func.HttpResponse:
    return _replace_weekly(world, role, segment="snapshots/high-value/eu/")


def create_outside(world: World, role: str) -> func.HttpResponse:
    body = export_body(segment="snapshots/other-team/")
    return handle_put_export(request("PUT", "exports/daily", role=role, body=body), world.service)


RIGHTS = [
    # (case, admin's status, contributor's status)
    (move_to_admin_connection, 200, 403),
    (segment_outside, 200, 403),
    (segment_glob_outside, 200, 403),
    (segment_sibling_prefix, 200, 403),
    (segment_inside, 200, 200),
    (create_outside, 201, 403),
]


@pytest.mark.parametrize(
    ("call", "role", "want"),
    [
        pytest.param(call, role, status, id=f"{call.__name__} | {role}")
        for call, admin, contributor in RIGHTS
        for role, status in (("admin", admin), ("contributor", contributor))
    ],
)
def test_rights_follow_the_export_into_its_connection_and_segment(
    call: Call, role: str, want: int, world: World
) -> None:
    _restricted_world(world)
    files_before = world.stored_files()
    resp = call(world, role)
    assert resp.status_code == want, payload(resp)
    if want == 403:
        assert payload(resp)["code"] == "forbidden"
        assert world.stored_files() == files_before, "a refused change changes nothing"
