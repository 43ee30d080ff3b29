"""The diff (new / changed / unchanged / left), leaver policies, email changes, the shrink guard,
and a property test: applying only confirmed outcomes always converges on the snapshot."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.errors import ConfigError, GuardError
from exporter.incremental.diff import (
    Change,
    DiffCounts,
    Differ,
    DiffResult,
    EmailChange,
    Leaver,
    check_shrink,
)
from exporter.incremental.state import STALE, ExportState, key_hash, load, save
from exporter.incremental.update import StateUpdate, apply
from exporter.planning.contacts import PreparedContact, dumps, fingerprint
from exporter.storage.store import LocalStore


def contact(key: str, version: int = 0, profile_id: str | None = None) -> PreparedContact:
    payload = dumps({"email": key, "fields": [{"field": "1", "value": str(version)}]})
    return PreparedContact(1, "s.csv", key, payload, fingerprint(payload), profile_id)


def state_of(*contacts: PreparedContact, not_ours: tuple[str, ...] = ()) -> ExportState:
    update = StateUpdate(snapshot_count=len(contacts))
    for c in contacts:
        update.confirm_sent(c, subscribed=c.key not in not_ours)
    return apply(ExportState.empty(), update)


def diff(
    state: ExportState, contacts: list[PreparedContact], **kwargs: Any
) -> tuple[dict[str, Change], DiffResult]:
    differ = Differ(state, **kwargs)
    kinds = {c.key: change for c, change in differ.classify(contacts)}
    return kinds, differ.finish()


# --- classification -------------------------------------------------------------------------


def test_everything_is_new_on_the_first_run() -> None:
    kinds, result = diff(ExportState.empty(), [contact("a@x.de"), contact("b@x.de")])
    assert kinds == {"a@x.de": Change.NEW, "b@x.de": Change.NEW}
    assert result.counts == DiffCounts(new=2)
    assert result.snapshot_count == 2


def test_new_changed_unchanged_and_left() -> None:
    state = state_of(contact("same@x.de", 1), contact("edit@x.de", 1), contact("gone@x.de", 1))
    kinds, result = diff(
        state, [contact("same@x.de", 1), contact("edit@x.de", 2), contact("new@x.de", 1)]
    )
    assert kinds == {
        "same@x.de": Change.UNCHANGED,
        "edit@x.de": Change.CHANGED,
        "new@x.de": Change.NEW,
    }
    assert result.counts == DiffCounts(new=1, changed=1, unchanged=1, left=1, to_unsubscribe=1)
    assert result.counts.to_send == 2
    assert list(result.leavers_to_unsubscribe()) == [Leaver("gone@x.de", "gone@x.de")]


def test_order_is_kept_across_batches() -> None:
    state = state_of(*(contact(f"k{i}@x.de") for i in range(0, 30, 2)))
    contacts = [contact(f"k{i}@x.de") for i in range(30)]
    differ = Differ(state, batch_size=4)
    out = list(differ.classify(contacts))
    assert [c.key for c, _ in out] == [c.key for c in contacts]
    assert [ch for _, ch in out] == [
        Change.UNCHANGED if i % 2 == 0 else Change.NEW for i in range(30)
    ]


def test_classify_batch_matches_classify() -> None:
    state = state_of(contact("a@x.de", 1), contact("b@x.de", 1))
    contacts = [contact("a@x.de", 1), contact("b@x.de", 2), contact("c@x.de")]
    assert Differ(state).classify_batch(contacts) == [Change.UNCHANGED, Change.CHANGED, Change.NEW]
    assert Differ(state).classify_batch([]) == []


def test_non_ascii_addresses_are_recognised() -> None:
    keys = ["jürgen@beispiel.de", "李@例子.中国"]
    kinds, result = diff(state_of(*(contact(k) for k in keys)), [contact(k) for k in keys])
    assert set(kinds.values()) == {Change.UNCHANGED}
    assert result.counts.left == 0


def test_a_stale_entry_is_sent_again_even_if_identical() -> None:
    update = StateUpdate()
    update.mark_uncertain(contact("a@x.de", 1))
    kinds, _ = diff(apply(ExportState.empty(), update), [contact("a@x.de", 1)])
    assert kinds["a@x.de"] is Change.CHANGED


def test_full_resync_sends_everything_but_still_finds_leavers() -> None:
    state = state_of(contact("same@x.de"), contact("gone@x.de"))
    kinds, result = diff(state, [contact("same@x.de"), contact("new@x.de")], full_resync=True)
    assert kinds == {"same@x.de": Change.CHANGED, "new@x.de": Change.NEW}
    assert result.counts.unchanged == 0
    assert result.full_resync
    assert [lv.email for lv in result.leavers_to_unsubscribe()] == ["gone@x.de"]


def test_a_key_hash_collision_is_sent_not_lost() -> None:
    # Forge an entry with the key hash of "b@x.de" but the address and payload of "a@x.de".
    real = state_of(contact("a@x.de"))
    forged = ExportState(
        np.array([key_hash("b@x.de")], np.uint64),
        real.fingerprints.copy(),
        real.profiles.copy(),
        real.flags.copy(),
        real.offsets.copy(),
        real.emails,
    )
    kinds, result = diff(forged, [contact("b@x.de")])
    assert kinds["b@x.de"] is Change.NEW
    assert result.counts.collisions == 1
    # The stored address is not in the snapshot, so it is a leaver.
    assert [lv.email for lv in result.leavers_to_unsubscribe()] == ["a@x.de"]


# --- leavers --------------------------------------------------------------------------------


def test_unsubscribe_policy_only_unsubscribes_contacts_this_export_subscribed() -> None:
    state = state_of(contact("ours@x.de"), contact("theirs@x.de"), not_ours=("theirs@x.de",))
    _, result = diff(state, [], leavers="unsubscribe")
    assert [lv.email for lv in result.leavers_to_unsubscribe()] == ["ours@x.de"]
    assert [lv.email for lv in result.leavers_kept()] == ["theirs@x.de"]
    assert (result.counts.left, result.counts.to_unsubscribe, result.counts.kept) == (2, 1, 1)


def test_keep_policy_unsubscribes_nobody() -> None:
    state = state_of(contact("a@x.de"), contact("b@x.de"))
    _, result = diff(state, [contact("a@x.de")], leavers="keep")
    assert list(result.leavers_to_unsubscribe()) == []
    assert [lv.email for lv in result.leavers_kept()] == ["b@x.de"]
    assert result.counts.kept == 1 and result.counts.to_unsubscribe == 0


def test_the_update_forgets_kept_leavers_and_records_the_snapshot_count() -> None:
    state = state_of(contact("a@x.de"), contact("b@x.de"), contact("c@x.de"))
    _, result = diff(state, [contact("a@x.de")], leavers="keep")
    update = result.new_update()
    after = apply(state, update)
    assert [e.email for e in after.entries()] == ["a@x.de"]
    assert after.snapshot_count == 1
    assert update.dropped == 2


def test_an_unknown_leaver_policy_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="leavers"):
        Differ(ExportState.empty(), leavers="delete")  # type: ignore[arg-type]


# --- email changes by profile id ------------------------------------------------------------


def test_an_email_change_is_recognised_by_profile_id() -> None:
    state = state_of(contact("old@x.de", profile_id="P1"), contact("other@x.de", profile_id="P2"))
    kinds, result = diff(
        state, [contact("new@x.de", profile_id="P1"), contact("other@x.de", profile_id="P2")]
    )
    assert kinds["new@x.de"] is Change.NEW
    assert result.email_changes == (EmailChange("old@x.de", "new@x.de"),)
    assert result.counts.email_changes == 1
    # The old address is handled as a leaver.
    assert [lv.email for lv in result.leavers_to_unsubscribe()] == ["old@x.de"]


def test_no_email_change_while_the_old_address_is_still_in_the_snapshot() -> None:
    state = state_of(contact("old@x.de", profile_id="P1"))
    _, result = diff(
        state, [contact("old@x.de", profile_id="P1"), contact("new@x.de", profile_id="P1")]
    )
    assert result.email_changes == ()


def test_no_email_change_without_profile_ids() -> None:
    _, result = diff(state_of(contact("old@x.de")), [contact("new@x.de")])
    assert result.email_changes == ()
    assert result.counts.left == 1


def test_different_profile_ids_are_not_an_email_change() -> None:
    state = state_of(contact("old@x.de", profile_id="P1"))
    _, result = diff(state, [contact("new@x.de", profile_id="P9")])
    assert result.email_changes == ()


# --- the shrink guard -----------------------------------------------------------------------


@pytest.mark.parametrize("previous", [0, None])
def test_shrink_guard_is_a_no_op_on_the_first_run(previous: int | None) -> None:
    check_shrink(previous, 0)


@pytest.mark.parametrize("current", [1000, 800, 2000])
def test_shrink_guard_allows_up_to_the_limit(current: int) -> None:
    check_shrink(1000, current, max_shrink=0.2)


def test_shrink_guard_stops_a_larger_shrink_and_says_how_to_override() -> None:
    with pytest.raises(GuardError) as caught:
        check_shrink(1000, 799, max_shrink=0.2)
    message = str(caught.value)
    for part in ("799", "1,000", "20.1%", "20%", "--allow-shrink", "allow_shrink"):
        assert part in message


def test_shrink_guard_stops_an_empty_snapshot_even_with_a_lenient_limit() -> None:
    with pytest.raises(GuardError, match="no contacts"):
        check_shrink(5, 0, max_shrink=1.0)


def test_shrink_guard_override() -> None:
    check_shrink(1000, 0, override=True)
    check_shrink(1000, 10, override=True)


def test_shrink_guard_rejects_a_nonsense_limit() -> None:
    with pytest.raises(ConfigError, match="max_shrink"):
        check_shrink(10, 10, max_shrink=1.5)


# --- a whole run through the store ----------------------------------------------------------


def test_two_runs_through_the_store(local_store: LocalStore) -> None:
    state, etag = load(local_store, "e")
    first = [contact("a@x.de"), contact("b@x.de")]
    differ = Differ(state)
    update = StateUpdate()
    for c, _ in differ.classify(first):
        update.confirm_sent(c)
    result = differ.finish()
    update.snapshot_count = result.snapshot_count
    save(local_store, "e", apply(state, update), if_match=etag)

    state, etag = load(local_store, "e")
    check_shrink(state.snapshot_count, 2)
    kinds, result = diff(state, [contact("a@x.de"), contact("b@x.de", 1)])
    assert kinds == {"a@x.de": Change.UNCHANGED, "b@x.de": Change.CHANGED}


# --- property: only confirmed outcomes move the state, and it always converges --------------

UNIVERSE = ["a@x.de", "b@x.de", "ü@x.de", "李@例子.中国", "e@x.de", "f@x.de"]
OUTCOMES = ("ok", "failed", "uncertain")


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    snapshots=st.lists(
        st.dictionaries(st.sampled_from(UNIVERSE), st.integers(0, 2), max_size=len(UNIVERSE)),
        min_size=1,
        max_size=5,
    ),
    data=st.data(),
)
def test_confirmed_outcomes_converge_on_the_snapshot(
    snapshots: list[dict[str, int]], data: st.DataObject
) -> None:
    state = ExportState.empty()
    listed: dict[str, int] = {}  # the list: subscribed contacts and the version they have
    expected: dict[str, tuple[int, bool]] = {}  # what the state must hold: fingerprint, stale

    def run(snapshot: dict[str, int], clean: bool) -> None:
        nonlocal state
        contacts = [contact(k, v) for k, v in snapshot.items()]
        differ = Differ(state, batch_size=3)
        classified = list(differ.classify(contacts))
        result = differ.finish()
        update = result.new_update()
        for c, change in classified:
            if change is Change.UNCHANGED:
                # Nothing is sent, so the list must already hold exactly this version.
                assert listed.get(c.key) == snapshot[c.key]
                continue
            outcome = "ok" if clean else data.draw(st.sampled_from(OUTCOMES))
            if outcome == "ok":
                listed[c.key] = snapshot[c.key]
                update.confirm_sent(c)
                expected[c.key] = (c.fingerprint, False)
            elif outcome == "uncertain":
                if data.draw(st.booleans()):  # it may or may not have been applied
                    listed[c.key] = snapshot[c.key]
                update.mark_uncertain(c)
                expected[c.key] = (c.fingerprint, True)
        leavers = [lv.key for lv in result.leavers_to_unsubscribe()]
        assert set(leavers) == set(expected) - set(snapshot)
        for key in leavers:
            outcome = "ok" if clean else data.draw(st.sampled_from(OUTCOMES))
            if outcome == "ok":
                listed.pop(key, None)
                update.confirm_left(key)
                del expected[key]
            elif outcome == "uncertain":
                if data.draw(st.booleans()):
                    listed.pop(key, None)
                update.mark_uncertain_left(key)
                expected[key] = (expected[key][0], True)
        state = apply(ExportState.from_bytes(state.to_bytes()), update)
        actual = {
            state.email_at(i): (int(state.fingerprints[i]), bool(state.flags[i] & STALE))
            for i in range(len(state))
        }
        assert actual == expected
        assert state.snapshot_count == len(snapshot)

    for snapshot in snapshots:
        run(snapshot, clean=False)
    run(snapshots[-1], clean=True)
    assert listed == snapshots[-1]
    # And a further clean run has nothing left to do.
    _, result = diff(state, [contact(k, v) for k, v in snapshots[-1].items()])
    assert result.counts.to_send == 0 and result.counts.left == 0
