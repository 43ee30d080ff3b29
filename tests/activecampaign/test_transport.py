"""RequestsTransport over real sockets: pooled keep-alive connections, and connection resets
and timeouts surfacing as retriable errors."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from exporter.activecampaign import RequestsTransport
from exporter.errors import RetriableApiError


class _Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    peers: ClassVar[set[tuple[str, int]]] = set()

    def do_POST(self) -> None:
        type(self).peers.add(self.client_address)
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        out = b'{"len":%d,"q":"%s"}' % (len(body), (self.path.partition("?")[2]).encode())
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.send_header("Retry-After", "3")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def echo_server() -> Iterator[str]:
    _Echo.peers = set()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _raw_server(behaviour: str) -> tuple[socket.socket, threading.Thread, threading.Event]:
    """A socket that accepts and then resets the connection, or never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(2.0)
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        conn.recv(65536)
        if behaviour == "reset":
            # SO_LINGER 0: close() sends RST instead of FIN.
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()
        else:
            stop.wait(2.0)
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener, thread, stop


def test_answers_are_returned_whatever_their_status(echo_server: str) -> None:
    transport = RequestsTransport()
    response = transport.request(
        "POST",
        f"{echo_server}/api/3/x",
        headers={"Api-Token": "k"},
        params={"orders[id]": "ASC"},
        body=b"12345",
        timeout=5.0,
    )
    assert response.status == 201
    assert response.json()["len"] == 5
    assert response.header("retry-after") == "3"
    transport.close()


def test_connections_are_kept_alive_and_reused(echo_server: str) -> None:
    transport = RequestsTransport()
    for _ in range(5):
        transport.request(
            "POST", f"{echo_server}/x", headers={}, params=None, body=b"{}", timeout=5.0
        )
    assert len(_Echo.peers) == 1
    transport.close()


@pytest.mark.parametrize("behaviour", ["reset", "silent"])
def test_no_answer_is_retriable(behaviour: str) -> None:
    listener, thread, stop = _raw_server(behaviour)
    port = listener.getsockname()[1]
    transport = RequestsTransport()
    with pytest.raises(RetriableApiError) as info:
        transport.request(
            "GET",
            f"http://127.0.0.1:{port}/api/3/contacts",
            headers={},
            params={"email": "jane@example.com"},
            body=None,
            timeout=0.3,
        )
    message = str(info.value)
    assert "/api/3/contacts" in message and "jane@example.com" not in message
    assert info.value.__cause__ is None and info.value.__suppress_context__
    stop.set()
    thread.join()
    listener.close()
    transport.close()


def test_connection_refused_is_retriable() -> None:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now
    with pytest.raises(RetriableApiError, match="connection refused"):
        RequestsTransport().request(
            "GET", f"http://127.0.0.1:{port}/x", headers={}, params=None, body=None, timeout=1.0
        )
