"""The web console: one ASGI application (Starlette + Jinja2) over the management service.

Every page calls :class:`~exporter.management.service.ManagementService`, the same code path as
the command line and the JSON API: permissions, hostname policy, consent and the list and field
checks are decided there, and its validation errors are shown at the form's fields
(:mod:`exporter.console.forms`). Two hosts serve it: ``python -m exporter console`` locally
(:mod:`exporter.console.local`, the local user is an administrator) and the Functions app behind
App Service Authentication (``blueprints/console.py``, roles from the client principal).

Security: every POST carries a CSRF token (an HMAC, under the host's secret, of the caller and a
random nonce kept in a ``SameSite=Strict`` cookie); every answer carries a strict
Content-Security-Policy (``default-src 'self'``, no inline script or style) and refuses framing;
templates escape everything; API keys are write-only; rejected-row and plan downloads are for
administrators only.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets as secrets_mod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from exporter.errors import ExporterError, PermissionDenied
from exporter.http_errors import SignInRequired, http_status
from exporter.management.permissions import Caller, require_role
from exporter.management.service import ManagementService
from exporter.storage.store import Store

HERE = Path(__file__).resolve().parent
CSRF_COOKIE = "exporter_console_nonce"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "object-src 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"cache-control", b"no-store"),
]


class Runner(Protocol):
    """Starts and follows runs for the console (:class:`exporter.console.runner.LocalRunner`)."""

    def start(
        self, caller: Caller, service: ManagementService, export: str, *, dry_run: bool
    ) -> str: ...

    def progress(self, export: str, run_id: str) -> dict[str, Any] | None: ...

    def cancel(self, export: str, run_id: str) -> None: ...


@dataclass
class ConsoleHost:
    """What a host gives the console: the service, the store (run history and files), how to
    know the caller, how runs start (``None``: not from this host) and the CSRF secret."""

    service: ManagementService
    store: Store
    caller_of: Callable[[Request], Caller]
    runner: Runner | None
    secret: bytes
    base: str = ""
    """The URL prefix the console is served under (``/api/console`` in Functions)."""
    host_label: str = "local"
    run_hint: str = ""
    """Shown instead of the Run buttons when there is no runner."""
    runner_of: Callable[[Request], Runner | None] | None = None
    """A runner for one request (the Functions host's needs the request's Durable client);
    when set, it is used instead of ``runner``."""
    sign_in: Callable[[str], str] | None = None
    """Where to send a browser that is not signed in (:class:`SignInRequired` on a GET), given
    the page's path and query to come back to; ``None``: answer 401."""

    def runner_for(self, request: Request) -> Runner | None:
        return self.runner_of(request) if self.runner_of is not None else self.runner


class SecurityHeaders:
    """Adds the CSP and anti-framing headers to every answer (static files too)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in SECURITY_HEADERS if k not in names]
                message["headers"] = list(message.get("headers", [])) + extra
            await send(message)

        await self.app(scope, receive, with_headers)


def csrf_token(secret: bytes, principal: str, nonce: str) -> str:
    """The token a form must send back: bound to the caller and the browser's nonce cookie."""
    return hmac.new(secret, f"{principal}\n{nonce}".encode(), hashlib.sha256).hexdigest()


class Page:
    """One request as a page handler sees it: caller, form values, CSRF token, rendering."""

    def __init__(
        self,
        console: Console,
        request: Request,
        caller: Caller,
        form: dict[str, list[str]],
        runner: Runner | None = None,
    ):
        self.console = console
        self.host = console.host
        self.runner = runner
        self.request = request
        self.caller = caller
        self.form = form
        self.nonce = request.cookies.get(CSRF_COOKIE) or secrets_mod.token_urlsafe(24)
        self.csrf = csrf_token(self.host.secret, caller.principal, self.nonce)

    @property
    def service(self) -> ManagementService:
        return self.host.service

    def param(self, name: str) -> str:
        return str(self.request.path_params[name])

    def url(self, path: str = "") -> str:
        return f"{self.host.base}/{path.lstrip('/')}"

    def render(self, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        html = self.console.env.get_template(template).render(
            caller=self.caller,
            csrf=self.csrf,
            base=self.host.base,
            host_label=self.host.host_label,
            now=datetime.now(UTC),
            **context,
        )
        return HTMLResponse(html, status_code=status)

    def redirect(self, path: str) -> RedirectResponse:
        return RedirectResponse(self.url(path), status_code=303)


Handler = Callable[[Page], Response]


class Console:
    """Builds the Starlette application for a host."""

    def __init__(self, host: ConsoleHost) -> None:
        self.host = host
        self.env = Environment(
            loader=FileSystemLoader(HERE / "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )

    def _error(self, request: Request, exc: Exception, caller: Caller | None) -> Response:
        status, _code = http_status(exc)
        message = str(exc) if isinstance(exc, ExporterError) else "unexpected error"
        who = caller or Caller("anonymous", frozenset())
        html = self.env.get_template("error.html").render(
            caller=who,
            csrf="",
            base=self.host.base,
            host_label=self.host.host_label,
            status=status,
            message=message,
        )
        return HTMLResponse(html, status_code=status)

    def endpoint(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        """Wrap a page handler: caller and role first, CSRF on POST, errors as pages."""

        async def serve(request: Request) -> Response:
            caller: Caller | None = None
            try:
                caller = self.host.caller_of(request)
                require_role(caller)  # readers (no exporter role) see nothing
                form: dict[str, list[str]] = {}
                if request.method == "POST":
                    data = await request.form()
                    for key, value in data.multi_items():
                        if isinstance(value, str):
                            form.setdefault(key, []).append(value)
                    self._check_csrf(request, caller, form)
                page = Page(self, request, caller, form, self.host.runner_for(request))
                response = await run_in_threadpool(handler, page)
            except SignInRequired as exc:
                if request.method != "GET" or self.host.sign_in is None:
                    return self._error(request, exc, caller)
                back = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return RedirectResponse(self.host.sign_in(back), status_code=302)
            except ExporterError as exc:
                return self._error(request, exc, caller)
            if CSRF_COOKIE not in request.cookies:
                response.set_cookie(
                    CSRF_COOKIE,
                    page.nonce,
                    httponly=True,
                    samesite="strict",
                    secure=request.url.scheme == "https",
                    path=self.host.base or "/",
                )
            return response

        return serve

    def _check_csrf(self, request: Request, caller: Caller, form: dict[str, list[str]]) -> None:
        nonce = request.cookies.get(CSRF_COOKIE)
        sent = (form.get(CSRF_FIELD) or [""])[0] or request.headers.get(CSRF_HEADER, "")
        expected = csrf_token(self.host.secret, caller.principal, nonce or "")
        if not nonce or not sent or not hmac.compare_digest(sent, expected):
            raise PermissionDenied(
                "this form is stale or did not come from the console (CSRF check failed): "
                "reload the page and try again"
            )

    def app(self) -> ASGIApp:
        from exporter.console import pages

        routes: list[Route | Mount] = [
            Route(path, self.endpoint(handler), methods=methods)
            for path, handler, methods in pages.ROUTES
        ]
        routes.append(Mount("/static", StaticFiles(directory=HERE / "static"), name="static"))
        inner = Starlette(
            routes=[Mount(self.host.base, routes=routes)] if self.host.base else routes
        )
        return SecurityHeaders(inner)


def create_app(host: ConsoleHost) -> ASGIApp:
    """The console's ASGI application for ``host``."""
    return Console(host).app()


def as_json(data: dict[str, Any], status: int = 200) -> JSONResponse:
    return JSONResponse(data, status_code=status)
