"""The timer, blob and HTTP functions, called directly with real ``azure.functions`` objects,
a real engine over a local store, and a fake Durable client (the host-only seam)."""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest
from azure.functions.timer import TimerRequest

from bench.durable.app import registered
from blueprints import orchestration as orch
from blueprints import triggers
from blueprints.auth import principal_header
from blueprints.runtime import Runtime, use_runtime
from exporter.errors import ConfigError, RunConflict
from exporter.management.permissions import ADMIN, CONTRIBUTOR
from exporter.reading.discovery import blob_snapshot_path
from exporter.run.engine import RunRequest, instance_id
from exporter.run.report import RunReport
from exporter.storage import runs
from exporter.storage.records import LastRun, read_record, write_record
from exporter.storage.store import LocalStore
from tests.functions.fake_durable import (
    SYSTEM_KEY,
    FakeDurableClient,
    blob_event,
    make_runtime,
    seed,
    snapshot_csv,
)

SNAPSHOT = "snapshots/high-value/2026-01-05.csv"
ORIGIN = "https://exporter.example.net"


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


@pytest.fixture
def runtime(store: LocalStore) -> Iterator[Runtime]:
    seed(store, schedule="0 0 2 * * *")
    store.write_bytes(SNAPSHOT, snapshot_csv(5))
    rt = make_runtime(store, width=3)
    with use_runtime(rt):
        yield rt


@pytest.fixture
def client() -> FakeDurableClient:
    return FakeDurableClient()


def principal(name: str = "ada@example.com", role: str = ADMIN) -> dict[str, str]:
    return {"X-MS-CLIENT-PRINCIPAL": principal_header(name, [role])}


