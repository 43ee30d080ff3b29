"""Closing runs that ended without finalizing themselves.

A run writes its report in finalize. A force-terminated orchestration never gets there, nor
does one whose finalize failed for good; a killed command line process neither. Such a run
would show ``running`` for ever and hold its export's lease. Two things close it, with the
same report and state commit as finalize (what it confirmed is committed, what it may have
queued is remembered as possibly ours):

* the **next run of the export** (:func:`exporter.run.lease.take` takes over a lease whose
  holder is gone) closes it as ``abandoned``;
* the **timer's sweep** (the Functions app, every tick) asks the Durable engine about every
  export's active run and closes one whose instance has ended: ``terminated`` when it was
  terminated, ``abandoned`` when it failed or completed without a final report. (An active
  run with no instance at all is left to the lease's TTL: it may be a command line's.)

So no run shows ``running`` for more than one timer tick after its instance ended.
"""

from __future__ import annotations

import logging

from exporter import telemetry
from exporter.run import lease
from exporter.run.context import RunContext
from exporter.run.finalize import finalize
from exporter.run.instances import ACTIVE_INSTANCE_STATUSES
from exporter.run.report import EndedStatus, RunReport
from exporter.storage import runs
from exporter.storage.records import ActiveRun, Manifest, read_record

logger = logging.getLogger(__name__)


def unfinished_runs(ctx: RunContext) -> list[ActiveRun]:
    """Every export's active run that has no final report yet."""
    found = []
    for export in ctx.repo.list_exports():
        active = read_record(ctx.store, runs.active_run_path(export.name), ActiveRun)
        if active is not None and not lease.finished(ctx, export.name, active.run_id):
            found.append(active)
    return found


def ended_status(instance_status: str | None) -> EndedStatus | None:
    """How to close a run whose orchestration has this runtime status; ``None`` while the
    orchestration may still close it itself, or when there is no such instance."""
    if instance_status is None or instance_status in ACTIVE_INSTANCE_STATUSES:
        return None
    return "terminated" if instance_status == "Terminated" else "abandoned"


def account_of(ctx: RunContext, active: ActiveRun) -> str:
    """The ActiveCampaign account the run was sending to (``""`` before it was prepared)."""
    path = runs.manifest_path(active.request.export, active.run_id)
    manifest = read_record(ctx.store, path, Manifest)
    return manifest.account if manifest is not None else ""


def close(ctx: RunContext, active: ActiveRun, ended: EndedStatus) -> RunReport:
    """Write the report of a run that ended without one (and commit what it recorded)."""
    why = (
        "the run's orchestration was terminated before it finished"
        if ended == "terminated"
        else "the run stopped without finishing (its host stopped or its finalize failed)"
    )
    with telemetry.run_scope(export=active.request.export, run_id=active.run_id, phase="sweep"):
        logger.warning(
            "export %s: closing run %s as %s", active.request.export, active.run_id, ended
        )
        return finalize(ctx, active.request, ended=ended, error=why)
