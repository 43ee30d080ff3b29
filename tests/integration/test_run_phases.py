"""The command line's run over real HTTP against the sandbox: the report says where the time
went (issue #18 item 5), polls do not wait for the limiter to see bulk idle once the pipeline
has sent its last import, and the list-members mark, moved beside finalize, is in place before
the run's lease is released."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter.activecampaign import ActiveCampaignClient, RateLimiter, RetryPolicy
from exporter.cli_progress import summary_paragraph
from exporter.errors import GuardError, InputError
from exporter.management.config import Connection
from exporter.management.hostnames import base_url
from exporter.progress import ProgressEvent
from exporter.run import finalize as finalize_mod
from exporter.run import members
from exporter.run.report import RunReport
from exporter.storage import runs
from exporter.storage.records import read_record
from sandbox import Sandbox
from tests.integration.support import (
    COLUMNS,
    EXPORT,
    KEY,
    LIST,
    World,
    contact_row,
    make_world,
    sandbox_config,
)

SCALE = 10.0


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(sandbox_config(SCALE, seed=3)) as sb:
        yield sb


def _world(tmp_path: Path, sb: Sandbox, limiters: list[RateLimiter], chunks: int) -> World:
    def factory(connection: Connection, key: str) -> ActiveCampaignClient:
        limiter = RateLimiter(time_scale=SCALE)
        limiters.append(limiter)
        return ActiveCampaignClient(
            base_url(connection.hostname),
            key,
            transport=None,
            limiter=limiter,
            retry=RetryPolicy(initial_backoff=0.02, max_backoff=0.5),
        )

    return make_world(
        tmp_path,
        f"127.0.0.1:{sb.port}",
        time_scale=SCALE,
        chunk_batches=chunks,
        client_factory=factory,
    )


def test_the_report_says_where_the_time_went(tmp_path: Path, sandbox: Sandbox) -> None:
    limiters: list[RateLimiter] = []
    world = _world(tmp_path, sandbox, limiters, chunks=2)
    report = world.engine.run(world.request(world.write_csv([contact_row(i) for i in range(1100)])))
    assert report.status == "completed" and report.reconciles(), report.summary()
    t = report.timings
    assert {"prepare", "members", "push", "confirm", "sending", "finalize", "total"} <= set(t)
    assert "confirm_after_push" in t
    # Sending is the members read, the push and the confirmations, overlapped: it holds the
    # push's time and the confirmations made after the last import, and fits in the total.
    assert t["sending"] >= t["push"] > 0
    assert t["sending"] >= t["confirm_after_push"] > 0
    assert t["sending"] >= t["members"] >= 0
    assert t["finalize"] > 0
    assert t["prepare"] + t["sending"] + t["finalize"] <= t["total"] + 0.01
    stored = read_record(world.store, runs.report_path(report.export, report.run_id), RunReport)
    assert stored is not None and stored.timings == t
    words = summary_paragraph(report, exit_code=0, width=10_000)
    assert f"send and confirm {t['sending']:.1f} s" in words
    assert f"({t['confirm_after_push']:.1f} s of it after the last bulk import)" in words


def test_polls_are_not_held_back_once_the_last_import_is_sent(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    """One chunk of three imports: its confirmations start right after the push, within the
    limiter's ``bulk_idle`` of the last import, and none of its polls is held back for a push
    that is over (before, each waited for the limiter to see two idle per-second windows)."""
    limiters: list[RateLimiter] = []
    world = _world(tmp_path, sandbox, limiters, chunks=40)
    rows = [contact_row(i) for i in range(700)]
    report = world.engine.run(world.request(world.write_csv(rows)))
    assert report.status == "completed" and report.confirmed == 700, report.summary()
    (limiter,) = limiters
    assert sandbox.request_counts().get("POST /import/bulk_import", 0) == 3
    assert limiter.held_back == 0


def test_the_mark_is_moved_by_the_run(tmp_path: Path, sandbox: Sandbox) -> None:
    """The mark's request runs beside finalize and is waited for: when the run returns, the
    list-members record holds ActiveCampaign's clock and a contact id past the run's own."""
    limiters: list[RateLimiter] = []
    world = _world(tmp_path, sandbox, limiters, chunks=2)
    rows = [contact_row(i) for i in range(600)]
    report = world.engine.run(world.request(world.write_csv(rows)))
    assert report.status == "completed", report.summary()
    record = read_record(world.store, members.record_path(EXPORT), members.ListMembersRecord)
    assert record is not None and record.updated_mark is not None
    assert record.max_id >= sandbox.contacts_count() == 600


def test_finalize_calls_before_release_while_the_lease_is_held(tmp_path: Path) -> None:
    """``before_release`` (the command line waits there for its mark) runs after the report
    is written and before the run's lease goes."""
    world = make_world(tmp_path)
    req = world.request(world.write_csv([contact_row(i) for i in range(10)]))
    world.engine.prepare(req)
    seen: list[tuple[bool, bool]] = []

    def check() -> None:
        seen.append(
            (
                world.store.exists(runs.active_run_path(EXPORT)),
                world.store.exists(runs.report_path(EXPORT, req.run_id)),
            )
        )

    report = finalize_mod.finalize(world.engine, req, before_release=check, timings={"x": 1.5})
    assert seen == [(True, True)]
    assert not world.store.exists(runs.active_run_path(EXPORT))
    assert report.timings["x"] == 1.5 and report.timings["finalize"] >= 0


