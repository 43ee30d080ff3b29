"""One export run in four host-agnostic phases: prepare → push → confirm → finalize.

:class:`Engine` is the facade both hosts hold: a :class:`~exporter.run.context.RunContext`
(store, secrets, host policy, clock, API sessions) with the phases as methods. The work lives in
one module per phase — :mod:`exporter.run.prepare`, :mod:`~exporter.run.push`,
:mod:`~exporter.run.confirm`, :mod:`~exporter.run.finalize` — plus the in-process driver
(:mod:`~exporter.run.pipeline`), the trigger decisions (:mod:`~exporter.run.scheduling`), the
run history (:mod:`~exporter.run.history`) and snapshot discovery
(:mod:`exporter.reading.discovery`).

The command line calls :meth:`Engine.run` (everything in-process, pushing and confirming in two
threads over one shared rate limiter); the Durable orchestration calls the phases as
activities. Phases exchange small records (:mod:`exporter.run.records`: store paths and counts,
never contacts), and every phase is idempotent: each writes a record when it is done, and a
repeated call returns that record instead of doing the work again. So a run killed at any point
converges when it is run again with the same run id (:meth:`Engine.new_run` finds an unfinished
run of the same snapshot and hands back its request).

The export's state moves only in *finalize*, only for contacts ActiveCampaign confirmed, and
only if nobody else moved it since *prepare* read it (its ETag).
"""

from __future__ import annotations

import os
from datetime import datetime

from exporter.activecampaign.session import ClientFactory
from exporter.management.config import Export
from exporter.progress import ProgressCallback, ignore
from exporter.reading import discovery
from exporter.reading.refs import SnapshotRef
from exporter.run import confirm, finalize, history, members, pipeline, prepare, push, scheduling
from exporter.run.context import RunContext
from exporter.run.records import ChunkSummary, PrepareResult, RunOptions, RunRequest, instance_id
from exporter.run.report import RunReport
from exporter.storage import runs
from exporter.storage.records import SnapshotLocation

__all__ = ["ClientFactory", "Engine", "RunOptions", "RunRequest", "instance_id"]

_DEFAULT_OPTIONS = RunOptions()


class Engine(RunContext):
    """Runs exports over a store, with secrets and a host policy injected by the edge."""

    # --- choosing what to run -----------------------------------------------------------------

    def newest_snapshot(self, export: Export) -> SnapshotRef:
        """The newest snapshot of the export's segment (a folder, a file or a glob)."""
        return discovery.newest_snapshot(self.store, export)

    def store_snapshot(self, path: str) -> SnapshotRef:
        """A snapshot in the store named by path: a CSV, a model.json, or a folder (newest)."""
        return discovery.store_snapshot(self.store, path)

    @staticmethod
    def local_snapshot(path: str | os.PathLike[str]) -> SnapshotRef:
        """A snapshot on the local disk (read in place, never copied)."""
        return discovery.local_snapshot(path)

    def new_run(
        self,
        export: str,
        *,
        snapshot: SnapshotRef | None = None,
        options: RunOptions = _DEFAULT_OPTIONS,
        requested_by: str = "cli",
        snapshot_location: SnapshotLocation = runs.STORE,
    ) -> RunRequest:
        """A run request (or the unfinished one to resume): :func:`scheduling.new_run`."""
        return scheduling.new_run(
            self,
            export,
            snapshot=snapshot,
            options=options,
            requested_by=requested_by,
            snapshot_location=snapshot_location,
        )

    def due_runs(self, now: datetime) -> list[RunRequest]:
        """Timer: :func:`scheduling.due_runs`."""
        return scheduling.due_runs(self, now)

    def runs_for_blob(self, path: str) -> list[RunRequest]:
        """Blob trigger: :func:`scheduling.runs_for_blob`."""
        return scheduling.runs_for_blob(self, path)

    # --- the phases ---------------------------------------------------------------------------

    def prepare(
        self, req: RunRequest, *, progress: ProgressCallback = ignore, raise_guard: bool = True
    ) -> PrepareResult:
        """:func:`exporter.run.prepare.prepare`."""
        return prepare.prepare(self, req, progress=progress, raise_guard=raise_guard)

    def read_list_members(self, req: RunRequest, *, share: float = 1.0) -> int:
        """:func:`exporter.run.members.read_before_sending`."""
        return members.read_before_sending(self, req, share=share)

    def mark_list_sent(self, req: RunRequest) -> int:
        """:func:`exporter.run.members.mark_sent`."""
        return members.mark_sent(self, req)

    def push_chunk(self, req: RunRequest, chunk: str, *, share: float = 1.0) -> ChunkSummary:
        """:func:`exporter.run.push.push_chunk`."""
        return push.push_chunk(self, req, chunk, share=share)

    def confirm_chunk(self, req: RunRequest, chunk: str, *, share: float = 1.0) -> ChunkSummary:
        """:func:`exporter.run.confirm.confirm_chunk`."""
        return confirm.confirm_chunk(self, req, chunk, share=share)

    def finalize(
        self, req: RunRequest, *, cancelled: bool = False, error: str | None = None
    ) -> RunReport:
        """:func:`exporter.run.finalize.finalize`."""
        return finalize.finalize(self, req, cancelled=cancelled, error=error)

    def run(self, req: RunRequest, *, progress: ProgressCallback | None = None) -> RunReport:
        """The whole run in-process: :func:`exporter.run.pipeline.run`."""
        return pipeline.run(self, req, progress=progress)

    # --- history ------------------------------------------------------------------------------

    def list_runs(self, export: str, *, limit: int = 20) -> list[RunReport]:
        """The export's runs, newest first (a run in progress shows as ``running``)."""
        return history.list_runs(self.store, export, limit=limit)

    def get_run(self, export: str, run_id: str) -> RunReport:
        """One run's report (``running`` with prepare's counts while it is in progress)."""
        return history.get_run(self.store, export, run_id)