def http(
    method: str,
    route: str,
    *,
    body: Any = None,
    raw: bytes | None = None,
    params: dict[str, str] | None = None,
    route_params: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> func.HttpRequest:
    data = raw if raw is not None else b"" if body is None else json.dumps(body).encode()
    hdrs = {**principal(), **(headers or {})}
    if data:
        hdrs.setdefault("Content-Type", "application/json")
    return func.HttpRequest(
        method,
        f"{ORIGIN}/api/{route}?code=function-key",
        body=data,
        params={"code": "function-key", **(params or {})},
        route_params=route_params or {},
        headers=hdrs,
    )


def answer(resp: func.HttpResponse) -> Any:
    return json.loads(resp.get_body())


def start(client: FakeDurableClient, body: Any = None, **kw: Any) -> func.HttpResponse:
    req = http("POST", "exports/weekly/runs", body=body, route_params={"name": "weekly"}, **kw)
    return asyncio.run(triggers.start_export_run(req, client))


def expected_instance(rt: Runtime, path: str = SNAPSHOT) -> str:
    return instance_id("weekly", rt.engine.store_snapshot(path).identity)


# --- registration --------------------------------------------------------------------------------


def test_the_app_registers_every_function_with_its_binding() -> None:
    functions = registered()
    bindings = {name: {b.type: b for b in f.get_bindings()} for name, f in functions.items()}
    # An Event Grid trigger, not a blob trigger: no binding hands the function a blob's content.
    assert set(bindings["snapshot_blob_trigger"]) == {"eventGridTrigger", "durableClient"}
    assert "InputStream" not in inspect.getsource(triggers)
    timer = bindings["export_timer"]["timerTrigger"]
    assert timer.schedule == "%EXPORTER_TIMER_SCHEDULE%" and not timer.run_on_startup
    for name in ("start_export_run", "get_export_run", "cancel_export_run", "list_export_runs"):
        trigger = bindings[name]["httpTrigger"]
        assert trigger.auth_level == func.AuthLevel.FUNCTION
    assert bindings["export_run"]["orchestrationTrigger"]
    assert bindings["account_budget"]["entityTrigger"]
    for name in ("prepare_run", "push_chunk", "confirm_chunk", "finalize_run"):
        assert "activityTrigger" in bindings[name]
    assert "exports_put" in functions, "the management blueprint is registered too"


# --- timer ---------------------------------------------------------------------------------------


def test_the_timer_starts_each_due_export_once(
    runtime: Runtime, client: FakeDurableClient, caplog: pytest.LogCaptureFixture
) -> None:
    asyncio.run(triggers.export_timer(TimerRequest(past_due=True), client))
    [(name, iid, data)] = client.started()
    assert name == orch.RUN_ORCHESTRATOR
    assert iid == expected_instance(runtime)
    run = orch.RunInput.from_dict(data)
    assert (run.wave_width, run.export, run.request.requested_by) == (3, "weekly", "timer")
    assert run.request.snapshot.path == SNAPSHOT

    # The same tick again finds no new scheduled time: nothing is started.
    asyncio.run(triggers.export_timer(TimerRequest(past_due=False), client))
    assert len(client.started()) == 1
    # The next scheduled time comes while the run still runs: still one instance.
    runtime.store.delete(runs.schedule_path("weekly"))
    client.set(iid, "Running")
    with caplog.at_level(logging.INFO, logger="blueprints.triggers"):
        asyncio.run(triggers.export_timer(TimerRequest(past_due=False), client))
    assert len(client.started()) == 1
    assert "already running this snapshot" in caplog.text


def test_an_error_starting_one_export_does_not_stop_the_others(
    runtime: Runtime, store: LocalStore, client: FakeDurableClient
) -> None:
    seed(store, export="daily", schedule="0 0 2 * * *")
    refused = []

    async def flaky_start(
        name: str, instance_id: str | None = None, client_input: Any = None
    ) -> str:
        if not refused:
            refused.append(instance_id)
            raise Exception("storage hiccup")
        return await FakeDurableClient.start_new(client, name, instance_id, client_input)

    client.start_new = flaky_start  # type: ignore[method-assign]
    with pytest.raises(Exception, match="storage hiccup"):
        asyncio.run(triggers.export_timer(TimerRequest(), client))
    assert len(client.instances) == 1, "the second export was still started"


# --- blob trigger --------------------------------------------------------------------------------


def test_a_new_snapshot_blob_starts_its_exports_and_redelivery_does_not_duplicate(
    runtime: Runtime, client: FakeDurableClient
) -> None:
    blob = blob_event(SNAPSHOT)
    asyncio.run(triggers.snapshot_blob_trigger(blob, client))
    [(_, iid, data)] = client.started()
    assert iid == expected_instance(runtime)
    assert data["request"]["requested_by"] == "blob"

    client.set(iid, "Running")
    asyncio.run(triggers.snapshot_blob_trigger(blob, client))
    client.set(iid, "Completed")
    asyncio.run(triggers.snapshot_blob_trigger(blob, client))
    assert len(client.started()) == 1, "Event Grid redelivers: a done snapshot is not rerun"


def test_a_blob_no_export_reads_starts_nothing(runtime: Runtime, client: FakeDurableClient) -> None:
    runtime.store.write_bytes("snapshots/other/x.csv", snapshot_csv(1))
    blob = blob_event("snapshots/other/x.csv")
    asyncio.run(triggers.snapshot_blob_trigger(blob, client))
    assert client.started() == []


def test_only_blob_created_events_start_runs(runtime: Runtime, client: FakeDurableClient) -> None:
    deleted = blob_event(SNAPSHOT, "Microsoft.Storage.BlobDeleted")
    asyncio.run(triggers.snapshot_blob_trigger(deleted, client))
    odd = blob_event(SNAPSHOT)
    odd.__init__(  # type: ignore[misc]
        id="evt-2",
        data={},
        topic="t",
        subject="/blobServices/default/containers/snapshots",
        event_type="Microsoft.Storage.BlobCreated",
        event_time=None,
        data_version="",
    )
    asyncio.run(triggers.snapshot_blob_trigger(odd, client))
    assert client.started() == []
    assert triggers.blob_name_of_event(blob_event(SNAPSHOT)) == SNAPSHOT


def test_blob_names_map_to_store_paths() -> None:
    assert blob_snapshot_path("snapshots/a/b.csv") == "snapshots/a/b.csv"
    assert blob_snapshot_path("t1-snapshots/a/b.csv", "t1-") == "snapshots/a/b.csv"
    with pytest.raises(ConfigError):
        blob_snapshot_path("config/a.json")


def test_a_blob_named_like_any_export_file_runs_and_a_dotted_one_is_refused(
    runtime: Runtime, client: FakeDurableClient
) -> None:
    """The trigger holds blob names to the one snapshot-path rule: a name a segment folder
    contains (spaces, parentheses) still starts its export; '..' never reaches the store."""
    odd = "snapshots/high-value/2026-01-06 (1).csv"
    runtime.store.write_bytes(odd, snapshot_csv(2))
    asyncio.run(triggers.snapshot_blob_trigger(blob_event(odd), client))
    [(_, _iid, data)] = client.started()
    assert data["request"]["snapshot"]["path"] == odd
    dotted = blob_event("snapshots/high-value/../x.csv")
    with pytest.raises(ConfigError, match=r"'\.\.'"):
        asyncio.run(triggers.snapshot_blob_trigger(dotted, client))
    assert len(client.started()) == 1


# --- HTTP: start ------------------------------------------------------------------------------


def test_post_starts_a_run_and_answers_202_with_status_links(
    runtime: Runtime, client: FakeDurableClient
) -> None:
    resp = start(client, {"dry_run": True})
    assert resp.status_code == 202
    body = answer(resp)
    iid = expected_instance(runtime)
    assert body["instance_id"] == iid
    assert body["status_url"] == f"{ORIGIN}/api/exports/weekly/runs/{iid}"
    assert resp.headers["Location"] == body["status_url"]
    assert body["cancel_url"] == f"{body['status_url']}/cancel"
    [(_, _, data)] = client.started()
    assert data["request"]["options"]["dry_run"] is True
    assert data["request"]["requested_by"] == "http:ada@example.com"
    assert "function-key" not in resp.get_body().decode()


def test_administrators_do_not_get_the_durable_system_key_either(
    runtime: Runtime, client: FakeDurableClient
) -> None:
    resp = start(client)
    assert resp.status_code == 202
    text = resp.get_body().decode()
    assert SYSTEM_KEY not in text and "statusQueryGetUri" not in text
    assert "durable" not in answer(resp)
    iid = answer(resp)["instance_id"]
    client.set(iid, "Running")
    status = status_of(client, iid)
    assert status.status_code == 200
    assert SYSTEM_KEY not in status.get_body().decode()
    assert "code=" not in status.get_body().decode()


def test_contributors_do_not_get_the_durable_system_key(
    store: LocalStore, client: FakeDurableClient
) -> None:
    seed(store, allow_contributors=True)
    store.write_bytes(SNAPSHOT, snapshot_csv(2))
    with use_runtime(make_runtime(store)):
        resp = start(client, headers=principal("cy@example.com", CONTRIBUTOR))
    assert resp.status_code == 202
    assert SYSTEM_KEY not in resp.get_body().decode()
    assert "durable" not in answer(resp)


def test_a_second_start_while_running_is_409(runtime: Runtime, client: FakeDurableClient) -> None:
    assert start(client).status_code == 202
    client.set(expected_instance(runtime), "Running")
    resp = start(client)
    assert resp.status_code == 409
    assert "already running" in answer(resp)["errors"][0]["message"]
    assert len(client.started()) == 1


def test_losing_the_start_race_is_409_too(runtime: Runtime, client: FakeDurableClient) -> None:
    iid = expected_instance(runtime)

    async def racing_status(instance_id: str, **kw: Any) -> Any:
        status = await FakeDurableClient.get_status(client, instance_id, **kw)
        client.set(iid, "Running")  # someone else started it right after we looked
        return status

    client.get_status = racing_status  # type: ignore[method-assign]
    assert start(client).status_code == 409


def test_a_named_snapshot_is_used(runtime: Runtime, client: FakeDurableClient) -> None:
    older = "snapshots/high-value/2026-01-01.csv"
    runtime.store.write_bytes(older, snapshot_csv(3))
    resp = start(client, {"snapshot": older})
    assert resp.status_code == 202
    assert answer(resp)["snapshot"] == older
    assert answer(resp)["instance_id"] == expected_instance(runtime, older)


def test_a_named_snapshot_may_have_any_name_the_store_can_read(
    runtime: Runtime, client: FakeDurableClient
) -> None:
    named = "snapshots/high-value/Export (2) – été.csv"
    runtime.store.write_bytes(named, snapshot_csv(3))
    resp = start(client, {"snapshot": named})
    assert resp.status_code == 202, answer(resp)
    assert answer(resp)["snapshot"] == named


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"dry_run": "yes"}, {"dry_run"}),
        ({"colour": True, "full_resync": 1}, {"colour", "full_resync"}),
        ({"snapshot": "config/exports/weekly.json"}, {"snapshot"}),
        ({"snapshot": "snapshots/../config/x.csv"}, {"snapshot"}),
        ({"snapshot": "snapshots/.."}, {"snapshot"}),
        ({"snapshot": "snapshots/high-value/.."}, {"snapshot"}),
        ({"snapshot": "snapshots/other-team/vip.csv"}, {"snapshot"}),
        ({"snapshot": "snapshots/high-value-other/vip.csv"}, {"snapshot"}),
        ({"snapshot": "snapshots/"}, {"snapshot"}),
        ({"snapshot": "snapshots/high-value/" + "a" * 300 + ".csv"}, {"snapshot"}),  # was 500
    ],
)
def test_bad_bodies_are_400_with_field_errors(
    runtime: Runtime, client: FakeDurableClient, body: Any, fields: set[str]
) -> None:
    resp = start(client, body)
    assert resp.status_code == 400
    assert {e["field"] for e in answer(resp)["errors"]} == fields
    assert client.started() == []


