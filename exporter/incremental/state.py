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

The state only moves on confirmation: a run collects a
:class:`~exporter.incremental.update.StateUpdate` (sends and unsubscriptions ActiveCampaign
confirmed, leavers dropped without unsubscribing) and :func:`~exporter.incremental.update.apply`
builds the next state from it. Whatever was not confirmed keeps its old entry, so the next run
retries it without anyone having to remember.

Binary format, version 1 (all integers little-endian)::

    magic  b"ACXSTATE"         8 bytes
    version u16, hash_algorithm u16, count u64, snapshot_count u64
    6 sections, in order: key hashes, fingerprints, profile hashes, flags, key lengths (u32),
        keys (UTF-8, concatenated); each is  codec u8, stored_length u64, raw_length u64, data
        (codec 0 = raw, 1 = zlib, 2 = lzma, 3 = ascending u64: deltas, byte planes, zlib)
    checksum: BLAKE2b-128 of everything before it   16 bytes

Memory at ten million contacts (``make bench-scale``): the state is ~650 MB in memory and
~240 MB on disk. A load decompresses each section straight into its array a megabyte at a time
(never a decompressed copy beside it; an all-zero column is left untouched, so it is not
resident); :class:`StateWriter` compresses a megabyte at a time into the output, so the next
state can be encoded column by column as it is merged
(:func:`exporter.incremental.update.encode_next`) without ever existing whole.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from exporter.incremental.codec import _PIECE, StateWriter, open_reader
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
    words: U64 = fixed.view("<u8").reshape(len(items), -1)
    return hash_words(words)


def hash_words(words: U64) -> U64:
    """:func:`hash64` of keys already laid out as rows of little-endian 64-bit words
    (zero-padded)."""
    h = np.full(len(words), _SEED, dtype=np.uint64)
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


_INDEX_SLICE = 1 << 20


class HashIndex:
    """Finds key hashes in a sorted hash array, vectorised, in ~2 memory accesses per lookup.

    A binary search (``np.searchsorted``) over a million hashes misses the cache about eight
    times per lookup; a directory of bucket starts by the hash's top bits (about one entry per
    bucket, since the hashes are uniform) leaves a short forward scan in one or two cache lines.
    """

    def __init__(self, hashes: U64) -> None:
        self.hashes = hashes
        n = len(hashes)
        bits = max(1, int(n - 1).bit_length())
        self._shift = np.uint64(64 - bits)
        # One start per bucket: int32 while positions fit (at ten million contacts the
        # directory is 67 MB instead of 134), counted a slice of hashes at a time (sorted
        # hashes fill consecutive buckets), so building it needs no full-length temporary.
        dtype = np.int32 if n < 2**31 else np.int64
        starts: Any = np.zeros((1 << bits) + 1, dtype)
        for lo in range(0, n, _INDEX_SLICE):
            buckets = (hashes[lo : lo + _INDEX_SLICE] >> self._shift).astype(np.int64)
            first = int(buckets[0])
            counts = np.bincount(buckets - first)
            starts[first + 1 : first + 1 + len(counts)] += counts.astype(dtype)
        np.cumsum(starts, out=starts)
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
        return np.where(found, pos.astype(np.int64), -1)


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

    Immutable; :func:`~exporter.incremental.update.apply` returns a new one. Entry ``i`` has
    key hash ``hashes[i]`` and key ``emails[offsets[i]:offsets[i + 1]]``.
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
    """The keys, UTF-8, concatenated in hash order (a ``bytearray`` when ``apply`` built it
    or a load decompressed into it: copying ten million keys into ``bytes`` would cost another
    300 MB)."""
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
        """:meth:`to_bytes` without the final copy: sections are compressed straight into one
        buffer (a large ``bytearray`` grows in place), so ten million contacts never hold the
        state, every compressed section and their concatenation at once."""
        writer = StateWriter(len(self), self.snapshot_count)
        for name in StateWriter.COLUMNS:
            writer.column(name, getattr(self, name))
        writer.key_lengths(np.diff(self.offsets))
        keys = memoryview(self.emails)
        writer.keys(keys[lo : lo + _PIECE] for lo in range(0, len(keys), _PIECE))
        return writer.finish()

    @classmethod
    def from_bytes(cls, data: bytes, *, source: str = "state") -> ExportState:
        """Decode :meth:`to_bytes`. Raises :class:`StateCorrupt` naming ``source``."""
        return _decode(data, source)


def _decode(data: bytes | bytearray | memoryview, source: str) -> ExportState:
    reader, count, snapshot_count = open_reader(data, source)
    hashes = reader.section("key hashes", count * 8, "<u8")
    fps = reader.section("fingerprints", count * 8, "<u8")
    profiles = reader.section("profiles", count * 8, "<u8")
    flags = reader.section("flags", count)
    lengths = reader.section("key lengths", count * 4, "<u4")
    offsets = np.zeros(count + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    del lengths
    emails = reader.section("keys", int(offsets[-1]), into=bytearray(int(offsets[-1])))
    if reader.pos != len(reader.data):
        raise reader.fail(f"{len(reader.data) - reader.pos} unexpected trailing bytes")
    if count > 1 and not bool(np.all(hashes[1:] > hashes[:-1])):
        raise reader.fail("key hashes are not strictly ascending")
    if bool(np.any(flags & ~np.uint8(_KNOWN_FLAGS))):
        raise reader.fail("unknown flag bits")
    return ExportState(hashes, fps, profiles, flags, offsets, emails, snapshot_count)


def _subscribed(data: bytes | bytearray | memoryview, source: str) -> U64:
    reader, count, _snapshot_count = open_reader(data, source)
    hashes = reader.section("key hashes", count * 8, "<u8")
    reader.skip("fingerprints")
    reader.skip("profiles")
    flags = reader.section("flags", count)
    if bool(np.any(flags & ~np.uint8(_KNOWN_FLAGS))):
        raise reader.fail("unknown flag bits")
    ours: U64 = hashes[(flags & np.uint8(SUBSCRIBED_BY_US)) != 0]
    return ours


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


def load_subscribed(store: Store, export: str) -> U64:
    """The key hashes of the contacts this export subscribed, ascending (what the list-members
    read needs to tell its own contacts apart), decoding only the hashes and flags: at ten
    million contacts ~90 MB instead of the whole state's ~650 MB. Empty if it never ran."""
    path = state_path(export)
    try:
        data = store.read_bytes(path)
    except ObjectNotFound:
        return np.zeros(0, np.uint64)
    return _subscribed(data, path)


def save(
    store: Store,
    export: str,
    state: ExportState,
    *,
    if_match: str | None,
    encoded: bytes | bytearray | None = None,
) -> str:
    """Write the state atomically, only if it is still the version read (``if_match``; ``None``
    means "only if there is none yet"). Returns the new ETag; raises
    :class:`exporter.storage.store.PreconditionFailed` when another run saved in between.
    ``encoded``: :meth:`ExportState.encode` already made by the caller (not encoded twice)."""
    data = state.encode() if encoded is None else encoded
    return save_encoded(store, export, data, count=len(state), if_match=if_match)


def save_encoded(
    store: Store, export: str, data: bytes | bytearray, *, count: int, if_match: str | None
) -> str:
    """:func:`save` of a state already encoded (:func:`exporter.incremental.update.encode_next`,
    which never builds the state itself); ``count``: its contacts, for the log."""
    path = state_path(export)
    if if_match is None:
        etag = store.write_bytes(path, data, if_none_match=True)
    else:
        etag = store.write_bytes(path, data, if_match=if_match)
    logger.info("saved state %s: %d contacts, %d bytes", path, count, len(data))
    return etag
