"""Connections and exports: the configuration users create, validated field by field.

A **connection** says which ActiveCampaign account to talk to (its REST endpoint hostname and a
*reference* to where its API key is kept: never the key), who may use it, and who agreed to send
data to ActiveCampaign and when. An **export** says which segment snapshots go to which list,
how snapshot columns map to contact fields, and when it runs. Saving an export never runs it.

Unknown keys are refused (a typo must not be silently ignored). Every validation problem is
reported as :class:`exporter.errors.ConfigErrors`, one :class:`ConfigError` per field with a
dotted ``field`` path (``fields.0.column``), so HTTP 400 bodies and CLI messages can point at
it. Messages never repeat the input: a key pasted into the wrong box must not be echoed back.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from exporter.errors import ConfigError, ConfigErrors, SecretError
from exporter.management import schedule as schedule_mod
from exporter.management.permissions import ADMIN
from exporter.management.secrets import parse_ref

_SLUG = re.compile(r"[a-z0-9](?:[a-z0-9-]{1,61}[a-z0-9])")
_DIGITS = re.compile(r"[0-9]{1,20}")
_GLOB_CHARS = frozenset("*?[")
_SEGMENT_CHARS = re.compile(r"[A-Za-z0-9._\-/*?\[\]=!@+,;~ ]+")


def _slug(value: str) -> str:
    if not _SLUG.fullmatch(value):
        raise ValueError(
            "must be 3-63 characters of lower-case letters, digits and '-', "
            "starting and ending with a letter or digit"
        )
    return value


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _hostname_form(value: str) -> str:
    # The policy check (which hosts may receive a key) needs the operator's HostPolicy and
    # happens in exporter.management.hostnames; here only the stored form is enforced.
    if not re.fullmatch(r"[a-z0-9.\-]+(:[0-9]{1,5})?|\[::1\]:[0-9]{1,5}", value):
        raise ValueError("must be a hostname only (no https://, path or spaces)")
    return value


def _secret_ref(value: str) -> str:
    try:
        parse_ref(value)
    except SecretError as exc:
        raise ValueError(str(exc)) from None
    return value


def _list_id(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


def _digits(value: str) -> str:
    if not _DIGITS.fullmatch(value) or int(value) == 0:
        raise ValueError("must be the list's numeric ID (digits only), e.g. 3")
    return value


def _schedule(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return schedule_mod.validate(value)
    except ConfigError as exc:
        raise ValueError(exc.detail) from None


SNAPSHOTS = "snapshots/"
"""Where snapshots live in the store (the ``snapshots`` container)."""


MAX_PATH_PART_BYTES = 255
"""Longest folder or file name in a snapshot path (what a local store's file system holds)."""


def snapshot_path(value: str) -> str:
    """A store path under ``snapshots/``: the one rule for every snapshot path a host hands
    the core (an export's segment, a snapshot named in a run request, a blob the trigger
    reports). It is the store's own path rule, so a path it accepts is one the store can read:
    no empty, ``.`` or ``..`` parts (a trailing ``/`` names a folder), no part over 255 bytes, no
    backslash, no control character. Raises :class:`ValueError` (a validator);
    :func:`check_snapshot_path` raises :class:`ConfigError`."""
    rest = value.removeprefix(SNAPSHOTS)
    if rest == value or not rest:
        raise ValueError("must be a store path under snapshots/, e.g. snapshots/high-value/")
    if "\\" in value or not value.isprintable():
        raise ValueError("contains a backslash or a control character")
    parts = rest.split("/")
    if any(part in ("", ".", "..") for part in parts[:-1]) or parts[-1] in (".", ".."):
        raise ValueError("must not contain empty, '.' or '..' path segments")
    if any(len(part.encode()) > MAX_PATH_PART_BYTES for part in parts):
        raise ValueError(f"a path segment is longer than {MAX_PATH_PART_BYTES} bytes")
    return value


def check_snapshot_path(value: str, *, field: str | None = "snapshot") -> str:
    """:func:`snapshot_path` for callers outside a model: :class:`ConfigError` naming ``field``
    (the message never repeats the path: it is user input)."""
    try:
        return snapshot_path(value)
    except ValueError as exc:
        raise ConfigError(str(exc), field=field) from None


_ASCII_PROBE = 'a,;\t|"\r\n'


def text_encoding(value: str) -> str:
    """A snapshot's text encoding by its codec name (``cp1252``, ``utf-8``, ``iso8859-1``): one
    Python knows and that writes ASCII as ASCII (the CSV reader finds delimiters, quotes and
    line ends as bytes), so UTF-16 and the like are refused."""
    try:
        info = codecs.lookup(value.strip())
    except LookupError:
        raise ValueError("is not a known text encoding (e.g. utf-8, cp1252, latin-1)") from None
    try:
        ascii_safe = _ASCII_PROBE.encode(info.name) == _ASCII_PROBE.encode("ascii")
    except (LookupError, TypeError, ValueError):
        ascii_safe = False
    if not ascii_safe or not getattr(info, "_is_text_encoding", True):
        raise ValueError("must be an ASCII-compatible text encoding (e.g. utf-8, cp1252, latin-1)")
    return info.name


def _segment(value: str) -> str:
    # A segment is typed by a person and may be a glob: besides the path rule, a conservative
    # character set keeps patterns readable and free of characters that mean something else.
    snapshot_path(value)
    if not _SEGMENT_CHARS.fullmatch(value.removeprefix(SNAPSHOTS)):
        raise ValueError("contains characters that are not allowed in a segment")
    return value


def _segment_folder(value: str) -> str:
    # A folder contributors may take segments from: a segment without wildcards, kept with
    # its trailing "/" so "snapshots/team-a/" never admits "snapshots/team-ab/".
    _segment(value)
    if _GLOB_CHARS.intersection(value):
        raise ValueError("must be a folder under snapshots/, without wildcards")
    return value if value.endswith("/") else value + "/"


Slug = Annotated[str, AfterValidator(_slug)]
Text = Annotated[str, Field(min_length=1, max_length=200)]
Column = Annotated[str, Field(min_length=1, max_length=500)]
Timestamp = Annotated[datetime, AfterValidator(_utc)]

_MODEL_CONFIG = ConfigDict(extra="forbid", str_strip_whitespace=True, validate_assignment=True)


class Consent(BaseModel):
    """The recorded agreement to the data privacy and compliance statement.

    Sending segment data to ActiveCampaign moves personal data outside the source system's
    compliance boundary; a connection cannot be saved or used until someone agreed.
    """

    model_config = _MODEL_CONFIG

    agreed: Literal[True] = Field(description="Always true: there is no consent without it.")
    by: Text = Field(description="Principal (user) who agreed.")
    at: Timestamp = Field(description="When they agreed (UTC).")


CONSENT_STATEMENT = (
    "Sending data to ActiveCampaign moves it, possibly including personal data, outside the "
    "compliance boundary of the system it comes from. You are responsible for ActiveCampaign "
    "meeting your organisation's obligations."
)
"""The statement a user agrees to when they create a connection."""


def missing_consent() -> ConfigError:
    """The error for a connection without recorded consent."""
    return ConfigError(
        "you must agree to the data privacy and compliance statement before this connection "
        f"can be saved or used: {CONSENT_STATEMENT}",
        field="consent",
    )


class Connection(BaseModel):
    """An ActiveCampaign account the exporter may send contacts to."""

    model_config = _MODEL_CONFIG

    name: Slug = Field(description="Identifier used in paths and commands (a slug).")
    display_name: Text = Field(description="A recognisable name shown to users.")
    type: Literal["activecampaign"] = Field(
        default="activecampaign", description="Destination type; only ActiveCampaign exists."
    )
    hostname: Annotated[str, AfterValidator(_hostname_form)] = Field(
        description="The account's REST endpoint hostname only, e.g. acct.api-us1.com."
    )
    api_key_ref: Annotated[str, AfterValidator(_secret_ref)] = Field(
        description="Where the API key is kept: env:NAME, file:/path or keyvault:NAME. "
        "Never the key itself."
    )
    allow_contributors: bool = Field(
        default=False,
        description="Whether contributors may build exports on it (administrators only if not).",
    )
    contributor_segments: list[Annotated[str, AfterValidator(_segment_folder)]] = Field(
        default_factory=list,
        max_length=100,
        description="Folders under snapshots/ that contributors' exports on this connection may "
        "read (their segments must lie inside one); empty: any segment.",
    )
    consent: Consent | None = Field(
        default=None, description="Who agreed to the data privacy statement, and when."
    )
    created_by: str | None = Field(default=None, description="Principal who created it.")
    created_at: Timestamp | None = Field(default=None, description="When it was created (UTC).")
    updated_by: str | None = Field(default=None, description="Principal who last changed it.")
    updated_at: Timestamp | None = Field(default=None, description="When it last changed (UTC).")

    def open_to_contributors(self, segment: str) -> bool:
        """Whether a contributor's export on this connection may read ``segment``."""
        if not self.contributor_segments:
            return True
        folder = segment.rstrip("/") + "/"
        return any(folder.startswith(allowed) for allowed in self.contributor_segments)

    def require_consent(self) -> Consent:
        """The consent, or a :class:`ConfigError` saying it is missing."""
        if self.consent is None:
            raise missing_consent()
        return self.consent

    def to_public_dict(self, role: str) -> dict[str, Any]:
        """What ``role`` may see: administrators everything (there is no key in the model),
        anyone else only the name, display name and type."""
        if role == ADMIN:
            return self.model_dump(mode="json")
        return {"name": self.name, "display_name": self.display_name, "type": self.type}


class FieldMap(BaseModel):
    """One snapshot column sent to one ActiveCampaign custom field."""

    model_config = _MODEL_CONFIG

    column: Column = Field(description="The snapshot column holding the value.")
    field: Text = Field(
        description="The custom field: its id, its title or its personalisation tag (%TAG%)."
    )
    field_id: str | None = Field(
        default=None, description="The field's id, filled in when the export is saved."
    )
    field_type: str | None = Field(
        default=None, description="The field's type (text, date, ...), filled in when saved."
    )


class Export(BaseModel):
    """Which segment snapshots go to which list, mapped how, and when."""

    model_config = _MODEL_CONFIG

    name: Slug = Field(description="Identifier used in paths and commands (a slug).")
    display_name: Text = Field(description="A recognisable name shown to users.")
    connection: Slug = Field(description="Name of the connection it sends through.")
    segment: Annotated[str, AfterValidator(_segment)] = Field(
        description="Which snapshot files: a store prefix such as snapshots/high-value/ (every "
        "file under it), one file, or a glob such as snapshots/high-value/*.csv "
        "('*' stays within a folder, '**' crosses folders)."
    )
    list_id: Annotated[str, BeforeValidator(_list_id), AfterValidator(_digits)] = Field(
        description="The ActiveCampaign list ID (digits)."
    )
    email: Column = Field(description="Column holding the email address (required).")
    first_name: Column | None = Field(default=None, description="Column for the first name.")
    last_name: Column | None = Field(default=None, description="Column for the last name.")
    phone: Column | None = Field(default=None, description="Column for the phone number.")
    fields: list[FieldMap] = Field(
        default_factory=list, description="Columns sent to custom fields."
    )
    tags: list[Text] = Field(default_factory=list, description="Tags added to every contact.")
    tag_column: Column | None = Field(
        default=None, description="Column whose values are added as tags ('||'-separated)."
    )
    profile_id_column: Column | None = Field(
        default=None, description="Column with the source's profile id (for reports)."
    )
    schedule: Annotated[str | None, AfterValidator(_schedule)] = Field(
        default=None,
        description="When it runs: 6-field NCRONTAB in UTC, e.g. '0 0 2 * * *'. "
        "None: on demand and when a snapshot arrives.",
    )
    exclude_automations: bool = Field(
        default=True, description="Stop ActiveCampaign automations firing for imported contacts."
    )
    enabled: bool = Field(default=True, description="Disabled exports never run.")
    encoding: Annotated[str, AfterValidator(text_encoding)] = Field(
        default="utf-8",
        description="The snapshots' text encoding: utf-8 (with or without BOM), or e.g. cp1252 "
        "for Windows-1252/Latin-1 files (never guessed; run --encoding overrides it once).",
    )
    leaver_policy: Literal["unsubscribe", "keep"] = Field(
        default="unsubscribe",
        description="People who left the segment: unsubscribe them from the list (only those "
        "this export subscribed), or keep them.",
    )
    max_shrink: float = Field(
        default=0.2,
        ge=0.0,
        le=1.0,
        description="Shrink guard: refuse a run that would unsubscribe more than this share of "
        "the list's members from this export (0..1).",
    )
    created_by: str | None = Field(default=None, description="Principal who created it.")
    created_at: Timestamp | None = Field(default=None, description="When it was created (UTC).")
    updated_by: str | None = Field(default=None, description="Principal who last changed it.")
    updated_at: Timestamp | None = Field(default=None, description="When it last changed (UTC).")

    @field_validator("fields")
    @classmethod
    def _distinct_fields(cls, value: list[FieldMap]) -> list[FieldMap]:
        seen: set[str] = set()
        for item in value:
            key = item.field.casefold()
            if key in seen:
                raise ValueError(f"custom field {item.field!r} is mapped twice")
            seen.add(key)
        return value

    def to_public_dict(self) -> dict[str, Any]:
        """The export as JSON (everyone who may see an export may see all of it)."""
        return self.model_dump(mode="json")

    def segment_matches(self, path: str) -> bool:
        """Whether a store path belongs to this export's segment."""
        if not _GLOB_CHARS.intersection(self.segment):
            folder = self.segment if self.segment.endswith("/") else self.segment + "/"
            return path == self.segment or path.startswith(folder)
        return _glob_regex(self.segment).fullmatch(path) is not None


def _glob_regex(pattern: str) -> re.Pattern[str]:
    out: list[str] = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if ch == "*":
            out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "[" and "]" in pattern[i + 1 :]:
            end = pattern.index("]", i + 1)
            body = pattern[i + 1 : end].replace("\\", "\\\\")
            out.append("[^" + body[1:] + "]" if body.startswith("!") else "[" + body + "]")
            i = end
        else:
            out.append(re.escape(ch))
        i += 1
    suffix = ".*" if pattern.endswith("/") else ""
    return re.compile("".join(out) + suffix)


# --- Turning pydantic's errors into ours -----------------------------------------------------


def _message(error: Mapping[str, Any]) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "missing":
        return "is required"
    msg = str(error["msg"])
    return msg.removeprefix("Value error, ")


def config_errors(exc: ValidationError, *, prefix: str = "") -> ConfigErrors:
    """One :class:`ConfigError` per problem, each naming its field (never the input)."""
    errors = []
    for error in exc.errors(include_url=False, include_input=False, include_context=False):
        path = ".".join(str(part) for part in error["loc"])
        field = f"{prefix}{path}" if path else (prefix.rstrip(".") or None)
        errors.append(ConfigError(_message(error), field=field))
    return ConfigErrors(errors)


def _as_object(payload: object) -> Mapping[str, Any]:
    if not isinstance(payload, Mapping):
        raise ConfigErrors([ConfigError("expected a JSON object")])
    return payload


def parse_connection(payload: object) -> Connection:
    """A :class:`Connection` from a JSON-like payload, or :class:`ConfigErrors`."""
    try:
        return Connection.model_validate(_as_object(payload))
    except ValidationError as exc:
        # "from None": pydantic's own error text would include the input (maybe a key).
        raise config_errors(exc) from None


def parse_export(payload: object) -> Export:
    """An :class:`Export` from a JSON-like payload, or :class:`ConfigErrors`."""
    try:
        return Export.model_validate(_as_object(payload))
    except ValidationError as exc:
        raise config_errors(exc) from None


def check_name(name: str, *, field: str = "name") -> str:
    """A valid object name (slug) or :class:`ConfigError`; keeps store paths well-formed."""
    try:
        return _slug(name)
    except ValueError as exc:
        raise ConfigError(str(exc), field=field) from None
