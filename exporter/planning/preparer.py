"""The *prepare* phase: one streaming pass from a snapshot to chunk files, and the manifest.

Rows are mapped and validated (:class:`~exporter.planning.mapping.Mapper`), de-duplicated by key
(the lower-cased email; the first occurrence wins), classified against the export's state
(:class:`~exporter.incremental.diff.Differ`, a few thousand at a time), planned into bulk-import
batches (:class:`~exporter.planning.batching.BatchPlanner`) and written to chunk files,
``chunk_batches`` batches per file. Leavers follow in chunks of their own, as unsubscribe-only
payloads. Then the shrink guard runs: all of this happens before anything is sent, so a broken
snapshot (an :class:`~exporter.errors.InputError` from the reader) or a tripped guard sends
nothing.

Memory: contacts are held only until their batch is written (a few thousand at a time), plus
the hashes of the keys seen (:class:`~exporter.planning.dedup.SeenKeys`, for de-duplication:
about 10 bytes per contact) and the state's arrays.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import tempfile
import time
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from operator import itemgetter
from typing import IO

import numpy as np

from exporter.errors import ConfigError, GuardError
from exporter.incremental.diff import Change, Differ, DiffResult, check_shrink
from exporter.incremental.state import U64, ExportState
from exporter.management.config import Export
from exporter.planning.batching import BatchPlanner
from exporter.planning.blockmap import Block, BlockMapper
from exporter.planning.chunks import encode_batch_line
from exporter.planning.columns import ColumnBatch, ContactColumns, ContactObjects, Contacts
from exporter.planning.contacts import Batch, PreparedContact, Rejection
from exporter.planning.dedup import SeenKeys
from exporter.planning.mapping import (
    FIELD_TYPES,
    FieldMapping,
    Mapper,
    MappingSpec,
    leaver_payload,
)
from exporter.progress import ProgressCallback, ProgressEvent
from exporter.reading.snapshot import SnapshotReader
from exporter.run.rejects import RejectedRowsWriter
from exporter.storage import runs
from exporter.storage.records import Counts, Manifest, ManifestChunk
from exporter.storage.store import Store

logger = logging.getLogger(__name__)

CONTACTS = "contacts"
LEAVERS = "leavers"
DUPLICATE = "duplicate"
"""Reason written to the rejected-rows CSV for a repeated email (counted as a duplicate)."""
LEAVER_SOURCE = "state"
"""``source`` of a leaver's pseudo-contact (it comes from the state, not the snapshot)."""
CLASSIFY_BATCH = 4096
"""Contacts classified against the state at once (amortises numpy's per-call cost)."""
READ_BLOCK = 1024
"""Rows read from the snapshot at once (the reader fills a block at C speed). Bigger blocks
cost more than they save: 4096 rows of objects fall out of the CPU caches (+0.25 s per
million rows to read them) and 256 make the per-block de-duplication dearer."""
PROGRESS_EVERY = 50_000
_POSITION = itemgetter(0)
REJECTED_SHARE_FROM = 10_000
"""Rows read from which more than half of them rejected stops a run as guarded."""


def mapping_spec(export: Export) -> MappingSpec:
    """The mapping an export describes. Raises :class:`ConfigError` for a custom field whose id
    was never resolved (the export was not saved through the service)."""
    fields = []
    for i, fm in enumerate(export.fields):
        if not fm.field_id:
            raise ConfigError(
                "the custom field was never resolved on the account; save the export again",
                field=f"fields.{i}.field",
            )
        kind = fm.field_type if fm.field_type in FIELD_TYPES else "text"
        fields.append(FieldMapping(fm.column, fm.field_id, kind))
    return MappingSpec(
        email=export.email,
        list_id=export.list_id,
        first_name=export.first_name,
        last_name=export.last_name,
        phone=export.phone,
        fields=fields,
        tags=list(export.tags),
        tag_column=export.tag_column,
        profile_id_column=export.profile_id_column,
        exclude_automations=export.exclude_automations,
    )


@dataclass
class ChunkInfo:
    """One chunk file written by prepare."""

    path: str
    kind: str
    """``contacts`` or ``leavers``."""
    batches: int = 0
    contacts: int = 0


def _size_of(batch: Batch | ColumnBatch) -> int:
    return len(batch) if isinstance(batch, ColumnBatch) else len(batch.contacts)


