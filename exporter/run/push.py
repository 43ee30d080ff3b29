"""The *push* phase: one chunk's batches sent, one batch = one idempotent bulk-import request,
and the chunk's sent record written."""

from __future__ import annotations

import time
from functools import partial

from exporter.activecampaign import BulkSender, SentBatch
from exporter.activecampaign.session import ApiSession
from exporter.planning.contacts import Batch
from exporter.run.context import RunContext
from exporter.run.records import ChunkSummary, RunRequest, summary_of
from exporter.storage import runs
from exporter.storage.records import SentBatchEntry, SentRecord, read_record, write_record


def push_chunk(ctx: RunContext, req: RunRequest, chunk: str, *, share: float = 1.0) -> ChunkSummary:
    """Send the chunk's batches (one batch = one idempotent bulk-import request). ``share``
    is this caller's fraction of the account's API budget. Idempotent: if the chunk's sent
    record exists, returns it without sending again."""
    return ctx.in_session(req, chunk, share, partial(_sent_summary, ctx), partial(push, ctx))


def _sent_summary(ctx: RunContext, req: RunRequest, chunk: str) -> ChunkSummary | None:
    record = read_record(ctx.store, runs.sent_path(req.export, req.run_id, chunk), SentRecord)
    return None if record is None else summary_of(record)


def push(ctx: RunContext, req: RunRequest, chunk: str, session: ApiSession) -> ChunkSummary:
    done = _sent_summary(ctx, req, chunk)
    if done is not None:
        return done
    started = time.monotonic()
    batches = ctx.read_chunk(chunk)
    entries: list[SentBatchEntry] = []
    for batch in batches:

        def send(sender: BulkSender, b: Batch = batch) -> SentBatch:
            return sender.send(b)

        sent: SentBatch = session.call(send)
        entries.append(
            SentBatchEntry(
                index=batch.index,
                batch_id=sent.batch_id,
                contacts=len(batch.contacts),
                sent=0 if sent.unavailable else len(sent.sent),
                rejected=[(c.key, reason) for c, reason in sent.rejected],
                unavailable=sent.unavailable or None,
            )
        )
    record = SentRecord(
        chunk=chunk,
        batches=entries,
        sent=sum(e.sent for e in entries),
        rejected=sum(len(e.rejected) for e in entries),
        seconds=round(time.monotonic() - started, 3),
    )
    write_record(ctx.store, runs.sent_path(req.export, req.run_id, chunk), record)
    return summary_of(record)
