"""The management API: connections and exports as JSON over HTTP.

===========================================  ===============================================
``PUT    /api/connections/{name}``           create (201) or, with ``If-Match``, replace (200)
``GET    /api/connections/{name}``           one connection (contributors: name and type)
``GET    /api/connections``                  the connections the caller may use
``POST   /api/connections/{name}/verify``    check the stored key and host (``users/me``)
``DELETE /api/connections/{name}``           ``?force=true``, ``?delete_secret=true``
``PUT    /api/exports/{name}``               create (201) or, with ``If-Match``, replace (200)
``GET    /api/exports/{name}``               one export
``GET    /api/exports``                      the exports the caller may see
``DELETE /api/exports/{name}``               delete; its running run is cancelled
===========================================  ===============================================

Each function is a thin adapter: it reads the caller (:mod:`blueprints.auth`) and the body
(:mod:`blueprints.http_util`), calls :class:`~exporter.management.service.ManagementService` (where
every
rule lives: permissions, hostname policy, consent, ETags, list and field checks) and renders
the answer. The ``handle_*`` functions take the service as an argument so tests can give them
one; the registered functions use the app's runtime.

**Replacing needs the ETag.** A ``PUT`` without ``If-Match`` only creates (409 if the name is
taken); with ``If-Match`` it replaces the fields it names (412 when the object changed since it
was read; ``If-Match: *`` replaces whatever is there). ``If-None-Match: *`` makes "create only"
explicit (412 if taken). Answers carry the new ``ETag``.

**API keys.** A connection body may carry ``api_key``. It is taken out of the body before
anything else sees it and written to Key Vault (``set_secret``) by the service; it is never
stored elsewhere, logged or returned. Without an ``api_key_ref`` the Key Vault secret name comes
from :mod:`exporter.management.secret_names` (``ac-<connection>-<8 random hex digits>``; its
docstring says why the random part, and when a new key reuses the connection's secret). A key
is only ever written under such a generated name, and only to a secret the app created for that
connection (Key Vault tag ``exporter-connection``): ``api_key`` with any other ``api_key_ref``
is 400, and ``delete_secret=true`` on any other secret is 400; such secrets are only read.

**Deleting an export** is always possible for someone allowed on it: its configuration goes
(so its schedule and blob triggers find nothing to run), its state and run files are removed
(each run's report stays) and its Pending/Running/Suspended orchestrations are terminated.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import azure.durable_functions as df
import azure.functions as func

from blueprints.auth import caller_from_request, require_trusted_principal
from blueprints.http_util import (
    error_response,
    etag_headers,
    if_match,
    if_none_match_any,
    json_response,
    query_flag,
    read_json_body,
    route_name,
)
from blueprints.register import http_function
from blueprints.runtime import get_runtime
from exporter.errors import ConfigError, ConflictError, ExporterError, SecretError
from exporter.http_errors import http_status
from exporter.management.permissions import Caller
from exporter.management.secret_names import ref_for_new_key
from exporter.management.service import ManagementService, Saved
from exporter.run.instances import ACTIVE_INSTANCE_STATUSES, instance_prefix
from exporter.run.records import RunInput

log = logging.getLogger(__name__)

bp = df.Blueprint()

Handler = Callable[[func.HttpRequest, ManagementService], func.HttpResponse]


# --- plumbing ----------------------------------------------------------------------------------


def _answers(handler: Handler) -> Handler:
    """Turn anything a handler raises into a JSON error answer (never a bare 500)."""

    @functools.wraps(handler)
    def wrapper(req: func.HttpRequest, service: ManagementService) -> func.HttpResponse:
        try:
            return handler(req, service)
        except Exception as exc:  # noqa: BLE001 - every failure becomes an answer
            return error_response(exc)

    return wrapper


def _service() -> ManagementService:
    """The app's management service (built once per worker by :mod:`blueprints.runtime`),
    once the caller's identity can be believed at all."""
    runtime = get_runtime()
    require_trusted_principal(runtime.settings)
    return runtime.management


def _serve(req: func.HttpRequest, handler: Handler) -> func.HttpResponse:
    try:
        service = _service()
    except Exception as exc:  # noqa: BLE001 - a broken setting must still answer JSON
        return error_response(exc)
    return handler(req, service)


def _conditional(req: func.HttpRequest) -> tuple[str | None, bool]:
    """``(If-Match value, whether the request is conditional at all)``."""
    match = if_match(req)
    create_only = if_none_match_any(req)
    if match is not None and create_only:
        raise ConfigError("send If-Match or If-None-Match, not both", field="If-Match")
    return match, match is not None or create_only


