"""One export run in four host-agnostic phases: prepare → push → confirm → finalize.

The command line calls :meth:`Engine.run` (everything in-process, pushing and confirming in two
threads over one shared rate limiter); the Durable orchestration calls the phases as
activities. Phases exchange small JSON objects (store paths and counts, never contacts), and
every phase is idempotent: each writes a record when it is done, and a repeated call returns
that record instead of doing the work again. So a run killed at any point converges when it is
run again with the same run id (:meth:`Engine.new_run` finds an unfinished run of the same
snapshot and hands back its request).

The export's state moves only in :meth:`Engine.finalize`, only for contacts ActiveCampaign
confirmed, and only if nobody else moved it since *prepare* read it (its ETag).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import logging
import os
import queue
import re
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from exporter.activecampaign import (
    ActiveCampaignClient,
    BulkSender,
    ConfirmedBatch,
    PollPolicy,
    RateLimiter,
    RetryPolicy,
    SentBatch,
)
from exporter.errors import (
    ApiError,
    AuthenticationError,
    ConfigError,
    ConflictError,
    ExporterError,
    GuardError,
    InputError,
    NotFoundError,
)
from exporter.incremental import state as state_mod
from exporter.management.config import Connection, Export
from exporter.management.hostnames import base_url, check_hostname
from exporter.management.repository import ConfigRepository
from exporter.management.schedule import is_due
from exporter.management.secrets import SecretProvider
from exporter.planning.contacts import Batch, PreparedContact, decode_batch_line
from exporter.planning.preparer import Preparer
from exporter.progress import ProgressCallback, ProgressEvent, ignore
from exporter.reading.snapshot import (
    SnapshotFile,
    SnapshotRef,
    find_snapshots,
    local_lister,
    local_opener,
    open_snapshot,
    store_lister,
    store_opener,
)
from exporter.run.rejects import RejectedRowsWriter
from exporter.run.report import RunReport
from exporter.run.tally import API_REJECTED, RunTally, confirmed_record
from exporter.settings import HostPolicy
from exporter.storage import runs
from exporter.storage.store import ObjectNotFound, PreconditionFailed, Store

logger = logging.getLogger(__name__)


def _utcnow() -> datetime:
    return datetime.now(UTC)


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


def instance_id(export: str, snapshot_identity: str) -> str:
    """Deterministic Durable instance id: export + snapshot identity (letters, digits, '-')."""
    safe = re.sub(r"[^A-Za-z0-9-]", "-", export)
    return f"{safe}-{re.sub(r'[^A-Za-z0-9]', '', snapshot_identity)[:32]}"


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


# --- talking to ActiveCampaign for one run ---------------------------------------------------


ClientFactory = Callable[[Connection, str], ActiveCampaignClient]


def api_key_rejected(connection: str) -> AuthenticationError:
    """The error that stops a run whose key ActiveCampaign refuses (never with the key)."""
    return AuthenticationError(
        f"API key rejected by ActiveCampaign for connection {connection!r} (HTTP 403), also "
        "after reading it again; update the key where its reference points and run again",
        status=403,
    )


class _Session:
    """A client and a bulk sender for one export, shared by the push and confirm threads.

    On a 403 the key is re-read once (it may have been rotated) and the client rebuilt; a
    second 403 stops the run with :func:`api_key_rejected`.
    """

    def __init__(
        self,
        export: Export,
        connection: Connection,
        secrets: SecretProvider,
        build: Callable[[Connection, str], ActiveCampaignClient],
        poll: PollPolicy,
    ) -> None:
        self.export = export
        self.connection = connection
        self._secrets = secrets
        self._build = build
        self._poll = poll
        self._lock = threading.Lock()
        self._generation = 0
        self.client = build(connection, secrets.get(connection.api_key_ref))
        self.sender = self._sender()

    def _sender(self) -> BulkSender:
        return BulkSender(
            self.client,
            exclude_automations=self.export.exclude_automations,
            max_resubmits=1,
            poll=self._poll,
        )

    def refresh(self, seen_generation: int) -> None:
        """Re-read the key and rebuild the client, unless another thread already did."""
        with self._lock:
            if self._generation != seen_generation:
                return
            if self._generation >= 1:
                raise api_key_rejected(self.connection.name)
            ref = self.connection.api_key_ref
            logger.warning(
                "ActiveCampaign refused the API key of connection %s; reading it again",
                self.connection.name,
            )
            self._secrets.invalidate(ref)
            old = self.client
            self.client = self._build(self.connection, self._secrets.get(ref))
            self.sender = self._sender()
            self._generation += 1
            old.close()

    def call(self, fn: Callable[[BulkSender], Any]) -> Any:
        """``fn(sender)``, once more with a re-read key after a 403."""
        while True:
            generation = self._generation
            try:
                return fn(self.sender)
            except AuthenticationError:
                if generation >= 1:
                    raise api_key_rejected(self.connection.name) from None
                self.refresh(generation)

    @property
    def generation(self) -> int:
        return self._generation

    def close(self) -> None:
        self.client.close()


# --- the engine ------------------------------------------------------------------------------


class Engine:
    """Runs exports over a store, with secrets and a host policy injected by the edge."""

    def __init__(
        self,
        store: Store,
        secrets: SecretProvider,
        *,
        host_policy: HostPolicy,
        client_factory: ClientFactory | None = None,
        clock: Callable[[], datetime] = _utcnow,
        chunk_batches: int = 40,
        time_scale: float = 1.0,
    ) -> None:
        if chunk_batches < 1:
            raise ValueError("chunk_batches must be at least 1")
        if time_scale <= 0:
            raise ValueError("time_scale must be positive")
        self.store = store
        self.secrets = secrets
        self.host_policy = host_policy
        self.repo = ConfigRepository(store)
        self.client_factory = client_factory
        self.clock = clock
        self.chunk_batches = chunk_batches
        self.time_scale = time_scale
        self.poll = PollPolicy(
            initial_interval=1.0 / time_scale,
            max_interval=15.0 / time_scale,
            deadline=1800.0 / time_scale,
        )

    def _now(self) -> datetime:
        now = self.clock()
        return now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)

    # --- configuration ------------------------------------------------------------------------

    def _export(self, name: str) -> tuple[Export, Connection]:
        """The export and its connection, if it may run now (enabled, consent, host)."""
        export, _etag = self.repo.get_export(name)
        if not export.enabled:
            raise ConfigError(f"export {name!r} is disabled", field="enabled")
        try:
            connection, _etag = self.repo.get_connection(export.connection)
        except NotFoundError:
            raise ConfigError(
                f"export {name!r} uses connection {export.connection!r}, which does not exist",
                field="connection",
            ) from None
        connection.require_consent()
        check_hostname(connection.hostname, self.host_policy)
        return export, connection

    def default_client(self, connection: Connection, api_key: str, share: float = 1.0) -> Any:
        """The real client: the connection's host, its own limiter with ``share`` of the
        account budget, and waits scaled by ``time_scale``."""
        ts = self.time_scale
        return ActiveCampaignClient(
            base_url(connection.hostname),
            api_key,
            limiter=RateLimiter(share=share, time_scale=ts),
            retry=RetryPolicy(initial_backoff=1.0 / ts, max_backoff=30.0 / ts, deadline=600.0 / ts),
        )

    def _session(self, export: Export, connection: Connection, share: float) -> _Session:
        def build(conn: Connection, key: str) -> ActiveCampaignClient:
            if self.client_factory is not None:
                return self.client_factory(conn, key)
            client: ActiveCampaignClient = self.default_client(conn, key, share)
            return client

        return _Session(export, connection, self.secrets, build, self.poll)

    # --- choosing what to run -----------------------------------------------------------------

    def newest_snapshot(self, export: Export) -> SnapshotRef:
        """The newest snapshot of the export's segment (a folder, a file or a glob)."""
        segment = export.segment
        glob_at = min((segment.find(ch) for ch in "*?[" if ch in segment), default=-1)
        if glob_at >= 0:
            base = segment[:glob_at].rpartition("/")[0] + "/"
        elif segment.endswith("/") or not self.store.exists(segment):
            base = segment if segment.endswith("/") else segment + "/"
        else:
            base = segment
        refs = [r for r in find_snapshots(self.store, base) if export.segment_matches(r.path)]
        if not refs:
            raise NotFoundError(f"no snapshot under {segment} (export {export.name!r})")
        return refs[-1]

    def store_snapshot(self, path: str) -> SnapshotRef:
        """A snapshot in the store named by path: a CSV, a model.json, or a folder (newest)."""
        if path.endswith("/") or not self.store.exists(path):
            refs = find_snapshots(self.store, path if path.endswith("/") else path + "/")
            if not refs:
                raise NotFoundError(f"no snapshot at {path}")
            return refs[-1]
        for ref in find_snapshots(self.store, path.rpartition("/")[0] + "/"):
            if ref.path == path:
                return ref
        raise NotFoundError(f"{path} is not a snapshot (a .csv file or a model.json)")

    @staticmethod
    def local_snapshot(path: str | os.PathLike[str]) -> SnapshotRef:
        """A snapshot on the local disk (read in place, never copied): a CSV file, a
        model.json, or a folder holding a model.json. Identity: paths, sizes, mtimes."""
        p = Path(path).resolve()
        if p.is_dir():
            p = p / "model.json"
        if not p.is_file():
            raise InputError("file not found", file=str(path))
        if p.name == "model.json":
            with open_snapshot(str(p), opener=local_opener, lister=local_lister) as reader:
                sources = list(reader.sources)
            paths = [str(p), *sources]
            kind = "cdm"
        else:
            paths, kind = [str(p)], "csv"
        files = []
        latest = 0.0
        for item in paths:
            st = os.stat(item)
            latest = max(latest, st.st_mtime)
            files.append(SnapshotFile(item, st.st_size, f"{st.st_size}-{st.st_mtime_ns}"))
        return SnapshotRef(
            kind=kind,  # type: ignore[arg-type]
            path=str(p),
            files=tuple(files),
            modified=datetime.fromtimestamp(latest, UTC),
        )

    def new_run(
        self,
        export: str,
        *,
        snapshot: SnapshotRef | None = None,
        options: RunOptions = RunOptions(),
        requested_by: str = "cli",
        snapshot_location: str = runs.STORE,
    ) -> RunRequest:
        """A run request for ``export`` over ``snapshot`` (the segment's newest by default).

        An unfinished run of the same export and snapshot is resumed: its request comes back
        unchanged. ``snapshot_location`` is ``local`` for a file read straight from disk.
        Raises :class:`NotFoundError` / :class:`ConfigError`.
        """
        exp, _connection = self._export(export)
        if snapshot is None:
            snapshot, snapshot_location = self.newest_snapshot(exp), runs.STORE
        identity = snapshot.identity
        active = runs.read_json(self.store, runs.active_run_path(exp.name))
        if active is not None and active.get("snapshot_identity") == identity:
            previous = RunRequest.from_dict(active["request"])
            if previous.options == options and not self._finished(exp.name, previous.run_id):
                logger.info("resuming unfinished run %s of export %s", previous.run_id, exp.name)
                return previous
        now = self._now()
        run_id = runs.new_run_id(now, identity)
        n = 1
        while self.store.exists(runs.manifest_path(exp.name, run_id)) or self.store.exists(
            runs.report_path(exp.name, run_id)
        ):
            n += 1
            run_id = f"{runs.new_run_id(now, identity)}-{n}"
        return RunRequest(
            export=exp.name,
            run_id=run_id,
            snapshot=runs.snapshot_to_dict(snapshot, location=snapshot_location),
            snapshot_identity=identity,
            options=options,
            requested_by=requested_by,
            requested_at=now.isoformat(),
        )

    def _finished(self, export: str, run_id: str) -> bool:
        report = runs.read_json(self.store, runs.report_path(export, run_id))
        return report is not None and report.get("status") in runs.FINAL_STATUSES

    # --- prepare ------------------------------------------------------------------------------

    def prepare(
        self,
        req: RunRequest,
        *,
        progress: ProgressCallback = ignore,
        raise_guard: bool = True,
    ) -> PrepareResult:
        """Read, map, validate, dedupe, diff, plan batches, write chunk files and rejected.csv
        (and plan.csv on a dry run). Idempotent: a prepared run returns its manifest.

        Raises :class:`InputError` when the snapshot cannot be read and :class:`GuardError`
        (after writing a ``guarded`` report) when the shrink guard trips; nothing has been sent
        either way. With ``raise_guard=False`` a guarded run returns ``guarded=True`` instead.
        """
        manifest = runs.read_json(self.store, runs.manifest_path(req.export, req.run_id))
        if manifest is None:
            manifest = self._prepare(req, progress)
        result = PrepareResult.from_manifest(manifest)
        if result.guarded:
            self.finalize(req)
            if raise_guard:
                raise GuardError(str(manifest.get("guard_message") or "shrink guard"))
        return result

    def _prepare(self, req: RunRequest, progress: ProgressCallback) -> dict[str, Any]:
        export, _connection = self._export(req.export)
        started = self._now()
        runs.write_json(
            self.store,
            runs.active_run_path(export.name),
            {
                "run_id": req.run_id,
                "snapshot_identity": req.snapshot_identity,
                "request": req.to_dict(),
            },
        )
        state, etag = state_mod.load(self.store, export.name)
        ref, location = runs.snapshot_from_dict(req.snapshot)
        if location == runs.LOCAL:
            reader = open_snapshot(ref, opener=local_opener, lister=local_lister)
        else:
            reader = open_snapshot(
                ref, opener=store_opener(self.store), lister=store_lister(self.store)
            )
        preparer = Preparer(
            self.store,
            export,
            req.run_id,
            state=state,
            full_resync=req.options.full_resync,
            allow_shrink=req.options.allow_shrink,
            dry_run=req.options.dry_run,
            chunk_batches=self.chunk_batches,
            progress=progress,
        )
        manifest = preparer.run(reader, ref.path)
        manifest.update(
            snapshot_identity=req.snapshot_identity,
            state_etag=etag,
            started_at=started.isoformat(),
            prepared_at=self._now().isoformat(),
            exclude_automations=export.exclude_automations,
            connection=export.connection,
        )
        runs.write_json(self.store, runs.manifest_path(req.export, req.run_id), manifest)
        counts = manifest["counts"]
        logger.info(
            "prepared run %s of export %s: %d rows, %d to send, %d leavers to unsubscribe, "
            "%d rejected, %d duplicates, %d unchanged",
            req.run_id,
            req.export,
            counts["rows_read"],
            manifest["contacts_to_send"],
            manifest["leavers_to_unsubscribe"],
            counts["rejected"],
            counts["duplicates"],
            counts["unchanged"],
        )
        return manifest

    def _manifest(self, req: RunRequest) -> dict[str, Any]:
        manifest = runs.read_json(self.store, runs.manifest_path(req.export, req.run_id))
        if manifest is None:
            raise NotFoundError(f"run {req.run_id} of export {req.export!r} was not prepared")
        return manifest

    def _read_chunk(self, chunk: str) -> list[Batch]:
        with self.store.open_read(chunk) as fh:
            text = io.TextIOWrapper(fh, encoding="utf-8")
            return [decode_batch_line(line) for line in text if line.strip()]

    # --- push ---------------------------------------------------------------------------------

    def push_chunk(self, req: RunRequest, chunk: str, *, share: float = 1.0) -> ChunkSummary:
        """Send the chunk's batches (one batch = one idempotent bulk-import request). ``share``
        is this caller's fraction of the account's API budget. Idempotent: if the chunk's sent
        record exists, returns it without sending again."""
        return self._once(req, chunk, share, self._sent_summary, self._push)

    def _sent_summary(self, req: RunRequest, chunk: str) -> ChunkSummary | None:
        record = runs.read_json(self.store, runs.sent_path(req.export, req.run_id, chunk))
        return None if record is None else _summary(record)

    def _push(self, req: RunRequest, chunk: str, session: _Session) -> ChunkSummary:
        done = self._sent_summary(req, chunk)
        if done is not None:
            return done
        started = time.monotonic()
        batches = self._read_chunk(chunk)
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
        runs.write_json(self.store, runs.sent_path(req.export, req.run_id, chunk), record)
        return _summary(record)

    # --- confirm ------------------------------------------------------------------------------

    def confirm_chunk(self, req: RunRequest, chunk: str, *, share: float = 1.0) -> ChunkSummary:
        """Poll import/info until every batch of the chunk is final (resubmitting failed or
        interrupted batches once). Idempotent like :meth:`push_chunk`."""
        return self._once(req, chunk, share, self._confirmed_summary, self._confirm)

    def _once(
        self,
        req: RunRequest,
        chunk: str,
        share: float,
        done: Callable[[RunRequest, str], ChunkSummary | None],
        work: Callable[[RunRequest, str, _Session], ChunkSummary],
    ) -> ChunkSummary:
        """A phase's record if it exists (no session, no key read), else the work in a session
        holding ``share`` of the account's budget."""
        summary = done(req, chunk)
        if summary is not None:
            return summary
        export, connection = self._export(req.export)
        session = self._session(export, connection, share)
        try:
            return work(req, chunk, session)
        finally:
            session.close()

    def _confirmed_summary(self, req: RunRequest, chunk: str) -> ChunkSummary | None:
        record = runs.read_json(self.store, runs.confirmed_path(req.export, req.run_id, chunk))
        return None if record is None else _summary(record)

    def _confirm(self, req: RunRequest, chunk: str, session: _Session) -> ChunkSummary:
        done = self._confirmed_summary(req, chunk)
        if done is not None:
            return done
        sent_record = runs.read_json(self.store, runs.sent_path(req.export, req.run_id, chunk))
        if sent_record is None:
            raise ExporterError(f"chunk {chunk} cannot be confirmed: it was not pushed")
        started = time.monotonic()
        batches = {b.index: b for b in self._read_chunk(chunk)}
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
        runs.write_json(self.store, runs.confirmed_path(req.export, req.run_id, chunk), record)
        return _summary(record)

    # --- finalize -----------------------------------------------------------------------------

    def finalize(
        self, req: RunRequest, *, cancelled: bool = False, error: str | None = None
    ) -> RunReport:
        """Build the report from the chunk records, write report.json (and the rows
        ActiveCampaign refused into rejected.csv), commit state for confirmed contacts only
        (ETag-conditioned), record the export's last run. Idempotent.

        Raises :class:`ConflictError` when another run moved the export's state since this
        run was prepared (the report, status ``failed``, says so too)."""
        existing = runs.read_json(self.store, runs.report_path(req.export, req.run_id))
        if existing is not None and existing.get("status") in runs.FINAL_STATUSES:
            return RunReport.from_dict(existing)
        manifest = runs.read_json(self.store, runs.manifest_path(req.export, req.run_id))
        report = RunReport(
            export=req.export,
            run_id=req.run_id,
            snapshot=req.snapshot_identity,
            started_at=(manifest or {}).get("started_at") or req.requested_at,
            dry_run=req.options.dry_run,
            full_resync=req.options.full_resync,
        )
        conflict: ConflictError | None = None
        if manifest is None:
            report.status = "cancelled" if cancelled else "failed"
            report.error = error or "the run stopped before its snapshot was prepared"
        else:
            tally = RunTally(report, manifest, cancelled=cancelled, error=error)
            self._tally_chunks(req, manifest, tally)
            tally.finish()
            if not (manifest["dry_run"] or manifest["guarded"]):
                try:
                    self._commit(req, manifest, tally)
                except ConflictError as exc:
                    conflict = exc
                    report.status = "failed"
                    report.error = str(exc)
            if tally.api_rejections:
                self._append_rejections(req, manifest, tally.api_rejections)
        return self._close_run(req, report, conflict, prepared=manifest is not None)

    def _close_run(
        self,
        req: RunRequest,
        report: RunReport,
        conflict: ConflictError | None,
        *,
        prepared: bool,
    ) -> RunReport:
        finished = self._now()
        report.finished_at = finished.isoformat()
        try:
            started = datetime.fromisoformat(report.started_at)
            report.timings["total"] = round((finished - started).total_seconds(), 3)
        except ValueError:
            pass
        problems = report.reconciliation_problems()
        if problems:
            # A bug, never a data problem: say so loudly, and mark the report.
            logger.error(
                "run report does not reconcile: %s",
                "; ".join(problems),
                extra={"export": req.export, "run_id": req.run_id},
            )
            report.error = ((report.error + "; ") if report.error else "") + (
                "internal error: the report does not reconcile"
            )
        if report.status == "failed":
            # The Azure alert matches the message's prefix; the export is in the message too,
            # because `extra` does not reach Application Insights' customDimensions by default.
            logger.error(
                "export run failed: %s run %s",
                req.export,
                req.run_id,
                extra={"export": req.export, "run_id": req.run_id},
            )
        runs.write_json(self.store, runs.report_path(req.export, req.run_id), report.to_dict())
        self._record_last_run(req, report, prepared)
        active = runs.read_json(self.store, runs.active_run_path(req.export))
        if active is not None and active.get("run_id") == req.run_id:
            self.store.delete(runs.active_run_path(req.export))
        if conflict is not None:
            raise conflict
        return report

    def _record_last_run(self, req: RunRequest, report: RunReport, prepared: bool) -> None:
        """What the timer compares with: this snapshot, how many runs in a row it has had, and
        whether a stop after prepare (not the snapshot's fault) makes it worth another run."""
        previous = runs.read_last_run(self.store, req.export)
        attempts = 1
        if previous is not None and previous.snapshot_identity == req.snapshot_identity:
            attempts = previous.attempts + 1
        last = runs.LastRun(
            req.run_id,
            req.snapshot_identity,
            report.status,
            report.finished_at or "",  # set by _close_run just before
            attempts=attempts,
            retry=prepared and report.status == "failed" and not req.options.dry_run,
        )
        runs.write_json(self.store, runs.last_run_path(req.export), last.to_dict())

    def _tally_chunks(self, req: RunRequest, manifest: Mapping[str, Any], tally: RunTally) -> None:
        for info in manifest["chunks"]:
            chunk = info["path"]
            confirmed = runs.read_json(
                self.store, runs.confirmed_path(req.export, req.run_id, chunk)
            )
            sent = runs.read_json(self.store, runs.sent_path(req.export, req.run_id, chunk))
            if confirmed is not None or sent is not None:
                batches = {b.index: b for b in self._read_chunk(chunk)}
            else:
                batches = {}
            tally.chunk(info, sent, confirmed, batches)

    def _commit(self, req: RunRequest, manifest: Mapping[str, Any], tally: RunTally) -> None:
        """Save the next state: confirmed sends and unsubscriptions, kept leavers dropped."""
        path = state_mod.state_path(req.export)
        try:
            current, etag = self.store.read_with_etag(path)
        except ObjectNotFound:
            current, etag = b"", None
        marker = runs.commit_path(req.export, req.run_id)
        if etag != manifest["state_etag"]:
            recorded = runs.read_json(self.store, marker)
            if recorded is not None and recorded["digest"] == _digest(current):
                return  # this very run committed it before it was interrupted
            raise ConflictError(
                f"the state of export {req.export!r} changed since run {req.run_id} was "
                "prepared (another run finished in between); nothing was committed. Run the "
                "export again: it sends whatever this run could not record",
                field="state",
            )
        state = (
            state_mod.ExportState.from_bytes(current, source=path)
            if etag is not None
            else state_mod.ExportState.empty()
        )
        update = tally.update  # confirmed and uncertain outcomes, recorded while tallying
        for key in self._kept_leavers(req):
            update.drop(key)
        new_state = state_mod.apply(state, update)
        runs.write_json(self.store, marker, {"digest": _digest(new_state.to_bytes())})
        try:
            state_mod.save(self.store, req.export, new_state, if_match=etag)
        except PreconditionFailed:
            raise ConflictError(
                f"the state of export {req.export!r} was changed by another run while this one "
                "was finishing; nothing was committed. Run the export again",
                field="state",
            ) from None

    def _kept_leavers(self, req: RunRequest) -> Iterator[str]:
        try:
            data = self.store.read_bytes(runs.kept_path(req.export, req.run_id))
        except ObjectNotFound:
            return iter(())
        return (line for line in data.decode().split("\n") if line)

    def _append_rejections(
        self,
        req: RunRequest,
        manifest: Mapping[str, Any],
        rejections: list[tuple[PreparedContact, str]],
    ) -> None:
        """rejected.csv = prepare's rows (exactly as many as it wrote) + the API's refusals:
        rebuilt from the same inputs every time, so a repeated finalize writes the same file."""
        path = runs.rejected_path(req.export, req.run_id)
        keep = int(manifest["rejected_rows"])
        email_column = str(manifest["email_column"])
        columns = list(manifest["value_columns"])
        with tempfile.TemporaryDirectory(prefix="exporter-fin-") as tmp:
            out_path = os.path.join(tmp, "rejected.csv")
            with open(out_path, "wb") as out:
                writer = RejectedRowsWriter(out, value_columns=columns)
                raw = io.TextIOWrapper(out, encoding="utf-8", newline="", write_through=True)
                copier = csv.writer(raw, lineterminator="\r\n")
                try:
                    with self.store.open_read(path) as fh:
                        rows = csv.reader(io.TextIOWrapper(fh, encoding="utf-8-sig", newline=""))
                        next(rows, None)  # the header: the writer wrote it already
                        for i, row in enumerate(rows):
                            if i >= keep:
                                break
                            copier.writerow(row)
                except ObjectNotFound:
                    pass
                raw.flush()
                raw.detach()
                for contact, reason in rejections:
                    writer.write_row(
                        row=contact.row,
                        source=contact.source,
                        reason=API_REJECTED,
                        message=f"ActiveCampaign refused the contact: {reason}",
                        column=email_column,
                        values={email_column: contact.key},
                    )
                writer.close()
            self.store.write_file(path, out_path)

    # --- the whole run in-process (command line) ---------------------------------------------

    def run(self, req: RunRequest, *, progress: ProgressCallback | None = None) -> RunReport:
        """The whole run in-process: prepare, then push chunks in order in this thread while a
        second thread confirms pushed chunks (one shared limiter). Resumes an interrupted run
        with the same ``run_id``: finished phases are not repeated.

        Raises :class:`GuardError` (report written, status ``guarded``), :class:`InputError`
        (report written, status ``failed``), :class:`ConflictError` (state moved meanwhile).
        A fatal API error (a rejected key) ends the run with status ``failed``.
        """
        emit = progress or ignore
        try:
            prep = self.prepare(req, progress=emit)
        except InputError as exc:
            self.finalize(req, error=str(exc))
            raise
        if prep.dry_run or not prep.chunks:
            return self.finalize(req)
        export, connection = self._export(req.export)
        try:
            session = self._session(export, connection, 1.0)
        except ExporterError as exc:  # e.g. the key reference does not resolve
            self.finalize(req, error=str(exc))
            raise
        try:
            error = self._pipeline(req, prep, session, emit)
        finally:
            session.close()
        emit(ProgressEvent("finalize", 0, 1, "finalizing"))
        return self.finalize(req, error=error)

    def _pipeline(
        self, req: RunRequest, prep: PrepareResult, session: _Session, emit: ProgressCallback
    ) -> str | None:
        """Push in this thread, confirm in another; the first fatal error stops both."""
        total = prep.contacts_to_send + prep.leavers_to_unsubscribe
        pushed: queue.Queue[str | None] = queue.Queue()
        stop = threading.Event()
        errors: list[BaseException] = []
        settled = [0]

        def confirmer() -> None:
            while (chunk := pushed.get()) is not None:
                if stop.is_set():
                    continue
                try:
                    s = self._confirm(req, chunk, session)
                except BaseException as exc:  # noqa: BLE001 - handed to the pushing thread
                    errors.append(exc)
                    stop.set()
                    continue
                settled[0] += s.confirmed + s.failed + s.rejected
                emit(ProgressEvent("confirm", settled[0], total, "contacts settled"))

        thread = threading.Thread(target=confirmer, name="exporter-confirm", daemon=True)
        thread.start()
        sent = 0
        try:
            for chunk in prep.chunks:
                if stop.is_set():
                    break
                s = self._push(req, chunk, session)
                sent += s.sent + s.rejected
                emit(ProgressEvent("push", sent, total, "contacts sent"))
                pushed.put(chunk)
        except ApiError as exc:  # fatal, or retriable but the retry policy gave up
            errors.append(exc)
            stop.set()
        except BaseException:
            stop.set()
            pushed.put(None)
            raise
        pushed.put(None)
        thread.join()
        for problem in errors:
            # ActiveCampaign refused or stayed unavailable beyond every retry: the run ends
            # with a report (what was not confirmed counts failed, and is sent next run).
            if isinstance(problem, ApiError):
                logger.error("run %s of export %s stopped: %s", req.run_id, req.export, problem)
                return str(problem)
        if errors:
            raise errors[0]
        return None

    # --- history ------------------------------------------------------------------------------

    def list_runs(self, export: str, *, limit: int = 20) -> list[RunReport]:
        """The export's runs, newest first (a run in progress shows as ``running``)."""
        # One level of runs/<export>/ (not every chunk of every run), newest id first; a run
        # folder without a report or a manifest yet (prepare just started) is skipped.
        folders = self.store.list_folder(f"runs/{export}/")
        ids = sorted((name[:-1] for name in folders if name.endswith("/")), reverse=True)
        found: list[RunReport] = []
        for run_id in ids:
            if len(found) >= limit:
                break
            with contextlib.suppress(NotFoundError):
                found.append(self.get_run(export, run_id))
        return found

    def get_run(self, export: str, run_id: str) -> RunReport:
        """One run's report (``running`` with prepare's counts while it is in progress)."""
        runs.check_run_id(run_id)
        data = runs.read_json(self.store, runs.report_path(export, run_id))
        if data is not None:
            return RunReport.from_dict(data)
        manifest = runs.read_json(self.store, runs.manifest_path(export, run_id))
        if manifest is None:
            raise NotFoundError(f"export {export!r} has no run {run_id}")
        counts = manifest["counts"]
        return RunReport(
            export=export,
            run_id=run_id,
            snapshot=str(manifest.get("snapshot_identity", "")),
            started_at=str(manifest.get("started_at", "")),
            status="running",
            dry_run=bool(manifest["dry_run"]),
            full_resync=bool(manifest.get("full_resync", False)),
            rows_read=counts["rows_read"],
            valid=counts["valid"],
            duplicates=counts["duplicates"],
            new=counts["new"],
            changed=counts["changed"],
            unchanged=counts["unchanged"],
            left=counts["left"],
        )

    # --- triggers -----------------------------------------------------------------------------

    def due_runs(self, now: datetime) -> list[RunRequest]:
        """Timer: every enabled export whose schedule is due and whose segment has a snapshot
        it has not exported yet — or whose last run over the newest snapshot stopped after
        prepare (see :attr:`runs.LastRun.retry`), up to ``MAX_TIMER_ATTEMPTS`` runs in a row."""
        requests = []
        for export in self.repo.list_exports():
            if not export.enabled or not export.schedule:
                continue
            last = runs.read_last_run(self.store, export.name)
            reference = (
                datetime.fromisoformat(last.finished_at)
                if last is not None
                else (export.updated_at or export.created_at)
            )
            if not is_due(export.schedule, reference, now):
                continue
            try:
                ref = self.newest_snapshot(export)
                if last is not None and last.snapshot_identity == ref.identity:
                    if not (last.retry and last.attempts < runs.MAX_TIMER_ATTEMPTS):
                        continue
                    logger.warning(
                        "export %s: running snapshot %s again (its last run stopped: %s, "
                        "attempt %d of %d)",
                        export.name,
                        ref.path,
                        last.status,
                        last.attempts + 1,
                        runs.MAX_TIMER_ATTEMPTS,
                    )
                requests.append(self.new_run(export.name, snapshot=ref, requested_by="timer"))
            except (ConfigError, InputError) as exc:
                logger.warning("export %s is due but cannot run: %s", export.name, exc)
        return requests

    def runs_for_blob(self, path: str) -> list[RunRequest]:
        """Blob trigger: a run request for every enabled export whose segment contains this
        snapshot blob (a plain CSV or a model.json; a CDM partition waits for its model.json)."""
        requests = []
        folder = path.rpartition("/")[0] + "/"
        for export in self.repo.list_exports():
            if not export.enabled or not export.segment_matches(path):
                continue
            try:
                ref = next((r for r in find_snapshots(self.store, folder) if r.path == path), None)
                if ref is None:
                    continue
                last = runs.read_last_run(self.store, export.name)
                if last is not None and last.snapshot_identity == ref.identity:
                    continue
                requests.append(self.new_run(export.name, snapshot=ref, requested_by="blob"))
            except (ConfigError, InputError) as exc:
                logger.warning("snapshot %s for export %s cannot run: %s", path, export.name, exc)
        return requests


# --- records → report ------------------------------------------------------------------------


def _summary(record: Mapping[str, Any]) -> ChunkSummary:
    return ChunkSummary(
        chunk=str(record["chunk"]),
        batches=len(record["batches"]),
        sent=int(record["sent"]),
        rejected=int(record["rejected"]),
        confirmed=int(record["confirmed"]),
        failed=int(record["failed"]),
    )


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


def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()
