"""Fair shares of one account among runs (the Durable Entity's logic): the shares in use never
add up to more than the account's budget, a newcomer waits only until there is room, and a
run that vanished is forgotten."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.activecampaign.grants import MAX_WORKERS, STALE_AFTER, AccountGrants, allotment

T0 = datetime(2026, 12, 5, 2, 0, tzinfo=UTC)


def test_a_lone_run_has_the_whole_budget() -> None:
    grants = AccountGrants()
    grant = grants.join("a", T0)
    assert (grant.runs, grant.ready, grant.workers, grant.bulk) == (1, True, MAX_WORKERS, 1.0)


def test_workers_and_bulk_are_split_evenly_among_at_most_five_runs() -> None:
    assert [allotment(r, 3) for r in range(3)] == [(2, 1 / 3), (2, 1 / 3), (1, 1 / 3)]
    assert [allotment(r, 5) for r in range(5)] == [(1, 0.2)] * 5
    assert allotment(5, 6) == (0, 0.0), "the sixth waits for one of the five to leave"


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
    assert grants.ack("b", T0).bulk == 1.0


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


@settings(max_examples=300)
@given(st.lists(st.tuples(st.sampled_from(["join", "ack", "leave"]), st.integers(0, 6))))
def test_what_is_in_use_never_exceeds_the_account(ops: list[tuple[str, int]]) -> None:
    """Any sequence of joins, steps and leaves by 7 runs: a run uses its grant until its next
    step; the workers in use never exceed 5 and the bulk shares never exceed 1."""
    grants = AccountGrants()
    in_use: dict[int, tuple[int, float]] = {}
    for op, run in ops:
        if op == "leave":
            grants.leave(str(run))
            in_use.pop(run, None)
            continue
        grant = grants.join(str(run), T0) if op == "join" else grants.ack(str(run), T0)
        in_use[run] = (grant.workers, grant.bulk)
        assert sum(w for w, _ in in_use.values()) <= MAX_WORKERS, (ops, in_use)
        assert sum(b for _, b in in_use.values()) <= 1.0 + 1e-9, (ops, in_use)


def test_every_run_gets_its_turn() -> None:
    """Three runs joining one after another all become ready once each has stepped."""
    grants = AccountGrants()
    for run in "abc":
        grants.join(run, T0)
    for _ in range(2):
        grants_now = [grants.ack(run, T0) for run in "abc"]
    assert all(g.ready for g in grants_now)
    assert sum(g.workers for g in grants_now) == MAX_WORKERS


def test_more_runs_than_workers_take_turns() -> None:
    """Seven runs on one account, each stepping in turn: the five at the front send, and a
    run that just had a step goes to the back, so every run keeps getting an equal share of
    the steps instead of the first five taking everything (before: two runs got none)."""
    grants = AccountGrants()
    runs = [f"r{i}" for i in range(7)]
    turns = dict.fromkeys(runs, 0)
    for _ in range(30):
        for run in runs:
            if grants.ack(run, T0).ready:
                turns[run] += 1
    assert min(turns.values()) >= 10, turns