def _name_in_body(body: dict[str, Any], name: str) -> None:
    given = body.setdefault("name", name)
    if given != name:
        raise ConfigError(
            "must match the name in the URL (objects cannot be renamed)", field="name"
        )


def _saved(kind: str, saved: Saved, status: int) -> func.HttpResponse:
    payload: dict[str, Any] = {kind: saved.view}
    if saved.notes:
        payload["notes"] = saved.notes
    return json_response(payload, status, headers=etag_headers(saved.etag))


def _exists_hint(exc: ConflictError, kind: str) -> ConflictError:
    if exc.field != "name":
        return exc
    return ConflictError(
        f"{exc.detail}; to replace it, send If-Match with the ETag from GET /api/{kind}s/<name>",
        field="name",
    )


# --- API keys ----------------------------------------------------------------------------------


def _pop_api_key(body: dict[str, Any]) -> str | None:
    """Take the key out of the body first, so nothing downstream can echo or store it."""
    value = body.pop("api_key", None)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError("must be a string: the ActiveCampaign API key", field="api_key")
    return value


# --- connections -------------------------------------------------------------------------------


@_answers
def handle_put_connection(req: func.HttpRequest, service: ManagementService) -> func.HttpResponse:
    """Create a connection, or replace one with ``If-Match``. A new connection's key and host
    are checked with ActiveCampaign before it is saved (``?verify=false`` saves without)."""
    caller = caller_from_request(req)
    name = route_name(req)
    body = read_json_body(req)
    api_key = _pop_api_key(body)
    verify = query_flag(req, "verify", default=True)
    match, conditional = _conditional(req)
    try:
        if match is None:
            return _create_connection(caller, service, name, body, api_key, verify)
        return _replace_connection(caller, service, name, body, api_key, match)
    except ExporterError as exc:
        return error_response(exc, conditional=conditional)


def _create_connection(
    caller: Caller,
    service: ManagementService,
    name: str,
    body: dict[str, Any],
    api_key: str | None,
    verify: bool,
) -> func.HttpResponse:
    _name_in_body(body, name)
    if api_key is not None and "api_key_ref" not in body:
        body["api_key_ref"] = ref_for_new_key(name)
    try:
        saved = service.create_connection(caller, body, api_key, verify=verify)
    except ConflictError as exc:
        raise _exists_hint(exc, "connection") from None
    return _saved("connection", saved, 201)


def _replace_connection(
    caller: Caller,
    service: ManagementService,
    name: str,
    body: dict[str, Any],
    api_key: str | None,
    match: str,
) -> func.HttpResponse:
    if api_key is not None and "api_key_ref" not in body:
        current = service.get_connection(caller, name).view.get("api_key_ref")
        ref = ref_for_new_key(name, current)
        if ref != current:
            body["api_key_ref"] = ref
    saved = service.update_connection(
        caller, name, body, if_match=None if match == "*" else match, api_key=api_key
    )
    return _saved("connection", saved, 200)


@_answers
def handle_get_connection(req: func.HttpRequest, service: ManagementService) -> func.HttpResponse:
    """One connection as the caller may see it (administrators: with who agreed and when)."""
    caller = caller_from_request(req)
    fetched = service.get_connection(caller, route_name(req))
    return json_response({"connection": fetched.view}, headers=etag_headers(fetched.etag))


@_answers
def handle_list_connections(req: func.HttpRequest, service: ManagementService) -> func.HttpResponse:
    """The connections the caller may use."""
    caller = caller_from_request(req)
    return json_response({"connections": service.list_connections(caller)})


@_answers
def handle_verify_connection(
    req: func.HttpRequest, service: ManagementService
) -> func.HttpResponse:
    """Check a connection's stored key and host against ActiveCampaign (``users/me``)."""
    caller = caller_from_request(req)
    verified = service.verify_connection(caller, route_name(req))
    return json_response(
        {
            "name": verified.name,
            "hostname": verified.hostname,
            "verified": True,
            "verified_at": verified.verified_at.isoformat().replace("+00:00", "Z"),
        }
    )


