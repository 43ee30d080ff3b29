"""The Durable orchestration of one export run, and its activities.

::

    export_run (orchestrator)
      prepare_run                      read the snapshot, write chunk files  → PrepareResult
      read_list_members                the list's pre-existing members, before any send
      steps: push chunks ∥ confirm pushed ones, as the account grants     → ChunkSummary each
        (over 50 chunks: one export_run_group sub-orchestration per 50 chunks, one after another)
      finalize_run                     report + state commit                 → report summary

Activities take references (the run request, a chunk's store path) and return small summaries,
never contacts: every input and output is kept in the orchestration history and reloaded on
each replay.

**The API budget.** ActiveCampaign allows 5 requests a second and 100 multi-contact bulk
imports a minute *per account*, shared by every run on it, on whatever instances its activities
land (host.json's ``maxConcurrentActivityFunctions`` is per instance: it cannot enforce that).
Each account has a Durable Entity (``account_budget``, :mod:`exporter.activecampaign.grants`):
at every step a run asks it for its grant — of ``n`` runs sending, an even part of the
account's 5 *workers* and ``1/n`` of its bulk budget — and waits (a durable timer) until the
grants still in use leave room for it. A step runs at most that many activities, so at most
5 requests of the account are in flight at once. Every request of every worker is reserved in
the account's **budget ledger** in the store (:mod:`exporter.storage.budget_ledger`: one
object per account, read and written with its ETag), so the account's workers — this run's
next step, other runs, other instances — see each other's starts and together never exceed 5
requests a second nor 100 bulk imports a minute, in any window, while each may burst within
what the others left (as the command line's processes do through their ledger file). ``share``
and ``rate_share`` still travel in each activity's input (a run's part of the bulk budget,
one request a second), so histories and workers of earlier versions keep working; with the
ledger neither binds a worker (the activities ignore ``rate_share``; ``share`` bounds only an
engine built without a ledger): the account's budget goes to whichever worker asks first, and
the entity's even split of the *workers* keeps runs fair. ``wave_width``
(``EXPORTER_PUSH_WAVE_WIDTH``, at most 5) caps the pushes of one step.

**Pipelining.** A chunk's batches are final only once ActiveCampaign has processed them, which
takes a while after the push; so a step pushes new chunks *and* confirms pushed ones
(:func:`plan_step`): of ``w`` workers, ``w // 2`` confirm and the rest push (5 workers: 3
pushes and 2 confirms polling in the gaps the pushes' bursts leave — enough for the 1.6
batches a second the pushes queue). Without a ledger the pushes would share 96% of the run's
bulk share, the confirms 4% (they only send again a batch whose import failed).
A run with one worker alternates: it confirms what it pushed before it pushes more.

**History.** A million contacts make ~100 chunks of 10,000, ~400 history events: fine for one
orchestration, but the history is reloaded on every replay, so it is bounded anyway: above
``GROUP_SIZE`` (50) chunks, each group of 50 runs in its own sub-orchestration, one after
another (the budget is shared, so groups never overlap). Sub-orchestrations were chosen over
``continue_as_new`` because the run keeps one instance (status, progress and the cancel event
stay where the HTTP API looks) and finalize runs exactly once, in the parent, whose history
grows by two events per group. Between groups the pipeline drains (one wave per 50 chunks).

**Failures.** Activities are retried (``RETRY``): push and confirm are idempotent at the
level of one batch (each bulk request's outcome is recorded before the next request, so a retry
or a replay re-sends nothing ActiveCampaign acknowledged). When an activity still fails, the
run stops pushing — but only once every other activity of its step has ended (finalize never
runs while a push may still send); chunks already pushed are still confirmed; then finalize
runs with the error (the report says ``failed``; contacts not confirmed count as failed, those
that may have been queued are remembered as possibly ours) and the orchestration fails with
:class:`RunFailed`.

**Cancelling.** The external event ``cancel`` stops the run gracefully: the step in flight
finishes, pushed chunks are still confirmed, nothing new is pushed, and finalize runs with
``cancelled=True``. Terminating the instance instead stops it at once: finalize never runs, so
no report is written for that run and state is not committed (the next run sends those contacts
again, which is harmless); activities already running still finish.
"""

from __future__ import annotations

import logging
from collections.abc import Generator, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

import azure.durable_functions as df  # type: ignore[import-untyped, unused-ignore]

