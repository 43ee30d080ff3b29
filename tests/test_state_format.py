"""The state file at scale: sections streamed in and out a piece at a time, the next state
encoded without being built (finalize at ten million contacts), and files written before
either still loading."""

from __future__ import annotations

import hashlib
import struct
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.errors import StateCorrupt
from exporter.incremental import codec
from exporter.incremental import state as state_mod
from exporter.incremental import update as update_mod
from exporter.incremental.state import (
    STALE,
    SUBSCRIBED_BY_US,
    ExportState,
    StateWriter,
    hash64,
    key_hash,
    load_subscribed,
    save,
    state_path,
)
from exporter.incremental.update import KeyList, StateUpdate, apply, encode_next
from exporter.planning.contacts import PreparedContact
from exporter.run import members
from exporter.storage.store import LocalStore
from tests.test_state import _update, as_dict, update_ops

V1_FILE = Path(__file__).parent / "data" / "state" / "v1-2000-contacts.bin"
"""A version-1 state written by the encoder before sections were streamed (one
``zlib.compress`` per section, the delta planes transposed in one copy)."""


def _v1_contacts() -> StateUpdate:
    """The update the fixture was built from (with the encoder of commit e986dc2)."""
    update = StateUpdate(snapshot_count=2100)
    for i in range(2000):
        key = f"contact.{i}@example{i % 7}.com" if i % 3 else f"jörg.{i}@bücher.example"
        c = PreparedContact(
            row=i + 1,
            source="s.csv",
            key=key,
            payload="{}",
            fingerprint=(i * 0x9E3779B97F4A7C15) & (2**64 - 1),
            profile_id=f"p{i}" if i % 2 else None,
        )
        if i % 11 == 0:
            update.mark_uncertain(c)
        else:
            update.confirm_sent(c, subscribed=i % 5 != 0)
    return update


def test_a_state_written_before_streamed_sections_still_loads() -> None:
    data = V1_FILE.read_bytes()
    loaded = ExportState.from_bytes(data)
    rebuilt = apply(ExportState.empty(), _v1_contacts())
    assert len(loaded) == 2000 and loaded.snapshot_count == 2100
    assert as_dict(loaded) == as_dict(rebuilt)
    assert int(np.count_nonzero(loaded.flags & STALE)) == 182  # i % 11 == 0
    assert loaded.get("jörg.3@bücher.example") is not None
    # Today's encoder (keys compressed faster) writes what the old one's files decode to.
    assert as_dict(ExportState.from_bytes(loaded.to_bytes())) == as_dict(loaded)
    assert loaded.to_bytes() == rebuilt.to_bytes()