def test_a_snapshot_outside_the_segment_is_400_even_when_it_exists(
    runtime: Runtime, client: FakeDurableClient
) -> None:
    runtime.store.write_bytes("snapshots/other-team/vip.csv", snapshot_csv(3))
    resp = start(client, {"snapshot": "snapshots/other-team/vip.csv"})
    assert resp.status_code == 400
    [error] = answer(resp)["errors"]
    assert error["field"] == "snapshot"
    assert "other-team" not in error["message"]
    assert client.started() == []


def test_a_contributor_cannot_run_another_teams_snapshot_through_an_export(
    store: LocalStore, client: FakeDurableClient
) -> None:
    """Regression (issue 15): a contributor's run body named another team's snapshot (202)."""
    seed(store, allow_contributors=True)
    store.write_bytes(SNAPSHOT, snapshot_csv(2))
    store.write_bytes("snapshots/other-team/vip.csv", snapshot_csv(2))
    contributor = principal("cy@example.com", CONTRIBUTOR)
    with use_runtime(make_runtime(store)):
        refused = start(client, {"snapshot": "snapshots/other-team/vip.csv"}, headers=contributor)
        assert refused.status_code == 400
        assert answer(refused)["errors"][0]["field"] == "snapshot"
        assert client.started() == []
        allowed = start(client, {"snapshot": SNAPSHOT}, headers=contributor)
    assert allowed.status_code == 202, answer(allowed)


