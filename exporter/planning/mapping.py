"""Column mapping, validation and value formatting: a snapshot row becomes a contact.

:class:`Mapper` binds a :class:`MappingSpec` to a snapshot's columns once (case-insensitively,
header whitespace trimmed) and then turns each row into a
:class:`~exporter.planning.contacts.PreparedContact` or a
:class:`~exporter.planning.contacts.Rejection`. The hot
path works on the row's list with pre-computed indexes and builds the contact's JSON by string
concatenation that is byte-identical to :func:`exporter.planning.contacts.dumps` of the same
object
(``tests/test_mapping.py`` checks this), so every row is serialised exactly once.

Decisions:

* **Email**: trimmed; ASCII local part of the RFC 5322 ``atext`` characters with single dots
  (no leading/trailing/consecutive dots), at most 64 characters; a domain of LDH labels with an
  alphabetic (or ``xn--``) top-level label; at most 254 characters in all. A non-ASCII local
  part is rejected (``invalid_email``, ActiveCampaign does not accept it). A non-ASCII
  (internationalised) domain is IDNA-encoded (UTS #46, IDNA 2008, so ``straße.de`` stays
  ``xn--strae-oqa.de`` rather than becoming ``strasse.de``) and then validated.
* **Key**: the email as sent, lower-cased (ASCII, after validation).
* **Empty values are not sent**: an empty name, phone, custom field or tag is omitted.
* **Dates** (``date`` fields) are sent as ``YYYY-MM-DD``. Accepted inputs: ``YYYY-MM-DD``,
  ``YYYY/MM/DD``, ``YYYY.MM.DD``, those followed by an ISO 8601 time (``T`` or space; the
  calendar date *as written* is kept, no time-zone conversion), ``YYYYMMDD`` and
  ``DD.MM.YYYY``. Slashed day-first/month-first forms (``01/02/2024``) are ambiguous and
  rejected. ``datetime`` fields accept ISO 8601 and are sent as ``YYYY-MM-DDTHH:MM:SS`` (plus the
  offset when one was given). Unparseable values reject the row (``invalid_field_value``, naming
  the column).
* **Multi-value** fields (``multiselect``, ``checkbox``, ``listbox``): values split on ``||``
  when present, else on ``,`` ``;`` ``|``; trimmed, empties dropped, joined with ``||``.
* **Numbers** (``number``, ``currency``): an optional sign, digits and one decimal separator
  (``.`` or ``,``, sent as ``.``); anything else rejects the row.
* A row with *fewer* values than the header reads the missing trailing values as empty (a
  producer that trims trailing empty fields); a row with *more* values is rejected
  (``ragged_row``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from hashlib import blake2b as _blake2b
from json.encoder import encode_basestring as _json_str  # the encoder ``dumps`` itself uses
from typing import Any

import idna

from exporter.errors import ConfigError, InputError
from exporter.planning.contacts import PreparedContact, Rejection

FIELD_TYPES = frozenset(
    {
        "text",
        "textarea",
        "date",
        "datetime",
        "dropdown",
        "multiselect",
        "radio",
        "checkbox",
        "listbox",
        "hidden",
        "number",
        "currency",
    }
)
"""ActiveCampaign custom-field types a :class:`FieldMapping` may name."""

MAX_EMAIL = 254
MAX_LOCAL = 64
UNPACK_COLUMNS = 16
"""Rows of at most this many columns are unpacked whole by the mapper; wider ones indexed."""

_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_EMAIL_RE = re.compile(
    rf"{_ATEXT}+(?:\.{_ATEXT}+)*@(?:{_LABEL}\.)+(?:[A-Za-z]{{2,63}}|xn--[A-Za-z0-9-]{{1,59}})"
)
_email_ok = _EMAIL_RE.fullmatch
# The same language as _EMAIL_RE for the common shapes (alphabetic top-level label), written
# with possessive quantifiers so it never backtracks: about twice as fast. Only used on
# addresses of at most MAX_LOCAL characters, which bounds every label and the local part, so
# a match here is always a match of _EMAIL_RE; anything else takes the full check.
_email_fast = re.compile(
    rf"{_ATEXT}++(?:\.{_ATEXT}++)*+@(?:[A-Za-z0-9]++(?:-++[A-Za-z0-9]++)*+\.)++[A-Za-z]{{2,63}}+"
).fullmatch
# A blake2b with digest_size=8 and no data, copied per contact: copy + update is cheaper than
# the constructor and gives the same digest as exporter.planning.contacts.fingerprint.
_BLAKE2B_8 = _blake2b(digest_size=8)
# What the JSON string encoder (``ensure_ascii=False``) escapes: a text without any of these
# is its own JSON string body.
_NEEDS_ESCAPE = re.compile(r'[\x00-\x1f"\\]').search


def needs_escape(text: str) -> bool:
    """Whether ``text`` differs from its JSON string body (``dumps(text)[1:-1]``)."""
    return _NEEDS_ESCAPE(text) is not None


_SPLIT_RE = re.compile(r"[,;|]")
_MULTI_SEP = re.compile(r"\s*[,;|]\s*")
_DATE_YMD = re.compile(
    r"(\d{4})([-/.])(\d{1,2})\2(\d{1,2})"
    r"(?:[T ]\d{1,2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?\s*(?:Z|[+-]\d{2}(?::?\d{2})?)?)?"
)
_DATE_COMPACT = re.compile(r"(\d{4})(\d{2})(\d{2})")
_DATE_DMY = re.compile(r"(\d{1,2})\.(\d{1,2})\.(\d{4})")
_NUMBER = re.compile(r"[+-]?\d+(?:[.,]\d+)?")


MapRow = Callable[[str, int, list[str]], "PreparedContact | Rejection"]
"""``map(source, row_no, values)``: one row → a contact ready to send, or why it is not sent."""


class FieldValueError(ValueError):
    """A value that cannot be formatted for its field type (becomes a row rejection)."""


@dataclass(frozen=True)
class FieldMapping:
    """One snapshot column sent as one ActiveCampaign custom field."""

    column: str
    """Snapshot column (matched case-insensitively, whitespace trimmed)."""
    field_id: str
    """ActiveCampaign custom field id (digits; sent as an integer, as the API schema says)."""
    field_type: str = "text"
    """The field's ActiveCampaign type, one of :data:`FIELD_TYPES`; decides formatting."""


