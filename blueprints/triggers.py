"""What starts export runs — a timer, a new snapshot blob, a person — and the run endpoints.

=====================================================  ==========================================
timer ``%EXPORTER_TIMER_SCHEDULE%``                    every export that is due (``due_runs``)
Event Grid ``BlobCreated`` in ``snapshots``       every export reading that snapshot (name only)
``POST /api/exports/{name}/runs``                      start a run now (202 with status links)
``GET  /api/exports/{name}/runs``                      recent runs (their reports)
``GET  /api/exports/{name}/runs/{instance_id}``        status, progress, and the report when done
``POST /api/exports/{name}/runs/{instance_id}/cancel`` cancel (``?force=true``: terminate)
=====================================================  ==========================================

**One run per snapshot.** A run's orchestration instance id is derived from the export and the
snapshot's identity (:func:`exporter.run.instances.instance_id`), so the timer, the blob
trigger and a person pressing "run" all name the same instance for the same snapshot. Before
starting, the instance's status is read: while it is live
(:data:`~exporter.run.instances.ACTIVE_INSTANCE_STATUSES`) nothing new is started (HTTP
answers 409; the timer and blob trigger log it), and if ``start_new`` loses a race anyway its
error is turned into the same answer. A Completed instance is not run again by the timer or
blob trigger (Event Grid delivers at least once); a person asking explicitly runs it again.

The Durable client cannot work without the Functions host, so every function here takes it as
a parameter: the registered function receives the real client, tests pass a fake.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit

import azure.durable_functions as df
import azure.functions as func

from blueprints.auth import caller_from_request, require_trusted_principal
from blueprints.http_util import (
    error_response,
    json_response,
    query_flag,
    read_json_body,
    route_name,
)
from blueprints.orchestration import (
    BUDGET_ENTITY,
    CANCEL_EVENT,
    RUN_ORCHESTRATOR,
    run_input,
)
from blueprints.register import bind, http_function
from blueprints.runtime import Runtime, get_runtime
from exporter.errors import ConfigError, ExporterError, NotFoundError, RunConflict
from exporter.management.config import SNAPSHOTS
from exporter.management.permissions import Caller
from exporter.masking import mask_email
from exporter.reading.discovery import blob_snapshot_path
from exporter.run import sweep
from exporter.run.instances import (
    ACTIVE_INSTANCE_STATUSES,
    FINISHED_INSTANCE_STATUSES,
    instance_id,
)
from exporter.run.records import RunInput
from exporter.run.report import RunReport
from exporter.run.run_body import parse_run_body, resolve_in_segment
from exporter.settings import SCHEDULE
from exporter.storage import runs
from exporter.storage.records import ActiveRun, RunRequest, read_record

log = logging.getLogger(__name__)

bp = df.Blueprint()

SNAPSHOT_CONTAINER = SNAPSHOTS.rstrip("/")
"""The container whose ``BlobCreated`` events start runs (the Event Grid subscription filters on
it)."""
MAX_RUN_BODY_BYTES = 4_096
"""A run request is four small fields."""
DEFAULT_LIST_LIMIT = 20
MAX_LIST_LIMIT = 100


# --- starting runs (shared by all three kinds of trigger) -------------------------------------


@dataclass(frozen=True)
class Started:
    """What :func:`start_run` did."""

    instance_id: str
    started: bool
    """False when the instance had completed and ``rerun_completed`` was not given."""
    previous_status: str | None
    """The instance's runtime status before (``None``: it did not exist)."""


def status_name(status: Any) -> str | None:
    """A Durable status's runtime status as a string (``None``: no such instance)."""
    if status is None or not status:
        return None
    runtime = getattr(status, "runtime_status", None)
    if runtime is None:
        return None
    return str(getattr(runtime, "value", runtime))


