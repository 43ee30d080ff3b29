"""The Durable orchestration of one export run, and its activities.

::

    export_run (orchestrator)
      prepare_run                      read the snapshot, write chunk files  → PrepareResult
      steps: push wave k+1 ∥ confirm wave k                                  → ChunkSummary each
        (over 50 chunks: one export_run_group sub-orchestration per 50 chunks, one after another)
      finalize_run                     report + state commit                 → report summary

Activities take references (the run request, a chunk's store path) and return small summaries,
never contacts: every input and output is kept in the orchestration history and reloaded on
each replay.

**The API budget.** ActiveCampaign allows 5 requests a second and 100 multi-contact bulk
imports a minute *per account*. host.json's ``maxConcurrentActivityFunctions`` is per worker
and the app scales out to several workers, so it cannot enforce an account budget. The
orchestrator does: it never has more than ``wave_width`` push activities (setting
``EXPORTER_PUSH_WAVE_WIDTH``, at most 5) in flight, and it hands each running activity a
``share`` of the budget so that the shares of everything in flight add up to at most 1. Each
activity's client enforces its share with sliding windows (``floor(limit * share)`` per window),
so the account's budget holds whichever workers the activities land on.

**Pipelining.** A chunk's batches are final only once ActiveCampaign has processed them, which
takes a while after the push; so while wave k+1 is pushed, wave k is confirmed. Slot *i* of the
``W`` slots owns ``1/W`` of the budget and runs the push of chunk (k+1, i) *and* the confirm of
chunk (k, i) within it: the push gets 3/4 of the slot, the confirm 1/4. Why 3:1: a chunk of 40
batches needs 40 bulk requests, and bulk is budgeted at 100/min (1.67/s), while confirming it
takes about one ``import/info`` poll per batch from the 5/s budget — three times the rate. With
the push at 3/4 and the confirm at 1/4 of a slot both take about as long, so neither half of the
pipeline idles. Sum over one step: ``W * (3/4 + 1/4) / W = 1``. A step with only pushes (the
first) or only confirms (the last) gives each activity the whole slot, ``1/W``. (With W = 4 that
is 18 bulk requests a minute per push, 72 in all, plus at most 6 a minute per confirm for
resubmitting failed batches: 96 ≤ 100.)

**History.** A million contacts make ~100 chunks of 10,000, ~400 history events: fine for one
orchestration, but the history is reloaded on every replay, so it is bounded anyway: above
``GROUP_SIZE`` (50) chunks, each group of 50 runs in its own sub-orchestration, one after
another (the budget is shared, so groups never overlap). Sub-orchestrations were chosen over
``continue_as_new`` because the run keeps one instance (status, progress and the cancel event
stay where the HTTP API looks) and finalize runs exactly once, in the parent, whose history
grows by two events per group. Between groups the pipeline drains (one wave per 50 chunks).

**Failures.** Activities are retried (``RETRY``): push and confirm are idempotent (a chunk's
sent/confirmed record is reused), so a retry never sends a batch twice. When an activity still
fails, the run stops scheduling work, finalize runs with the error (the report says ``failed``;
contacts not confirmed count as failed and are sent again next time), and the orchestration
then fails with :class:`RunFailed`.

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
from typing import Any

import azure.durable_functions as df  # type: ignore[import-untyped, unused-ignore]

from blueprints.register import bind
from blueprints.runtime import get_runtime
from exporter.errors import ConfigError, ExporterError
from exporter.run.records import ChunkSummary, PrepareResult
from exporter.storage import runs
from exporter.storage.records import RunRequest

log = logging.getLogger(__name__)

bp = df.Blueprint()

RUN_ORCHESTRATOR = "export_run"
GROUP_ORCHESTRATOR = "export_run_group"
PREPARE_ACTIVITY = "prepare_run"
PUSH_ACTIVITY = "push_chunk"
CONFIRM_ACTIVITY = "confirm_chunk"
FINALIZE_ACTIVITY = "finalize_run"
CANCEL_EVENT = "cancel"
"""External event that cancels a run gracefully (raised to the run and its current group)."""

GROUP_SIZE = 50
"""Chunks per sub-orchestration (50 chunks: ~200 history events, 500,000 contacts)."""
MAX_WAVE_WIDTH = 5
"""The account allows 5 requests a second: more concurrent workers than that would each get
less than one request per window, and their windows could line up."""
PUSH_PART = 0.75
"""The push's part of a slot while a confirm shares it (see the module docstring)."""
RETRY_ATTEMPTS = 3
RETRY = df.RetryOptions(
    first_retry_interval_in_milliseconds=15_000, max_number_of_attempts=RETRY_ATTEMPTS
)
"""Transient failures (a worker recycled, storage or ActiveCampaign briefly unavailable)."""
MAX_ERROR_CHARS = 500


class RunFailed(ExporterError):
    """The run failed; finalize has written the report. Ends the orchestration as Failed."""


# --- the orchestration's input and plan (pure, so the orchestrator stays deterministic) -------


def clamp_width(width: int) -> int:
    """The wave width actually used: between 1 and :data:`MAX_WAVE_WIDTH`."""
    return max(1, min(MAX_WAVE_WIDTH, int(width)))


