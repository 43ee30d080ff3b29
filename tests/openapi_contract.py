"""Contract checks against ActiveCampaign's OpenAPI document (the shared reference subset).

``validate_request(path, method, body)`` and ``validate_response(path, method, status, body)``
validate JSON bodies with Draft 2020-12, ``$ref``s resolved inside the document. ``path`` may be
a template (``/contacts/{id}``), a concrete path (``/contacts/12``), with or without ``/api/3``,
a scheme and host, or a query string.

When the reference folder is absent the calling test is skipped, with the reason.

Known gaps of the document itself (not of the sandbox): ``GET /import/info`` documents
``status`` as a string, but ActiveCampaign answers ``false`` for about the first second; and
``POST /contact/sync`` documents 201 only, while an update answers 200 (validated against the
201 schema: same body).
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Mapping
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from exporter.activecampaign.transport import RequestsTransport, Response
from tests.conftest import OPENAPI_PATH

_DOC_URI = "urn:activecampaign:openapi"


@lru_cache(maxsize=1)
def _document() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(OPENAPI_PATH.read_text(encoding="utf-8"))
    return doc


def load_document() -> dict[str, Any]:
    """The OpenAPI document, or skip the calling test when the shared reference is absent."""
    if not OPENAPI_PATH.is_file():
        pytest.skip(
            f"the shared reference folder is not present ({OPENAPI_PATH} is missing); "
            "contract tests need ActiveCampaign's OpenAPI document from ../shared/reference"
        )
    return _document()


@lru_cache(maxsize=1)
def _registry() -> Registry:
    resource = Resource.from_contents(_document(), default_specification=DRAFT202012)
    return Registry().with_resource(_DOC_URI, resource)


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def operation_path(path: str) -> str:
    """The document's path template for a concrete or templated request path."""
    doc = load_document()
    bare = urlsplit(path).path if "://" in path else path.split("?", 1)[0]
    if bare.startswith("/api/3"):
        bare = bare[len("/api/3") :] or "/"
    if bare in doc["paths"]:
        return bare
    for template in doc["paths"]:
        pattern = "^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)) + "$"
        if re.match(pattern, bare):
            return str(template)
    raise AssertionError(f"{path} is not a path of the OpenAPI document")


def _validator(pointer: str) -> Draft202012Validator:
    return Draft202012Validator({"$ref": f"{_DOC_URI}#{pointer}"}, registry=_registry())


def validate_request(path: str, method: str, body: Any) -> None:
    """Validate a request body against the operation's ``application/json`` schema.

    Raises ``jsonschema.ValidationError`` on a mismatch and ``AssertionError`` when the
    operation has no request schema."""
    template = operation_path(path)
    op = load_document()["paths"][template].get(method.lower())
    assert op is not None, f"{method} {template} is not in the OpenAPI document"
    content = op.get("requestBody", {}).get("content", {}).get("application/json", {})
    assert "schema" in content, f"{method} {template} documents no JSON request body"
    pointer = (
        f"/paths/{_escape(template)}/{method.lower()}/requestBody/content/application~1json/schema"
    )
    _validator(pointer).validate(body)


def validate_response(path: str, method: str, status: int, body: Any) -> bool:
    """Validate a response body against the schema documented for that status.

    Returns True when a schema was applied, False when the document has none for this status
    (callers decide whether that is acceptable). A 2xx the document does not list is checked
    against the operation's only documented 2xx schema when there is exactly one. Raises
    ``jsonschema.ValidationError`` on a mismatch."""
    template = operation_path(path)
    op = load_document()["paths"][template].get(method.lower())
    assert op is not None, f"{method} {template} is not in the OpenAPI document"
    responses: dict[str, Any] = op.get("responses", {})
    code = str(status)
    if code not in responses and 200 <= status < 300:
        documented = [c for c in responses if c.startswith("2")]
        if len(documented) == 1:
            code = documented[0]
    if code not in responses:
        return False
    content = responses[code].get("content", {})
    media = next((m for m in content if "json" in m), None)
    if media is None or "schema" not in content[media]:
        return False
    pointer = (
        f"/paths/{_escape(template)}/{method.lower()}/responses/{code}/content/"
        f"{_escape(media)}/schema"
    )
    _validator(pointer).validate(body)
    return True


class RecordingTransport(RequestsTransport):
    """The real transport, remembering every request as ``(method, path, body)`` so a test can
    validate what the client really sent against the OpenAPI document."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple[str, str, bytes | None]] = []
        self._lock = threading.Lock()

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        params: Mapping[str, str] | None,
        body: bytes | None,
        timeout: float,
    ) -> Response:
        with self._lock:
            self.sent.append((method, urlsplit(url).path, body))
        return super().request(
            method, url, headers=headers, params=params, body=body, timeout=timeout
        )
