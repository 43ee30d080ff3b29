"""Run history: an export's runs, newest first, and one run's report (``running`` with
prepare's counts while it is in progress), read from the store layout of :mod:`runs`."""

from __future__ import annotations

import contextlib

from exporter.errors import NotFoundError
from exporter.run.report import RunReport
from exporter.storage import runs
from exporter.storage.records import Manifest, read_record
from exporter.storage.store import Store


def list_runs(store: Store, export: str, *, limit: int = 20) -> list[RunReport]:
    """The export's runs, newest first (a run in progress shows as ``running``)."""
    # One level of runs/<export>/ (not every chunk of every run), newest id first; a run
    # folder without a report or a manifest yet (prepare just started) is skipped.
    folders = store.list_folder(f"runs/{export}/")
    ids = sorted((name[:-1] for name in folders if name.endswith("/")), reverse=True)
    found: list[RunReport] = []
    for run_id in ids:
        if len(found) >= limit:
            break
        with contextlib.suppress(NotFoundError):
            found.append(get_run(store, export, run_id))
    return found


def get_run(store: Store, export: str, run_id: str) -> RunReport:
    """One run's report (``running`` with prepare's counts while it is in progress)."""
    runs.check_run_id(run_id)
    report = read_record(store, runs.report_path(export, run_id), RunReport)
    if report is not None:
        return report
    manifest = read_record(store, runs.manifest_path(export, run_id), Manifest)
    if manifest is None:
        raise NotFoundError(f"export {export!r} has no run {run_id}")
    counts = manifest.counts
    return RunReport(
        export=export,
        run_id=run_id,
        snapshot=manifest.snapshot_identity,
        started_at=manifest.started_at,
        status="running",
        dry_run=manifest.dry_run,
        full_resync=manifest.full_resync,
        rows_read=counts.rows_read,
        valid=counts.valid,
        duplicates=counts.duplicates,
        new=counts.new,
        changed=counts.changed,
        unchanged=counts.unchanged,
        left=counts.left,
    )
