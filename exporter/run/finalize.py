"""The *finalize* phase: the report from the chunk records, rejected rows, the state committed
for confirmed contacts only (ETag-conditioned), and the export's last-run record."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime

from exporter import telemetry
from exporter.errors import ConflictError
from exporter.incremental import state as state_mod
from exporter.incremental import update as update_mod
from exporter.run import lease
from exporter.run.context import RunContext
from exporter.run.records import RunRequest
from exporter.run.rejects import append_api_rejections
from exporter.run.report import EndedStatus, ReportDraft, RunReport
from exporter.run.tally import RunTally
from exporter.storage import runs
from exporter.storage.records import (
    CommitMarker,
    ConfirmedRecord,
    LastRun,
    Manifest,
    SentRecord,
    read_record,
    write_record,
)
from exporter.storage.store import ObjectNotFound, PreconditionFailed

logger = logging.getLogger(__name__)


@telemetry.phase("finalize")
def finalize(
    ctx: RunContext,
    req: RunRequest,
    *,
    cancelled: bool = False,
    error: str | None = None,
    ended: EndedStatus | None = None,
    timings: Mapping[str, float] | None = None,
    before_release: Callable[[], None] | None = None,
) -> RunReport:
    """Build the report from the chunk records, write report.json (and the rows
    ActiveCampaign refused into rejected.csv), commit state for confirmed contacts only
    (ETag-conditioned), record the export's last run. Idempotent.

    ``ended`` closes a run that stopped without finalizing itself (``terminated``,
    ``abandoned``): the same report and commit, with that status — what it confirmed is
    committed, what it may have queued is remembered as possibly ours.

    ``timings``: the caller's phase times (seconds) for the report, beside the chunk
    records' and finalize's own; ``before_release`` is called right before the run's lease
    is released (the command line waits there for its list-members mark).

    Raises :class:`ConflictError` when another run moved the export's state since this
    run was prepared (the report, status ``failed``, says so too)."""
    began = time.monotonic()
    existing = read_record(ctx.store, runs.report_path(req.export, req.run_id), RunReport)
    if existing is not None and existing.status in runs.FINAL_STATUSES:
        return existing
    manifest = read_record(ctx.store, runs.manifest_path(req.export, req.run_id), Manifest)
    report = ReportDraft(
        export=req.export,
        run_id=req.run_id,
        snapshot=req.snapshot_identity,
        started_at=(manifest.started_at if manifest else "") or req.requested_at,
        dry_run=req.options.dry_run,
        full_resync=req.options.full_resync,
    )
    conflict: ConflictError | None = None
    if manifest is None:
        report.status = ended or ("cancelled" if cancelled else "failed")
        report.error = error or "the run stopped before its snapshot was prepared"
    else:
        telemetry.bind(connection=manifest.connection, account=manifest.account)
        tally = RunTally(report, manifest, cancelled=cancelled, error=error, ended=ended)
        _tally_chunks(ctx, req, manifest, tally)
        tally.finish()
        if not (manifest.dry_run or manifest.guarded):
            try:
                _commit(ctx, req, manifest, tally)
            except ConflictError as exc:
                conflict = exc
                report.status = "failed"
                report.error = str(exc)
        if tally.api_rejections:
            append_api_rejections(ctx.store, req, manifest, tally.api_rejections)
    report.timings.update(timings or {})
    report.timings["finalize"] = round(time.monotonic() - began, 3)
    return _close_run(
        ctx, req, report, conflict, prepared=manifest is not None, before_release=before_release
    )


def _close_run(
    ctx: RunContext,
    req: RunRequest,
    draft: ReportDraft,
    conflict: ConflictError | None,
    *,
    prepared: bool,
    before_release: Callable[[], None] | None = None,
) -> RunReport:
    finished = ctx.now()
    draft.finished_at = finished.isoformat()
    try:
        started = datetime.fromisoformat(draft.started_at)
        draft.timings["total"] = round((finished - started).total_seconds(), 3)
    except ValueError:
        pass
    problems = draft.reconciliation_problems()
    if problems:
        # A bug, never a data problem: say so loudly, and mark the report.
        logger.error(
            "run report does not reconcile: %s",
            "; ".join(problems),
            extra={"export": req.export, "run_id": req.run_id},
        )
        draft.error = ((draft.error + "; ") if draft.error else "") + (
            "internal error: the report does not reconcile"
        )
    report = draft.freeze()
    write_record(ctx.store, runs.report_path(req.export, req.run_id), report)
    telemetry.run_ended(report)  # the alerts' record (status as a dimension) and the metrics
    _record_last_run(ctx, req, report, prepared)
    if before_release is not None:
        before_release()
    lease.release(ctx, req)
    if conflict is not None:
        raise conflict
    return report


def _record_last_run(ctx: RunContext, req: RunRequest, report: RunReport, prepared: bool) -> None:
    """What the timer compares with: this snapshot, how many runs in a row it has had, and
    whether a stop after prepare (not the snapshot's fault) makes it worth another run."""
    previous = runs.read_last_run(ctx.store, req.export)
    attempts = 1
    if previous is not None and previous.snapshot_identity == req.snapshot_identity:
        attempts = previous.attempts + 1
    last = LastRun(
        run_id=req.run_id,
        snapshot_identity=req.snapshot_identity,
        status=report.status,
        finished_at=report.finished_at or "",  # set by _close_run just before
        attempts=attempts,
        retry=prepared and report.status in ("failed", "abandoned") and not req.options.dry_run,
    )
    write_record(ctx.store, runs.last_run_path(req.export), last)


def _tally_chunks(ctx: RunContext, req: RunRequest, manifest: Manifest, tally: RunTally) -> None:
    for info in manifest.chunks:
        chunk = info.path
        confirmed = read_record(
            ctx.store, runs.confirmed_path(req.export, req.run_id, chunk), ConfirmedRecord
        )
        sent = read_record(ctx.store, runs.sent_path(req.export, req.run_id, chunk), SentRecord)
        if confirmed is not None or sent is not None:
            batches = {b.index: b for b in ctx.read_chunk(chunk)}
        else:
            batches = {}
        tally.chunk(info, sent, confirmed, batches)


def _commit(ctx: RunContext, req: RunRequest, manifest: Manifest, tally: RunTally) -> None:
    """Save the next state: confirmed sends and unsubscriptions, kept leavers dropped."""
    path = state_mod.state_path(req.export)
    try:
        current, etag = ctx.store.read_with_etag(path)
    except ObjectNotFound:
        current, etag = b"", None
    marker = runs.commit_path(req.export, req.run_id)
    if etag != manifest.state_etag:
        recorded = read_record(ctx.store, marker, CommitMarker)
        if recorded is not None and recorded.digest == _digest(current):
            return  # this very run committed it before it was interrupted
        raise ConflictError(
            f"the state of export {req.export!r} changed since run {req.run_id} was "
            "prepared (another run finished in between); nothing was committed. Run the "
            "export again: it sends whatever this run could not record",
            field="state",
        )
    state = (
        state_mod.ExportState.from_bytes(current, source=path)
        if etag is not None
        else state_mod.ExportState.empty()
    )
    del current  # the encoded old state (~250 MB at ten million contacts) is not needed again
    update = tally.update  # confirmed and uncertain outcomes, recorded while tallying
    for key in _kept_leavers(ctx, req):
        update.drop(key)
    # The next state is never built: each merged column is encoded and freed as it is made,
    # while the old state and the update are spent column by column (bounded memory at 10M).
    encoded, count = update_mod.encode_next(state, update)
    del state
    write_record(ctx.store, marker, CommitMarker(digest=_digest(encoded)))
    try:
        state_mod.save_encoded(ctx.store, req.export, encoded, count=count, if_match=etag)
    except PreconditionFailed:
        raise ConflictError(
            f"the state of export {req.export!r} was changed by another run while this one "
            "was finishing; nothing was committed. Run the export again",
            field="state",
        ) from None


def _kept_leavers(ctx: RunContext, req: RunRequest) -> Iterator[str]:
    try:
        data = ctx.store.read_bytes(runs.kept_path(req.export, req.run_id))
    except ObjectNotFound:
        return iter(())
    return (line for line in data.decode().split("\n") if line)


def _digest(data: bytes | bytearray) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()
