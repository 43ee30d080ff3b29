"""A local HTTPS stand-in for Azure Key Vault's secrets API, for tests through the real SDK.

No Key Vault emulator exists, so this serves just enough of the REST API for
``azure.keyvault.secrets.SecretClient``: the bearer challenge, ``GET``/``PUT``/``DELETE
/secrets/<name>[/<version>]``, ``GET``/``DELETE /deletedsecrets/<name>`` (the delete poller and
purge), with Key Vault's error bodies. The TLS certificate is made at test time; none is
committed.

Use it from any test module::

    from tests.keyvault_stub import keyvault_stub  # noqa: F401  (pytest fixture)

    def test_x(keyvault_stub):
        vault_url, cert_path, stub = keyvault_stub
        client = stub.secret_client()          # a real SecretClient, closed at teardown
        client.set_secret("ac-key", "value")
        assert stub.value("ac-key") == "value"
        assert stub.hits("PUT", "ac-key") == 1

The small API: :attr:`KeyVaultStub.url`, :attr:`~KeyVaultStub.cert_path`,
:meth:`~KeyVaultStub.secret_client`, :meth:`~KeyVaultStub.seed`, :meth:`~KeyVaultStub.value`,
:meth:`~KeyVaultStub.versions`, :meth:`~KeyVaultStub.hits`, :attr:`~KeyVaultStub.requests`,
:attr:`~KeyVaultStub.forbidden` (answer 403 to every authorised request) and
:attr:`~KeyVaultStub.soft_delete`. Names are case-insensitive, as in Key Vault.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import secrets
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
from azure.core.credentials import AccessToken
from azure.keyvault.secrets import SecretClient
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

TENANT_ID = "00000000-0000-0000-0000-00000000beef"
CHALLENGE = (
    f'Bearer authorization="https://login.microsoftonline.com/{TENANT_ID}", '
    'resource="https://vault.azure.net"'
)
"""The ``WWW-Authenticate`` header of Key Vault's first 401."""
KEYVAULT_SCOPE = "https://vault.azure.net/.default"


