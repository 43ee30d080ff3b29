"""Managing connections and exports: the one code path behind the CLI and the HTTP API.

Both front ends are thin: they turn arguments or a request into a :class:`Caller` and a payload,
call :class:`ManagementService`, and render what it returns (or the error it raises). Every
business rule lives here: who may do what (:mod:`exporter.management.permissions`), hostname policy,
recorded consent, ETag concurrency, checking the list ID and resolving custom fields against the
account when an export is saved. Saving an export never runs it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from exporter.errors import (
    ConfigError,
    ConfigErrors,
    ConflictError,
    ExporterError,
    NotFoundError,
)
from exporter.management import schedule as schedule_mod
from exporter.management.account import ClientLike as ClientLike  # re-exported for callers
from exporter.management.account import checked_against_account, choices
from exporter.management.config import (
    Connection,
    Export,
    missing_consent,
    parse_export,
)
from exporter.management.hostnames import check_hostname
from exporter.management.permissions import (
    Action,
    Caller,
    authorize,
    can_use_connection,
    require_role,
)
from exporter.management.repository import ConfigRepository
from exporter.management.secret_names import is_generated_key_ref
from exporter.management.secrets import SecretProvider
from exporter.management.validation import (
    agreed,
    as_dict,
    check_api_key,
    checked_connection,
    checked_hostname,
    consent_change,
    consent_record,
    require_open_segment,
    require_own_key_ref,
    who,
)
from exporter.settings import HostPolicy
from exporter.storage import runs

log = logging.getLogger(__name__)


ClientFactory = Callable[[Connection, str], ClientLike]
"""Builds a client for a connection and its API key."""


@dataclass(frozen=True)
class Saved:
    """A saved object as the caller may see it, its new ETag, and notes for the user."""

    view: dict[str, Any]
    etag: str
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Fetched:
    """An object as the caller may see it, and the ETag to send back when changing it."""

    view: dict[str, Any]
    etag: str


@dataclass(frozen=True)
class Verified:
    """The outcome of checking a connection's key and host against ActiveCampaign."""

    name: str
    hostname: str
    verified_at: datetime


@dataclass(frozen=True)
class DeletedConnection:
    """What deleting a connection did."""

    name: str
    orphaned_exports: list[str]
    """Exports left pointing at it (only when forced); they fail until moved."""
    secret_deleted: bool


@dataclass(frozen=True)
class DeletedExport:
    """A deleted export: its state and run files are gone, each run's report stays; the host
    cancels its running run and stops its schedule."""

    name: str
    connection: str


@dataclass(frozen=True)
class _MissingConnection:
    """Stands in for a connection that was force-deleted: administrators only."""

    name: str
    allow_contributors: bool = False


