"""Per-export incremental state: what this export last confirmed for every contact it sent.

One compact object per export, ``state/<export>/state.bin``. For each contact the state holds

- the 64-bit *key hash* of its key (the lower-cased email, :func:`hash64`), sorted ascending,
  which is the index every lookup uses;
- the :func:`exporter.planning.contacts.fingerprint` of the payload last confirmed;
- flags: whether *this export* subscribed it (only then may a leaver be unsubscribed),
  whether a profile id is known, and whether an unconfirmed outcome makes it *stale* (sent
  again next run whatever its fingerprint);
- the hash of its profile id (recognises an email change), 0 when none;
- the key itself, UTF-8, in one compressed blob: leavers are unsubscribed by address, and a
  doubtful hash hit is settled by comparing addresses (see :mod:`exporter.incremental.diff`), so a
  hash
  collision can never silently lose a contact.

A 64-bit hash collision between two different keys has probability about n²/2⁶⁵, ≈2.7e-8 for a
million keys. What it would cost: the state holds one entry per hash, so of two colliding keys
one is "new" on every run and sent again (a wasted request, nothing lost); the stored one is a
leaver only when its own address is missing from the snapshot.

The state only moves on confirmation: a run collects a :class:`StateUpdate` (sends and
unsubscriptions ActiveCampaign confirmed, leavers dropped without unsubscribing) and
:func:`apply` builds the next state from it. Whatever was not confirmed keeps its old entry, so
the next run retries it without anyone having to remember.

Binary format, version 1 (all integers little-endian)::

    magic  b"ACXSTATE"         8 bytes
    version u16, hash_algorithm u16, count u64, snapshot_count u64
    6 sections, in order: key hashes, fingerprints, profile hashes, flags, key lengths (u32),
        keys (UTF-8, concatenated); each is  codec u8, stored_length u64, raw_length u64, data
        (codec 0 = raw, 1 = zlib, 2 = lzma, 3 = ascending u64: deltas, byte planes, zlib)
    checksum: BLAKE2b-128 of everything before it   16 bytes
"""

from __future__ import annotations

import hashlib
import logging
import lzma
import struct
import zlib
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from exporter.errors import StateCorrupt
from exporter.planning.contacts import PreparedContact
from exporter.storage.store import ObjectNotFound, Store

logger = logging.getLogger(__name__)

U64 = npt.NDArray[np.uint64]
U8 = npt.NDArray[np.uint8]
I64 = npt.NDArray[np.int64]

SUBSCRIBED_BY_US = 1
"""Flag bit: this export subscribed the contact (so it may unsubscribe it when it leaves)."""
HAS_PROFILE = 2
"""Flag bit: the profile-hash column holds the hash of a profile id."""
STALE = 4
"""Flag bit: ActiveCampaign may have applied more than the state knows (an outcome that was
never confirmed either way); the next run sends the contact whatever its fingerprint."""
_KNOWN_FLAGS = SUBSCRIBED_BY_US | HAS_PROFILE | STALE

MAGIC = b"ACXSTATE"
FORMAT_VERSION = 1
HASH_ALGORITHM = 1
"""1 = :func:`hash64` as written here. Changing the hash function means a new number."""
_HEADER = struct.Struct("<8sHHQQ")
_SECTION = struct.Struct("<BQQ")
_CHECKSUM_BYTES = 16
_RAW, _ZLIB, _LZMA, _DELTAS = 0, 1, 2, 3

# --- the key hash ---------------------------------------------------------------------------

_SEED = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31 = np.uint64(30), np.uint64(27), np.uint64(31)


_HASH_CHUNK = 1 << 14


def hash64(items: Sequence[bytes]) -> U64:
    """64-bit hashes of byte strings, vectorised (about 3x faster than BLAKE2b per key).

    Each string is read as little-endian 64-bit words (zero-padded); every non-zero word is
    folded in with the SplitMix64 finaliser: ``h = mix(h ^ word)``. All-zero words are skipped so
    the result does not depend on the padding (keys never contain NUL bytes). Not
    cryptographic: collisions only cost a resend (see the module docstring). Persisted in state
    files: any change needs a new ``HASH_ALGORITHM``.
    """
    if len(items) <= _HASH_CHUNK:
        return _hash_chunk(items)
    return np.concatenate(
        [_hash_chunk(items[lo : lo + _HASH_CHUNK]) for lo in range(0, len(items), _HASH_CHUNK)]
    )


