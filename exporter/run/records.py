"""The small records phases exchange (JSON-serialisable; activities receive and return these,
never contacts). The stored ones — the request, the manifest, the chunk records — are in
:mod:`exporter.storage.records`, with the one codec they all share."""

from __future__ import annotations

import json
from collections.abc import Mapping

from pydantic import Field, field_validator

from exporter.activecampaign.grants import MAX_WORKERS
from exporter.errors import ExporterError
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
    "GROUP_SIZE",
    "ChunkSummary",
    "PrepareResult",
    "RunInput",
    "RunOptions",
    "RunRequest",
    "clamp_width",
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


# --- the Durable orchestration's input ---------------------------------------------------------

GROUP_SIZE = 50
"""Chunks per sub-orchestration (50 chunks: ~200 history events, 500,000 contacts)."""
DEFAULT_WAVE_WIDTH = 4


def clamp_width(width: int) -> int:
    """The wave width actually used: between 1 and the account's workers."""
    return max(1, min(MAX_WORKERS, int(width)))


class RunInput(Record):
    """The export-run orchestration's input (``blueprints.orchestration``). Durable keeps it in
    the instance's history, so inputs written by an older exporter must keep loading: a version
    0 input (no ``schema_version``) is today's shape. The fan-out shape is fixed when the run
    starts, so changing the setting never changes how a running orchestration replays."""

    request: RunRequest
    """The run (references only, a few hundred bytes)."""
    wave_width: int = DEFAULT_WAVE_WIDTH
    """Push activities in flight at most (``EXPORTER_PUSH_WAVE_WIDTH``, clamped to 1..5)."""
    group_size: int = Field(default=GROUP_SIZE, ge=1)
    """Chunks per sub-orchestration once a run has more than this many."""
    account: str = ""
    """The ActiveCampaign account (API hostname) whose budget the run shares; set once
    prepared (``""``: the run's own shares only, as before accounts were shared)."""
    member: str = ""
    """This run's name in the account's entity (the run orchestration's instance id)."""

    @field_validator("wave_width")
    @classmethod
    def _clamped(cls, value: int) -> int:
        return clamp_width(value)

    @property
    def export(self) -> str:
        return self.request.export

    @property
    def run_id(self) -> str:
        return self.request.run_id

    @classmethod
    def of_instance(cls, value: object, *, groups: bool = False) -> RunInput | None:
        """The run an orchestration instance's input is for, as the host shows it (data, or
        JSON text), or ``None`` when it is not a run's input. With ``groups``, a run group's
        input (``{"run": <RunInput>, "chunks": [...]}``) gives its run too."""
        if isinstance(value, str | bytes):
            try:
                value = json.loads(value)
            except ValueError:
                return None
        if groups and isinstance(value, Mapping) and isinstance(value.get("run"), Mapping):
            value = value["run"]
        if not isinstance(value, Mapping):
            return None
        try:
            return cls.from_dict(value)
        except (ValueError, ExporterError):  # pydantic's ValidationError is a ValueError
            return None
