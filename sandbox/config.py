"""What a sandbox account holds and how it misbehaves: :class:`SandboxConfig`, :class:`Field`,
:class:`Faults`.

Invalid configuration raises :class:`sandbox.errors.SandboxConfigError`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from sandbox.errors import SandboxConfigError

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
        "hidden",
        "listbox",
    }
)
"""Custom field types ActiveCampaign knows (``GET /fields`` ``type``)."""

_ID = re.compile(r"^[1-9][0-9]{0,9}$")


def _check_id(value: str, what: str) -> str:
    if not isinstance(value, str) or not _ID.match(value):
        raise SandboxConfigError(
            f"{what} id must be a positive integer written as a string", field=what
        )
    return value


@dataclass(frozen=True)
class Field:
    """A custom contact field of the account (``GET /api/3/fields``)."""

    id: str
    """ActiveCampaign's id for the field, a positive integer as a string (bulk import names
    fields by this id)."""
    title: str
    """The label shown in ActiveCampaign."""
    type: str = "text"
    """One of :data:`FIELD_TYPES`. ``date`` fields accept only ``YYYY-MM-DD`` (or empty)."""
    perstag: str | None = None
    """Personalisation tag; derived from the title (upper case, ``_`` for spaces) when None."""

    def __post_init__(self) -> None:
        _check_id(self.id, "field")
        if self.type not in FIELD_TYPES:
            raise SandboxConfigError(f"unknown field type {self.type!r}", field="field.type")
        if self.perstag is None:
            derived = re.sub(r"[^A-Z0-9]+", "_", self.title.upper()).strip("_")
            object.__setattr__(self, "perstag", derived or f"FIELD_{self.id}")


@dataclass(frozen=True)
class Faults:
    """Injected failures, all off by default and deterministic under ``SandboxConfig.seed``.

    For every authenticated API request the sandbox draws, in arrival order, from one seeded
    generator: so the same seed and the same sequence of requests give the same faults. The
    request-level kinds (503, 429, reset, lost response) exclude each other; ``slow`` combines
    with any of them.
    """

    http_503_rate: float = 0.0
    """Share of requests answered 503 with an HTML body (a gateway page), nothing processed."""
    http_429_rate: float = 0.0
    """Share of requests answered 429 with ``Retry-After: retry_after`` (scaled), nothing
    processed. Not counted by ``throttled_count`` (that counts real throttling only)."""
    reset_rate: float = 0.0
    """Share of requests whose connection is reset (closed with RST) without any response;
    nothing processed."""
    lost_response_rate: float = 0.0
    """Share of requests that are processed normally but whose response is lost (connection
    reset): a retried bulk import is then queued twice."""
    slow_rate: float = 0.0
    """Share of requests answered ``slow_seconds`` late."""
    slow_seconds: float = 5.0
    """Delay for slow answers, in real seconds (not scaled: it exercises client timeouts)."""
    retry_after: float = 1.0
    """``Retry-After`` of an injected 429, in sandbox seconds (divided by the time scale)."""
    batch_failed_rate: float = 0.0
    """Share of queued bulk imports that end ``failed`` (nothing applied)."""
    batch_interrupted_rate: float = 0.0
    """Share of queued bulk imports that end ``interrupted`` (nothing applied)."""
    failure_emails: frozenset[str] = frozenset()
    """Emails (any case) that a bulk import lists in ``failure`` and does not import."""
    endpoints: frozenset[str] | None = None
    """Endpoint keys such as ``"POST /import/bulk_import"`` the request-level faults apply to;
    None means every API endpoint."""

    def __post_init__(self) -> None:
        rates = {
            "http_503_rate": self.http_503_rate,
            "http_429_rate": self.http_429_rate,
            "reset_rate": self.reset_rate,
            "lost_response_rate": self.lost_response_rate,
            "slow_rate": self.slow_rate,
            "batch_failed_rate": self.batch_failed_rate,
            "batch_interrupted_rate": self.batch_interrupted_rate,
        }
        for name, rate in rates.items():
            if not 0.0 <= rate <= 1.0:
                raise SandboxConfigError("must be between 0 and 1", field=f"faults.{name}")
        exclusive = (
            self.http_503_rate + self.http_429_rate + self.reset_rate + self.lost_response_rate
        )
        if exclusive > 1.0:
            raise SandboxConfigError(
                "503, 429, reset and lost-response rates add up to more than 1"
            )
        if self.batch_failed_rate + self.batch_interrupted_rate > 1.0:
            raise SandboxConfigError("batch failed and interrupted rates add up to more than 1")
        if self.slow_seconds < 0 or self.retry_after < 0:
            raise SandboxConfigError("delays cannot be negative", field="faults")
        object.__setattr__(
            self, "failure_emails", frozenset(e.strip().lower() for e in self.failure_emails)
        )
        if self.endpoints is not None:
            object.__setattr__(self, "endpoints", frozenset(self.endpoints))

    @classmethod
    def from_mapping(cls, data: Mapping[str, object]) -> Faults:
        """Build from JSON (the admin route): lists become frozensets; unknown keys are errors."""
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise SandboxConfigError(
                f"unknown fault setting(s): {', '.join(unknown)}", field="faults"
            )
        kwargs: dict[str, object] = {}
        for key, value in data.items():
            if key in ("failure_emails", "endpoints"):
                if value is None and key == "endpoints":
                    kwargs[key] = None
                    continue
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    raise SandboxConfigError("must be a list of strings", field=f"faults.{key}")
                kwargs[key] = frozenset(value)
            else:
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise SandboxConfigError("must be a number", field=f"faults.{key}")
                kwargs[key] = float(value)
        return cls(**kwargs)  # type: ignore[arg-type]

    def to_mapping(self) -> dict[str, object]:
        """JSON-friendly form (sorted lists), the inverse of :meth:`from_mapping`."""
        out: dict[str, object] = {}
        for key in self.__dataclass_fields__:
            value = getattr(self, key)
            out[key] = sorted(value) if isinstance(value, frozenset) else value
        return out


def _default_lists() -> dict[str, str]:
    return {"1": "Newsletter"}


@dataclass
class SandboxConfig:
    """One emulated ActiveCampaign account and its server."""

    api_key: str
    """The only accepted ``Api-Token``."""
    lists: dict[str, str] = field(default_factory=_default_lists)
    """List id (a positive integer as a string) -> list name."""
    fields: list[Field] = field(default_factory=list)
    """The account's custom contact fields."""
    tags: list[str] = field(default_factory=list)
    """Tags that exist from the start (bulk import creates unknown ones)."""
    time_scale: float = 1.0
    """Speed-up of sandbox time: every budget window and processing delay is divided by it
    (5 requests per ``1/time_scale`` s, 100 multi-contact bulk imports per ``60/time_scale``
    s), and so is ``Retry-After``. Semantics are unchanged; only the clock runs faster."""
    limits: bool = True
    """False lifts every rate budget (the per-request size limits stay)."""
    rate_per_second: int = 5
    """Account budget: requests per (sandbox) second, every endpoint, bulk calls included."""
    bulk_multi_per_minute: int = 100
    """Bulk-import budget for requests carrying two or more contacts, per (sandbox) minute."""
    bulk_single_per_minute: int = 20
    """Bulk-import budget for requests carrying one contact, per (sandbox) minute."""
    faults: Faults = field(default_factory=Faults)
    """Injected failures (see :class:`Faults`); changeable later with ``Sandbox.set_faults``."""
    seed: int = 0
    """Seed of the fault generator, batch ids and batch outcomes."""
    host: str = "127.0.0.1"
    """Interface to listen on."""
    port: int = 0
    """Port to listen on; 0 picks a free one (read it back from ``Sandbox.base_url``)."""
    clock: Callable[[], float] = time.monotonic
    """Monotonic clock in real seconds. Tests pass a manual clock to step time exactly."""

    def __post_init__(self) -> None:
        if not self.api_key:
            raise SandboxConfigError("an API key is required", field="api_key")
        for list_id in self.lists:
            _check_id(list_id, "list")
        ids = [f.id for f in self.fields]
        if len(set(ids)) != len(ids):
            raise SandboxConfigError("field ids must be unique", field="fields")
        if self.time_scale <= 0:
            raise SandboxConfigError("must be greater than 0", field="time_scale")
        for name in ("rate_per_second", "bulk_multi_per_minute", "bulk_single_per_minute"):
            if getattr(self, name) < 1:
                raise SandboxConfigError("must be at least 1", field=name)


def parse_list_spec(spec: str) -> tuple[str, str]:
    """``ID:NAME`` (the command line's ``--list``)."""
    list_id, sep, name = spec.partition(":")
    if not sep or not name:
        raise SandboxConfigError(f"expected ID:NAME, got {spec!r}", field="--list")
    return _check_id(list_id, "list"), name


def parse_field_spec(spec: str) -> Field:
    """``ID:TITLE[:TYPE[:PERSTAG]]`` (the command line's ``--field``)."""
    parts = spec.split(":")
    if len(parts) < 2 or len(parts) > 4 or not parts[1]:
        raise SandboxConfigError(
            f"expected ID:TITLE[:TYPE[:PERSTAG]], got {spec!r}", field="--field"
        )
    return Field(
        id=parts[0],
        title=parts[1],
        type=parts[2] if len(parts) > 2 and parts[2] else "text",
        perstag=parts[3] if len(parts) > 3 and parts[3] else None,
    )


def unique(values: Iterable[str]) -> list[str]:
    """Values in first-seen order without repeats."""
    return list(dict.fromkeys(values))
