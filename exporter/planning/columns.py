"""Contacts as columns: how prepare holds a block's contacts until it knows which are sent,
and how it batches and writes the sent ones, without a Python object per contact.

:class:`ContactColumns` keeps each field of :class:`~exporter.planning.contacts.PreparedContact`
as one list; :class:`ContactObjects` gives the same interface over objects (a mapping mapped
row by row); :class:`ColumnBatch` is a batch of columns, cut by
:class:`~exporter.planning.batching.BatchPlanner` and written by
:func:`~exporter.planning.chunks.encode_batch_line`.
"""

from __future__ import annotations

from operator import attrgetter, itemgetter
from typing import Any

from exporter.planning.contacts import PreparedContact


class ContactColumns:
    """Contacts as columns (the fields of :class:`PreparedContact`, one list each, in row
    order): what a block's contacts are until one is known to be sent, so that the ones that
    are not (unchanged, duplicate) never become objects."""

    __slots__ = ("encoded", "fingerprints", "keys", "payloads", "pids", "rows", "sizes", "sources")

    def __init__(self) -> None:
        self.rows: list[int] = []
        self.sources: list[str] = []
        self.keys: list[str] = []
        self.payloads: list[str | None] = []
        """``None`` where only :attr:`encoded` is kept (decoded when a contact is made)."""
        self.fingerprints: list[int] = []
        self.pids: list[str | None] = []
        self.sizes: list[int] = []
        self.encoded: list[bytes | None] = []

    def __len__(self) -> int:
        return len(self.rows)

    def _lists(self) -> tuple[list[Any], ...]:
        return (
            self.rows,
            self.sources,
            self.keys,
            self.payloads,
            self.fingerprints,
            self.pids,
            self.sizes,
            self.encoded,
        )

    @classmethod
    def of(cls, contacts: list[PreparedContact]) -> ContactColumns:
        """The columns of these contacts."""
        out = cls()
        for mine, name in zip(out._lists(), _FIELDS, strict=True):
            mine.extend(map(attrgetter(name), contacts))
        return out

    def __getitem__(self, part: slice) -> ContactColumns:
        lo, hi, _ = part.indices(len(self))
        out = ContactColumns()
        out.extend(self, lo, hi)
        return out

    def __add__(self, other: ContactColumns) -> ContactColumns:
        out = ContactColumns()
        for mine, a, b in zip(out._lists(), self._lists(), other._lists(), strict=True):
            mine.extend(a)
            mine.extend(b)
        return out

    def select(self, which: list[int] | None) -> ContactColumns:
        """The contacts at ``which`` (all when ``None``), in order, as columns."""
        if which is None:
            return self
        out = ContactColumns()
        if which:
            pick = itemgetter(*which, which[0])
            for mine, theirs in zip(out._lists(), self._lists(), strict=True):
                mine.extend(pick(theirs)[:-1])
        return out

    def merge(self, at: list[int], other: ContactColumns, theirs_at: list[int]) -> list[int]:
        """Merge ``other``'s contacts into these by position (``at``: these contacts'
        positions, ``theirs_at``: the other's, both sorted); returns the merged positions."""
        positions = [*at, *theirs_at]
        order = sorted(range(len(positions)), key=positions.__getitem__)
        pick = itemgetter(*order, order[0])  # (a tuple even for one contact)
        for mine, theirs in zip(self._lists(), other._lists(), strict=True):
            mine[:] = pick(mine + theirs)[:-1]
        return list(pick(positions)[:-1])

    def extend(self, other: ContactColumns, lo: int, hi: int) -> None:
        """Append ``other``'s contacts ``lo`` to ``hi`` (exclusive)."""
        for mine, theirs in zip(self._lists(), other._lists(), strict=True):
            mine.extend(theirs[lo:hi])

    def split(self, at: int) -> ContactColumns:
        """The first ``at`` contacts, removed from these."""
        head = ContactColumns()
        for mine, theirs in zip(head._lists(), self._lists(), strict=True):
            mine.extend(theirs[:at])
            del theirs[:at]
        return head

    def payload(self, i: int) -> str:
        """Contact ``i``'s payload."""
        p = self.payloads[i]
        return p if p is not None else self.encoded[i].decode()  # type: ignore[union-attr]

    def contact(self, i: int) -> PreparedContact:
        """Contact ``i`` as an object."""
        values = [column[i] for column in self._lists()]
        values[3] = self.payload(i)
        return PreparedContact(*values)

    def contacts(self, which: list[int] | None = None) -> list[PreparedContact]:
        """The contacts at ``which`` (all when ``None``), as objects, in order."""
        columns = list(self.select(which)._lists())
        payloads, encoded = columns[3], columns[7]
        unknown = payloads.count(None)
        if unknown == len(payloads):  # all from the compiled mapper
            columns[3] = list(map(bytes.decode, encoded))
        elif unknown:
            columns[3] = [
                p if p is not None else e.decode() for p, e in zip(payloads, encoded, strict=True)
            ]
        return list(map(PreparedContact, *columns))


class ContactObjects:
    """:class:`ContactColumns`' interface over contacts that already are objects (a mapping
    the block mapper maps row by row): the columns are read from them when asked for."""

    __slots__ = ("objects",)

    def __init__(self, objects: list[PreparedContact] | None = None) -> None:
        self.objects: list[PreparedContact] = objects if objects is not None else []

    def __len__(self) -> int:
        return len(self.objects)

    def _column(self, name: str) -> list[Any]:
        return list(map(attrgetter(name), self.objects))

    rows = property(lambda self: self._column("row"))
    sources = property(lambda self: self._column("source"))
    keys = property(lambda self: self._column("key"))
    payloads = property(lambda self: self._column("payload"))
    fingerprints = property(lambda self: self._column("fingerprint"))
    pids = property(lambda self: self._column("profile_id"))

    def extend(self, other: ContactObjects, lo: int, hi: int) -> None:
        """Append ``other``'s contacts ``lo`` to ``hi`` (exclusive)."""
        self.objects.extend(other.objects[lo:hi])

    def split(self, at: int) -> ContactObjects:
        """The first ``at`` contacts, removed from these."""
        head = ContactObjects(self.objects[:at])
        del self.objects[:at]
        return head

    def payload(self, i: int) -> str:
        """Contact ``i``'s payload."""
        return self.objects[i].payload

    def contact(self, i: int) -> PreparedContact:
        """Contact ``i``."""
        return self.objects[i]

    def contacts(self, which: list[int] | None = None) -> list[PreparedContact]:
        """The contacts at ``which`` (all when ``None``), in order."""
        if which is None:
            return list(self.objects)
        return [self.objects[i] for i in which]


class ColumnBatch:
    """A :class:`~exporter.planning.contacts.Batch` whose contacts are columns (what the batch
    planner cuts from :class:`ContactColumns`): written to a chunk without an object per
    contact. :attr:`contacts` makes them objects, for whoever asks."""

    __slots__ = ("columns", "index")

    def __init__(self, index: int, columns: ContactColumns) -> None:
        self.index = index
        self.columns = columns

    def __len__(self) -> int:
        return len(self.columns)

    @property
    def contacts(self) -> list[PreparedContact]:
        """The contacts, as objects."""
        return self.columns.contacts()


Contacts = ContactColumns | ContactObjects
"""A block's (or a buffer's) contacts: columns, or objects read as columns."""


_FIELDS = ("row", "source", "key", "payload", "fingerprint", "profile_id", "size", "encoded")