from blueprints.register import bind
from blueprints.runtime import get_runtime
from exporter.activecampaign.grants import MAX_WORKERS, AccountGrants, Grant
from exporter.errors import ConfigError, ExporterError
from exporter.run.records import GROUP_SIZE, ChunkSummary, PrepareResult, RunInput, clamp_width
from exporter.storage import runs
from exporter.storage.records import RunRequest

log = logging.getLogger(__name__)

bp = df.Blueprint()

RUN_ORCHESTRATOR = "export_run"
GROUP_ORCHESTRATOR = "export_run_group"
PREPARE_ACTIVITY = "prepare_run"
MEMBERS_ACTIVITY = "read_list_members"
PUSH_ACTIVITY = "push_chunk"
CONFIRM_ACTIVITY = "confirm_chunk"
FINALIZE_ACTIVITY = "finalize_run"
BUDGET_ENTITY = "account_budget"
"""One Durable Entity per ActiveCampaign account (key: the API hostname): the runs sending to it
and their shares (:mod:`exporter.activecampaign.grants`)."""
GRANT_POLL = timedelta(seconds=5)
"""How long a run that may not send yet waits before asking the account's entity again."""
CANCEL_EVENT = "cancel"
"""External event that cancels a run gracefully (raised to the run and its current group)."""

MAX_WAVE_WIDTH = MAX_WORKERS
"""Pushes in one step at most (the account's workers)."""
CONFIRM_BULK_PART = 0.04
"""The confirms' part of a run's bulk share while pushes share the step (resubmissions only):
with 3 pushes and 2 confirms, 32 bulk imports a minute per push and 2 per confirm."""
RATE_SHARE = 1.0 / MAX_WORKERS
"""Every activity's share of the per-second budget (one request a second), still written in
the activities' inputs for workers of earlier versions (a deployment in progress, a rollback);
read by none of this version's: the account's budget ledger does the sharing."""
RETRY_ATTEMPTS = 3
RETRY = df.RetryOptions(
    first_retry_interval_in_milliseconds=15_000, max_number_of_attempts=RETRY_ATTEMPTS
)
"""Transient failures (a worker recycled, storage or ActiveCampaign briefly unavailable)."""
MAX_ERROR_CHARS = 500


class RunFailed(ExporterError):
    """The run failed; finalize has written the report. Ends the orchestration as Failed."""


class StepFailed(ExporterError):
    """An activity failed after its retries; every other activity of its step has ended."""


# --- the orchestration's input and plan (pure, so the orchestrator stays deterministic) -------


def run_input(request: RunRequest, wave_width: int, *, group_size: int = GROUP_SIZE) -> RunInput:
    """The orchestration input for ``request`` (what the starters pass to ``start_new``)."""
    return RunInput(request=request, wave_width=clamp_width(wave_width), group_size=group_size)


