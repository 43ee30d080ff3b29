"""Connections' API keys in Azure Key Vault: a :class:`~exporter.management.secrets.SecretProvider`.

References are ``keyvault:NAME`` or a bare ``NAME`` (Key Vault secret names: 1–127 letters,
digits and ``-``, case-insensitive). Values are cached for a short TTL so a run does not read
the vault once per batch; the engine calls :meth:`KeyVaultSecretProvider.invalidate` after
ActiveCampaign answers 403 (the key may have been rotated) and reads again.

Nothing here ever puts a secret value in a message, a log record or an exception chain: SDK
errors are translated into :class:`~exporter.errors.SecretError` *without* chaining the SDK
exception, because that exception carries the HTTP request, whose body is the secret on writes.
The status, Key Vault's error code and its message are copied into our message instead.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal, TypeVar

from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.keyvault.secrets import SecretClient

from exporter.errors import ConfigError, SecretError
from exporter.management.secret_names import is_generated_key_ref
from exporter.settings import KEYVAULT_URL, FunctionSettings

logger = logging.getLogger(__name__)

REFERENCE_PREFIX = "keyvault:"
CONTENT_TYPE = "application/x-activecampaign-api-key"
"""Content type of the secrets we write: tells a vault's reader what the value is."""
MANAGED_BY_TAG = "managed-by"
DEFAULT_TAGS: Mapping[str, str] = {MANAGED_BY_TAG: "activecampaign-segment-exporter"}
"""Tags on the secrets we write (never anything secret)."""
OWNER_TAG = "exporter-connection"
"""Tag naming the connection a secret was written for: the app overwrites and deletes only
secrets carrying it with that connection's name (see :meth:`KeyVaultSecretProvider.set`)."""
READ_ROLE = "Key Vault Secrets User"
WRITE_ROLE = "Key Vault Secrets Officer"

_NAME = re.compile(r"[0-9A-Za-z-]{1,127}")
_SCHEME = re.compile(r"[a-z][a-z0-9+.-]{0,15}")
# ActiveCampaign keys are long hex strings, which are also valid secret names: refuse anything
# key-shaped, so a key pasted into the reference field never reaches a message or a log.
_KEY_SHAPED = re.compile(r"[0-9a-fA-F]{32,}")
_DETAIL_LIMIT = 600

Action = Literal["read", "write", "delete"]
T = TypeVar("T")


def secret_name(ref: str) -> str:
    """The Key Vault secret name of ``keyvault:NAME`` or ``NAME``.

    Raises :class:`ConfigError` for anything else. The message never repeats the reference
    itself: a user who pasted the API key into the reference field must not see it echoed.
    """
    name = ref[len(REFERENCE_PREFIX) :] if ref.startswith(REFERENCE_PREFIX) else ref
    if _KEY_SHAPED.fullmatch(name):
        raise ConfigError(
            "this looks like an API key, not the name of the Key Vault secret holding it"
        )
    if _NAME.fullmatch(name):
        return name
    scheme, sep, _ = ref.partition(":")
    if sep and scheme != REFERENCE_PREFIX[:-1]:
        shown = f"'{scheme}:'" if _SCHEME.fullmatch(scheme) else "another kind of"
        raise ConfigError(
            f"the Key Vault secret provider cannot resolve {shown} references; "
            f"use '{REFERENCE_PREFIX}NAME' or a bare secret name"
        )
    if not name:
        raise ConfigError("empty Key Vault secret name")
    if len(name) > 127:
        raise ConfigError(f"Key Vault secret names have at most 127 characters (got {len(name)})")
    bad = "".join(sorted({c for c in name if not (c.isascii() and (c.isalnum() or c == "-"))}))
    shown_bad = bad[:10] if bad.isprintable() else "non-printable characters"
    raise ConfigError(
        f"Key Vault secret names may contain only letters, digits and '-' (found {shown_bad!r})"
    )


@dataclass(frozen=True)
class _Cached:
    value: str
    expires_at: float