class _ChunkWriter:
    """Writes batches to local temporary files and uploads each full chunk to the store."""

    def __init__(
        self, store: Store, export: str, run_id: str, chunk_batches: int, tmp_dir: str
    ) -> None:
        self._store = store
        self._export = export
        self._run_id = run_id
        self._per_chunk = chunk_batches
        self._tmp_dir = tmp_dir
        self._fh: IO[bytes] | None = None
        self._tmp: str | None = None
        self._current: ChunkInfo | None = None
        self.chunks: list[ChunkInfo] = []

    def write(self, batch: Batch | ColumnBatch, kind: str) -> None:
        if self._current is not None and (
            self._current.kind != kind or self._current.batches >= self._per_chunk
        ):
            self.close_chunk()
        if self._fh is None:
            n = len(self.chunks)
            fd, self._tmp = tempfile.mkstemp(dir=self._tmp_dir, suffix=".jsonl")
            self._fh = os.fdopen(fd, "wb")
            self._current = ChunkInfo(runs.chunk_path(self._export, self._run_id, n), kind)
        assert self._current is not None
        self._fh.write(encode_batch_line(batch))
        self._current.batches += 1
        self._current.contacts += (
            len(batch) if isinstance(batch, ColumnBatch) else len(batch.contacts)
        )

    def close_chunk(self) -> None:
        if self._fh is None or self._current is None or self._tmp is None:
            return
        self._fh.close()
        self._store.move_file(self._current.path, self._tmp)
        self.chunks.append(self._current)
        self._fh, self._tmp, self._current = None, None, None

    def discard(self) -> None:
        """Drop every chunk written (the shrink guard stopped the run)."""
        if self._fh is not None:
            self._fh.close()
        for info in self.chunks:
            self._store.delete(info.path)
        self.chunks = []
        self._fh, self._tmp, self._current = None, None, None


