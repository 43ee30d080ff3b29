"""The small records phases exchange (JSON-serialisable; activities receive and return these,
never contacts). The stored ones — the request, the manifest, the chunk records — are in
:mod:`exporter.storage.records`, with the one codec they all share."""

from __future__ import annotations

from exporter.run.instances import instance_id
from exporter.storage.records import (
    ConfirmedRecord,
    Manifest,
    Record,
    RunOptions,
    RunRequest,
    SentRecord,
)

__all__ = [
    "ChunkSummary",
    "PrepareResult",
    "RunOptions",
    "RunRequest",
    "instance_id",
    "summary_of",
]


class PrepareResult(Record):
    """What prepare produced: chunk paths to push (in order) and counts."""

    run_id: str
    chunks: list[str]
    """Store paths of chunk files to push, in order (contacts first, then leavers)."""
    contacts_to_send: int
    leavers_to_unsubscribe: int
    guarded: bool
    """The shrink guard stopped the run (nothing will be sent)."""
    dry_run: bool
    counts: dict[str, int]
    """rows_read, valid, rejected, duplicates, new, changed, unchanged, left, ..."""
    account: str = ""
    """The ActiveCampaign account (API hostname) the run sends to."""

    @classmethod
    def from_manifest(cls, m: Manifest) -> PrepareResult:
        return cls(
            run_id=m.run_id,
            chunks=[c.path for c in m.chunks],
            contacts_to_send=m.contacts_to_send,
            leavers_to_unsubscribe=m.leavers_to_unsubscribe,
            guarded=m.guarded,
            dry_run=m.dry_run,
            counts=m.counts.model_dump(),
            account=m.account,
        )


class ChunkSummary(Record):
    """What push or confirm did with one chunk."""

    chunk: str
    batches: int
    sent: int
    rejected: int
    """Refused by ActiveCampaign validation."""
    confirmed: int
    failed: int


def summary_of(record: SentRecord | ConfirmedRecord) -> ChunkSummary:
    """The counts of a chunk's sent or confirmed record."""
    return ChunkSummary(
        chunk=record.chunk,
        batches=len(record.batches),
        sent=record.sent,
        rejected=record.rejected,
        confirmed=record.confirmed,
        failed=record.failed,
    )
