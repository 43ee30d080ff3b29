"""The state file's binary encoding, version 1, section by section (the layout is in
:mod:`exporter.incremental.state`'s docstring): :class:`StateWriter` appends sections,
compressing a megabyte at a time into its output; :func:`open_reader` checks a file's header
and checksum and hands back a :class:`Reader` that decodes each section straight into a new
array. Neither ever holds a section twice, so ten million contacts fit on a 2 GB instance.
"""

from __future__ import annotations

import hashlib
import lzma
import struct
import zlib
from collections.abc import Iterable, Iterator
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from exporter.errors import StateCorrupt

U8 = npt.NDArray[np.uint8]

MAGIC = b"ACXSTATE"
FORMAT_VERSION = 1
HASH_ALGORITHM = 1
"""1 = :func:`hash64` as written here. Changing the hash function means a new number."""
_HEADER = struct.Struct("<8sHHQQ")
_SECTION = struct.Struct("<BQQ")
_CHECKSUM_BYTES = 16
_RAW, _ZLIB, _LZMA, _DELTAS = 0, 1, 2, 3


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


class Reader:
    """Decodes a checked file's sections in order (:func:`open_reader`)."""

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


def open_reader(data: bytes | bytearray | memoryview, source: str) -> tuple[Reader, int, int]:
    """A reader positioned on the first section of a checked file; its count and snapshot
    count."""
    view = memoryview(data).cast("B")
    reader = Reader(view[:-_CHECKSUM_BYTES] if len(view) >= _CHECKSUM_BYTES else view, source)
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
