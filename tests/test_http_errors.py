"""The one mapping from an exporter error to an HTTP status and code (exporter.http_errors),
checked row by row, independent of any host."""

from __future__ import annotations

import inspect

import pytest

from exporter import errors
from exporter.errors import (
    ApiError,
    ApiNotFound,
    AuthenticationError,
    ConfigError,
    ConfigErrors,
    ConflictError,
    ContactsRejected,
    ExporterError,
    FatalApiError,
    GuardError,
    InputError,
    NotFoundError,
    PermissionDenied,
    RejectedContact,
    RetriableApiError,
    RunConflict,
    SecretError,
    StateCorrupt,
)
from exporter.http_errors import (
    HTTP_ERRORS,
    PayloadTooLarge,
    PreconditionFailed,
    Unauthenticated,
    UnsupportedMediaType,
    http_status,
)


@pytest.mark.parametrize(
    ("exc", "status", "code"),
    [
        (ConfigError("bad", field="hostname"), 400, "invalid"),
        (ConfigErrors([ConfigError("bad", field="a")]), 400, "invalid"),
        (Unauthenticated("sign in"), 401, "unauthenticated"),
        (PermissionDenied("no"), 403, "forbidden"),
        (NotFoundError("no such export", field="name"), 404, "not_found"),
        (ConflictError("exists already", field="name"), 409, "conflict"),
        (RunConflict("already running"), 409, "conflict"),
        (PreconditionFailed("changed", field="name"), 412, "precondition_failed"),
        (PayloadTooLarge("too big"), 413, "too_large"),
        (UnsupportedMediaType("json please"), 415, "unsupported_media_type"),
        (AuthenticationError("key rejected", status=403), 422, "activecampaign_key_rejected"),
        (ApiNotFound("gone", status=404), 502, "activecampaign_error"),
        (FatalApiError("odd", status=418), 502, "activecampaign_error"),
        (ApiError("odd", status=418), 502, "activecampaign_error"),
        (ContactsRejected([RejectedContact(0, "bad email")]), 502, "activecampaign_error"),
        (SecretError("vault said no"), 502, "secret_unavailable"),
        (RetriableApiError("busy", status=503), 503, "activecampaign_unavailable"),
        (GuardError("shrink guard"), 500, "internal"),
        (StateCorrupt("state/x/state.bin", "truncated"), 500, "internal"),
        (InputError("bad row", file="a.csv", row=2), 500, "internal"),
        (ValueError("not ours"), 500, "internal"),
    ],
)
def test_each_error_has_its_status(exc: Exception, status: int, code: str) -> None:
    assert http_status(exc) == (status, code)


def test_no_row_is_shadowed_by_an_earlier_one() -> None:
    """First match wins, so a subclass listed after its base could never be reached."""
    for i, (later, _status, _code) in enumerate(HTTP_ERRORS):
        for earlier, _s, _c in HTTP_ERRORS[:i]:
            assert not issubclass(later, earlier), f"{later.__name__} after {earlier.__name__}"


def test_every_error_class_is_decided() -> None:
    """Each exporter error is either in the table (or below a class that is), or one of those
    deliberately answered 500: a new error class must be placed on purpose."""
    deliberately_internal = {ExporterError, InputError, GuardError, StateCorrupt}
    classes = {
        obj
        for obj in vars(errors).values()
        if inspect.isclass(obj) and issubclass(obj, ExporterError)
    }
    undecided = {
        cls
        for cls in classes - deliberately_internal
        if not any(issubclass(cls, kind) for kind, _s, _c in HTTP_ERRORS)
    }
    assert undecided == set()