def _hash_chunk(items: Sequence[bytes]) -> U64:
    if not items:
        return np.zeros(0, dtype=np.uint64)
    fixed = np.array(items, dtype=bytes)
    width = fixed.dtype.itemsize
    if width % 8:
        fixed = fixed.astype(f"S{width + 8 - width % 8}")
    words = fixed.view("<u8").reshape(len(items), -1)
    h = np.full(len(items), _SEED, dtype=np.uint64)
    for column in range(words.shape[1]):
        word = words[:, column]
        m = h ^ word
        m ^= m >> _S30
        m *= _M1
        m ^= m >> _S27
        m *= _M2
        m ^= m >> _S31
        np.copyto(h, m, where=word != 0)
    return h


def key_hash(key: str) -> int:
    """The key hash of one contact key (the lower-cased email)."""
    return int(hash64([key.encode()])[0])


class HashIndex:
    """Finds key hashes in a sorted hash array, vectorised, in ~2 memory accesses per lookup.

    A binary search (``np.searchsorted``) over a million hashes misses the cache about eight
    times per lookup; a directory of bucket starts by the hash's top bits (about one entry per
    bucket, since the hashes are uniform) leaves a short forward scan in one or two cache lines.
    """

    def __init__(self, hashes: U64) -> None:
        self.hashes = hashes
        bits = max(1, int(len(hashes) - 1).bit_length())
        self._shift = np.uint64(64 - bits)
        starts = np.zeros((1 << bits) + 1, np.int64)
        np.cumsum(
            np.bincount((hashes >> self._shift).astype(np.int64), minlength=1 << bits),
            out=starts[1:],
        )
        self._starts = starts

    def find(self, wanted: U64) -> I64:
        """Position of each wanted hash in ``hashes``, or -1 where absent."""
        bucket = (wanted >> self._shift).astype(np.int64)
        pos, end = self._starts[bucket], self._starts[bucket + 1]
        scanning = np.flatnonzero(pos < end)
        while len(scanning):
            behind = self.hashes[pos[scanning]] < wanted[scanning]
            scanning = scanning[behind]
            pos[scanning] += 1
            scanning = scanning[pos[scanning] < end[scanning]]
        found = pos < end
        found[found] = self.hashes[pos[found]] == wanted[found]
        return np.where(found, pos, -1)


# --- the state ------------------------------------------------------------------------------


class StateEntry(NamedTuple):
    """One contact as the state remembers it."""

    email: str
    """The contact key (lower-cased email) as sent."""
    fingerprint: int
    """Fingerprint of the payload ActiveCampaign last confirmed."""
    subscribed_by_us: bool
    """This export subscribed the contact (a leaver is unsubscribed only then)."""
    profile_hash: int | None
    """:func:`hash64` of the profile id, when the export maps one."""


def _frozen(a: npt.NDArray[np.generic]) -> npt.NDArray[np.generic]:
    a.flags.writeable = False
    return a


