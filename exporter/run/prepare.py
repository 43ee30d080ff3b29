"""The *prepare* phase's entry point: read, map, validate, dedupe, diff, plan and write chunks
(:class:`~exporter.planning.preparer.Preparer` does the streaming), then the manifest."""

from __future__ import annotations

import logging
from collections.abc import Callable

from exporter import telemetry
from exporter.errors import GuardError
from exporter.incremental import state as state_mod
from exporter.incremental.state import U64
from exporter.management.config import Export
from exporter.planning.preparer import Preparer
from exporter.progress import ProgressCallback, ignore
from exporter.reading.snapshot import (
    local_lister,
    local_opener,
    open_snapshot,
    store_lister,
    store_opener,
)
from exporter.run import lease, members, sweep
from exporter.run.context import RunContext
from exporter.run.finalize import finalize
from exporter.run.records import PrepareResult, RunRequest
from exporter.storage import runs
from exporter.storage.records import Manifest, read_record, write_record

logger = logging.getLogger(__name__)


@telemetry.phase("prepare")
def prepare(
    ctx: RunContext,
    req: RunRequest,
    *,
    progress: ProgressCallback = ignore,
    raise_guard: bool = True,
    on_ready: Callable[[], None] | None = None,
    settle: Callable[[], None] | None = None,
) -> PrepareResult:
    """Read, map, validate, dedupe, diff, plan batches, write chunk files and rejected.csv
    (and plan.csv on a dry run). Idempotent: a prepared run returns its manifest.

    Raises :class:`InputError` when the snapshot cannot be read and :class:`GuardError`
    (after writing a ``guarded`` report) when the shrink guard trips; nothing has been sent
    either way. With ``raise_guard=False`` a guarded run returns ``guarded=True`` instead.

    ``on_ready`` is called once, when this call holds the run's lease and has loaded the
    export's records it needs (the state and the list's recorded members), before the snapshot
    is read: the command line starts its list-members read there, beside the reading (nothing
    is sent before the snapshot is read and the guards passed). ``settle`` is called before a
    guarded run's report is written (it waits for that read).
    """
    manifest = read_record(ctx.store, runs.manifest_path(req.export, req.run_id), Manifest)
    if manifest is None:
        manifest = _prepare(ctx, req, progress, on_ready)
    result = PrepareResult.from_manifest(manifest)
    if result.guarded:
        if settle is not None:
            settle()
        finalize(ctx, req)
        if raise_guard:
            raise GuardError(manifest.guard_message or "shrink guard")
    return result


def _prepare(
    ctx: RunContext,
    req: RunRequest,
    progress: ProgressCallback,
    on_ready: Callable[[], None] | None = None,
) -> Manifest:
    export, connection = ctx.export_config(req.export)
    started = ctx.now()
    displaced = lease.take(ctx, req)  # before anything is read: the loser reads nothing
    if displaced is not None:  # its host stopped: give it its report before reading state
        sweep.close(ctx, displaced, "abandoned")
    telemetry.run_started(req)
    state, etag = state_mod.load(ctx.store, export.name)
    pre_existing = _pre_existing(export, ctx)
    if on_ready is not None:  # after the members record is loaded: this run's read may move it
        on_ready()
    ref, location = req.snapshot.ref, req.snapshot.location
    encoding = req.options.encoding or export.encoding
    if location == runs.LOCAL:
        reader = open_snapshot(
            ref,
            opener=local_opener,
            lister=local_lister,
            encoding=encoding,
            limits=ctx.read_limits,
        )
    else:
        reader = open_snapshot(
            ref,
            opener=store_opener(ctx.store),
            lister=store_lister(ctx.store),
            encoding=encoding,
            limits=ctx.read_limits,
        )
    preparer = Preparer(
        ctx.store,
        export,
        req.run_id,
        state=state,
        full_resync=req.options.full_resync,
        allow_shrink=req.options.allow_shrink,
        dry_run=req.options.dry_run,
        chunk_batches=ctx.chunk_batches,
        progress=progress,
        pre_existing=pre_existing,
        max_rejected_rows=ctx.read_limits.max_rejected_rows,
    )
    manifest = preparer.run(reader, ref.path).model_copy(
        update={
            "snapshot_identity": req.snapshot_identity,
            "state_etag": etag,
            "started_at": started.isoformat(),
            "prepared_at": ctx.now().isoformat(),
            "exclude_automations": export.exclude_automations,
            "connection": export.connection,
            "account": connection.hostname.lower(),
        }
    )
    write_record(ctx.store, runs.manifest_path(req.export, req.run_id), manifest)
    counts = manifest.counts
    logger.info(
        "prepared run %s of export %s: %d rows, %d to send, %d leavers to unsubscribe, "
        "%d rejected, %d duplicates, %d unchanged",
        req.run_id,
        req.export,
        counts.rows_read,
        manifest.contacts_to_send,
        manifest.leavers_to_unsubscribe,
        counts.rejected,
        counts.duplicates,
        counts.unchanged,
    )
    return manifest


def _pre_existing(export: Export, ctx: RunContext) -> U64 | None:
    """The list's members this export did not subscribe, as read before its earlier runs sent
    anything (:mod:`exporter.run.members`). ``None`` when leavers are kept anyway."""
    if export.leaver_policy != "unsubscribe":
        return None
    return members.load(ctx.store, export.name, export.list_id)[0]
