"""Whole-block mapping: a block of rows mapped column by column, at C speed where it can be.

:class:`BlockMapper` gives, for a block of rows, exactly the list
``[mapper.map(source, row_no, values) for row_no, values in enumerate(block, first)]``
(:class:`~exporter.planning.mapping.Mapper`'s generated row function), but maps the *common*
rows of the block column by column: every value of a column is stripped with one ``map``,
checked with one regular-expression scan over the column joined by NUL (the snapshot reader
never yields a NUL, and a column holding one is checked value by value), the payloads are one
generated list comprehension, encoded, measured and fingerprinted (BLAKE2b, as
:func:`exporter.planning.contacts.fingerprint`) with ``map`` over C functions, and the contacts
are built with one ``map``. No Python frame runs per row.

A row is *common* when it has as many values as the header, an email that the row function's
fast check accepts as it is (trimmed ASCII ``atext@LDH`` of at most 64 characters), and every
mapped value present and free of anything JSON would escape; a ``date`` value must already be
``YYYY-MM-DD``. Every other row (blank, ragged, rejected, with an empty or odd value, an
address to normalise, a date to reformat) is mapped by the row function itself, in place, so
the result is the row function's by construction; ``tests/test_prepare_paths.py`` checks it
row for row and end to end. A mapping with a tag column or a multi-value or number field maps
every row with the row function.

:meth:`BlockMapper.map_columns` gives the same contacts as
:class:`~exporter.planning.columns.ContactColumns` (one list per field), so that the preparer
makes objects only of the contacts it sends (and, for columns it sends, none at all).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date
from functools import partial
from hashlib import blake2b
from operator import itemgetter, methodcaller
from typing import Any

import numpy as np

from exporter import native
from exporter.planning.columns import ContactColumns, ContactObjects, Contacts
from exporter.planning.contacts import PreparedContact, Rejection
from exporter.planning.mapping import (
    _ATEXT,
    _NEEDS_ESCAPE,
    MAX_LOCAL,
    UNPACK_COLUMNS,
    _brace,
    _email_fast,
    format_date,
)
from exporter.planning.mapping import Mapper as _Mapper
from exporter.reading.plain import PlainBlock, as_rows

Mapped = list[PreparedContact | Rejection]
Block = list[list[str]] | PlainBlock
"""A block of rows as the snapshot reader yields it."""
MapBlock = Callable[[str, int, Block], Mapped]
"""``map_block(source, first_row_no, rows)``: the row function's results for each row."""

_SEP = "\x00"
# The row function's fast email check (exporter.planning.mapping._email_fast), each address
# followed by the separator: a match from the start ends where the first failing address starts.
_EMAILS = re.compile(
    rf"(?:{_ATEXT}++(?:\.{_ATEXT}++)*+@(?:[A-Za-z0-9]++(?:-++[A-Za-z0-9]++)*+\.)++"
    rf"[A-Za-z]{{2,63}}+\x00)*"
)
_fromiso = date.fromisoformat
_digest = methodcaller("digest")


_b2 = partial(blake2b, digest_size=8)


def fingerprints(encoded: list[bytes]) -> list[int]:
    """:func:`exporter.planning.contacts.fingerprint` of each payload, from its UTF-8 bytes."""
    if not encoded:
        return []
    speedups = native.SPEEDUPS
    digests = (
        speedups.blake2b64(encoded)
        if speedups is not None
        else b"".join(map(_digest, map(_b2, encoded)))
    )
    return np.frombuffer(digests, "<u8").tolist()  # type: ignore[no-any-return]


def _bad_emails(col: list[str]) -> list[int]:
    """Positions of the addresses the row function's fast check does not accept as they are."""
    joined = _SEP.join(col) + _SEP
    if joined.count(_SEP) != len(col):
        return [i for i, v in enumerate(col) if not _email_ok(v)]
    bad = (
        [i for i, v in enumerate(col) if len(v) > MAX_LOCAL]
        if max(map(len, col)) > MAX_LOCAL
        else []
    )
    match, count, find = _EMAILS.match, joined.count, joined.find
    pos = i = 0
    end_all = len(joined)
    while True:
        end = match(joined, pos).end()  # type: ignore[union-attr]  # (?:...)* always matches
        i += count(_SEP, pos, end)
        if end == end_all:
            break
        bad.append(i)
        i += 1
        pos = find(_SEP, end) + 1
    return sorted(set(bad)) if bad else bad


def _email_ok(v: str) -> bool:
    return len(v) <= MAX_LOCAL and _email_fast(v) is not None


