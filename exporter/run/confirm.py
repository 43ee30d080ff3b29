"""The *confirm* phase: poll import/info until every batch of a chunk is final, and write the
chunk's confirmed record."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from typing import Any

from exporter import telemetry
from exporter.activecampaign import BulkSender, SentBatch
from exporter.activecampaign.session import ApiSession
from exporter.errors import ExporterError
from exporter.planning.contacts import Batch
from exporter.run.context import RunContext
from exporter.run.records import ChunkSummary, RunRequest, summary_of
from exporter.run.tally import confirmed_record
from exporter.storage import runs
from exporter.storage.records import (
    ConfirmedRecord,
    ResubmittedBatch,
    SentBatchEntry,
    SentRecord,
    read_record,
    write_record,
)


@telemetry.phase("confirm")
def confirm_chunk(
    ctx: RunContext,
    req: RunRequest,
    chunk: str,
    *,
    share: float = 1.0,
) -> ChunkSummary:
    """Poll import/info until every batch of the chunk is final (resubmitting failed or
    interrupted batches once). Idempotent like :meth:`push_chunk`."""
    return ctx.in_session(
        req, chunk, share, partial(_confirmed_summary, ctx), partial(confirm, ctx)
    )


def _confirmed_summary(ctx: RunContext, req: RunRequest, chunk: str) -> ChunkSummary | None:
    path = runs.confirmed_path(req.export, req.run_id, chunk)
    record = read_record(ctx.store, path, ConfirmedRecord)
    return None if record is None or not record.complete else summary_of(record)


@telemetry.phase("confirm")
def confirm(
    ctx: RunContext,
    req: RunRequest,
    chunk: str,
    session: ApiSession,
    on_batch: Callable[[int], None] | None = None,
) -> ChunkSummary:
    """Poll the chunk's imports until final. A resubmission is recorded before the next
    request, so a retried confirm polls it rather than resubmitting the batch again.
    ``on_batch`` hears how many contacts each final batch settled (progress)."""
    path = runs.confirmed_path(req.export, req.run_id, chunk)
    journal = read_record(ctx.store, path, ConfirmedRecord)
    if journal is not None and journal.complete:
        return summary_of(journal)
    sent_record = read_record(ctx.store, runs.sent_path(req.export, req.run_id, chunk), SentRecord)
    if sent_record is None or not sent_record.complete:
        raise ExporterError(f"chunk {chunk} cannot be confirmed: it was not pushed")
    started = time.monotonic()
    before = journal.seconds if journal is not None else 0.0
    batches = {b.index: b for b in ctx.read_chunk(chunk)}
    final = {e.index: e for e in journal.batches} if journal is not None else {}
    again = {r.index: r for r in journal.resubmitted} if journal is not None else {}

    def record(complete: bool) -> ConfirmedRecord:
        entries = [final[e.index] for e in sent_record.batches if e.index in final]
        done = ConfirmedRecord(
            chunk=chunk,
            batches=entries,
            sent=sent_record.sent,
            rejected=sum(len(e.rejected) for e in entries),
            confirmed=sum(e.confirmed for e in entries),
            failed=sum(len(e.failed) for e in entries),
            seconds=round(before + time.monotonic() - started, 3),
            complete=complete,
            resubmitted=[] if complete else [again[i] for i in sorted(again) if i not in final],
        )
        write_record(ctx.store, path, done)
        return done

    def resubmitted(
        sb: SentBatch, batch_id: str | None, resubmits: int, rejected: list[tuple[Any, str]]
    ) -> None:
        again[sb.batch_index] = ResubmittedBatch(
            index=sb.batch_index,
            batch_id=batch_id,
            resubmits=resubmits,
            rejected=[(c.key, reason) for c, reason in rejected],
        )
        record(complete=False)

    def confirm_all(sender: BulkSender) -> None:
        todo = [
            _sent_batch(batches[e.index], e, again.get(e.index))
            for e in sent_record.batches
            if e.index not in final
        ]
        for outcome in sender.confirm_many(todo, on_resubmit=resubmitted):
            entry = final[outcome.batch_index] = confirmed_record(outcome, batches)
            if on_batch is not None:
                on_batch(entry.confirmed + len(entry.failed) + len(entry.rejected))

    session.call(confirm_all)
    return summary_of(record(complete=True))


def _sent_batch(
    batch: Batch, entry: SentBatchEntry, again: ResubmittedBatch | None = None
) -> SentBatch:
    """What to poll for a batch: its push's import, or the last resubmission's."""
    refused = dict(again.rejected if again is not None else entry.rejected)
    by_key = {c.key: c for c in batch.contacts}
    return SentBatch(
        batch_index=batch.index,
        batch_id=again.batch_id if again is not None else entry.batch_id,
        sent=[c for c in batch.contacts if c.key not in refused],
        rejected=[(by_key[k], reason) for k, reason in refused.items() if k in by_key],
        unavailable=None if again is not None else entry.unavailable,
        resubmits=again.resubmits if again is not None else 0,
    )
