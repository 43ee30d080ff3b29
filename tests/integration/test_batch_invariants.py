"""Random kill, retry and outage points (Hypothesis), then one clean follow-up run: the
invariants of issue #14 hold whatever stopped the first run.

* the list is the follow-up's valid segment plus the people who were on it before the export,
  minus everyone who opted out;
* nobody who was on the list before the export is removed by it;
* bulk imports ActiveCampaign accepted <= the batches the reports account for + the answers
  that were lost;
* every report reconciles.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.activecampaign.transport import Response
from exporter.run.engine import RunRequest
from sandbox import Faults, Sandbox
from tests.integration.support import LIST, World, contact_row, sandbox_config
from tests.integration.test_batch_accounting import SCALE, Killed, Tap, _join_list_elsewhere, _world


@dataclass(frozen=True)
class Stop:
    kind: str
    """``none``, ``kill`` (the worker dies at bulk import ``at``; the run is started again)
    or ``down`` (ActiveCampaign answers 503 to everything after ``at`` accepted imports)."""
    at: int
    answer_lost: bool


stops = st.one_of(
    st.just(Stop("none", 0, False)),
    st.builds(Stop, st.just("kill"), st.integers(1, 6), st.booleans()),
    st.builds(Stop, st.just("down"), st.integers(1, 5), st.just(False)),
)


class CountingTap(Tap):
    """Counts the bulk imports ActiveCampaign accepted (answered 200)."""

    def __init__(self) -> None:
        super().__init__()
        self.accepted = 0

    def request(self, method: str, url: str, **kw: object) -> Response:  # type: ignore[override]
        response = super().request(method, url, **kw)  # type: ignore[arg-type]
        if url.endswith("/import/bulk_import") and response.status == 200:
            self.accepted += 1
        return response


def _quiesce(sb: Sandbox) -> None:
    deadline = time.monotonic() + 10
    while sb.pending_batches() and time.monotonic() < deadline:
        time.sleep(0.02)


def _first_run(world: World, tap: CountingTap, sb: Sandbox, req: RunRequest, stop: Stop) -> int:
    """Run 1 as ``stop`` says; returns the answers lost (sent, never recorded)."""
    if stop.kind == "kill":

        def die(n: int) -> None:
            if n == stop.at:
                raise Killed

        if stop.answer_lost:
            tap.after = die
        else:
            tap.before = die
        try:
            world.engine.run(req)
        except Killed:
            pass
        tap.before = tap.after = lambda n: None
        world.engine.run(req)  # started again: resumes the same run
        return 1 if stop.answer_lost and tap.bulk >= stop.at else 0
    if stop.kind == "down":

        def go_down(n: int) -> None:
            if n == stop.at:
                sb.set_faults(Faults(http_503_rate=1.0))

        tap.after = go_down
        report = world.engine.run(req)
        assert report.reconciles(), report.summary()
        tap.after = lambda n: None
        sb.set_faults(Faults())
        return 0
    world.engine.run(req)
    return 0


@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)
@given(
    contacts=st.integers(600, 1400),
    pre_existing=st.integers(0, 30),
    outsiders=st.integers(0, 3),
    stop=stops,
    leaving=st.integers(0, 300),
    opting_out=st.integers(0, 5),
)
def test_whatever_stopped_a_run_the_follow_up_ends_right(
    contacts: int, pre_existing: int, outsiders: int, stop: Stop, leaving: int, opting_out: int
) -> None:
    config = sandbox_config(SCALE, seed=2)
    with tempfile.TemporaryDirectory() as tmp, Sandbox(config) as sb:
        before = {f"person{i}@example.com" for i in range(pre_existing)}
        before |= {f"stranger{i}@example.com" for i in range(outsiders)}
        _join_list_elsewhere(sb, sorted(before))
        tap = CountingTap()
        world = _world(Path(tmp), sb, tap, chunk_batches=2)
        segment = [contact_row(i) for i in range(contacts)]
        req = world.request(world.write_csv(segment))
        lost = _first_run(world, tap, sb, req, stop)
        _quiesce(sb)
        # Some of the export's own contacts opt out in ActiveCampaign.
        landed = sorted(sb.list_members(LIST) - before)
        opted_out = set(landed[:opting_out])
        for email in opted_out:
            sb.unsubscribe(email, LIST)
        # The follow-up: the first `leaving` contacts (pre-existing ones among them) leave.
        follow_up = segment[leaving:]
        report = world.engine.run(world.request(world.write_csv(follow_up), allow_shrink=True))
        assert report.status == "completed", report.summary()
        _quiesce(sb)
        stays = {r[0] for r in follow_up}
        assert sb.list_members(LIST) == (stays | before) - opted_out
        assert before <= sb.list_members(LIST), "someone pre-existing was removed"
        reports = world.engine.list_runs("newsletter")
        assert all(r.reconciles() for r in reports), [r.summary() for r in reports]
        accounted = sum(r.requests.get("bulk_import", 0) for r in reports)
        assert tap.accepted <= accounted + lost, (tap.accepted, accounted, lost)