def make_self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """Write ``cert.pem`` and ``key.pem`` (EC P-256, SAN ``127.0.0.1``, ``localhost``) there.

    The certificate is its own CA, so ``connection_verify=cert.pem`` trusts it.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "keyvault-stub.localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path = directory / "cert.pem"
    key_path = directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class FakeCredential:
    """A token credential for the stub: any bearer token is accepted. Records requested scopes."""

    def __init__(self) -> None:
        self.scopes: list[str] = []

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes.extend(scopes)
        return AccessToken("fake-token", int(time.time()) + 3600)


def make_secret_client(vault_url: str, cert_path: Path | str, **kwargs: Any) -> SecretClient:
    """A real ``SecretClient`` for the stub: fake credential, the stub's CA, no retries.

    ``kwargs`` override the defaults (for example ``credential=...``).
    """
    options: dict[str, Any] = {
        "credential": FakeCredential(),
        "connection_verify": str(cert_path),
        "verify_challenge_resource": False,
        "retry_total": 0,
        "logging_enable": False,
    }
    options.update(kwargs)
    credential = options.pop("credential")
    return SecretClient(vault_url, credential, **options)


@dataclass(frozen=True)
class RecordedRequest:
    """One request the stub answered."""

    method: str
    path: str
    """URL path without the query string, e.g. ``/secrets/ac-key/``."""
    authorized: bool
    """Whether it carried a bearer token (the SDK's first request of a client does not)."""
    status: int


@dataclass
class _Version:
    version: str
    value: str
    content_type: str | None
    tags: dict[str, str] | None
    created: int


@dataclass
class _Secret:
    name: str
    versions: list[_Version] = field(default_factory=list)
    deleted_at: int | None = None


def _error(code: str, message: str, inner: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"code": code, "message": message}
    if inner:
        body["innererror"] = {"code": inner}
    return {"error": body}


class KeyVaultStub:
    """The vault's state plus a threaded HTTPS server: :meth:`start`, then :meth:`close`."""

    def __init__(self, cert_path: Path, key_path: Path) -> None:
        self.cert_path = cert_path
        self.forbidden = False
        """When true, every authorised request gets Key Vault's RBAC 403."""
        self.soft_delete = True
        """True: DELETE moves a secret to ``/deletedsecrets`` (name not reusable until purged)."""
        self.deleted_visible_after = 0
        """How many ``GET /deletedsecrets/<name>`` answer 404 after a DELETE (Key Vault's lag)."""
        self.requests: list[RecordedRequest] = []
        self._secrets: dict[str, _Secret] = {}
        self._pending_deleted_polls: dict[str, int] = {}
        self._lock = threading.Lock()
        self._clients: list[SecretClient] = []
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_path, key_path)
        self._server = _Server(("127.0.0.1", 0), _Handler, self)
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self._server.server_address[1]}"
        """The vault URL to give ``SecretClient``."""
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.02},  # shutdown() waits up to one interval
            name="keyvault-stub",
            daemon=True,
        )

    # --- lifecycle --------------------------------------------------------------------------
    def start(self) -> KeyVaultStub:
        self._thread.start()
        return self

    def close(self) -> None:
        for client in self._clients:
            client.close()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def secret_client(self, **kwargs: Any) -> SecretClient:
        """A real ``SecretClient`` for this stub (``make_secret_client``), closed by ``close``."""
        client = make_secret_client(self.url, self.cert_path, **kwargs)
        self._clients.append(client)
        return client

    # --- state for assertions ---------------------------------------------------------------
    def seed(self, name: str, value: str, *, tags: dict[str, str] | None = None) -> str:
        """Store a new version directly (no HTTP); returns the version id."""
        with self._lock:
            return self._put(name, value, None, tags).version

    def value(self, name: str) -> str | None:
        """The latest value of a live secret, or ``None``."""
        with self._lock:
            secret = self._secrets.get(name.lower())
            if secret is None or secret.deleted_at is not None:
                return None
            return secret.versions[-1].value

    def versions(self, name: str) -> list[str]:
        """Version ids of a secret, oldest first (empty if unknown)."""
        with self._lock:
            secret = self._secrets.get(name.lower())
            return [v.version for v in secret.versions] if secret else []

    def content_type(self, name: str) -> str | None:
        """Content type of the latest version."""
        with self._lock:
            secret = self._secrets.get(name.lower())
            return secret.versions[-1].content_type if secret else None

    def tags(self, name: str) -> dict[str, str] | None:
        """Tags of the latest version."""
        with self._lock:
            secret = self._secrets.get(name.lower())
            return secret.versions[-1].tags if secret else None

    def hits(self, method: str | None = None, name: str | None = None) -> int:
        """How many authorised requests (not challenges) matched the method and secret name.

        ``name`` matches ``/secrets/<name>…`` and ``/deletedsecrets/<name>`` alike.
        """
        with self._lock:
            return sum(
                1
                for r in self.requests
                if r.authorized
                and (method is None or r.method == method)
                and (name is None or _name_of(r.path) == name.lower())
            )

    # --- request handling (called by the handler threads) -------------------------------
    def _put(
        self, name: str, value: str, content_type: str | None, tags: dict[str, str] | None
    ) -> _Version:
        secret = self._secrets.setdefault(name.lower(), _Secret(name))
        version = _Version(uuid.uuid4().hex, value, content_type, tags, int(time.time()))
        secret.versions.append(version)
        return version

    def _bundle(self, secret: _Secret, version: _Version, *, with_value: bool) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": f"{self.url}/secrets/{secret.name}/{version.version}",
            "attributes": {
                "enabled": True,
                "created": version.created,
                "updated": version.created,
                "recoveryLevel": "Recoverable+Purgeable" if self.soft_delete else "Purgeable",
                "recoverableDays": 90 if self.soft_delete else 0,
            },
        }
        if with_value:
            body["value"] = version.value
        if version.content_type is not None:
            body["contentType"] = version.content_type
        if version.tags is not None:
            body["tags"] = version.tags
        if secret.deleted_at is not None:
            body["recoveryId"] = f"{self.url}/deletedsecrets/{secret.name}"
            body["deletedDate"] = secret.deleted_at
            body["scheduledPurgeDate"] = secret.deleted_at + 90 * 86400
        return body

    def handle(
        self, method: str, path: str, body: bytes, authorized: bool
    ) -> tuple[int, dict[str, Any] | None, dict[str, str]]:
        """Route one request: ``(status, json body or None, extra headers)``."""
        if not authorized:
            message = "AKV10000: Request is missing a Bearer or PoP token."
            return 401, _error("Unauthorized", message), {"WWW-Authenticate": CHALLENGE}
        parts = [unquote(p) for p in path.strip("/").split("/")]
        if self.forbidden:
            return 403, _forbidden(method, parts), {}
        with self._lock:
            if parts[0] == "secrets" and len(parts) in (2, 3):
                version = parts[2] if len(parts) == 3 else ""
                return self._secrets_route(method, parts[1], version, body)
            if parts[0] == "deletedsecrets" and len(parts) == 2:
                return self._deleted_route(method, parts[1])
        return 400, _error("BadParameter", f"Unsupported request {method} {path}"), {}

    def _secrets_route(
        self, method: str, name: str, version: str, body: bytes
    ) -> tuple[int, dict[str, Any] | None, dict[str, str]]:
        secret = self._secrets.get(name.lower())
        if method == "PUT" and not version:
            if secret is not None and secret.deleted_at is not None:
                message = (
                    f"Secret {name} is currently in a deleted but recoverable state, and its "
                    "name cannot be reused; in this state, the secret can only be recovered or "
                    "purged."
                )
                return 409, _error("Conflict", message, "ObjectIsDeletedButRecoverable"), {}
            params = json.loads(body or b"{}")
            if not isinstance(params.get("value"), str):
                return 400, _error("BadParameter", "Property value is required."), {}
            new = self._put(name, params["value"], params.get("contentType"), params.get("tags"))
            return 200, self._bundle(self._secrets[name.lower()], new, with_value=True), {}
        if secret is None or secret.deleted_at is not None:
            return 404, _not_found(name), {}
        if method == "GET":
            found = secret.versions[-1] if not version else _find(secret, version)
            if found is None:
                return 404, _not_found(f"{name}/{version}"), {}
            return 200, self._bundle(secret, found, with_value=True), {}
        if method == "DELETE" and not version:
            if self.soft_delete:
                secret.deleted_at = int(time.time())
                self._pending_deleted_polls[name.lower()] = self.deleted_visible_after
                return 200, self._bundle(secret, secret.versions[-1], with_value=False), {}
            del self._secrets[name.lower()]
            return 200, self._bundle(secret, secret.versions[-1], with_value=False), {}
        return 405, _error("BadParameter", f"{method} is not supported here"), {}

    def _deleted_route(
        self, method: str, name: str
    ) -> tuple[int, dict[str, Any] | None, dict[str, str]]:
        secret = self._secrets.get(name.lower())
        if secret is None or secret.deleted_at is None:
            return 404, _error("SecretNotFound", f"Deleted Secret not found: {name}"), {}
        if method == "GET":
            pending = self._pending_deleted_polls.get(name.lower(), 0)
            if pending > 0:
                self._pending_deleted_polls[name.lower()] = pending - 1
                return 404, _error("SecretNotFound", f"Deleted Secret not found: {name}"), {}
            return 200, self._bundle(secret, secret.versions[-1], with_value=False), {}
        if method == "DELETE":  # purge
            del self._secrets[name.lower()]
            return 204, None, {}
        return 405, _error("BadParameter", f"{method} is not supported here"), {}


