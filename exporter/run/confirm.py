"""The *confirm* phase: poll import/info until every batch of a chunk is final, and write the
chunk's confirmed record."""

from __future__ import annotations

import time
from collections.abc import Mapping
from functools import partial
from typing import Any

from exporter.activecampaign import BulkSender, ConfirmedBatch, SentBatch
from exporter.activecampaign.session import ApiSession
from exporter.errors import ExporterError
from exporter.planning.contacts import Batch
from exporter.run.context import RunContext
from exporter.run.records import ChunkSummary, RunRequest, summary_of
from exporter.run.tally import confirmed_record
from exporter.storage import runs


def confirm_chunk(
    ctx: RunContext, req: RunRequest, chunk: str, *, share: float = 1.0
) -> ChunkSummary:
    """Poll import/info until every batch of the chunk is final (resubmitting failed or
    interrupted batches once). Idempotent like :meth:`push_chunk`."""
    return ctx.in_session(
        req, chunk, share, partial(_confirmed_summary, ctx), partial(confirm, ctx)
    )


def _confirmed_summary(ctx: RunContext, req: RunRequest, chunk: str) -> ChunkSummary | None:
    record = runs.read_json(ctx.store, runs.confirmed_path(req.export, req.run_id, chunk))
    return None if record is None else summary_of(record)


def confirm(ctx: RunContext, req: RunRequest, chunk: str, session: ApiSession) -> ChunkSummary:
    done = _confirmed_summary(ctx, req, chunk)
    if done is not None:
        return done
    sent_record = runs.read_json(ctx.store, runs.sent_path(req.export, req.run_id, chunk))
    if sent_record is None:
        raise ExporterError(f"chunk {chunk} cannot be confirmed: it was not pushed")
    started = time.monotonic()
    batches = {b.index: b for b in ctx.read_chunk(chunk)}
    pending = [_sent_batch(batches[r["index"]], r) for r in sent_record["batches"]]
    outcomes: dict[int, ConfirmedBatch] = {}

    def confirm_all(sender: BulkSender) -> None:
        todo = [s for s in pending if s.batch_index not in outcomes]
        for outcome in sender.confirm_many(todo):
            outcomes[outcome.batch_index] = outcome

    session.call(confirm_all)
    records = [confirmed_record(outcomes[s.batch_index], batches) for s in pending]
    record = {
        "chunk": chunk,
        "batches": records,
        "sent": sent_record["sent"],
        "rejected": sum(len(r["rejected"]) for r in records),
        "confirmed": sum(r["confirmed"] for r in records),
        "failed": sum(len(r["failed"]) for r in records),
        "seconds": round(time.monotonic() - started, 3),
    }
    runs.write_json(ctx.store, runs.confirmed_path(req.export, req.run_id, chunk), record)
    return summary_of(record)


def _sent_batch(batch: Batch, record: Mapping[str, Any]) -> SentBatch:
    refused = {key: reason for key, reason in record["rejected"]}
    by_key = {c.key: c for c in batch.contacts}
    return SentBatch(
        batch_index=batch.index,
        batch_id=record["batch_id"],
        sent=[c for c in batch.contacts if c.key not in refused],
        rejected=[(by_key[k], reason) for k, reason in refused.items() if k in by_key],
        unavailable=record.get("unavailable"),
    )
