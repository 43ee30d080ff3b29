"""Who was on the list before this export: the people it must never unsubscribe.

An export unsubscribes a leaver only if it subscribed them. Confirming a send is not proof of
that: someone already active on the list (a newsletter sign-up, another integration) is
"confirmed" like anyone else. So before an export sends anything, the list's active members it
did not subscribe are recorded here, and :class:`~exporter.incremental.diff.Differ` keeps them
(never unsubscribes them) when they leave the segment.

Cost, in requests to ActiveCampaign (100 contacts per request, walked by ascending contact id):

* an export's **first run** reads the whole list: ``ceil(members / 100)`` requests (an empty
  list: one request);
* **every later run** reads only contacts created since the last run (ids above the highest
  seen): ``ceil(new members / 100)``, typically one or two requests;
* and **after sending**, one request (the account's newest contact id) moves the mark past the
  contacts the run itself created, so the next run does not read them back (:func:`mark_sent`).

What it does not see (docs/guarantees.md): a contact that already existed in the account when
the list was last read — or was created by another route while the run was sending — joined the
list by another route, and then entered the segment, is treated as the export's own. Seeing
that would take reading the whole list every run, or one request per new contact.

The read happens once per run, before its first bulk import (:func:`read_before_sending`, which
both hosts call: the command line before its first push, the orchestration as an activity
before its first wave); prepare only loads what earlier runs read, which is exactly what it
needs: a leaver now was sent by an earlier run, after that run's read.

The record keeps 64-bit hashes of the lower-cased emails, never the addresses:
``state/<export>/list_members.bin`` (sorted hashes) and ``list_members.json`` (the list and the
highest contact id read).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from exporter import telemetry
from exporter.activecampaign.client import ActiveCampaignClient
from exporter.activecampaign.session import ApiSession
from exporter.incremental import state as state_mod
from exporter.incremental.state import SUBSCRIBED_BY_US, U64, ExportState, hash64
from exporter.run.context import RunContext
from exporter.run.records import RunRequest
from exporter.storage import runs
from exporter.storage.records import Record, read_record, write_record
from exporter.storage.store import ObjectNotFound, Store

logger = logging.getLogger(__name__)


class ListMembersRecord(Record):
    """What was read of the list's members: which list, how far."""

    list_id: str
    max_id: int
    """The highest contact id read: the next read starts above it."""
    count: int
    """Members recorded (hashes in ``list_members.bin``)."""


def record_path(export: str) -> str:
    return f"state/{export}/list_members.json"


def hashes_path(export: str) -> str:
    return f"state/{export}/list_members.bin"


def load(store: Store, export: str, list_id: str) -> tuple[U64, int | None]:
    """The recorded members' hashes (sorted) and the highest id read; ``None`` for a list
    never read (or another list than the one recorded)."""
    record = read_record(store, record_path(export), ListMembersRecord)
    if record is None or record.list_id != list_id:
        return np.zeros(0, np.uint64), None
    try:
        data = store.read_bytes(hashes_path(export))
    except ObjectNotFound:
        return np.zeros(0, np.uint64), None
    return np.frombuffer(data, dtype=np.uint64).copy(), record.max_id


def refresh(
    store: Store,
    export: str,
    list_id: str,
    state: Callable[[], ExportState],
    session: ApiSession,
) -> U64:
    """Read the list's members added since the last read (all of them the first time), record
    those this export did not subscribe, and return every recorded hash (sorted). ``state``
    loads the export's state, only when the read found someone (usually nobody, and the state
    of a million contacts is worth not loading for nothing)."""
    known, max_id = load(store, export, list_id)
    first = max_id is None
    emails: list[bytes] = []
    highest = max_id or 0

    def read(client: ActiveCampaignClient) -> int:
        emails.clear()  # a retry after a re-read key starts over
        top = max_id or 0
        for contact in client.iter_list_members(list_id, after_id=top):
            email, contact_id = _email_and_id(contact)
            top = max(top, contact_id)
            if email:
                emails.append(email.lower().encode())
        return top

    highest = session.call_client(read)
    found = hash64(emails)
    if len(found):  # the state is loaded only when there is something to tell apart
        current = state()
        ours = current.hashes[(current.flags & np.uint8(SUBSCRIBED_BY_US)) != 0]
        found = found[~np.isin(found, ours)]
        del current
    merged = np.union1d(known, found).astype(np.uint64)
    store.write_bytes(hashes_path(export), merged.tobytes())
    write_record(
        store,
        record_path(export),
        ListMembersRecord(list_id=list_id, max_id=highest, count=len(merged)),
    )
    logger.info(
        "list %s: %d members not subscribed by export %s recorded (%s read, %d new)",
        list_id,
        len(merged),
        export,
        "whole list" if first else "since the last run",
        len(found),
    )
    return merged


@telemetry.phase("members")
def read_before_sending(
    ctx: RunContext,
    req: RunRequest,
    session: ApiSession | None = None,
    *,
    share: float = 1.0,
    rate_share: float | None = None,
) -> int:
    """Refresh the export's record of pre-existing members once for this run (a marker in the
    run's folder makes a retry or replay a no-op); returns how many are recorded. ``session``:
    the run's own (the command line's), so one budget and one key re-read serve the run."""
    marker = runs.run_dir(req.export, req.run_id) + "/list_members.json"
    done = read_record(ctx.store, marker, ListMembersRecord)
    if done is not None:
        return done.count
    export, connection = ctx.export_config(req.export)
    if export.leaver_policy != "unsubscribe":
        return 0
    own = session is None
    active = ctx.session(export, connection, share, rate_share) if session is None else session
    try:
        merged = refresh(
            ctx.store,
            export.name,
            export.list_id,
            lambda: state_mod.load(ctx.store, export.name)[0],
            active,
        )
    finally:
        if own:
            active.close()
    record = read_record(ctx.store, record_path(export.name), ListMembersRecord)
    if record is not None:
        write_record(ctx.store, marker, record)
    return len(merged)


@telemetry.phase("members")
def mark_sent(ctx: RunContext, req: RunRequest, session: ApiSession | None = None) -> int:
    """After the run sent: move the export's mark to the account's newest contact id, so the
    next run's read skips the contacts this run created. One request; returns the mark."""
    export, connection = ctx.export_config(req.export)
    record = read_record(ctx.store, record_path(export.name), ListMembersRecord)
    if export.leaver_policy != "unsubscribe" or record is None:
        return 0
    own = session is None
    active = ctx.session(export, connection, 1.0) if session is None else session
    try:
        newest = int(active.call_client(lambda client: client.newest_contact_id()))
    finally:
        if own:
            active.close()
    if newest > record.max_id:
        write_record(
            ctx.store, record_path(export.name), record.model_copy(update={"max_id": newest})
        )
    return max(newest, record.max_id)


def _email_and_id(contact: dict[str, Any]) -> tuple[str, int]:
    try:
        contact_id = int(contact.get("id", 0))
    except (TypeError, ValueError):
        contact_id = 0
    email = contact.get("email")
    return (email if isinstance(email, str) else ""), contact_id
