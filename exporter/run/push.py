"""The *push* phase: one chunk's batches sent, one batch = one idempotent bulk-import request,
and the chunk's sent record written."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial

from exporter import telemetry
from exporter.activecampaign import BulkSender, SentBatch
from exporter.activecampaign.session import ApiSession
from exporter.planning.contacts import Batch
from exporter.run.context import RunContext
from exporter.run.records import ChunkSummary, RunRequest, summary_of
from exporter.storage import runs
from exporter.storage.records import SentBatchEntry, SentRecord, read_record, write_record


@telemetry.phase("push")
def push_chunk(
    ctx: RunContext,
    req: RunRequest,
    chunk: str,
    *,
    share: float = 1.0,
) -> ChunkSummary:
    """Send the chunk's batches (one batch = one idempotent bulk-import request). ``share``
    is this caller's fraction of the account's API budget (without a shared ledger).
    Idempotent: if the chunk's sent record is complete, returns it
    without sending again."""
    return ctx.in_session(req, chunk, share, partial(_sent_summary, ctx), partial(push, ctx))


def _sent_summary(ctx: RunContext, req: RunRequest, chunk: str) -> ChunkSummary | None:
    record = read_record(ctx.store, runs.sent_path(req.export, req.run_id, chunk), SentRecord)
    return None if record is None or not record.complete else summary_of(record)


@telemetry.phase("push")
def push(
    ctx: RunContext,
    req: RunRequest,
    chunk: str,
    session: ApiSession,
    on_batch: Callable[[int], None] | None = None,
) -> ChunkSummary:
    """Send the chunk's batches not yet acknowledged, recording each answer before the next
    request (see :class:`~exporter.storage.records.SentRecord`). ``on_batch`` hears how many
    contacts each batch sent or had rejected, once its answer is recorded (progress)."""
    path = runs.sent_path(req.export, req.run_id, chunk)
    record = read_record(ctx.store, path, SentRecord)
    if record is not None and record.complete:
        return summary_of(record)
    started = time.monotonic()
    if record is None:
        # Written before the first request: a push that stops from here on is known to have
        # possibly queued the first batch without an entry.
        record = _journal(chunk, [], 0.0, complete=False)
        write_record(ctx.store, path, record)
    entries = list(record.batches)
    before = record.seconds
    recorded = {e.index for e in entries}
    all_batches = ctx.read_chunk(chunk)
    for batch in all_batches:
        if batch.index in recorded:
            continue  # acknowledged before: confirm finds it by its batch_id

        def send(sender: BulkSender, b: Batch = batch) -> SentBatch:
            return sender.send(b)

        sent: SentBatch = session.call(send)
        entries.append(_entry(batch, sent))
        elapsed = before + time.monotonic() - started
        record = _journal(chunk, entries, elapsed, complete=len(entries) == len(all_batches))
        write_record(ctx.store, path, record)
        if on_batch is not None:
            on_batch(entries[-1].sent + len(entries[-1].rejected))
    if not record.complete:  # every batch had its entry when the last attempt stopped
        record = _journal(chunk, entries, record.seconds, complete=True)
        write_record(ctx.store, path, record)
    return summary_of(record)


def _entry(batch: Batch, sent: SentBatch) -> SentBatchEntry:
    return SentBatchEntry(
        index=batch.index,
        batch_id=sent.batch_id,
        contacts=len(batch.contacts),
        sent=0 if sent.unavailable else len(sent.sent),
        rejected=[(c.key, reason) for c, reason in sent.rejected],
        unavailable=sent.unavailable or None,
    )


def _journal(
    chunk: str, entries: list[SentBatchEntry], seconds: float, *, complete: bool
) -> SentRecord:
    return SentRecord(
        chunk=chunk,
        batches=sorted(entries, key=lambda e: e.index),
        sent=sum(e.sent for e in entries),
        rejected=sum(len(e.rejected) for e in entries),
        seconds=round(seconds, 3),
        complete=complete,
    )
