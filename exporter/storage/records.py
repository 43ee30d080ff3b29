"""The records a run keeps in the store, typed and versioned, with one codec.

Every record is a frozen pydantic model with a ``schema_version``. One codec serves them all:
:meth:`Record.to_dict` / :meth:`Record.from_dict` (JSON-ready dicts, for activities and files)
and :func:`read_record` / :func:`write_record` (the store). A record read from the store is
checked field by field; a damaged one is an error that names the file, never a ``KeyError``
three calls later.

Versions: records written before versioning (version 0) carry no ``schema_version``; they are
read as version 0 and upgraded on load (the shape did not change, so the upgrade only stamps
the version). A record from a *newer* exporter is refused with a clear message rather than
misread. Unknown keys are ignored, so an older exporter can read a newer record's known part.

========================  ======================================  ==========================
record                    where                                   written by
========================  ======================================  ==========================
:class:`Manifest`         ``runs/<e>/<run>/prepared.json``        prepare
:class:`SentRecord`       ``runs/<e>/<run>/sent/<n>.json``        push
:class:`ConfirmedRecord`  ``runs/<e>/<run>/confirmed/<n>.json``   confirm
:class:`CommitMarker`     ``runs/<e>/<run>/commit.json``          finalize (before the state)
``RunReport``             ``runs/<e>/<run>/report.json``          finalize (run/report.py)
:class:`ActiveRun`        ``state/<e>/active_run.json``           prepare (removed by finalize)
:class:`LastRun`          ``state/<e>/last_run.json``             finalize
:class:`ScheduleSlot`     ``state/<e>/schedule.json``             the timer
:class:`PendingSnapshot`  ``state/<e>/pending.json``              a trigger while a run runs
:class:`RunRequest`       inside ActiveRun; orchestration input   the triggers / CLI
========================  ======================================  ==========================
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal, Self, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    field_validator,
    model_validator,
)

from exporter.errors import ExporterError
from exporter.reading.refs import SnapshotFile, SnapshotRef
from exporter.storage.store import ObjectNotFound, Store

SCHEMA_VERSION = 1
"""The version every record is written with today."""


class RecordError(ExporterError):
    """A stored record cannot be read: damaged, or written by a newer exporter."""


class Record(BaseModel):
    """Base of every stored record: frozen, versioned, one codec."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    SCHEMA: ClassVar[int] = SCHEMA_VERSION

    schema_version: int = SCHEMA_VERSION
    """Version of the record's shape (0: written before records were versioned)."""

    @model_validator(mode="before")
    @classmethod
    def _upgrade(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        version = data.get("schema_version", 0)
        if not isinstance(version, int) or version > cls.SCHEMA:
            raise ValueError(
                f"schema version {version!r}: written by a newer exporter (this one reads "
                f"up to {cls.SCHEMA}); upgrade the exporter"
            )
        # 0 → 1: the shape did not change, versioning started. Later upgrades go here.
        return {**data, "schema_version": cls.SCHEMA}

    def to_dict(self) -> dict[str, Any]:
        """The record as JSON-ready data."""
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """The record from :meth:`to_dict`'s shape (any version this exporter reads)."""
        return cls.model_validate(data)


class Value(BaseModel):
    """A typed value nested in records (no version of its own: its record's applies)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        return cls.model_validate(data)


R = TypeVar("R", bound=Record)


def read_record(store: Store, path: str, kind: type[R]) -> R | None:
    """The record at ``path``, or ``None`` when there is none. Raises :class:`RecordError`
    naming the file when it is not a valid ``kind``."""
    try:
        data = store.read_bytes(path)
    except ObjectNotFound:
        return None
    try:
        return kind.model_validate_json(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or kind.__name__}: {e['msg']}"
            for e in exc.errors(include_url=False, include_input=False)
        )
        raise RecordError(f"{path}: not a valid {kind.__name__} record ({problems})") from None


def write_record(
    store: Store,
    path: str,
    record: Record,
    *,
    if_match: str | None = None,
    if_none_match: bool = False,
) -> str:
    """Write ``record`` atomically (the store guarantees it); returns the ETag. The conditions
    are the store's (:meth:`Store.write_bytes`): a failed one raises ``PreconditionFailed``."""
    data = json.dumps(record.to_dict(), separators=(",", ":")).encode()
    return store.write_bytes(path, data, if_match=if_match, if_none_match=if_none_match)


# --- what a run is asked to do ----------------------------------------------------------------


class RunOptions(Value):
    """How to run: plan only, send everything again, or pass the shrink guard."""

    dry_run: bool = False
    """Plan only: writes plan.csv, sends nothing."""
    full_resync: bool = False
    """Send every contact again (leavers are still processed)."""
    allow_shrink: bool = False
    """Override the shrink guard."""
    encoding: str | None = None
    """The snapshot's text encoding for this run (``run --encoding``; default: the export's)."""


SnapshotLocation = Literal["local", "store"]
"""Where a run reads its snapshot's paths."""
LOCAL: SnapshotLocation = "local"
"""``location`` of a snapshot read straight from the local disk (command line)."""
STORE: SnapshotLocation = "store"
"""``location`` of a snapshot in the store (blob storage, or the local store)."""

IsoDateTime = Annotated[datetime, PlainSerializer(datetime.isoformat, when_used="json")]
"""A date-time written as :meth:`datetime.isoformat` writes it (``+00:00``, not ``Z``)."""


class SnapshotRecord(Value):
    """The snapshot a run reads: what discovery found (a
    :class:`~exporter.reading.refs.SnapshotRef`) and where its paths are to be read."""

    kind: Literal["csv", "cdm"]
    path: str
    """The CSV file, or the ``model.json``."""
    files: tuple[SnapshotFile, ...]
    """Everything read, with sizes and ETags (the snapshot's identity)."""
    modified: IsoDateTime
    entity: str | None = None
    """CDM: the entity (table) read from model.json."""
    location: SnapshotLocation = STORE

    @classmethod
    def of(cls, ref: SnapshotRef, *, location: SnapshotLocation = STORE) -> SnapshotRecord:
        names = (f.name for f in dataclasses.fields(ref))
        return cls(**{n: getattr(ref, n) for n in names}, location=location)

    @property
    def ref(self) -> SnapshotRef:
        """The reference the snapshot readers open."""
        names = (f.name for f in dataclasses.fields(SnapshotRef))
        return SnapshotRef(**{n: getattr(self, n) for n in names})


class RunRequest(Record):
    """One run of one export over one snapshot (the orchestration's input)."""

    export: str
    run_id: str
    """Unique per run, sortable: ``20261125T183000Z-<8 hex of the snapshot identity>``."""
    snapshot: SnapshotRecord
    snapshot_identity: str
    """Stable identity of the snapshot (paths, sizes and ETags)."""
    options: RunOptions = RunOptions()
    requested_by: str = ""
    """``cli``, ``timer``, ``blob`` or ``http:<principal>``."""
    requested_at: str = ""
    """ISO 8601 UTC."""

    @field_validator("run_id")
    @classmethod
    def _run_id(cls, value: str) -> str:
        from exporter.storage.runs import check_run_id  # runs imports these records

        return check_run_id(value)


class ActiveRun(Record):
    """The export's run in progress (what a repeated start resumes)."""

    run_id: str
    snapshot_identity: str
    request: RunRequest


# --- what prepare wrote -----------------------------------------------------------------------


class Counts(Value):
    """What prepare counted over the snapshot."""

    rows_read: int
    valid: int
    rejected: int
    duplicates: int
    new: int
    changed: int
    unchanged: int
    planned: int = 0
    left: int
    to_unsubscribe: int = 0
    kept: int = 0
    email_changes: int = 0
    collisions: int = 0


class ManifestChunk(Value):
    """One chunk file prepare wrote."""

    path: str
    kind: str
    """``contacts`` or ``leavers``."""
    batches: int = 0
    contacts: int = 0


class Manifest(Record):
    """What prepare produced: counts, chunks, the state version it read, the mapping used."""

    export: str
    run_id: str
    counts: Counts
    rejected_by_reason: dict[str, int] = Field(default_factory=dict)
    rejected_rows: int = 0
    """Rows prepare wrote to rejected.csv (finalize appends ActiveCampaign's refusals)."""
    chunks: list[ManifestChunk] = Field(default_factory=list)
    contacts_to_send: int = 0
    leavers_to_unsubscribe: int = 0
    snapshot_count: int = 0
    previous_snapshot_count: int = 0
    guarded: bool = False
    guard_message: str | None = None
    dry_run: bool = False
    full_resync: bool = False
    list_id: str = ""
    email_column: str = ""
    value_columns: list[str] = Field(default_factory=list)
    artefacts: dict[str, str] = Field(default_factory=dict)
    prepare_seconds: float = 0.0
    snapshot_identity: str = ""
    state_etag: str | None = None
    """ETag of the state prepare diffed against: finalize commits only over that version."""
    started_at: str = ""
    prepared_at: str = ""
    exclude_automations: bool = False
    connection: str = ""
    account: str = ""
    """The connection's API hostname when the run was prepared: the ActiveCampaign account
    whose budget the run shares."""


# --- what push and confirm recorded ------------------------------------------------------------


class SentBatchEntry(Value):
    """One bulk-import request push made."""

    index: int
    batch_id: str | None
    contacts: int
    sent: int
    rejected: list[tuple[str, str]] = Field(default_factory=list)
    """(key, reason) of contacts ActiveCampaign's validation refused."""
    unavailable: str | None = None
    """Why the batch could not be queued (ActiveCampaign unavailable beyond every retry)."""


class SentRecord(Record):
    """A chunk pushed: one entry per batch, in send order.

    Push writes it *before its first request* (no batches, ``complete`` false), again after
    every bulk request's answer (before the next request), and a last time complete. So a push
    that stopped anywhere left a record saying which batches ActiveCampaign acknowledged (a
    retry confirms those by their ``batch_id`` instead of sending them again) and which one
    batch may have been in flight (the first one not recorded: possibly queued)."""

    chunk: str
    batches: list[SentBatchEntry]
    sent: int
    rejected: int
    confirmed: int = 0
    failed: int = 0
    seconds: float = 0.0
    complete: bool = True
    """Every batch of the chunk has an entry (records from before batch journaling were only
    ever written complete)."""


class ConfirmedBatchEntry(Value):
    """One batch's final outcome."""

    index: int
    batch_id: str | None
    status: str
    resubmits: int = 0
    contacts: int
    confirmed: int
    failed: list[tuple[str, str]] = Field(default_factory=list)
    """(key, failure code)."""
    rejected: list[tuple[str, str]] = Field(default_factory=list)
    """(key, reason)."""


class ResubmittedBatch(Value):
    """A batch confirm sent again (its import failed or was interrupted) and has not yet seen
    final: what a retried confirm polls instead of resubmitting once more."""

    index: int
    batch_id: str | None
    """The resubmission's import id (``None``: every contact was refused, nothing queued)."""
    resubmits: int
    rejected: list[tuple[str, str]] = Field(default_factory=list)
    """(key, reason) of every contact refused so far, at the push or a resubmission."""


class ConfirmedRecord(Record):
    """A chunk confirmed: one entry per batch.

    Confirm writes it incomplete (``complete`` false) whenever it resubmits a batch — before
    its next request — with the outcomes final so far and the resubmitted imports still
    outstanding, so a retried confirm never resubmits a batch twice."""

    chunk: str
    batches: list[ConfirmedBatchEntry]
    sent: int
    rejected: int
    confirmed: int
    failed: int
    seconds: float = 0.0
    complete: bool = True
    """Every batch of the chunk is final."""
    resubmitted: list[ResubmittedBatch] = Field(default_factory=list)
    """Resubmitted imports not yet final (only while incomplete)."""


# --- what finalize left ------------------------------------------------------------------------


class CommitMarker(Record):
    """The digest of the state this run committed (so an interrupted finalize recognises its
    own commit)."""

    digest: str


class LastRun(Record):
    """The last finished run of an export (what the timer compares with)."""

    run_id: str
    snapshot_identity: str
    status: str
    finished_at: str
    attempts: int = 1
    """Runs in a row over this same snapshot (this one included)."""
    retry: bool = False
    """The run stopped after its snapshot was prepared (ActiveCampaign unavailable, the key
    refused, another run's commit in the way): something the snapshot does not carry, so the
    timer runs the same snapshot again at its next tick, up to ``MAX_TIMER_ATTEMPTS`` runs in
    a row. A snapshot that could not be read, or a shrink guard, is not retried."""


class ScheduleSlot(Record):
    """The last scheduled time the timer acted on for an export (each slot runs once)."""

    slot: str
    """ISO 8601 UTC."""


class PendingSnapshot(Record):
    """The newest snapshot a trigger found while another run of the export was going: it runs
    when that run has ended (latest wins: a newer one replaces it)."""

    path: str
    """Store path of the snapshot (a CSV, a model.json, or a folder)."""
    identity: str
    requested_by: str
    at: str
    """ISO 8601 UTC, when it was recorded."""
