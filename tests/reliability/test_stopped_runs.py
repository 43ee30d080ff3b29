"""Runs that end without knowing everything: ActiveCampaign unreachable for longer than the
retry policy waits, and imports whose outcome was never learnt.

What must hold (``docs/guarantees.md``): the run ends with a report that reconciles (every
contact not confirmed is counted ``failed`` with a reason), nothing is recorded as confirmed
that was not, the next run sends what is missing, and a contact that *may* have been
subscribed is remembered as possibly subscribed by this export, so that it is unsubscribed
when it leaves the segment.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter import state as state_mod
from exporter.activecampaign import PollPolicy
from exporter.store import LocalStore
from sandbox import Faults, Sandbox
from tests.reliability import support

INFO = "GET /import/info"


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
