"""A canary API key through every management failure path: it must surface nowhere.

The key is given over HTTP (as an administrator would) and then driven through a bad hostname,
a key ActiveCampaign rejects (the sandbox answers 403), a list that does not exist, Key Vault
refusing access (403), stale ETags and deletes. Afterwards no HTTP answer (body or header), no
log record (DEBUG and up, the Azure SDK's loggers included), no stored document and no
exception (with its whole chain) may contain it. Positive controls show the checks could fail:
the key did reach the vault, and the Azure SDK's loggers were captured.
"""

from __future__ import annotations

import asyncio
import json
import logging
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest

from blueprints import management
from blueprints.management import (
    handle_delete_connection,
    handle_delete_export,
    handle_put_connection,
    handle_put_export,
    handle_verify_connection,
)
from sandbox import Sandbox
from tests.functions.mgmt_fixtures import (
    World,
    account_sandbox,
    conn_body,
    export_body,
    make_world,
    mgmt_vault_fixture,  # noqa: F401  (pytest fixture)
    request,
)
from tests.keyvault_stub import KeyVaultStub

CANARY = "CANARY-KEY-5f1e9a7c-3d2b-4e80-b1a6-0c4f8e2d7a91"
"""The account's real key in this test: the sandbox accepts it."""
CANARY_WRONG = "CANARY-KEY-5f1e-wrong-6b0d2c8e4a1f9e3d7c5b"
"""A key the sandbox rejects with 403."""
CANARY_HEX = "5f1ec0de" * 9
"""A key in ActiveCampaign's own format (72 hex digits), pasted where a reference belongs:
references that look like keys are refused, so this one must not be stored either."""
CANARIES = (CANARY, CANARY_WRONG, CANARY_HEX)


@pytest.fixture(scope="module")
def canary_sandbox() -> Iterator[Sandbox]:
    with account_sandbox(CANARY) as sb:
        yield sb


class Seen:
    """Everything the management API showed to the outside world during the test."""

    def __init__(self) -> None:
        self.responses: list[func.HttpResponse] = []
        self.exceptions: list[BaseException] = []

    def keep(self, resp: func.HttpResponse) -> func.HttpResponse:
        self.responses.append(resp)
        return resp

    def texts(self) -> Iterator[tuple[str, str]]:
        for resp in self.responses:
            yield "response body", resp.get_body().decode("utf-8", "replace")
            yield "response headers", json.dumps(dict(resp.headers))
        for exc in self.exceptions:
            yield "exception", "".join(traceback.format_exception(exc))
            yield "exception attributes", repr(vars(exc))


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch) -> Seen:
    """Records every exception the handlers turn into an answer (with its chain)."""
    record = Seen()
    original = management.error_response

    def recording(exc: Exception, *, conditional: bool = False) -> func.HttpResponse:
        record.exceptions.append(exc)
        return original(exc, conditional=conditional)

    monkeypatch.setattr(management, "error_response", recording)
    return record


def _status(seen: Seen, resp: func.HttpResponse, want: int) -> dict[str, Any]:
    seen.keep(resp)
    body: dict[str, Any] = json.loads(resp.get_body())
    assert resp.status_code == want, body
    return body


def _connection(world: World, name: str, **changes: Any) -> func.HttpRequest:
    return request("PUT", f"connections/{name}", body=conn_body(world, **changes))