def test_the_segment_folder_itself_runs_its_newest_snapshot(
    runtime: Runtime, client: FakeDurableClient
) -> None:
    newest = "snapshots/high-value/2026-01-07.csv"
    runtime.store.write_bytes(newest, snapshot_csv(3))  # written last: the newest
    resp = start(client, {"snapshot": "snapshots/high-value/"})
    assert resp.status_code == 202, answer(resp)
    assert answer(resp)["snapshot"] == newest


def test_refusals(runtime: Runtime, client: FakeDurableClient) -> None:
    assert start(client, raw=b"[1, 2]").status_code == 400
    assert start(client, raw=b"{" + b" " * 5000 + b"}").status_code == 413
    assert start(client, {"snapshot": "snapshots/high-value/none.csv"}).status_code == 404
    nobody = principal("nn@example.com", "Some.Other.Role")
    assert start(client, headers=nobody).status_code == 403
    req = http("POST", "exports/nope/runs", route_params={"name": "nope"})
    assert asyncio.run(triggers.start_export_run(req, client)).status_code == 404
    anonymous = func.HttpRequest(
        "POST", f"{ORIGIN}/api/exports/weekly/runs", body=b"", route_params={"name": "weekly"}
    )
    assert asyncio.run(triggers.start_export_run(anonymous, client)).status_code == 401
    assert client.started() == []