class KeyVaultSecretProvider:
    """Reads, writes and deletes API keys in one Key Vault, caching reads for ``ttl_seconds``.

    Thread-safe: one instance per process, shared by every activity. Concurrent first reads of
    the same secret may each hit the vault (reads are not coalesced); an :meth:`invalidate`
    during a read wins, so the read's possibly stale value is not cached.
    """

    def __init__(
        self,
        client: SecretClient,
        *,
        ttl_seconds: float = 300,
        clock: Callable[[], float] = time.monotonic,
        tags: Mapping[str, str] = DEFAULT_TAGS,
    ) -> None:
        """``ttl_seconds`` 0 disables caching. ``clock`` is injectable for tests."""
        if ttl_seconds < 0:
            raise ConfigError("the secret cache TTL cannot be negative")
        self._client = client
        self._ttl = ttl_seconds
        self._clock = clock
        self._tags = dict(tags)
        self._lock = threading.Lock()
        self._cache: dict[str, _Cached] = {}
        self._generation: dict[str, int] = {}

    @classmethod
    def from_settings(
        cls, settings: FunctionSettings, *, ttl_seconds: float = 300
    ) -> KeyVaultSecretProvider:
        """The provider of the deployed app: the app's managed identity, ``settings.keyvault_url``.

        Network trace logging (request/response bodies) stays off: bodies hold secret values.
        """
        if not settings.keyvault_url:
            raise ConfigError("no Key Vault URL is configured", field=KEYVAULT_URL)
        # Imported here: only the deployed app needs azure-identity's credential chain.
        from azure.identity import DefaultAzureCredential

        credential = DefaultAzureCredential(
            managed_identity_client_id=settings.managed_identity_client_id
        )
        client = SecretClient(settings.keyvault_url, credential, logging_enable=False)
        return cls(client, ttl_seconds=ttl_seconds)

    @property
    def vault_url(self) -> str:
        """The vault this provider talks to."""
        return str(self._client.vault_url)

    # --- SecretProvider -----------------------------------------------------------------------
    def get(self, ref: str) -> str:
        """The secret's latest value, from the cache when it is younger than the TTL."""
        name = secret_name(ref)
        key = name.lower()
        now = self._clock()
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None and now < cached.expires_at:
                return cached.value
            generation = self._generation.get(key, 0)
        secret = self._call("read", name, lambda: self._client.get_secret(name))
        if secret.value is None:
            raise SecretError(f"secret '{name}' in vault {self.vault_url} has no value")
        logger.debug("read secret %s from Key Vault", name)
        with self._lock:
            if self._ttl > 0 and self._generation.get(key, 0) == generation:
                self._cache[key] = _Cached(secret.value, now + self._ttl)
        return secret.value

    def set(self, ref: str, value: str, *, owner: str) -> None:
        """Write a new version for connection ``owner`` (content type and tags, never the
        value, describe it). An existing secret is overwritten only when it is ``owner``'s
        (:meth:`_require_owned`): an operator's or another connection's secret is refused."""
        name = secret_name(ref)
        if not value:
            raise SecretError(f"refusing to store an empty value in secret '{name}'")
        self._require_owned(name, owner, "overwrite", missing_ok=True)
        tags = {**self._tags, OWNER_TAG: owner}
        self._call(
            "write",
            name,
            lambda: self._client.set_secret(name, value, content_type=CONTENT_TYPE, tags=tags),
        )
        logger.info("stored a new version of secret %s in Key Vault", name)
        key = name.lower()
        with self._lock:
            self._forget(key)
            if self._ttl > 0:
                self._cache[key] = _Cached(value, self._clock() + self._ttl)

    def delete(self, ref: str, *, owner: str) -> None:
        """Start deleting connection ``owner``'s secret; a secret that is already gone is not
        an error, one that is not ``owner``'s (:meth:`_require_owned`) is refused.

        Deletion is started, not awaited: nothing in the exporter needs it complete, waiting
        would hold a worker for seconds, and the SDK's ``LROPoller.wait(timeout)`` leaves a
        polling thread running after the timeout. In a soft-delete vault the name cannot be
        reused until the deleted secret is purged (``set`` then raises a SecretError saying so).
        """
        name = secret_name(ref)
        with self._lock:
            self._forget(name.lower())
        try:
            self._require_owned(name, owner, "delete", missing_ok=False)
            self._call("delete", name, lambda: self._client.begin_delete_secret(name))
        except _AlreadyGone:
            logger.info("secret %s was already absent from Key Vault", name)
            return
        logger.info("deleting secret %s from Key Vault", name)

    def invalidate(self, ref: str) -> None:
        """Forget the cached value so the next :meth:`get` reads the vault (after a 403)."""
        key = secret_name(ref).lower()
        with self._lock:
            self._forget(key)

    # --- internals ----------------------------------------------------------------------------
    def _require_owned(self, name: str, owner: str, verb: str, *, missing_ok: bool) -> None:
        """Raise unless secret ``name`` is absent (``missing_ok``: writing; else
        :class:`_AlreadyGone`) or was written by the app
        for connection ``owner``: tagged with :data:`OWNER_TAG` = ``owner``, or (secrets written
        before that tag existed) tagged :data:`MANAGED_BY_TAG` under a name generated for
        ``owner``. Anything else is read-only to the app, whatever its role on the vault."""
        action: Action = "write" if missing_ok else "delete"  # a 403 names the write role
        try:
            secret = self._call(action, name, lambda: self._client.get_secret(name))
        except _Missing:  # writing a new secret; deleting an absent one raises _AlreadyGone
            return
        tags = secret.properties.tags or {}
        if tags.get(OWNER_TAG) == owner:
            return
        legacy = OWNER_TAG not in tags and tags.get(MANAGED_BY_TAG) == self._tags.get(
            MANAGED_BY_TAG
        )
        if legacy and is_generated_key_ref(f"{REFERENCE_PREFIX}{name}", owner):
            return
        raise SecretError(
            f"refusing to {verb} secret '{name}': the exporter did not create it for connection "
            f"{owner!r} (it may be read, never changed); give the connection a key under a new "
            "name instead"
        )

    def _forget(self, key: str) -> None:
        """Drop the entry and fence off reads in flight (caller holds the lock)."""
        self._cache.pop(key, None)
        self._generation[key] = self._generation.get(key, 0) + 1

    def _call(self, action: Action, name: str, operation: Callable[[], T]) -> T:
        try:
            return operation()
        except AzureError as exc:
            logger.debug("Key Vault %s of secret %s failed: %s", action, name, type(exc).__name__)
            error = self._translate(exc, action, name)
        # Raised outside the handler on purpose, so the SDK exception (and the request it holds)
        # is neither the cause nor the context of ours.
        raise error

    def _translate(self, exc: AzureError, action: Action, name: str) -> SecretError:
        vault = self.vault_url
        if isinstance(exc, ResourceNotFoundError):
            if action == "delete":
                return _AlreadyGone(name)
            missing = _Missing if action == "write" else SecretError
            return missing(f"secret '{name}' not found in vault {vault}{_detail(exc)}")
        if isinstance(exc, ClientAuthenticationError):
            return SecretError(
                f"could not authenticate to Key Vault {vault} to {action} secret '{name}': check "
                "the app's managed identity (AZURE_CLIENT_ID) or your Azure sign-in"
                f"{_detail(exc)}"
            )
        if isinstance(exc, ResourceExistsError):
            return SecretError(
                f"secret '{name}' is deleted but recoverable in vault {vault}: recover or purge "
                f"it, or use another secret name{_detail(exc)}"
            )
        if isinstance(exc, HttpResponseError) and exc.status_code == 403:
            role = READ_ROLE if action == "read" else WRITE_ROLE
            return SecretError(
                f"access denied to {action} secret '{name}' in vault {vault}: the app's identity "
                f"needs the '{role}' role on the vault (or on the secret){_detail(exc)}"
            )
        if isinstance(exc, ServiceRequestError | ServiceResponseError):
            return SecretError(
                f"could not reach Key Vault {vault} to {action} secret '{name}' "
                f"({type(exc).__name__}){_detail(exc)}"
            )
        status = f" HTTP {exc.status_code}" if isinstance(exc, HttpResponseError) else ""
        return SecretError(
            f"Key Vault {vault} failed to {action} secret '{name}':{status} "
            f"{type(exc).__name__}{_detail(exc)}"
        )


class _AlreadyGone(SecretError):
    """Internal: the secret to delete does not exist (deleting is then a no-op)."""


class _Missing(SecretError):
    """Internal: the secret about to be written does not exist yet (it is then created)."""


def _detail(exc: AzureError) -> str:
    """Key Vault's own code and message (never contains a secret value), shortened."""
    code = getattr(getattr(exc, "error", None), "code", None)
    message = getattr(getattr(exc, "error", None), "message", None) or exc.message or ""
    text = " ".join(str(message).split())
    if len(text) > _DETAIL_LIMIT:
        text = text[:_DETAIL_LIMIT] + "…"
    if code and text:
        return f" [{code}: {text}]"
    return f" [{text}]" if text else ""