@dataclass(frozen=True)
class MappingSpec:
    """How a snapshot's columns become ActiveCampaign contact data for one list."""

    email: str
    """Column holding the email address (required)."""
    list_id: str
    """ActiveCampaign list id every contact is subscribed to."""
    first_name: str | None = None
    """Column sent as ``first_name``."""
    last_name: str | None = None
    """Column sent as ``last_name``."""
    phone: str | None = None
    """Column sent as ``phone`` (free text)."""
    fields: list[FieldMapping] = field(default_factory=list)
    """Columns sent as custom fields."""
    tags: list[str] = field(default_factory=list)
    """Tags added to every contact."""
    tag_column: str | None = None
    """Column of per-contact tags, separated by ``,`` ``;`` or ``|``."""
    profile_id_column: str | None = None
    """Column with a stable profile id (recognises a changed email as the same person)."""
    exclude_automations: bool = False
    """Send ``exclude_automations`` (the batch planner puts it on the request, not per
    contact)."""


def _trim_column(name: str) -> str:
    return name.strip().lstrip("\ufeff").strip().lower()


def _bind_index(columns: Sequence[str], wanted: str, what: str, source: str | None) -> int:
    key = _trim_column(wanted)
    hits = [i for i, c in enumerate(columns) if _trim_column(c) == key]
    if len(hits) == 1:
        return hits[0]
    available = ", ".join(repr(c) for c in columns) or "(none: the file has no header)"
    if hits:
        message = f"{what} column {wanted!r} matches several columns; the columns are: {available}"
    else:
        message = f"{what} column {wanted!r} does not exist; the columns are: {available}"
    if source is not None:
        raise InputError(message, file=source, column=wanted)
    raise ConfigError(message, field=f"mapping.{what}")