def _plain(text: str) -> bool:
    """Whether ``text`` certainly holds nothing JSON would escape (a printable text without
    quotes or backslashes; ``False`` may still be a text without any)."""
    return text.isprintable() and '"' not in text and "\\" not in text


def _bad_values(col: list[str]) -> list[int]:
    """Positions of the values JSON would escape (an empty value is left out of the payload)."""
    if _plain("".join(col)):
        return []
    return [i for i, v in enumerate(col) if _NEEDS_ESCAPE(v) is not None]


def _date_ok(v: str) -> bool:
    if len(v) != 10 or v[4] != "-" or v[7] != "-" or not v.isascii() or _NEEDS_ESCAPE(v):
        return False
    try:
        _fromiso(v)
    except ValueError:
        return False
    return True


def _bad_dates(col: list[str]) -> list[int]:
    """Positions of the values that are not a ``YYYY-MM-DD`` date sent as it is (an empty
    value is left out of the payload)."""
    if not all(col):
        return [i for i, v in enumerate(col) if v and not _date_ok(v)]
    text = "".join(col)
    n = len(col)
    dashes = "-" * n
    if (
        len(text) == 10 * n
        and text.isascii()
        and _plain(text)
        and text[4::10] == dashes
        and text[7::10] == dashes
        and min(map(len, col)) == 10
    ):
        try:
            for _ in map(_fromiso, col):
                pass
            return []
        except ValueError:
            pass
    return [i for i, v in enumerate(col) if not _date_ok(v)]


_NATIVE_MAX_VALUES = 64
_NATIVE_MAX_COLUMNS = 4096
"""What the compiled mapper takes (``MAX_VALUES`` and the column bound in ``_speedups.c``)."""


