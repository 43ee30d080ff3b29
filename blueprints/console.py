"""The web console in the Functions app: ``/api/console/...`` served by the same ASGI
application as ``python -m exporter console`` (:mod:`exporter.console.app`), through
``azure.functions``' ASGI middleware.

Who is calling comes from App Service Authentication's principal, as for the management API
(:mod:`blueprints.auth`): administrators and contributors get the pages their role allows, a
signed-in user without an exporter role gets 403, and without trusted Easy Auth every page is 401.
These routes take no function key (a browser cannot send one): App Service Authentication is
what stands in front of them. It lets unauthenticated requests through to the app
(``AllowAnonymous``, so that browsers can be sent to sign in while API callers still get 401),
still strips forged principal headers, and validates sessions and tokens; a page requested
without a principal redirects a browser to Microsoft Entra sign-in
(``/.auth/login/aad?post_login_redirect_uri=...``) and back.

**Run now** starts the same Durable orchestration as ``POST /api/exports/{name}/runs``
(:func:`blueprints.triggers.start_run`), the run page reads its custom status, and cancel raises
the same event as ``.../cancel`` (:class:`DurableRunner`, built per request around the
function's Durable client).

The CSRF secret is the ``EXPORTER_CONSOLE_SECRET`` app setting when set (e.g. a Key Vault
reference); else derived from Easy Auth's ``WEBSITE_AUTH_ENCRYPTION_KEY`` (shared by the app's
instances, so a form served by one is accepted by another); else random per worker process.
"""

from __future__ import annotations

import contextvars
import functools
import hashlib
import hmac
import os
import secrets
import threading
from typing import Any
from urllib.parse import quote

import azure.durable_functions as df
import azure.functions as func
from anyio import from_thread
from starlette.requests import Request

from blueprints.auth import PRINCIPAL_HEADER, caller_from_principal, require_trusted_principal
from blueprints.orchestration import CANCEL_EVENT
from blueprints.register import http_function
from blueprints.runtime import Runtime, get_runtime
from blueprints.triggers import start_run, status_name
from exporter.console.app import ConsoleHost, Runner, create_app
from exporter.console.runner import BUDGET, pace
from exporter.errors import NotFoundError
from exporter.http_errors import SignInRequired
from exporter.management.permissions import Caller
from exporter.management.service import ManagementService
from exporter.run.engine import RunOptions
from exporter.run.instances import ACTIVE_INSTANCE_STATUSES, instance_id
from exporter.storage import runs
from exporter.storage.records import ActiveRun, read_record

bp = df.Blueprint()

BASE = "/api/console"
SECRET_SETTING = "EXPORTER_CONSOLE_SECRET"  # noqa: S105 - the setting's name, not a secret
PLATFORM_KEY_SETTING = "WEBSITE_AUTH_ENCRYPTION_KEY"
"""Set by App Service Authentication on every instance of the app."""
SIGN_IN = "/.auth/login/aad?post_login_redirect_uri="
RUN_HINT = "Runs cannot be started here: the console was reached without a Durable client."
_durable_client: contextvars.ContextVar[Any] = contextvars.ContextVar("console_durable_client")


class DurableRunner:
    """Runs from the console in Azure: the API's Durable orchestration, started, followed and
    cancelled with the request's Durable client (called from the page's worker thread)."""

    def __init__(self, runtime: Runtime, client: Any) -> None:
        self.runtime = runtime
        self.client = client

    def start(
        self, caller: Caller, service: ManagementService, export: str, *, dry_run: bool
    ) -> str:
        service.authorize_run(caller, export)
        request = self.runtime.engine.new_run(
            export, options=RunOptions(dry_run=dry_run), requested_by=f"console:{caller.principal}"
        )
        width = self.runtime.settings.push_wave_width
        from_thread.run(
            functools.partial(start_run, self.client, request, width, rerun_completed=True)
        )
        return request.run_id

    def _instance(self, export: str, run_id: str) -> str | None:
        """The run's orchestration: the export's active run once prepare took the lease, else
        (just started) the one over the segment's newest snapshot, which Run now uses."""
        active = read_record(self.runtime.store, runs.active_run_path(export), ActiveRun)
        if active is not None and active.run_id == run_id:
            return instance_id(export, active.snapshot_identity)
        if active is not None:
            return None
        config, _connection = self.runtime.engine.export_config(export)
        identity = self.runtime.engine.newest_snapshot(config).identity
        if run_id.split("-")[1:2] != [identity[:8]]:
            return None
        return instance_id(export, identity)

    def progress(self, export: str, run_id: str) -> dict[str, Any] | None:
        """The orchestration's published progress while it runs; ``None`` once it ended (the
        page then reads the run's report)."""
        iid = self._instance(export, run_id)
        if iid is None:
            return None
        status = from_thread.run(self.client.get_status, iid)
        if status_name(status) not in ACTIVE_INSTANCE_STATUSES:
            return None
        counts = status.custom_status if isinstance(status.custom_status, dict) else {}
        sent, confirmed = int(counts.get("sent", 0)), int(counts.get("confirmed", 0))
        total = int(counts.get("contacts_to_send", 0)) or None
        rate, left = pace(confirmed or sent, total, _elapsed(status))
        return {
            "export": export,
            "run_id": run_id,
            "status": "running",
            "phase": str(counts.get("phase", "preparing")),
            "dry_run": False,
            "rows_read": 0,
            "sent": sent,
            "confirmed": confirmed,
            "total": total,
            # From the orchestration's counts and times: the average since it started.
            "rate_per_second": round(rate, 1) if rate else None,
            "budget": BUDGET,
            "seconds_left": round(left) if left is not None else None,
            "cancel_requested": counts.get("phase") == "cancelling",
            "error": None,
            "finished": False,
        }

    def cancel(self, export: str, run_id: str) -> None:
        iid = self._instance(export, run_id)
        if iid is None:
            raise NotFoundError(f"run {run_id} of {export!r} is not running")
        from_thread.run(self.client.raise_event, iid, CANCEL_EVENT, {"by": "console"})


