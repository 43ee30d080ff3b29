"""Turning the console's HTML forms into the management service's payloads, and the service's
validation errors back into messages at the form's fields.

Nothing is validated here: every rule (hostname policy, consent, list and field checks, schedule
limits) is the service's. This module only moves values between the two shapes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from exporter.errors import ConfigError, ConfigErrors, ExporterError
from exporter.management import schedule as schedule_mod

FormData = Mapping[str, Sequence[str]]
"""A form as lists of values per name (``request.form().multi_items()`` grouped)."""

ATTRIBUTE_KINDS = {
    "first_name": "First name",
    "last_name": "Last name",
    "phone": "Phone",
    "field": "Custom field",
    "tag_column": "Tags from a column",
}
"""What an "Add attribute" row may map a column to (``email`` is always there)."""


def first(form: FormData, name: str) -> str:
    values = form.get(name) or [""]
    return values[0].strip()


@dataclass
class FieldErrors:
    """Messages per form field; ``general`` holds those without a field of their own."""

    by_field: dict[str, list[str]] = field(default_factory=dict)
    general: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.by_field or self.general)

    def get(self, name: str) -> list[str]:
        return self.by_field.get(name, [])

    def add(self, name: str | None, message: str, known: Sequence[str]) -> None:
        target = _form_field(name, known)
        if target is None:
            self.general.append(f"{name}: {message}" if name else message)
        else:
            self.by_field.setdefault(target, []).append(message)


_FIELD_ALIASES = {
    "api_key_ref": "api_key",
    "max_shrink": "max_shrink_percent",
    "first_name": "attributes",
    "last_name": "attributes",
    "phone": "attributes",
    "tag_column": "attributes",
}


def _form_field(name: str | None, known: Sequence[str]) -> str | None:
    if not name:
        return None
    name = _FIELD_ALIASES.get(name, name)
    if name in known:
        return name
    head = name.replace("[", ".").split(".", 1)[0]  # fields.0.field -> the attribute rows
    if head == "fields" and "attributes" in known:
        return "attributes"
    return head if head in known else None


def errors_from(exc: ExporterError, known: Sequence[str]) -> FieldErrors:
    """The service's error as messages at the form's fields (the rest in ``general``)."""
    out = FieldErrors()
    if isinstance(exc, ConfigErrors):
        for error in exc.errors:
            out.add(error.field, error.detail, known)
    elif isinstance(exc, ConfigError):
        out.add(exc.field, exc.detail, known)
    else:
        out.general.append(str(exc))
    return out


# --- connections --------------------------------------------------------------------------------

CONNECTION_FIELDS = (
    "name",
    "display_name",
    "hostname",
    "api_key",
    "allow_contributors",
    "consent",
)


def connection_payload(form: FormData, *, creating: bool) -> tuple[dict[str, Any], str | None]:
    """The service payload and the typed API key (``None`` when left empty)."""
    payload: dict[str, Any] = {
        "display_name": first(form, "display_name"),
        "hostname": first(form, "hostname"),
        "allow_contributors": first(form, "allow_contributors") == "contributors",
    }
    if creating:
        payload["name"] = first(form, "name")
    if first(form, "consent") == "yes":
        payload["consent"] = True
    key = (form.get("api_key") or [""])[0].strip()
    return payload, key or None


# --- exports ------------------------------------------------------------------------------------

EXPORT_FIELDS = (
    "name",
    "display_name",
    "connection",
    "segment",
    "list_id",
    "email",
    "attributes",
    "tags",
    "schedule",
    "leaver_policy",
    "max_shrink_percent",
    "encoding",
    "enabled",
)


@dataclass
class Attribute:
    """One "Add attribute" row: a snapshot column sent to a contact attribute."""

    kind: str = ""
    column: str = ""
    target: str = ""
    """The custom field (id, title or %TAG%) for ``kind == "field"``."""


def attribute_rows(form: FormData) -> list[Attribute]:
    kinds, columns = form.get("attr_kind", []), form.get("attr_column", [])
    targets = form.get("attr_field", [])
    rows = []
    for i, kind in enumerate(kinds):
        column = columns[i].strip() if i < len(columns) else ""
        target = targets[i].strip() if i < len(targets) else ""
        rows.append(Attribute(kind.strip(), column, target))
    return rows


def rows_of_export(view: Mapping[str, Any]) -> list[Attribute]:
    """An export's attributes as rows for its edit form."""
    rows = [
        Attribute(kind, str(view[kind]))
        for kind in ("first_name", "last_name", "phone", "tag_column")
        if view.get(kind)
    ]
    rows += [Attribute("field", str(f["column"]), str(f["field"])) for f in view.get("fields", [])]
    return rows


def export_payload(form: FormData, *, creating: bool) -> dict[str, Any]:
    """The service payload of an export form (empty optional values are left out / cleared)."""
    payload: dict[str, Any] = {
        "display_name": first(form, "display_name"),
        "connection": first(form, "connection"),
        "segment": first(form, "segment"),
        "list_id": first(form, "list_id_typed") or first(form, "list_id"),
        "email": first(form, "email"),
        "schedule": first(form, "schedule") or None,
        "leaver_policy": first(form, "leaver_policy") or "unsubscribe",
        "encoding": first(form, "encoding") or "utf-8",
        "enabled": first(form, "enabled") != "no",
        "tags": [t.strip() for t in first(form, "tags").split(",") if t.strip()],
        "first_name": None,
        "last_name": None,
        "phone": None,
        "tag_column": None,
        "fields": [],
    }
    if creating:
        payload["name"] = first(form, "name")
    shrink = first(form, "max_shrink_percent")
    try:
        payload["max_shrink"] = float(shrink) / 100 if shrink else 0.2
    except ValueError:
        payload["max_shrink"] = shrink  # the service says what is wrong with it
    for row in attribute_rows(form):
        if not row.kind or not row.column:
            continue
        if row.kind == "field":
            payload["fields"].append({"column": row.column, "field": row.target})
        elif row.kind in ATTRIBUTE_KINDS:
            payload[row.kind] = row.column
    return payload


def next_times(expr: str | None, now: datetime, count: int = 5) -> tuple[list[datetime], str]:
    """The schedule's next ``count`` times (UTC), or the reason there are none."""
    if not expr:
        return [], "on demand and when a new snapshot arrives"
    times: list[datetime] = []
    try:
        at = now
        for _ in range(count):
            at = schedule_mod.next_after(expr, at)
            times.append(at)
    except (ConfigError, ValueError, KeyError) as exc:
        return [], str(exc)
    return times, ""
