"""Plays the Durable Functions host's part for tests: keeps an orchestration's history, runs the
orchestrator over it through the SDK's own replay engine, and records what it schedules.

Each :meth:`DurableHost.replay` builds the context JSON the host would send (``history`` of
``OrchestratorStarted``, ``ExecutionStarted`` with ``Version``, ``TaskScheduled``,
``TaskCompleted``, …) and passes it to the *registered* orchestrator function (what
``app.get_functions()`` gives), exactly as the Functions worker does. To learn the ids the
engine gave its pending tasks (the host must answer ``TaskCompleted`` with the right
``TaskScheduledId``) the same JSON is also replayed through ``Orchestrator.handle`` with a
context we keep, and the two outputs must be identical — so every replay is also run twice,
which checks determinism for free.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.durable_functions.models.actions.CallActivityWithRetryAction import (
    CallActivityWithRetryAction,
)
from azure.durable_functions.models.actions.CallEntityAction import CallEntityAction
from azure.durable_functions.models.actions.CallSubOrchestratorAction import (
    CallSubOrchestratorAction,
)
from azure.durable_functions.models.actions.CreateTimerAction import CreateTimerAction
from azure.durable_functions.models.actions.NoOpAction import NoOpAction
from azure.durable_functions.models.actions.WaitForExternalEventAction import (
    WaitForExternalEventAction,
)
from azure.durable_functions.models.DurableOrchestrationContext import (
    DurableOrchestrationContext,
)
from azure.durable_functions.models.history.HistoryEventType import HistoryEventType as T
from azure.durable_functions.models.Task import RetryAbleTask, TaskBase
from azure.durable_functions.orchestrator import Orchestrator

EPOCH = datetime(2026, 1, 5, 2, 0, tzinfo=UTC)
OUT_OF_PROC = "$OutOfProcData$:"


@dataclass(frozen=True)
class Pending:
    """A task the orchestrator waits for."""

    id: int | str
    kind: str
    """``activity``, ``retry_timer``, ``timer``, ``entity`` (a call; ``input`` is
    ``{"entity": (name, key), "input": ...}``), ``sub`` or ``event``."""
    name: str
    """Activity / orchestrator / event name."""
    input: Any = None
    instance_id: str | None = None


@dataclass
class Replay:
    """One replay's outcome, as the host would read it."""

    state: dict[str, Any]
    """The decoded OrchestratorState JSON (``isDone``, ``actions``, ``output``, ...)."""
    pending: list[Pending]
    failed: str | None = None
    """The orchestration's error, when it raised."""

    @property
    def actions(self) -> list[dict[str, Any]]:
        """Every action so far, flattened (schema V1 groups them per yield)."""
        return [a for group in self.state.get("actions", []) for a in group]

    @property
    def done(self) -> bool:
        return bool(self.state.get("isDone"))

    @property
    def output(self) -> Any:
        return self.state.get("output")

    @property
    def custom_status(self) -> Any:
        return self.state.get("customStatus")

    @property
    def signals(self) -> list[tuple[str, str, Any]]:
        """Entity signals sent so far: (scheduler id ``@name@key``, operation, input)."""
        return [
            (a["instanceId"], a["operation"], json.loads(a["input"]))
            for a in self.actions
            if a.get("actionType") == 9
        ]

    def pending_activities(self, name: str | None = None) -> list[Pending]:
        return [p for p in self.pending if p.kind == "activity" and name in (None, p.name)]


def _event(kind: T, ts: datetime, event_id: int = -1, **fields: Any) -> dict[str, Any]:
    return {
        "EventType": int(kind),
        "EventId": event_id,
        "IsPlayed": False,
        "Timestamp": ts.isoformat(),
        **fields,
    }


def _action(task: TaskBase) -> Any:
    repr_ = task.action_repr
    return repr_[0] if isinstance(repr_, list) and repr_ else repr_


