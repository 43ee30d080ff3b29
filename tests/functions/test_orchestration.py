"""The export-run orchestration, driven through the Durable SDK's own replay engine.

Synthetic histories are built by :class:`bench.durable.host.DurableHost` and fed to
the registered orchestrator functions; activity results are scripted here (the activities are
thin adapters over the engine, exercised for real in the end-to-end test).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from bench.durable.app import user_function
from bench.durable.driver import Driver
from bench.durable.entities import Entities
from bench.durable.host import DurableHost, Pending, Replay
from blueprints import orchestration as orch
from exporter.reading.refs import SnapshotFile
from exporter.run.engine import RunOptions, RunRequest
from exporter.storage.records import SnapshotRecord

RUN_ID = "20260105T020000Z-abcdef12"
INSTANCE = "weekly-abcdef1234567890abcdef1234567890"


def request(**options: bool) -> dict[str, Any]:
    return RunRequest(
        export="weekly",
        run_id=RUN_ID,
        snapshot=SnapshotRecord(
            kind="csv",
            path="snapshots/seg/a.csv",
            files=(SnapshotFile("snapshots/seg/a.csv", 10, "etag"),),
            modified=datetime(2026, 1, 5, tzinfo=UTC),
        ),
        snapshot_identity="abcdef1234567890abcdef1234567890",
        options=RunOptions(**options),
        requested_by="timer",
        requested_at="2026-01-05T02:00:00+00:00",
    ).to_dict()


def chunk_paths(n: int) -> list[str]:
    return [f"runs/weekly/{RUN_ID}/chunks/{i:05d}.jsonl" for i in range(n)]


def run_input(width: int = 4, group_size: int = orch.GROUP_SIZE, **options: bool) -> dict[str, Any]:
    run = orch.RunInput(
        request=RunRequest.from_dict(request(**options)), wave_width=width, group_size=group_size
    )
    return run.to_dict()


class Scripted:
    """Answers activities like the engine would, counting calls; ``fail`` scripts failures."""

    def __init__(
        self,
        chunks: int,
        *,
        per_chunk: int = 10,
        fail: Callable[[str, dict[str, Any], int], Exception | None] | None = None,
        prepared: dict[str, Any] | None = None,
    ) -> None:
        self.chunks = chunk_paths(chunks)
        self.per_chunk = per_chunk
        self.fail = fail or (lambda name, payload, attempt: None)
        self.prepared = prepared or {}
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.attempts: Counter[tuple[str, str]] = Counter()

    def __call__(self, p: Pending) -> Any:
        payload = p.input
        key = (p.name, str(payload.get("chunk", "")))
        self.attempts[key] += 1
        self.calls.append((p.name, payload))
        failure = self.fail(p.name, payload, self.attempts[key])
        if failure is not None:
            return failure
        if p.name == orch.PREPARE_ACTIVITY:
            return {
                "run_id": RUN_ID,
                "chunks": self.chunks,
                "contacts_to_send": self.per_chunk * len(self.chunks),
                "leavers_to_unsubscribe": 0,
                "guarded": False,
                "dry_run": False,
                "counts": {"rows_read": self.per_chunk * len(self.chunks)},
                **self.prepared,
            }
        if p.name == orch.MEMBERS_ACTIVITY:
            return {"members": 0}
        if p.name == orch.PUSH_ACTIVITY:
            return summary(payload["chunk"], sent=self.per_chunk)
        if p.name == orch.CONFIRM_ACTIVITY:
            return summary(payload["chunk"], sent=self.per_chunk, confirmed=self.per_chunk)
        if p.name == orch.FINALIZE_ACTIVITY:
            status = (
                "failed"
                if payload["error"]
                else "cancelled"
                if payload["cancelled"]
                else "completed"
            )
            return {"export": "weekly", "run_id": RUN_ID, "status": status}
        raise AssertionError(f"unexpected activity {p.name}")

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]

    def payloads(self, name: str) -> list[dict[str, Any]]:
        return [payload for n, payload in self.calls if n == name]


def summary(chunk: str, *, sent: int, confirmed: int = 0, failed: int = 0) -> dict[str, Any]:
    return {
        "chunk": chunk,
        "batches": 1,
        "sent": sent,
        "rejected": 0,
        "confirmed": confirmed,
        "failed": failed,
    }


def run_host(data: dict[str, Any]) -> DurableHost:
    return DurableHost(user_function(orch.RUN_ORCHESTRATOR), data, instance_id=INSTANCE)


def drive(
    host: DurableHost,
    respond: Scripted,
    *,
    before_completing: Callable[[DurableHost, Replay], None] | None = None,
    rounds: list[list[Pending]] | None = None,
    entities: Entities | None = None,
) -> Replay:
    """Replay, answer everything pending, repeat until the orchestration ends. Entity calls
    and signals go to the registered entity functions (``entities``)."""
    entities = entities if entities is not None else Entities()
    delivered = 0
    for _ in range(500):
        replay = host.replay()
        for signal in replay.signals[delivered:]:
            entities.signal(*signal)
        delivered = len(replay.signals)
        if replay.done or replay.failed:
            return replay
        if before_completing is not None:
            before_completing(host, replay)
        outcomes: dict[int | str, Any] = {}
        activities = replay.pending_activities()
        if rounds is not None and activities:
            rounds.append(activities)
        for p in activities:
            outcomes[p.id] = respond(p)
        for p in replay.pending:
            if p.kind in ("retry_timer", "timer"):
                outcomes[p.id] = None
            elif p.kind == "entity":
                name, key = p.input["entity"]
                outcomes[p.id] = entities.call(name, key, p.name, p.input["input"])
            elif p.kind == "sub":
                outcomes[p.id] = run_group(host, p, respond, entities)
        assert outcomes, f"the orchestration waits for nothing but events: {replay.pending}"
        host.complete(outcomes)
    raise AssertionError("the orchestration never ended")


def run_group(parent: DurableHost, p: Pending, respond: Scripted, entities: Entities) -> Any:
    child = DurableHost(
        user_function(orch.GROUP_ORCHESTRATOR),
        p.input,
        instance_id=str(p.instance_id),
        parent_instance_id=parent.instance_id,
    )
    outcome = drive(child, respond, entities=entities)
    if outcome.failed:
        return Exception(outcome.failed)
    return outcome.output


def in_flight_budget(activities: list[Pending]) -> float:
    return sum(
        float(p.input["share"])
        for p in activities
        if p.name in (orch.PUSH_ACTIVITY, orch.CONFIRM_ACTIVITY)
    )


# --- the plan (pure functions) ---------------------------------------------------------------


@pytest.mark.parametrize("width", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("workers", [1, 2, 3, 5])
@pytest.mark.parametrize("n", [0, 1, 4, 5, 9, 23])
def test_every_step_stays_within_its_grant_and_every_chunk_is_confirmed(
    width: int, workers: int, n: int
) -> None:
    to_push, to_confirm, pushed, confirmed = chunk_paths(n), [], [], []
    while to_push or to_confirm:
        push, confirm = orch.plan_step(to_push, to_confirm, workers, width)
        assert push or confirm, "every step makes progress"
        assert len(push) + len(confirm) <= workers and len(push) <= width
        assert set(confirm) <= set(pushed), "a chunk is confirmed only after its push"
        push_share, confirm_share = orch.shares(0.5, len(push), len(confirm))
        assert len(push) * push_share + len(confirm) * confirm_share <= 0.5 + 1e-9
        to_push, to_confirm = to_push[len(push) :], to_confirm[len(confirm) :] + push
        pushed += push
        confirmed += confirm
    assert pushed == confirmed == chunk_paths(n)


def test_a_full_steps_pushes_can_use_96_percent_of_the_account_bulk_budget() -> None:
    """Each push is paced at whole bulk imports a minute (its share of 100, rounded down):
    three pushes beside two confirms send 96 a minute, the confirms can still resubmit two a
    minute each, and together they never exceed the 100."""
    push, confirm = orch.shares(1.0, 3, 2)
    per_minute = [int(100 * share + 1e-9) for share in (push, push, push, confirm, confirm)]
    assert sum(per_minute[:3]) == 96
    assert per_minute[3:] == [2, 2]
    assert sum(per_minute) <= 100


def test_pushes_share_most_of_the_bulk_budget_and_confirms_the_rest() -> None:
    assert orch.plan_step(chunk_paths(9), chunk_paths(4), 5, 4) == (
        chunk_paths(3),
        chunk_paths(2),
    )
    assert orch.shares(1.0, 3, 2) == pytest.approx((0.32, 0.02))
    assert orch.shares(1.0, 4, 0) == (0.25, 0.0)
    assert orch.shares(0.5, 0, 5) == (0.0, 0.1)
    with pytest.raises(ValueError):
        orch.plan_step(chunk_paths(1), [], 0, 4)


def test_the_wave_width_is_clamped_to_what_the_per_second_budget_allows() -> None:
    assert orch.clamp_width(0) == 1
    assert orch.clamp_width(12) == orch.MAX_WAVE_WIDTH == 5
    assert orch.RunInput.from_dict(run_input(width=9)).wave_width == 5


def test_failure_text_keeps_the_first_line_only() -> None:
    exc = Exception("Activity function 'push_chunk' failed: boom \n Traceback (most recent...")
    assert orch.failure_text(exc) == "Activity function 'push_chunk' failed: boom"
    assert len(orch.failure_text(Exception("x" * 2000))) == orch.MAX_ERROR_CHARS


# --- replays ---------------------------------------------------------------------------------


def test_the_first_replay_schedules_prepare_only() -> None:
    host = run_host(run_input())
    replay = host.replay()
    assert not replay.done and replay.failed is None
    [prepare] = replay.pending_activities()
    assert prepare.name == orch.PREPARE_ACTIVITY
    assert prepare.input == {"request": request()}
    kinds = [a["actionType"] for a in replay.actions]
    assert kinds == [1, 6]  # call activity with retry, wait for the cancel event
    [call] = [a for a in replay.actions if a["actionType"] == 1]
    assert call["retryOptions"]["maxNumberOfAttempts"] == 3
    assert replay.custom_status["phase"] == "preparing"


def test_after_prepare_a_wave_of_width_pushes_with_a_full_slot_each() -> None:
    respond = Scripted(10)
    host = run_host(run_input(width=4))
    [prepare] = host.replay().pending_activities()
    host.complete({prepare.id: respond(prepare)})
    [members] = host.replay().pending_activities()
    assert members.name == orch.MEMBERS_ACTIVITY, "the list is read before anything is sent"
    host.complete({members.id: respond(members)})
    replay = host.replay()
    pushes = replay.pending_activities()
    assert [p.name for p in pushes] == [orch.PUSH_ACTIVITY] * 4
    assert [p.input for p in pushes] == [
        {"request": request(), "chunk": c, "share": 0.25, "rate_share": 0.2} for c in chunk_paths(4)
    ]
    assert replay.custom_status["phase"] == "sending"
    assert replay.custom_status["chunks"] == 10


def test_waves_pipeline_push_and_confirm_within_the_budget() -> None:
    respond = Scripted(10)
    rounds: list[list[Pending]] = []
    replay = drive(run_host(run_input(width=4)), respond, rounds=rounds)
    assert replay.done and replay.failed is None
    shape = [
        (
            [p.input["chunk"][-11:-6] for p in r if p.name == orch.PUSH_ACTIVITY],
            [p.input["chunk"][-11:-6] for p in r if p.name == orch.CONFIRM_ACTIVITY],
        )
        for r in rounds
    ]
    assert shape == [
        ([], []),  # prepare
        ([], []),  # the list's pre-existing members
        (["00000", "00001", "00002", "00003"], []),
        (["00004", "00005", "00006"], ["00000", "00001"]),
        (["00007", "00008", "00009"], ["00002", "00003"]),
        ([], ["00004", "00005", "00006", "00007", "00008"]),
        ([], ["00009"]),
        ([], []),  # the list's mark moved past what the run created
        ([], []),  # finalize
    ]
    for r in rounds:
        assert sum(p.name in (orch.PUSH_ACTIVITY, orch.CONFIRM_ACTIVITY) for p in r) <= 5
        assert in_flight_budget(r) <= 1.0 + 1e-9
    mixed = rounds[3]
    [push_share] = {p.input["share"] for p in mixed if p.name == orch.PUSH_ACTIVITY}
    [confirm_share] = {p.input["share"] for p in mixed if p.name == orch.CONFIRM_ACTIVITY}
    assert (push_share, confirm_share) == pytest.approx((0.32, 0.02))
    sending = [p for r in rounds for p in r if p.name != orch.FINALIZE_ACTIVITY]
    assert {p.input.get("rate_share") for p in sending if "chunk" in p.input} == {0.2}
    assert respond.payloads(orch.FINALIZE_ACTIVITY) == [
        {"request": request(), "cancelled": False, "error": None}
    ]
    assert replay.output["status"] == "completed"
    status = replay.custom_status
    assert status["phase"] == "completed"
    assert (status["chunks_pushed"], status["chunks_confirmed"]) == (10, 10)
    assert (status["sent"], status["confirmed"]) == (100, 100)


def test_replay_is_deterministic() -> None:
    respond = Scripted(6)
    host = run_host(run_input(width=3))
    drive_until = 3
    for _ in range(drive_until):
        replay = host.replay()
        host.complete({p.id: respond(p) for p in replay.pending_activities()})
    body = host.context_json()
    fn = user_function(orch.RUN_ORCHESTRATOR)
    first, second = fn(body), fn(body)
    assert first == second
    assert json.loads(first)["actions"]


def test_a_transient_failure_is_retried_and_counted_once() -> None:
    def flaky(name: str, payload: dict[str, Any], attempt: int) -> Exception | None:
        if name == orch.PUSH_ACTIVITY and payload["chunk"].endswith("00001.jsonl"):
            return Exception("Activity function 'push_chunk' failed: 503") if attempt == 1 else None
        return None

    respond = Scripted(3, fail=flaky)
    replay = drive(run_host(run_input(width=2)), respond)
    assert replay.done and replay.failed is None
    assert respond.attempts[(orch.PUSH_ACTIVITY, chunk_paths(3)[1])] == 2
    assert replay.custom_status["sent"] == 30
    assert respond.payloads(orch.FINALIZE_ACTIVITY)[0]["error"] is None


def test_a_failed_push_still_finalizes_with_the_error_then_fails_the_run() -> None:
    def broken(name: str, payload: dict[str, Any], attempt: int) -> Exception | None:
        if name == orch.PUSH_ACTIVITY and payload["chunk"].endswith("00005.jsonl"):
            return Exception("Activity function 'push_chunk' failed: FatalApiError: 404 \n trace")
        return None

    respond = Scripted(12, fail=broken)
    replay = drive(run_host(run_input(width=3)), respond)
    assert replay.failed is not None
    assert "export run" in replay.failed and "FatalApiError: 404" in replay.failed
    assert respond.attempts[(orch.PUSH_ACTIVITY, chunk_paths(12)[5])] == orch.RETRY_ATTEMPTS
    [final] = respond.payloads(orch.FINALIZE_ACTIVITY)
    assert final["error"] == "Activity function 'push_chunk' failed: FatalApiError: 404"
    assert final["cancelled"] is False
    pushed = {p["chunk"] for p in respond.payloads(orch.PUSH_ACTIVITY)}
    assert pushed == set(chunk_paths(6)), "nothing is pushed after the failing wave"
    assert respond.names()[-1] == orch.FINALIZE_ACTIVITY


def test_a_failed_prepare_finalizes_with_the_error_and_sends_nothing() -> None:
    def unreadable(name: str, payload: dict[str, Any], attempt: int) -> Exception | None:
        if name == orch.PREPARE_ACTIVITY:
            return Exception("Activity function 'prepare_run' failed: InputError: a.csv, row 3")
        return None

    respond = Scripted(4, fail=unreadable)
    replay = drive(run_host(run_input()), respond)
    assert replay.failed is not None and "InputError" in replay.failed
    assert orch.PUSH_ACTIVITY not in respond.names()
    assert "InputError" in respond.payloads(orch.FINALIZE_ACTIVITY)[0]["error"]


class ConflictOnFinalize(Scripted):
    """finalize's report says failed (another run moved the state meanwhile)."""

    def __call__(self, p: Pending) -> Any:
        result = super().__call__(p)
        if p.name == orch.FINALIZE_ACTIVITY:
            return {**result, "status": "failed", "error": "state changed meanwhile"}
        return result