class BlockMapper:
    """A :class:`~exporter.planning.mapping.Mapper`'s row function, applied a block at a time
    (see the module docstring). :attr:`map_block` is the function to call."""

    def __init__(self, mapper: _Mapper) -> None:
        self.mapper = mapper
        self._map_row = mapper.map
        self._ncols = len(mapper.columns)
        plain = [at for at, _ in mapper._plain]
        fields = [at for at, _, _ in mapper._fields]
        fmts = [fmt for _, _, fmt in mapper._fields]
        self.columnar = mapper._tagcol < 0 and all(f is None or f is format_date for f in fmts)
        """Whether common rows are mapped column by column (else every row by the row
        function)."""
        # The columns to read, in payload order: email, the plain ones, the fields.
        self._order = [mapper._email, *plain, *fields]
        self._checks: list[Callable[[list[str]], list[int]]] = [
            _bad_emails,
            *([_bad_values] * len(plain)),
            *(_bad_dates if f is format_date else _bad_values for f in fmts),
        ]
        self._pid = mapper._pid
        wanted = sorted(set(self._order) | ({self._pid} if self._pid >= 0 else set()))
        self._narrow = self._ncols <= UNPACK_COLUMNS
        """Rows this narrow are transposed whole (cheaper than picking their mapped cells)."""
        self._slot = (
            {at: n for n, at in enumerate(wanted)}
            if not self._narrow
            else {at: at for at in wanted}
        )
        self._getter = itemgetter(*wanted, wanted[0])  # (a tuple even for one column)
        self._payloads = self._compile(mapper, len(self._order))
        self._by_mask: dict[int, Callable[..., list[str]]] = {0: self._payloads}
        self._spec = self._native_spec(mapper) if self.columnar else None
        """What the compiled mapper needs to map a :class:`PlainBlock`'s common rows itself
        (``None``: this mapping is mapped in Python)."""
        self.map_block: MapBlock = self._columns if self.columnar else self._rows

    @staticmethod
    def _native_spec(mapper: _Mapper) -> tuple[Any, ...] | None:
        """The spec of ``exporter/native/_speedups.c``'s ``map_plain`` for this mapping: the
        row function's common payload, value by value (each left out when empty)."""
        values = [(at, prefix, False) for at, prefix in mapper._plain]
        values += [(at, prefix, fmt is format_date) for at, prefix, fmt in mapper._fields]
        if len(values) > _NATIVE_MAX_VALUES or len(mapper.columns) > _NATIVE_MAX_COLUMNS:
            return None
        return (
            len(mapper.columns),
            mapper._email,
            mapper._pid,
            tuple(at for at, _, _ in values),
            tuple(is_date for _, _, is_date in values),
            tuple(prefix for _, prefix, _ in values),
            len(mapper._plain),
            mapper._tail,
        )

    @staticmethod
    def _compile(mapper: _Mapper, width: int, empty: int = 0) -> Callable[..., list[str]]:
        """The row function's common payload for whole columns: one list comprehension. The
        columns whose bit is set in ``empty`` are empty, left out of the payload (and not
        passed)."""
        names = [f"c{n}" for n in range(width) if not empty >> n & 1]
        pieces = ['{{"email":"{c0}"']
        pieces += [
            f'{_brace(prefix)}"{{c{n}}}"'
            for n, (_, prefix) in enumerate(mapper._plain, 1)
            if not empty >> n & 1
        ]
        first_field = 1 + len(mapper._plain)
        fields = [
            f'{_brace(prefix)}"{{c{n}}}"}}}}'
            for n, (_, prefix, _) in enumerate(mapper._fields, first_field)
            if not empty >> n & 1
        ]
        if fields:
            pieces.append(',"fields":[' + ",".join(fields) + "]")
        text = "".join(pieces) + _brace(mapper._tail)
        source = (
            f"def payloads({', '.join(names)}):\n"
            f"    return [f{text!r} for {', '.join(names)}, in zip({', '.join(names)})]\n"
        )
        env: dict[str, Any] = {}
        exec(compile(source, "<block payloads>", "exec"), env)  # noqa: S102
        fn: Callable[..., list[str]] = env["payloads"]
        return fn

    def _payloads_of(self, cols: list[list[str]]) -> list[str]:
        """The payloads of the common rows; rows with empty values are grouped by which are
        empty, each group formatted by its own comprehension."""
        masks: list[int] | None = None
        for n, col in enumerate(cols[1:], 1):
            if not all(col):
                if masks is None:
                    masks = [0] * len(col)
                bit = 1 << n
                for i in [i for i, v in enumerate(col) if not v]:
                    masks[i] |= bit
        if masks is None:
            return self._payloads(*cols)
        order = sorted(range(len(masks)), key=masks.__getitem__)  # rows grouped by mask
        out: list[str] = []
        start = 0
        while start < len(order):
            mask = masks[order[start]]
            end = start + 1
            while end < len(order) and masks[order[end]] == mask:
                end += 1
            pick = itemgetter(*order[start:end], order[start])  # (a tuple even for one row)
            present = [pick(col)[:-1] for n, col in enumerate(cols) if not mask >> n & 1]
            fn = self._by_mask.get(mask)
            if fn is None:
                fn = self._by_mask[mask] = self._compile(self.mapper, len(cols), mask)
            out += fn(*present)
            start = end
        back = sorted(range(len(order)), key=order.__getitem__)  # row i's place in ``out``
        return list(itemgetter(*back, back[0])(out)[:-1])

    def _rows(self, source: str, first: int, block: Block) -> Mapped:
        map_row = self._map_row
        rows = as_rows(block)
        return [map_row(source, row_no, values) for row_no, values in enumerate(rows, first)]

    def _columns(self, source: str, first: int, block: Block) -> Mapped:
        fast = self._fast(source, first, block)
        if fast is None:
            return self._rows(source, first, block)
        columns, fallback = fast
        contacts = columns.contacts()
        if not fallback:
            return contacts  # type: ignore[return-value]
        return _merge(self._by_row(source, first, block, fallback), contacts)

    def _by_row(
        self, source: str, first: int, block: Block, positions: list[int]
    ) -> list[tuple[int, PreparedContact | Rejection]]:
        map_row = self._map_row
        if block.__class__ is PlainBlock and len(positions) * 8 > len(block):
            block = as_rows(block)  # many: read all rows at once
        return [(pos, map_row(source, first + pos, block[pos])) for pos in positions]

    def map_columns(
        self, source: str, first: int, block: Block
    ) -> tuple[Contacts, list[int], list[tuple[int, Rejection]]]:
        """:attr:`map_block`'s results as columns: the contacts (in row order), the block
        position of each, and the rejections (blank lines included) with theirs. The contacts
        are a :class:`ContactColumns` when :attr:`columnar`, else a :class:`ContactObjects`."""
        fast = self._fast(source, first, block) if self.columnar else None
        if fast is None and self.columnar:  # no common row: the row function's, as columns
            mapped = self._rows(source, first, block)  # (map_block would look for them again)
            at = [i for i, got in enumerate(mapped) if got.__class__ is PreparedContact]
            rejected = [(i, got) for i, got in enumerate(mapped) if got.__class__ is Rejection]
            return ContactColumns.of([mapped[i] for i in at]), at, rejected  # type: ignore[misc]
        if fast is not None:
            columns, fallback = fast
            if not fallback:
                return columns, list(range(len(block))), []
            by_row = self._by_row(source, first, block, fallback)
            taken = set(fallback)
            at = [i for i in range(len(block)) if i not in taken]
            made = [(pos, got) for pos, got in by_row if got.__class__ is PreparedContact]
            if made:  # contacts among them: into the columns, in row order
                extra = ContactColumns.of([got for _, got in made])
                at = columns.merge(at, extra, [pos for pos, _ in made])
            rejected = [(pos, got) for pos, got in by_row if got.__class__ is Rejection]
            return columns, at, rejected
        mapped = self.map_block(source, first, block)
        at = [i for i, got in enumerate(mapped) if got.__class__ is PreparedContact]
        rejected = [(i, got) for i, got in enumerate(mapped) if got.__class__ is Rejection]
        return ContactObjects([mapped[i] for i in at]), at, rejected  # type: ignore[misc]

    def _fast(
        self, source: str, first: int, block: Block
    ) -> tuple[ContactColumns, list[int]] | None:
        """The common rows' contacts as columns and the (sorted) block positions left to the
        row function; ``None`` when no row is common."""
        if isinstance(block, PlainBlock):
            speedups = native.SPEEDUPS
            if speedups is not None and self._spec is not None:
                return self._fast_plain(speedups, source, first, block)
            block = as_rows(block)
        n = len(block)
        if not n:
            return None
        width = self._ncols
        lengths = list(map(len, block))
        at: list[int] | None = None  # block positions of ``rows``, when not all of them
        fallback: list[int] = []  # block positions mapped by the row function
        if lengths.count(width) == n:
            rows = block
        else:  # blank or ragged rows: mapped by the row function
            at = [i for i, k in enumerate(lengths) if k == width]
            fallback = [i for i, k in enumerate(lengths) if k != width]
            rows = [block[i] for i in at]
        if not rows:
            return None
        picked = list(zip(*(rows if self._narrow else map(self._getter, rows)), strict=True))
        strip = str.strip
        slot = self._slot
        cols = [list(map(strip, picked[slot[c]])) for c in self._order]
        bad: set[int] = set()
        for col, check in zip(cols, self._checks, strict=True):
            bad.update(check(col))
        out = ContactColumns()
        out.pids = (
            [v or None for v in map(strip, picked[slot[self._pid]])]
            if self._pid >= 0
            else [None] * len(rows)
        )
        if bad:
            if at is None:
                at = list(range(n))
            drop = sorted(bad, reverse=True)
            fallback = sorted([*fallback, *(at[i] for i in drop)])
            lists: list[list[Any]] = [*cols, at, out.pids]
            for col in lists:
                for i in drop:
                    del col[i]
        payloads = self._payloads_of(cols)
        out.payloads = payloads  # type: ignore[assignment]  # (all present)
        encoded = list(map(str.encode, payloads))
        out.encoded = encoded  # type: ignore[assignment]
        out.sizes = list(map(len, encoded))
        out.fingerprints = fingerprints(encoded)
        out.keys = list(map(str.lower, cols[0]))
        out.rows = list(range(first, first + n)) if at is None else [first + i for i in at]
        out.sources = [source] * len(out.rows)
        return out, fallback

    def _fast_plain(
        self, speedups: Any, source: str, first: int, block: PlainBlock
    ) -> tuple[ContactColumns, list[int]] | None:
        """:meth:`_fast` by the compiled mapper, from the block's text: no object per field,
        and the payloads kept as UTF-8 only (decoded for the contacts that are made)."""
        fallback, keys, encoded, fps, pids = speedups.map_plain(
            block.text, block.offsets, block.delimiter, self._spec
        )
        if not keys:
            return None
        n = len(block)
        out = ContactColumns()
        out.keys = keys
        out.encoded = encoded
        out.sizes = list(map(len, encoded))
        out.fingerprints = np.frombuffer(fps, "<u8").tolist()
        out.payloads = [None] * len(keys)
        out.pids = pids if pids is not None else [None] * len(keys)
        if fallback:
            taken = set(fallback)
            out.rows = [first + i for i in range(n) if i not in taken]
        else:
            out.rows = list(range(first, first + n))
        out.sources = [source] * len(keys)
        return out, fallback


def _merge(
    by_row: list[tuple[int, PreparedContact | Rejection]], contacts: list[PreparedContact]
) -> Mapped:
    """A block's results in row order: the row function's at their (sorted) positions, the
    columnar contacts, in order, everywhere else."""
    out: Mapped = []
    done = 0  # columnar contacts placed
    row = 0  # next block position
    for pos, got in by_row:
        take = pos - row
        out.extend(contacts[done : done + take])
        done += take
        out.append(got)
        row = pos + 1
    out.extend(contacts[done:])
    return out