@dataclass
class DurableHost:
    """One orchestration instance, driven by hand."""

    function: Callable[[str], str]
    """The registered orchestrator (``get_user_function()``)."""
    input: Any
    instance_id: str = "run-instance"
    parent_instance_id: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    now: datetime = EPOCH
    _scheduled: set[int | str] = field(default_factory=set)
    replays: int = 0

    def __post_init__(self) -> None:
        self.history += [
            _event(T.ORCHESTRATOR_STARTED, self.now),
            _event(
                T.EXECUTION_STARTED,
                self.now,
                Name="orchestrator",
                Input=json.dumps(self.input),
                Version="",
                OrchestrationInstance={"InstanceId": self.instance_id},
            ),
        ]

    def context_json(self) -> str:
        return json.dumps(
            {
                "history": self.history,
                "instanceId": self.instance_id,
                "isReplaying": False,
                "parentInstanceId": self.parent_instance_id,
                "input": json.dumps(self.input),
                "upperSchemaVersion": 0,
            }
        )

    def replay(self) -> Replay:
        """Run the orchestrator over the history; schedule what it asks for."""
        self.replays += 1
        body = self.context_json()
        official, official_error = _run(lambda: self.function(body))
        ctx = DurableOrchestrationContext.from_json(body)
        raw = self.function.orchestrator_function  # type: ignore[attr-defined]
        mine, mine_error = _run(lambda: Orchestrator(raw).handle(ctx))
        assert (mine, mine_error) == (official, official_error), "replay is not deterministic"
        state = json.loads(official)
        pending = _pending(ctx)
        new = [p for p in pending if p.id not in self._scheduled]
        for p in new:
            self._schedule(p)
        self.history.append(_event(T.ORCHESTRATOR_COMPLETED, self.now))
        return Replay(state, pending, official_error)

    def _schedule(self, p: Pending) -> None:
        self._scheduled.add(p.id)
        if p.kind == "activity":
            self.history.append(_event(T.TASK_SCHEDULED, self.now, int(p.id), Name=p.name))
        elif p.kind in ("retry_timer", "timer"):
            fire_at = (self.now + timedelta(seconds=15)).isoformat()
            self.history.append(_event(T.TIMER_CREATED, self.now, int(p.id), FireAt=fire_at))
        elif p.kind == "entity":
            # The host sends the request as an event; the response comes back as an event
            # named by the request's id (the SDK re-keys the task to that id on replay).
            request_id = self.entity_request_id(p.id)
            self._scheduled.add(request_id)
            self.history.append(
                _event(
                    T.EVENT_SENT,
                    self.now,
                    int(p.id),
                    Name="op",
                    Input=json.dumps({"id": request_id, "op": p.name}),
                )
            )
        elif p.kind == "sub":
            self.history.append(
                _event(
                    T.SUB_ORCHESTRATION_INSTANCE_CREATED,
                    self.now,
                    int(p.id),
                    Name=p.name,
                    InstanceId=p.instance_id,
                )
            )

    def _episode(self) -> None:
        self.now += timedelta(seconds=1)
        self.history.append(_event(T.ORCHESTRATOR_STARTED, self.now))

    def complete(self, outcomes: Mapping[int | str, Any]) -> None:
        """Deliver results in one new episode: a value completes a task, an Exception fails
        it, ``None`` for a retry timer fires it."""
        self._episode()
        for task_id, outcome in sorted(outcomes.items(), key=lambda kv: str(kv[0])):
            self.history.append(self._completion(task_id, outcome))

    def entity_request_id(self, task_id: int | str) -> str:
        """The id of the entity request sent for task ``task_id`` (deterministic)."""
        return f"{self.instance_id}:entity:{task_id}"

    def _completion(self, task_id: int | str, outcome: Any) -> dict[str, Any]:
        kind = self._kind_of(task_id)
        if kind == "entity":
            request_id = str(task_id) if isinstance(task_id, str) else None
            request_id = request_id or self.entity_request_id(task_id)
            return _event(
                T.EVENT_RAISED,
                self.now,
                Name=request_id,
                Input=json.dumps({"result": json.dumps(outcome)}),
            )
        if kind == "retry_timer":
            return _event(T.TIMER_FIRED, self.now, TimerId=task_id, FireAt=self.now.isoformat())
        if kind == "sub":
            if isinstance(outcome, Exception):
                return _event(
                    T.SUB_ORCHESTRATION_INSTANCE_FAILED,
                    self.now,
                    TaskScheduledId=task_id,
                    Reason=str(outcome),
                    Details="",
                )
            return _event(
                T.SUB_ORCHESTRATION_INSTANCE_COMPLETED,
                self.now,
                TaskScheduledId=task_id,
                Result=json.dumps(outcome),
            )
        if isinstance(outcome, Exception):
            return _event(
                T.TASK_FAILED,
                self.now,
                TaskScheduledId=task_id,
                Reason=str(outcome),
                Details="Traceback (most recent call last):\n  ...",
            )
        return _event(
            T.TASK_COMPLETED, self.now, TaskScheduledId=task_id, Result=json.dumps(outcome)
        )

    def _kind_of(self, task_id: int | str) -> str:
        if isinstance(task_id, str) and ":entity:" in task_id:
            return "entity"
        for event in reversed(self.history):
            if event.get("EventId") == task_id:
                if event["EventType"] == T.TIMER_CREATED:
                    return "retry_timer"
                if event["EventType"] == T.SUB_ORCHESTRATION_INSTANCE_CREATED:
                    return "sub"
                if event["EventType"] == T.EVENT_SENT:
                    return "entity"
                return "activity"
        raise AssertionError(f"task {task_id} was never scheduled")

    def raise_event(self, name: str, data: Any = None) -> None:
        """An external event arrives (in a new episode)."""
        self._episode()
        self.history.append(_event(T.EVENT_RAISED, self.now, Name=name, Input=json.dumps(data)))


