"""Streaming snapshot readers.

A *snapshot* is what one segment looked like at one moment. Two layouts are read:

* **plain CSV** — one file with a header row: UTF-8 (with or without BOM), any line ending,
  quoted fields with embedded newlines, delimiter ``,`` ``;`` tab or ``|`` (detected from the
  header line unless given), optionally gzip-compressed (detected by magic bytes, whatever the
  name);
* **Customer Insights (CDM folder)** — a ``model.json`` that names the columns
  (``entities[].attributes``) and lists the partition files (``entities[].partitions``, each
  with its own ``fileFormatSettings``: ``columnHeaders``, ``delimiter``, ``encoding``). The
  schema always comes from ``model.json``; a partition's own header row, when it has one, must
  agree with it. Partition locations are URLs (often of an account we cannot reach); they are
  resolved relative to the folder of ``model.json`` by their path tail.

Files are reached through an :data:`Opener` (path → binary stream) and, for prefixes, a
:data:`Lister` (prefix → paths), so the same code reads local files and blobs.

Decisions (documented here because callers and users meet them):

* Text must be UTF-8. Anything else is an :class:`~exporter.errors.InputError` naming the byte
  offset and line, with a hint; a Latin-1/Windows-1252 file can be read by passing
  ``encoding="cp1252"`` explicitly (never guessed).
* NUL bytes mean binary data: an ``InputError`` (the CSV module would accept them silently).
* A quote that is never closed, or text after a closing quote, is an ``InputError`` naming the
  row where the record started: a file that cannot be tokenised is not guessed at.
* A *ragged* row (a different number of values than columns) is not an error here: the reader
  yields it and :class:`exporter.planning.mapping.Mapper` pads a short one with empty values
  and rejects a long one (reason ``ragged_row``).
* A plain CSV that is completely empty (no header) is an ``InputError``; a header with no rows is
  a valid, empty snapshot. An empty CDM partition is valid (the schema is in ``model.json``).
* Blank lines are skipped but still counted, so row numbers match a spreadsheet's.
* Fields may be up to :data:`FIELD_SIZE_LIMIT` characters; validation rejects over-long values.
* Errors surface as exceptions *from the iterator* (at the position they are found), so a
  caller that prepares fully before sending sends nothing from a broken file.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import os
import zlib
from collections import deque
from collections.abc import Generator, Iterator
from itertools import chain, islice
from typing import BinaryIO, TextIO, cast

from exporter import native
from exporter.errors import InputError
from exporter.reading.cdm import cdm_parts, dirname, load_model, pick_entity
from exporter.reading.limits import ReadLimits, over
from exporter.reading.plain import PlainBlock
from exporter.reading.refs import (
    MODEL_JSON,
    Lister,
    Opener,
    Part,
    SnapshotRef,
    is_snapshot_file,
    open_raw,
)
from exporter.reading.stream import BinaryData, BoundedStream, OverLimit, Readable
from exporter.storage.store import Store

FIELD_SIZE_LIMIT = ReadLimits().max_field_chars
"""Largest field (characters) the tokenizer accepts by default (``ReadLimits.max_field_chars``);
larger is an InputError for the file."""
BLOCK_INPUT_BYTES = 1 << 20
"""Input bytes after which :meth:`SnapshotReader.blocks` closes a block (checked every
:meth:`ReadLimits.block_rows` rows): a block of one-character fields costs ~50 bytes of
objects per input byte."""
DELIMITERS = (",", ";", "\t", "|")
"""Delimiters recognised from a header line, in order of preference on a tie."""

_CHUNK = 1 << 16
_PLAIN_FIRST_CHARS = 1 << 16
_PLAIN_MIN_CHARS = 1 << 12
_PLAIN_MAX_CHARS = 1 << 20
"""Characters read for a plain block: the first, then enough for the blocks' ``size`` records
at the records' average length so far, within these bounds."""
_GZIP_MAGIC = b"\x1f\x8b"
_SNIFF_BYTES = 1 << 16

csv.field_size_limit(FIELD_SIZE_LIMIT)