class Preparer:
    """One prepare pass for one run. Call :meth:`run` once."""

    def __init__(
        self,
        store: Store,
        export: Export,
        run_id: str,
        *,
        state: ExportState,
        full_resync: bool,
        allow_shrink: bool,
        dry_run: bool,
        chunk_batches: int,
        progress: ProgressCallback,
        pre_existing: U64 | None = None,
        max_rejected_rows: int = 100_000,
    ) -> None:
        """``pre_existing``: hashes of list members this export did not subscribe (kept when
        they leave; :mod:`exporter.run.members`)."""
        self.store = store
        self.export = export
        self.run_id = run_id
        self.state = state
        self.full_resync = full_resync
        self.allow_shrink = allow_shrink
        self.dry_run = dry_run
        self.chunk_batches = chunk_batches
        self.progress = progress
        self.pre_existing = pre_existing
        self.max_rejected_rows = max_rejected_rows
        """Rejected rows (duplicates included) after which reading stops and the run is
        guarded; rejected.csv keeps the first ones."""
        self.rejected_by_reason: Counter[str] = Counter()
        self.rows_read = 0
        self.duplicates = 0
        self.planned = 0

    # --- the pass ---------------------------------------------------------------------------

    def run(self, reader: SnapshotReader, source: str) -> Manifest:
        """Stream ``reader`` to chunk files; returns the manifest's counts and chunk list.
        Raises InputError (bad snapshot) or GuardError (shrink guard) before anything is
        sent."""
        spec = mapping_spec(self.export)
        mapper = Mapper(spec, reader.columns, source=source)
        self.value_columns = mapper.value_columns
        wanted = set(self.value_columns)
        self._value_index = [i for i, c in enumerate(mapper.columns) if c in wanted]
        self.email_column = _column_named(mapper.columns, spec.email)
        self.value_columns_all = mapper.columns
        started = time.perf_counter()
        with contextlib.ExitStack() as stack:
            tmp_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="exporter-prep-"))
            rejected_file = stack.enter_context(open(os.path.join(tmp_dir, "rejected.csv"), "wb"))
            self.rejects = stack.enter_context(
                RejectedRowsWriter(rejected_file, value_columns=self.value_columns)
            )
            self.plan: RejectedRowsWriter | None = None
            if self.dry_run:
                plan_file = stack.enter_context(open(os.path.join(tmp_dir, "plan.csv"), "wb"))
                self.plan = stack.enter_context(
                    RejectedRowsWriter(plan_file, value_columns=self.value_columns, action=True)
                )
            self.chunks = _ChunkWriter(
                self.store, self.export.name, self.run_id, self.chunk_batches, tmp_dir
            )
            self.planner = BatchPlanner(
                exclude_automations=spec.exclude_automations, on_too_large=self._too_large
            )
            self.differ = Differ(
                self.state,
                leavers=self.export.leaver_policy,
                full_resync=self.full_resync,
                pre_existing=self.pre_existing,
            )
            try:
                with _quiet_gc():
                    self._stream(reader.blocks(READ_BLOCK), mapper)
            finally:
                reader.close()
            result = self.differ.finish()
            guard = reject_guard(
                self.rejects.count, self.rows_read, self.max_rejected_rows
            ) or shrink_guard(
                self.state.snapshot_count,
                result.snapshot_count,
                self.export.max_shrink,
                self.allow_shrink,
            )
            kept = 0
            if guard is None:
                self._leavers(result, spec.list_id)
                kept = (
                    result.counts.kept
                    if self.dry_run
                    else write_kept(
                        self.store, runs.kept_path(self.export.name, self.run_id), result, tmp_dir
                    )
                )
            else:
                self.chunks.discard()
            self.rejects.close()
            rejected_file.close()
            self.store.write_file(
                runs.rejected_path(self.export.name, self.run_id), rejected_file.name
            )
            artefacts = {"rejected": runs.rejected_path(self.export.name, self.run_id)}
            if self.plan is not None:
                self.plan.close()
                plan_file.close()
                self.store.write_file(runs.plan_path(self.export.name, self.run_id), plan_file.name)
                artefacts["plan"] = runs.plan_path(self.export.name, self.run_id)
        return _manifest(self, result, guard, kept, artefacts, time.perf_counter() - started)

    def _stream(self, blocks: Iterator[tuple[str, int, Block]], mapper: Mapper) -> None:
        # The hot loop: keep it free of anything a row does not need.
        block_mapper = BlockMapper(mapper)
        map_columns = block_mapper.map_columns  # == mapper.map on each row, as columns
        seen = SeenKeys()  # keys so far: 8-21 bytes each (a set of them cost ~65)
        self._buffer: Contacts = ContactColumns() if block_mapper.columnar else ContactObjects()
        self._raw: list[list[str]] = []
        n = 0
        next_progress = PROGRESS_EVERY
        for source, first, block in blocks:
            contacts, at, rejected = map_columns(source, first, block)
            n += self._take_block(block, contacts, at, rejected, seen, mapper)
            if self.rejects.count >= self.max_rejected_rows:
                break  # the run is guarded: the rest of the file is not read
            while n >= next_progress:  # once per block: the same events, a little later
                self.progress(ProgressEvent("prepare", next_progress, None, "rows read"))
                next_progress += PROGRESS_EVERY
        self._flush_columns(self._buffer, self._raw, mapper)
        self.rows_read = n
        self.unique_keys = len(seen)
        self.progress(ProgressEvent("prepare", n, n, "rows read"))
        last = self.planner.flush()
        if last is not None:
            self._write(last, CONTACTS)
        self.chunks.close_chunk()

    def _take_block(
        self,
        block: Block,
        contacts: Contacts,
        at: list[int],
        rejected: list[tuple[int, Rejection]],
        seen: SeenKeys,
        mapper: Mapper,
    ) -> int:
        """One mapped block (its contacts, their positions ``at``, the rejections with
        theirs), in row order: a rejection is reported, a duplicate (a key seen on an earlier
        row) rejected, and each run of new contacts between them buffered (flushed every
        :data:`CLASSIFY_BATCH` contacts, as if one by one). Returns the rows counted (blank
        lines are not)."""
        new = seen.first_seen(contacts.keys)
        events: list[tuple[int, Rejection | int]] = rejected  # type: ignore[assignment]
        if not new.all():  # a duplicate is its contact's index
            events = [*rejected, *((at[k], k) for k in np.flatnonzero(~new).tolist())]
            events.sort(key=_POSITION)
        blanks = 0
        k = 0  # the next contact
        for pos, what in events:
            end = bisect_left(at, pos)  # contacts before this row
            if k < end:
                self._take_run(contacts, k, end, block, at, mapper)
            k = end
            if what.__class__ is int:
                self._duplicate(contacts.contact(what), mapper, block[pos])
                k += 1
            elif block[pos]:
                self._reject(what)  # type: ignore[arg-type]
            else:  # a blank line: counted in the numbering, not a row
                blanks += 1
        if k < len(contacts):
            self._take_run(contacts, k, len(contacts), block, at, mapper)
        return len(block) - blanks

    def _take_run(
        self,
        contacts: Contacts,
        lo: int,
        hi: int,
        block: Block,
        at: list[int],
        mapper: Mapper,
    ) -> None:
        """New contacts ``lo`` to ``hi`` in row order, classified :data:`CLASSIFY_BATCH` at a
        time."""
        buffer = self._buffer
        buffer.extend(contacts, lo, hi)  # type: ignore[arg-type]  # one kind per run
        if self.dry_run:
            self._raw.extend([block[i] for i in at[lo:hi]])
        while len(buffer) >= CLASSIFY_BATCH:
            self._flush_columns(buffer.split(CLASSIFY_BATCH), self._raw[:CLASSIFY_BATCH], mapper)
            self._raw = self._raw[CLASSIFY_BATCH:]

    def _flush_columns(self, buffer: Contacts, raw: list[list[str]], mapper: Mapper) -> None:
        """Classify, plan and write buffered contacts; only the sent ones become objects."""
        if not len(buffer):
            return
        kinds = self.differ.classify_columns(buffer.keys, buffer.fingerprints, buffer.pids)
        if self.plan is not None:
            self._plan_columns(buffer, raw, kinds.tolist())
        sent = np.flatnonzero(kinds != Change.UNCHANGED).tolist()
        which = None if len(sent) == len(buffer) else sent
        write = self._write
        for batch in self.planner.add_all(
            # columns stay columns (no object per contact): see BatchPlanner.add_all
            buffer.select(which) if isinstance(buffer, ContactColumns) else buffer.contacts(which)
        ):
            write(batch, CONTACTS)

    def _write(self, batch: Batch | ColumnBatch, kind: str) -> None:
        if self.dry_run:
            if kind == CONTACTS:
                self.planned += _size_of(batch)
            return
        self.chunks.write(batch, kind)

    # --- rows that are not sent -------------------------------------------------------------

    def _reject(self, rejection: Rejection) -> None:
        self.rejected_by_reason[rejection.reason] += 1
        if self.rejects.count < self.max_rejected_rows:
            self.rejects.write(rejection)
        if self.plan is not None:
            self.plan.write(rejection, action="reject")

    def _too_large(self, rejection: Rejection) -> None:
        self._reject(rejection)

    def _duplicate(self, contact: PreparedContact, mapper: Mapper, values: list[str]) -> None:
        self.duplicates += 1
        rejection = Rejection(
            row=contact.row,
            source=contact.source,
            reason=DUPLICATE,
            message="the same email appears on an earlier row (that one is sent)",
            column=self.email_column,
            values=self._values(values),
        )
        if self.rejects.count < self.max_rejected_rows:
            self.rejects.write(rejection)
        if self.plan is not None:
            self.plan.write(rejection, action="reject")

    def _plan_columns(self, buffer: Contacts, raw: list[list[str]], kinds: list[int]) -> None:
        assert self.plan is not None
        for i, kind in enumerate(kinds):
            if kind == Change.UNCHANGED:
                continue
            self.plan.write_row(
                row=buffer.rows[i],
                source=buffer.sources[i],
                reason="new" if kind == Change.NEW else "changed",
                message=buffer.payload(i),
                values=self._values(raw[i]),
                action="add" if kind == Change.NEW else "update",
            )

    def _values(self, values: list[str]) -> dict[str, str]:
        columns = self.value_columns_all
        return {columns[i]: values[i] for i in self._value_index if i < len(values)}

    # --- after the last row -----------------------------------------------------------------

    def _leavers(self, result: DiffResult, list_id: str) -> None:
        planner = BatchPlanner(
            exclude_automations=self.export.exclude_automations,
            start_index=self.planner.next_index,
            on_too_large=self._too_large,
        )
        for leaver in result.leavers_to_unsubscribe():
            contact = PreparedContact(
                0, LEAVER_SOURCE, leaver.key, leaver_payload(leaver.email, list_id), 0
            )
            if self.plan is not None:
                self.plan.write_row(
                    row=0,
                    source=LEAVER_SOURCE,
                    reason="left the segment",
                    message=contact.payload,
                    column=self.email_column,
                    values={self.email_column: leaver.email},
                    action="unsubscribe",
                )
            batch = planner.add(contact)
            if batch is not None:
                self._write(batch, LEAVERS)
        last = planner.flush()
        if last is not None:
            self._write(last, LEAVERS)
        if not self.dry_run:
            self.chunks.close_chunk()