def _run(call: Callable[[], str]) -> tuple[str, str | None]:
    """The state JSON, and the error when the orchestrator raised (the worker reports both)."""
    try:
        return call(), None
    except Exception as exc:  # noqa: BLE001 - the SDK raises bare Exception carrying the state
        text = str(exc)
        message, _, state = text.partition(OUT_OF_PROC)
        return state, message.strip()


def _pending(ctx: DurableOrchestrationContext) -> list[Pending]:
    found: list[Pending] = []
    for key, value in ctx.open_tasks.items():
        for task in value if isinstance(value, list) else [value]:
            found.append(_describe(key, task))
    unique = {(p.id, p.kind): p for p in found}
    return sorted(unique.values(), key=lambda p: (isinstance(p.id, str), str(p.id).zfill(8)))


def _describe(key: int | str, task: TaskBase) -> Pending:
    action = _action(task)
    if isinstance(action, CallActivityWithRetryAction):
        return Pending(key, "activity", action.function_name, json.loads(action.input_))
    if isinstance(action, CallSubOrchestratorAction):
        return Pending(
            key, "sub", action.function_name, json.loads(action._input), action.instance_id
        )
    if isinstance(action, CallEntityAction):
        entity = (action.entity_id.name, action.entity_id.key)
        payload = {"entity": entity, "input": json.loads(action.input_)}
        return Pending(key, "entity", action.operation, payload)
    if isinstance(action, CreateTimerAction) and not isinstance(task.parent, RetryAbleTask):
        return Pending(key, "timer", "timer")
    if isinstance(action, WaitForExternalEventAction):
        return Pending(key, "event", action.external_event_name)
    if isinstance(action, NoOpAction) and isinstance(task.parent, RetryAbleTask):
        if action.metadata == "rescheduled task":
            original = _action(task.parent.children[0])
            return Pending(key, "activity", original.function_name, json.loads(original.input_))
        return Pending(key, "retry_timer", "retry")
    raise AssertionError(f"unexpected pending task {key}: {action!r}")
