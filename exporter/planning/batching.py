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

from exporter.planning.contacts import (
    BULK_MAX_BODY_BYTES,
    BULK_MAX_CONTACTS,
    Batch,
    PreparedContact,
    Rejection,
    bulk_body_size,
)

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
        self._contacts: list[PreparedContact] = []
        self._size = self._empty

    @property
    def pending(self) -> int:
        """Contacts waiting in the open batch."""
        return len(self._contacts)

    def add(self, contact: PreparedContact) -> Batch | None:
        """Add one contact; returns the batch it closed, if adding it closed one."""
        closed = self.add_all((contact,))
        return closed[0] if closed else None

    def add_all(self, contacts: Iterable[PreparedContact]) -> list[Batch]:
        """Add contacts in order; returns the batches they closed (in order). One loop with
        int-only bookkeeping: the size of each payload comes from the contact when its maker
        knew it (:attr:`PreparedContact.size`)."""
        closed: list[Batch] = []
        open_ = self._contacts
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
            closed.append(self._close())
            open_ = self._contacts = [contact]
            size = empty + n
        self._contacts, self._size = open_, size
        return closed

    def flush(self) -> Batch | None:
        """The open batch (if it has any contacts); call once at the end."""
        return self._close() if self._contacts else None

    def _close(self) -> Batch:
        batch = Batch(index=self.next_index, contacts=self._contacts)
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
