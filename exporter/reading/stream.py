"""The bytes of one snapshot file, read in bounded pieces: :class:`BoundedStream` decompresses
gzip on the fly and checks every 64 KB read against the read limits
(:class:`~exporter.reading.limits.ReadLimits`: record size by quote parity, columns,
decompressed size and ratio) before the CSV tokenizer sees it, so no single line or bomb can
make memory grow with the file."""

from __future__ import annotations

import contextlib
import io
from typing import Any, Protocol

from exporter.reading.limits import RATIO_FLOOR, ReadLimits, over


class BinaryData(Exception):
    """A NUL byte at ``offset`` (internal: turned into an InputError with the position)."""

    def __init__(self, offset: int, line: int) -> None:
        super().__init__(offset)
        self.offset = offset
        self.line = line


class OverLimit(Exception):
    """A limit of :class:`ReadLimits` was exceeded (internal: becomes an InputError)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...

    def close(self) -> None: ...


class BoundedStream(io.RawIOBase):
    """A readable stream that can un-read a sniffed prefix, and tracks position and lines.

    Counting newlines per chunk (a C-speed ``bytes.count``) lets a decoding error deep in a
    64 KB read-ahead be placed on its exact line rather than on the row the parser is at.
    """

    def __init__(
        self,
        fh: Readable,
        *,
        check_nul: bool,
        limits: ReadLimits | None = None,
        compressed: BoundedStream | None = None,
    ) -> None:
        super().__init__()
        self._fh = fh
        self._pending = b""
        self._check_nul = check_nul
        self._limits = limits
        self._compressed = compressed
        self.delimiter = b","
        """The delimiter (set once sniffed) whose count bounds a record's columns."""
        self._run = 0
        self._fields = 0
        self._odd = False
        self.offset = 0
        """Bytes handed out so far."""
        self.last_start = 0
        """Offset of the first byte of the last chunk handed out."""
        self.last_chunk = b""
        self.lines_before_last = 0
        """Newlines in everything before the last chunk."""

    def readable(self) -> bool:
        return True

    def peek_bytes(self, n: int) -> bytes:
        """Up to ``n`` bytes from the front, without consuming them."""
        while len(self._pending) < n:
            more = self._fh.read(n - len(self._pending))
            if not more:
                break
            self._pending += more
        return self._pending[:n]

    def read(self, size: int | None = -1) -> bytes:
        if self._pending:
            if size is None or size < 0:
                data, self._pending = self._pending + self._fh.read(), b""
            else:
                data, self._pending = self._pending[:size], self._pending[size:]
        else:
            data = self._fh.read(-1 if size is None else size)
        self.lines_before_last += self.last_chunk.count(b"\n")
        self.last_start, self.last_chunk = self.offset, data
        self.offset += len(data)
        if self._check_nul and b"\x00" in data:
            at = data.index(b"\x00")
            raise BinaryData(self.last_start + at, self.line_at(self.last_start + at))
        if self._limits is not None and data:
            self._check_limits(data, self._limits)
        return data

    def _check_limits(self, data: bytes, limits: ReadLimits) -> None:
        """Bound the record being read and the decompressed size, per chunk (C-speed counts:
        no per-row cost). A record ends at a line break outside quotes (even quote count)."""
        if self._compressed is not None:
            self._check_gzip(limits)
        odd_end = self._odd ^ bool(data.count(b'"') & 1)
        eol = b"\n" if b"\n" in data else b"\r"
        first = first_break(data, eol, self._odd)
        delim = self.delimiter
        if first < 0:  # the whole chunk belongs to the record being read
            self._run += len(data)
            self._fields += data.count(delim)
        else:  # records wholly inside the chunk are shorter than the chunk
            self._check_record(self._run + first, self._fields + data.count(delim, 0, first))
            last = last_break(data, eol, odd_end)
            self._run, self._fields = len(data) - last - 1, data.count(delim, last + 1)
        self._odd = odd_end
        self._check_record(self._run, self._fields)

    def _check_record(self, size: int, delimiters: int) -> None:
        limits = self._limits
        assert limits is not None
        if size > limits.max_record_bytes:
            raise OverLimit(
                f"a record is longer than {limits.max_record_bytes} bytes "
                + over("max_record_bytes", limits.max_record_bytes)
            )
        if delimiters >= limits.max_columns:
            raise OverLimit(
                f"a record has more than {limits.max_columns} columns "
                + over("max_columns", limits.max_columns)
            )

    def _check_gzip(self, limits: ReadLimits) -> None:
        assert self._compressed is not None
        size, packed = self.offset, max(1, self._compressed.offset)
        if size > limits.max_decompressed_bytes:
            raise OverLimit(
                f"gzip data decompresses to more than {limits.max_decompressed_bytes} bytes "
                + over("max_decompressed_bytes", limits.max_decompressed_bytes)
            )
        if size > RATIO_FLOOR and size > packed * limits.max_decompression_ratio:
            raise OverLimit(
                f"gzip data decompresses more than {limits.max_decompression_ratio} times "
                f"({packed} bytes to {size}): a decompression bomb? "
                + over("max_decompression_ratio", limits.max_decompression_ratio)
            )

    read1 = read

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def line_at(self, offset: int) -> int:
        """1-based physical line of a byte offset inside the last chunk."""
        within = max(0, min(offset - self.last_start, len(self.last_chunk)))
        return self.lines_before_last + self.last_chunk[:within].count(b"\n") + 1

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._fh.close()
        super().close()


def first_break(data: bytes, eol: bytes, odd: bool) -> int:
    """Offset of the first line break in ``data`` outside quotes (``odd``: a quote is open at
    its start), -1 when there is none."""
    at = data.find(eol)
    odd ^= bool(data.count(b'"', 0, at) & 1) if at >= 0 else False
    while at >= 0 and odd:
        nxt = data.find(eol, at + 1)
        if nxt < 0:
            return -1
        odd ^= bool(data.count(b'"', at, nxt) & 1)
        at = nxt
    return at


def last_break(data: bytes, eol: bytes, odd_end: bool) -> int:
    """Offset of the last line break in ``data`` outside quotes (``odd_end``: a quote is open
    at its end); only called when :func:`first_break` found one."""
    at = data.rfind(eol)
    odd = odd_end ^ bool(data.count(b'"', at) & 1)
    while odd:
        prev = data.rfind(eol, 0, at)
        odd ^= bool(data.count(b'"', prev, at) & 1)
        at = prev
    return at