def test_a_report_that_says_failed_fails_the_orchestration() -> None:
    replay = drive(run_host(run_input()), ConflictOnFinalize(1))
    assert replay.failed is not None and "state changed meanwhile" in replay.failed


@pytest.mark.parametrize("outcome", [{"guarded": True}, {"dry_run": True}])
def test_guarded_and_dry_runs_send_nothing(outcome: dict[str, Any]) -> None:
    respond = Scripted(3, prepared=outcome)
    replay = drive(run_host(run_input()), respond)
    assert replay.done and replay.failed is None
    assert respond.names() == [orch.PREPARE_ACTIVITY, orch.FINALIZE_ACTIVITY]


def test_cancel_confirms_what_was_pushed_pushes_nothing_more_and_finalizes_cancelled() -> None:
    respond = Scripted(9)
    cancelled = []

    def cancel_once_pushing(host: DurableHost, replay: Replay) -> None:
        pushes = replay.pending_activities(orch.PUSH_ACTIVITY)
        if pushes and not cancelled:
            cancelled.append(True)
            host.raise_event(orch.CANCEL_EVENT, {"by": "ada"})
            follow = host.replay()  # the event arrives while the first wave is in flight
            assert follow.custom_status["phase"] == "cancelling"

    rounds: list[list[Pending]] = []
    replay = drive(
        run_host(run_input(width=3)), respond, before_completing=cancel_once_pushing, rounds=rounds
    )
    assert replay.done and replay.failed is None
    assert [p["chunk"] for p in respond.payloads(orch.PUSH_ACTIVITY)] == chunk_paths(3)
    confirms = respond.payloads(orch.CONFIRM_ACTIVITY)
    assert [p["chunk"] for p in confirms] == chunk_paths(3)
    assert [p["share"] for p in confirms] == pytest.approx([1 / 3] * 3)
    assert respond.payloads(orch.FINALIZE_ACTIVITY)[0]["cancelled"] is True
    assert replay.output["status"] == "cancelled"


