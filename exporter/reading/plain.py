"""Blocks of plain CSV text: records the compiled scanner has found, kept as text.

When :mod:`exporter.native` is built, :meth:`SnapshotReader.blocks
<exporter.reading.snapshot.SnapshotReader.blocks>` yields a :class:`PlainBlock` for text the
scanner calls *plain* (see ``exporter/native/_speedups.c``), instead of a list of rows: the
text and where each record starts. A consumer that can map the text itself
(:class:`~exporter.planning.blockmap.BlockMapper`) never makes a Python object per field; any
other reads rows, which the csv module makes from the record's text, the same values
``csv.reader`` gives for the whole file (plain text has no ambiguity across records).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Sequence
from typing import overload


class PlainBlock(Sequence[list[str]]):
    """Consecutive records of one file, as its text: ``block[i]`` is record ``i``'s values
    (``[]`` for a blank line), as :func:`csv.reader` reads them."""

    __slots__ = ("_starts", "delimiter", "offsets", "text")

    def __init__(self, text: str, offsets: bytes, delimiter: str) -> None:
        self.text = text
        """The text the records are in (it may hold more before and after them)."""
        self.offsets = offsets
        """Native int64s: each record's start in :attr:`text`, then the last one's end."""
        self.delimiter = delimiter
        self._starts = memoryview(offsets).cast("q")

    def __len__(self) -> int:
        return len(self._starts) - 1

    @overload
    def __getitem__(self, i: int) -> list[str]: ...
    @overload
    def __getitem__(self, i: slice) -> list[list[str]]: ...
    def __getitem__(self, i: int | slice) -> list[str] | list[list[str]]:
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        record = self.text[self._starts[i] : self._starts[i + 1]]
        return next(csv.reader((record,), delimiter=self.delimiter, strict=True), [])

    def __iter__(self) -> Iterator[list[str]]:
        return iter(self.rows())

    def rows(self) -> list[list[str]]:
        """Every record's values, read by the csv module in one go."""
        text = self.text[self._starts[0] : self._starts[-1]]
        lines = io.StringIO(text, newline="")
        return list(csv.reader(lines, delimiter=self.delimiter, strict=True))


def as_rows(block: list[list[str]] | PlainBlock) -> list[list[str]]:
    """``block`` as a list of rows (a :class:`PlainBlock` read by the csv module)."""
    return block.rows() if isinstance(block, PlainBlock) else block
