"""What an exporter error means over HTTP: the one mapping from exception to status and code,
used by every HTTP handler (the JSON API, the run endpoints and the console).

====================================  =====  ===============================
exception                             status code
====================================  =====  ===============================
:class:`HttpProblem` (and subclasses) its own its own (413, 415, 401, 412)
:class:`PermissionDenied`             403    ``forbidden``
:class:`NotFoundError`                404    ``not_found``
:class:`ConflictError`, RunConflict   409    ``conflict``
:class:`ConfigError`                  400    ``invalid``
:class:`SecretError`                  502    ``secret_unavailable``
:class:`AuthenticationError`          422    ``activecampaign_key_rejected``
:class:`RetriableApiError`            503    ``activecampaign_unavailable``
:class:`ApiError`                     502    ``activecampaign_error``
anything else                         500    ``internal``
====================================  =====  ===============================
"""

from __future__ import annotations

from http import HTTPStatus

from exporter.errors import (
    ApiError,
    AuthenticationError,
    ConfigError,
    ConflictError,
    ExporterError,
    NotFoundError,
    PermissionDenied,
    RetriableApiError,
    RunConflict,
    SecretError,
)


class HttpProblem(ExporterError):
    """A request refused before it reaches the service; ``status`` and ``code`` say why."""

    status: int = HTTPStatus.BAD_REQUEST
    code: str = "invalid"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.detail = message


class Unauthenticated(HttpProblem):
    """No (valid) App Service Authentication principal on the request."""

    status = HTTPStatus.UNAUTHORIZED
    code = "unauthenticated"


class SignInRequired(Unauthenticated):
    """No principal at all, though App Service Authentication is on: a browser may be sent to
    sign in (an API caller gets 401 like any :class:`Unauthenticated`)."""


class PayloadTooLarge(HttpProblem):
    """The request body exceeds the limit."""

    status = HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    code = "too_large"


class UnsupportedMediaType(HttpProblem):
    """The request body is not declared as JSON."""

    status = HTTPStatus.UNSUPPORTED_MEDIA_TYPE
    code = "unsupported_media_type"


class PreconditionFailed(HttpProblem):
    """A conditional request (``If-Match``/``If-None-Match``) does not hold."""

    status = HTTPStatus.PRECONDITION_FAILED
    code = "precondition_failed"


HTTP_ERRORS: tuple[tuple[type[Exception], HTTPStatus, str], ...] = (
    (PermissionDenied, HTTPStatus.FORBIDDEN, "forbidden"),
    (NotFoundError, HTTPStatus.NOT_FOUND, "not_found"),
    (ConflictError, HTTPStatus.CONFLICT, "conflict"),
    (RunConflict, HTTPStatus.CONFLICT, "conflict"),
    (ConfigError, HTTPStatus.BAD_REQUEST, "invalid"),
    # The vault (or the app's identity on it) failed us: not the caller's request.
    (SecretError, HTTPStatus.BAD_GATEWAY, "secret_unavailable"),
    # Not 403: the caller's own permissions are fine, ActiveCampaign refused the key.
    (AuthenticationError, HTTPStatus.UNPROCESSABLE_ENTITY, "activecampaign_key_rejected"),
    (RetriableApiError, HTTPStatus.SERVICE_UNAVAILABLE, "activecampaign_unavailable"),
    (ApiError, HTTPStatus.BAD_GATEWAY, "activecampaign_error"),
)
"""Exception class → (status, code), first match wins: a subclass comes before its base
(``NotFoundError`` before ``ConfigError``). :class:`HttpProblem` carries its own."""
INTERNAL = (HTTPStatus.INTERNAL_SERVER_ERROR, "internal")
"""Anything not in the table: not ours to explain."""


def http_status(exc: Exception) -> tuple[int, str]:
    """The HTTP status and error code for an exception (see :data:`HTTP_ERRORS`)."""
    if isinstance(exc, HttpProblem):
        return exc.status, exc.code
    for kind, status, code in HTTP_ERRORS:
        if isinstance(exc, kind):
            return status, code
    return INTERNAL