def _check_spec(spec: MappingSpec) -> None:
    if not spec.email.strip():
        raise ConfigError("an email column is required", field="mapping.email")
    if not str(spec.list_id).strip():
        raise ConfigError("a list id is required", field="mapping.list_id")
    for i, f in enumerate(spec.fields):
        if not f.field_id.strip().isdigit():
            raise ConfigError(
                f"custom field id {f.field_id!r} must be a number", field=f"mapping.fields[{i}]"
            )
        if f.field_type not in FIELD_TYPES:
            raise ConfigError(
                f"unknown field type {f.field_type!r} (one of {', '.join(sorted(FIELD_TYPES))})",
                field=f"mapping.fields[{i}].field_type",
            )


def _split_multi(value: str) -> list[str]:
    parts = value.split("||") if "||" in value else _SPLIT_RE.split(value)
    return [p for p in map(str.strip, parts) if p]


def format_date(value: str) -> str:
    """``YYYY-MM-DD`` from the accepted date inputs (see the module docstring)."""
    if len(value) == 10 and value[4] == "-" and value[7] == "-" and value.isascii():
        try:  # the common case, at C speed; anything odd falls through to the full parse
            date.fromisoformat(value)
            return value
        except ValueError:
            pass
    m = _DATE_YMD.fullmatch(value)
    if m:
        y, mo, d = int(m[1]), int(m[3]), int(m[4])
    elif m := _DATE_COMPACT.fullmatch(value):
        y, mo, d = int(m[1]), int(m[2]), int(m[3])
    elif m := _DATE_DMY.fullmatch(value):
        d, mo, y = int(m[1]), int(m[2]), int(m[3])
    else:
        raise FieldValueError(
            f"{value!r} is not a date (use YYYY-MM-DD, YYYY/MM/DD, DD.MM.YYYY or ISO 8601)"
        )
    try:
        return date(y, mo, d).isoformat()
    except ValueError:
        raise FieldValueError(f"{value!r} is not a valid calendar date") from None


def format_datetime(value: str) -> str:
    """ISO 8601 ``YYYY-MM-DDTHH:MM:SS[±HH:MM]`` (a bare date is midnight)."""
    try:
        parsed = datetime.fromisoformat(value.replace(" ", "T", 1) if " " in value else value)
    except ValueError:
        raise FieldValueError(f"{value!r} is not an ISO 8601 date-time") from None
    return parsed.isoformat(timespec="seconds")


def format_multi(value: str) -> str:
    """Multi-value input joined the way ActiveCampaign expects (``a||b``)."""
    if "|" not in value and " " not in value and value.isprintable():
        # no whitespace to trim around parts: plain replacement is enough
        joined = value.replace(";", "||").replace(",", "||")
        if "||||" not in joined and not joined.startswith("||") and not joined.endswith("||"):
            return joined
    elif "||" not in value:
        joined = _MULTI_SEP.sub("||", value.strip())
        # one substitution suffices unless a part was empty ("a,,b", ",a")
        if "||||" not in joined and not joined.startswith("||") and not joined.endswith("||"):
            return joined
    return "||".join(_split_multi(value))


def format_number(value: str) -> str:
    """A number with ``.`` as the decimal separator."""
    if not _NUMBER.fullmatch(value):
        raise FieldValueError(f"{value!r} is not a number")
    return value.replace(",", ".")


_FORMATTERS: dict[str, Callable[[str], str]] = {
    "date": format_date,
    "datetime": format_datetime,
    "multiselect": format_multi,
    "checkbox": format_multi,
    "listbox": format_multi,
    "number": format_number,
    "currency": format_number,
}
"""Field types whose values are reformatted; the others are sent as read (trimmed)."""


