"""The *push* phase: one chunk's batches sent, one batch = one idempotent bulk-import request,
and the chunk's sent record written."""

from __future__ import annotations

import time
from functools import partial
from typing import Any

from exporter.activecampaign import BulkSender, SentBatch
from exporter.activecampaign.session import ApiSession
from exporter.planning.contacts import Batch
from exporter.run.context import RunContext
from exporter.run.records import ChunkSummary, RunRequest, summary_of
from exporter.storage import runs


def push_chunk(ctx: RunContext, req: RunRequest, chunk: str, *, share: float = 1.0) -> ChunkSummary:
    """Send the chunk's batches (one batch = one idempotent bulk-import request). ``share``
    is this caller's fraction of the account's API budget. Idempotent: if the chunk's sent
    record exists, returns it without sending again."""
    return ctx.in_session(req, chunk, share, partial(_sent_summary, ctx), partial(push, ctx))


def _sent_summary(ctx: RunContext, req: RunRequest, chunk: str) -> ChunkSummary | None:
    record = runs.read_json(ctx.store, runs.sent_path(req.export, req.run_id, chunk))
    return None if record is None else summary_of(record)


def push(ctx: RunContext, req: RunRequest, chunk: str, session: ApiSession) -> ChunkSummary:
    done = _sent_summary(ctx, req, chunk)
    if done is not None:
        return done
    started = time.monotonic()
    batches = ctx.read_chunk(chunk)
    records: list[dict[str, Any]] = []
    for batch in batches:

        def send(sender: BulkSender, b: Batch = batch) -> SentBatch:
            return sender.send(b)

        sent: SentBatch = session.call(send)
        entry: dict[str, Any] = {
            "index": batch.index,
            "batch_id": sent.batch_id,
            "contacts": len(batch.contacts),
            "sent": 0 if sent.unavailable else len(sent.sent),
            "rejected": [[c.key, reason] for c, reason in sent.rejected],
        }
        if sent.unavailable:
            entry["unavailable"] = sent.unavailable
        records.append(entry)
    record = {
        "chunk": chunk,
        "batches": records,
        "sent": sum(r["sent"] for r in records),
        "rejected": sum(len(r["rejected"]) for r in records),
        "confirmed": 0,
        "failed": 0,
        "seconds": round(time.monotonic() - started, 3),
    }
    runs.write_json(ctx.store, runs.sent_path(req.export, req.run_id, chunk), record)
    return summary_of(record)