@dataclass(frozen=True, eq=False)
class ExportState:
    """An export's state: parallel arrays sorted by key hash, plus the keys' UTF-8 blob.

    Immutable; :func:`apply` returns a new one. Entry ``i`` has key hash ``hashes[i]`` and key
    ``emails[offsets[i]:offsets[i + 1]]``.
    """

    hashes: U64
    """Key hashes, strictly ascending."""
    fingerprints: U64
    """Payload fingerprints of the last confirmed sends."""
    profiles: U64
    """Profile-id hashes (meaningful where ``flags & HAS_PROFILE``)."""
    flags: U8
    """``SUBSCRIBED_BY_US`` | ``HAS_PROFILE`` bits."""
    offsets: I64
    """``len + 1`` offsets into ``emails``."""
    emails: bytes | bytearray
    """The keys, UTF-8, concatenated in hash order (a ``bytearray`` when :func:`apply` built
    it in place: copying ten million keys into ``bytes`` would cost another 300 MB)."""
    snapshot_count: int = 0
    """Contacts in the last applied snapshot (what the shrink guard compares with)."""

    def __post_init__(self) -> None:
        for a in (self.hashes, self.fingerprints, self.profiles, self.flags, self.offsets):
            _frozen(a)

    @classmethod
    def empty(cls) -> ExportState:
        """The state of an export that never ran."""
        return cls(
            hashes=np.zeros(0, np.uint64),
            fingerprints=np.zeros(0, np.uint64),
            profiles=np.zeros(0, np.uint64),
            flags=np.zeros(0, np.uint8),
            offsets=np.zeros(1, np.int64),
            emails=b"",
        )

    def __len__(self) -> int:
        return len(self.hashes)

    def email_at(self, i: int) -> str:
        """The key of entry ``i``."""
        return self.emails[int(self.offsets[i]) : int(self.offsets[i + 1])].decode()

    def index_of(self, key: str) -> int | None:
        """Position of ``key``, or ``None``. A hash hit counts only if the address matches."""
        return self._index_of(key_hash(key), key.encode())

    def _index_of(self, h: int, key: bytes) -> int | None:
        i = int(np.searchsorted(self.hashes, np.uint64(h)))
        if i < len(self) and int(self.hashes[i]) == h:
            start, end = int(self.offsets[i]), int(self.offsets[i + 1])
            if self.emails[start:end] == key:
                return i
        return None

    def entry_at(self, i: int) -> StateEntry:
        """Entry ``i`` as a :class:`StateEntry`."""
        flags = int(self.flags[i])
        return StateEntry(
            email=self.email_at(i),
            fingerprint=int(self.fingerprints[i]),
            subscribed_by_us=bool(flags & SUBSCRIBED_BY_US),
            profile_hash=int(self.profiles[i]) if flags & HAS_PROFILE else None,
        )

    def get(self, key: str) -> StateEntry | None:
        """The entry for ``key`` (the lower-cased email), or ``None``."""
        i = self.index_of(key)
        return None if i is None else self.entry_at(i)

    def entries(self) -> Iterator[StateEntry]:
        """Every entry, in hash order (tests and tooling; a run never needs this)."""
        for i in range(len(self)):
            yield self.entry_at(i)

    def nbytes(self) -> int:
        """Memory held by the arrays and the key blob."""
        arrays = (self.hashes, self.fingerprints, self.profiles, self.flags, self.offsets)
        return sum(a.nbytes for a in arrays) + len(self.emails)

    # --- binary format ---------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """The version-1 binary encoding (see the module docstring)."""
        return bytes(self.encode())

    def encode(self) -> bytearray:
        """:meth:`to_bytes` without the final copy: sections are appended one by one to one
        buffer (a large ``bytearray`` grows in place), so ten million contacts never hold the
        state, every compressed section and their concatenation at once."""
        out = bytearray(
            _HEADER.pack(MAGIC, FORMAT_VERSION, HASH_ALGORITHM, len(self), self.snapshot_count)
        )
        # Fingerprints are uniformly random: compressing them only costs time. Sorted hashes
        # are not: their deltas' high bytes are mostly zero (saves ~2 of 8 bytes).
        _put_section(out, _le(self.hashes, "<u8"), _DELTAS, level=1)
        _put_section(out, _le(self.fingerprints, "<u8"), _RAW)
        _put_section(out, _le(self.profiles, "<u8"), _ZLIB, level=1)
        _put_section(out, _le(self.flags, "u1"), _ZLIB, level=6)
        _put_section(out, _le(np.diff(self.offsets), "<u4"), _ZLIB, level=6)
        _put_section(out, self.emails, _ZLIB, level=6)
        out += hashlib.blake2b(out, digest_size=_CHECKSUM_BYTES).digest()
        return out

    @classmethod
    def from_bytes(cls, data: bytes, *, source: str = "state") -> ExportState:
        """Decode :meth:`to_bytes`. Raises :class:`StateCorrupt` naming ``source``."""
        return _decode(data, source)


def _le(a: npt.NDArray[np.generic], dtype: str) -> memoryview:
    """The array's bytes in little-endian ``dtype``, without a copy where it already is."""
    contiguous: Any = np.ascontiguousarray(a.astype(dtype, copy=False))
    return memoryview(contiguous).cast("B")


