"""Fair shares of one account among runs (the Durable Entity's logic): the shares in use never
add up to more than the account's budget, a newcomer waits only until there is room, and a
run that vanished is forgotten."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.activecampaign.grants import STALE_AFTER, AccountGrants

T0 = datetime(2026, 12, 5, 2, 0, tzinfo=UTC)


def test_a_lone_run_has_the_whole_budget() -> None:
    grants = AccountGrants()
    grant = grants.join("a", T0)
    assert (grant.runs, grant.ready, grant.share) == (1, True, 1.0)


def test_a_newcomer_waits_until_the_others_have_shrunk_their_share() -> None:
    grants = AccountGrants()
    grants.join("a", T0)
    assert not grants.join("b", T0).ready, "a may still be using the whole budget"
    assert grants.ack("a", T0).ready, "a begins a step at 1/2: room for both"
    grant = grants.ack("b", T0)
    assert (grant.runs, grant.ready) == (2, True)


def test_a_run_that_leaves_frees_its_share_at_the_others_next_step() -> None:
    grants = AccountGrants()
    grants.join("a", T0)
    grants.join("b", T0)
    grants.ack("a", T0)
    grants.leave("a")
    assert grants.ack("b", T0).share == 1.0


def test_a_silent_run_is_forgotten() -> None:
    grants = AccountGrants()
    grants.join("gone", T0)
    later = T0 + STALE_AFTER + timedelta(seconds=1)
    grant = grants.join("b", later)
    assert (grant.runs, grant.ready) == (1, True)


def test_the_state_round_trips() -> None:
    grants = AccountGrants()
    grants.join("a", T0)
    grants.join("b", T0)
    assert AccountGrants.from_dict(grants.to_dict()) == grants


@settings(max_examples=200)
@given(st.lists(st.tuples(st.sampled_from(["join", "ack", "leave"]), st.integers(0, 4))))
def test_the_shares_in_use_never_exceed_the_budget(ops: list[tuple[str, int]]) -> None:
    """Any sequence of joins, steps and leaves by 5 runs: a run uses ``1/runs`` from a ready
    grant until its next step; the shares in use at any moment add up to at most 1."""
    grants = AccountGrants()
    in_use: dict[int, float] = {}
    for op, run in ops:
        if op == "leave":
            grants.leave(str(run))
            in_use.pop(run, None)
            continue
        grant = grants.join(str(run), T0) if op == "join" else grants.ack(str(run), T0)
        in_use[run] = grant.share if grant.ready else 0.0
        assert sum(in_use.values()) <= 1.0 + 1e-9, (ops, in_use)
