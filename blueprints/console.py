"""The web console in the Functions app: ``/api/console/...`` served by the same ASGI
application as ``python -m exporter console`` (:mod:`exporter.console.app`), through
``azure.functions``' ASGI middleware.

Who is calling comes from App Service Authentication's principal, as for the management API
(:mod:`blueprints.auth`): administrators and contributors get the pages their role allows, a
signed-in user without an exporter role gets 403, and without trusted Easy Auth every page is 401.
These routes take no function key (a browser cannot send one): App Service Authentication,
which the deployment requires for every request, is what stands in front of them. Runs are not
started from here: in Azure they go through Durable Functions (schedule, new snapshot, or
``POST /api/exports/{name}/runs``); the console shows their history and reports.

The CSRF secret is the ``EXPORTER_CONSOLE_SECRET`` app setting when set (share it across
instances, e.g. as a Key Vault reference); else a random one per worker process.
"""

from __future__ import annotations

import os
import secrets
import threading

import azure.durable_functions as df
import azure.functions as func
from starlette.requests import Request

from blueprints.auth import PRINCIPAL_HEADER, caller_from_principal, require_trusted_principal
from blueprints.register import bind
from blueprints.runtime import Runtime, get_runtime
from exporter.console.app import ConsoleHost, create_app
from exporter.http_errors import Unauthenticated
from exporter.management.permissions import Caller

bp = df.Blueprint()

BASE = "/api/console"
SECRET_SETTING = "EXPORTER_CONSOLE_SECRET"  # noqa: S105 - the setting's name, not a secret
RUN_HINT = (
    "In Azure, exports run on their schedule, when a new snapshot arrives, or with "
    "POST /api/exports/{name}/runs; their runs appear here."
)

_lock = threading.Lock()
_middleware: dict[int, func.AsgiMiddleware] = {}


def console_host(runtime: Runtime, secret: bytes) -> ConsoleHost:
    """The console's host over the app's runtime: its service, store and principal."""

    def caller_of(request: Request) -> Caller:
        require_trusted_principal(runtime.settings)
        value = request.headers.get(PRINCIPAL_HEADER)
        if value is None:
            raise Unauthenticated("sign in: App Service Authentication sent no principal")
        return caller_from_principal(value)

    return ConsoleHost(
        service=runtime.management,
        store=runtime.store,
        caller_of=caller_of,
        runner=None,
        secret=secret,
        base=BASE,
        host_label="azure",
        run_hint=RUN_HINT,
    )


def _secret() -> bytes:
    configured = os.environ.get(SECRET_SETTING, "")
    return configured.encode() if len(configured) >= 32 else secrets.token_bytes(32)


def middleware(runtime: Runtime) -> func.AsgiMiddleware:
    """The ASGI middleware for ``runtime`` (one per runtime: tests swap runtimes)."""
    with _lock:
        found = _middleware.get(id(runtime))
        if found is None:
            found = func.AsgiMiddleware(create_app(console_host(runtime, _secret())))  # type: ignore[no-untyped-call]
            _middleware.clear()
            _middleware[id(runtime)] = found
        return found


async def handle_console(req: func.HttpRequest) -> func.HttpResponse:
    """Any console page: the request goes to the ASGI app as it came."""
    answer: func.HttpResponse = await middleware(get_runtime()).handle_async(req)
    return answer


@bind(
    bp.function_name("console"),
    bp.route(route="console/{*path}", methods=["GET", "POST"], auth_level=func.AuthLevel.ANONYMOUS),
)
async def console(req: func.HttpRequest) -> func.HttpResponse:
    """``/api/console/...``: the web console (App Service Authentication in front)."""
    return await handle_console(req)
