"""What management asks of an ActiveCampaign account: the client it needs
(:class:`ClientLike`), an export's list and custom fields checked against the account, and the
account's lists and fields offered as choices (the console's forms)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from exporter.errors import ApiNotFound, ConfigError, ConfigErrors
from exporter.management.config import Export
from exporter.management.validation import raise_all, resolve_fields


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


def checked_against_account(client: ClientLike, export: Export) -> Export:
    """``export`` with its list ID checked and its custom fields resolved on the account;
    raises :class:`ConfigErrors` naming each field that does not hold there."""
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
    raise_all(errors)
    return export.model_copy(update={"fields": fields})


def choices(client: ClientLike) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The account's lists (``id``, ``name``) and custom fields (``id``, ``title``,
    ``perstag``), as strings."""
    iter_lists = getattr(client, "iter_lists", None)
    lists = [
        {"id": str(item.get("id", "")), "name": str(item.get("name", ""))}
        for item in (iter_lists() if callable(iter_lists) else [])
    ]
    fields = [
        {k: str(item.get(k, "")) for k in ("id", "title", "perstag")}
        for item in client.iter_fields()
    ]
    return lists, fields
