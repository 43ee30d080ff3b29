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
"""

from __future__ import annotations

import hashlib
import logging
import lzma
import struct
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import numpy as np
import numpy.typing as npt

from exporter.errors import StateCorrupt
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


class StateWriter:
    """The version-1 encoding written section by section, in order: the four columns
    (:attr:`COLUMNS`), the key lengths, then the keys as a stream of pieces. Whoever builds a
    state column by column (:func:`exporter.incremental.update.encode_next`) can encode and free
    each one before building the next."""

    COLUMNS = ("hashes", "fingerprints", "profiles", "flags")
    # Fingerprints are uniformly random: compressing them only costs time. Sorted hashes
    # are not: their deltas' high bytes are mostly zero (saves ~2 of 8 bytes).
    _CODECS: ClassVar[dict[str, tuple[str, int, int]]] = {
        "hashes": ("<u8", _DELTAS, 1),
        "fingerprints": ("<u8", _RAW, 0),
        "profiles": ("<u8", _ZLIB, 1),
        "flags": ("u1", _ZLIB, 6),
    }
    _FALLBACK_KEYS = 1 << 20
    """Keys up to this size are kept while compressing, to be stored raw should compression
    not pay (a handful of short keys); beyond it the compressed stream is kept anyway."""

    def __init__(self, count: int, snapshot_count: int) -> None:
        self.count = count
        self.out = bytearray(
            _HEADER.pack(MAGIC, FORMAT_VERSION, HASH_ALGORITHM, count, snapshot_count)
        )
        self._next = 0

    _ORDER = (*COLUMNS, "key lengths", "keys", "checksum")

    def _step(self, what: str) -> None:
        expected = self._ORDER[min(self._next, len(self._ORDER) - 1)]
        if expected != what or self._next >= len(self._ORDER):
            raise ValueError(f"state section {what!r} out of order: expected {expected!r}")
        self._next += 1

    def column(self, name: str, values: npt.NDArray[np.generic]) -> None:
        """Append the next column (``hashes``, ``fingerprints``, ``profiles``, ``flags``)."""
        self._step(name)
        dtype, codec, level = self._CODECS[name]
        _put_section(self.out, _le(values, dtype), codec, level=level)

    def key_lengths(self, lengths: npt.NDArray[np.generic]) -> None:
        """Append every key's length in bytes."""
        self._step("key lengths")
        _put_section(self.out, _le(lengths, "<u4"), _ZLIB, level=1)

    def keys(self, pieces: Iterable[bytes | bytearray | memoryview]) -> None:
        """Append the keys, concatenated in hash order, compressed as the pieces come."""
        self._step("keys")
        out, header = self.out, len(self.out)
        out += _SECTION.pack(_ZLIB, 0, 0)
        # Level 1: a quarter of level 6's time (0.2 s instead of 1.0 s per million keys, paid by
        # every run's finalize) for a file ~10% larger.
        compressor, raw, kept = zlib.compressobj(_KEYS_LEVEL), 0, bytearray()
        for piece in pieces:
            view = memoryview(piece).cast("B")
            raw += len(view)
            if raw <= self._FALLBACK_KEYS:
                kept += view
            out += compressor.compress(view)
        out += compressor.flush()
        codec = _ZLIB
        if raw <= self._FALLBACK_KEYS and len(out) - header - _SECTION.size >= raw:
            del out[header + _SECTION.size :]  # incompressible: store it raw
            out += kept
            codec = _RAW
        _SECTION.pack_into(out, header, codec, len(out) - header - _SECTION.size, raw)

    def finish(self) -> bytearray:
        """The encoding, its checksum appended."""
        self._step("checksum")
        self.out += hashlib.blake2b(self.out, digest_size=_CHECKSUM_BYTES).digest()
        return self.out


def _le(a: npt.NDArray[np.generic], dtype: str) -> memoryview:
    """The array's bytes in little-endian ``dtype``, without a copy where it already is."""
    contiguous: Any = np.ascontiguousarray(a.astype(dtype, copy=False))
    return memoryview(contiguous).cast("B")