def _manifest(
    p: Preparer,
    result: DiffResult,
    guard: str | None,
    kept: int,
    artefacts: dict[str, str],
    seconds: float,
) -> Manifest:
    """The manifest of a finished pass (counts, chunks, the mapping used)."""
    c = result.counts
    rejected = sum(p.rejected_by_reason.values())
    counts = {
        "rows_read": p.rows_read,
        "valid": result.snapshot_count,
        "rejected": rejected,
        "duplicates": p.duplicates,
        "new": c.new,
        "changed": c.changed,
        "unchanged": c.unchanged,
        "planned": p.planned,
        "left": c.left,
        "to_unsubscribe": c.to_unsubscribe,
        "kept": kept,
        "email_changes": c.email_changes,
        "collisions": c.collisions,
    }
    chunks = [
        ManifestChunk(path=ch.path, kind=ch.kind, batches=ch.batches, contacts=ch.contacts)
        for ch in p.chunks.chunks
    ]
    return Manifest(
        export=p.export.name,
        run_id=p.run_id,
        counts=Counts.from_dict(counts),
        rejected_by_reason=dict(p.rejected_by_reason),
        rejected_rows=p.rejects.count,
        chunks=chunks,
        contacts_to_send=sum(ch.contacts for ch in chunks if ch.kind == CONTACTS),
        leavers_to_unsubscribe=sum(ch.contacts for ch in chunks if ch.kind == LEAVERS),
        snapshot_count=result.snapshot_count,
        previous_snapshot_count=p.state.snapshot_count,
        guarded=guard is not None,
        guard_message=guard,
        dry_run=p.dry_run,
        full_resync=p.full_resync,
        list_id=p.export.list_id,
        email_column=p.email_column,
        value_columns=p.value_columns,
        artefacts=artefacts,
        prepare_seconds=round(seconds, 3),
    )


