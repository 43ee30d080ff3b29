"""Every batch accounted for (issue #14): a push stopped anywhere and retried re-sends nothing
ActiveCampaign acknowledged, and every contact that may have been queued is remembered as
ours — checked against the sandbox over real HTTP, through the engine's own phases."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from exporter.activecampaign import ActiveCampaignClient, RateLimiter, RetryPolicy
from exporter.activecampaign.transport import RequestsTransport, Response
from exporter.management.config import Connection
from exporter.management.hostnames import base_url
from exporter.run import lease
from exporter.run.report import RunReport
from exporter.storage import runs
from exporter.storage.records import read_record
from sandbox import Faults, Sandbox
from tests.integration.support import KEY, LIST, World, contact_row, make_world, sandbox_config
from tests.reliability.support import state_emails

SCALE = 50.0
BULK = "/import/bulk_import"


class Killed(BaseException):
    """The worker died (not an error the code may catch: like SIGKILL mid-activity)."""


class Tap:
    """A transport over real HTTP that calls ``before``/``after`` around every bulk import."""

    def __init__(self) -> None:
        self.inner = RequestsTransport()
        self.bulk = 0
        self.before: Callable[[int], None] = lambda n: None
        self.after: Callable[[int], None] = lambda n: None

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        params: Mapping[str, str] | None,
        body: bytes | None,
        timeout: float,
    ) -> Response:
        bulk = url.endswith(BULK)
        if bulk:
            self.bulk += 1
            self.before(self.bulk)
        response = self.inner.request(
            method, url, headers=headers, params=params, body=body, timeout=timeout
        )
        if bulk:
            self.after(self.bulk)
        return response


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    config = sandbox_config(SCALE, seed=1)
    with Sandbox(config) as sb:
        yield sb


def _world(tmp_path: Path, sb: Sandbox, tap: Tap, chunk_batches: int) -> World:
    def factory(connection: Connection, key: str) -> ActiveCampaignClient:
        return ActiveCampaignClient(
            base_url(connection.hostname),
            key,
            transport=tap,
            limiter=RateLimiter(time_scale=SCALE),
            retry=RetryPolicy(initial_backoff=0.01, max_backoff=0.05, max_attempts=2),
        )

    return make_world(
        tmp_path,
        f"127.0.0.1:{sb.port}",
        time_scale=SCALE,
        chunk_batches=chunk_batches,
        client_factory=factory,
    )


def _bulk_posts(sb: Sandbox) -> int:
    return sb.request_counts().get("POST /import/bulk_import", 0)


@pytest.mark.parametrize(("answer_lost", "expected_posts"), [(False, 8), (True, 9)])
def test_a_push_killed_mid_chunk_and_retried_sends_each_batch_once(
    tmp_path: Path, sandbox: Sandbox, answer_lost: bool, expected_posts: int
) -> None:
    """Killed at the 6th of 8 bulk imports — before it left, or after it was sent but before
    its answer came back — and retried: batches 1-5 are not sent again; only a lost answer
    costs one more request."""
    tap = Tap()
    world = _world(tmp_path, sandbox, tap, chunk_batches=8)
    rows = [contact_row(i) for i in range(2000)]
    req = world.request(world.write_csv(rows))
    [chunk] = world.engine.prepare(req).chunks

    def die(n: int) -> None:
        if n == 6:
            raise Killed

    if answer_lost:
        tap.after = die
    else:
        tap.before = die
    with pytest.raises(Killed):
        world.engine.push_chunk(req, chunk)
    tap.before = tap.after = lambda n: None
    summary = world.engine.push_chunk(req, chunk)  # the retry
    assert summary.sent == 2000 and summary.batches == 8
    assert _bulk_posts(sandbox) == expected_posts
    world.engine.confirm_chunk(req, chunk)
    report = world.engine.finalize(req)
    assert report.status == "completed" and report.reconciles(), report.summary()
    assert report.confirmed == 2000
    assert report.requests["bulk_import"] == 8
    assert len(sandbox.list_members(LIST)) == 2000


@pytest.mark.parametrize(("answer_lost", "expected_posts"), [(False, 4), (True, 5)])
def test_a_confirm_killed_after_resubmitting_does_not_resubmit_again(
    tmp_path: Path, sandbox: Sandbox, answer_lost: bool, expected_posts: int
) -> None:
    """Both imports of a chunk fail and are resubmitted; confirm dies after the first
    resubmission was answered (or while its answer was on the way). The retried confirm polls
    that resubmission instead of sending it again; only a lost answer costs one more."""
    tap = Tap()
    world = _world(tmp_path, sandbox, tap, chunk_batches=2)
    req = world.request(world.write_csv([contact_row(i) for i in range(500)]))
    [chunk] = world.engine.prepare(req).chunks
    sandbox.set_faults(Faults(batch_failed_rate=1.0))
    world.engine.push_chunk(req, chunk)

    def heal(n: int) -> None:
        if n == 3:  # the first resubmission (after 2 pushes) will be queued and complete
            sandbox.set_faults(Faults())
        if n == 4 and not answer_lost:  # answered and recorded; dies before the next one
            raise Killed

    def lose(n: int) -> None:
        if n == 3 and answer_lost:
            raise Killed

    tap.before, tap.after = heal, lose
    with pytest.raises(Killed):
        world.engine.confirm_chunk(req, chunk)
    tap.before = tap.after = lambda n: None
    confirmed = world.engine.confirm_chunk(req, chunk)
    assert _bulk_posts(sandbox) == expected_posts
    assert confirmed.confirmed == 500
    report = world.engine.finalize(req)
    assert report.reconciles() and report.status == "completed", report.summary()
    assert report.requests["bulk_import"] == 4


def test_imports_queued_before_activecampaign_went_down_are_remembered_as_ours(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    """ActiveCampaign goes down after accepting 2 of a chunk's 8 imports: the run fails, but
    the 500 queued contacts (which did land) are in the state as ours, so when they leave the
    segment the next run unsubscribes them."""
    tap = Tap()
    world = _world(tmp_path, sandbox, tap, chunk_batches=8)
    rows = [contact_row(i) for i in range(2000)]

    def go_down(n: int) -> None:
        if n == 2:
            sandbox.set_faults(Faults(http_503_rate=1.0))

    tap.after = go_down
    report = world.engine.run(world.request(world.write_csv(rows)))
    assert report.status == "failed" and report.reconciles(), report.summary()
    sandbox.set_faults(Faults())
    tap.after = lambda n: None
    landed = sandbox.list_members(LIST)
    assert len(landed) == 500
    state = state_emails(world.store.root)
    assert all(state[e][1] for e in landed), "a queued contact is not remembered as ours"
    # They leave the segment; everyone else stays. The next run unsubscribes the 500.
    stayed = [r for r in rows if r[0] not in landed]
    second = world.engine.run(world.request(world.write_csv(stayed), allow_shrink=True))
    assert second.reconciles(), second.summary()
    assert second.leavers_unsubscribed == 500
    assert sandbox.list_members(LIST) == {r[0] for r in stayed}
    assert sandbox.list_members(LIST, status=2) == landed


def _join_list_elsewhere(sb: Sandbox, emails: list[str]) -> None:
    """People subscribed to the list by another route (a sign-up form, another tool)."""
    client = ActiveCampaignClient(
        f"http://127.0.0.1:{sb.port}", KEY, limiter=RateLimiter(time_scale=SCALE)
    )
    with client:
        for email in emails:
            client.set_list_status(client.contact_sync(email), LIST, 1)


def test_people_on_the_list_before_the_export_are_never_unsubscribed(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    """The list already holds members — some in the segment, some not — when the export first
    runs; one more joins by another route later. When they leave the segment they stay on the
    list, while the export's own leavers are unsubscribed."""
    before = [f"person{i}@example.com" for i in range(20)]  # in the segment at first
    outside = [f"stranger{i}@example.com" for i in range(5)]  # never in the segment
    _join_list_elsewhere(sandbox, before + outside)
    world = _world(tmp_path, sandbox, Tap(), chunk_batches=4)
    segment = [contact_row(i) for i in range(200)]
    first = world.engine.run(world.request(world.write_csv(segment)))
    assert first.status == "completed" and first.confirmed == 200
    # Between runs, person300 signs up elsewhere, then enters the segment with the next run.
    _join_list_elsewhere(sandbox, ["person300@example.com"])
    second = world.engine.run(world.request(world.write_csv([*segment, contact_row(300)])))
    assert second.status == "completed" and second.new == 1
    # Everyone pre-existing, and 20 of the export's own (100..119), leave the segment.
    stays = [contact_row(i) for i in range(20, 200) if not 100 <= i < 120]
    third = world.engine.run(world.request(world.write_csv(stays), allow_shrink=True))
    assert third.reconciles(), third.summary()
    assert third.left == 20 + 20 + 1
    assert (third.leavers_unsubscribed, third.leavers_kept) == (20, 21)
    active = sandbox.list_members(LIST)
    assert set(before) | set(outside) | {"person300@example.com"} <= active
    ours = {f"person{i}@example.com" for i in range(100, 120)}
    assert sandbox.list_members(LIST, status=2) == ours


