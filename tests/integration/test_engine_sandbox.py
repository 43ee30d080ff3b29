"""Whole runs over real HTTP against the ActiveCampaign sandbox (in-process, loopback port,
compressed clock). Each test checks what the *account* ends up holding, not only the report."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from exporter.activecampaign import (
    ActiveCampaignClient,
    RateLimiter,
    RetryPolicy,
)
from exporter.management.config import Connection
from exporter.management.hostnames import base_url
from exporter.management.secrets import LocalSecretProvider
from exporter.run.engine import Engine
from sandbox import Faults, Sandbox
from tests.integration.support import (
    KEY,
    KEY_VAR,
    LIST,
    World,
    contact_row,
    make_world,
    sandbox_config,
)
from tests.openapi_contract import RecordingTransport, validate_request

SCALE = 50.0


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    config = sandbox_config(SCALE, seed=1)
    with Sandbox(config) as sb:
        yield sb


def _world(tmp_path: Path, sb: Sandbox, **kw: Any) -> World:
    return make_world(tmp_path, f"127.0.0.1:{sb.port}", time_scale=SCALE, **kw)


def _emails(rows: list[list[str]]) -> set[str]:
    return {r[0].lower() for r in rows}


def _bulk_posts(sb: Sandbox) -> int:
    return sb.request_counts().get("POST /import/bulk_import", 0)


def test_a_clean_run_subscribes_exactly_the_valid_contacts(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    transport = RecordingTransport()

    def factory(connection: Connection, key: str) -> ActiveCampaignClient:
        return ActiveCampaignClient(
            base_url(connection.hostname),
            key,
            transport=transport,
            limiter=RateLimiter(time_scale=SCALE),
            retry=RetryPolicy(initial_backoff=0.02, max_backoff=0.5),
        )

    world = _world(tmp_path, sandbox, chunk_batches=2, client_factory=factory)
    rows = [contact_row(i) for i in range(620)]
    rows += [contact_row(900, email="broken@"), contact_row(901, email="PERSON5@example.com")]
    report = world.engine.run(world.request(world.write_csv(rows)))
    assert report.status == "completed", report.summary()
    assert report.reconciles()
    assert (report.confirmed, report.rejected, report.duplicates) == (620, 1, 1)
    assert len(report.batches) == 3
    assert sandbox.list_members(LIST) == _emails(rows[:620])
    stored = sandbox.contact("person7@example.com")
    assert stored is not None and stored["fields"] == {
        "1": "Berlin",
        "2": "1980-01-02",
        "3": "Gold",
    }
    assert sandbox.automations_triggered() == 0  # exclude_automations is on by default
    bodies = [
        json.loads(b) for m, url, b in transport.sent if url.endswith("/import/bulk_import") and b
    ]
    assert len(bodies) == 3
    for body in bodies:
        validate_request("/import/bulk_import", "POST", body)


def test_push_and_confirm_are_idempotent(tmp_path: Path, sandbox: Sandbox) -> None:
    world = _world(tmp_path, sandbox, chunk_batches=1)
    req = world.request(world.write_csv([contact_row(i) for i in range(300)]))
    prep = world.engine.prepare(req)
    assert len(prep.chunks) == 2
    first = world.engine.push_chunk(req, prep.chunks[0], share=0.5)
    again = world.engine.push_chunk(req, prep.chunks[0], share=0.5)
    assert first == again and first.sent == 250
    assert _bulk_posts(sandbox) == 1  # the second call sent nothing
    confirmed = world.engine.confirm_chunk(req, prep.chunks[0])
    assert world.engine.confirm_chunk(req, prep.chunks[0]) == confirmed
    assert confirmed.confirmed == 250
    # An interrupted run resumes with the same id and does not push chunk 0 again.
    resumed = world.request(world.snapshots[0])
    assert resumed.run_id == req.run_id
    report = world.engine.run(resumed)
    assert report.status == "completed" and report.confirmed == 300 and report.reconciles()
    assert _bulk_posts(sandbox) == 2
    assert len(sandbox.list_members(LIST)) == 300


def test_faults_end_in_the_list_or_reported_failed_and_sent_next_run(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    failing = {"person3@example.com", "person404@example.com"}
    sandbox.set_faults(
        Faults(
            http_503_rate=0.1,
            http_429_rate=0.05,
            reset_rate=0.05,
            lost_response_rate=0.05,
            retry_after=0.5,
            batch_failed_rate=0.3,
            failure_emails=frozenset(failing),
        )
    )
    world = _world(tmp_path, sandbox, chunk_batches=2)
    rows = [contact_row(i) for i in range(1200)]
    report = world.engine.run(world.request(world.write_csv(rows)))
    assert report.reconciles(), report.summary()
    injected = sandbox.injected_fault_counts()
    assert injected.get("batch_failed", 0) > 0 and injected.get("http_503", 0) > 0, injected
    # A failing contact is refused by a completed import (its `failure` list) — unless its batch
    # failed twice (30% each time) and it never reached one: both end not on the list.
    assert report.failed_by_reason.get("import_failure_list", 0) == injected.get("failure_email", 0)
    assert report.status in ("completed_with_failures", "completed")
    listed = sandbox.list_members(LIST)
    assert not failing & listed
    assert failing <= (_emails(rows) - listed)
    assert report.confirmed == len(listed & _emails(rows))
    assert report.failed == len(_emails(rows)) - report.confirmed
    # the next run, without faults, sends only what did not land
    sandbox.set_faults(Faults())
    before = _bulk_posts(sandbox)
    second = world.engine.run(world.request(world.snapshots[0]))
    assert second.status == "completed" and second.reconciles()
    assert second.confirmed == report.failed and second.unchanged == report.confirmed
    assert _bulk_posts(sandbox) - before == -(-report.failed // 250)
    assert sandbox.list_members(LIST) == _emails(rows)


def test_a_second_run_sends_only_changes_and_unsubscribes_its_leavers(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    world = _world(tmp_path, sandbox)
    # someone this export never subscribed is on the list already
    outsider = "outsider@example.com"
    with ActiveCampaignClient(sandbox.base_url, KEY) as client:
        client.bulk_import(
            [f'{{"email":"{outsider}","subscribe":[{{"listid":"{LIST}"}}]}}'],
            exclude_automations=True,
        )
    rows = [contact_row(i) for i in range(100)]
    first = world.engine.run(world.request(world.write_csv(rows)))
    assert first.confirmed == 100
    sandbox.unsubscribe("person50@example.com", LIST)  # opted out inside ActiveCampaign
    # persons 0, 3 and 4 left; 1, 2 and 50 moved to Lisbon
    changed = [contact_row(1, city="Lisbon"), contact_row(2, city="Lisbon")]
    changed += [contact_row(i, city="Lisbon" if i == 50 else "Berlin") for i in range(5, 100)]
    before = _bulk_posts(sandbox)
    second = world.engine.run(world.request(world.write_csv(changed)))
    assert second.status == "completed" and second.reconciles()
    assert (second.changed, second.unchanged, second.new) == (3, 94, 0)
    assert (second.left, second.leavers_unsubscribed) == (3, 3)  # persons 0, 3 and 4
    assert _bulk_posts(sandbox) - before == 2  # one batch of changes, one of leavers
    active = sandbox.list_members(LIST)
    unsubscribed = sandbox.list_members(LIST, 2)
    assert {"person0@example.com", "person3@example.com", "person4@example.com"} <= unsubscribed
    assert "person50@example.com" in unsubscribed  # changed and sent, never re-subscribed
    assert outsider in active  # not this export's to unsubscribe
    contact = sandbox.contact("person50@example.com")
    assert contact is not None and contact["fields"]["1"] == "Lisbon"


def test_a_rejected_key_stops_the_run(tmp_path: Path, sandbox: Sandbox) -> None:
    world = _world(tmp_path, sandbox)
    world.env[KEY_VAR] = "wrong-key-000"
    rows = [contact_row(i) for i in range(10)]
    report = world.engine.run(world.request(world.write_csv(rows)))
    assert report.status == "failed" and report.reconciles()
    assert report.error is not None and "API key rejected" in report.error
    assert "wrong-key" not in json.dumps(report.to_dict())
    assert report.failed_by_reason == {"run_stopped": 10}
    assert sandbox.list_members(LIST) == set()


class RotatingSecrets(LocalSecretProvider):
    """Serves a stale key until invalidated (a key rotated while a run was prepared)."""

    def __init__(self, env: dict[str, str], stale: str) -> None:
        super().__init__(env)
        self.stale: str | None = stale
        self.invalidations = 0

    def get(self, ref: str) -> str:
        return self.stale if self.stale is not None else super().get(ref)

    def invalidate(self, ref: str) -> None:
        self.invalidations += 1
        self.stale = None


def test_a_rotated_key_is_read_again_once(tmp_path: Path, sandbox: Sandbox) -> None:
    world = _world(tmp_path, sandbox)
    secrets = RotatingSecrets(world.env, stale="old-key-000")
    engine = Engine(world.store, secrets, host_policy=world.engine.host_policy, time_scale=SCALE)
    req = world.request(world.write_csv([contact_row(i) for i in range(10)]))
    report = engine.run(req)
    assert report.status == "completed" and report.confirmed == 10
    assert secrets.invalidations == 1