def test_the_key_surfaces_nowhere(
    tmp_path: Path,
    canary_sandbox: Sandbox,
    mgmt_vault: KeyVaultStub,
    seen: Seen,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    for name in ("azure", "azure.core.pipeline.policies.http_logging_policy", "urllib3"):
        caplog.set_level(logging.DEBUG, logger=name)
    world = make_world(tmp_path, canary_sandbox, mgmt_vault)
    svc = world.service

    def put(req: func.HttpRequest, want: int) -> dict[str, Any]:
        return _status(seen, handle_put_connection(req, svc), want)

    # A bad hostname, and the key pasted into the wrong fields.
    put(_connection(world, "shop", hostname="10.0.0.1", api_key=CANARY), 400)
    put(_connection(world, "shop", hostname=CANARY, api_key=CANARY), 400)
    put(_connection(world, "shop", api_key_ref=CANARY, api_key=CANARY), 400)
    put(_connection(world, "shop", api_key_ref=f"keyvault:{CANARY_HEX}"), 400)
    put(_connection(world, "shop", api_key_ref=CANARY_HEX), 400)
    put(_connection(world, "shop", consent=False, api_key=CANARY), 400)
    bad_json = request(
        "PUT",
        "connections/shop",
        raw=f'{{"api_key": "{CANARY}", '.encode(),
        headers={"Content-Type": "application/json"},
    )
    put(bad_json, 400)
    wrong_type = request(
        "PUT", "connections/shop", raw=CANARY.encode(), headers={"Content-Type": "text/plain"}
    )
    put(wrong_type, 415)

    # The key ActiveCampaign rejects: Connect checks it before saving (by default), and a
    # connection saved offline is checked after.
    put(_connection(world, "wrong", api_key=CANARY_WRONG), 422)
    offline = request(
        "PUT",
        "connections/wrong",
        body=conn_body(world, api_key=CANARY_WRONG),
        params={"verify": "false"},
    )
    put(offline, 201)
    verify_wrong = handle_verify_connection(request("POST", "connections/wrong/verify"), svc)
    _status(seen, verify_wrong, 422)

    # The good key, a missing list, a field that does not exist.
    created = put(_connection(world, "shop", api_key=CANARY), 201)
    _status(seen, handle_verify_connection(request("POST", "connections/shop/verify"), svc), 200)
    missing_list = request("PUT", "exports/daily", body=export_body(list_id="99"))
    _status(seen, handle_put_export(missing_list, svc), 400)
    no_field = request(
        "PUT", "exports/daily", body=export_body(fields=[{"column": "A", "field": "B"}])
    )
    _status(seen, handle_put_export(no_field, svc), 400)
    _status(seen, handle_put_export(request("PUT", "exports/daily", body=export_body()), svc), 201)

    # A stale ETag with a new key: refused before the key is written.
    stale = request(
        "PUT", "connections/shop", body={"api_key": CANARY}, headers={"If-Match": '"stale"'}
    )
    put(stale, 412)

    # Key Vault refuses (403): create, read for verify, rotate, delete.
    mgmt_vault.forbidden = True
    try:
        put(_connection(world, "vaultless", api_key=CANARY), 502)
        verify = handle_verify_connection(request("POST", "connections/shop/verify"), svc)
        _status(seen, verify, 502)
        etag = world.repo.get_connection("shop")[1]
        rotate = request(
            "PUT", "connections/shop", body={"api_key": CANARY}, headers={"If-Match": etag}
        )
        put(rotate, 502)
        gone = request("DELETE", "connections/wrong", params={"delete_secret": "true"})
        _status(seen, handle_delete_connection(gone, svc), 502)
    finally:
        mgmt_vault.forbidden = False

    # Deletes that work.
    delete_export = handle_delete_export(request("DELETE", "exports/daily"), svc, world.runs)
    _status(seen, asyncio.run(delete_export), 200)
    delete_shop = request("DELETE", "connections/shop", params={"delete_secret": "true"})
    _status(seen, handle_delete_connection(delete_shop, svc), 200)
    _status(seen, handle_delete_connection(request("DELETE", "connections/shop"), svc), 404)

    # Positive controls: the key did reach the vault, the SDK's loggers were heard, and the
    # recorded exceptions are the failures above.
    secret = created["connection"]["api_key_ref"].removeprefix("keyvault:")
    assert mgmt_vault.versions(secret)
    assert any(r.name.startswith("azure.") for r in caplog.records)
    assert len(seen.exceptions) >= 12
    assert any("Key Vault Secrets" in str(e) for e in seen.exceptions)

    # The checks.
    for canary in CANARIES:
        for where, text in seen.texts():
            assert canary not in text, where
        for record in caplog.records:
            assert canary not in record.getMessage(), record.name
        assert canary not in caplog.text
        for path in world.store.root.rglob("*"):
            if path.is_file():
                assert canary.encode() not in path.read_bytes(), path
