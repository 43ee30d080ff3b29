"""The small records phases exchange and store: run requests, prepare results, chunk
summaries (JSON-serialisable; activities receive and return these, never contacts)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from exporter.run.instances import instance_id
from exporter.storage import runs

__all__ = [
    "ChunkSummary",
    "PrepareResult",
    "RunOptions",
    "RunRequest",
    "instance_id",
    "summary_of",
]

# --- the shapes exchanged between phases (JSON-serialisable) ---------------------------------


@dataclass(frozen=True)
class RunOptions:
    """How to run: plan only, send everything again, or pass the shrink guard."""

    dry_run: bool = False
    """Plan only: writes plan.csv, sends nothing."""
    full_resync: bool = False
    """Send every contact again (leavers are still processed)."""
    allow_shrink: bool = False
    """Override the shrink guard."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "full_resync": self.full_resync,
            "allow_shrink": self.allow_shrink,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RunOptions:
        return cls(
            dry_run=bool(d.get("dry_run", False)),
            full_resync=bool(d.get("full_resync", False)),
            allow_shrink=bool(d.get("allow_shrink", False)),
        )


@dataclass(frozen=True)
class RunRequest:
    """One run of one export over one snapshot (the orchestration's input)."""

    export: str
    run_id: str
    """Unique per run, sortable: ``20261125T183000Z-<8 hex of the snapshot identity>``."""
    snapshot: dict[str, Any]
    """The :class:`~exporter.reading.snapshot.SnapshotRef` as a dict
    (:func:`runs.snapshot_to_dict`)."""
    snapshot_identity: str
    """Stable identity of the snapshot (paths, sizes and ETags)."""
    options: RunOptions
    requested_by: str
    """``cli``, ``timer``, ``blob`` or ``http:<principal>``."""
    requested_at: str
    """ISO 8601 UTC."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "export": self.export,
            "run_id": self.run_id,
            "snapshot": self.snapshot,
            "snapshot_identity": self.snapshot_identity,
            "options": self.options.to_dict(),
            "requested_by": self.requested_by,
            "requested_at": self.requested_at,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RunRequest:
        return cls(
            export=str(d["export"]),
            run_id=runs.check_run_id(str(d["run_id"])),
            snapshot=dict(d["snapshot"]),
            snapshot_identity=str(d["snapshot_identity"]),
            options=RunOptions.from_dict(d.get("options") or {}),
            requested_by=str(d.get("requested_by", "")),
            requested_at=str(d.get("requested_at", "")),
        )


@dataclass(frozen=True)
class PrepareResult:
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

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "chunks": list(self.chunks),
            "contacts_to_send": self.contacts_to_send,
            "leavers_to_unsubscribe": self.leavers_to_unsubscribe,
            "guarded": self.guarded,
            "dry_run": self.dry_run,
            "counts": dict(self.counts),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PrepareResult:
        return cls(
            run_id=str(d["run_id"]),
            chunks=[str(c) for c in d["chunks"]],
            contacts_to_send=int(d["contacts_to_send"]),
            leavers_to_unsubscribe=int(d["leavers_to_unsubscribe"]),
            guarded=bool(d["guarded"]),
            dry_run=bool(d["dry_run"]),
            counts={str(k): int(v) for k, v in d["counts"].items()},
        )

    @classmethod
    def from_manifest(cls, m: Mapping[str, Any]) -> PrepareResult:
        return cls(
            run_id=str(m["run_id"]),
            chunks=[str(c["path"]) for c in m["chunks"]],
            contacts_to_send=int(m["contacts_to_send"]),
            leavers_to_unsubscribe=int(m["leavers_to_unsubscribe"]),
            guarded=bool(m["guarded"]),
            dry_run=bool(m["dry_run"]),
            counts={str(k): int(v) for k, v in m["counts"].items()},
        )


@dataclass(frozen=True)
class ChunkSummary:
    """What push or confirm did with one chunk."""

    chunk: str
    batches: int
    sent: int
    rejected: int
    """Refused by ActiveCampaign validation."""
    confirmed: int
    failed: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "chunk": self.chunk,
            "batches": self.batches,
            "sent": self.sent,
            "rejected": self.rejected,
            "confirmed": self.confirmed,
            "failed": self.failed,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ChunkSummary:
        return cls(
            chunk=str(d["chunk"]),
            batches=int(d["batches"]),
            sent=int(d["sent"]),
            rejected=int(d["rejected"]),
            confirmed=int(d["confirmed"]),
            failed=int(d["failed"]),
        )


def summary_of(record: Mapping[str, Any]) -> ChunkSummary:
    return ChunkSummary(
        chunk=str(record["chunk"]),
        batches=len(record["batches"]),
        sent=int(record["sent"]),
        rejected=int(record["rejected"]),
        confirmed=int(record["confirmed"]),
        failed=int(record["failed"]),
    )