# --- HTTP: status, cancel, list ------------------------------------------------------------------


def status_of(client: FakeDurableClient, iid: str, export: str = "weekly") -> func.HttpResponse:
    req = http(
        "GET",
        f"exports/{export}/runs/{iid}",
        route_params={"name": export, "instance_id": iid},
    )
    return asyncio.run(triggers.get_export_run(req, client))


def test_status_shows_progress_including_the_running_group(
    runtime: Runtime, client: FakeDurableClient
) -> None:
    iid = answer(start(client))["instance_id"]
    group = f"{iid}-g0001"
    client.set(
        iid,
        "Running",
        customStatus={"phase": "sending", "chunks": 120, "chunks_pushed": 50, "group": group},
    )
    client.set(group, "Running", customStatus={"chunks_pushed": 8, "confirmed": 70_000})
    resp = status_of(client, iid)
    assert resp.status_code == 200
    body = answer(resp)
    assert body["runtime_status"] == "Running"
    assert body["progress"]["chunks_pushed"] == 58 and body["progress"]["confirmed"] == 70_000
    assert body["report"] is None


def test_status_of_a_finished_run_has_its_report(
    runtime: Runtime, client: FakeDurableClient
) -> None:
    started = answer(start(client, {"dry_run": True}))
    iid = started["instance_id"]
    req = orch.RunInput.from_dict(json.loads(client.instances[iid]["input"])).request
    runtime.engine.prepare(req)
    runtime.engine.finalize(req)
    client.set(iid, "Completed", output={"status": "dry_run"})
    body = answer(status_of(client, iid))
    assert body["report"]["status"] == "dry_run"
    assert body["report"]["planned"] == 5
    assert "batches" not in body["report"]

    listed = http("GET", "exports/weekly/runs", route_params={"name": "weekly"})
    runs = answer(triggers.list_export_runs(listed))["runs"]
    assert [r["run_id"] for r in runs] == [started["run_id"]]
    bad = http("GET", "exports/weekly/runs", params={"limit": "0"}, route_params={"name": "weekly"})
    assert triggers.list_export_runs(bad).status_code == 400


def test_status_of_an_unknown_or_foreign_instance_is_404(
    runtime: Runtime, store: LocalStore, client: FakeDurableClient
) -> None:
    assert status_of(client, "weekly-nothing").status_code == 404
    seed(store, export="daily")
    iid = answer(start(client))["instance_id"]
    assert status_of(client, iid, export="daily").status_code == 404


def cancel(client: FakeDurableClient, iid: str, **params: str) -> func.HttpResponse:
    req = http(
        "POST",
        f"exports/weekly/runs/{iid}/cancel",
        params=params,
        route_params={"name": "weekly", "instance_id": iid},
    )
    return asyncio.run(triggers.cancel_export_run(req, client))


def test_cancel_raises_the_event_for_the_run_and_its_group(
    runtime: Runtime, client: FakeDurableClient
) -> None:
    iid = answer(start(client))["instance_id"]
    group = f"{iid}-g0000"
    client.set(iid, "Running", customStatus={"group": group})
    client.set(group, "Running")
    resp = cancel(client, iid)
    assert resp.status_code == 202 and answer(resp)["cancel"] == "requested"
    events = [args for name, args in client.calls if name == "raise_event"]
    assert [(i, e) for i, e, _ in events] == [(iid, orch.CANCEL_EVENT), (group, orch.CANCEL_EVENT)]
    assert "ada@example.com" not in json.dumps(events), "the principal is masked"


def test_forced_cancel_terminates_and_a_finished_run_cannot_be_cancelled(
    runtime: Runtime, client: FakeDurableClient
) -> None:
    iid = answer(start(client))["instance_id"]
    client.set(iid, "Running")
    assert answer(cancel(client, iid, force="true"))["cancel"] == "terminated"
    assert client.instances[iid]["runtimeStatus"] == "Terminated"
    assert cancel(client, iid).status_code == 409