async def start_run(
    client: Any, request: RunRequest, wave_width: int, *, rerun_completed: bool
) -> Started:
    """Start the orchestration of ``request`` under its deterministic instance id.

    Raises :class:`RunConflict` while that instance is Pending or Running.
    """
    iid = instance_id(request.export, request.snapshot_identity)
    before = status_name(await client.get_status(iid))
    if before in ACTIVE_INSTANCE_STATUSES:
        raise _already_running(request.export, iid, before)
    if before == "Completed" and not rerun_completed:
        return Started(iid, False, before)
    try:
        await client.start_new(RUN_ORCHESTRATOR, iid, run_input(request, wave_width).to_dict())
    except Exception:
        # The Durable client raises a bare Exception; if the instance was started by someone
        # else between our status check and this call, say so like the check would have.
        now = status_name(await client.get_status(iid))
        if now in ACTIVE_INSTANCE_STATUSES:
            raise _already_running(request.export, iid, now) from None
        raise
    log.info(
        "started run %s of export %s as instance %s (requested by %s)",
        request.run_id,
        request.export,
        iid,
        _who(request.requested_by),
    )
    return Started(iid, True, before)


def _already_running(export: str, iid: str, status: str | None) -> RunConflict:
    return RunConflict(
        f"export {export!r} is already running this snapshot (instance {iid} is {status})"
    )


def _who(requested_by: str) -> str:
    return mask_email(requested_by) if "@" in requested_by else requested_by


async def _start_all(client: Any, runtime: Runtime, requests: list[RunRequest], source: str) -> int:
    """Start each request, logging (not raising) runs already in progress. Every request is
    tried; the first unexpected error is raised afterwards so the invocation shows as failed
    (retrying it is safe: instance ids make starts idempotent)."""
    started = 0
    first_error: Exception | None = None
    for request in requests:
        try:
            outcome = await start_run(
                client, request, runtime.settings.push_wave_width, rerun_completed=False
            )
        except RunConflict as exc:
            log.info("%s: %s; not starting it again", source, exc)
            continue
        except Exception as exc:  # noqa: BLE001 - one export must not keep the others from running
            log.error(
                "%s: could not start export %s: %s", source, request.export, type(exc).__name__
            )
            first_error = first_error or exc
            continue
        if outcome.started:
            started += 1
        else:
            log.info(
                "%s: export %s already exported this snapshot (instance %s)",
                source,
                request.export,
                outcome.instance_id,
            )
    if first_error is not None:
        raise first_error
    return started


# --- timer and blob trigger -------------------------------------------------------------------


@bind(
    bp.timer_trigger(schedule=f"%{SCHEDULE}%", arg_name="timer", run_on_startup=False),
    bp.durable_client_input(client_name="client"),
)
async def export_timer(timer: func.TimerRequest, client: Any) -> None:
    """Start every export whose schedule is due and whose segment has a new snapshot."""
    runtime = get_runtime()
    if timer.past_due:
        log.warning("the export timer is late; starting whatever is due now")
    await _close_ended_runs(client, runtime)
    now = datetime.now(UTC)
    requests = await asyncio.to_thread(runtime.engine.due_runs, now)
    started = await _start_all(client, runtime, requests, "timer")
    log.info("timer: %d export(s) due, %d started", len(requests), started)


async def _close_ended_runs(client: Any, runtime: Runtime) -> None:
    """The sweep (:mod:`exporter.run.sweep`): every unfinished run whose orchestration has
    ended gets its report now, so none shows ``running`` past one tick after it ended."""
    engine = runtime.engine
    for active in await asyncio.to_thread(sweep.unfinished_runs, engine):
        iid = instance_id(active.request.export, active.request.snapshot_identity)
        ended = sweep.ended_status(status_name(await client.get_status(iid)))
        if ended is None:
            continue
        try:
            await asyncio.to_thread(sweep.close, engine, active, ended)
        except ExporterError as exc:  # one export's problem must not stop the timer
            log.error("timer: could not close run %s: %s", active.run_id, type(exc).__name__)
            continue
        account = await asyncio.to_thread(sweep.account_of, engine, active)
        if account:  # it never left the account's entity: free its share now
            await client.signal_entity(df.EntityId(BUDGET_ENTITY, account), "leave", iid)