def format_value(value: str, field_type: str) -> str:
    """The value to send for a custom field of this type (``""`` means: do not send).
    Raises :class:`FieldValueError`."""
    fmt = _FORMATTERS.get(field_type)
    return fmt(value) if fmt is not None else value


def _tags_json(tags: list[str]) -> str:
    return ',"tags":[' + ",".join(map(_json_str, tags)) + "]" if tags else ""


def normalise_email(raw: str) -> tuple[str | None, str]:
    """(email to send, or None) and, when None, why it is invalid. ``raw`` is trimmed."""
    email = raw
    if not email.isascii():
        local, at, domain = email.rpartition("@")
        if not at or not local.isascii():
            return None, "non-ASCII characters before the @ are not accepted by ActiveCampaign"
        try:
            domain = idna.encode(domain, uts46=True).decode("ascii")
        except (idna.IDNAError, UnicodeError):
            return None, "the domain is not a valid internationalised domain name"
        email = f"{local}@{domain}"
    if len(email) > MAX_EMAIL:
        return None, f"longer than {MAX_EMAIL} characters"
    if not _email_ok(email):
        return None, "not a valid email address"
    if email.index("@") > MAX_LOCAL:
        return None, f"the part before @ is longer than {MAX_LOCAL} characters"
    return email, ""


def leaver_payload(email: str, list_id: str) -> str:
    """Bulk-import object that only unsubscribes ``email`` from ``list_id`` (for leavers)."""
    return f'{{"email":{_json_str(email)},"unsubscribe":[{{"listid":{_json_str(str(list_id))}}}]}}'


def _brace(text: str) -> str:
    """``text`` as literal text inside an f-string."""
    return text.replace("{", "{{").replace("}", "}}")


def _format_lines(var: str, fn: str, fmt: Callable[[str], str], at: int) -> list[str]:
    """Generated lines formatting the non-empty value ``var`` with ``fn`` (the formatter
    ``fmt``), rejecting the row with ``invalid_field_value`` when it cannot be formatted."""
    if fmt is format_date:
        # format_date's own fast path, inlined (the common ISO date)
        body = [
            f"            if (len({var}) == 10 and {var}[4] == '-' and {var}[7] == '-'",
            f"                    and {var}.isascii()):",
            "                try:",
            f"                    _fromiso({var})",
            "                except ValueError:",
            f"                    {var} = {fn}({var})",
            "            else:",
            f"                {var} = {fn}({var})",
        ]
    else:
        body = [f"            {var} = {fn}({var})"]
    return [
        "        try:",
        *body,
        "        except _FVE as exc:",
        "            return _reject(source, row_no, values, 'invalid_field_value',",
        f"                str(exc), {at})",
    ]


