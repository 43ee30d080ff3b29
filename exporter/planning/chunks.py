"""Chunk files: one batch per line, the hand-over between *prepare* and *push* (and read again
by confirm and finalize). One encoder, :func:`encode_batch_line` (the one prepare writes
with), and its inverse, :func:`decode_batch_line`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from json.encoder import encode_basestring as _json_str  # what contacts.dumps uses for str

from exporter.planning.columns import ColumnBatch
from exporter.planning.contacts import Batch, PreparedContact, dumps

_ENTRY_PLAIN_KEY = b'{"row":%d,"source":%b,"key":"%b","fp":%d,"pid":%b,"payload":%b}'
_ENTRY = b'{"row":%d,"source":%b,"key":%b,"fp":%d,"pid":%b,"payload":%b}'


def encode_batch_line(batch: Batch | ColumnBatch) -> bytes:
    """One line of a chunk file, newline included, as UTF-8: the batch index, and for each
    contact its row, source, key, fingerprint, profile id and raw payload.

    Built from each payload's bytes when its maker kept them (:attr:`PreparedContact.encoded`):
    encoding a whole line with non-ASCII text in it cost as much again as building it. A
    :class:`~exporter.planning.blockmap.ColumnBatch` is encoded from its columns, with no
    object per contact."""
    if isinstance(batch, ColumnBatch):
        c = batch.columns
        return _encode_columns(
            batch.index, c.rows, c.sources, c.keys, c.fingerprints, c.pids, c.encoded, c.payloads
        )
    contacts = batch.contacts
    return _encode_columns(
        batch.index,
        [c.row for c in contacts],
        [c.source for c in contacts],
        [c.key for c in contacts],
        [c.fingerprint for c in contacts],
        [c.profile_id for c in contacts],
        [c.encoded for c in contacts],
        [c.payload for c in contacts],
    )


def _encode_columns(
    index: int,
    rows: Sequence[int],
    sources: Sequence[str],
    keys: Sequence[str],
    fingerprints: Sequence[int],
    pids: Sequence[str | None],
    encoded: Sequence[bytes | None],
    payloads: Sequence[str | None],
) -> bytes:
    """:func:`encode_batch_line` from the contacts' fields, one sequence each (a payload from
    ``encoded`` where it is there, else from ``payloads``). One ``bytes %`` call formats the
    whole batch: no per-contact string formatting in Python."""
    n = len(rows)
    if not n:
        return f'{{"batch":{index},"contacts":[]}}\n'.encode()
    joined = "".join(keys)
    # (cheaper than the regex over a whole batch; a non-printable key just takes the slow path)
    if '"' in joined or "\\" in joined or not joined.isprintable():
        entry = _ENTRY
        key_column = [_json_str(k).encode() for k in keys]
    else:  # validated addresses: ASCII, nothing to escape
        entry = _ENTRY_PLAIN_KEY
        key_column = list(map(str.encode, keys))
    args: list[object] = [None] * (6 * n + 1)
    args[0] = index
    args[1::6] = rows
    first = sources[0]
    if sources.count(first) == n:
        args[2::6] = [_json_str(first).encode()] * n
    else:
        encoded_sources = {s: _json_str(s).encode() for s in set(sources)}
        args[2::6] = [encoded_sources[s] for s in sources]
    args[3::6] = key_column
    args[4::6] = fingerprints
    args[5::6] = (
        [b"null"] * n
        if pids.count(None) == n
        else [b"null" if pid is None else _json_str(pid).encode() for pid in pids]
    )
    args[6::6] = (
        encoded
        if encoded.count(None) == 0
        else [p.encode() if e is None else e for e, p in zip(encoded, payloads, strict=True)]  # type: ignore[union-attr]
    )
    template = b'{"batch":%d,"contacts":[' + b",".join([entry] * n) + b"]}\n"
    return template % tuple(args)


def decode_batch_line(line: str) -> Batch:
    """Inverse of :func:`encode_batch_line`; payloads come back byte-identical.

    Chunks are read again by push, confirm and finalize, so this is on the hot path of every
    run. It slices each payload's text out of the line rather than parsing and re-serialising
    it: contacts are separated by ``},{"row":``, which cannot occur inside a payload (quotes in
    JSON strings are escaped, and no payload has a ``row`` key). A line that does not have
    the exact shape the encoder writes is decoded by the general JSON path instead.
    """
    fast = _decode_batch_line_fast(line.rstrip("\r\n"))
    return fast if fast is not None else _decode_batch_line_json(line)


_LINE_HEAD = re.compile(r'\{"batch":(\d+),"contacts":\[')
_JSON_STRING = r'"(?:[^"\\]|\\.)*"'
_CONTACT_HEAD = re.compile(
    rf'\{{"row":(\d+),"source":({_JSON_STRING}),"key":({_JSON_STRING}),"fp":(\d+),'
    rf'"pid":(null|{_JSON_STRING}),"payload":'
)


def _json_string(token: str) -> str:
    return token[1:-1] if "\\" not in token else str(json.loads(token))


def _decode_batch_line_fast(line: str) -> Batch | None:
    head = _LINE_HEAD.match(line)
    if head is None:
        return None
    body = line[head.end() :]
    if body == "]}":
        return Batch(index=int(head[1]), contacts=[])
    if not body.endswith("}}]}"):
        return None
    parts = body[:-3].split('},{"row":')  # [:-3]: the last contact's "}" and the closing "]}"
    contacts = []
    for i, part in enumerate(parts):
        segment = part if i == 0 else '{"row":' + part
        m = _CONTACT_HEAD.match(segment)
        if m is None:
            return None
        payload = segment[m.end() :]
        if not (payload.startswith("{") and payload.endswith("}")):
            return None
        pid = m[5]
        contacts.append(
            PreparedContact(
                row=int(m[1]),
                source=_json_string(m[2]),
                key=_json_string(m[3]),
                payload=payload,
                fingerprint=int(m[4]),
                profile_id=None if pid == "null" else _json_string(pid),
            )
        )
    return Batch(index=int(head[1]), contacts=contacts)


def _decode_batch_line_json(line: str) -> Batch:
    obj = json.loads(line)
    return Batch(
        index=int(obj["batch"]),
        contacts=[
            PreparedContact(
                row=int(c["row"]),
                source=str(c["source"]),
                key=str(c["key"]),
                payload=dumps(c["payload"]),
                fingerprint=int(c["fp"]),
                profile_id=c["pid"],
            )
            for c in obj["contacts"]
        ],
    )