def plan_step(
    to_push: Sequence[str], to_confirm: Sequence[str], workers: int, width: int
) -> tuple[list[str], list[str]]:
    """The next step's (pushes, confirms) with ``workers`` activities at most: half the
    workers confirm (at least one) while there is something to confirm, the rest push, up to
    ``width`` pushes; one worker confirms before it pushes again."""
    if workers < 1:
        raise ValueError("a step needs at least one worker")
    confirming = min(len(to_confirm), max(1, workers // 2)) if to_confirm else 0
    pushing = min(len(to_push), width, workers - confirming)
    if not pushing:
        confirming = min(len(to_confirm), workers)
    return list(to_push[:pushing]), list(to_confirm[:confirming])


def shares(bulk: float, pushing: int, confirming: int) -> tuple[float, float]:
    """The (push, confirm) share of the bulk budget of each activity in a step with that many
    of each, out of the run's ``bulk`` share; they add up to ``bulk``."""
    if pushing and confirming:
        return (
            bulk * (1.0 - CONFIRM_BULK_PART) / pushing,
            bulk * CONFIRM_BULK_PART / confirming,
        )
    if pushing:
        return bulk / pushing, 0.0
    return 0.0, (bulk / confirming if confirming else 0.0)


def groups(chunks: Sequence[str], size: int) -> list[list[str]]:
    """``chunks`` in groups of ``size`` (one sub-orchestration each)."""
    return [list(chunks[i : i + size]) for i in range(0, len(chunks), size)]


def failure_text(exc: BaseException) -> str:
    """What an activity failure says, for the report: its first line (Durable appends the
    worker's stack trace after it), bounded."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    return text[:MAX_ERROR_CHARS]


@dataclass
class Progress:
    """The custom status the orchestrations publish (the HTTP status endpoint shows it)."""

    run_id: str
    phase: str = "preparing"
    """``preparing``, ``sending``, ``cancelling``, ``finalizing``, then the report's status."""
    chunks: int = 0
    chunks_pushed: int = 0
    chunks_confirmed: int = 0
    contacts_to_send: int = 0
    sent: int = 0
    rejected: int = 0
    confirmed: int = 0
    failed: int = 0
    group: str | None = None
    """Instance id of the sub-orchestration running now (its progress adds to these counts)."""

    COUNTS = ("chunks_pushed", "chunks_confirmed", "sent", "rejected", "confirmed", "failed")

    def pushed(self, summary: Mapping[str, Any]) -> None:
        s = ChunkSummary.from_dict(summary)
        self.chunks_pushed += 1
        self.sent += s.sent
        self.rejected += s.rejected

    def confirmed_chunk(self, summary: Mapping[str, Any]) -> None:
        s = ChunkSummary.from_dict(summary)
        self.chunks_confirmed += 1
        self.confirmed += s.confirmed
        self.failed += s.failed

    def add(self, other: Mapping[str, Any]) -> None:
        """Add a finished group's counts."""
        for key in self.COUNTS:
            setattr(self, key, getattr(self, key) + int(other.get(key, 0)))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- orchestrators ----------------------------------------------------------------------------

Orchestration = Generator[Any, Any, Any]


def _call(context: Any, activity: str, payload: dict[str, Any]) -> Any:
    return context.call_activity_with_retry(activity, RETRY, payload)


def _send_chunks(
    context: Any, run: RunInput, chunks: Sequence[str], cancel: Any, progress: Progress
) -> Generator[Any, Any, bool]:
    """Push and confirm ``chunks`` in pipelined steps, as the account grants; ``True`` when
    cancelled.

    A failed activity (after its retries) stops new pushes as a cancel does, but only once
    every activity of its step has ended, and the chunks already pushed are still confirmed;
    then the first failure is raised (:class:`StepFailed`)."""
    to_push = list(chunks)
    to_confirm: list[str] = []
    failure: str | None = None
    while to_confirm or (to_push and not (cancel.is_completed or failure)):
        if cancel.is_completed or failure:
            to_push = []
        grant = yield from _account_grant(context, run)
        push, confirm = plan_step(to_push, to_confirm, grant.workers, run.wave_width)
        push_share, confirm_share = shares(grant.bulk, len(push), len(confirm))
        tasks = [_call(context, PUSH_ACTIVITY, _work(run, c, push_share)) for c in push] + [
            _call(context, CONFIRM_ACTIVITY, _work(run, c, confirm_share)) for c in confirm
        ]
        results, error = yield from _drain(context, tasks, cancel, progress)
        failure = failure or error
        to_push = to_push[len(push) :]
        to_confirm = to_confirm[len(confirm) :]
        for chunk, summary in zip(push, results[: len(push)], strict=True):
            if summary is not None:
                progress.pushed(summary)
                to_confirm.append(chunk)
        for summary in results[len(push) :]:
            if summary is not None:
                progress.confirmed_chunk(summary)
        context.set_custom_status(progress.to_dict())
    if failure is not None:
        raise StepFailed(failure)
    return bool(cancel.is_completed)


def _work(run: RunInput, chunk: str, share: float) -> dict[str, Any]:
    """A push or confirm activity's input: the chunk, its bulk share, one request a second."""
    return {
        "request": run.request.to_dict(),
        "chunk": chunk,
        "share": share,
        "rate_share": RATE_SHARE,
    }


def _account_grant(context: Any, run: RunInput) -> Generator[Any, Any, Grant]:
    """This run's grant for its next step from the account's entity, once there is room
    (waiting :data:`GRANT_POLL` between asks). The whole account when the run does not share
    one (an input from before accounts were shared)."""
    if not run.account:
        return Grant(runs=1, ready=True)
    entity = df.EntityId(BUDGET_ENTITY, run.account)
    while True:
        answer = yield context.call_entity(
            entity, "ack", {"run": run.member, "now": context.current_utc_datetime.isoformat()}
        )
        grant = Grant.from_dict(answer)
        if grant.ready:
            return grant
        yield context.create_timer(context.current_utc_datetime + GRANT_POLL)


def _leave_account(context: Any, run: RunInput) -> None:
    """Free this run's share (a signal: nothing to wait for)."""
    if run.account:
        context.signal_entity(df.EntityId(BUDGET_ENTITY, run.account), "leave", run.member)


def _drain(
    context: Any, tasks: Sequence[Any], cancel: Any, progress: Progress
) -> Generator[Any, Any, tuple[list[Any], str | None]]:
    """Wait until *every* task has ended — also after one failed, so that finalize never runs
    while an activity of the step may still send. Returns each task's result (``None`` for a
    failed one) and the first failure's text.

    One ``task_any`` over the tasks still running per completion, not ``task_all``: a
    ``task_all`` ends at its first failure, and its later children would then complete it a
    second time (the SDK raises "completed twice")."""
    running = dict(enumerate(tasks))
    results: list[Any] = [None] * len(tasks)
    error: str | None = None
    while running:
        watched = [*running.values(), *([] if cancel.is_completed else [cancel])]
        done = yield context.task_any(watched)
        if done is cancel:
            progress.phase = "cancelling"
            context.set_custom_status(progress.to_dict())
            continue
        for index, task in list(running.items()):
            if not task.is_completed:
                continue
            del running[index]
            if isinstance(task.result, BaseException):
                error = error or failure_text(task.result)
            else:
                results[index] = task.result
    return results, error


def _send(
    context: Any, run: RunInput, chunks: Sequence[str], cancel: Any, progress: Progress
) -> Generator[Any, Any, bool]:
    """All chunks: inline up to ``group_size``, else one sub-orchestration per group."""
    if len(chunks) <= run.group_size:
        return (yield from _send_chunks(context, run, chunks, cancel, progress))
    for index, group in enumerate(groups(chunks, run.group_size)):
        if cancel.is_completed:
            break
        child_id = group_instance_id(context.instance_id, run.run_id, index)
        progress.group = child_id
        context.set_custom_status(progress.to_dict())
        sub = context.call_sub_orchestrator(
            GROUP_ORCHESTRATOR, {"run": run.to_dict(), "chunks": group}, child_id
        )
        yield context.task_any([sub, cancel])
        totals = yield sub
        progress.add(totals)
        progress.group = None
        context.set_custom_status(progress.to_dict())
    return bool(cancel.is_completed)


def group_instance_id(parent: str, run_id: str, index: int) -> str:
    """The sub-orchestration of group ``index`` (the run id keeps a rerun's groups apart)."""
    return f"{parent}-{run_id}-g{index:04d}"


@bind(bp.orchestration_trigger(context_name="context", orchestration=RUN_ORCHESTRATOR))
def export_run(context: Any) -> Orchestration:
    """One export run: prepare, send in waves, finalize (see the module docstring)."""
    run = RunInput.from_dict(context.get_input(expected_type=dict))
    request = run.request.to_dict()  # what the activities are given
    progress = Progress(run_id=run.run_id)
    context.set_custom_status(progress.to_dict())
    cancel = context.wait_for_external_event(CANCEL_EVENT)
    error: str | None = None
    cancelled = False

    prepare = _call(context, PREPARE_ACTIVITY, {"request": request})
    yield context.task_any([prepare, cancel])
    prepared: PrepareResult | None
    try:
        prepared = PrepareResult.from_dict((yield prepare))
    except Exception as exc:  # noqa: BLE001 - Durable raises every activity failure as Exception
        error, prepared = failure_text(exc), None

    # A guarded run was finalized by prepare; a dry run only plans: neither sends anything.
    if prepared is not None and not (prepared.guarded or prepared.dry_run):
        chunks = list(prepared.chunks)
        progress.chunks = len(chunks)
        progress.contacts_to_send = prepared.contacts_to_send
        progress.phase = "sending"
        context.set_custom_status(progress.to_dict())
        run = run.model_copy(update={"account": prepared.account, "member": context.instance_id})
        try:
            grant = yield from _account_grant(context, run)
            yield _call(
                context,
                MEMBERS_ACTIVITY,
                {"request": request, "share": grant.bulk, "rate_share": RATE_SHARE},
            )
            cancelled = yield from _send(context, run, chunks, cancel, progress)
            yield _call(context, MEMBERS_ACTIVITY, {"request": request, "after_send": True})
        except Exception as exc:  # noqa: BLE001 - as above
            error = failure_text(exc)
        _leave_account(context, run)
    cancelled = cancelled or bool(cancel.is_completed)

    progress.phase = "finalizing"
    context.set_custom_status(progress.to_dict())
    summary = yield _call(
        context,
        FINALIZE_ACTIVITY,
        {"request": request, "cancelled": cancelled and error is None, "error": error},
    )
    progress.phase = str(summary.get("status", "finished"))
    context.set_custom_status(progress.to_dict())
    if error is None and summary.get("status") == "failed":
        error = str(summary.get("error") or "see the run report")
    if error is not None:
        raise RunFailed(f"export run {run.run_id} failed: {error}")
    return summary


@bind(bp.orchestration_trigger(context_name="context", orchestration=GROUP_ORCHESTRATOR))
def export_run_group(context: Any) -> Orchestration:
    """Push and confirm one group of chunks; returns the group's counts."""
    data = context.get_input(expected_type=dict)
    run = RunInput.from_dict(data["run"])
    progress = Progress(run_id=run.run_id, phase="sending", chunks=len(data["chunks"]))
    context.set_custom_status(progress.to_dict())
    cancel = context.wait_for_external_event(CANCEL_EVENT)
    cancelled = yield from _send_chunks(context, run, data["chunks"], cancel, progress)
    return {**progress.to_dict(), "cancelled": cancelled}


# --- activities: thin adapters over the engine ----------------------------------------------


def _request(payload: Mapping[str, Any]) -> RunRequest:
    """The activity's run request; only snapshots in the store are read by the app (a
    ``location: "local"`` path would be read from the worker's own disk)."""
    request = RunRequest.from_dict(payload["request"])
    if request.snapshot.location != runs.STORE:
        raise ConfigError("the Functions app reads only snapshots in the store", field="snapshot")
    return request


def _share(payload: Mapping[str, Any]) -> float:
    """The activity's bulk share (never 0: a limiter needs some budget to exist). An input's
    ``rate_share`` (:data:`RATE_SHARE`) is accepted and ignored."""
    return max(float(payload.get("share", 1.0)), 1e-3)


@bind(bp.activity_trigger(input_name="payload", activity=PREPARE_ACTIVITY))
def prepare_run(payload: dict[str, Any]) -> dict[str, Any]:
    """Read the snapshot and write the chunk files; returns the PrepareResult (references).

    A tripped shrink guard is an outcome, not a failure to retry: the engine has written the
    ``guarded`` report and the result says ``guarded``."""
    return get_runtime().engine.prepare(_request(payload), raise_guard=False).to_dict()


@bind(bp.activity_trigger(input_name="payload", activity=MEMBERS_ACTIVITY))
def read_list_members(payload: dict[str, Any]) -> dict[str, Any]:
    """Record the list's members this export did not subscribe (once per run)."""
    engine = get_runtime().engine
    if payload.get("after_send"):  # move the mark past the contacts the run created
        return {"mark": engine.mark_list_sent(_request(payload))}
    count = engine.read_list_members(_request(payload), share=_share(payload))
    return {"members": count}


# --- the account's budget entity ------------------------------------------------------------


@bind(bp.entity_trigger(context_name="context", entity_name=BUDGET_ENTITY))
def account_budget(context: Any) -> None:
    """The runs sending to one account and their shares (:class:`AccountGrants`): ``ack``
    (``{"run", "now"}`` → ``{"runs", "ready"}``) at every step, ``leave`` (the run's name)."""
    grants = AccountGrants.from_dict(context.get_state(lambda: {}))
    operation = context.operation_name
    data = context.get_input()
    if operation in ("ack", "join"):
        now = datetime.fromisoformat(str(data["now"]))
        context.set_result(grants.ack(str(data["run"]), now).to_dict())
    elif operation == "leave":
        grants.leave(str(data))
    else:
        raise ConfigError(f"unknown operation {operation!r}", field="operation")
    context.set_state(grants.to_dict())


@bind(bp.activity_trigger(input_name="payload", activity=PUSH_ACTIVITY))
def push_chunk(payload: dict[str, Any]) -> dict[str, Any]:
    """Send one chunk's batches within ``share`` of the budget (idempotent)."""
    engine = get_runtime().engine
    summary = engine.push_chunk(_request(payload), payload["chunk"], share=_share(payload))
    return summary.to_dict()


@bind(bp.activity_trigger(input_name="payload", activity=CONFIRM_ACTIVITY))
def confirm_chunk(payload: dict[str, Any]) -> dict[str, Any]:
    """Poll until every batch of one chunk is final (idempotent)."""
    engine = get_runtime().engine
    summary = engine.confirm_chunk(_request(payload), payload["chunk"], share=_share(payload))
    return summary.to_dict()


@bind(bp.activity_trigger(input_name="payload", activity=FINALIZE_ACTIVITY))
def finalize_run(payload: dict[str, Any]) -> dict[str, Any]:
    """Write the report and commit state; returns the report without its per-batch records."""
    report = get_runtime().engine.finalize(
        _request(payload), cancelled=bool(payload.get("cancelled")), error=payload.get("error")
    )
    summary = report.to_dict()
    summary.pop("batches", None)
    return summary
