"""Checking what a connection or export payload says, before the service saves it: the API
key's shape, the hostname against the policy, recorded consent, a key written only to the
connection's own secret, and custom fields resolved against the account's fields. Pure
functions: no store, no network (the service passes in what the account answered)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from exporter.errors import ConfigError, ConfigErrors, PermissionDenied
from exporter.management.config import (
    Connection,
    Consent,
    Export,
    FieldMap,
    parse_connection,
)
from exporter.management.hostnames import normalise_hostname
from exporter.management.permissions import Caller
from exporter.management.secret_names import is_generated_key_ref
from exporter.masking import mask_email
from exporter.settings import HostPolicy

SERVER_FIELDS = ("created_by", "created_at", "updated_by", "updated_at")
"""Set by the service, whatever a payload says (a round-tripped document may carry them)."""


def who(caller: Caller) -> str:
    return mask_email(caller.principal) if "@" in caller.principal else caller.principal


def as_dict(payload: object) -> dict[str, Any]:
    if not isinstance(payload, Mapping):
        raise ConfigErrors([ConfigError("expected a JSON object")])
    return {k: v for k, v in payload.items() if k not in SERVER_FIELDS}


def data_consent(connection: Connection) -> object:
    """The stored consent as JSON (a round-tripped document carries it unchanged)."""
    return None if connection.consent is None else connection.consent.model_dump(mode="json")


def agreed(value: object) -> bool:
    if value is True:
        return True
    return isinstance(value, Mapping) and value.get("agreed") is True


def raise_all(errors: list[ConfigError]) -> None:
    if errors:
        raise ConfigErrors(errors)


def check_api_key(api_key: str | None) -> list[ConfigError]:
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
    raise_all(errors)
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


def checked_hostname(
    data: dict[str, Any], errors: list[ConfigError], policy: HostPolicy
) -> list[str]:
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


def checked_connection(data: dict[str, Any], errors: list[ConfigError]) -> Connection:
    """The connection, with every field error at once (the ones found before included)."""
    try:
        connection = parse_connection(data)
    except ConfigErrors as exc:
        taken = {e.field for e in errors}
        errors.extend(e for e in exc.errors if e.field not in taken)
        raise_all(errors)
        raise
    raise_all(errors)
    return connection


def require_own_key_ref(connection: Connection, api_key: str | None) -> None:
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


def consent_record(caller: Caller, now: datetime) -> dict[str, Any]:
    return Consent(agreed=True, by=caller.principal, at=now).model_dump(mode="json")


def consent_change(
    existing: Connection,
    changes: Mapping[str, Any],
    caller: Caller,
    now: datetime,
    errors: list[ConfigError],
) -> dict[str, Any]:
    """What an update does to a connection's consent: a new agreement is recorded (who, when);
    withdrawing it, or pointing the connection at another host without agreeing again, is an
    error (added to ``errors``)."""
    if "consent" in changes and changes["consent"] != data_consent(existing):
        if not agreed(changes["consent"]):
            errors.append(
                ConfigError("consent cannot be withdrawn; delete the connection", field="consent")
            )
        return {"consent": consent_record(caller, now)}
    if changes.get("hostname", existing.hostname) != existing.hostname:
        errors.append(
            ConfigError(
                "the destination changed: agree to the data privacy statement again",
                field="consent",
            )
        )
    return {}


def require_open_segment(caller: Caller, connection: Connection, export: Export) -> None:
    """Contributors' exports read only the folders the connection opens to them (the same rule
    when an export is created and when its segment or connection changes)."""
    if caller.is_admin or connection.open_to_contributors(export.segment):
        return
    folders = ", ".join(connection.contributor_segments)
    raise PermissionDenied(
        f"on connection {connection.name!r} contributors may export only segments under "
        f"{folders}; an administrator can open more"
    )