def _open_text(
    source: str, opener: Opener, encoding: str, limits: ReadLimits
) -> tuple[BoundedStream, TextIO, BinaryIO]:
    """Open ``source``, un-gzip when it starts with the gzip magic, and decode it."""
    raw = open_raw(source, opener)
    outer_fh: Readable
    probe = BoundedStream(raw, check_nul=False)
    compressed = None
    if probe.peek_bytes(2) == _GZIP_MAGIC:
        outer_fh = gzip.GzipFile(fileobj=probe, mode="rb")
        compressed = probe
    else:
        outer_fh = probe
    stream = BoundedStream(outer_fh, check_nul=True, limits=limits, compressed=compressed)
    codec = "utf-8-sig" if encoding.replace("_", "-").lower() in ("utf-8", "utf8") else encoding
    text = io.TextIOWrapper(cast(BinaryIO, stream), encoding=codec, errors="strict", newline="")
    text._CHUNK_SIZE = _CHUNK  # type: ignore[attr-defined]
    return stream, text, raw


# --- delimiter sniffing ---------------------------------------------------------------------


def sniff_delimiter(first_line: str) -> str:
    """The delimiter of a header line: the most frequent of :data:`DELIMITERS` outside quotes
    (``,`` when none occurs)."""
    counts = dict.fromkeys(DELIMITERS, 0)
    quoted = False
    for ch in first_line:
        if ch == '"':
            quoted = not quoted
        elif ch in ("\n", "\r") and not quoted:
            break
        elif not quoted and ch in counts:
            counts[ch] += 1
    best = max(DELIMITERS, key=lambda d: counts[d])  # max keeps the first on a tie
    return best if counts[best] else ","


def _sniff(stream: BoundedStream, encoding: str) -> str:
    head = stream.peek_bytes(_SNIFF_BYTES)
    return sniff_delimiter(head.decode(encoding if encoding else "utf-8", errors="replace"))


# --- one CSV file ---------------------------------------------------------------------------