def test_above_the_group_size_each_group_runs_as_a_sub_orchestration() -> None:
    respond = Scripted(7)
    host = run_host(run_input(width=2, group_size=3))
    subs: list[Pending] = []

    def watch(_host: DurableHost, replay: Replay) -> None:
        subs.extend(p for p in replay.pending if p.kind == "sub")
        assert not replay.pending_activities(orch.PUSH_ACTIVITY), "the parent never pushes"

    replay = drive(host, respond, before_completing=watch)
    assert replay.done and replay.failed is None
    assert [s.instance_id for s in subs] == [f"{INSTANCE}-{RUN_ID}-g{i:04d}" for i in range(3)]
    assert [s.input["chunks"] for s in subs] == [
        chunk_paths(7)[0:3],
        chunk_paths(7)[3:6],
        chunk_paths(7)[6:7],
    ]
    assert all(s.name == orch.GROUP_ORCHESTRATOR for s in subs)
    assert [p["chunk"] for p in respond.payloads(orch.CONFIRM_ACTIVITY)] == chunk_paths(7)
    status = replay.custom_status
    assert (status["chunks_pushed"], status["confirmed"], status["group"]) == (7, 70, None)
    assert respond.names().count(orch.FINALIZE_ACTIVITY) == 1


def test_at_the_group_size_everything_runs_inline() -> None:
    respond = Scripted(3)

    def no_subs(_host: DurableHost, replay: Replay) -> None:
        assert all(p.kind != "sub" for p in replay.pending)

    replay = drive(run_host(run_input(width=2, group_size=3)), respond, before_completing=no_subs)
    assert replay.done