def _find(secret: _Secret, version: str) -> _Version | None:
    return next((v for v in secret.versions if v.version == version), None)


def _not_found(what: str) -> dict[str, Any]:
    message = (
        f"A secret with (name/id) {what} was not found in this key vault. If you recently "
        "deleted this secret you may be able to recover it using the correct recovery command."
    )
    return _error("SecretNotFound", message)


def _forbidden(method: str, parts: list[str]) -> dict[str, Any]:
    action = {"GET": "getSecret/action", "PUT": "setSecret/action", "DELETE": "delete"}.get(
        method, "readMetadata/action"
    )
    message = (
        "Caller is not authorized to perform action on resource.\r\n"
        "Caller: appid=00000000-0000-0000-0000-000000000001;"
        "oid=00000000-0000-0000-0000-000000000002\r\n"
        f"Action: 'Microsoft.KeyVault/vaults/secrets/{action}'\r\n"
        f"Resource: '/vaults/stub/{'/'.join(parts)}'\r\n"
        "Assignment: (not found)\r\nDecisionReason: 'DeniedWithNoValidRBAC'\r\n"
    )
    return _error("Forbidden", message, "ForbiddenByRbac")


def _name_of(path: str) -> str | None:
    parts = path.strip("/").split("/")
    return unquote(parts[1]).lower() if len(parts) >= 2 else None


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type, stub: KeyVaultStub) -> None:
        super().__init__(address, handler)
        self.stub = stub

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients dropping connections at teardown are normal: stay quiet."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the SDK's requests session expects
    timeout = 10  # an idle kept-alive connection frees its thread
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """No access log on stderr."""

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        auth = self.headers.get("Authorization", "")
        authorized = auth.startswith("Bearer ") and len(auth) > len("Bearer ")
        path = urlsplit(self.path).path
        stub = self.server.stub
        status, payload, headers = stub.handle(self.command, path, body, authorized)
        with stub._lock:
            stub.requests.append(RecordedRequest(self.command, path, authorized, status))
        data = json.dumps(payload).encode() if payload is not None else b""
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        if data:
            self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("x-ms-request-id", secrets.token_hex(8))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    do_GET = _serve
    do_PUT = _serve
    do_DELETE = _serve
    do_POST = _serve
    do_PATCH = _serve


def start_keyvault_stub(directory: Path) -> KeyVaultStub:
    """Make a certificate in ``directory`` and start a stub. Call :meth:`KeyVaultStub.close`."""
    cert_path, key_path = make_self_signed_cert(directory)
    return KeyVaultStub(cert_path, key_path).start()


@pytest.fixture
def keyvault_stub(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, Path, KeyVaultStub]]:
    """A running stub: yields ``(vault_url, cert_path, stub)``; stops it (and its clients) after."""
    stub = start_keyvault_stub(tmp_path_factory.mktemp("keyvault-stub"))
    try:
        yield stub.url, stub.cert_path, stub
    finally:
        stub.close()