def _elapsed(status: Any) -> float:
    """Seconds from the orchestration's creation to its last update (0 when unknown)."""
    created, updated = (
        getattr(status, "created_time", None),
        getattr(status, "last_updated_time", None),
    )
    if created is None or updated is None:
        return 0.0
    return max(float((updated - created).total_seconds()), 0.0)


_lock = threading.Lock()
_middleware: dict[int, func.AsgiMiddleware] = {}


def console_host(runtime: Runtime, secret: bytes) -> ConsoleHost:
    """The console's host over the app's runtime: its service, store and principal."""

    def caller_of(request: Request) -> Caller:
        require_trusted_principal(runtime.settings)
        value = request.headers.get(PRINCIPAL_HEADER)
        if value is None:
            raise SignInRequired("sign in: App Service Authentication sent no principal")
        return caller_from_principal(value)

    def runner_of(_request: Request) -> Runner | None:
        client = _durable_client.get(None)
        return None if client is None else DurableRunner(runtime, client)

    return ConsoleHost(
        service=runtime.management,
        store=runtime.store,
        caller_of=caller_of,
        runner=None,
        runner_of=runner_of,
        secret=secret,
        base=BASE,
        host_label="azure",
        run_hint=RUN_HINT,
        sign_in=sign_in_url,
    )


def sign_in_url(back: str) -> str:
    """App Service Authentication's Microsoft Entra sign-in, returning to ``back`` (a path on
    this app: Easy Auth refuses other hosts unless allowed, so this is no open redirect)."""
    return SIGN_IN + quote(back, safe="/")


def _secret() -> bytes:
    """The CSRF secret: the app setting, else one derived from Easy Auth's own per-app key
    (the same on every instance), else a random one for this worker process."""
    configured = os.environ.get(SECRET_SETTING, "")
    if len(configured) >= 32:
        return configured.encode()
    platform = os.environ.get(PLATFORM_KEY_SETTING, "")
    if len(platform) >= 32:
        return hmac.new(platform.encode(), b"exporter-console-csrf", hashlib.sha256).digest()
    return secrets.token_bytes(32)


def middleware(runtime: Runtime) -> func.AsgiMiddleware:
    """The ASGI middleware for ``runtime`` (one per runtime: tests swap runtimes)."""
    with _lock:
        found = _middleware.get(id(runtime))
        if found is None:
            found = func.AsgiMiddleware(create_app(console_host(runtime, _secret())))  # type: ignore[no-untyped-call]
            _middleware.clear()
            _middleware[id(runtime)] = found
        return found


async def handle_console(req: func.HttpRequest, client: Any = None) -> func.HttpResponse:
    """Any console page: the request goes to the ASGI app as it came; ``client`` (the
    function's Durable client) starts, follows and cancels runs."""
    token = _durable_client.set(client)
    try:
        answer: func.HttpResponse = await middleware(get_runtime()).handle_async(req)
    finally:
        _durable_client.reset(token)
    return answer


@http_function(
    bp,
    "console/{*path}",
    ("GET", "POST"),
    durable_client=True,
    auth_level=func.AuthLevel.ANONYMOUS,  # a browser carries no function key: Easy Auth is in front
)
async def console(req: func.HttpRequest, client: Any) -> func.HttpResponse:
    """``/api/console/...``: the web console (App Service Authentication in front)."""
    return await handle_console(req, client)