@dataclass(frozen=True)
class RunInput:
    """The orchestration's input. The fan-out shape is fixed when the run starts, so changing
    the setting never changes how a running orchestration replays."""

    request: dict[str, Any]
    """The :class:`~exporter.storage.records.RunRequest` as a dict (references only, a few hundred
    bytes)."""
    wave_width: int = 4
    """Push activities in flight at most (``EXPORTER_PUSH_WAVE_WIDTH``, clamped to 1..5)."""
    group_size: int = GROUP_SIZE
    """Chunks per sub-orchestration once a run has more than this many."""

    @property
    def export(self) -> str:
        return str(self.request["export"])

    @property
    def run_id(self) -> str:
        return str(self.request["run_id"])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunInput:
        request = data.get("request")
        if not isinstance(request, Mapping) or "export" not in request or "run_id" not in request:
            raise ConfigError("the orchestration input has no run request", field="request")
        group_size = int(data.get("group_size", GROUP_SIZE))
        if group_size < 1:
            raise ConfigError("must be at least 1", field="group_size")
        return cls(
            request=dict(request),
            wave_width=clamp_width(int(data.get("wave_width", 4))),
            group_size=group_size,
        )


def run_input(request: RunRequest, wave_width: int, *, group_size: int = GROUP_SIZE) -> RunInput:
    """The orchestration input for ``request`` (what the starters pass to ``start_new``)."""
    return RunInput(request.to_dict(), clamp_width(wave_width), group_size)


def waves(chunks: Sequence[str], width: int) -> list[list[str]]:
    """``chunks`` in waves of at most ``width``, in order."""
    return [list(chunks[i : i + width]) for i in range(0, len(chunks), width)]


def steps(chunks: Sequence[str], width: int) -> list[tuple[list[str], list[str]]]:
    """The pipeline: step k pushes wave k and confirms wave k-1 (the last step only confirms)."""
    planned = waves(chunks, width)
    return [
        (planned[k] if k < len(planned) else [], planned[k - 1] if k else [])
        for k in range(len(planned) + 1 if planned else 0)
    ]


def shares(width: int, pushing: int, confirming: int) -> tuple[float, float]:
    """The (push, confirm) share of each activity in a step with that many of each.

    Their sum over the step never exceeds 1: ``pushing, confirming <= width``.
    """
    if pushing > width or confirming > width:
        raise ValueError("a step never runs more than `width` activities of a kind")
    slot = 1.0 / width
    if pushing and confirming:
        return slot * PUSH_PART, slot * (1.0 - PUSH_PART)
    return slot, slot


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
    """Push and confirm ``chunks`` in pipelined waves; ``True`` when cancelled."""
    pushed: set[str] = set()
    for to_push, to_confirm in steps(chunks, run.wave_width):
        push = [] if cancel.is_completed else to_push
        confirm = [c for c in to_confirm if c in pushed]
        if not push and not confirm:
            continue
        push_share, confirm_share = shares(run.wave_width, len(push), len(confirm))
        tasks = [
            _call(context, PUSH_ACTIVITY, {"request": run.request, "chunk": c, "share": push_share})
            for c in push
        ] + [
            _call(
                context,
                CONFIRM_ACTIVITY,
                {"request": run.request, "chunk": c, "share": confirm_share},
            )
            for c in confirm
        ]
        step = context.task_all(tasks)
        if not cancel.is_completed:
            yield context.task_any([step, cancel])
            if cancel.is_completed and not step.is_completed:
                progress.phase = "cancelling"
                context.set_custom_status(progress.to_dict())
        # Wait for the whole step even when cancelled: its pushes must be confirmed.
        results = yield step
        for summary in results[: len(push)]:
            progress.pushed(summary)
        for summary in results[len(push) :]:
            progress.confirmed_chunk(summary)
        pushed.update(push)
        context.set_custom_status(progress.to_dict())
    return bool(cancel.is_completed)


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
    progress = Progress(run_id=run.run_id)
    context.set_custom_status(progress.to_dict())
    cancel = context.wait_for_external_event(CANCEL_EVENT)
    error: str | None = None
    cancelled = False

    prepare = _call(context, PREPARE_ACTIVITY, {"request": run.request})
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
        try:
            cancelled = yield from _send(context, run, chunks, cancel, progress)
        except Exception as exc:  # noqa: BLE001 - as above
            error = failure_text(exc)
    cancelled = cancelled or bool(cancel.is_completed)

    progress.phase = "finalizing"
    context.set_custom_status(progress.to_dict())
    summary = yield _call(
        context,
        FINALIZE_ACTIVITY,
        {"request": run.request, "cancelled": cancelled and error is None, "error": error},
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
    if runs.snapshot_from_dict(request.snapshot)[1] != runs.STORE:
        raise ConfigError("the Functions app reads only snapshots in the store", field="snapshot")
    return request


@bind(bp.activity_trigger(input_name="payload", activity=PREPARE_ACTIVITY))
def prepare_run(payload: dict[str, Any]) -> dict[str, Any]:
    """Read the snapshot and write the chunk files; returns the PrepareResult (references).

    A tripped shrink guard is an outcome, not a failure to retry: the engine has written the
    ``guarded`` report and the result says ``guarded``."""
    return get_runtime().engine.prepare(_request(payload), raise_guard=False).to_dict()


@bind(bp.activity_trigger(input_name="payload", activity=PUSH_ACTIVITY))
def push_chunk(payload: dict[str, Any]) -> dict[str, Any]:
    """Send one chunk's batches within ``share`` of the budget (idempotent)."""
    engine = get_runtime().engine
    summary = engine.push_chunk(_request(payload), payload["chunk"], share=payload["share"])
    return summary.to_dict()


@bind(bp.activity_trigger(input_name="payload", activity=CONFIRM_ACTIVITY))
def confirm_chunk(payload: dict[str, Any]) -> dict[str, Any]:
    """Poll until every batch of one chunk is final (idempotent)."""
    engine = get_runtime().engine
    summary = engine.confirm_chunk(_request(payload), payload["chunk"], share=payload["share"])
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