def _put_section(
    out: bytearray, raw: bytes | bytearray | memoryview, codec: int, *, level: int = 6
) -> None:
    """Append one section (header, then data) to ``out``."""
    data: bytes | bytearray | memoryview = raw
    if codec == _ZLIB:
        data = zlib.compress(raw, level)
        if len(data) >= len(raw):
            codec, data = _RAW, raw
    elif codec == _LZMA:
        data = lzma.compress(raw, preset=level)
    elif codec == _DELTAS:
        values = np.frombuffer(raw, "<u8")
        deltas = np.diff(values, prepend=np.uint64(0)).astype("<u8", copy=False)
        planes = deltas.view(np.uint8).reshape(-1, 8).T.tobytes()
        del deltas
        data = zlib.compress(planes, level)
    out += _SECTION.pack(codec, len(data), len(raw))
    out += data


def _undo_deltas(planes: bytes) -> bytes:
    deltas = np.frombuffer(planes, np.uint8).reshape(8, -1).T.copy().view("<u8")
    return np.cumsum(deltas, dtype=np.uint64).astype("<u8").tobytes()


class _Reader:
    def __init__(self, data: memoryview, source: str) -> None:
        self.data = data
        self.pos = 0
        self.source = source

    def fail(self, why: str) -> StateCorrupt:
        return StateCorrupt(self.source, why)

    def take(self, n: int, what: str) -> memoryview:
        if self.pos + n > len(self.data):
            raise self.fail(f"truncated in {what}")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def section(self, what: str, expected_raw: int | None) -> bytes:
        codec, stored, raw = _SECTION.unpack(self.take(_SECTION.size, what))
        if expected_raw is not None and raw != expected_raw:
            raise self.fail(f"{what}: {raw} bytes, expected {expected_raw}")
        data = self.take(stored, what)
        try:
            if codec == _RAW:
                out = bytes(data)
            elif codec == _ZLIB:
                out = zlib.decompress(data)
            elif codec == _LZMA:
                out = lzma.decompress(data)
            elif codec == _DELTAS and raw % 8 == 0:
                out = _undo_deltas(zlib.decompress(data))
            else:
                raise self.fail(f"{what}: unknown codec {codec}")
        except (zlib.error, lzma.LZMAError, ValueError) as exc:
            raise self.fail(f"{what}: cannot decompress ({exc})") from None
        if len(out) != raw:
            raise self.fail(f"{what}: {len(out)} bytes after decompression, expected {raw}")
        return out