class Mapper:
    """A :class:`MappingSpec` bound to one snapshot's columns.

    Raises :class:`~exporter.errors.InputError` (when ``source`` names the file) or
    :class:`~exporter.errors.ConfigError` if a mapped column is missing or ambiguous; the message
    lists the columns that do exist.
    """

    def __init__(
        self, spec: MappingSpec, columns: Sequence[str], *, source: str | None = None
    ) -> None:
        _check_spec(spec)
        self.spec = spec
        self.columns = list(columns)
        self._ncols = len(columns)

        def idx(wanted: str | None, what: str) -> int:
            return -1 if not wanted else _bind_index(columns, wanted, what, source)

        self._email = idx(spec.email, "email")
        self._first = idx(spec.first_name, "first_name")
        self._last = idx(spec.last_name, "last_name")
        self._phone = idx(spec.phone, "phone")
        self._tagcol = idx(spec.tag_column, "tag_column")
        self._pid = idx(spec.profile_id_column, "profile_id_column")
        # Hot-path tables: (column index, JSON text before the value[, formatter]).
        self._plain: list[tuple[int, str]] = [
            (at, prefix)
            for at, prefix in (
                (self._first, ',"first_name":'),
                (self._last, ',"last_name":'),
                (self._phone, ',"phone":'),
            )
            if at >= 0
        ]
        self._fields: list[tuple[int, str, Callable[[str], str] | None]] = []
        for i, f in enumerate(spec.fields):
            at = idx(f.column, f"fields[{i}]")
            prefix = f'{{"id":{int(f.field_id)},"value":'
            self._fields.append((at, prefix, _FORMATTERS.get(f.field_type)))
        self._fixed_tags = list(dict.fromkeys(t.strip() for t in spec.tags if t.strip()))
        self._subscribe = f',"subscribe":[{{"listid":{_json_str(str(spec.list_id))}}}]}}'
        # Without a tag column every contact ends with the same text.
        self._tail = _tags_json(self._fixed_tags) + self._subscribe
        self._mapped = sorted(
            {self._email, self._first, self._last, self._phone, self._tagcol, self._pid} - {-1}
            | {f[0] for f in self._fields}
        )
        self.map: MapRow = self._compile()
        """One row → a contact ready to send, or the reason it is not sent:
        ``map(source, row_no, values)``. ``values`` are text as decoded by the snapshot reader
        (valid Unicode, no lone surrogates)."""

    @property
    def value_columns(self) -> list[str]:
        """The mapped columns, in file order (the value columns of a rejected-rows CSV)."""
        return [self.columns[i] for i in self._mapped]

    def _compile(self) -> MapRow:
        """The row function for exactly this mapping, generated once.

        Per row it only touches the mapped columns; no loops over the (possibly empty)
        optional-column tables, no attribute look-ups (everything is a bound default or a
        constant in the source). Semantics are those of the reference loop this
        replaced: ``tests/test_mapping.py`` checks the payload against
        :func:`exporter.planning.contacts.dumps`.
        """
        env: dict[str, Any] = {
            "_PC": PreparedContact,
            "_reject": self._reject,
            "_email_ok": _email_ok,
            "_email_fast": _email_fast,
            "_b2_copy": _BLAKE2B_8.copy,
            "_normalise": normalise_email,
            "_js": _json_str,
            "_from_bytes": int.from_bytes,
            "_FVE": FieldValueError,
            "_fromiso": date.fromisoformat,
            "_tags_json": _tags_json,
            "_tags": self._tags,
            "_needs_escape": _NEEDS_ESCAPE,
        }
        e = self._email
        # A narrow row is unpacked once (its length is checked first), which is cheaper than
        # indexing it per cell; a wide one would cost more to unpack than its few mapped cells.
        unpack = self._ncols <= UNPACK_COLUMNS
        lines = [
            "def map_row(source, row_no, values):",
            f"    if len(values) != {self._ncols}:",
            # A short row (a producer trimmed its trailing empty fields) reads them as empty.
            f"        if len(values) < {self._ncols}:",
            f"            values = values + [''] * ({self._ncols} - len(values))",
            "        else:",
            "            return _reject(source, row_no, values, 'ragged_row',",
            f"                f'the row has {{len(values)}} values, the header has {self._ncols}'",
            "                ' columns',",
            "                None)",
            f"    ({''.join(f'_v{i}, ' for i in range(self._ncols))}) = values" if unpack else "",
            f"    raw = values[{e}].strip()",
            # A match means ASCII atext/LDH only: no JSON escaping is ever needed for it, and
            # normalise_email's output matches the same expression.
            f"    if len(raw) <= {MAX_LOCAL} and _email_fast(raw) is not None:",
            "        email = raw",
            f"    elif _email_ok(raw) is not None and len(raw) <= {MAX_EMAIL}"
            f" and raw.index('@') <= {MAX_LOCAL}:",
            "        email = raw",
            "    elif not raw:",
            "        return _reject(source, row_no, values, 'missing_email',",
            f"            'no email address', {e})",
            "    else:",
            "        email, why = _normalise(raw)",
            "        if email is None:",
            f"            return _reject(source, row_no, values, 'invalid_email', why, {e})",
        ]
        # First every value, stripped and formatted (a bad one rejects the row, in field order).
        plain = []
        for n, (at, prefix) in enumerate(self._plain):
            lines.append(f"    p{n} = values[{at}].strip()")
            plain.append((f"p{n}", prefix))
        fields = []
        for n, (at, prefix, fmt) in enumerate(self._fields):
            lines.append(f"    f{n} = values[{at}].strip()")
            if fmt is not None:
                env[f"_fmt{n}"] = fmt
                lines += [f"    if f{n}:", *_format_lines(f"f{n}", f"_fmt{n}", fmt, at)]
            fields.append((f"f{n}", prefix))
        tail = (
            repr(self._tail)
            if self._tagcol < 0
            else f"_tags_json(_tags(values[{self._tagcol}])) + {self._subscribe!r}"
        )
        names = [v for v, _ in plain] + [v for v, _ in fields]
        # The common row: every value present and none needing a JSON escape. Its payload is
        # one f-string (a single allocation) instead of a concatenation per value.
        fast = "    if True:"
        if names:
            joined = "".join("{" + v + "}" for v in names)
            fast = f"    if {' and '.join(names)} and _needs_escape(f{joined!r}) is None:"
        pieces = ['{{"email":"{email}"']
        pieces += [f'{_brace(prefix)}"{{{v}}}"' for v, prefix in plain]
        if fields:
            pieces.append(
                ',"fields":['
                + ",".join(f'{_brace(prefix)}"{{{v}}}"}}}}' for v, prefix in fields)
                + "]"
            )
        lines += [fast, f"        payload = f{''.join(pieces)!r} + {tail}", "    else:"]
        # Anything else: each value escaped, empty ones left out.
        lines.append("        out = '{\"email\":\"' + email + '\"'")
        for v, prefix in plain:
            lines += [f"        if {v}:", f"            out += {prefix!r} + _js({v})"]
        if fields:
            lines.append("        fs = ''")
            for v, prefix in fields:
                lines += [
                    f"        if {v}:",
                    f"            fs += ',' + {prefix!r} + _js({v}) + '}}'",
                ]
            lines += ["        if fs:", "            out += ',\"fields\":[' + fs[1:] + ']'"]
        lines.append(f"        payload = out + {tail}")
        pid = "None" if self._pid < 0 else f"values[{self._pid}].strip() or None"
        lines += [
            # == exporter.planning.contacts.fingerprint(payload), inlined: a call per row is
            # measurable;
            # the bytes are encoded once, for the digest and for the batch planner's size.
            "    b = payload.encode()",
            "    h = _b2_copy()",
            "    h.update(b)",
            "    fp = _from_bytes(h.digest(), 'little')",
            f"    return _PC(row_no, source, email.lower(), payload, fp, {pid}, len(b), b)",
        ]
        self._source = "\n".join(lines)  # kept for debugging
        if unpack:
            self._source = re.sub(r"values\[(\d+)\]", r"_v\1", self._source)
        exec(compile(self._source, f"<mapper {self.spec.email!r}>", "exec"), env)  # noqa: S102
        fn: MapRow = env["map_row"]
        return fn

    def _tags(self, cell: str) -> list[str]:
        if not cell.strip():
            return self._fixed_tags
        tags = list(self._fixed_tags)
        for t in _SPLIT_RE.split(cell):
            t = t.strip()
            if t and t not in tags:
                tags.append(t)
        return tags

    def _reject(
        self,
        source: str,
        row_no: int,
        values: list[str],
        reason: str,
        message: str,
        at: int | None,
    ) -> Rejection:
        return Rejection(
            row=row_no,
            source=source,
            reason=reason,
            message=message,
            column=self.columns[at] if at is not None else None,
            values={self.columns[i]: values[i] for i in self._mapped if i < len(values)},
        )