def test_an_existing_contact_who_joins_the_list_elsewhere_between_runs_is_never_unsubscribed(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    """person500 is already a contact of the account (not on the list) when the export first
    runs, so no read by contact id will ever see them. Between runs they join the list by
    another route, then enter the segment; when they leave it they stay on the list (the read
    of members updated since the last run found them), while the export's own leaver goes."""
    client = ActiveCampaignClient(
        f"http://127.0.0.1:{sandbox.port}", KEY, limiter=RateLimiter(time_scale=SCALE)
    )
    with client:
        existing = client.contact_sync("person500@example.com")
    world = _world(tmp_path, sandbox, Tap(), chunk_batches=4)
    segment = [contact_row(i) for i in range(100)]
    assert world.engine.run(world.request(world.write_csv(segment))).status == "completed"
    with client:
        client.set_list_status(existing, LIST, 1)
    joined = [*segment, contact_row(500)]
    second = world.engine.run(world.request(world.write_csv(joined)))
    assert second.status == "completed" and second.new == 1
    third = world.engine.run(world.request(world.write_csv(segment[1:]), allow_shrink=True))
    assert third.reconciles(), third.summary()
    assert (third.leavers_unsubscribed, third.leavers_kept) == (1, 1)
    assert "person500@example.com" in sandbox.list_members(LIST)
    assert sandbox.list_members(LIST, status=2) == {"person0@example.com"}


def test_a_run_whose_host_died_is_closed_as_abandoned_by_the_next_run(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    """Run A's host dies mid-push (2 of 8 imports queued) and never finalizes. The next run of
    the export, past the lease's TTL, closes A with a reconciling ``abandoned`` report that
    commits A's queued contacts as ours, so when they leave, run B unsubscribes them."""
    tap = Tap()
    world = _world(tmp_path, sandbox, tap, chunk_batches=8)
    rows = [contact_row(i) for i in range(2000)]
    run_a = world.request(world.write_csv(rows))
    [chunk] = world.engine.prepare(run_a).chunks

    def die(n: int) -> None:
        if n == 3:
            raise Killed

    tap.before = die
    with pytest.raises(Killed):
        world.engine.push_chunk(run_a, chunk)
    tap.before = lambda n: None
    deadline = time.monotonic() + 10
    while sandbox.pending_batches() and time.monotonic() < deadline:
        time.sleep(0.02)  # ActiveCampaign processes the queued imports
    queued = sandbox.list_members(LIST)
    assert len(queued) == 500
    later = datetime.now(UTC) + lease.LEASE_TTL + timedelta(minutes=1)
    world.engine.clock = lambda: later
    stayed = [r for r in rows if r[0] not in queued]
    run_b = world.engine.run(world.request(world.write_csv(stayed), allow_shrink=True))
    report_a = read_record(world.store, runs.report_path(run_a.export, run_a.run_id), RunReport)
    assert report_a is not None and report_a.status == "abandoned", report_a
    assert report_a.reconciles() is True
    assert report_a.failed_by_reason == {"abandoned": 2000}
    assert run_b.status == "completed" and run_b.reconciles(), run_b.summary()
    assert run_b.leavers_unsubscribed == 500
    assert sandbox.list_members(LIST) == {r[0] for r in stayed}
    assert sandbox.list_members(LIST, status=2) == queued


def test_a_later_run_does_not_read_back_the_contacts_the_export_created(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    """The first run reads the (empty) list and creates 2,000 contacts; the next run reads only
    contacts created or updated since the first ended — by the mark's one-second margin, the
    last batch at most — not the 2,000 back (20 requests each run at 2,000, ten thousand at a
    million: the daily refresh took 42 minutes instead of one)."""
    tap = Tap()
    world = _world(tmp_path, sandbox, tap, chunk_batches=8)
    rows = [contact_row(i) for i in range(2000)]
    # A run lasts longer than the mark's margin in life; here it would take well under a
    # second, so the last of its 8 batches goes 2.1 s after the first seven.
    tap.before = lambda n: time.sleep(2.1) if n == 8 else None
    assert world.engine.run(world.request(world.write_csv(rows))).status == "completed"
    tap.before = lambda n: None
    before = sandbox.request_counts().get("GET /contacts", 0)
    changed = [contact_row(0, city="Paris"), *rows[1:]]
    second = world.engine.run(world.request(world.write_csv(changed)))
    assert second.status == "completed" and second.confirmed == 1
    # One read of new members, at most 3 pages of updated ones (the last batch's 250 were
    # subscribed within the margin), one to move the marks.
    assert sandbox.request_counts().get("GET /contacts", 0) - before <= 5
