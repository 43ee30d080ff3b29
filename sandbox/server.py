"""The HTTP side: a threading HTTP/1.1 server with keep-alive, and :class:`Sandbox`, the
in-process handle tests and benchmarks use."""

from __future__ import annotations

import logging
import socket
import struct
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, ClassVar

from sandbox import admin
from sandbox.api import API_PREFIX, Api, Response, json_response
from sandbox.config import Faults, SandboxConfig

logger = logging.getLogger(__name__)

MAX_READ_BYTES = 8 * 1024 * 1024
"""Bodies larger than this are not read: the connection is answered 413 and closed."""
IDLE_TIMEOUT_SECONDS = 60.0
"""A keep-alive connection idle this long is closed."""


class _Server(ThreadingHTTPServer):
    """Tracks open connections so that stopping also ends keep-alive connections."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.open_sockets: set[socket.socket] = set()
        self.sockets_lock = threading.Lock()
        super().__init__(address, _Handler)

    def close_connections(self) -> None:
        """Shut every open keep-alive connection (their threads then end)."""
        with self.sockets_lock:
            sockets = list(self.open_sockets)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed by its peer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ActiveCampaignSandbox/1"
    disable_nagle_algorithm = True
    timeout = IDLE_TIMEOUT_SECONDS
    server: _Server
    _reasons: ClassVar[dict[int, str]] = {s.value: s.phrase for s in HTTPStatus}

    def setup(self) -> None:
        super().setup()
        with self.server.sockets_lock:
            self.server.open_sockets.add(self.connection)

    def finish(self) -> None:
        with self.server.sockets_lock:
            self.server.open_sockets.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass  # the peer went away or we reset the connection on purpose

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    def _serve(self, method: str) -> None:
        arrived = self.server.sandbox.api.clock()  # before the body is read and parsed
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            self.close_connection = True
            self._send(json_response(411, {"message": "Length Required"}))
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_READ_BYTES:
            self.close_connection = True
            self._send(json_response(413, {"message": "Request Entity Too Large"}))
            return
        body = self.rfile.read(length) if length else b""
        sandbox = self.server.sandbox
        token = self.headers.get("Api-Token")
        host = self.headers.get("Host") or f"{sandbox.config.host}:{self.server.server_port}"
        try:
            if self.path == API_PREFIX or self.path.startswith(API_PREFIX + "/"):
                response = sandbox.api.handle(
                    method, self.path, token, body, f"http://{host}", arrived
                )
            elif self.path.startswith(admin.PREFIX):
                response = admin.handle(sandbox, method, self.path, token, body)
            else:
                response = json_response(404, {"message": "Not Found"})
        except Exception:  # a sandbox bug must answer 500, not hang the client
            logger.exception("sandbox failed to answer %s %s", method, self.path.split("?")[0])
            response = json_response(500, {"message": "Internal Server Error"})
        if response.reset:
            self._reset()
        else:
            self._send(response)

    def _send(self, response: Response) -> None:
        lines = [
            f"HTTP/1.1 {response.status} {self._reasons.get(response.status, 'Unknown')}",
            f"Server: {self.server_version}",
            f"Date: {self.date_time_string(self.server.sandbox.api.account.now())}",
            f"Content-Type: {response.content_type}",
            f"Content-Length: {len(response.body)}",
        ]
        lines.extend(f"{k}: {v}" for k, v in response.headers.items())
        if self.close_connection:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        # One write: a separate header packet would meet Nagle + delayed ACK on keep-alive.
        try:
            self.wfile.write(head + response.body)
        except OSError:
            self.close_connection = True  # the client gave up (a timeout, say): nothing to do
        logger.debug("%s %s -> %d", self.command, self.path.split("?")[0], response.status)

    def _reset(self) -> None:
        """Close with RST and no response (SO_LINGER 0): what a dropped connection looks like."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        except OSError:
            pass  # already gone


