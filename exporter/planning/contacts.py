"""The shapes that flow between the steps of a run, and their one wire encoding.

A row of a snapshot becomes either a :class:`PreparedContact` (ready to send) or a
:class:`Rejection` (with a reason). Prepared contacts are grouped into :class:`Batch` es, each
one bulk-import request. Chunk files (the hand-over between *prepare* and *push*, on disk or in
blob storage) hold one batch per line: :mod:`exporter.planning.chunks`.

The bulk-import body is built in exactly one place, :func:`encode_bulk_body`, so the batch
planner measures the very bytes the client sends.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

BULK_MAX_CONTACTS = 250
"""ActiveCampaign: at most 250 contacts per bulk-import request."""

BULK_MAX_BODY_BYTES = 399_999
"""ActiveCampaign: the raw JSON body must stay *below* 400,000 bytes (some sources say 399,999;
we stay at or under 399,999)."""


def dumps(obj: Any) -> str:
    """Compact, deterministic JSON: the only serialiser used for anything sent or fingerprinted."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def fingerprint(payload: str) -> int:
    """A 64-bit fingerprint of a contact's serialised payload (what incremental sync compares)."""
    return int.from_bytes(hashlib.blake2b(payload.encode(), digest_size=8).digest(), "little")


@dataclass(slots=True, eq=True)
class PreparedContact:
    """One valid, de-duplicated contact, serialised once.

    ``payload`` is the contact's bulk-import object as compact JSON (``email``, optional
    ``first_name``/``last_name``/``phone``, ``fields``, ``tags``, ``subscribe`` or
    ``unsubscribe``). ``key`` is the lower-cased email: a contact's identity.

    Not frozen on purpose: a frozen dataclass's ``__init__`` costs several times more, and one
    is built per input row (the prepare step's budget is a few microseconds a row). Treat
    instances as immutable all the same.
    """

    row: int
    """1-based data row number in ``source`` (the header, if any, is not counted)."""
    source: str
    """The snapshot file (partition) the row came from."""
    key: str
    """Case-folded email: identity for de-duplication, diffs and import failures."""
    payload: str
    """The bulk-import contact object, compact JSON (see :func:`dumps`)."""
    fingerprint: int
    """:func:`fingerprint` of ``payload``."""
    profile_id: str | None = None
    """The stable profile id, when the export maps one (email changes are recognised by it)."""
    size: int = field(default=-1, compare=False, repr=False)
    """UTF-8 byte length of ``payload`` when the maker already knows it (the mapper encodes the
    payload once for the fingerprint), else -1; read it through :attr:`payload_bytes`."""
    encoded: bytes | None = field(default=None, compare=False, repr=False)
    """``payload`` as UTF-8 when the maker already encoded it (so a chunk writer need not
    encode it again), else None."""

    @property
    def payload_bytes(self) -> int:
        """UTF-8 byte length of ``payload`` (what it adds to a bulk-import body)."""
        size = self.size
        if size >= 0:
            return size
        p = self.payload
        return len(p) if p.isascii() else len(p.encode())


@dataclass(frozen=True, slots=True)
class Rejection:
    """A row that will not be sent, and why. ``values`` are the mapped values as read."""

    row: int
    source: str
    reason: str
    """Machine-readable reason code, e.g. ``invalid_email``, ``missing_email``,
    ``api_rejected``, ``invalid_field_value``."""
    message: str
    """Human-readable explanation (may quote ActiveCampaign's own failure reason)."""
    column: str | None = None
    values: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Batch:
    """One bulk-import request's worth of contacts (at most 250, body below 400,000 bytes)."""

    index: int
    """Position of the batch in the run (0-based, unique within a run)."""
    contacts: list[PreparedContact]


_BODY_PREFIX = '{"contacts":['


def _body_suffix(exclude_automations: bool) -> str:
    return "]" + (',"exclude_automations":true' if exclude_automations else "") + "}"


def encode_bulk_body(payloads: Sequence[str], *, exclude_automations: bool) -> bytes:
    """The exact bulk-import request body for these serialised contacts."""
    return (_BODY_PREFIX + ",".join(payloads) + _body_suffix(exclude_automations)).encode()


def bulk_body_size(payload_sizes: Sequence[int], *, exclude_automations: bool) -> int:
    """Byte length of :func:`encode_bulk_body` for payloads of these UTF-8 sizes, without
    building it: prefix + payloads + commas between them + suffix."""
    commas = max(len(payload_sizes) - 1, 0)
    return len(_BODY_PREFIX) + sum(payload_sizes) + commas + len(_body_suffix(exclude_automations))
