"""An account's "no request before" time, shared through the store (Azure workers).

In Azure a run's activities pace themselves within the grant the account's Durable Entity gave
them (:mod:`exporter.activecampaign.grants`); but when ActiveCampaign answers 429 (or a bulk
"Rate limit exceeded.") with a wait — because something outside the exporter used the account
too — every worker of the account must wait, not only the one told, and the others may be
activities of other runs on other instances. They all read this note
(``state/_accounts/<api hostname>.json`` in the store) before each request, and the one told
raises it. It is not a lock:
one small object, read per request, written only on a throttle (ETag-conditioned, so a later
wait never replaces a longer one). A note that cannot be read is no wait: it is a pacing aid,
never the record of anything sent.
"""

from __future__ import annotations

import json
import logging
import re

from exporter.storage.store import ObjectNotFound, PreconditionFailed, Store

logger = logging.getLogger(__name__)

_SAFE = re.compile(r"[^A-Za-z0-9.-]")
_ATTEMPTS = 3


def note_path(hostname: str) -> str:
    """The note of the account at ``hostname``."""
    return f"state/_accounts/{_SAFE.sub('_', hostname.lower())}.json"


class StoreBlockNote:
    """A :class:`~exporter.activecampaign.ledger.BlockNote` in one store object."""

    def __init__(self, store: Store, hostname: str) -> None:
        self._store = store
        self.path = note_path(hostname)

    def until(self) -> float:
        try:
            return _parse(self._store.read_bytes(self.path))
        except ObjectNotFound:
            return 0.0

    def hold_until(self, until: float) -> None:
        data = json.dumps({"blocked_until": until}).encode()
        for _ in range(_ATTEMPTS):
            try:
                current, etag = self._store.read_with_etag(self.path)
            except ObjectNotFound:
                current, etag = b"", None
            if _parse(current) >= until:
                return
            try:
                if etag is None:
                    self._store.write_bytes(self.path, data, if_none_match=True)
                else:
                    self._store.write_bytes(self.path, data, if_match=etag)
                return
            except PreconditionFailed:
                continue  # another worker wrote meanwhile: look again
        logger.warning("could not record the account's wait in %s", self.path)


def _parse(data: bytes) -> float:
    try:
        return float(json.loads(data).get("blocked_until", 0.0)) if data.strip() else 0.0
    except (ValueError, TypeError, AttributeError):
        return 0.0