@contextlib.contextmanager
def _quiet_gc() -> Iterator[None]:
    """The cyclic garbage collector paused for the pass, and kept off older objects.

    The stream allocates containers per row (the row's list, the contact) that die by
    reference count and form no cycles, yet they trigger collections hundreds of times per
    100k rows, and the full ones scanned every object the process holds (the SDKs' modules):
    about a tenth of prepare's time. The collector is back (and the older objects visible to
    it again) as soon as the pass ends, so any cycle made meanwhile is still collected.
    """
    enabled = gc.isenabled()
    # Someone else froze objects on purpose (a pre-fork server, say): leave theirs frozen.
    ours = gc.get_freeze_count() == 0
    if ours:
        gc.freeze()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
        if ours:
            gc.unfreeze()


def _column_named(columns: list[str], wanted: str) -> str:
    """The column the mapper bound ``wanted`` to (matched as the mapper matches it)."""
    key = wanted.strip().lstrip("\ufeff").strip().lower()
    for c in columns:
        if c.strip().lstrip("\ufeff").strip().lower() == key:
            return c
    return wanted


def reject_guard(rejected: int, rows_read: int, max_rejected_rows: int) -> str | None:
    """Why too many rejected rows stop the run (``None`` when they do not)."""
    if rejected >= max_rejected_rows:
        return (
            f"more than {max_rejected_rows} rows were rejected: reading stopped after "
            f"{rows_read} rows and nothing is sent; rejected.csv keeps the first "
            f"{max_rejected_rows} (limit max_rejected_rows; raise it with the setting "
            "EXPORTER_MAX_REJECTED_ROWS)"
        )
    if rows_read >= REJECTED_SHARE_FROM and rejected * 2 > rows_read:
        return (
            f"{rejected} of {rows_read} rows were rejected (more than half): is this "
            "the right file and mapping? Nothing is sent; see rejected.csv"
        )
    return None


def shrink_guard(before: int, now: int, max_shrink: float, allow_shrink: bool) -> str | None:
    """Why the segment shrank too much to go on (``None`` when it did not)."""
    try:
        check_shrink(before, now, max_shrink, override=allow_shrink)
    except GuardError as exc:
        return str(exc)
    return None


def write_kept(store: Store, path: str, result: DiffResult, tmp_dir: str) -> int:
    """Leavers the state forgets without unsubscribing, for finalize to drop: written to
    ``path`` in the store; how many."""
    local = os.path.join(tmp_dir, "kept.txt")
    n = 0
    with open(local, "w", encoding="utf-8", newline="\n") as fh:
        for leaver in result.leavers_kept():
            fh.write(leaver.key + "\n")
            n += 1
    store.write_file(path, local)
    return n