_KEYS_LEVEL = 1
_PIECE = 1 << 20
"""Compression works a megabyte at a time: at ten million contacts no section is ever held
twice (raw and compressed whole, or compressed and decompressed whole)."""


def _put_section(
    out: bytearray, raw: bytes | bytearray | memoryview, codec: int, *, level: int = 6
) -> None:
    """Append one section (header, then data) to ``out``, compressing straight into it."""
    raw = memoryview(raw).cast("B")
    header = len(out)
    out += _SECTION.pack(codec, 0, len(raw))
    if codec == _RAW:
        out += raw
    elif codec == _LZMA:
        out += lzma.compress(raw, preset=level)
    elif codec == _ZLIB:
        _deflate(out, (raw[lo : lo + _PIECE] for lo in range(0, len(raw), _PIECE)), level)
        if len(out) - header - _SECTION.size >= len(raw):  # incompressible: store it raw
            del out[header + _SECTION.size :]
            codec = _RAW
            out += raw
    elif codec == _DELTAS:
        _deflate(out, _delta_planes(np.frombuffer(raw, "<u8")), level)
    _SECTION.pack_into(out, header, codec, len(out) - header - _SECTION.size, len(raw))


def _deflate(out: bytearray, pieces: Iterator[bytes | memoryview], level: int) -> None:
    """One zlib stream of ``pieces``, appended to ``out`` as it is produced."""
    compressor = zlib.compressobj(level)
    for piece in pieces:
        out += compressor.compress(piece)
    out += compressor.flush()