@_answers
def handle_delete_connection(
    req: func.HttpRequest, service: ManagementService
) -> func.HttpResponse:
    """Delete a connection; ``?force=true`` even while exports use it, ``?delete_secret=true``
    also deletes its key from Key Vault (soft delete: see the module docstring)."""
    caller = caller_from_request(req)
    name = route_name(req)
    delete_secret = query_flag(req, "delete_secret")
    force = query_flag(req, "force")
    try:
        deleted = service.delete_connection(caller, name, delete_secret=delete_secret, force=force)
    except SecretError as exc:
        # The service deletes the connection before its key: only the key is left over.
        log.warning("connection %s deleted, its key was not: %s", name, exc)
        status, code = http_status(exc)
        return json_response(
            {
                "name": name,
                "deleted": True,
                "secret_deleted": False,
                "code": code,
                "errors": [
                    {
                        "field": "delete_secret",
                        "message": f"the connection was deleted but its key was not: {exc}",
                    }
                ],
            },
            status,
        )
    return json_response(
        {
            "name": deleted.name,
            "deleted": True,
            "orphaned_exports": deleted.orphaned_exports,
            "secret_deleted": deleted.secret_deleted,
        }
    )


# --- exports -----------------------------------------------------------------------------------


@_answers
def handle_put_export(req: func.HttpRequest, service: ManagementService) -> func.HttpResponse:
    """Create an export, or replace one with ``If-Match``. The service checks the list ID and
    resolves custom fields on the account; saving never runs it."""
    caller = caller_from_request(req)
    name = route_name(req)
    body = read_json_body(req)
    match, conditional = _conditional(req)
    try:
        if match is None:
            _name_in_body(body, name)
            try:
                saved = service.create_export(caller, body)
            except ConflictError as exc:
                raise _exists_hint(exc, "export") from None
            return _saved("export", saved, 201)
        saved = service.update_export(caller, name, body, if_match=None if match == "*" else match)
        return _saved("export", saved, 200)
    except ExporterError as exc:
        return error_response(exc, conditional=conditional)


@_answers
def handle_get_export(req: func.HttpRequest, service: ManagementService) -> func.HttpResponse:
    """One export."""
    caller = caller_from_request(req)
    fetched = service.get_export(caller, route_name(req))
    return json_response({"export": fetched.view}, headers=etag_headers(fetched.etag))


@_answers
def handle_list_exports(req: func.HttpRequest, service: ManagementService) -> func.HttpResponse:
    """The exports the caller may see."""
    caller = caller_from_request(req)
    return json_response({"exports": service.list_exports(caller)})


# --- deleting an export: its runs go too -------------------------------------------------------


def export_of_input(value: object) -> str | None:
    """The export named in an orchestration input: a run's ``{"request": {"export": ...}}`` or
    a group's ``{"run": {"request": ...}}`` (the host may pass either as a JSON string)."""
    run = RunInput.of_instance(value, groups=True)
    return None if run is None else run.export


@dataclass(frozen=True)
class Cancelled:
    """What stopping an export's runs did."""

    cancelled: list[str] = field(default_factory=list)
    """Instance ids that were terminated."""
    failed: list[str] = field(default_factory=list)
    """Instance ids that could not be terminated (they may finish or fail on their own)."""


class RunCanceller(Protocol):
    """Stops the running runs of an export."""

    async def cancel(self, export: str, reason: str) -> Cancelled:
        """Terminate every active run of ``export``."""
        ...


class DurableRunCanceller:
    """Terminates an export's Pending/Running/Suspended orchestration instances.

    ``client`` is the Durable client binding (``DurableOrchestrationClient``). Candidates are
    listed by the export's instance-id prefix (:func:`~exporter.run.instances.instance_prefix`)
    and active status; each is terminated only if its input names the export.
    Sub-orchestrations are terminated too: terminating a parent does not stop its children.
    """

    def __init__(self, client: Any) -> None:
        self._client = client

    async def cancel(self, export: str, reason: str) -> Cancelled:
        statuses = [df.OrchestrationRuntimeStatus(s) for s in ACTIVE_INSTANCE_STATUSES]
        prefix = instance_prefix(export)
        found = await self._client.get_status_by(runtime_status=statuses, instance_id_prefix=prefix)
        outcome = Cancelled()
        for status in found:
            instance = status.instance_id
            # Filter again: an older extension may ignore the prefix or the status filter.
            if not instance or not instance.startswith(prefix):
                continue
            if status.runtime_status not in statuses:
                continue
            if await self._owner(instance, status.input_) != export:
                continue
            try:
                await self._client.terminate(instance, reason)
            except Exception as exc:  # noqa: BLE001 - the SDK raises bare Exception
                log.warning("could not terminate run %s: %s", instance, type(exc).__name__)
                outcome.failed.append(instance)
            else:
                outcome.cancelled.append(instance)
        return outcome

    async def _owner(self, instance: str, listed_input: object) -> str | None:
        owner = export_of_input(listed_input)
        if owner is None:  # the listing left the input out: ask for this instance's
            detail = await self._client.get_status(instance, show_input=True)
            owner = export_of_input(detail.input_)
        return owner