def test_a_failing_group_fails_the_run_after_finalize() -> None:
    def broken(name: str, payload: dict[str, Any], attempt: int) -> Exception | None:
        if name == orch.CONFIRM_ACTIVITY and payload["chunk"].endswith("00004.jsonl"):
            return Exception("Activity function 'confirm_chunk' failed: timeout")
        return None

    respond = Scripted(8, fail=broken)
    replay = drive(run_host(run_input(width=2, group_size=3)), respond)
    assert replay.failed is not None
    [final] = respond.payloads(orch.FINALIZE_ACTIVITY)
    assert final["error"] and "confirm_chunk" in final["error"]
    pushed = {p["chunk"] for p in respond.payloads(orch.PUSH_ACTIVITY)}
    assert chunk_paths(8)[6] not in pushed, "the next group never starts"


def test_a_failed_push_waits_for_the_rest_of_its_step_before_finalizing() -> None:
    """Push 1 fails for good while pushes 0 and 2 of its wave are still sending: finalize is
    not scheduled until both have ended, and their chunks are still confirmed."""
    chunks = chunk_paths(6)
    held = {chunks[0], chunks[2]}

    def broken(name: str, payload: dict[str, Any], attempt: int) -> Exception | None:
        if name == orch.PUSH_ACTIVITY and payload["chunk"] == chunks[1]:
            return Exception("Activity function 'push_chunk' failed: FatalApiError: 401")
        return None

    respond = Scripted(6, fail=broken)
    host = run_host(run_input(width=3))
    idle_rounds = 0
    for _ in range(100):
        replay = host.replay()
        if replay.done or replay.failed:
            break
        activities = replay.pending_activities()
        names = {p.name for p in activities}
        still_sending = [p for p in activities if p.input.get("chunk") in held]
        if still_sending:
            assert orch.FINALIZE_ACTIVITY not in names, "finalize while a push may still send"
        outcomes: dict[int | str, Any] = {}
        for p in replay.pending:
            if p.kind == "retry_timer":
                outcomes[p.id] = None
        for p in activities:
            if p.name == orch.PUSH_ACTIVITY and p.input["chunk"] in held and idle_rounds < 2:
                continue  # still sending
            outcomes[p.id] = respond(p)
            if p.name == orch.PUSH_ACTIVITY:
                held.discard(p.input["chunk"])
        idle_rounds = idle_rounds + 1 if not outcomes else 0
        host.complete(outcomes)
    assert replay.failed is not None and "FatalApiError: 401" in replay.failed
    assert respond.attempts[(orch.PUSH_ACTIVITY, chunks[1])] == orch.RETRY_ATTEMPTS
    confirmed = {p["chunk"] for p in respond.payloads(orch.CONFIRM_ACTIVITY)}
    assert confirmed == {chunks[0], chunks[2]}, "what was pushed is still confirmed"
    assert {p["chunk"] for p in respond.payloads(orch.PUSH_ACTIVITY)} == set(chunks[:3])
    assert respond.names()[-1] == orch.FINALIZE_ACTIVITY


