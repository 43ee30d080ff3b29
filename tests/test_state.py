"""Incremental state: the key hash, the binary format, the store, and how updates move it."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.errors import ExporterError, StateCorrupt
from exporter.incremental.state import (
    HAS_PROFILE,
    STALE,
    SUBSCRIBED_BY_US,
    ExportState,
    HashIndex,
    StateEntry,
    hash64,
    key_hash,
    load,
    save,
    state_path,
)
from exporter.incremental.update import StateUpdate, apply
from exporter.planning.contacts import PreparedContact, dumps, fingerprint
from exporter.storage.store import LocalStore, PreconditionFailed


def contact(key: str, version: int = 0, profile_id: str | None = None) -> PreparedContact:
    payload = dumps({"email": key, "fields": [{"field": "1", "value": str(version)}]})
    return PreparedContact(1, "s.csv", key, payload, fingerprint(payload), profile_id)


def state_of(*contacts: PreparedContact, snapshot_count: int | None = None) -> ExportState:
    update = StateUpdate(snapshot_count=snapshot_count)
    for c in contacts:
        update.confirm_sent(c)
    return apply(ExportState.empty(), update)


def as_dict(state: ExportState) -> dict[str, StateEntry]:
    return {e.email: e for e in state.entries()}


KEYS = ["a@example.com", "jürgen.müller@beispiel.de", "李@例子.中国", "b@example.org"]


# --- the key hash ---------------------------------------------------------------------------


def test_key_hash_is_pinned() -> None:
    # Persisted in every state file: changing the function silently turns every contact "new".
    assert key_hash("a@example.com") == 7697098267978513627
    assert key_hash("jürgen.müller@beispiel.de") == 11306783846760605594


def test_key_hash_does_not_depend_on_the_batch() -> None:
    # A longer key in the same batch widens the padding; the hash must not notice.
    alone = hash64([b"a@example.com"])[0]
    together = hash64([b"x" * 40, b"a@example.com"])[1]
    assert alone == together == key_hash("a@example.com")


def test_key_hash_separates_similar_keys() -> None:
    keys = [f"user{i}@example.com".encode() for i in range(20_000)]
    keys += [b"a", b"a" * 8, b"a" * 9, b"a" * 16, b""]
    assert len(np.unique(hash64(keys))) == len(keys)


def test_key_hash_chunks_agree_with_single_calls() -> None:
    keys = [f"k{i}@x.de".encode() for i in range(40_000)]  # more than one internal chunk
    assert hash64(keys)[[0, 20_000, 39_999]].tolist() == [
        key_hash(keys[i].decode()) for i in (0, 20_000, 39_999)
    ]


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.integers(0, 2**64 - 1), unique=True, max_size=300),
    st.lists(st.integers(0, 2**64 - 1), max_size=50),
)
def test_hash_index_finds_exactly_the_present_hashes(present: list[int], probes: list[int]) -> None:
    hashes = np.array(sorted(present), dtype=np.uint64)
    wanted = np.array(probes + present[:20], dtype=np.uint64)
    found = HashIndex(hashes).find(wanted)
    for value, pos in zip(wanted.tolist(), found.tolist(), strict=True):
        if value in present:
            assert hashes[pos] == value
        else:
            assert pos == -1


# --- the binary format ----------------------------------------------------------------------


def sample_state() -> ExportState:
    update = StateUpdate(snapshot_count=7)
    update.confirm_sent(contact(KEYS[0], 1, profile_id="P-1"))
    update.confirm_sent(contact(KEYS[1], 2))
    update.confirm_sent(contact(KEYS[2], 3, profile_id="P-3"), subscribed=False)
    update.confirm_sent(contact(KEYS[3], 4))
    return apply(ExportState.empty(), update)


def test_round_trip_keeps_every_field_including_non_ascii() -> None:
    state = sample_state()
    again = ExportState.from_bytes(state.to_bytes())
    assert as_dict(again) == as_dict(state)
    assert set(as_dict(again)) == set(KEYS)
    assert again.snapshot_count == 7
    assert again.get(KEYS[2]) == StateEntry(
        KEYS[2], contact(KEYS[2], 3).fingerprint, False, key_hash("P-3")
    )
    assert again.get(KEYS[1]) == StateEntry(KEYS[1], contact(KEYS[1], 2).fingerprint, True, None)


def test_round_trip_of_the_empty_state() -> None:
    again = ExportState.from_bytes(ExportState.empty().to_bytes())
    assert len(again) == 0
    assert again.snapshot_count == 0


def test_hashes_are_sorted_and_lookups_use_them() -> None:
    state = sample_state()
    assert state.hashes.tolist() == sorted(state.hashes.tolist())
    assert state.get("nobody@example.com") is None
    assert state.index_of(KEYS[0]) is not None


@pytest.mark.parametrize("position", [0, 9, 30, 60, -40, -1])
def test_a_flipped_byte_is_detected(position: int) -> None:
    data = bytearray(sample_state().to_bytes())
    data[position] ^= 0x5A
    with pytest.raises(StateCorrupt) as caught:
        ExportState.from_bytes(bytes(data), source="state/x/state.bin")
    assert "state/x/state.bin" in str(caught.value)


@pytest.mark.parametrize("keep", [0, 5, 28, 50, 100, -17, -1])
def test_truncation_is_detected(keep: int) -> None:
    data = sample_state().to_bytes()
    with pytest.raises(StateCorrupt):
        ExportState.from_bytes(data[:keep])


def test_wrong_magic_says_it_is_not_a_state_file() -> None:
    with pytest.raises(StateCorrupt, match="bad magic"):
        ExportState.from_bytes(b"PK\x03\x04" + bytes(100))


def test_an_unknown_version_is_reported_as_such() -> None:
    import hashlib

    data = bytearray(sample_state().to_bytes())
    data[8] = 9  # version u16 after the 8-byte magic
    body = bytes(data[:-16])
    data[-16:] = hashlib.blake2b(body, digest_size=16).digest()
    with pytest.raises(StateCorrupt, match="format version 9"):
        ExportState.from_bytes(bytes(data))


def test_state_corrupt_is_an_exporter_error_with_a_way_out() -> None:
    error = StateCorrupt("state/x/state.bin", "checksum mismatch")
    assert isinstance(error, ExporterError)
    assert "Delete it" in str(error)


def test_state_compresses_keys() -> None:
    update = StateUpdate()
    for i in range(5000):
        update.confirm_sent(contact(f"first.last{i}@example.com"))
    state = apply(ExportState.empty(), update)
    size = len(state.to_bytes())
    # 16 incompressible bytes (hash + fingerprint) per contact, keys ~26 bytes before zlib.
    assert size < 5000 * 26
    assert len(state.emails) > 5000 * 24


# --- the store ------------------------------------------------------------------------------


def test_load_of_an_export_that_never_ran(local_store: LocalStore) -> None:
    state, etag = load(local_store, "never")
    assert len(state) == 0
    assert etag is None


def test_save_then_load(local_store: LocalStore) -> None:
    etag = save(local_store, "weekly", sample_state(), if_match=None)
    state, read_etag = load(local_store, "weekly")
    assert read_etag == etag
    assert as_dict(state) == as_dict(sample_state())
    assert local_store.exists(state_path("weekly"))


def test_two_runs_saving_from_the_same_version_cannot_both_win(local_store: LocalStore) -> None:
    save(local_store, "weekly", sample_state(), if_match=None)
    _, etag = load(local_store, "weekly")
    save(local_store, "weekly", state_of(contact("one@x.de")), if_match=etag)
    with pytest.raises(PreconditionFailed):
        save(local_store, "weekly", state_of(contact("two@x.de")), if_match=etag)
    state, _ = load(local_store, "weekly")
    assert set(as_dict(state)) == {"one@x.de"}


def test_two_first_runs_cannot_both_create_the_state(local_store: LocalStore) -> None:
    save(local_store, "weekly", state_of(contact("one@x.de")), if_match=None)
    with pytest.raises(PreconditionFailed):
        save(local_store, "weekly", state_of(contact("two@x.de")), if_match=None)


def test_a_damaged_object_in_the_store_is_reported(local_store: LocalStore) -> None:
    save(local_store, "weekly", sample_state(), if_match=None)
    data = local_store.read_bytes(state_path("weekly"))
    local_store.write_bytes(state_path("weekly"), data[: len(data) // 2])
    with pytest.raises(StateCorrupt, match=r"state/weekly/state\.bin"):
        load(local_store, "weekly")


# --- moving the state -----------------------------------------------------------------------


def test_confirmed_send_is_remembered_as_subscribed_by_us() -> None:
    state = state_of(contact("a@x.de", 1, "P"))
    entry = state.get("a@x.de")
    assert entry == StateEntry("a@x.de", contact("a@x.de", 1).fingerprint, True, key_hash("P"))


def test_unconfirmed_contacts_keep_their_old_entry_or_stay_absent() -> None:
    before = state_of(contact("changed@x.de", 1), contact("same@x.de", 1))
    update = StateUpdate()
    update.confirm_sent(contact("other@x.de", 1))  # something else was confirmed
    after = apply(before, update)
    # "changed@x.de" v2 and "new@x.de" were sent but failed: nothing recorded for them.
    assert after.get("changed@x.de") == before.get("changed@x.de")
    assert after.get("same@x.de") == before.get("same@x.de")
    assert after.get("new@x.de") is None
    assert set(as_dict(after)) == {"changed@x.de", "same@x.de", "other@x.de"}


def test_confirmed_change_replaces_the_fingerprint() -> None:
    before = state_of(contact("a@x.de", 1))
    update = StateUpdate()
    update.confirm_sent(contact("a@x.de", 2))
    after = apply(before, update)
    entry = after.get("a@x.de")
    assert entry is not None
    assert entry.fingerprint == contact("a@x.de", 2).fingerprint
    assert len(after) == 1


def test_confirmed_leaver_is_forgotten_and_a_failed_one_stays() -> None:
    before = state_of(contact("gone@x.de"), contact("failed@x.de"), contact("stays@x.de"))
    update = StateUpdate()
    update.confirm_left("gone@x.de")
    after = apply(before, update)
    assert set(as_dict(after)) == {"failed@x.de", "stays@x.de"}
    assert update.left == 1


def test_drop_forgets_without_counting_as_unsubscribed() -> None:
    update = StateUpdate()
    update.drop("a@x.de")
    after = apply(state_of(contact("a@x.de")), update)
    assert len(after) == 0
    assert (update.dropped, update.left) == (1, 0)


def test_removing_an_unknown_key_changes_nothing() -> None:
    before = state_of(contact("a@x.de"))
    update = StateUpdate()
    update.confirm_left("nobody@x.de")
    assert as_dict(apply(before, update)) == as_dict(before)


def test_the_last_confirmation_of_a_key_wins() -> None:
    update = StateUpdate()
    update.confirm_sent(contact("a@x.de", 1))
    update.confirm_sent(contact("a@x.de", 2))
    state = apply(ExportState.empty(), update)
    assert len(state) == 1
    entry = state.get("a@x.de")
    assert entry is not None and entry.fingerprint == contact("a@x.de", 2).fingerprint


def test_a_send_confirmed_after_a_removal_of_the_same_key_wins() -> None:
    update = StateUpdate()
    update.drop("a@x.de")
    update.confirm_sent(contact("a@x.de", 2))
    state = apply(state_of(contact("a@x.de", 1)), update)
    entry = state.get("a@x.de")
    assert entry is not None and entry.fingerprint == contact("a@x.de", 2).fingerprint


def test_snapshot_count_moves_only_when_the_update_names_one() -> None:
    state = state_of(contact("a@x.de"), snapshot_count=10)
    assert apply(state, StateUpdate()).snapshot_count == 10
    assert apply(state, StateUpdate(snapshot_count=3)).snapshot_count == 3


def test_apply_does_not_modify_its_input() -> None:
    before = state_of(contact("a@x.de"), contact("b@x.de"))
    snapshot = as_dict(before)
    update = StateUpdate()
    update.confirm_left("a@x.de")
    update.confirm_sent(contact("c@x.de"))
    update.mark_uncertain_left("b@x.de")
    apply(before, update)
    assert as_dict(before) == snapshot
    assert not before.flags.flags.writeable


def test_uncertain_outcomes_are_flagged_stale() -> None:
    before = state_of(contact("left@x.de"))
    update = StateUpdate()
    update.mark_uncertain(contact("maybe@x.de", 3))
    update.mark_uncertain_left("left@x.de")
    after = apply(before, update)
    assert update.uncertain == 2 and update.confirmed == 0
    for key in ("maybe@x.de", "left@x.de"):
        i = after.index_of(key)
        assert i is not None
        assert after.flags[i] & STALE
        assert after.flags[i] & SUBSCRIBED_BY_US
    # A later confirmation clears the flag.
    update = StateUpdate()
    update.confirm_sent(contact("maybe@x.de", 3))
    i = apply(after, update).index_of("maybe@x.de")
    assert i is not None and not apply(after, update).flags[i] & STALE


def test_profile_flag_only_with_a_profile_id() -> None:
    state = state_of(contact("a@x.de", profile_id="P"), contact("b@x.de", profile_id=""))
    a, b = state.index_of("a@x.de"), state.index_of("b@x.de")
    assert a is not None and b is not None
    assert state.flags[a] & HAS_PROFILE
    assert not state.flags[b] & HAS_PROFILE


def test_a_hash_collision_never_mistakes_one_address_for_another() -> None:
    # Forge a state whose only entry has the key hash of "b@x.de" but the address "a@x.de".
    real = state_of(contact("a@x.de"))
    forged = ExportState(
        hashes=np.array([key_hash("b@x.de")], np.uint64),
        fingerprints=real.fingerprints.copy(),
        profiles=real.profiles.copy(),
        flags=real.flags.copy(),
        offsets=real.offsets.copy(),
        emails=real.emails,
    )
    assert forged.get("b@x.de") is None
    update = StateUpdate()
    update.confirm_left("b@x.de")  # must not remove a@x.de's entry
    assert len(apply(forged, update)) == 1


def test_a_well_checksummed_but_unsorted_state_is_rejected() -> None:
    good = state_of(contact("a@x.de"), contact("b@x.de"))
    swapped = ExportState(
        good.hashes[::-1].copy(),
        good.fingerprints[::-1].copy(),
        good.profiles.copy(),
        good.flags.copy(),
        good.offsets.copy(),
        good.emails,
    )
    with pytest.raises(StateCorrupt, match="ascending"):
        ExportState.from_bytes(swapped.to_bytes())


# --- applying with consume (finalize at ten million contacts) ------------------------------

update_ops = st.lists(
    st.tuples(
        st.sampled_from(["send", "uncertain", "left", "drop", "stale_left"]),
        st.integers(0, 30),
        st.integers(0, 3),
        st.booleans(),
    ),
    max_size=40,
)


def _update(ops: list[tuple[str, int, int, bool]]) -> StateUpdate:
    update = StateUpdate()
    for op, i, version, with_profile in ops:
        key = f"k{i}@example.com"
        c = contact(key, version, f"p{i}" if with_profile else None)
        if op == "send":
            update.confirm_sent(c, subscribed=version % 2 == 0)
        elif op == "uncertain":
            update.mark_uncertain(c)
        elif op == "left":
            update.confirm_left(key)
        elif op == "drop":
            update.drop(key)
        else:
            update.mark_uncertain_left(key)
    return update


@given(before=update_ops, ops=update_ops)
@settings(max_examples=150, deadline=None)
def test_consuming_apply_builds_the_same_state_and_spends_its_inputs(
    before: list[tuple[str, int, int, bool]], ops: list[tuple[str, int, int, bool]]
) -> None:
    base = apply(ExportState.empty(), _update(before))
    expected = apply(base, _update(ops))
    spent = ExportState.from_bytes(base.to_bytes())
    update = _update(ops)
    got = apply(spent, update, consume=True)
    assert got.to_bytes() == expected.to_bytes()
    assert as_dict(got) == as_dict(expected)
    if len(update._sent) == 0 and len(ops) == 0:
        return  # nothing to merge: the state is handed back, not rebuilt
    if len(got) or len(base):
        assert len(update._sent) == 0  # the update's keys were released


def test_encode_is_to_bytes_and_loads_back() -> None:
    state = sample_state()
    assert bytes(state.encode()) == state.to_bytes()
    assert as_dict(ExportState.from_bytes(bytes(state.encode()))) == as_dict(state)


@pytest.mark.parametrize("runs", [1, 3, 40, 900])
def test_keys_are_scattered_alike_by_runs_and_by_bytes(runs: int) -> None:
    """The key copy takes whole runs when keys come in long runs and an index per byte when
    they do not; both put every key where a plain loop puts it."""
    from exporter.incremental.update import _scatter_keys

    rng = np.random.default_rng(runs)
    lengths = rng.integers(0, 30, 1000).astype(np.int64)
    buffer = rng.integers(0, 256, int(lengths.sum()) + runs).astype(np.uint8)
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1])).astype(np.int64)
    cuts = np.sort(rng.choice(np.arange(1, 1000), runs - 1, replace=False))
    for cut in cuts:  # break the source's contiguity at each cut
        starts[cut:] += 1
    dest = np.arange(1000, dtype=np.int64)
    offsets = np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)
    out = np.zeros(int(offsets[-1]), np.uint8)
    _scatter_keys(out, offsets, dest, buffer, starts, lengths)
    expected = np.zeros_like(out)
    for k in range(1000):
        put = int(offsets[k])
        expected[put : put + lengths[k]] = buffer[starts[k] : starts[k] + lengths[k]]
    assert out.tobytes() == expected.tobytes()
