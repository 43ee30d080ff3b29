"""Regression (issue 15, "what held"): an ActiveCampaign host that answers with a redirect never
gets the API key carried to the redirect's target. The transport does not follow redirects; the
3xx comes back as an answer and nothing reaches the other host."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from exporter.activecampaign import RequestsTransport

KEY = "redirect-canary-key"


class _Target(BaseHTTPRequestHandler):
    """Where a hostile redirect points: records every request it gets."""

    seen: ClassVar[list[tuple[str, str | None]]] = []

    def _record(self) -> None:
        type(self).seen.append((self.command, self.headers.get("Api-Token")))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = _record
    do_POST = _record

    def log_message(self, *args: object) -> None:
        pass


def _redirector(location: str, status: int) -> type[BaseHTTPRequestHandler]:
    class _Redirect(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            self.send_response(status)
            self.send_header("Location", location)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = _answer
        do_POST = _answer

        def log_message(self, *args: object) -> None:
            pass

    return _Redirect


def _serve(handler: type[BaseHTTPRequestHandler]) -> tuple[ThreadingHTTPServer, str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


@pytest.fixture
def target() -> Iterator[str]:
    _Target.seen = []
    server, url = _serve(_Target)
    yield url
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_a_redirect_is_returned_never_followed(target: str, status: int, method: str) -> None:
    server, origin = _serve(_redirector(f"{target}/steal", status))
    transport = RequestsTransport()
    try:
        response = transport.request(
            method,
            f"{origin}/api/3/users/me",
            headers={"Api-Token": KEY},
            params=None,
            body=b"{}" if method == "POST" else None,
            timeout=5.0,
        )
    finally:
        transport.close()
        server.shutdown()
        server.server_close()
    assert response.status == status
    assert _Target.seen == [], "the redirect's target was contacted"