def _list_reads(sb: Sandbox) -> int:
    return sb.request_counts().get("GET /contacts", 0)


def test_the_members_read_is_made_while_prepare_reads_the_snapshot(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    """The run's list-members read goes out beside prepare: prepare's last progress event
    (all rows read) waits until the sandbox has seen it. With the read after prepare, as
    before, it never would: the wait times out and the test fails."""
    limiters: list[RateLimiter] = []
    world = _world(tmp_path, sandbox, limiters, chunks=40)
    seen_during_prepare: list[int] = []

    def progress(event: ProgressEvent) -> None:
        if event.phase == "prepare" and event.total is not None:
            deadline = time.monotonic() + 10.0
            while not _list_reads(sandbox) and time.monotonic() < deadline:
                time.sleep(0.01)
            seen_during_prepare.append(_list_reads(sandbox))

    rows = [contact_row(i) for i in range(600)]
    report = world.engine.run(world.request(world.write_csv(rows)), progress=progress)
    assert report.status == "completed" and report.reconciles(), report.summary()
    assert seen_during_prepare == [1]
    assert sandbox.request_counts().get("POST /import/bulk_import", 0) == 3
    assert report.timings["members"] >= 0
    assert read_record(world.store, members.record_path(EXPORT), members.ListMembersRecord)


def test_a_guarded_run_reads_the_list_but_sends_nothing(tmp_path: Path, sandbox: Sandbox) -> None:
    """The read made beside prepare is a read: the shrink guard still stops the run before any
    bulk import, and the run's report is written after the read is over."""
    limiters: list[RateLimiter] = []
    world = _world(tmp_path, sandbox, limiters, chunks=40)
    first = world.engine.run(world.request(world.write_csv([contact_row(i) for i in range(20)])))
    assert first.status == "completed", first.summary()
    bulk = sandbox.request_counts().get("POST /import/bulk_import", 0)
    small = world.request(world.write_csv([contact_row(i) for i in range(5)]))
    with pytest.raises(GuardError):
        world.engine.run(small)
    assert sandbox.request_counts().get("POST /import/bulk_import", 0) == bulk
    guarded = world.engine.get_run(EXPORT, small.run_id)
    assert guarded.status == "guarded" and guarded.reconciles()
    assert not world.store.exists(runs.active_run_path(EXPORT))


def test_a_broken_snapshot_or_a_dry_run_sends_nothing(tmp_path: Path, sandbox: Sandbox) -> None:
    limiters: list[RateLimiter] = []
    world = _world(tmp_path, sandbox, limiters, chunks=40)
    dry = world.engine.run(world.request(world.write_csv([contact_row(1)]), dry_run=True))
    assert dry.status == "dry_run" and _list_reads(sandbox) == 0  # a dry run reads nothing
    broken = tmp_path / "broken.csv"
    good = ",".join(contact_row(1))
    broken.write_text(",".join(COLUMNS) + f'\r\n{good}\r\n"b@example.com,Bob\r\n')
    req = world.request(broken)
    with pytest.raises(InputError):
        world.engine.run(req)
    assert sandbox.request_counts().get("POST /import/bulk_import", 0) == 0
    assert world.engine.get_run(EXPORT, req.run_id).status == "failed"
    assert not world.store.exists(runs.active_run_path(EXPORT))


def test_a_run_stopped_before_sending_stops_its_members_read(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    """A first run reads the whole list (here 10,000 members: 100 pages, two seconds at this
    time scale) beside prepare. When the snapshot turns out unreadable, the run does not wait
    for that read: it stops at its next contact and records nothing."""
    client = ActiveCampaignClient(
        f"http://127.0.0.1:{sandbox.port}", KEY, limiter=RateLimiter(time_scale=SCALE)
    )
    with client:
        for b in range(40):
            payloads = [
                json.dumps({"email": f"m{b}x{i}@example.org", "subscribe": [{"listid": LIST}]})
                for i in range(250)
            ]
            client.bulk_import(payloads, exclude_automations=True)
    deadline = time.monotonic() + 30
    while sandbox.pending_batches() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(sandbox.list_members(LIST)) == 10_000
    world = _world(tmp_path, sandbox, [], chunks=40)
    broken = tmp_path / "broken.csv"
    broken.write_text(",".join(COLUMNS) + f'\r\n{",".join(contact_row(1))}\r\n"b@x.org,Bob\r\n')
    with pytest.raises(InputError):
        world.engine.run(world.request(broken))
    assert _list_reads(sandbox) < 100  # stopped, not read to the end
    assert read_record(world.store, members.record_path(EXPORT), members.ListMembersRecord) is None
    assert sandbox.request_counts().get("POST /import/bulk_import", 0) == 40  # ours only