class Sandbox:
    """An emulated ActiveCampaign account served over HTTP (see the package docstring).

    ``start()`` serves in a background thread and returns ``self``; it is also a context
    manager. The introspection methods read the account as the API would after every batch
    that is due has been applied.
    """

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self.api = Api(config)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> Sandbox:
        """Bind, start the importer and the server thread."""
        if self._server is not None:
            return self
        self._server = _Server((self.config.host, self.config.port), self)
        self.api.importer.start()
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="sandbox-http",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, end open connections and the importer."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.close_connections()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.api.importer.stop()

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The port being served (after ``start``)."""
        if self._server is None:
            raise RuntimeError("the sandbox is not started")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT``; the API is under ``{base_url}/api/3``."""
        return f"http://{self.config.host}:{self.port}"

    # -- introspection ----------------------------------------------------------------------

    def list_members(self, list_id: str, status: int = 1) -> set[str]:
        """Lower-cased emails of the list's members with that status."""
        self.api.importer.process_due()
        with self.api.account.lock:
            return self.api.account.member_emails(list_id, status)

    def contact(self, email: str) -> dict[str, object] | None:
        """The stored contact (any case of email): names, ``fields`` by id, ``tags``,
        ``lists`` (list id -> status)."""
        self.api.importer.process_due()
        account = self.api.account
        with account.lock:
            found = account.by_email(email)
            return None if found is None else account.record(found)

    def contacts_count(self) -> int:
        """How many contacts the account holds."""
        self.api.importer.process_due()
        with self.api.account.lock:
            return self.api.account.count()

    def pending_batches(self) -> int:
        """Bulk imports queued and not yet final."""
        self.api.importer.process_due()
        return self.api.importer.pending()

    def request_counts(self) -> dict[str, int]:
        """Authenticated API requests received per endpoint key, e.g.
        ``"POST /import/bulk_import"`` (throttled and faulted ones included)."""
        with self.api.meter.lock:
            return dict(self.api.meter.requests)

    def throttled_count(self) -> int:
        """Real throttling answers sent: 429s and bulk ``Rate limit exceeded.`` 400s (injected
        429s are counted by :meth:`injected_fault_counts` instead)."""
        return self.api.meter.throttled

    def injected_fault_counts(self) -> dict[str, int]:
        """Injected faults by kind: ``reset``, ``lost_response``, ``http_503``, ``http_429``,
        ``slow``, ``batch_failed``, ``batch_interrupted``, ``failure_email``."""
        with self.api.meter.lock:
            return dict(self.api.meter.injected)

    def largest_request_bytes(self) -> int:
        """The largest request body received, in bytes."""
        return self.api.meter.largest_body

    def peak_requests_per_second(self) -> float:
        """The most API requests received within one *sandbox* second (a sliding window of
        ``1/time_scale`` real seconds), so it compares directly with the 5/s budget."""
        return float(self.api.meter.peak_second)

    def bulk_requests_per_minute_peak(self) -> float:
        """The most bulk-import requests (any size) received within one *sandbox* minute
        (a sliding window of ``60/time_scale`` real seconds)."""
        return float(self.api.meter.peak_minute)

    def automations_triggered(self) -> int:
        """Contacts imported without ``exclude_automations`` (each would start automations)."""
        with self.api.account.lock:
            return self.api.account.automations_triggered

    def ignored_keys(self) -> dict[str, int]:
        """Contact keys the API silently dropped, as ``"endpoint:key"`` -> times seen."""
        with self.api.account.lock:
            return dict(self.api.account.ignored_keys)

    def stats(self) -> dict[str, object]:
        """Every statistic at once (what ``GET /_sandbox/stats`` answers)."""
        out = self.api.meter.snapshot()
        out["contacts"] = self.contacts_count()
        out["pending_batches"] = self.pending_batches()
        out["automations_triggered"] = self.automations_triggered()
        out["ignored_keys"] = self.ignored_keys()
        out["time_scale"] = self.config.time_scale
        return out

    # -- control ----------------------------------------------------------------------------

    def unsubscribe(self, email: str, list_id: str) -> None:
        """Simulate the person opting out of the list inside ActiveCampaign."""
        account = self.api.account
        self.api.importer.process_due()
        with account.lock:
            if list_id not in account.lists:
                raise KeyError(f"no list {list_id}")
            contact = account.by_email(email)
            if contact is None:
                raise KeyError("no such contact")
            account.unsubscribe(contact.id, list_id, force=True)

    def set_faults(self, faults: Faults) -> None:
        """Change the injected faults at run time."""
        self.api.meter.set_faults(faults)

    def faults(self) -> Faults:
        """The faults in force."""
        return self.api.meter.faults

    def reset_stats(self) -> None:
        """Zero the request, throttling, fault and peak statistics."""
        self.api.meter.reset()