BLOB_CREATED = "Microsoft.Storage.BlobCreated"
_BLOB_SUBJECT = re.compile(r"/blobServices/default/containers/([^/]+)/blobs/(.+)")


def blob_name_of_event(event: func.EventGridEvent) -> str | None:
    """``<container>/<blob path>`` of a ``BlobCreated`` event (from its subject), else ``None``.

    The trigger is an Event Grid trigger, not a blob trigger: a blob trigger's binding hands the
    function the blob's *content* (the host may download a whole snapshot for it), while only
    its name is needed; the event carries the name and nothing else."""
    if event.event_type != BLOB_CREATED:
        return None
    match = _BLOB_SUBJECT.fullmatch(event.subject or "")
    return None if match is None else f"{match.group(1)}/{match.group(2)}"


@bind(
    bp.event_grid_trigger(arg_name="event"),
    bp.durable_client_input(client_name="client"),
)
async def snapshot_blob_trigger(event: func.EventGridEvent, client: Any) -> None:
    """A snapshot blob arrived (Event Grid ``BlobCreated``): start every enabled export whose
    segment contains it. Only the blob's name is used; the run reads the snapshot itself."""
    runtime = get_runtime()
    name = blob_name_of_event(event)
    if name is None:
        log.info("event %s (%s) is not a new blob: ignored", event.id, event.event_type)
        return
    prefix = str(getattr(runtime.store, "container_prefix", ""))
    path = blob_snapshot_path(name, prefix)
    requests = await asyncio.to_thread(runtime.engine.runs_for_blob, path)
    if not requests:
        log.info("blob %s: no enabled export needs it (or it was exported already)", path)
        return
    started = await _start_all(client, runtime, requests, f"blob {path}")
    log.info("blob %s: %d run(s) to start, %d started", path, len(requests), started)


# --- HTTP ---------------------------------------------------------------------------------------


def _run_body(req: func.HttpRequest) -> dict[str, Any]:
    """The JSON body, or ``{}`` when there is none (all fields are optional)."""
    if not (req.get_body() or b"").strip():
        return {}
    return read_json_body(req, max_bytes=MAX_RUN_BODY_BYTES)


def _origin(req: func.HttpRequest) -> str:
    parts = urlsplit(req.url)
    return f"{parts.scheme}://{parts.netloc}"


def _runtime_and_caller(req: func.HttpRequest) -> tuple[Runtime, Caller]:
    """The worker's runtime and who is calling (401 unless the principal can be believed)."""
    runtime = get_runtime()
    require_trusted_principal(runtime.settings)
    return runtime, caller_from_request(req)


def run_url(req: func.HttpRequest, export: str, iid: str) -> str:
    """Our own status URL of a run (no function key in it: callers add theirs)."""
    return f"{_origin(req)}/api/exports/{quote(export, safe='')}/runs/{quote(iid, safe='')}"


def _conflict_response(req: func.HttpRequest, export: str, exc: RunConflict) -> func.HttpResponse:
    """409 naming the run in progress and where to follow it (one run per export at a time)."""
    response = error_response(exc)
    if exc.run_id is None:
        return response
    body = json.loads(response.get_body())
    body["run_id"] = exc.run_id
    active = read_record(get_runtime().store, runs.active_run_path(export), ActiveRun)
    if active is not None and active.run_id == exc.run_id:
        body["status_url"] = run_url(req, export, instance_id(export, active.snapshot_identity))
    return json_response(body, 409)