def _delta_planes(values: npt.NDArray[np.generic]) -> Iterator[memoryview]:
    """Codec 3's raw stream: the ascending values' deltas (the first from 0), byte plane by
    byte plane (all the lowest bytes, then the next...), a piece at a time. The deltas are one
    temporary column; each plane is copied out a piece at a time."""
    deltas = np.diff(values, prepend=np.zeros(1, values.dtype)).astype("<u8", copy=False)
    columns = deltas.view(np.uint8).reshape(-1, 8)
    for plane in range(8):
        for lo in range(0, len(columns), _PIECE):
            yield np.ascontiguousarray(columns[lo : lo + _PIECE, plane]).data


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

    def skip(self, what: str) -> None:
        """Step over the next section without decoding it."""
        _codec, stored, _raw = _SECTION.unpack(self.take(_SECTION.size, what))
        self.take(stored, what)

    def section(
        self, what: str, expected_raw: int | None, dtype: str = "u1", *, into: Any = None
    ) -> Any:
        """The next section decoded into a new array of ``dtype`` (little-endian), written in
        place as it is decompressed: no decompressed copy beside the array, no second one.
        ``into``: a ``bytearray`` of the section's size to decode into instead (returned)."""
        codec, stored, raw = _SECTION.unpack(self.take(_SECTION.size, what))
        if expected_raw is not None and raw != expected_raw:
            raise self.fail(f"{what}: {raw} bytes, expected {expected_raw}")
        data = self.take(stored, what)
        itemsize = np.dtype(dtype).itemsize
        if raw % itemsize:
            raise self.fail(f"{what}: {raw} bytes is not a whole number of items")
        # Zeroed (fresh pages from the system), and runs of zeros are never written: a column
        # that is all zeros (profile hashes of an export without profile ids: 80 MB at ten
        # million contacts) then costs no resident memory at all.
        out = np.zeros(raw // itemsize, dtype) if into is None else np.frombuffer(into, np.uint8)
        target = out.view(np.uint8)
        try:
            if codec == _RAW:
                if stored != raw:
                    raise self.fail(f"{what}: {stored} bytes stored, expected {raw}")
                target[:] = np.frombuffer(data, np.uint8)
            elif codec == _ZLIB:
                self._inflate(data, target, what)
            elif codec == _LZMA:
                target[:] = self._exact(lzma.decompress(data), raw, what)
            elif codec == _DELTAS and itemsize == 8:
                # The planes land straight in their byte columns; the running sum is in place.
                self._inflate(data, target.reshape(-1, 8).T, what)
                np.cumsum(out, out=out)
            else:
                raise self.fail(f"{what}: unknown codec {codec}")
        except (zlib.error, lzma.LZMAError, ValueError) as exc:
            raise self.fail(f"{what}: cannot decompress ({exc})") from None
        return into if into is not None else out.astype(dtype.lstrip("<"), copy=False)

    def _exact(self, data: bytes, raw: int, what: str) -> U8:
        if len(data) != raw:
            raise self.fail(f"{what}: {len(data)} bytes after decompression, expected {raw}")
        return np.frombuffer(data, np.uint8)

    def _inflate(self, data: memoryview, target: npt.NDArray[np.uint8], what: str) -> None:
        """Decompress the zlib stream ``data`` into ``target`` (a 1-D array, or the transposed
        byte columns of the delta codec, filled row by row), a piece at a time."""
        flat = target.reshape(-1) if target.ndim == 1 else None
        rows, width = (1, len(target)) if flat is not None else target.shape
        room = rows * width
        pos = 0
        decompressor = zlib.decompressobj()

        def put(chunk: bytes) -> None:
            nonlocal pos
            if len(chunk) > room - pos:
                raise self.fail(f"{what}: more than {room} bytes after decompression")
            values = np.frombuffer(chunk, np.uint8)
            if flat is not None:
                if values.any():  # the target is zeroed: writing zeros would only touch pages
                    flat[pos : pos + len(chunk)] = values
            else:
                while len(values):
                    row, col = divmod(pos, width)
                    n = min(len(values), width - col)
                    target[row, col : col + n] = values[:n]
                    values, pos = values[n:], pos + n
                return
            pos += len(chunk)

        for lo in range(0, len(data), _PIECE):
            tail: bytes | memoryview = data[lo : lo + _PIECE]
            while tail:
                put(decompressor.decompress(tail, room - pos + 1))
                tail = decompressor.unconsumed_tail
        put(decompressor.flush())
        if not decompressor.eof or decompressor.unused_data:
            raise self.fail(f"{what}: the compressed stream is incomplete or has trailing bytes")
        if pos != room:
            raise self.fail(f"{what}: {pos} bytes after decompression, expected {room}")


def _open(data: bytes | bytearray | memoryview, source: str) -> tuple[_Reader, int, int]:
    """A reader positioned on the first section of a checked file; its count and snapshot
    count."""
    view = memoryview(data).cast("B")
    reader = _Reader(view[:-_CHECKSUM_BYTES] if len(view) >= _CHECKSUM_BYTES else view, source)
    magic, version, algorithm, count, snapshot_count = _HEADER.unpack(
        reader.take(_HEADER.size, "header")
    )
    if magic != MAGIC:
        raise reader.fail("not an exporter state file (bad magic)")
    if version != FORMAT_VERSION:
        raise reader.fail(f"format version {version}; this exporter reads {FORMAT_VERSION}")
    if algorithm != HASH_ALGORITHM:
        raise reader.fail(f"key hash algorithm {algorithm}; this exporter uses {HASH_ALGORITHM}")
    if len(view) < _HEADER.size + _CHECKSUM_BYTES:
        raise reader.fail("truncated")
    body, digest = view[:-_CHECKSUM_BYTES], view[-_CHECKSUM_BYTES:]
    if hashlib.blake2b(body, digest_size=_CHECKSUM_BYTES).digest() != digest:
        raise reader.fail("checksum mismatch (truncated or damaged)")
    return reader, int(count), int(snapshot_count)


def _decode(data: bytes | bytearray | memoryview, source: str) -> ExportState:
    reader, count, snapshot_count = _open(data, source)
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
    reader, count, _snapshot_count = _open(data, source)
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
