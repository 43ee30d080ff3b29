"""Durable activities are retried: every phase called twice does its work once.

The Durable Functions host may run an activity again after it finished (a worker recycled
before the result was recorded). A second ``prepare``, ``push_chunk``, ``confirm_chunk`` or
``finalize`` of the same run must return what the first returned, send nothing, and count
nothing twice.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter.run.engine import Engine, RunRequest
from exporter.storage import runs
from sandbox import Sandbox
from tests.reliability import support

BULK = "POST /import/bulk_import"
INFO = "GET /import/info"


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with support.running_sandbox(time_scale=100.0) as sb:
        yield sb


def _request(engine: Engine, snapshot: Path) -> RunRequest:
    return engine.new_run(
        support.EXPORT, snapshot=Engine.local_snapshot(snapshot), snapshot_location=runs.LOCAL
    )


def test_every_phase_twice_does_the_work_once(tmp_path: Path, sandbox: Sandbox) -> None:
    home = tmp_path / "home"
    support.configure(home, sandbox.port)
    # 3 chunks of 2 batches (250 contacts each) and a few bad rows.
    people = [support.Person(f"c{i}@example.com", city=f"City {i % 7}") for i in range(1400)]
    snapshot = support.write_people(tmp_path / "s.csv", people, invalid=["nope", "x@"])
    engine = support.engine(home, chunk_batches=2)
    req = _request(engine, snapshot)

    prepared = engine.prepare(req)
    assert engine.prepare(req) == prepared
    assert len(prepared.chunks) == 3

    for chunk in prepared.chunks:
        bulk_before = sandbox.request_counts().get(BULK, 0)
        pushed = engine.push_chunk(req, chunk)
        bulk_after = sandbox.request_counts().get(BULK, 0)
        assert bulk_after - bulk_before == pushed.batches
        assert engine.push_chunk(req, chunk) == pushed
        assert sandbox.request_counts().get(BULK, 0) == bulk_after, "second push sent again"

    confirmed = []
    for chunk in prepared.chunks:
        first = engine.confirm_chunk(req, chunk)
        polls = sandbox.request_counts().get(INFO, 0)
        assert engine.confirm_chunk(req, chunk) == first
        assert sandbox.request_counts().get(INFO, 0) == polls, "second confirm polled again"
        confirmed.append(first)
    # A push retried after its confirm ran is still a no-op.
    bulk = sandbox.request_counts().get(BULK, 0)
    engine.push_chunk(req, prepared.chunks[0])
    assert sandbox.request_counts().get(BULK, 0) == bulk

    report = engine.finalize(req)
    again = engine.finalize(req)
    assert again.to_dict() == report.to_dict()
    assert report.status == "completed"
    assert report.confirmed == sum(s.confirmed for s in confirmed) == 1400
    assert report.sent == 1400
    assert report.rejected == 2
    assert report.reconciles()
    assert sandbox.list_members(support.LIST_ID) == {p.email for p in people}
    state = support.state_emails(home)
    assert set(state) == {p.email for p in people}

    # A retried finalize after the state moved on still answers from its record.
    assert engine.finalize(req).to_dict() == report.to_dict()
    assert support.check_store_intact(home) == []


def test_retried_push_after_a_lost_answer_counts_each_contact_once(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    """Every bulk answer lost once (the import was queued): the retried request queues it
    again, yet the report counts each contact once and the list holds each once."""
    from sandbox import Faults

    home = tmp_path / "home"
    support.configure(home, sandbox.port)
    people = [support.Person(f"l{i}@example.com") for i in range(2000)]
    snapshot = support.write_people(tmp_path / "s.csv", people)
    sandbox.set_faults(Faults(lost_response_rate=0.5, endpoints=frozenset({BULK})))
    engine = support.engine(home)
    report = support.run_csv(engine, snapshot)
    sandbox.set_faults(Faults())
    assert report.status == "completed", report.summary()
    assert report.confirmed == report.sent == 2000
    assert report.reconciles()
    assert sandbox.injected_fault_counts().get("lost_response", 0) > 0
    assert sandbox.list_members(support.LIST_ID) == {p.email for p in people}
    assert sandbox.contacts_count() == 2000