@http_function(bp, "exports/{name}/runs", "POST", durable_client=True)
async def start_export_run(req: func.HttpRequest, client: Any) -> func.HttpResponse:
    """``POST /api/exports/{name}/runs``: start a run now; 202 with where to follow it."""
    try:
        runtime, caller = _runtime_and_caller(req)
        name = route_name(req)
        run_body = parse_run_body(_run_body(req))
        options, snapshot_at = run_body.options(), run_body.snapshot
        export, _connection = await asyncio.to_thread(
            runtime.management.authorize_run, caller, name
        )
        snapshot = None
        if snapshot_at is not None:
            snapshot = await asyncio.to_thread(
                resolve_in_segment, export, snapshot_at, runtime.engine.store_snapshot
            )
        request = await asyncio.to_thread(
            runtime.engine.new_run,
            name,
            snapshot=snapshot,
            options=options,
            requested_by=f"http:{caller.principal}",
        )
        outcome = await start_run(
            client, request, runtime.settings.push_wave_width, rerun_completed=True
        )
    except RunConflict as exc:
        return _conflict_response(req, name, exc)
    except Exception as exc:  # noqa: BLE001 - every failure becomes a JSON answer
        return error_response(exc)
    own = run_url(req, name, outcome.instance_id)
    body: dict[str, Any] = {
        "export": name,
        "instance_id": outcome.instance_id,
        "run_id": request.run_id,
        "snapshot": request.snapshot.path,
        "options": options.to_dict(),
        "status_url": own,
        "cancel_url": f"{own}/cancel",
    }
    # No Durable management links (statusQueryGetUri & co.): they carry the extension's system
    # key, which manages every instance of the app. status_url and cancel_url do their work.
    return json_response(body, 202, headers={"Location": own, "Retry-After": "10"})


def _report_view(report: RunReport) -> dict[str, Any]:
    view = report.to_dict()
    view.pop("batches", None)  # thousands of records for a large run; report.json has them
    return view


async def _run_status(
    client: Any, runtime: Runtime, name: str, iid: str
) -> tuple[dict[str, Any], RunInput]:
    status = await client.get_status(iid, show_input=True)
    current = status_name(status)
    run = RunInput.of_instance(status.input_) if current is not None else None
    # Another export's instance (or a management instance) is "not found" here, not a leak.
    if current is None or run is None or run.export != name:
        raise NotFoundError(f"export {name!r} has no run {iid}")
    progress = status.custom_status if isinstance(status.custom_status, dict) else {}
    progress = dict(progress)
    group = progress.get("group")
    if isinstance(group, str) and current in ACTIVE_INSTANCE_STATUSES:
        progress = await _with_group_progress(client, progress, group)
    view: dict[str, Any] = {
        "export": name,
        "instance_id": iid,
        "run_id": run.run_id,
        "runtime_status": current,
        "created": _iso(getattr(status, "created_time", None)),
        "last_updated": _iso(getattr(status, "last_updated_time", None)),
        "requested_by": run.request.requested_by,
        "progress": progress,
        "report": None,
    }
    if current in FINISHED_INSTANCE_STATUSES:
        try:
            report = await asyncio.to_thread(runtime.engine.get_run, name, run.run_id)
        except NotFoundError:
            report = None  # terminated before finalize: no report was written
        view["report"] = None if report is None else _report_view(report)
        if current == "Failed" and isinstance(status.output, str):
            view["error"] = status.output.splitlines()[0][:500] if status.output else None
    return view, run


async def _with_group_progress(client: Any, progress: dict[str, Any], group: str) -> dict[str, Any]:
    """The run's counts plus those of the sub-orchestration sending now."""
    try:
        sub = await client.get_status(group)
    except Exception:  # noqa: BLE001 - progress is best effort; the run's own counts stand
        return progress
    counts = sub.custom_status if sub and isinstance(sub.custom_status, dict) else {}
    merged = dict(progress)
    for key in ("chunks_pushed", "chunks_confirmed", "sent", "rejected", "confirmed", "failed"):
        merged[key] = int(progress.get(key, 0)) + int(counts.get(key, 0))
    return merged