# --- one budget per account: the account's entity ----------------------------------------------

ACCOUNT = "acme.api-us1.com"


def test_a_run_asks_its_accounts_entity_at_every_step_and_leaves_at_the_end() -> None:
    entities = Entities()
    respond = Scripted(6, prepared={"account": ACCOUNT})
    replay = drive(run_host(run_input(width=3)), respond, entities=entities)
    assert replay.done and replay.failed is None
    acks = [op for name, key, op in entities.operations if op == "ack"]
    assert len(acks) == 1 + 3, "once before reading the list, then one per step"
    assert {(n, k) for n, k, _ in entities.operations} == {(orch.BUDGET_ENTITY, ACCOUNT)}
    assert entities.operations[-1][2] == "leave"
    assert entities.state(orch.BUDGET_ENTITY, ACCOUNT) == {"members": []}
    assert respond.payloads(orch.MEMBERS_ACTIVITY)[0]["share"] == 1.0


def test_runs_on_one_account_share_it_and_together_never_exceed_its_budget() -> None:
    """Three runs of three exports on one account, driven side by side through one entity:
    in every round the shares of all activities in flight add up to at most 1, a run that
    arrives while another sends waits for room, and each ends with everything sent."""
    entities = Entities()
    responders = [Scripted(n, prepared={"account": ACCOUNT}) for n in (12, 4, 1)]
    hosts = [
        DurableHost(
            user_function(orch.RUN_ORCHESTRATOR), run_input(width=4), instance_id=f"run-{i}"
        )
        for i in range(3)
    ]
    delivered = [0, 0, 0]
    finished: dict[int, Replay] = {}
    finished_at: dict[int, int] = {}
    waited = 0
    for round_no in range(400):
        if len(finished) == len(hosts):
            break
        round_outcomes: list[dict[int | str, Any]] = []
        in_flight: list[Pending] = []
        for i, host in enumerate(hosts):
            outcomes: dict[int | str, Any] = {}
            round_outcomes.append(outcomes)
            if i in finished:
                continue
            replay = host.replay()
            for signal in replay.signals[delivered[i] :]:
                entities.signal(*signal)
            delivered[i] = len(replay.signals)
            if replay.done or replay.failed:
                finished[i] = replay
                finished_at[i] = round_no
                continue
            for p in replay.pending:
                if p.kind == "entity":
                    name, key = p.input["entity"]
                    outcomes[p.id] = entities.call(name, key, p.name, p.input["input"])
                elif p.kind == "timer":
                    waited += 1
                    outcomes[p.id] = None
                elif p.kind == "activity":
                    in_flight.append(p)
                    outcomes[p.id] = responders[i](p)
        assert in_flight_budget(in_flight) <= 1.0 + 1e-9, in_flight
        sending = [p for p in in_flight if p.name in (orch.PUSH_ACTIVITY, orch.CONFIRM_ACTIVITY)]
        assert len(sending) <= 5, "one request a second each: 5 workers at most"
        for host, outcomes in zip(hosts, round_outcomes, strict=True):
            if outcomes:
                host.complete(outcomes)
    assert len(finished) == 3
    assert all(r.done and r.failed is None for r in finished.values())
    for responder, n in zip(responders, (12, 4, 1), strict=True):
        pushed = {p["chunk"] for p in responder.payloads(orch.PUSH_ACTIVITY)}
        assert pushed == set(chunk_paths(n))
    assert waited > 0, "a run arriving while others send waited for room"
    assert finished_at[2] < finished_at[1] < finished_at[0], "the small runs interleave"
    assert entities.state(orch.BUDGET_ENTITY, ACCOUNT) == {"members": []}


def test_the_driver_plays_each_group_as_a_sub_orchestration() -> None:
    """``bench.durable.driver.Driver`` drives a run above the group size: each group's steps run
    in its own sub-orchestration, one after the other (so the functions bench can measure a run
    above 500k contacts; it replayed for ever on the first group before)."""
    respond = Scripted(4)
    driver = Driver([run_host(run_input(width=2, group_size=3))], activity=respond)
    [replay] = driver.run()
    assert replay.done and replay.failed is None, replay.failed
    assert replay.output["status"] == "completed"
    assert replay.custom_status["chunks_confirmed"] == 4
    pushes = [names.count(orch.PUSH_ACTIVITY) for [names] in driver.rounds]
    assert [n for n in pushes if n] == [2, 1, 1]  # group 1: 2 then 1; group 2: its chunk
    assert sorted(p["chunk"] for p in respond.payloads(orch.CONFIRM_ACTIVITY)) == chunk_paths(4)
