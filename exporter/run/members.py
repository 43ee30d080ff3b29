"""Who was on the list before this export: the people it must never unsubscribe.

An export unsubscribes a leaver only if it subscribed them. Confirming a send is not proof of
that: someone already active on the list (a newsletter sign-up, another integration) is
"confirmed" like anyone else. So before an export sends anything, the list's active members it
did not subscribe are recorded here, and :class:`~exporter.incremental.diff.Differ` keeps them
(never unsubscribes them) when they leave the segment.

Cost, in requests to ActiveCampaign (100 contacts per request, walked by ascending contact id):

* an export's **first run** reads the whole list: ``ceil(members / 100)`` requests (an empty
  list: one request);
* **every later run** reads the members created since the last run (ids above the highest
  seen) and the members *updated* since the last run ended (``filters[updated_after]``: a list
  subscription updates the contact, so this finds existing contacts who joined the list by
  another route): ``ceil(new / 100) + ceil(updated / 100)`` requests, typically two;
* and **after sending**, one request (the account's newest contact id, and ActiveCampaign's
  clock) moves both marks past what the run itself created and updated, so the next run does
  not read them back (:func:`mark_sent`).

What it does not see (docs/guarantees.md): an existing contact who joins the list by another
route *while a run of this export is sending* (after its read, before its mark), and enters the
segment later, is treated as the export's own. Seeing that too would take reading back every
contact the run sent, or one request per contact.

The read happens once per run, before its first bulk import (:func:`read_before_sending`, which
both hosts call: the command line while prepare reads the snapshot, once prepare has loaded the
record, the orchestration as an activity before its first wave); prepare only loads what earlier
runs read, which is exactly what it needs: a leaver now was sent by an earlier run, after that
run's read.

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
from exporter.incremental.state import U64, hash64
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
    updated_mark: str | None = None
    """When the last run ended by ActiveCampaign's clock, in the account's time zone: the next
    run also reads members updated after it. ``None`` (a record from before marks were kept,
    or a first run that stopped before its mark): the next run reads the whole list again."""


def record_path(export: str) -> str:
    return f"state/{export}/list_members.json"


def hashes_path(export: str) -> str:
    return f"state/{export}/list_members.bin"


def load(store: Store, export: str, list_id: str) -> tuple[U64, int | None]:
    """The recorded members' hashes (sorted) and the highest id read; ``None`` for a list
    never read (or another list than the one recorded)."""
    hashes, record = _load(store, export, list_id)
    return hashes, None if record is None else record.max_id


def _load(store: Store, export: str, list_id: str) -> tuple[U64, ListMembersRecord | None]:
    record = read_record(store, record_path(export), ListMembersRecord)
    if record is None or record.list_id != list_id:
        return np.zeros(0, np.uint64), None
    try:
        data = store.read_bytes(hashes_path(export))
    except ObjectNotFound:
        return np.zeros(0, np.uint64), None
    return np.frombuffer(data, dtype=np.uint64).copy(), record


class ReadStopped(Exception):  # a cancellation, not an error (exporter.errors)
    """The caller asked a read in progress to stop (its run stopped before sending): nothing
    of it was recorded."""


def refresh(
    store: Store,
    export: str,
    list_id: str,
    subscribed: Callable[[], U64],
    session: ApiSession,
    stop: Callable[[], bool] | None = None,
) -> U64:
    """Read the list's members added or updated since the last run (all of them the first
    time), record those this export did not subscribe, and return every recorded hash
    (sorted). ``subscribed`` reads the sorted key hashes of the contacts this export subscribed
    (:func:`exporter.incremental.state.load_subscribed`), only when the read found someone
    (usually nobody, and the state of a million contacts is worth not reading for nothing).
    ``stop``: asked at every contact and before anything is recorded; when it says so, the
    read raises :class:`ReadStopped` and records nothing."""

    def check() -> None:
        if stop is not None and stop():
            raise ReadStopped

    known, record = _load(store, export, list_id)
    # Without an updated mark, only a whole read sees members who joined by another route.
    first = record is None or record.updated_mark is None
    max_id = None if record is None else record.max_id
    emails: list[bytes] = []

    def read(client: ActiveCampaignClient) -> int:
        emails.clear()  # a retry after a re-read key starts over
        top = 0 if first else (max_id or 0)
        for contact in client.iter_list_members(list_id, after_id=top):
            check()
            email, contact_id = _email_and_id(contact)
            top = max(top, contact_id)
            if email:
                emails.append(email.lower().encode())
        if not first and record is not None:
            for contact in client.iter_list_members(list_id, updated_after=record.updated_mark):
                check()
                email, _ = _email_and_id(contact)
                if email:
                    emails.append(email.lower().encode())
        return max(top, max_id or 0)

    highest = session.call_client(read)
    check()
    found = hash64(emails)
    if len(found):  # the state is read only when there is something to tell apart
        ours = subscribed()
        check()
        at = np.minimum(np.searchsorted(ours, found), max(len(ours) - 1, 0))
        found = found[~(ours[at] == found)] if len(ours) else found
        del ours
    merged = np.union1d(known, found).astype(np.uint64)
    check()
    store.write_bytes(hashes_path(export), merged.tobytes())
    write_record(
        store,
        record_path(export),
        ListMembersRecord(
            list_id=list_id,
            max_id=highest,
            count=len(merged),
            updated_mark=None if record is None else record.updated_mark,
        ),
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
    before_state: Callable[[], None] | None = None,
    stop: Callable[[], bool] | None = None,
) -> int:
    """Refresh the export's record of pre-existing members once for this run (a marker in the
    run's folder makes a retry or replay a no-op); returns how many are recorded. ``session``:
    the run's own (the command line's), so one budget and one key re-read serve the run.
    ``before_state`` is called before the state is read (the command line's read, made beside
    prepare, waits there for prepare to end, so the two never hold a state at once); ``stop``:
    see :func:`refresh`."""
    marker = runs.run_dir(req.export, req.run_id) + "/list_members.json"
    done = read_record(ctx.store, marker, ListMembersRecord)
    if done is not None:
        return done.count
    export, connection = ctx.export_config(req.export)
    if export.leaver_policy != "unsubscribe":
        return 0
    own = session is None
    active = ctx.session(export, connection, share) if session is None else session
    try:
        merged = refresh(
            ctx.store,
            export.name,
            export.list_id,
            lambda: _subscribed(ctx.store, export.name, before_state),
            active,
            stop,
        )
    finally:
        if own:
            active.close()
    record = read_record(ctx.store, record_path(export.name), ListMembersRecord)
    if record is not None:
        write_record(ctx.store, marker, record)
    return len(merged)


def _subscribed(store: Store, export: str, before: Callable[[], None] | None) -> U64:
    if before is not None:
        before()
    return state_mod.load_subscribed(store, export)


@telemetry.phase("members")
def mark_sent(ctx: RunContext, req: RunRequest, session: ApiSession | None = None) -> int:
    """After the run sent: move the export's marks to the account's newest contact id and to
    now by ActiveCampaign's clock, so the next run's read skips the contacts this run created
    and updated. One request; returns the id mark."""
    export, connection = ctx.export_config(req.export)
    record = read_record(ctx.store, record_path(export.name), ListMembersRecord)
    if export.leaver_policy != "unsubscribe" or record is None:
        return 0
    own = session is None
    active = ctx.session(export, connection, 1.0) if session is None else session
    try:
        newest, now = active.call_client(lambda client: client.newest_contact_mark())
    finally:
        if own:
            active.close()
    # No Date header: keep the old mark (a longer read next run, never a missed joiner).
    mark = max(int(newest), record.max_id)
    update = {"max_id": mark, "updated_mark": now or record.updated_mark}
    write_record(ctx.store, record_path(export.name), record.model_copy(update=update))
    return mark


def _email_and_id(contact: dict[str, Any]) -> tuple[str, int]:
    try:
        contact_id = int(contact.get("id", 0))
    except (TypeError, ValueError):
        contact_id = 0
    email = contact.get("email")
    return (email if isinstance(email, str) else ""), contact_id
