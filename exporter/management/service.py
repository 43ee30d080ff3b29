"""Managing connections and exports: the one code path behind the CLI and the HTTP API.

Both front ends are thin: they turn arguments or a request into a :class:`Caller` and a payload,
call :class:`ManagementService`, and render what it returns (or the error it raises). Every
business rule lives here: who may do what (:mod:`exporter.management.permissions`), hostname policy,
recorded consent, ETag concurrency, checking the list ID and resolving custom fields against the
account when an export is saved. Saving an export never runs it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from exporter.errors import (
    ApiNotFound,
    ConfigError,
    ConfigErrors,
    ConflictError,
    ExporterError,
    NotFoundError,
    PermissionDenied,
)
from exporter.management import schedule as schedule_mod
from exporter.management.config import (
    Connection,
    Consent,
    Export,
    FieldMap,
    missing_consent,
    parse_connection,
    parse_export,
)
from exporter.management.hostnames import check_hostname, normalise_hostname
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
from exporter.masking import mask_email
from exporter.settings import HostPolicy
from exporter.storage import runs

log = logging.getLogger(__name__)

SERVER_FIELDS = ("created_by", "created_at", "updated_by", "updated_at")
"""Set by the service, whatever a payload says (a round-tripped document may carry them)."""


class ClientLike(Protocol):
    """What management needs of an ActiveCampaign client (``ActiveCampaignClient`` has it)."""

    def verify(self) -> object:
        """Check the key and host (``GET /api/3/users/me``)."""
        ...

    def get_list(self, list_id: str) -> object:
        """The list; raises :class:`exporter.errors.ApiNotFound` for an unknown ID."""
        ...

    def iter_fields(self) -> Iterable[Mapping[str, Any]]:
        """Every custom field (``id``, ``title``, ``perstag``, ``type``), across all pages."""
        ...


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


def _who(caller: Caller) -> str:
    return mask_email(caller.principal) if "@" in caller.principal else caller.principal


def _as_dict(payload: object) -> dict[str, Any]:
    if not isinstance(payload, Mapping):
        raise ConfigErrors([ConfigError("expected a JSON object")])
    return {k: v for k, v in payload.items() if k not in SERVER_FIELDS}


def data_consent(connection: Connection) -> object:
    """The stored consent as JSON (a round-tripped document carries it unchanged)."""
    return None if connection.consent is None else connection.consent.model_dump(mode="json")


def _agreed(value: object) -> bool:
    if value is True:
        return True
    return isinstance(value, Mapping) and value.get("agreed") is True


def _raise_all(errors: list[ConfigError]) -> None:
    if errors:
        raise ConfigErrors(errors)


def _check_api_key(api_key: str | None) -> list[ConfigError]:
    if api_key is None:
        return []
    if not api_key.strip() or any(ch.isspace() for ch in api_key.strip()):
        return [ConfigError("must be the API key, without spaces", field="api_key")]
    return []


def resolve_fields(maps: list[FieldMap], available: Iterable[Mapping[str, Any]]) -> list[FieldMap]:
    """Fill in ``field_id``/``field_type`` of each mapping from the account's custom fields.

    ``available`` must cover every page of ``/fields`` (reading only the first 20 is the classic
    integration bug). A mapping names a field by id, personalisation tag (with or without the
    ``%``) or title (case-insensitive). Raises :class:`ConfigErrors` naming each mapping that
    matches no field, or several.
    """
    fields = list(available)
    errors: list[ConfigError] = []
    resolved: list[FieldMap] = []
    claimed: dict[str, int] = {}
    for i, fm in enumerate(maps):
        where = f"fields.{i}.field"
        matches = _match_field(fm.field, fields)
        if not matches:
            errors.append(
                ConfigError(
                    f"no custom field has the ID, title or personalisation tag {fm.field!r} "
                    f"({len(fields)} fields on the account)",
                    field=where,
                )
            )
            continue
        if len(matches) > 1:
            ids = ", ".join(str(m["id"]) for m in matches)
            errors.append(
                ConfigError(
                    f"{fm.field!r} matches several fields (IDs {ids}); use an ID", field=where
                )
            )
            continue
        found = matches[0]
        field_id = str(found["id"])
        if field_id in claimed:
            errors.append(
                ConfigError(
                    f"the same field as fields.{claimed[field_id]} (ID {field_id})", field=where
                )
            )
            continue
        claimed[field_id] = i
        resolved.append(
            fm.model_copy(update={"field_id": field_id, "field_type": _str(found.get("type"))})
        )
    _raise_all(errors)
    return resolved


def _str(value: object) -> str | None:
    return None if value is None else str(value)


def _match_field(wanted: str, fields: list[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    key = wanted.strip()
    if key.isdigit():
        by_id = [f for f in fields if str(f.get("id")) == key]
        if by_id:
            return by_id
    tag = key.strip("%").casefold()
    by_tag = [f for f in fields if str(f.get("perstag") or "").strip("%").casefold() == tag]
    if by_tag:
        return by_tag
    return [f for f in fields if str(f.get("title") or "").casefold() == key.casefold()]


def _hostname(data: dict[str, Any], errors: list[ConfigError], policy: HostPolicy) -> list[str]:
    """Normalise the ``hostname`` of a connection payload in place; notes for the caller."""
    raw = data.get("hostname")
    if not isinstance(raw, str):
        return []
    try:
        data["hostname"], notes = normalise_hostname(raw, policy)
    except ConfigError as exc:
        errors.append(exc)
        data.pop("hostname")
        return []
    return notes


def _parse_connection(data: dict[str, Any], errors: list[ConfigError]) -> Connection:
    """The connection, with every field error at once (the ones found before included)."""
    try:
        connection = parse_connection(data)
    except ConfigErrors as exc:
        taken = {e.field for e in errors}
        errors.extend(e for e in exc.errors if e.field not in taken)
        _raise_all(errors)
        raise
    _raise_all(errors)
    return connection


def _require_own_key_ref(connection: Connection, api_key: str | None) -> None:
    """A key sent with a connection is stored only under a name the app generates for that
    connection: pointing ``api_key_ref`` at an operator's or another connection's secret and
    sending ``api_key`` would overwrite it. (Referring to such a secret without a key is fine:
    it is only read.)"""
    if api_key is not None and not is_generated_key_ref(connection.api_key_ref, connection.name):
        raise ConfigErrors(
            [
                ConfigError(
                    "a key sent with api_key is stored only in a secret the exporter creates for "
                    "this connection: leave api_key_ref out (a name is made) or keep the key in "
                    "your own secret and send no api_key",
                    field="api_key_ref",
                )
            ]
        )


def _consent(caller: Caller, now: datetime) -> dict[str, Any]:
    return Consent(agreed=True, by=caller.principal, at=now).model_dump(mode="json")


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
        verify: bool = False,
    ) -> Saved:
        """Create a connection (administrators). The hostname is normalised (notes say how),
        consent must be given (``"consent": true``) and is recorded with the caller and time.
        ``api_key`` is stored via the secret provider under ``api_key_ref``; with ``verify``
        the key and host are checked against ActiveCampaign before anything is saved."""
        authorize(caller, Action.CREATE_CONNECTION)
        data = _as_dict(payload)
        errors = _check_api_key(api_key)
        notes = _hostname(data, errors, self.host_policy)
        now = self._now()
        if _agreed(data.pop("consent", None)):
            data["consent"] = _consent(caller, now)
        else:
            errors.append(missing_consent())
        data.update(created_by=caller.principal, created_at=now)
        data.update(updated_by=caller.principal, updated_at=now)
        connection = _parse_connection(data, errors)
        _require_own_key_ref(connection, api_key)
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
        log.info("connection %s created by %s", connection.name, _who(caller))
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
    ) -> Saved:
        """Change a connection (administrators): the payload's fields replace the stored ones.
        Pointing it at another host needs fresh consent; ``api_key`` replaces the stored key."""
        authorize(caller, Action.UPDATE_CONNECTION)
        existing, etag = self.repo.get_connection(name)
        changes = _as_dict(payload)
        errors = _check_api_key(api_key)
        if changes.get("name", name) != name:
            errors.append(ConfigError("a connection cannot be renamed", field="name"))
        notes = _hostname(changes, errors, self.host_policy)
        now = self._now()
        data = existing.model_dump(mode="json") | changes
        if "consent" in changes and changes["consent"] != data_consent(existing):
            if not _agreed(changes["consent"]):
                errors.append(
                    ConfigError(
                        "consent cannot be withdrawn; delete the connection", field="consent"
                    )
                )
            data["consent"] = _consent(caller, now)
        elif changes.get("hostname", existing.hostname) != existing.hostname:
            errors.append(
                ConfigError(
                    "the destination changed: agree to the data privacy statement again",
                    field="consent",
                )
            )
        data.update(updated_by=caller.principal, updated_at=now)
        connection = _parse_connection(data, errors)
        _require_own_key_ref(connection, api_key)
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
        log.info("connection %s changed by %s", name, _who(caller))
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
        log.info("connection %s deleted by %s", name, _who(caller))
        return DeletedConnection(name, orphaned, delete_secret and not shared)

    # --- exports -----------------------------------------------------------------------------

    def _usable_connection(self, caller: Caller, name: str, action: Action) -> Connection:
        try:
            connection, _etag = self.repo.get_connection(name)
        except NotFoundError:
            raise ConfigError(f"no connection named {name!r}", field="connection") from None
        authorize(caller, action, connection)
        return connection

    @staticmethod
    def _segment_allowed(caller: Caller, connection: Connection, export: Export) -> None:
        """Contributors' exports read only the folders the connection opens to them (the same
        rule when an export is created and when its segment or connection changes)."""
        if caller.is_admin or connection.open_to_contributors(export.segment):
            return
        folders = ", ".join(connection.contributor_segments)
        raise PermissionDenied(
            f"on connection {connection.name!r} contributors may export only segments under "
            f"{folders}; an administrator can open more"
        )

    def _checked_against_account(self, connection: Connection, export: Export) -> Export:
        """The export with its list ID checked and custom fields resolved on the account."""
        client = self._client(connection)
        errors: list[ConfigError] = []
        try:
            client.get_list(export.list_id)
        except ApiNotFound:
            errors.append(
                ConfigError(
                    f"ActiveCampaign has no list with ID {export.list_id} on this account",
                    field="list_id",
                )
            )
        fields = export.fields
        if export.fields:
            try:
                fields = resolve_fields(export.fields, client.iter_fields())
            except ConfigErrors as exc:
                errors.extend(exc.errors)
        _raise_all(errors)
        return export.model_copy(update={"fields": fields})

    def create_export(self, caller: Caller, payload: Mapping[str, Any]) -> Saved:
        """Create an export: validated, its list ID checked and custom fields resolved on the
        account. Saving never runs it."""
        require_role(caller)
        data = _as_dict(payload)
        now = self._now()
        data.update(created_by=caller.principal, created_at=now)
        data.update(updated_by=caller.principal, updated_at=now)
        export = self._tick_checked(parse_export(data))
        connection = self._usable_connection(caller, export.connection, Action.CREATE_EXPORT)
        self._segment_allowed(caller, connection, export)
        if self.repo.export_exists(export.name):
            raise ConflictError(f"an export named {export.name!r} exists already", field="name")
        export = self._checked_against_account(connection, export)
        etag = self.repo.put_export(export, create_only=True)
        log.info("export %s created by %s", export.name, _who(caller))
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
        changes = _as_dict(payload)
        if changes.get("name", name) != name:
            raise ConfigErrors([ConfigError("an export cannot be renamed", field="name")])
        data = existing.model_dump(mode="json") | changes
        data.update(updated_by=caller.principal, updated_at=self._now())
        export = self._tick_checked(parse_export(data))
        connection = self._usable_connection(caller, export.connection, Action.UPDATE_EXPORT)
        if (export.segment, export.connection) != (existing.segment, existing.connection):
            self._segment_allowed(caller, connection, export)
        recheck = ("connection", "list_id", "fields")
        if any(getattr(export, k) != getattr(existing, k) for k in recheck):
            export = self._checked_against_account(connection, export)
        new_etag = self.repo.put_export(export, if_match=if_match or etag)
        log.info("export %s changed by %s", name, _who(caller))
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
        log.info("export %s deleted by %s (%d data files removed)", name, _who(caller), removed)
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
