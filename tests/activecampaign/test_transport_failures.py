"""A connection that fails says why in words a user can act on — DNS, refused, TLS — through
the real transport, and a certificate that does not fit is not retried."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from exporter.activecampaign.transport import RequestsTransport
from exporter.errors import ApiError, FatalApiError, RetriableApiError
from tests.keyvault_stub import KeyVaultStub, keyvault_stub  # noqa: F401  (pytest fixture)


def _send(url: str) -> ApiError:
    with pytest.raises(ApiError) as info:
        RequestsTransport().request(
            "GET", url, headers={}, params={"email": "ada@example.com"}, body=None, timeout=5.0
        )
    assert "ada" not in str(info.value)  # never the query (emails)
    return info.value


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_a_host_name_that_does_not_resolve() -> None:
    error = _send("https://no-such-account.invalid/api/3/users/me")
    assert isinstance(error, RetriableApiError)
    assert "host name not found (DNS)" in str(error)


def test_nothing_listening() -> None:
    error = _send(f"http://127.0.0.1:{_free_port()}/api/3/users/me")
    assert isinstance(error, RetriableApiError)
    assert "connection refused" in str(error)


def test_a_certificate_not_valid_for_the_host_is_fatal(
    keyvault_stub: tuple[str, Path, KeyVaultStub],  # noqa: F811
) -> None:
    url, _cert, _stub = keyvault_stub  # its certificate is self-signed: not trusted here
    error = _send(url.rstrip("/") + "/api/3/users/me")
    assert isinstance(error, FatalApiError)
    assert "TLS certificate not valid" in str(error)