class ManagementService:
    """Connections and exports for a caller, with the permission rules applied."""

    def __init__(
        self,
        repo: ConfigRepository,
        secrets: SecretProvider,
        client_factory: ClientFactory,
        host_policy: HostPolicy,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        schedule_tick: timedelta = schedule_mod.DEFAULT_TICK,
    ) -> None:
        """``schedule_tick``: how often the host looks for due exports; a finer schedule is
        refused when an export is saved (it would run less often than it says)."""
        self.repo = repo
        self.schedule_tick = schedule_tick
        self.secrets = secrets
        self.client_factory = client_factory
        self.host_policy = host_policy
        self.clock = clock

    # --- helpers -----------------------------------------------------------------------------

    def _now(self) -> datetime:
        now = self.clock()
        return now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)

    def _client(self, connection: Connection) -> ClientLike:
        """A client for a connection: consent and host are checked again before the key is
        read, since the store may have been edited or the policy tightened since saving."""
        connection.require_consent()
        check_hostname(connection.hostname, self.host_policy)
        return self.client_factory(connection, self.secrets.get(connection.api_key_ref))

    def _connection_of(self, export: Export) -> Connection | _MissingConnection:
        try:
            return self.repo.get_connection(export.connection)[0]
        except NotFoundError:
            return _MissingConnection(export.connection)

    # --- connections -------------------------------------------------------------------------

    def create_connection(
        self,
        caller: Caller,
        payload: Mapping[str, Any],
        api_key: str | None = None,
        *,
        verify: bool = True,
    ) -> Saved:
        """Create a connection (administrators). The hostname is normalised (notes say how),
        consent must be given (``"consent": true``) and is recorded with the caller and time.
        ``api_key`` is stored via the secret provider under ``api_key_ref``. The key and host
        are checked with ActiveCampaign (``users/me``) before anything is saved, as Customer
        Insights' Connect does; ``verify=False`` saves without asking it (offline set-up)."""
        authorize(caller, Action.CREATE_CONNECTION)
        data = as_dict(payload)
        errors = check_api_key(api_key)
        notes = checked_hostname(data, errors, self.host_policy)
        now = self._now()
        if agreed(data.pop("consent", None)):
            data["consent"] = consent_record(caller, now)
        else:
            errors.append(missing_consent())
        data.update(created_by=caller.principal, created_at=now)
        data.update(updated_by=caller.principal, updated_at=now)
        connection = checked_connection(data, errors)
        require_own_key_ref(connection, api_key)
        if self.repo.connection_exists(connection.name):
            raise ConflictError(
                f"a connection named {connection.name!r} exists already", field="name"
            )
        if verify:
            key = api_key if api_key is not None else self.secrets.get(connection.api_key_ref)
            check_hostname(connection.hostname, self.host_policy)
            self.client_factory(connection, key).verify()
        etag = self.repo.put_connection(connection, create_only=True)
        if api_key is not None:
            self._store_key(connection, api_key)
        log.info("connection %s created by %s", connection.name, who(caller))
        return Saved(connection.to_public_dict(caller.view_role), etag, notes)

    def _store_key(self, connection: Connection, api_key: str) -> None:
        # The connection is written first (create-only), so a lost race never overwrites
        # someone else's key; if the key cannot be stored, the new connection goes again.
        try:
            self.secrets.set(connection.api_key_ref, api_key, owner=connection.name)
        except ExporterError:
            self.repo.delete_connection(connection.name, force=True)
            raise

    def update_connection(
        self,
        caller: Caller,
        name: str,
        payload: Mapping[str, Any],
        *,
        if_match: str | None = None,
        api_key: str | None = None,
        verify: bool = False,
    ) -> Saved:
        """Change a connection (administrators): the payload's fields replace the stored ones.
        Pointing it at another host needs fresh consent; ``api_key`` replaces the stored key.
        With ``verify`` the (new) key and host are checked with ActiveCampaign first."""
        authorize(caller, Action.UPDATE_CONNECTION)
        existing, etag = self.repo.get_connection(name)
        changes = as_dict(payload)
        errors = check_api_key(api_key)
        if changes.get("name", name) != name:
            errors.append(ConfigError("a connection cannot be renamed", field="name"))
        notes = checked_hostname(changes, errors, self.host_policy)
        now = self._now()
        data = existing.model_dump(mode="json") | changes
        data.update(consent_change(existing, changes, caller, now, errors))
        data.update(updated_by=caller.principal, updated_at=now)
        connection = checked_connection(data, errors)
        require_own_key_ref(connection, api_key)
        if verify:
            key = api_key if api_key is not None else self.secrets.get(connection.api_key_ref)
            check_hostname(connection.hostname, self.host_policy)
            self.client_factory(connection, key).verify()
        # The key first: should the vault refuse, the stored connection must not already point
        # at a secret that was never written. (A lost ETag race after this leaves the new key in
        # place under the reference the caller asked for, which is what they wanted anyway.)
        if api_key is not None:
            if if_match is not None and if_match != etag:  # refuse before touching the vault
                raise ConflictError(
                    f"connection {name!r} was changed or deleted since you read it; "
                    "read it again and reapply your change",
                    field="name",
                )
            self.secrets.set(connection.api_key_ref, api_key, owner=connection.name)
        new_etag = self.repo.put_connection(connection, if_match=if_match or etag)
        log.info("connection %s changed by %s", name, who(caller))
        return Saved(connection.to_public_dict(caller.view_role), new_etag, notes)

    def get_connection(self, caller: Caller, name: str) -> Fetched:
        """The connection as the caller may see it (contributors: name, display name, type)."""
        require_role(caller)
        connection, etag = self.repo.get_connection(name)
        authorize(caller, Action.VIEW_CONNECTION, connection)
        return Fetched(connection.to_public_dict(caller.view_role), etag)

    def list_connections(self, caller: Caller) -> list[dict[str, Any]]:
        """The connections the caller may use, as they may see them."""
        require_role(caller)
        return [
            c.to_public_dict(caller.view_role)
            for c in self.repo.list_connections()
            if can_use_connection(caller, c)
        ]

    def verify_connection(self, caller: Caller, name: str) -> Verified:
        """Check the connection's key and host with ActiveCampaign (``users/me``)."""
        authorize(caller, Action.VERIFY_CONNECTION)
        connection, _etag = self.repo.get_connection(name)
        self._client(connection).verify()
        return Verified(connection.name, connection.hostname, self._now())

    def delete_connection(
        self, caller: Caller, name: str, *, delete_secret: bool = False, force: bool = False
    ) -> DeletedConnection:
        """Delete a connection (administrators). Refused while exports use it unless ``force``.
        ``delete_secret`` also deletes its key (Key Vault), unless another connection uses it."""
        authorize(caller, Action.DELETE_CONNECTION)
        connection, _etag = self.repo.get_connection(name)
        if delete_secret and not is_generated_key_ref(connection.api_key_ref, name):
            raise ConfigError(
                "the connection's key is not a secret the exporter created for it: it is left "
                "alone (delete the connection without delete_secret; remove the secret yourself)",
                field="delete_secret",
            )
        orphaned = self.repo.exports_using(name)
        self.repo.delete_connection(name, force=force)
        shared = any(c.api_key_ref == connection.api_key_ref for c in self.repo.list_connections())
        if delete_secret and not shared:
            self.secrets.delete(connection.api_key_ref, owner=name)
        log.info("connection %s deleted by %s", name, who(caller))
        return DeletedConnection(name, orphaned, delete_secret and not shared)

    # --- exports -----------------------------------------------------------------------------

    def _usable_connection(self, caller: Caller, name: str, action: Action) -> Connection:
        try:
            connection, _etag = self.repo.get_connection(name)
        except NotFoundError:
            raise ConfigError(f"no connection named {name!r}", field="connection") from None
        authorize(caller, action, connection)
        return connection

    def _checked_against_account(self, connection: Connection, export: Export) -> Export:
        """The export with its list ID checked and custom fields resolved on the account."""
        return checked_against_account(self._client(connection), export)

    def create_export(self, caller: Caller, payload: Mapping[str, Any]) -> Saved:
        """Create an export: validated, its list ID checked and custom fields resolved on the
        account. Saving never runs it."""
        require_role(caller)
        data = as_dict(payload)
        now = self._now()
        data.update(created_by=caller.principal, created_at=now)
        data.update(updated_by=caller.principal, updated_at=now)
        export = self._tick_checked(parse_export(data))
        connection = self._usable_connection(caller, export.connection, Action.CREATE_EXPORT)
        require_open_segment(caller, connection, export)
        if self.repo.export_exists(export.name):
            raise ConflictError(f"an export named {export.name!r} exists already", field="name")
        export = self._checked_against_account(connection, export)
        etag = self.repo.put_export(export, create_only=True)
        log.info("export %s created by %s", export.name, who(caller))
        return Saved(export.to_public_dict(), etag)

    def update_export(
        self,
        caller: Caller,
        name: str,
        payload: Mapping[str, Any],
        *,
        if_match: str | None = None,
    ) -> Saved:
        """Change an export: the payload's fields replace the stored ones. The list and custom
        fields are checked again when the connection, list or field mapping changes."""
        require_role(caller)
        existing, etag = self.repo.get_export(name)
        authorize(caller, Action.UPDATE_EXPORT, self._connection_of(existing))
        changes = as_dict(payload)
        if changes.get("name", name) != name:
            raise ConfigErrors([ConfigError("an export cannot be renamed", field="name")])
        data = existing.model_dump(mode="json") | changes
        data.update(updated_by=caller.principal, updated_at=self._now())
        export = self._tick_checked(parse_export(data))
        connection = self._usable_connection(caller, export.connection, Action.UPDATE_EXPORT)
        if (export.segment, export.connection) != (existing.segment, existing.connection):
            require_open_segment(caller, connection, export)
        recheck = ("connection", "list_id", "fields")
        if any(getattr(export, k) != getattr(existing, k) for k in recheck):
            export = self._checked_against_account(connection, export)
        new_etag = self.repo.put_export(export, if_match=if_match or etag)
        log.info("export %s changed by %s", name, who(caller))
        return Saved(export.to_public_dict(), new_etag)

    def _tick_checked(self, export: Export) -> Export:
        if export.schedule:
            try:
                schedule_mod.check_not_finer_than(export.schedule, self.schedule_tick)
            except ConfigError as exc:
                raise ConfigErrors([exc]) from None
        return export

    def get_export(self, caller: Caller, name: str) -> Fetched:
        """An export the caller may see, and its ETag."""
        require_role(caller)
        export, etag = self.repo.get_export(name)
        authorize(caller, Action.VIEW_EXPORT, self._connection_of(export))
        return Fetched(export.to_public_dict(), etag)

    def list_exports(self, caller: Caller) -> list[dict[str, Any]]:
        """The exports the caller may see (contributors: those on connections allowing them)."""
        require_role(caller)
        usable = {c.name for c in self.repo.list_connections() if can_use_connection(caller, c)}
        return [
            e.to_public_dict()
            for e in self.repo.list_exports()
            if caller.is_admin or e.connection in usable
        ]

    def delete_export(
        self, caller: Caller, name: str, *, if_match: str | None = None
    ) -> DeletedExport:
        """Delete an export (always possible for a caller allowed on it) and its personal data:
        state (every address it sent), pending requests and run files; each run's report stays.
        The host then cancels its running run and stops its schedule."""
        require_role(caller)
        export, _etag = self.repo.get_export(name)
        authorize(caller, Action.DELETE_EXPORT, self._connection_of(export))
        self.repo.delete_export(name, if_match=if_match)
        removed = self.forget_export(name)
        log.info("export %s deleted by %s (%d data files removed)", name, who(caller), removed)
        return DeletedExport(export.name, export.connection)

    def forget_export(self, name: str) -> int:
        """Remove a deleted export's personal data (:func:`runs.forget_export`); the host calls
        it again once the export's runs are cancelled. Refused while the export exists."""
        if self.repo.export_exists(name):
            raise ConflictError(f"export {name!r} exists: delete it first", field="name")
        return runs.forget_export(self.repo.store, name)

    def authorize_run(self, caller: Caller, name: str) -> tuple[Export, Connection]:
        """The export and its connection, if the caller may run it now (enabled, connection
        present with consent, host allowed); raises otherwise. Never starts anything."""
        require_role(caller)
        export, _etag = self.repo.get_export(name)
        connection = self._usable_connection(caller, export.connection, Action.RUN_EXPORT)
        if not export.enabled:
            raise ConfigError(f"export {name!r} is disabled", field="enabled")
        connection.require_consent()
        check_hostname(connection.hostname, self.host_policy)
        return export, connection

    def account_choices(
        self, caller: Caller, name: str
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The account's lists and custom fields on connection ``name`` (:func:`choices`), for
        a caller who may build exports on it (saving checks the chosen ones again)."""
        connection = self._usable_connection(caller, name, Action.CREATE_EXPORT)
        return choices(self._client(connection))