class _CsvFile:
    """One open CSV file positioned after its header (if any)."""

    def __init__(self, part: Part, opener: Opener, limits: ReadLimits) -> None:
        self.part = part
        self.limits = limits
        self._opener = opener
        self.header_lines = 1 if part.header else 0
        try:
            self._stream, self._text, self._raw = _open_text(
                part.path, opener, part.encoding, limits
            )
            delimiter = part.delimiter or _sniff(self._stream, part.encoding)
            self.delimiter = delimiter
            self._stream.delimiter = delimiter.encode(part.encoding, errors="replace")
            csv.field_size_limit(limits.max_field_chars)  # process-wide: set per file
            self._reader = csv.reader(self._text, delimiter=delimiter, strict=True)
            self.header: list[str] | None = None
            if part.header:
                self.header = next(self._reader, None)
                while self.header == []:  # blank lines before the header
                    self.header_lines += 1
                    self.header = next(self._reader, None)
        except _ReadFailure as exc:
            self.close()
            raise self._translate(exc, 0) from None

    def rows(self, source: str) -> Iterator[tuple[str, int, list[str]]]:
        """Data rows: (source, 1-based data row number, values). Blank lines are counted but
        not yielded."""
        n = 0
        try:
            for values in self._reader:
                n += 1
                if values:
                    yield source, n, values
        except _ReadFailure as exc:
            raise self._translate(exc, n) from None
        finally:
            self.close()

    def blocks(
        self, source: str, size: int, step: int, max_bytes: int
    ) -> Iterator[tuple[str, int, list[list[str]] | PlainBlock]]:
        """Data rows up to ``size`` at a time: (source, row number of the block's first row,
        rows). A block is read ``step`` rows at a time and ends early once it holds about
        ``max_bytes`` of input (so many tiny fields cannot make it large in objects).

        Blank lines are *included* (as ``[]``) so a row's number is the block's first number
        plus its position; callers skip them. No per-row Python code runs here: the CSV
        reader fills each block at C speed. On an error the rows before it are yielded first.

        With :mod:`exporter.native` built, plain text comes as :class:`PlainBlock` s of about
        ``size`` records (the text and where its records start: no object per field) until
        the first text that is not plain; from there on the csv module reads the file.
        """
        n = 0
        try:
            reader: Iterator[list[str]] = self._reader
            if native.SPEEDUPS is not None:
                plain = self._plain_blocks(source, size)
                try:
                    while True:
                        item = next(plain)
                        yield item
                        n += len(item[2])
                except StopIteration as stop:
                    rest: str | None = stop.value
                    if rest is None:
                        return
                    # Not plain from here: the csv module reads the rest, from this text on.
                    lines = chain(io.StringIO(rest, newline=""), self._text)
                    reader = csv.reader(lines, delimiter=self.delimiter, strict=True)
                except _ReadFailure:
                    # A read ahead of the records yielded failed: the csv module reads the
                    # file again from the next record, to that failure, and names its row.
                    reader = self._csv_after(n)
            yield from self._csv_blocks(reader, source, n, size, step, max_bytes)
        except _ReadFailure as exc:
            raise self._translate(exc, n) from None
        finally:
            self.close()

    def _plain_blocks(
        self, source: str, size: int
    ) -> Generator[tuple[str, int, PlainBlock], None, str | None]:
        """Blocks of plain text, read about ``size`` average records at a time; returns
        ``None`` at the end of the file, or the text (from a record's start, to a line's end)
        that is not plain."""
        assert native.SPEEDUPS is not None
        scan = native.SPEEDUPS.scan_records
        read, readline = self._text.read, self._text.readline
        limit = self.limits.max_field_chars
        chars = _PLAIN_FIRST_CHARS
        n = 0
        pending = ""
        while True:
            more = read(chars)
            if more:
                more += readline()  # to a line's end (a record may go on in a quoted field)
            text = pending + more if pending else more
            if not text:
                return None
            offsets = scan(text, self.delimiter, limit, not more)
            if offsets is None:
                return text
            starts = memoryview(offsets).cast("q")
            count = len(starts) - 1
            if not count:  # one record longer than the text read so far
                pending = text
                continue
            end = starts[-1]
            for lo in range(0, count, size):  # at most ``size`` records a block
                hi = min(lo + size, count)
                part = offsets if hi - lo == count else offsets[8 * lo : 8 * hi + 8]
                yield source, n + 1, PlainBlock(text, part, self.delimiter)
                n += hi - lo
            pending = text[end:]
            # about ``size`` records a block, from the records seen so far
            chars = max(_PLAIN_MIN_CHARS, min(_PLAIN_MAX_CHARS, size * end // count))

    def _csv_after(self, rows: int) -> Iterator[list[str]]:
        """A csv reader over this file opened again, past its header and ``rows`` records."""
        self.close()
        part = self.part
        self._stream, self._text, self._raw = _open_text(
            part.path, self._opener, part.encoding, self.limits
        )
        self._stream.delimiter = self.delimiter.encode(part.encoding, errors="replace")
        reader = csv.reader(self._text, delimiter=self.delimiter, strict=True)
        deque(islice(reader, self.header_lines + rows), maxlen=0)
        return reader

    def _csv_blocks(
        self,
        reader: Iterator[list[str]],
        source: str,
        n: int,
        size: int,
        step: int,
        max_bytes: int,
    ) -> Iterator[tuple[str, int, list[list[str]]]]:
        stream = self._stream
        while True:
            block: list[list[str]] = []
            start = stream.offset
            try:
                # list.extend keeps the rows read before a failure: the error names its row
                while len(block) < size:
                    want = min(step, size - len(block))
                    before = len(block)
                    block.extend(islice(reader, want))
                    if len(block) - before < want or stream.offset - start >= max_bytes:
                        break
            except _ReadFailure as exc:
                failure = self._translate(exc, n + len(block))
                if block:
                    yield source, n + 1, block
                raise failure from None
            if not block:
                return
            yield source, n + 1, block
            n += len(block)

    def _translate(self, exc: BaseException, rows_done: int) -> InputError:
        path = self.part.path
        if isinstance(exc, OverLimit):
            return InputError(exc.message, file=path, row=rows_done + 1)
        if isinstance(exc, BinaryData):
            return InputError(
                f"binary data: NUL byte at byte offset {exc.offset} (line {exc.line}); "
                "this is not a CSV text file",
                file=path,
                row=self._data_row(exc.line),
            )
        if isinstance(exc, UnicodeDecodeError):
            stream = self._stream
            offset = stream.last_start + exc.start
            line = stream.line_at(offset)
            byte = exc.object[exc.start : exc.start + 1].hex().upper()
            return InputError(
                f"not valid {self.part.encoding} text: byte 0x{byte} at byte offset ~{offset} "
                f"(line {line}). If the file is Latin-1/Windows-1252, re-export it as UTF-8, "
                'or set the export\'s "encoding" to "cp1252" (once: run --encoding cp1252)',
                file=path,
                row=self._data_row(line),
            )
        if isinstance(exc, csv.Error):
            msg = str(exc)
            if "unexpected end of data" in msg:
                msg = "a quoted field starting in this row is never closed (unterminated quote)"
            elif "field larger than field limit" in msg:
                cap = self.limits.max_field_chars
                msg = f"a field is longer than {cap} characters " + over("max_field_chars", cap)
            else:
                msg = f"malformed CSV ({msg})"
            return InputError(msg, file=path, row=rows_done + 1)
        if isinstance(exc, EOFError | gzip.BadGzipFile | zlib.error):
            return InputError(
                f"corrupt or truncated gzip data ({exc}) after {rows_done} rows",
                file=path,
                row=rows_done + 1,
            )
        return InputError(f"cannot read the file ({type(exc).__name__})", file=path)

    def _data_row(self, line: int) -> int | None:
        row = line - self.header_lines
        return row if row >= 1 else None

    def close(self) -> None:
        for obj in (getattr(self, "_text", None), getattr(self, "_raw", None)):
            if obj is not None:
                with contextlib.suppress(Exception):
                    obj.close()


_ReadFailure = (
    OverLimit,
    BinaryData,
    UnicodeDecodeError,
    csv.Error,
    EOFError,
    gzip.BadGzipFile,
    zlib.error,
    OSError,
)


# --- openers and listers --------------------------------------------------------------------


def local_opener(path: str) -> BinaryIO:
    """Open a local file for reading (the command line's opener)."""
    return open(path, "rb")


def local_lister(prefix: str) -> Iterator[str]:
    """Local files under a folder prefix (recursively), as ``/``-joined paths."""
    root = prefix.rstrip("/") or "."
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            yield f"{dirpath}/{name}".replace("\\", "/")


def store_opener(store: Store) -> Opener:
    """An :data:`Opener` reading from a :class:`~exporter.storage.store.Store`."""
    return store.open_read


def store_lister(store: Store) -> Lister:
    """A :data:`Lister` over a :class:`~exporter.storage.store.Store`."""

    def lister(prefix: str) -> Iterator[str]:
        return (o.path for o in store.list(prefix))

    return lister


# --- the reader -----------------------------------------------------------------------------


class SnapshotReader:
    """Rows of one snapshot, in file (partition) order, with the snapshot's columns.

    ``rows()`` streams (memory does not grow with the file); errors are raised from the
    iterator as :class:`InputError` at the position they are found. Use as a context manager
    (or call :meth:`close`) to release a file opened for its header.
    """

    def __init__(
        self,
        columns: list[str],
        parts: list[Part],
        opener: Opener,
        limits: ReadLimits | None = None,
    ) -> None:
        self.limits = limits or ReadLimits()
        self.columns = columns
        """Column names as in the file (or model.json)."""
        self.sources = [p.path for p in parts]
        """The files read, in order."""
        self._parts = parts
        self._opener = opener
        self._first: _CsvFile | None = None

    def _files(self) -> Iterator[tuple[Part, _CsvFile]]:
        """Each partition's open file, in order (the first was opened to read the header)."""
        for i, part in enumerate(self._parts):
            if i == 0 and self._first is not None:
                file, self._first = self._first, None
            else:
                file = _CsvFile(part, self._opener, self.limits)
                self._check_header(file)
            yield part, file

    def rows(self) -> Iterator[tuple[str, int, list[str]]]:
        """(source, 1-based data row number, values) for each non-blank row."""
        for part, file in self._files():
            yield from file.rows(part.path)

    def blocks(
        self, size: int = 4096, max_bytes: int = BLOCK_INPUT_BYTES
    ) -> Iterator[tuple[str, int, list[list[str]] | PlainBlock]]:
        """The rows of :meth:`rows` in blocks: (source, row number of the first row, rows),
        blank lines included as ``[]`` (skip them; they keep the numbering). For a consumer
        whose per-row cost matters: no generator step per row. A block is filled
        :meth:`ReadLimits.block_rows` rows at a time (a few when records may be large) and
        closes at ``size`` rows or once it holds about ``max_bytes`` of input, whichever
        comes first. With :mod:`exporter.native` built, a block of plain text is a
        :class:`~exporter.reading.plain.PlainBlock` (rows on demand)."""
        step = self.limits.block_rows(size)
        for part, file in self._files():
            yield from file.blocks(part.path, size, step, max_bytes)

    def _check_header(self, file: _CsvFile) -> None:
        if file.header is None or not file.part.header:
            return
        got = [c.strip().lower() for c in file.header]
        want = [c.strip().lower() for c in self.columns]
        if got != want:
            file.close()
            raise InputError(
                f"header row {file.header!r} does not match the columns of model.json "
                f"{self.columns!r}",
                file=file.part.path,
                row=None,
            )

    def close(self) -> None:
        """Release any file held open."""
        if self._first is not None:
            self._first.close()
            self._first = None

    def __enter__(self) -> SnapshotReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_snapshot(
    ref: SnapshotRef | str,
    *,
    opener: Opener,
    lister: Lister | None = None,
    delimiter: str | None = None,
    encoding: str = "utf-8",
    entity: str | None = None,
    limits: ReadLimits | None = None,
) -> SnapshotReader:
    """Open a snapshot for streaming.

    ``ref``: a :class:`SnapshotRef` from discovery, a CSV path, a ``model.json`` path, or a
    folder prefix ending in ``/`` (needs ``lister``; it must hold a model.json or exactly one
    CSV). ``delimiter`` overrides detection (and model.json); ``encoding`` defaults to UTF-8;
    ``entity`` picks the model.json entity when it has several.
    ``limits`` bound what one file may cost (:class:`ReadLimits`, defaults when ``None``).
    Raises :class:`InputError` when the snapshot cannot be opened or its header read.
    """
    lim = limits or ReadLimits()
    if delimiter is not None and len(delimiter) != 1:
        raise InputError(f"delimiter must be one character, got {delimiter!r}", file=str(ref))
    if isinstance(ref, SnapshotRef):
        if ref.kind == "csv":
            return _open_plain(ref.path, opener, delimiter, encoding, lim)
        existing = set(ref.partitions)
        return _open_cdm(ref.path, opener, existing, delimiter, encoding, ref.entity or entity, lim)
    if ref.endswith("/"):
        if lister is None:
            raise InputError("a folder needs a lister to be read", file=ref)
        paths = set(lister(ref))
        if ref + MODEL_JSON in paths:
            return _open_cdm(ref + MODEL_JSON, opener, paths, delimiter, encoding, entity, lim)
        csvs = sorted(p for p in paths if is_snapshot_file(p))
        if len(csvs) != 1:
            raise InputError(
                f"folder has no model.json and {len(csvs)} CSV files; name one file", file=ref
            )
        return _open_plain(csvs[0], opener, delimiter, encoding, lim)
    if ref.rpartition("/")[2] == MODEL_JSON:
        listed = set(lister(dirname(ref))) if lister is not None else None
        return _open_cdm(ref, opener, listed, delimiter, encoding, entity, lim)
    return _open_plain(ref, opener, delimiter, encoding, lim)


def _open_plain(
    path: str, opener: Opener, delimiter: str | None, encoding: str, limits: ReadLimits
) -> SnapshotReader:
    part = Part(path=path, delimiter=delimiter, header=True, encoding=encoding)
    file = _CsvFile(part, opener, limits)
    if file.header is None:
        file.close()
        raise InputError("the file is empty: expected a header row naming the columns", file=path)
    if len(file.header) > limits.max_columns:
        file.close()
        raise InputError(
            f"the header has {len(file.header)} columns, more than {limits.max_columns} "
            + over("max_columns", limits.max_columns),
            file=path,
            row=None,
        )
    reader = SnapshotReader(list(file.header), [part], opener, limits)
    reader._first = file
    return reader


def _open_cdm(
    model: str,
    opener: Opener,
    existing: set[str] | None,
    delimiter: str | None,
    encoding: str,
    entity_name: str | None,
    limits: ReadLimits,
) -> SnapshotReader:
    entity = pick_entity(model, load_model(model, opener), entity_name)
    for count, what, limit in (
        (len(entity.partitions), "partitions", "max_partitions"),
        (len(entity.columns), "columns", "max_columns"),
    ):
        cap = getattr(limits, limit)
        if count > cap:
            raise InputError(
                f"entity {entity.name!r} lists {count} {what}, more than {cap} " + over(limit, cap),
                file=model,
            )
    enc = None if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding
    parts = cdm_parts(model, entity, existing, delimiter, enc)
    return SnapshotReader(list(entity.columns), parts, opener, limits)
