"""Admin routes under ``/_sandbox`` for the demo and out-of-process benchmarks. They need the
``Api-Token`` too, and are neither counted nor charged to any budget.

======  ================================  =============================================
GET     /_sandbox/stats                   every statistic (``Sandbox.stats``)
POST    /_sandbox/reset_stats             zero the statistics
GET     /_sandbox/lists/{id}/members      ``?status=1``: ``{"emails": [...]}`` sorted
GET     /_sandbox/contacts                ``?email=``: the stored contact, or 404
GET     /_sandbox/faults                  the faults in force
POST    /_sandbox/faults                  replace them (``Faults`` fields as JSON)
POST    /_sandbox/unsubscribe             ``{"email": .., "list": ..}``: simulate an opt-out
======  ================================  =============================================
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

from sandbox.api import Response, json_response
from sandbox.config import Faults
from sandbox.errors import SandboxConfigError

if TYPE_CHECKING:
    from sandbox.server import Sandbox

PREFIX = "/_sandbox/"
_MEMBERS = re.compile(r"^/_sandbox/lists/([^/]+)/members$")


def handle(sandbox: Sandbox, method: str, target: str, token: str | None, body: bytes) -> Response:
    """Answer one admin request."""
    if not sandbox.api.authorised(token):
        return Response(403, b'{"message":"Forbidden"}')
    parts = urlsplit(target)
    path = parts.path.rstrip("/")
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    if method == "GET" and path == "/_sandbox/stats":
        return json_response(200, sandbox.stats())
    if method == "POST" and path == "/_sandbox/reset_stats":
        sandbox.reset_stats()
        return json_response(200, {"ok": True})
    if method == "GET" and (found := _MEMBERS.match(path)):
        list_id = found.group(1)
        if list_id not in sandbox.api.account.lists:
            return json_response(404, {"message": f"No list {list_id}"})
        status = int(query.get("status", "1")) if query.get("status", "1").isdigit() else 1
        emails = sorted(sandbox.list_members(list_id, status))
        return json_response(200, {"list": list_id, "status": status, "emails": emails})
    if method == "GET" and path == "/_sandbox/contacts":
        record = sandbox.contact(query.get("email", ""))
        if record is None:
            return json_response(404, {"message": "No such contact"})
        return json_response(200, {"contact": record})
    if path == "/_sandbox/faults" and method in ("GET", "POST"):
        if method == "POST":
            try:
                data = json.loads(body or b"{}")
                if not isinstance(data, dict):
                    raise SandboxConfigError("expected a JSON object", field="faults")
                sandbox.set_faults(Faults.from_mapping(data))
            except (ValueError, SandboxConfigError) as exc:
                return json_response(400, {"message": str(exc)})
        return json_response(200, {"faults": sandbox.faults().to_mapping()})
    if method == "POST" and path == "/_sandbox/unsubscribe":
        try:
            data = json.loads(body or b"{}")
            sandbox.unsubscribe(str(data["email"]), str(data["list"]))
        except (ValueError, KeyError, TypeError) as exc:
            return json_response(400, {"message": f"cannot unsubscribe: {exc}"})
        return json_response(200, {"ok": True})
    return json_response(404, {"message": "Not Found"})