def _decode(data: bytes, source: str) -> ExportState:
    view = memoryview(data)
    reader = _Reader(view[:-_CHECKSUM_BYTES] if len(data) >= _CHECKSUM_BYTES else view, source)
    magic, version, algorithm, count, snapshot_count = _HEADER.unpack(
        reader.take(_HEADER.size, "header")
    )
    if magic != MAGIC:
        raise reader.fail("not an exporter state file (bad magic)")
    if version != FORMAT_VERSION:
        raise reader.fail(f"format version {version}; this exporter reads {FORMAT_VERSION}")
    if algorithm != HASH_ALGORITHM:
        raise reader.fail(f"key hash algorithm {algorithm}; this exporter uses {HASH_ALGORITHM}")
    if len(data) < _HEADER.size + _CHECKSUM_BYTES:
        raise reader.fail("truncated")
    body, digest = view[:-_CHECKSUM_BYTES], view[-_CHECKSUM_BYTES:]
    if hashlib.blake2b(body, digest_size=_CHECKSUM_BYTES).digest() != digest:
        raise reader.fail("checksum mismatch (truncated or damaged)")
    hashes = np.frombuffer(reader.section("key hashes", count * 8), "<u8").astype(np.uint64)
    fps = np.frombuffer(reader.section("fingerprints", count * 8), "<u8").astype(np.uint64)
    profiles = np.frombuffer(reader.section("profiles", count * 8), "<u8").astype(np.uint64)
    flags = np.frombuffer(reader.section("flags", count), np.uint8).copy()
    lengths = np.frombuffer(reader.section("key lengths", count * 4), "<u4")
    offsets = np.zeros(count + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    emails = reader.section("keys", int(offsets[-1]))
    if reader.pos != len(reader.data):
        raise reader.fail(f"{len(reader.data) - reader.pos} unexpected trailing bytes")
    if count > 1 and not bool(np.all(hashes[1:] > hashes[:-1])):
        raise reader.fail("key hashes are not strictly ascending")
    if bool(np.any(flags & ~np.uint8(_KNOWN_FLAGS))):
        raise reader.fail("unknown flag bits")
    return ExportState(hashes, fps, profiles, flags, offsets, emails, int(snapshot_count))


# --- the store ------------------------------------------------------------------------------


def state_path(export: str) -> str:
    """Store path of an export's state."""
    return f"state/{export}/state.bin"


def load(store: Store, export: str) -> tuple[ExportState, str | None]:
    """The export's state and its ETag; an empty state and ``None`` if it never ran.

    Pass the ETag to :func:`save` so a concurrent run's state is never overwritten.
    Raises :class:`StateCorrupt` when the object is damaged.
    """
    path = state_path(export)
    try:
        data, etag = store.read_with_etag(path)
    except ObjectNotFound:
        return ExportState.empty(), None
    return ExportState.from_bytes(data, source=path), etag


def save(store: Store, export: str, state: ExportState, *, if_match: str | None) -> str:
    """Write the state atomically, only if it is still the version read (``if_match``; ``None``
    means "only if there is none yet"). Returns the new ETag; raises
    :class:`exporter.storage.store.PreconditionFailed` when another run saved in between."""
    path = state_path(export)
    data = state.encode()
    if if_match is None:
        etag = store.write_bytes(path, data, if_none_match=True)
    else:
        etag = store.write_bytes(path, data, if_match=if_match)
    logger.info("saved state %s: %d contacts, %d bytes", path, len(state), len(data))
    return etag


# --- moving the state -----------------------------------------------------------------------


class KeyList:
    """Byte strings appended one by one, stored compactly (a million keys must not cost 70 MB
    of ``str`` objects)."""

    def __init__(self) -> None:
        self.blob = bytearray()
        self.lengths = array("I")

    def add(self, key: bytes) -> None:
        self.blob += key
        self.lengths.append(len(key))

    def __len__(self) -> int:
        return len(self.lengths)

    def offsets(self) -> I64:
        offsets = np.zeros(len(self.lengths) + 1, np.int64)
        np.cumsum(np.frombuffer(self.lengths, np.uint32), out=offsets[1:])
        return offsets

    def __iter__(self) -> Iterator[bytes]:
        # Slices of a view: copying the whole blob first would double its memory.
        blob, pos = memoryview(self.blob), 0
        for n in self.lengths:
            yield bytes(blob[pos : pos + n])
            pos += n

    def hashes(self) -> U64:
        """:func:`hash64` of every key, a chunk at a time (bounded memory)."""
        parts, chunk = [np.zeros(0, np.uint64)], []
        for key in self:
            chunk.append(key)
            if len(chunk) == _HASH_CHUNK:
                parts.append(_hash_chunk(chunk))
                chunk = []
        parts.append(_hash_chunk(chunk))
        return np.concatenate(parts)


class StateUpdate:
    """What a run confirmed, collected as it goes; :func:`apply` turns it into the next state.

    Record only what ActiveCampaign confirmed. Anything not recorded keeps its old entry (a
    failed *changed* contact keeps its old fingerprint and is "changed" again next run; a failed
    *new* one stays absent; a leaver whose unsubscription failed stays, and leaves again).
    """

    def __init__(self, *, snapshot_count: int | None = None) -> None:
        self.snapshot_count = snapshot_count
        """Contacts in this run's snapshot; ``None`` keeps the state's previous count."""
        self._sent = KeyList()
        self._fingerprints = array("Q")
        self._flags = array("B")
        self._profiles = KeyList()
        self._removed = KeyList()
        self.confirmed = 0
        """Sends recorded by :meth:`confirm_sent`."""
        self.left = 0
        """Leavers whose unsubscription was confirmed."""
        self.dropped = 0
        """Leavers removed without unsubscribing (policy ``keep`` or not subscribed by us)."""
        self._stale = KeyList()
        self.uncertain = 0
        """Sends and unsubscriptions recorded with an unknown outcome."""

    def confirm_sent(self, contact: PreparedContact, *, subscribed: bool = True) -> None:
        """ActiveCampaign confirmed this contact: remember its fingerprint (and profile id).

        ``subscribed``: the payload subscribed it to the list (so this export may unsubscribe
        it when it leaves).
        """
        self._record(contact, SUBSCRIBED_BY_US if subscribed else 0)
        self.confirmed += 1

    def _record(self, contact: PreparedContact, flags: int) -> None:
        self._sent.add(contact.key.encode())
        self._fingerprints.append(contact.fingerprint)
        if contact.profile_id:
            flags |= HAS_PROFILE
            self._profiles.add(contact.profile_id.encode())
        else:
            self._profiles.add(b"")
        self._flags.append(flags)

    def confirm_left(self, key: str) -> None:
        """ActiveCampaign confirmed the leaver's unsubscription: forget the contact."""
        self._removed.add(key.encode())
        self.left += 1

    def drop(self, key: str) -> None:
        """Forget a leaver without unsubscribing it (nothing to confirm)."""
        self._removed.add(key.encode())
        self.dropped += 1

    def mark_uncertain(self, contact: PreparedContact) -> None:
        """The send's outcome is unknown (it may or may not have been applied, e.g. a batch
        whose status could not be read): remember the contact as possibly subscribed by us,
        and make the next run send it again whatever its fingerprint."""
        self._record(contact, SUBSCRIBED_BY_US | STALE)
        self.uncertain += 1

    def _release_columns(self) -> None:
        """Free the per-contact columns (:func:`apply` with ``consume``)."""
        self._fingerprints = array("Q")
        self._flags = array("B")
        self._profiles = KeyList()

    def _release_keys(self) -> None:
        """Free the confirmed keys (:func:`apply` with ``consume``)."""
        self._sent = KeyList()

    def mark_uncertain_left(self, key: str) -> None:
        """A leaver's unsubscription has an unknown outcome: keep it in state (it is retried
        while it stays away), and send it again should it come back."""
        self._stale.add(key.encode())
        self.uncertain += 1


_GATHER_CHUNK = 1 << 16


def _last_confirmations(hashes: U64) -> I64:
    """Positions of the last occurrence of every distinct hash, in ascending hash order
    (last confirmation wins). One stable argsort: ``np.unique`` would sort a copy again."""
    order = np.argsort(hashes, kind="stable")
    ordered = hashes[order]
    last = np.ones(len(order), bool)
    last[:-1] = ordered[1:] != ordered[:-1]
    return order[last]


def apply(state: ExportState, update: StateUpdate, *, consume: bool = False) -> ExportState:
    """The next state: ``state`` with ``update``'s removals, then its confirmed sends.

    Entries the update does not mention are carried over untouched. When a key was confirmed
    twice the last confirmation wins.

    Memory: the old and the new state plus one column's temporaries at a time (each column
    is merged on its own, by destination positions, instead of concatenating every column and
    sorting the lot). With ``consume`` both inputs are *spent*: each column of the old state
    and of the update is released as soon as its merged column is built, so a run over ten
    million contacts never holds two whole states (or a whole update and a whole state) at
    once. A spent state is empty and must not be used again; only the caller that loaded it
    (finalize) should pass ``consume``.
    """
    spent = [state]
    snapshot_count = (
        state.snapshot_count if update.snapshot_count is None else update.snapshot_count
    )
    n = len(state)
    keep = np.ones(n, bool)
    removed = update._removed
    for h, key in zip(removed.hashes().tolist(), removed, strict=True):
        i = state._index_of(h, key)
        if i is not None:
            keep[i] = False
    flags = state.flags
    if len(update._stale):
        flags = flags.copy()
        for h, key in zip(update._stale.hashes().tolist(), update._stale, strict=True):
            i = state._index_of(h, key)
            if i is not None:
                flags[i] |= STALE
        state = replace(state, flags=flags)
        spent.append(state)
    sent = update._sent
    if not len(sent) and bool(keep.all()):
        return replace(state, snapshot_count=snapshot_count)

    sent_hashes = sent.hashes()
    pick = _last_confirmations(sent_hashes)  # ascending by hash
    up_hashes = sent_hashes[pick]
    del sent_hashes
    if n:
        at = np.minimum(np.searchsorted(state.hashes, up_hashes), n - 1)
        keep[at[state.hashes[at] == up_hashes]] = False  # replaced by the confirmed send
    kept = np.flatnonzero(keep)
    del keep
    kept_hashes = state.hashes[kept]
    # Where each confirmed send lands in the merged order; the kept entries fill the rest.
    up_dest = np.searchsorted(kept_hashes, up_hashes) + np.arange(len(up_hashes))
    total = len(kept) + len(up_hashes)
    old_dest = np.ones(total, bool)
    old_dest[up_dest] = False

    def merged(old: npt.NDArray[np.generic], new: npt.NDArray[np.generic]) -> Any:
        out = np.empty(total, old.dtype)
        out[old_dest] = old
        out[up_dest] = new
        return out

    def spend(column: str) -> None:
        if consume:
            for s in spent:
                object.__setattr__(s, column, _EMPTY[column])

    hashes = merged(kept_hashes, up_hashes)
    del kept_hashes, up_hashes
    spend("hashes")
    fingerprints = merged(
        state.fingerprints[kept], np.frombuffer(update._fingerprints, np.uint64)[pick]
    )
    spend("fingerprints")
    profiles = merged(state.profiles[kept], _profile_hashes(update._profiles)[pick])
    spend("profiles")
    new_flags = merged(state.flags[kept], np.frombuffer(update._flags, np.uint8)[pick])
    spend("flags")
    if consume:
        update._release_columns()

    up_offsets = sent.offsets()
    up_starts, up_lengths = up_offsets[:-1][pick], np.diff(up_offsets)[pick]
    del up_offsets
    old_starts = state.offsets[:-1][kept]
    old_lengths = (state.offsets[1:][kept] - old_starts).astype(np.int64)
    spend("offsets")
    lengths = merged(old_lengths, up_lengths)
    offsets = np.zeros(total + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    del lengths
    emails = bytearray(int(offsets[-1]))
    # Each key is copied straight to its place in the merged order (old keys, then new ones),
    # into a buffer the new state keeps: no concatenated copy of both sources, no final copy.
    out = np.frombuffer(emails, np.uint8)
    _scatter_keys(
        out,
        offsets,
        np.flatnonzero(old_dest),
        np.frombuffer(state.emails, np.uint8),
        old_starts,
        old_lengths,
    )
    del old_starts, old_lengths
    spend("emails")
    _scatter_keys(out, offsets, up_dest, np.frombuffer(sent.blob, np.uint8), up_starts, up_lengths)
    del out
    if consume:
        update._release_keys()
    return ExportState(
        hashes=hashes,
        fingerprints=fingerprints,
        profiles=profiles,
        flags=new_flags,
        offsets=offsets,
        emails=emails,
        snapshot_count=snapshot_count,
    )


_EMPTY: dict[str, object] = {
    "hashes": _frozen(np.zeros(0, np.uint64)),
    "fingerprints": _frozen(np.zeros(0, np.uint64)),
    "profiles": _frozen(np.zeros(0, np.uint64)),
    "flags": _frozen(np.zeros(0, np.uint8)),
    "offsets": _frozen(np.zeros(1, np.int64)),
    "emails": b"",
}
"""What a spent state's columns become (:func:`apply` with ``consume``)."""


def _scatter_keys(out: U8, offsets: I64, dest: I64, buffer: U8, starts: I64, lengths: I64) -> None:
    """Copy key ``k`` (``buffer[starts[k]:starts[k]+lengths[k]]``) to ``out`` at
    ``offsets[dest[k]]``, a chunk of keys at a time."""
    for lo in range(0, len(starts), _GATHER_CHUNK):
        s, n = starts[lo : lo + _GATHER_CHUNK], lengths[lo : lo + _GATHER_CHUNK]
        total = int(n.sum())
        if not total:
            continue
        within = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(n) - n, n)
        src = np.repeat(s, n) + within
        dst = np.repeat(offsets[dest[lo : lo + _GATHER_CHUNK]], n) + within
        out[dst] = buffer[src]


def _profile_hashes(profiles: KeyList) -> U64:
    hashes = profiles.hashes()
    hashes[np.frombuffer(profiles.lengths, np.uint32) == 0] = 0
    return hashes