def test_the_timer_runs_a_snapshot_again_after_a_run_stopped_after_prepare(
    runtime: Runtime, store: LocalStore, client: FakeDurableClient
) -> None:
    """The last run over the newest snapshot failed after prepare (ActiveCampaign was down):
    the next tick runs it again, up to MAX_TIMER_ATTEMPTS runs in a row; a failure the
    snapshot carries (retry False) or a completed run is not repeated."""
    identity = runtime.engine.store_snapshot(SNAPSHOT).identity

    def last_run(status: str, *, retry: bool, attempts: int) -> None:
        last = LastRun(
            run_id="20260101T000000Z-00000001",
            snapshot_identity=identity,
            status=status,
            finished_at="2026-01-01T00:00:00+00:00",
            attempts=attempts,
            retry=retry,
        )
        write_record(store, runs.last_run_path("weekly"), last)

    iid = expected_instance(runtime)
    for status, retry, attempts, starts in [
        ("failed", True, 1, True),
        ("failed", True, runs.MAX_TIMER_ATTEMPTS - 1, True),
        ("failed", True, runs.MAX_TIMER_ATTEMPTS, False),
        ("failed", False, 1, False),
        ("completed", False, 1, False),
    ]:
        client.calls.clear()
        client.set(iid, "Failed" if status == "failed" else "Completed")  # the previous run
        last_run(status, retry=retry, attempts=attempts)
        store.delete(runs.schedule_path("weekly"))  # the export's next scheduled time is due
        asyncio.run(triggers.export_timer(TimerRequest(), client))
        started = [i for _, i, _ in client.started()]
        assert started == ([iid] if starts else []), (status, retry, attempts)


# --- one run per export at a time ----------------------------------------------------------------


def test_one_run_per_export_http_409_blob_waits_and_the_timer_runs_it_after(
    runtime: Runtime, store: LocalStore, client: FakeDurableClient
) -> None:
    """Run A (the first snapshot) is prepared and unfinished when a second snapshot lands: the
    blob trigger starts nothing and leaves it pending, a person's run now gets 409 naming run A
    and where to follow it, and once A has ended the next timer tick runs the pending one."""
    engine = runtime.engine
    first = engine.new_run("weekly", snapshot=engine.store_snapshot(SNAPSHOT))
    engine.prepare(first)
    second = "snapshots/high-value/2026-01-06.csv"
    store.write_bytes(second, snapshot_csv(6))

    blob = blob_event(second)
    asyncio.run(triggers.snapshot_blob_trigger(blob, client))
    assert client.started() == []
    assert store.exists(runs.pending_path("weekly"))

    resp = start(client, {"snapshot": second})
    assert resp.status_code == 409
    body = answer(resp)
    assert body["run_id"] == first.run_id
    assert body["status_url"].endswith(f"/runs/{expected_instance(runtime)}")
    asyncio.run(triggers.export_timer(TimerRequest(), client))
    assert client.started() == [], "the pending snapshot waits while run A is unfinished"

    engine.finalize(first, error="stopped for the test")
    asyncio.run(triggers.export_timer(TimerRequest(), client))
    [(_, iid, data)] = client.started()
    assert iid == expected_instance(runtime, second)
    assert data["request"]["requested_by"] == "blob"
    assert not store.exists(runs.pending_path("weekly"))


def test_a_newer_pending_snapshot_replaces_an_older_one(
    runtime: Runtime, store: LocalStore, client: FakeDurableClient
) -> None:
    engine = runtime.engine
    engine.prepare(engine.new_run("weekly", snapshot=engine.store_snapshot(SNAPSHOT)))
    for day in ("06", "07"):
        path = f"snapshots/high-value/2026-01-{day}.csv"
        store.write_bytes(path, snapshot_csv(int(day)))
        blob = blob_event(path)
        asyncio.run(triggers.snapshot_blob_trigger(blob, client))
    pending = json.loads(store.read_bytes(runs.pending_path("weekly")))
    assert pending["path"] == "snapshots/high-value/2026-01-07.csv"  # latest wins


