"""One run per export at a time: the export's active-run record is a lease, taken with a store
condition when a run is prepared and released when it is finalized.

Checking "is another run going?" before starting is not enough: the timer, the blob trigger and
a person pressing "run now" can all pass that check in the same second and then prepare two runs
whose sends and state commits interleave. Taking the lease is one conditional write (create if
absent, or replace exactly the record read), so of two runs racing for it exactly one wins; the
loser raises :class:`RunConflict` before reading anything. A holder that is provably gone (its
report is final, or it wrote nothing for :data:`LEASE_TTL`) is taken over, again conditionally.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from exporter.errors import RunConflict
from exporter.run.context import RunContext
from exporter.run.records import RunRequest
from exporter.run.report import RunReport
from exporter.storage import runs
from exporter.storage.records import ActiveRun, PendingSnapshot, read_record, write_record
from exporter.storage.store import ObjectNotFound, PreconditionFailed

logger = logging.getLogger(__name__)

LEASE_TTL = timedelta(hours=2)
"""An unfinished run that wrote nothing for this long is taken to be gone (its host died): a run
of another snapshot may then start. Longer than any silence of a healthy run (the longest is
one import's poll deadline, 30 minutes)."""

TRIGGERS = frozenset({"timer", "blob"})
"""Requesters whose snapshot waits as pending when it loses the race (HTTP and CLI are told)."""

_ATTEMPTS = 3  # the holder may release between our write and our read: try again, boundedly


def take(ctx: RunContext, req: RunRequest) -> ActiveRun | None:
    """Hold the export's lease for ``req`` (a no-op when it already does: an activity run twice).
    Returns the holder it took over when that one was gone without finishing (the caller
    closes it as ``abandoned``), else ``None``.

    Raises :class:`RunConflict` naming the holder while another run of the export is live; a
    trigger's snapshot is then recorded as pending, so it runs after the holder ends."""
    path = runs.active_run_path(req.export)
    mine = ActiveRun(run_id=req.run_id, snapshot_identity=req.snapshot_identity, request=req)
    for _ in range(_ATTEMPTS):
        try:
            write_record(ctx.store, path, mine, if_none_match=True)
            return None
        except PreconditionFailed:
            pass
        try:
            data, etag = ctx.store.read_with_etag(path)
        except ObjectNotFound:
            continue  # released in between
        holder = ActiveRun.model_validate_json(data)
        if holder.run_id == req.run_id:
            return None
        try:
            done = refuse_while_live(ctx, req.export, holder, ctx.now())
            write_record(ctx.store, path, mine, if_match=etag)
            return None if done else holder
        except PreconditionFailed:
            continue  # someone else took it over first: look again
        except RunConflict:
            if req.requested_by in TRIGGERS:
                pend(ctx, req.export, req.snapshot.path, req.snapshot_identity, req.requested_by)
            raise
    raise RunConflict(
        f"export {req.export!r}: another run keeps taking its lease; try again", run_id=None
    )


def release(ctx: RunContext, req: RunRequest) -> None:
    """Give the lease back if ``req`` holds it (a run that lost the race holds nothing)."""
    path = runs.active_run_path(req.export)
    holder = read_record(ctx.store, path, ActiveRun)
    if holder is not None and holder.run_id == req.run_id:
        ctx.store.delete(path)


def refuse_while_live(ctx: RunContext, export: str, active: ActiveRun, now: datetime) -> bool:
    """Raise :class:`RunConflict` while ``active`` is unfinished and alive. Two runs over
    different snapshots would otherwise interleave their sends and their state commits (a
    leaver one unsubscribes, the other records as confirmed). Returns whether ``active`` had
    finished (``False``: it is gone without finishing, its report still to be written)."""
    if finished(ctx, export, active.run_id):
        return True
    last = _last_activity(ctx, export, active.run_id)
    if last is not None and now - last > LEASE_TTL:
        logger.warning(
            "export %s: run %s wrote nothing since %s; taking it as gone",
            export,
            active.run_id,
            last.isoformat(),
        )
        return False
    raise RunConflict(
        f"export {export!r} is already running run {active.run_id} (over another snapshot); "
        "one run per export at a time: the newer snapshot runs after it",
        run_id=active.run_id,
    )


def pend(ctx: RunContext, export: str, path: str, identity: str, source: str) -> None:
    """Record ``path`` as the snapshot to run after the export's current run (latest wins; the
    same snapshot keeps its first requester)."""
    where = runs.pending_path(export)
    known = read_record(ctx.store, where, PendingSnapshot)
    if known is None or known.identity != identity:
        pending = PendingSnapshot(
            path=path, identity=identity, requested_by=source, at=ctx.now().isoformat()
        )
        write_record(ctx.store, where, pending)


def finished(ctx: RunContext, export: str, run_id: str) -> bool:
    """Whether the run's report is final."""
    report = read_record(ctx.store, runs.report_path(export, run_id), RunReport)
    return report is not None and report.status in runs.FINAL_STATUSES


def _last_activity(ctx: RunContext, export: str, run_id: str) -> datetime | None:
    """When the run last wrote anything (its folder's newest object, or the lease itself when
    it died before writing any), or ``None``."""
    times = [o.modified for o in ctx.store.list(runs.run_dir(export, run_id) + "/")]
    try:
        times.append(ctx.store.info(runs.active_run_path(export)).modified)
    except ObjectNotFound:
        pass
    return max(times) if times else None
