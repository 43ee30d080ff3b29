"""Which runs to start: a new run request (or the unfinished one to resume), the exports the
timer finds due, and the exports a new snapshot blob concerns."""

from __future__ import annotations

import logging
from datetime import datetime

from exporter.errors import ConfigError, InputError, RunConflict
from exporter.management.config import Export
from exporter.management.schedule import latest_slot
from exporter.reading.discovery import find_snapshots, newest_snapshot, store_snapshot
from exporter.reading.refs import SnapshotRef
from exporter.run import lease
from exporter.run.context import RunContext
from exporter.run.records import RunOptions, RunRequest
from exporter.storage import runs
from exporter.storage.records import (
    ActiveRun,
    PendingSnapshot,
    ScheduleSlot,
    SnapshotLocation,
    SnapshotRecord,
    read_record,
    write_record,
)

logger = logging.getLogger(__name__)

_DEFAULT_OPTIONS = RunOptions()


def new_run(
    ctx: RunContext,
    export: str,
    *,
    snapshot: SnapshotRef | None = None,
    options: RunOptions = _DEFAULT_OPTIONS,
    requested_by: str = "cli",
    snapshot_location: SnapshotLocation = runs.STORE,
) -> RunRequest:
    """A run request for ``export`` over ``snapshot`` (the segment's newest by default).

    An unfinished run of the same export and snapshot is resumed: its request comes back
    unchanged. ``snapshot_location`` is ``local`` for a file read straight from disk.
    Raises :class:`NotFoundError` / :class:`ConfigError`.
    """
    exp, _connection = ctx.export_config(export)
    if snapshot is None:
        snapshot, snapshot_location = newest_snapshot(ctx.store, exp), runs.STORE
    identity = snapshot.identity
    active = read_record(ctx.store, runs.active_run_path(exp.name), ActiveRun)
    if active is not None and active.snapshot_identity == identity:
        previous = active.request
        if previous.options == options and not lease.finished(ctx, exp.name, previous.run_id):
            logger.info("resuming unfinished run %s of export %s", previous.run_id, exp.name)
            return previous
    now = ctx.now()
    if active is not None:
        lease.refuse_while_live(ctx, exp.name, active, now)
    run_id = runs.new_run_id(now, identity)
    n = 1
    while ctx.store.exists(runs.manifest_path(exp.name, run_id)) or ctx.store.exists(
        runs.report_path(exp.name, run_id)
    ):
        n += 1
        run_id = f"{runs.new_run_id(now, identity)}-{n}"
    return RunRequest(
        export=exp.name,
        run_id=run_id,
        snapshot=SnapshotRecord.of(snapshot, location=snapshot_location),
        snapshot_identity=identity,
        options=options,
        requested_by=requested_by,
        requested_at=now.isoformat(),
    )


def due_runs(ctx: RunContext, now: datetime) -> list[RunRequest]:
    """Timer: every enabled export whose schedule is due and whose segment has a snapshot
    it has not exported yet — or whose last run over the newest snapshot stopped after
    prepare (see :attr:`runs.LastRun.retry`), up to ``MAX_TIMER_ATTEMPTS`` runs in a row."""
    requests = []
    for export in ctx.repo.list_exports():
        if not export.enabled:
            continue
        pending = _pending_request(ctx, export)
        if pending is not None:
            requests.append(pending)
            continue
        if not export.schedule:
            continue
        last = runs.read_last_run(ctx.store, export.name)
        if _take_slot(ctx, export, now) is None:
            continue
        try:
            ref = newest_snapshot(ctx.store, export)
            if last is not None and last.snapshot_identity == ref.identity:
                if not (last.retry and last.attempts < runs.MAX_TIMER_ATTEMPTS):
                    continue
                logger.warning(
                    "export %s: running snapshot %s again (its last run stopped: %s, "
                    "attempt %d of %d)",
                    export.name,
                    ref.path,
                    last.status,
                    last.attempts + 1,
                    runs.MAX_TIMER_ATTEMPTS,
                )
            requests.append(_run_or_pend(ctx, export.name, ref, "timer"))
        except RunConflict as exc:
            logger.info("export %s is due: %s", export.name, exc)
        except (ConfigError, InputError) as exc:
            logger.warning("export %s is due but cannot run: %s", export.name, exc)
    return requests


def _run_or_pend(ctx: RunContext, export: str, ref: SnapshotRef, source: str) -> RunRequest:
    """A run over ``ref`` — or, while another run of the export is going, ``ref`` recorded as
    the export's pending snapshot (latest wins) and the :class:`RunConflict` raised on."""
    try:
        return new_run(ctx, export, snapshot=ref, requested_by=source)
    except RunConflict:
        lease.pend(ctx, export, ref.path, ref.identity, source)
        raise


def _pending_request(ctx: RunContext, export: Export) -> RunRequest | None:
    """The run of the export's pending snapshot once no other run is going; ``None`` while
    one is (or when nothing is pending). The pending record is removed when its run is made."""
    path = runs.pending_path(export.name)
    pending = read_record(ctx.store, path, PendingSnapshot)
    if pending is None:
        return None
    try:
        ref = store_snapshot(ctx.store, pending.path)
        request = new_run(ctx, export.name, snapshot=ref, requested_by=pending.requested_by)
    except RunConflict:
        return None  # still running: the pending snapshot waits for the next tick
    except (ConfigError, InputError) as exc:
        logger.warning(
            "export %s: pending snapshot %s cannot run: %s", export.name, pending.path, exc
        )
        ctx.store.delete(path)
        return None
    ctx.store.delete(path)
    logger.info("export %s: running the pending snapshot %s", export.name, pending.path)
    return request


def _take_slot(ctx: RunContext, export: Export, now: datetime) -> datetime | None:
    """The export's scheduled time that this tick acts on, recorded so it is acted on once:
    the latest schedule time after the last slot taken (or after the export was saved: saving
    never runs it) and at or before ``now``. ``None``: nothing due."""
    if not export.schedule:
        return None
    path = runs.schedule_path(export.name)
    taken = read_record(ctx.store, path, ScheduleSlot)
    saved = export.updated_at or export.created_at
    after = datetime.fromisoformat(taken.slot) if taken is not None else saved
    if after is None:
        return None
    if taken is not None and saved is not None and saved > after:
        after = saved  # a changed schedule starts from the change
    slot = latest_slot(export.schedule, after, now)
    if slot is not None:
        write_record(ctx.store, path, ScheduleSlot(slot=slot.isoformat()))
    return slot


def runs_for_blob(ctx: RunContext, path: str) -> list[RunRequest]:
    """Blob trigger: a run request for every enabled export whose segment contains this
    snapshot blob (a plain CSV or a model.json; a CDM partition waits for its model.json)."""
    requests = []
    folder = path.rpartition("/")[0] + "/"
    for export in ctx.repo.list_exports():
        if not export.enabled or not export.segment_matches(path):
            continue
        try:
            ref = next((r for r in find_snapshots(ctx.store, folder) if r.path == path), None)
            if ref is None:
                continue
            last = runs.read_last_run(ctx.store, export.name)
            if last is not None and last.snapshot_identity == ref.identity:
                continue
            requests.append(_run_or_pend(ctx, export.name, ref, "blob"))
        except RunConflict as exc:
            logger.info("snapshot %s for export %s waits: %s", path, export.name, exc)
        except (ConfigError, InputError) as exc:
            logger.warning("snapshot %s for export %s cannot run: %s", path, export.name, exc)
    return requests