async def handle_delete_export(
    req: func.HttpRequest, service: ManagementService, runs: RunCanceller
) -> func.HttpResponse:
    """Delete an export (``If-Match`` optional) and its personal data, then terminate its
    active runs and remove what they may have written meanwhile.

    The configuration goes first: a run started in between finds no export and stops.
    """
    try:
        caller = caller_from_request(req)
        name = route_name(req)
        match, conditional = _conditional(req)
        try:
            deleted = await asyncio.to_thread(
                service.delete_export, caller, name, if_match=None if match == "*" else match
            )
        except ExporterError as exc:
            return error_response(exc, conditional=conditional)
        outcome = await runs.cancel(deleted.name, f"export {deleted.name} was deleted")
        if outcome.cancelled:  # a run cancelled just now may have written state meanwhile
            await asyncio.to_thread(service.forget_export, deleted.name)
    except Exception as exc:  # noqa: BLE001 - every failure becomes an answer
        return error_response(exc)
    payload: dict[str, Any] = {
        "name": deleted.name,
        "deleted": True,
        "connection": deleted.connection,
        "cancelled_runs": outcome.cancelled,
    }
    if outcome.cancelled:
        log.info("export %s deleted; cancelled %d run(s)", name, len(outcome.cancelled))
    if not outcome.failed:
        return json_response(payload)
    payload["code"] = "cancel_failed"
    payload["errors"] = [
        {"field": None, "message": f"the export was deleted but run {i} could not be cancelled"}
        for i in outcome.failed
    ]
    return json_response(payload, 502)


# --- the registered functions ------------------------------------------------------------------


@http_function(bp, "connections/{name}", "PUT")
def connections_put(req: func.HttpRequest) -> func.HttpResponse:
    """``PUT /api/connections/{name}``."""
    return _serve(req, handle_put_connection)


@http_function(bp, "connections/{name}", "GET")
def connections_get(req: func.HttpRequest) -> func.HttpResponse:
    """``GET /api/connections/{name}``."""
    return _serve(req, handle_get_connection)


@http_function(bp, "connections", "GET")
def connections_list(req: func.HttpRequest) -> func.HttpResponse:
    """``GET /api/connections``."""
    return _serve(req, handle_list_connections)


@http_function(bp, "connections/{name}/verify", "POST")
def connections_verify(req: func.HttpRequest) -> func.HttpResponse:
    """``POST /api/connections/{name}/verify``."""
    return _serve(req, handle_verify_connection)


@http_function(bp, "connections/{name}", "DELETE")
def connections_delete(req: func.HttpRequest) -> func.HttpResponse:
    """``DELETE /api/connections/{name}``."""
    return _serve(req, handle_delete_connection)


@http_function(bp, "exports/{name}", "PUT")
def exports_put(req: func.HttpRequest) -> func.HttpResponse:
    """``PUT /api/exports/{name}``."""
    return _serve(req, handle_put_export)


@http_function(bp, "exports/{name}", "GET")
def exports_get(req: func.HttpRequest) -> func.HttpResponse:
    """``GET /api/exports/{name}``."""
    return _serve(req, handle_get_export)


@http_function(bp, "exports", "GET")
def exports_list(req: func.HttpRequest) -> func.HttpResponse:
    """``GET /api/exports``."""
    return _serve(req, handle_list_exports)


@http_function(bp, "exports/{name}", "DELETE", durable_client=True)
async def exports_delete(req: func.HttpRequest, client: Any) -> func.HttpResponse:
    """``DELETE /api/exports/{name}``: the export goes, its active runs are terminated."""
    try:
        service = _service()
    except Exception as exc:  # noqa: BLE001 - a broken setting must still answer JSON
        return error_response(exc)
    return await handle_delete_export(req, service, DurableRunCanceller(client))


FUNCTION_NAMES: Sequence[str] = (
    "connections_put",
    "connections_get",
    "connections_list",
    "connections_verify",
    "connections_delete",
    "exports_put",
    "exports_get",
    "exports_list",
    "exports_delete",
)
"""The functions this blueprint registers (``function_app`` tests check them)."""
