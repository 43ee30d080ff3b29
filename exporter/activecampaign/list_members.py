"""Reading a list's members, for :class:`~.client.ActiveCampaignClient`: contacts walked by
ascending id (cheap and correct on lists far larger than offset paging handles), and the mark
that later reads of "subscribed since" start from, taken by ActiveCampaign's own clock.

:class:`ListMemberReads` is a mixin of the client: its methods send through the client's one
request path (``_call``) and read the ``Date`` of the answer it last received.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta, tzinfo
from email.utils import parsedate_to_datetime
from typing import Any, Protocol

from exporter.errors import FatalApiError

PAGE_LIMIT = 100
"""ActiveCampaign's maximum page size (its default, 20, is why others miss tags and fields)."""


class _Caller(Protocol):
    """What the mixin needs of the client."""

    _answers: threading.local
    """The last answer's ``Date`` header (``date``), per thread."""

    def _call(self, method: str, path: str, *, params: Mapping[str, str] | None = None) -> Any: ...


class ListMemberReads:
    """A list's members and the newest-contact mark (mixed into the client)."""

    def iter_list_members(
        self: _Caller,
        list_id: str,
        status: int = 1,
        *,
        after_id: int = 0,
        updated_after: str | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Every contact with ``status`` on the list whose id is above ``after_id`` (and, with
        ``updated_after``, updated after that date-time: ``filters[updated_after]``, which
        finds list subscriptions since then), walked by ascending id (``id_greater``), which
        stays correct and cheap on lists far larger than offset paging handles."""
        last_id = after_id
        while True:
            params = {
                "listid": str(list_id),
                "status": str(status),
                "limit": str(PAGE_LIMIT),
                "orders[id]": "ASC",
                "id_greater": str(last_id),
            }
            if updated_after is not None:
                params["filters[updated_after]"] = updated_after
            page = self._call("GET", "/contacts", params=params)
            items = page.get("contacts") if isinstance(page, dict) else None
            if not isinstance(items, list):
                raise FatalApiError("GET /contacts: answer has no 'contacts' list")
            yield from items
            ids = [int(c["id"]) for c in items if isinstance(c, dict) and "id" in c]
            if len(items) < PAGE_LIMIT or not ids or max(ids) <= last_id:
                return
            last_id = max(ids)

    def newest_contact_mark(self: _Caller) -> tuple[int, str | None]:
        """One request: the highest contact id in the account (0 when it has none), and *now*
        by ActiveCampaign's own clock (its ``Date`` header, less a second) written in the
        account's time zone (the offset of that contact's dates) — a mark for
        ``filters[updated_after]`` that depends on no clock of ours, whether ActiveCampaign
        reads the offset or takes the time as the account's local time. ``None`` without a
        ``Date`` header."""
        page = self._call("GET", "/contacts", params={"orders[id]": "DESC", "limit": "1"})
        date = getattr(self._answers, "date", None)
        items = page.get("contacts") if isinstance(page, dict) else None
        newest = items[0] if isinstance(items, list) and items else None
        if not isinstance(newest, dict):
            return 0, server_mark(date, None)
        try:
            contact_id = int(newest.get("id", 0))
        except (TypeError, ValueError):
            contact_id = 0
        return contact_id, server_mark(date, newest.get("udate") or newest.get("cdate"))


def server_mark(date_header: str | None, account_date: object) -> str | None:
    """``date_header`` (an HTTP date) less one second, as an ISO date-time in the offset of
    ``account_date`` (an ActiveCampaign date of the account; UTC when it has none)."""
    if not date_header:
        return None
    try:
        now = parsedate_to_datetime(date_header)
    except (TypeError, ValueError):
        return None
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    zone: tzinfo = UTC
    if isinstance(account_date, str):
        try:
            zone = datetime.fromisoformat(account_date).tzinfo or UTC
        except ValueError:
            zone = UTC
    return (now - timedelta(seconds=1)).astimezone(zone).replace(microsecond=0).isoformat()
