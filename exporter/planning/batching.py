"""Batch planning: group prepared contacts into bulk-import requests.

A batch closes when the next contact would make it exceed ``max_contacts`` (250) or make the
request body exceed ``max_body_bytes`` (399,999). Body sizes are tracked incrementally with
exactly the arithmetic of :func:`exporter.planning.contacts.bulk_body_size`, so the planner
measures the very bytes :func:`exporter.planning.contacts.encode_bulk_body` will produce.

A contact too large to fit in a request *on its own* is never put in a batch: it becomes a
:class:`~exporter.planning.contacts.Rejection` with reason ``too_large``, handed to the
``on_too_large`` callback (or, without one, collected in :attr:`BatchPlanner.too_large`).
``add`` therefore never raises for data; callers drain ``too_large`` (or use the callback) to
report them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from operator import attrgetter

import numpy as np
import numpy.typing as npt

from exporter.planning.columns import ColumnBatch, ContactColumns
from exporter.planning.contacts import (
    BULK_MAX_BODY_BYTES,
    BULK_MAX_CONTACTS,
    Batch,
    PreparedContact,
    Rejection,
    bulk_body_size,
)

_SIZE = attrgetter("size")
_BY_SUMS_FROM = 64
"""Contacts added at once from which :meth:`BatchPlanner.add_all` cuts by running sums."""

TOO_LARGE = "too_large"
"""Rejection reason for a contact whose payload alone cannot fit in a request."""


class BatchPlanner:
    """Streams contacts in, batches out (one bulk-import request each), in order."""

    def __init__(
        self,
        *,
        exclude_automations: bool,
        max_contacts: int = BULK_MAX_CONTACTS,
        max_body_bytes: int = BULK_MAX_BODY_BYTES,
        start_index: int = 0,
        on_too_large: Callable[[Rejection], None] | None = None,
    ) -> None:
        if not 1 <= max_contacts <= BULK_MAX_CONTACTS:
            raise ValueError(f"max_contacts must be 1..{BULK_MAX_CONTACTS}")
        if max_body_bytes > BULK_MAX_BODY_BYTES:
            raise ValueError(f"max_body_bytes must be at most {BULK_MAX_BODY_BYTES}")
        self.exclude_automations = exclude_automations
        self.max_contacts = max_contacts
        self.max_body_bytes = max_body_bytes
        self.next_index = start_index
        """Index the next batch will get."""
        self.last_body_size = 0
        """Exact request-body size of the batch most recently returned (bytes)."""
        self.too_large: list[Rejection] = []
        """Rejected contacts, when no ``on_too_large`` callback was given."""
        self._on_too_large = on_too_large or self.too_large.append
        self._empty = bulk_body_size([], exclude_automations=exclude_automations)
        self._contacts: list[PreparedContact] | ContactColumns = []
        """The open batch: objects, or columns while only columns were added."""
        self._size = self._empty

    @property
    def pending(self) -> int:
        """Contacts waiting in the open batch."""
        return len(self._contacts)

    def add(self, contact: PreparedContact) -> Batch | None:
        """Add one contact; returns the batch it closed, if adding it closed one."""
        closed = self.add_all((contact,))
        return closed[0] if closed else None  # type: ignore[return-value]  # (objects in)

    def add_all(
        self, contacts: Iterable[PreparedContact] | ContactColumns
    ) -> list[Batch | ColumnBatch]:
        """Add contacts in order; returns the batches they closed (in order).

        A list of contacts whose sizes their maker knew (:attr:`PreparedContact.size`), none
        too large on its own, is cut into batches from the running sum of the sizes (one
        ``searchsorted`` per batch: see :meth:`_add_by_sums`); anything else goes one by one.
        :class:`ContactColumns` are cut the same way into :class:`ColumnBatch` es while the
        open batch holds no objects; otherwise they are made objects first."""
        if isinstance(contacts, ContactColumns):
            if not len(contacts):
                return []
            sizes = np.asarray(contacts.sizes, np.int64)
            if (not isinstance(self._contacts, list) or not self._contacts) and self._fits_by_sums(
                sizes
            ):
                return self._add_by_sums(contacts, sizes)
            contacts = contacts.contacts()
        if isinstance(self._contacts, ContactColumns):
            self._contacts = self._contacts.contacts()
        if isinstance(contacts, list) and len(contacts) >= _BY_SUMS_FROM:
            sizes = np.fromiter(map(_SIZE, contacts), np.int64, len(contacts))
            if self._fits_by_sums(sizes):
                return self._add_by_sums(contacts, sizes)
        return self._add_one_by_one(contacts)  # type: ignore[return-value]  # (objects)

    def _fits_by_sums(self, sizes: npt.NDArray[np.int64]) -> bool:
        """Whether every size is known and fits a request on its own."""
        return bool(sizes.min() >= 0) and self._empty + int(sizes.max()) <= self.max_body_bytes

    def _add_by_sums(
        self, contacts: list[PreparedContact] | ContactColumns, sizes: npt.NDArray[np.int64]
    ) -> list[Batch | ColumnBatch]:
        """:meth:`_add_one_by_one` for contacts that all fit a request on their own.

        With ``ends[j]`` the sum of ``size + 1`` over the first ``j`` contacts, a batch that
        holds contacts ``i..j-1`` after ``had`` bytes (the open batch's size, or the empty body
        minus the comma the first contact does not need) takes ``had + ends[j] - ends[i]``
        bytes: the batch runs to the last ``j`` keeping that within the limit, and at most
        ``max_contacts`` contacts."""
        ends = np.zeros(len(contacts) + 1, np.int64)
        np.cumsum(sizes + 1, out=ends[1:])
        closed: list[Batch | ColumnBatch] = []
        limit, most, total = self.max_body_bytes, self.max_contacts, len(contacts)
        i = 0
        while i < total:
            open_ = self._contacts
            had = self._size if open_ else self._empty - 1
            j = int(np.searchsorted(ends, limit - had + ends[i], side="right")) - 1
            j = min(j, i + most - len(open_), total)
            if j > i:
                self._contacts = open_ + contacts[i:j] if open_ else contacts[i:j]  # type: ignore[operator]
                self._size = had + int(ends[j] - ends[i])
                i = j
            if i < total:  # the next contact does not fit: the open batch is full
                closed.append(self._close())
        return closed

    def _add_one_by_one(self, contacts: Iterable[PreparedContact]) -> list[Batch]:
        """:meth:`add_all`, one loop with int-only bookkeeping: the size of each payload comes
        from the contact when its maker knew it (:attr:`PreparedContact.size`)."""
        closed: list[Batch] = []
        open_ = self._contacts
        assert isinstance(open_, list)
        size = self._size
        empty = self._empty
        limit = self.max_body_bytes
        most = self.max_contacts
        for contact in contacts:
            n = contact.size
            if n < 0:
                n = contact.payload_bytes
            if open_:
                if len(open_) < most and size + n + 1 <= limit:
                    open_.append(contact)
                    size += n + 1
                    continue
            elif empty + n <= limit:
                open_.append(contact)
                size += n
                continue
            if empty + n > limit:
                self._on_too_large(self._reject(contact, n))
                continue
            self._contacts, self._size = open_, size
            closed.append(self._close())  # type: ignore[arg-type]  # (objects)
            open_ = self._contacts = [contact]
            size = empty + n
        self._contacts, self._size = open_, size
        return closed

    def flush(self) -> Batch | ColumnBatch | None:
        """The open batch (if it has any contacts); call once at the end."""
        return self._close() if len(self._contacts) else None

    def _close(self) -> Batch | ColumnBatch:
        open_ = self._contacts
        batch = (
            ColumnBatch(self.next_index, open_)
            if isinstance(open_, ContactColumns)
            else Batch(index=self.next_index, contacts=open_)
        )
        self.last_body_size = self._size
        self.next_index += 1
        self._contacts = []
        self._size = self._empty
        return batch

    def _reject(self, contact: PreparedContact, size: int) -> Rejection:
        return Rejection(
            row=contact.row,
            source=contact.source,
            reason=TOO_LARGE,
            message=(
                f"the contact's data is {size} bytes; a bulk-import request must stay at or "
                f"under {self.max_body_bytes} bytes"
            ),
        )
