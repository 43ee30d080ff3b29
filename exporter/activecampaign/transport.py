"""The one seam between the client and the network.

The client never touches ``requests`` directly: it calls :meth:`Transport.request` and gets a
:class:`Response` back. Tests swap in a scripted transport; production uses
:class:`RequestsTransport`, which keeps connections alive in a pooled ``requests.Session``.

A transport only moves bytes. It does not judge status codes (that is
:mod:`exporter.activecampaign.status`), except that failing to get *any* answer (connection
refused or reset, timeout) is raised as :class:`~exporter.errors.RetriableApiError`.
"""

from __future__ import annotations

import json
import socket
import ssl
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter

from exporter.errors import FatalApiError, RetriableApiError


@dataclass(frozen=True)
class Response:
    """An HTTP answer, reduced to what the client needs."""

    status: int
    """HTTP status code."""
    headers: Mapping[str, str] = field(default_factory=dict)
    """Response headers; look them up with :meth:`header` (case-insensitive)."""
    body: bytes = b""
    """The raw response body."""

    def header(self, name: str) -> str | None:
        """The value of header ``name`` (case-insensitive), or ``None``."""
        wanted = name.lower()
        for key, value in self.headers.items():
            if key.lower() == wanted:
                return value
        return None

    def json(self) -> Any:
        """The body parsed as JSON; raises ``ValueError`` when it is not JSON."""
        return json.loads(self.body.decode("utf-8"))


class Transport(Protocol):
    """Sends one HTTP request and returns the answer.

    Implementations raise :class:`~exporter.errors.RetriableApiError` when no answer arrives
    (connection refused/reset, timeout) and return every answer, whatever its status.
    """

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        params: Mapping[str, str] | None,
        body: bytes | None,
        timeout: float,
    ) -> Response: ...


class RequestsTransport:
    """:class:`Transport` over a pooled, keep-alive ``requests.Session``."""

    def __init__(self, session: requests.Session | None = None, *, pool_size: int = 8) -> None:
        self._session = session or requests.Session()
        # Several threads (push and confirm) share one client: size the pool so none waits.
        adapter = HTTPAdapter(pool_connections=2, pool_maxsize=pool_size, max_retries=0)
        self._session.mount("https://", adapter)
        self._session.mount("http://", adapter)

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        params: Mapping[str, str] | None,
        body: bytes | None,
        timeout: float,
    ) -> Response:
        # The path only: the query may carry an email address, the URL never the key.
        where = f"{method} {urlsplit(url).path}"
        try:
            answer = self._session.request(
                method,
                url,
                headers=dict(headers),
                params=dict(params) if params else None,
                data=body,
                timeout=timeout,
                allow_redirects=False,
            )
            content = answer.content
        # ``from None``: requests' own messages quote the full URL, query (emails) included.
        except requests.Timeout:
            raise RetriableApiError(f"{where}: no answer within {timeout:g}s") from None
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
            if _caused_by(exc, ssl.SSLCertVerificationError):  # repeating cannot help
                raise FatalApiError(f"{where}: {_failure(exc)}") from None
            raise RetriableApiError(f"{where}: {_failure(exc)}") from None
        except requests.RequestException as exc:  # e.g. an invalid URL: repeating cannot help
            raise FatalApiError(f"{where}: request failed ({type(exc).__name__})") from None
        return Response(status=answer.status_code, headers=dict(answer.headers), body=content)

    def close(self) -> None:
        """Close pooled connections."""
        self._session.close()


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what it wraps (requests → urllib3 → socket/ssl), depth-first, bounded."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo and len(seen) < 20:
        here = todo.pop()
        if id(here) in seen:
            continue
        seen.add(id(here))
        yield here
        nested = [here.__cause__, here.__context__, getattr(here, "reason", None), *here.args]
        todo.extend(e for e in nested if isinstance(e, BaseException))


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    return any(isinstance(e, kind) for e in _causes(exc))


def _failure(exc: BaseException) -> str:
    """Why a connection failed, in words a user can act on (never the URL: it may carry a
    query with an email address)."""
    if _caused_by(exc, ssl.SSLCertVerificationError):
        return "TLS certificate not valid for this host (is the hostname right?)"
    if _caused_by(exc, ssl.SSLError):
        return "TLS handshake failed"
    if _caused_by(exc, socket.gaierror) or any(
        type(e).__name__ == "NameResolutionError" for e in _causes(exc)
    ):
        return "host name not found (DNS): check the hostname"
    if _caused_by(exc, ConnectionRefusedError):
        return "connection refused: nothing answers at that host and port"
    return f"connection failed ({type(exc).__name__})"
