"""The synced-list invariant, over random histories of a segment (Hypothesis).

After every clean run the list holds exactly the snapshot's valid contacts, minus the people
who opted out in ActiveCampaign, minus the people this export itself unsubscribed when they
left the segment earlier (a bulk import cannot tell them from an opt-out, so it never
re-subscribes them; see ``docs/guarantees.md``). A run with injected faults may fall short;
the next clean run restores the invariant. Nobody who opted out is ever re-subscribed, faults
or not, and every report reconciles.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.errors import RetriableApiError
from sandbox import Faults
from tests.reliability import support

PEOPLE = [f"p{i}@example.com" for i in range(10)]
CITIES = ["Berlin", "Oslo", "Porto"]
ROUGH = Faults(http_503_rate=0.15, lost_response_rate=0.1, batch_failed_rate=0.5)
"""A bad day: many failed imports (half of them fail again on resubmission), lost answers."""


@dataclass(frozen=True)
class Step:
    """One snapshot, the opt-outs that happen in ActiveCampaign before it is run, and
    whether its run meets faults."""

    members: dict[str, str]
    """email -> city"""
    invalid: int
    duplicates: tuple[str, ...]
    """Members repeated in upper case (the first row wins)."""
    opt_outs: tuple[str, ...]
    faulty: bool


@st.composite
def steps(draw: st.DrawFn) -> list[Step]:
    n = draw(st.integers(min_value=2, max_value=4))
    out: list[Step] = []
    for i in range(n):
        chosen = draw(st.lists(st.sampled_from(PEOPLE), min_size=1, max_size=8, unique=True))
        members = {email: draw(st.sampled_from(CITIES)) for email in chosen}
        duplicates = tuple(draw(st.lists(st.sampled_from(chosen), max_size=2, unique=True)))
        opt_outs = tuple(draw(st.lists(st.sampled_from(PEOPLE), max_size=2, unique=True)))
        # A faulty run is always followed by a clean one (the last run is clean).
        faulty = i < n - 1 and not (out and out[-1].faulty) and draw(st.booleans())
        out.append(Step(members, draw(st.integers(0, 2)), duplicates, opt_outs, faulty))
    return out


def _write(path: Path, step: Step) -> Path:
    people = [support.Person(email, city=city) for email, city in step.members.items()]
    people += [support.Person(email.upper(), city="Lyon") for email in step.duplicates]
    invalid = [f"broken-{k}.example.com" for k in range(step.invalid)]
    return support.write_people(path, people, invalid=invalid)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(history=steps())
def test_list_equals_segment_minus_opt_outs(history: list[Step]) -> None:
    with tempfile.TemporaryDirectory() as tmp, support.running_sandbox(time_scale=100.0) as sb:
        home = Path(tmp) / "home"
        support.configure(home, sb.port)
        engine = support.engine(home, time_scale=100.0)
        opted_out: set[str] = set()
        ever_left: set[str] = set()
        for n, step in enumerate(history):
            for email in step.opt_outs:
                if sb.contact(email) is not None:
                    sb.unsubscribe(email, support.LIST_ID)
                    opted_out.add(email)
            before = sb.list_members(support.LIST_ID)
            ever_left |= before - set(step.members)
            sb.set_faults(ROUGH if step.faulty else Faults())
            snapshot = _write(Path(tmp) / f"snapshot-{n}.csv", step)
            try:
                report = support.run_csv(engine, snapshot)
            except RetriableApiError:
                assert step.faulty, "a clean run stopped on a retriable error"
                report = None
            sb.set_faults(Faults())
            members = sb.list_members(support.LIST_ID)
            unsubscribed = sb.list_members(support.LIST_ID, status=2)

            # Never, faults or not: an opt-out overridden, a stranger subscribed, someone
            # unsubscribed who neither opted out nor left the segment.
            assert not members & opted_out
            assert members <= set(step.members) | before
            assert unsubscribed <= opted_out | ever_left
            if report is not None:
                assert report.reconciliation_problems() == [], report.summary()
                assert report.rows_read == len(step.members) + step.invalid + len(step.duplicates)
            if step.faulty:
                continue
            assert report is not None and report.failed == 0, report and report.summary()
            # Leavers this export unsubscribed stay unsubscribed when they come back.
            unsubscribed_by_us = (unsubscribed & ever_left) - opted_out
            expected = set(step.members) - opted_out - unsubscribed_by_us
            assert members == expected, (n, history)
            assert set(support.state_emails(home)) == set(step.members)