def _iso(value: Any) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else None


@http_function(bp, "exports/{name}/runs/{instance_id}", "GET", durable_client=True)
async def get_export_run(req: func.HttpRequest, client: Any) -> func.HttpResponse:
    """``GET /api/exports/{name}/runs/{instance_id}``: status, progress, report when done."""
    try:
        runtime, caller = _runtime_and_caller(req)
        name = route_name(req)
        iid = route_name(req, "instance_id")
        await asyncio.to_thread(runtime.management.get_export, caller, name)
        view, _run = await _run_status(client, runtime, name, iid)
    except Exception as exc:  # noqa: BLE001 - every failure becomes a JSON answer
        return error_response(exc)
    return json_response(view)


@http_function(bp, "exports/{name}/runs/{instance_id}/cancel", "POST", durable_client=True)
async def cancel_export_run(req: func.HttpRequest, client: Any) -> func.HttpResponse:
    """``POST .../runs/{instance_id}/cancel``: stop after the wave in flight, confirm what was
    pushed and write the report (``cancelled``); ``?force=true`` terminates at once instead
    (no report, nothing committed)."""
    try:
        runtime, caller = _runtime_and_caller(req)
        name = route_name(req)
        iid = route_name(req, "instance_id")
        force = query_flag(req, "force")
        # Cancelling needs the same permission as running; a disabled export's run can still
        # be cancelled (authorize_run would refuse it for being disabled).
        await asyncio.to_thread(runtime.management.get_export, caller, name)
        view, _run = await _run_status(client, runtime, name, iid)
        if view["runtime_status"] not in ACTIVE_INSTANCE_STATUSES:
            raise RunConflict(f"run {iid} is not in progress ({view['runtime_status']})")
        who = _who(caller.principal)
        if force:
            await client.terminate(iid, f"terminated by {who}")
            group = view["progress"].get("group")
            if isinstance(group, str):
                await _quietly(client.terminate(group, f"terminated by {who}"))
        else:
            await client.raise_event(iid, CANCEL_EVENT, {"by": who})
            group = view["progress"].get("group")
            if isinstance(group, str):
                await _quietly(client.raise_event(group, CANCEL_EVENT, {"by": who}))
    except Exception as exc:  # noqa: BLE001 - every failure becomes a JSON answer
        return error_response(exc)
    log.info("run %s of export %s: %s by %s", iid, name, "terminated" if force else "cancel", who)
    return json_response(
        {
            "export": name,
            "instance_id": iid,
            "cancel": "terminated" if force else "requested",
            "status_url": run_url(req, name, iid),
        },
        202,
    )


async def _quietly(call: Any) -> None:
    """The current group may have finished meanwhile: its instance then refuses the event."""
    try:
        await call
    except Exception as exc:  # noqa: BLE001 - the SDK raises bare Exception
        log.info("the run's current group did not take the cancel: %s", type(exc).__name__)


def _limit(req: func.HttpRequest) -> int:
    raw = req.params.get("limit")
    if raw is None:
        return DEFAULT_LIST_LIMIT
    if not raw.strip().isdigit() or not 1 <= int(raw) <= MAX_LIST_LIMIT:
        raise ConfigError(f"must be a number from 1 to {MAX_LIST_LIMIT}", field="limit")
    return int(raw)


@http_function(bp, "exports/{name}/runs", "GET")
def list_export_runs(req: func.HttpRequest) -> func.HttpResponse:
    """``GET /api/exports/{name}/runs``: the export's recent runs, newest first."""
    try:
        runtime, caller = _runtime_and_caller(req)
        name = route_name(req)
        limit = _limit(req)
        runtime.management.get_export(caller, name)
        reports = runtime.engine.list_runs(name, limit=limit)
    except Exception as exc:  # noqa: BLE001 - every failure becomes a JSON answer
        return error_response(exc)
    return json_response({"export": name, "runs": [_report_view(r) for r in reports]})
