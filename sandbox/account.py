"""The emulated account's data: contacts, list memberships, custom fields and tags.

Sized for a million contacts: a contact is one plain tuple, list memberships live in one
``{contact id: status}`` dict per list, and repeated strings (names, tag names, field values)
are shared through a bounded intern table. Every public method takes the account lock.
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_right
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import chain
from typing import Any, NamedTuple

from sandbox.config import Field, SandboxConfig

UNCONFIRMED, ACTIVE, UNSUBSCRIBED, BOUNCED = 0, 1, 2, 3
"""List status values, as ActiveCampaign numbers them."""

_INTERN_CAP = 200_000


class Contact(NamedTuple):
    """A read-only view of one stored contact. ``fields`` is a flat tuple
    ``(field id, value, field id, value, …)``; ``tags`` holds tag names."""

    id: int
    email: str
    first_name: str
    last_name: str
    phone: str
    account: str
    fields: tuple[str, ...]
    tags: tuple[str, ...]
    cdate: str
    udate: str

    def field_map(self) -> dict[str, str]:
        """Custom field values by field id."""
        f = self.fields
        return dict(zip(f[::2], f[1::2], strict=True))


Record = tuple[int, str, str, str, str, str, tuple[str, ...], tuple[str, ...], str, str]
"""How a contact is stored: a plain tuple of strings, ints and tuples of strings, in
:class:`Contact`'s order. The garbage collector stops tracking such tuples, so a million
contacts add nothing to its full collections (slotted objects would be scanned every time)."""


@dataclass(frozen=True)
class Tag:
    """A tag of the account."""

    id: str
    name: str
    cdate: str


class Account:
    """Contacts, lists, fields and tags, behind one lock."""

    def __init__(self, config: SandboxConfig) -> None:
        self.lock = threading.Lock()
        self._clock, self._scale = config.clock, config.time_scale
        self._epoch = (time.time(), config.clock())
        self._stamp_second = -1
        self._stamp_text = ""
        created = self.stamp()
        self.lists: dict[str, tuple[str, str]] = {
            list_id: (name, created) for list_id, name in config.lists.items()
        }
        self.fields: dict[str, Field] = {f.id: f for f in config.fields}
        self.field_ids: dict[object, str] = {}
        """Field id as a client may write it (``3`` or ``"3"``) -> the canonical string."""
        for f in config.fields:
            self.field_ids[f.id] = self.field_ids[int(f.id)] = f.id
        self.date_fields = frozenset(f.id for f in config.fields if f.type == "date")
        self.list_ids: dict[object, str] = {}
        """List id as a client may write it -> the canonical string."""
        for list_id in self.lists:
            self.list_ids[list_id] = self.list_ids[int(list_id)] = list_id
        self._tags: dict[str, Tag] = {}
        for name in config.tags:
            self._add_tag(name)
        self._by_email: dict[str, Record] = {}
        self._by_id: list[Record | None] = [None]
        self._tag_sets: dict[tuple[object, ...], tuple[str, ...]] = {}
        self._field_sets: dict[tuple[str, ...], tuple[str, ...]] = {}
        self._members: dict[str, dict[int, int]] = {list_id: {} for list_id in self.lists}
        self._sorted: dict[tuple[str, int | None], list[int]] = {}
        self._intern: dict[str, str] = {}
        self.automations_triggered = 0
        self.ignored_keys: Counter[str] = Counter()
        """Contact keys the API silently dropped (e.g. ``firstName`` sent to bulk import),
        as ``"endpoint:key"`` -> times seen."""

    # -- small helpers (callers hold the lock) ---------------------------------------------

    def now(self) -> float:
        """The account's wall clock (Unix seconds): it runs ``time_scale`` times faster than
        ours, like every budget window, so a date the API writes and the ``Date`` header keep
        the distances they would have at ActiveCampaign's real pace."""
        wall, began = self._epoch
        return wall + (self._clock() - began) * self._scale

    def stamp(self) -> str:
        """Now, formatted as ActiveCampaign dates are; one shared string per second."""
        second = int(self.now())
        if second != self._stamp_second:
            self._stamp_second = second
            self._stamp_text = datetime.fromtimestamp(second, UTC).isoformat()
        return self._stamp_text

    def share(self, text: str) -> str:
        """One object per distinct repeated string (bounded, so unique strings cost nothing)."""
        got = self._intern.get(text)
        if got is not None:
            return got
        if len(self._intern) < _INTERN_CAP:
            self._intern[text] = text
        return text

    def _add_tag(self, name: str) -> Tag:
        tag = Tag(str(len(self._tags) + 1), name, self.stamp())
        self._tags[name.lower()] = tag
        return tag

    def _changed(self, list_id: str) -> None:
        if not self._sorted:
            return
        for key in [k for k in self._sorted if k[0] == list_id]:
            del self._sorted[key]

    # -- writes (callers hold the lock) ------------------------------------------------------

    def import_contact(self, raw: dict[str, Any], email: str, exclude_all: bool) -> int | None:
        """Upsert one validated bulk-import contact (``email`` lower-cased); returns the new
        contact's id when it was created. Hot path: one pass over the keys."""
        old = self._by_email.get(email)
        stamp = self.stamp()
        if old is None:
            cid, first, last, phone, acct, cdate = len(self._by_id), "", "", "", "", stamp
            fields: tuple[str, ...] = ()
            tags: tuple[str, ...] = ()
        else:
            cid, _, first, last, phone, acct, fields, tags, cdate, _ = old
        share = self.share
        excluded = exclude_all
        subscribe: list[dict[str, Any]] = []
        unsubscribe: list[dict[str, Any]] = []
        for key, value in raw.items():
            if key == "email":
                continue
            if key == "first_name":
                first = share(value)
            elif key == "last_name":
                last = share(value)
            elif key == "phone":
                phone = value
            elif key == "customer_acct_name":
                acct = share(value)
            elif key == "fields":
                if value:
                    fields = self._merge_fields(fields, value)
            elif key == "tags":
                if value:
                    tags = self._merge_tags(tags, value)
            elif key == "subscribe":
                subscribe = value
            elif key == "unsubscribe":
                unsubscribe = value
            elif key == "exclude_automations":
                excluded = excluded or value is True
            else:
                self.ignored_keys[f"bulk_import:{key}"] += 1
        record: Record = (cid, email, first, last, phone, acct, fields, tags, cdate, stamp)
        if old is None:
            self._by_id.append(record)
        else:
            self._by_id[cid] = record
        self._by_email[email] = record
        for item in subscribe:
            self.subscribe(cid, self.list_ids[item["listid"]], resubscribe=False)
        for item in unsubscribe:
            self.unsubscribe(cid, self.list_ids[item["listid"]])
        if not excluded:
            self.automations_triggered += 1
        return None if old is not None else cid

    def sync_contact(
        self, email: str, names: dict[str, str], values: list[tuple[str, str]]
    ) -> tuple[Contact, bool]:
        """Upsert by (lower-cased) email from ``contact/sync``: ``names`` may hold
        ``first_name``, ``last_name``, ``phone``. Returns the contact and whether it is new."""
        old = self._by_email.get(email)
        stamp = self.stamp()
        if old is None:
            old = (len(self._by_id), email, "", "", "", "", (), (), stamp, stamp)
            self._by_id.append(old)
        cid, _, first, last, phone, acct, fields, tags, cdate, _ = old
        if values:
            fields = self._merge_fields(fields, [{"id": f, "value": v} for f, v in values])
        record: Record = (
            cid,
            email,
            self.share(names.get("first_name", first)),
            self.share(names.get("last_name", last)),
            names.get("phone", phone),
            acct,
            fields,
            tags,
            cdate,
            stamp,
        )
        self._by_id[cid] = record
        created = email not in self._by_email
        self._by_email[email] = record
        return Contact._make(record), created

    def _merge_fields(
        self, fields: tuple[str, ...], items: list[dict[str, Any]]
    ) -> tuple[str, ...]:
        merged = dict(zip(fields[::2], fields[1::2], strict=True)) if fields else {}
        ids, share = self.field_ids, self.share
        for item in items:
            value = item["value"]
            merged[ids[item["id"]]] = share(value if type(value) is str else str(value))
        result = tuple(chain.from_iterable(merged.items()))
        known = self._field_sets.get(result)
        if known is not None:
            return known
        if len(self._field_sets) < _INTERN_CAP:
            self._field_sets[result] = result
        return result

    def _merge_tags(self, tags: tuple[str, ...], names: list[str]) -> tuple[str, ...]:
        key: tuple[object, ...] = (tags, *names)
        known = self._tag_sets.get(key)
        if known is not None:
            return known
        current = list(tags)
        for name in names:
            tag = self._tags.get(name.lower()) or self._add_tag(self.share(name))
            if tag.name not in current:
                current.append(tag.name)
        merged = tuple(current)
        if len(self._tag_sets) < _INTERN_CAP:
            self._tag_sets[key] = merged
        return merged

    def subscribe(self, contact_id: int, list_id: str, *, resubscribe: bool) -> None:
        """Make the contact active on the list. Without ``resubscribe`` (bulk import) someone
        who unsubscribed or bounced keeps that status."""
        members = self._members[list_id]
        status = members.get(contact_id)
        if status == ACTIVE or (not resubscribe and status in (UNSUBSCRIBED, BOUNCED)):
            return
        members[contact_id] = ACTIVE
        self._changed(list_id)
        self._touch(contact_id)

    def unsubscribe(self, contact_id: int, list_id: str, *, force: bool = False) -> None:
        """Mark the contact unsubscribed from the list. Bulk import only touches existing
        memberships; ``force`` (contactLists, the opt-out simulation) records it regardless."""
        members = self._members[list_id]
        status = members.get(contact_id)
        if status == UNSUBSCRIBED or (status is None and not force):
            return
        members[contact_id] = UNSUBSCRIBED
        self._changed(list_id)
        self._touch(contact_id)

    def _touch(self, contact_id: int) -> None:
        """A change of list membership updates the contact's ``udate``, as ActiveCampaign's
        ``filters[updated_after]`` finds list subscriptions since a date."""
        record = self._by_id[contact_id]
        stamp = self.stamp()
        if record is None or record[9] is stamp:
            return
        touched: Record = (*record[:9], stamp)
        self._by_id[contact_id] = touched
        self._by_email[record[1]] = touched

    # -- reads (callers hold the lock) -------------------------------------------------------

    def by_email(self, email: str) -> Contact | None:
        """The contact with this email (any case)."""
        found = self._by_email.get(email.lower())
        return None if found is None else Contact._make(found)

    def by_id(self, contact_id: int) -> Contact | None:
        """The contact with this id."""
        if 0 < contact_id < len(self._by_id):
            found = self._by_id[contact_id]
            return None if found is None else Contact._make(found)
        return None

    def count(self) -> int:
        """How many contacts exist."""
        return len(self._by_id) - 1

    def statuses(self, contact: Contact) -> dict[str, int]:
        """The contact's status on each list it has a membership of."""
        out: dict[str, int] = {}
        for list_id, members in self._members.items():
            status = members.get(contact.id)
            if status is not None:
                out[list_id] = status
        return out

    def list_size(self, list_id: str, status: int | None) -> int:
        """Members of the list (with that status, when given)."""
        members = self._members[list_id]
        if status is None:
            return len(members)
        return sum(1 for s in members.values() if s == status)

    def member_emails(self, list_id: str, status: int) -> set[str]:
        """Emails of the list's members with that status."""
        by_id = self._by_id
        return {
            c[1]
            for cid, s in self._members[list_id].items()
            if s == status and (c := by_id[cid]) is not None
        }

    def tags(self) -> list[Tag]:
        """Every tag, oldest first."""
        return list(self._tags.values())

    def query(
        self,
        *,
        email: str | None,
        list_id: str | None,
        status: int | None,
        id_greater: int,
        descending: bool,
        offset: int,
        limit: int,
        updated_after: str | None = None,
    ) -> tuple[list[Contact], int]:
        """One page of contacts matching the filters, and how many match in all.
        ``updated_after``: a UTC date-time in the stamps' format; only contacts updated later."""
        ids = self._candidates(email, list_id, status)
        if updated_after is not None:
            by_id = self._by_id
            ids = [i for i in ids if (c := by_id[i]) is not None and c[9] > updated_after]
        start = bisect_right(ids, id_greater)
        total = len(ids) - start
        if descending:
            hi = len(ids) - offset
            picked = [ids[i] for i in range(hi - 1, max(hi - limit, start) - 1, -1)]
        else:
            lo = start + offset
            picked = [ids[i] for i in range(lo, min(lo + limit, len(ids)))]
        by_id = self._by_id
        return [Contact._make(c) for i in picked if (c := by_id[i]) is not None], total

    def _candidates(
        self, email: str | None, list_id: str | None, status: int | None
    ) -> Sequence[int]:
        if email is not None:
            found = self._by_email.get(email.lower())
            if found is None:
                return []
            if list_id is not None:
                got = self._members[list_id].get(found[0])
                if got is None or (status is not None and got != status):
                    return []
            return [found[0]]
        if list_id is None:
            return range(1, len(self._by_id))
        key = (list_id, status)
        ids = self._sorted.get(key)
        if ids is None:
            members = self._members[list_id]
            ids = sorted(
                members if status is None else (c for c, s in members.items() if s == status)
            )
            self._sorted[key] = ids
        return ids

    def record(self, contact: Contact) -> dict[str, object]:
        """The stored contact as a plain dict (introspection)."""
        return {
            "id": str(contact.id),
            "email": contact.email,
            "first_name": contact.first_name,
            "last_name": contact.last_name,
            "phone": contact.phone,
            "customer_acct_name": contact.account,
            "fields": contact.field_map(),
            "tags": list(contact.tags),
            "lists": self.statuses(contact),
            "cdate": contact.cdate,
            "udate": contact.udate,
        }