def test_sections_survive_any_piece_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pieces that cut through values, byte planes and keys decode to the same state."""
    state = apply(ExportState.empty(), _v1_contacts())
    whole = state.to_bytes()
    monkeypatch.setattr(state_mod, "_PIECE", 7)
    monkeypatch.setattr(codec, "_PIECE", 7)
    monkeypatch.setattr(update_mod, "_GATHER_CHUNK", 3)
    pieced = state.to_bytes()
    assert as_dict(ExportState.from_bytes(pieced)) == as_dict(state)
    assert as_dict(ExportState.from_bytes(whole)) == as_dict(state)
    encoded, count = encode_next(ExportState.empty(), _v1_contacts())
    assert count == 2000
    assert as_dict(ExportState.from_bytes(bytes(encoded))) == as_dict(state)


@given(before=update_ops, ops=update_ops)
@settings(max_examples=150, deadline=None)
def test_encode_next_writes_exactly_what_apply_then_encode_would(
    before: list[tuple[str, int, int, bool]], ops: list[tuple[str, int, int, bool]]
) -> None:
    base = apply(ExportState.empty(), _update(before))
    expected = apply(base, _update(ops)).to_bytes()
    spent = ExportState.from_bytes(base.to_bytes())
    update = _update(ops)
    encoded, count = encode_next(spent, update)
    assert bytes(encoded) == expected
    assert count == len(ExportState.from_bytes(expected))


def test_keys_that_do_not_compress_are_stored_raw() -> None:
    update = StateUpdate()
    update.confirm_sent(PreparedContact(1, "s.csv", "a@b.c", "{}", 7, None))
    state = apply(ExportState.empty(), update)
    data = state.to_bytes()
    assert data.endswith(b"a@b.c" + hashlib.blake2b(data[:-16], digest_size=16).digest())
    assert ExportState.from_bytes(data).get("a@b.c") is not None
    assert int(ExportState.from_bytes(data).flags[0]) == SUBSCRIBED_BY_US


def _file(sections: list[tuple[int, bytes, int]], count: int) -> bytes:
    """A state file of raw ``(codec, stored bytes, declared raw length)`` sections, with a
    valid checksum (so only the section itself can be what is wrong)."""
    out = bytearray(struct.pack("<8sHHQQ", b"ACXSTATE", 1, 1, count, count))
    for kind, data, raw in sections:
        out += struct.pack("<BQQ", kind, len(data), raw) + data
    return bytes(out) + hashlib.blake2b(out, digest_size=16).digest()


def _valid_sections() -> list[tuple[int, bytes, int]]:
    key = b"x@y.z"
    return [
        (0, struct.pack("<Q", 5), 8),
        (0, struct.pack("<Q", 6), 8),
        (0, struct.pack("<Q", 0), 8),
        (0, bytes([SUBSCRIBED_BY_US]), 1),
        (0, struct.pack("<I", len(key)), 4),
        (1, zlib.compress(key), len(key)),
    ]


def test_a_hand_built_file_loads() -> None:
    state = ExportState.from_bytes(_file(_valid_sections(), 1))
    assert state.email_at(0) == "x@y.z" and int(state.fingerprints[0]) == 6


@pytest.mark.parametrize(
    ("index", "section", "why"),
    [
        (5, (1, zlib.compress(b"x@y.zz"), 5), "more than 5 bytes"),
        (5, (1, zlib.compress(b"x@y.")[:-3], 5), "cannot decompress|incomplete"),
        (5, (1, zlib.compress(b"x@y.z") + b"??", 5), "trailing"),
        (3, (0, bytes([1, 1]), 1), "stored"),
        (0, (3, zlib.compress(bytes(7)), 8), "more than|expected 8"),
    ],
)
def test_a_section_that_decodes_to_another_size_is_refused(
    index: int, section: tuple[int, bytes, int], why: str
) -> None:
    sections = _valid_sections()
    sections[index] = section
    with pytest.raises(StateCorrupt, match=why):
        ExportState.from_bytes(_file(sections, 1))


def test_the_writer_refuses_sections_out_of_order() -> None:
    writer = StateWriter(0, 0)
    with pytest.raises(ValueError, match="out of order"):
        writer.column("fingerprints", np.zeros(0, np.uint64))


def test_load_subscribed_reads_only_what_the_members_read_needs(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    assert len(load_subscribed(store, "e")) == 0  # never ran
    update = StateUpdate()
    for i in range(50):
        c = PreparedContact(i + 1, "s.csv", f"c{i}@example.com", "{}", i, None)
        update.confirm_sent(c, subscribed=i % 2 == 0)
    state = apply(ExportState.empty(), update)
    save(store, "e", state, if_match=None)
    ours = load_subscribed(store, "e")
    assert ours.tolist() == sorted(key_hash(f"c{i}@example.com") for i in range(0, 50, 2))
    damaged = bytearray((tmp_path / state_path("e")).read_bytes())
    damaged[40] ^= 1
    (tmp_path / state_path("e")).write_bytes(bytes(damaged))
    with pytest.raises(StateCorrupt, match="checksum"):
        load_subscribed(store, "e")


class _ListRead:
    def __init__(self, emails: list[str]) -> None:
        self.emails = emails

    def iter_list_members(self, _list_id: str, *, after_id: int) -> Iterator[dict[str, Any]]:
        for i, email in enumerate(self.emails):
            yield {"id": str(after_id + i + 1), "email": email}

    def call_client(self, fn: Callable[[Any], int]) -> int:
        return fn(self)


def test_the_members_read_records_only_members_this_export_did_not_subscribe(
    tmp_path: Path,
) -> None:
    store = LocalStore(tmp_path)
    update = StateUpdate()
    update.confirm_sent(PreparedContact(1, "s.csv", "ours@example.com", "{}", 1, None))
    update.confirm_sent(
        PreparedContact(2, "s.csv", "theirs@example.com", "{}", 2, None), subscribed=False
    )
    save(store, "e", apply(ExportState.empty(), update), if_match=None)
    read = _ListRead(["Ours@Example.com", "theirs@example.com", "new@example.com"])
    merged = members.refresh(
        store,
        "e",
        "1",
        lambda: load_subscribed(store, "e"),
        read,  # type: ignore[arg-type]
    )
    assert sorted(merged.tolist()) == sorted(
        key_hash(k) for k in ("theirs@example.com", "new@example.com")
    )


@given(
    keys=st.lists(
        st.text(min_size=0, max_size=40).map(lambda t: t.replace("\x00", "")), max_size=60
    )
)
@settings(max_examples=200, deadline=None)
def test_a_key_lists_hashes_are_hash64_of_its_keys(keys: list[str]) -> None:
    keys_list = KeyList()
    for key in keys:
        keys_list.add(key.encode())
    assert keys_list.hashes().tolist() == hash64([k.encode() for k in keys]).tolist()


def test_a_key_lists_hashes_across_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(update_mod, "_HASH_CHUNK", 5)
    keys = [f"k{i}@example.com" * (1 + i % 4) for i in range(23)] + [""]
    keys_list = KeyList()
    for key in keys:
        keys_list.add(key.encode())
    assert keys_list.hashes().tolist() == hash64([k.encode() for k in keys]).tolist()
