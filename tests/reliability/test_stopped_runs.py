"""Runs that end without knowing everything: ActiveCampaign unreachable for longer than the
retry policy waits (for one batch, or for good), and imports whose outcome was never learnt.

What must hold (``docs/guarantees.md``): the run ends with a report that reconciles (every
contact not confirmed is counted ``failed`` with a reason), nothing is recorded as confirmed
that was not, the next run sends what is missing, and a contact that *may* have been
subscribed is remembered as possibly subscribed by this export, so that it is unsubscribed
when it leaves the segment.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from exporter.activecampaign import PollPolicy, RequestsTransport, Response
from exporter.incremental import state as state_mod
from exporter.storage.store import LocalStore
from sandbox import Faults, Sandbox
from tests.reliability import support

INFO = "GET /import/info"
BULK = "POST /import/bulk_import"


class RefusingBulkImports(RequestsTransport):
    """The real transport, except that a bulk import carrying ``marker`` (any bulk import when
    it is empty) is answered 503 every time: one batch stays unavailable beyond its retries."""

    def __init__(self, marker: str = "") -> None:
        super().__init__()
        self.marker = marker.encode()
        self.refused = 0

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
        if url.endswith("/import/bulk_import") and body is not None and self.marker in body:
            self.refused += 1
            return Response(503, {"Content-Type": "text/html"}, b"<html>unavailable</html>")
        return super().request(
            method, url, headers=headers, params=params, body=body, timeout=timeout
        )


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with support.running_sandbox(time_scale=100.0) as sb:
        yield sb


@pytest.fixture
def slow_sandbox() -> Iterator[Sandbox]:
    """Imports take about a second to finish: longer than a tiny poll deadline."""
    with support.running_sandbox(time_scale=2.0) as sb:
        yield sb


def test_api_unavailable_beyond_retries_ends_with_a_report(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    """``import/info`` answers 503 to every poll: the retry policy gives up. The run must still
    end with a reconciling report (status ``failed``, the contacts ``failed``), not with a bare
    exception and no report; the next run confirms them."""
    home = tmp_path / "home"
    support.configure(home, sandbox.port)
    people = [support.Person(f"u{i}@example.com") for i in range(300)]
    snapshot = support.write_people(tmp_path / "s.csv", people)
    engine = support.engine(home)
    sandbox.set_faults(Faults(http_503_rate=1.0, endpoints=frozenset({INFO})))

    report = support.run_csv(engine, snapshot)

    assert report.status == "failed", report.summary()
    assert report.error and "503" in report.error
    assert report.reconciles(), report.summary()
    assert report.confirmed == 0
    assert report.failed == 300
    # The imports were queued, so they may have landed: state may remember them only as
    # uncertain (STALE: sent again next run, unsubscribed if they leave), never as confirmed.
    state, _etag = state_mod.load(LocalStore(home), support.EXPORT)
    assert all(int(flag) & state_mod.STALE for flag in state.flags)
    sandbox.set_faults(Faults())
    again = support.run_csv(engine, snapshot)
    assert again.status == "completed"
    assert sandbox.list_members(support.LIST_ID) == {p.email for p in people}


def test_one_batch_unavailable_beyond_retries_does_not_stop_the_run(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    """One batch's bulk import is answered 503 beyond every retry (the guarantee the fault soak
    relies on: at 22% faulty answers, one request in ~10,000 fails six times in a row). The run
    must go on with the other batches, end ``completed_with_failures`` with the batch's contacts
    ``failed`` (``api_unavailable``), remember them as possibly ours, and the next run sends
    them."""
    home = tmp_path / "home"
    support.configure(home, sandbox.port)
    people = [support.Person(f"u{i:04d}@example.com") for i in range(600)]  # 3 batches
    snapshot = support.write_people(tmp_path / "s.csv", people)
    refusing = RefusingBulkImports(marker="u0300@example.com")

    report = support.run_csv(support.engine(home, transport=refusing), snapshot)

    assert report.status == "completed_with_failures", report.summary()
    assert report.reconciles(), report.summary()
    unavailable = [b for b in report.batches if b.status == "unavailable"]
    assert len(unavailable) == 1 and unavailable[0].batch_id is None
    assert report.failed_by_reason == {"api_unavailable": unavailable[0].contacts}
    assert report.confirmed == 600 - unavailable[0].contacts
    assert refusing.refused == 6  # one request: its six attempts, and nothing more
    state, _etag = state_mod.load(LocalStore(home), support.EXPORT)
    stale = {
        state.entry_at(i).email for i, flag in enumerate(state.flags) if int(flag) & state_mod.STALE
    }
    assert len(stale) == unavailable[0].contacts and "u0300@example.com" in stale
    assert len(sandbox.list_members(support.LIST_ID)) == 600 - len(stale)

    again = support.run_csv(support.engine(home), snapshot)
    assert again.status == "completed", again.summary()
    assert again.confirmed == len(stale) and again.unchanged == 600 - len(stale)
    assert sandbox.list_members(support.LIST_ID) == {p.email for p in people}


def test_bulk_imports_unavailable_in_a_row_stop_the_run(tmp_path: Path, sandbox: Sandbox) -> None:
    """Every bulk import answered 503: after three batches in a row ActiveCampaign is down, not
    flaky, and the run stops (status ``failed``) instead of trying every remaining batch."""
    home = tmp_path / "home"
    support.configure(home, sandbox.port)
    people = [support.Person(f"u{i:04d}@example.com") for i in range(2000)]  # 8 batches
    snapshot = support.write_people(tmp_path / "s.csv", people)
    refusing = RefusingBulkImports()

    report = support.run_csv(support.engine(home, transport=refusing), snapshot)

    assert report.status == "failed", report.summary()
    assert report.error and "503" in report.error
    assert report.reconciles(), report.summary()
    assert report.confirmed == 0 and report.failed == 2000
    assert refusing.refused == 3 * 6


def test_import_with_unknown_outcome_is_unsubscribed_when_it_leaves(
    tmp_path: Path, slow_sandbox: Sandbox
) -> None:
    """An import not final within the poll deadline counts ``failed`` ("they may still land").
    It does land. When the contact then leaves the segment, this export subscribed it, so it
    must unsubscribe it; a state that never heard of the contact leaves it on the list."""
    sandbox = slow_sandbox
    home = tmp_path / "home"
    support.configure(home, sandbox.port)
    stay, leave = support.Person("stay@example.com"), support.Person("leave@example.com")
    engine = support.engine(home, time_scale=2.0)
    engine.poll = PollPolicy(initial_interval=0.01, max_interval=0.01, deadline=0.05)

    first = support.run_csv(engine, support.write_people(tmp_path / "1.csv", [stay, leave]))
    assert first.failed == 2, first.summary()
    assert first.failed_by_reason == {"import_timeout": 2}
    deadline = time.monotonic() + 10
    while sandbox.pending_batches() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sandbox.list_members(support.LIST_ID) == {stay.email, leave.email}  # it landed

    engine = support.engine(home, time_scale=2.0)
    second = support.run_csv(engine, support.write_people(tmp_path / "2.csv", [stay]))
    assert second.status == "completed", second.summary()
    assert sandbox.list_members(support.LIST_ID) == {stay.email}, (
        "a contact this export subscribed stayed on the list after leaving the segment"
    )
