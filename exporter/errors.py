"""Every error the exporter raises, under one root.

::

    ExporterError                 root: catch this to catch everything of ours
    ├── ConfigError               invalid connection/export/setting  (exit 2, HTTP 400)
    │   ├── ConfigErrors          several field errors at once       (exit 2, HTTP 400)
    │   ├── NotFoundError         no such connection/export/run      (exit 2, HTTP 404)
    │   └── ConflictError         exists already / changed since read (exit 2, HTTP 409/412)
    ├── InputError                unreadable snapshot: file/row/col  (exit 2)
    ├── PermissionDenied          the caller's role forbids it       (HTTP 403)
    ├── SecretError               a secret reference won't resolve   (exit 2)
    ├── GuardError                a safety guard stopped the run     (exit 1)
    ├── StateCorrupt              stored export state is damaged     (exit 1)
    ├── RunConflict               that run is already in progress    (HTTP 409)
    └── ApiError                  ActiveCampaign answered with an error
        ├── FatalApiError         retrying cannot help: stop the run
        │   ├── AuthenticationError   403: the API key was rejected
        │   └── ApiNotFound           404: e.g. an unknown list id
        ├── RetriableApiError     429, 5xx, bulk "Rate limit exceeded.", connection errors
        └── ContactsRejected      bulk 400 naming contacts that failed validation

Messages never contain secrets; email addresses in messages are masked with
:func:`exporter.masking.mask_email`.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field as dc_field


class ExporterError(Exception):
    """Root of every error raised by the exporter."""

    exit_code: int = 1


class ConfigError(ExporterError):
    """Invalid configuration. ``field`` names the offending field (dotted path) when known."""

    exit_code = 2

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.detail = message


class ConfigErrors(ConfigError):
    """Several field errors at once (a form with three mistakes gets three messages)."""

    def __init__(self, errors: list[ConfigError]) -> None:
        super().__init__("; ".join(str(e) for e in errors))
        self.errors = errors


class NotFoundError(ConfigError):
    """A named object (connection, export, run, snapshot) does not exist."""


class ConflictError(ConfigError):
    """The object already exists (create), or changed since it was read (ETag mismatch)."""


class InputError(ExporterError):
    """A snapshot file cannot be read. Names the file, and the row and column when known."""

    exit_code = 2

    def __init__(
        self,
        message: str,
        *,
        file: str,
        row: int | None = None,
        column: str | None = None,
    ) -> None:
        where = file
        if row is not None:
            where += f", row {row}"
        if column is not None:
            where += f", column {column!r}"
        super().__init__(f"{where}: {message}")
        self.file = file
        self.row = row
        self.column = column
        self.detail = message


class PermissionDenied(ExporterError):
    """The caller's role does not allow the operation."""

    exit_code = 2


class SecretError(ExporterError):
    """A secret reference cannot be resolved. Never carries the secret's value."""

    exit_code = 2


class GuardError(ExporterError):
    """A safety guard (for example the shrink guard) stopped a run before anything was sent."""

    exit_code = 1


class StateCorrupt(ExporterError):
    """An export's stored incremental state is damaged, truncated or of an unknown format."""

    exit_code = 1

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(
            f"{path}: incremental state is unreadable: {reason}. Delete it to start over "
            "(the next run then sends every contact, and earlier leavers are not unsubscribed)"
        )
        self.path = path
        self.reason = reason


class RunConflict(ExporterError):
    """A run of the export is already in progress (the same snapshot, or another one: one run
    per export at a time). ``run_id`` names the running run when known."""

    exit_code = 1

    def __init__(self, message: str, *, run_id: str | None = None) -> None:
        super().__init__(message)
        self.run_id = run_id


class ApiError(ExporterError):
    """ActiveCampaign answered with an error (or could not be reached)."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class FatalApiError(ApiError):
    """Retrying cannot help; the run stops."""


class AuthenticationError(FatalApiError):
    """HTTP 403: the API key was rejected (wrong, revoked or rotated)."""


class ApiNotFound(FatalApiError):
    """HTTP 404 from ActiveCampaign (an unknown list id, for example)."""


class RetriableApiError(ApiError):
    """Safe to repeat after a pause: 429, 5xx, bulk rate limit, connection errors, timeouts.

    ``retry_after`` is the server's ``Retry-After`` in seconds, when it sent one.
    """

    def __init__(
        self, message: str, *, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, status=status)
        self.retry_after = retry_after


@dataclass(frozen=True)
class RejectedContact:
    """One contact that ActiveCampaign refused in a bulk request (index is 0-based here)."""

    index: int
    reason: str


class ContactsRejected(ApiError):
    """A bulk import 400 naming contacts that failed validation; nothing was queued."""

    def __init__(self, rejected: list[RejectedContact], message: str = "") -> None:
        super().__init__(
            message or f"{len(rejected)} contact(s) failed ActiveCampaign validation", status=400
        )
        self.rejected = rejected


@dataclass
class FieldProblem:
    """A field-level validation problem, for HTTP 400 bodies and CLI messages."""

    field: str
    message: str
    extra: dict[str, str] = dc_field(default_factory=dict)
