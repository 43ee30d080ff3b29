"""The *confirm* phase: poll import/info until every batch of a chunk is final, and write the
chunk's confirmed record."""

from __future__ import annotations

import time
from functools import partial

from exporter.activecampaign import BulkSender, ConfirmedBatch, SentBatch
from exporter.activecampaign.session import ApiSession
from exporter.errors import ExporterError
from exporter.planning.contacts import Batch
from exporter.run.context import RunContext
from exporter.run.records import ChunkSummary, RunRequest, summary_of
from exporter.run.tally import confirmed_record
from exporter.storage import runs
from exporter.storage.records import (
    ConfirmedRecord,
    SentBatchEntry,
    SentRecord,
    read_record,
    write_record,
)


def confirm_chunk(
    ctx: RunContext, req: RunRequest, chunk: str, *, share: float = 1.0
) -> ChunkSummary:
    """Poll import/info until every batch of the chunk is final (resubmitting failed or
    interrupted batches once). Idempotent like :meth:`push_chunk`."""
    return ctx.in_session(
        req, chunk, share, partial(_confirmed_summary, ctx), partial(confirm, ctx)
    )


def _confirmed_summary(ctx: RunContext, req: RunRequest, chunk: str) -> ChunkSummary | None:
    path = runs.confirmed_path(req.export, req.run_id, chunk)
    record = read_record(ctx.store, path, ConfirmedRecord)
    return None if record is None else summary_of(record)


def confirm(ctx: RunContext, req: RunRequest, chunk: str, session: ApiSession) -> ChunkSummary:
    done = _confirmed_summary(ctx, req, chunk)
    if done is not None:
        return done
    sent_path = runs.sent_path(req.export, req.run_id, chunk)
    sent_record = read_record(ctx.store, sent_path, SentRecord)
    if sent_record is None:
        raise ExporterError(f"chunk {chunk} cannot be confirmed: it was not pushed")
    started = time.monotonic()
    batches = {b.index: b for b in ctx.read_chunk(chunk)}
    pending = [_sent_batch(batches[e.index], e) for e in sent_record.batches]
    outcomes: dict[int, ConfirmedBatch] = {}

    def confirm_all(sender: BulkSender) -> None:
        todo = [s for s in pending if s.batch_index not in outcomes]
        for outcome in sender.confirm_many(todo):
            outcomes[outcome.batch_index] = outcome

    session.call(confirm_all)
    entries = [confirmed_record(outcomes[s.batch_index], batches) for s in pending]
    record = ConfirmedRecord(
        chunk=chunk,
        batches=entries,
        sent=sent_record.sent,
        rejected=sum(len(e.rejected) for e in entries),
        confirmed=sum(e.confirmed for e in entries),
        failed=sum(len(e.failed) for e in entries),
        seconds=round(time.monotonic() - started, 3),
    )
    write_record(ctx.store, runs.confirmed_path(req.export, req.run_id, chunk), record)
    return summary_of(record)


def _sent_batch(batch: Batch, record: SentBatchEntry) -> SentBatch:
    refused = dict(record.rejected)
    by_key = {c.key: c for c in batch.contacts}
    return SentBatch(
        batch_index=batch.index,
        batch_id=record.batch_id,
        sent=[c for c in batch.contacts if c.key not in refused],
        rejected=[(by_key[k], reason) for k, reason in refused.items() if k in by_key],
        unavailable=record.unavailable,
    )