def test_starts_that_raced_past_the_check_prepare_one_at_a_time(
    runtime: Runtime, store: LocalStore, client: FakeDurableClient
) -> None:
    """A person's run now and a new snapshot's blob trigger land in the same instant: both
    orchestrations start (nothing was running yet). Their prepare activities decide: exactly
    one prepares, the other reads nothing and its snapshot waits as pending for the next tick."""
    second = "snapshots/high-value/2026-01-06.csv"
    store.write_bytes(second, snapshot_csv(6))
    assert start(client, {"snapshot": SNAPSHOT}).status_code == 202
    blob = blob_event(second)
    asyncio.run(triggers.snapshot_blob_trigger(blob, client))
    (_, _, by_http), (_, _, by_blob) = client.started()

    won = orch.prepare_run({"request": by_http["request"]})
    assert won["chunks"]
    with pytest.raises(RunConflict):
        orch.prepare_run({"request": by_blob["request"]})
    loser = RunRequest.from_dict(by_blob["request"])
    assert not store.exists(runs.manifest_path("weekly", loser.run_id))
    pending = json.loads(store.read_bytes(runs.pending_path("weekly")))
    assert pending["path"] == second


# --- runs that ended without finalizing ----------------------------------------------------------


@pytest.mark.parametrize(
    ("instance_status", "closed_as"),
    [("Terminated", "terminated"), ("Failed", "abandoned"), ("Running", None), (None, None)],
)
def test_the_timer_closes_a_run_whose_orchestration_ended_without_a_report(
    runtime: Runtime,
    store: LocalStore,
    client: FakeDurableClient,
    instance_status: str | None,
    closed_as: str | None,
) -> None:
    """A force-terminated run (or one whose finalize failed) gets a reconciling report at the
    next tick and frees its export; a running one, or one without an instance, is left."""
    engine = runtime.engine
    run = engine.new_run("weekly", snapshot=engine.store_snapshot(SNAPSHOT))
    engine.prepare(run)
    iid = expected_instance(runtime)
    if instance_status is not None:
        client.set(iid, instance_status)
    asyncio.run(triggers.export_timer(TimerRequest(), client))
    report = read_record(store, runs.report_path("weekly", run.run_id), RunReport)
    if closed_as is None:
        assert report is None
        assert store.exists(runs.active_run_path("weekly"))
        return
    assert report is not None and report.status == closed_as
    assert report.reconciles() is True
    assert report.failed_by_reason == {closed_as: 5}
    assert not store.exists(runs.active_run_path("weekly")), "the export is free again"
    [listed] = engine.list_runs("weekly")
    assert listed.status == closed_as
    signals = [args for name, args in client.calls if name == "signal_entity"]
    assert [(op, member) for _, op, member in signals] == [("leave", iid)], "its share is freed"


# --- activities ----------------------------------------------------------------------------------


def test_activities_refuse_a_snapshot_on_the_workers_disk(runtime: Runtime, tmp_path: Path) -> None:
    """Regression (issue 15): a run input naming ``location: "local"`` made the activity read
    a path on the worker's own disk; the Functions app reads only the store."""
    secret_file = tmp_path / "etc-passwd.csv"
    secret_file.write_bytes(snapshot_csv(2))
    local = runtime.engine.new_run(
        "weekly",
        snapshot=runtime.engine.local_snapshot(secret_file),
        snapshot_location=runs.LOCAL,
        requested_by="test",
    )
    payload = {"request": local.to_dict(), "chunk": "x", "share": 1.0}
    for activity in (orch.prepare_run, orch.push_chunk, orch.confirm_chunk, orch.finalize_run):
        with pytest.raises(ConfigError, match="only snapshots in the store"):
            activity(payload)
    assert not runtime.store.exists(runs.manifest_path("weekly", local.run_id))
    stored = runtime.engine.new_run("weekly", requested_by="test")
    result = orch.prepare_run({"request": stored.to_dict()})
    assert result["run_id"] == stored.run_id
