"""Batch planning: the planner's size arithmetic is exactly the encoded body, always in limits."""

from __future__ import annotations

import random

import pytest

from exporter.planning.batching import TOO_LARGE, BatchPlanner
from exporter.planning.contacts import (
    BULK_MAX_BODY_BYTES,
    Batch,
    PreparedContact,
    Rejection,
    dumps,
    encode_bulk_body,
)


def make(i: int, extra: str = "") -> PreparedContact:
    payload = dumps(
        {"email": f"p{i}@example.com", "first_name": extra, "subscribe": [{"listid": "1"}]}
    )
    return PreparedContact(
        row=i + 1, source="s.csv", key=f"p{i}@example.com", payload=payload, fingerprint=i
    )


def plan(planner: BatchPlanner, contacts: list[PreparedContact]) -> list[tuple[Batch, int]]:
    out = []
    for c in contacts:
        batch = planner.add(c)
        if batch is not None:
            out.append((batch, planner.last_body_size))
    batch = planner.flush()
    if batch is not None:
        out.append((batch, planner.last_body_size))
    return out


@pytest.mark.parametrize("seed", range(6))
def test_random_batches_measure_exactly_and_stay_in_limits(seed: int) -> None:
    rnd = random.Random(seed)
    exclude = bool(seed % 2)
    alphabet = 'abcé中😀"\\\n'
    contacts = [
        make(i, "".join(rnd.choices(alphabet, k=rnd.choice([0, 10, 500, 3000, 20000]))))
        for i in range(800)
    ]
    limit = rnd.choice([BULK_MAX_BODY_BYTES, 150_000, 60_000])
    planner = BatchPlanner(exclude_automations=exclude, max_body_bytes=limit, start_index=3)
    batches = plan(planner, contacts)
    assert [b.index for b, _ in batches] == list(range(3, 3 + len(batches)))
    assert [c for b, _ in batches for c in b.contacts] == contacts  # all, in order
    for batch, size in batches:
        body = encode_bulk_body([c.payload for c in batch.contacts], exclude_automations=exclude)
        assert len(body) == size <= limit
        assert 1 <= len(batch.contacts) <= 250
    assert planner.next_index == 3 + len(batches)
    assert planner.too_large == []


def test_batches_close_at_250_contacts() -> None:
    batches = plan(BatchPlanner(exclude_automations=True), [make(i) for i in range(501)])
    assert [len(b.contacts) for b, _ in batches] == [250, 250, 1]


def test_a_body_exactly_at_the_limit_fits_and_one_byte_more_does_not() -> None:
    empty = len(encode_bulk_body([], exclude_automations=False))
    base = make(0)
    pad = BULK_MAX_BODY_BYTES - empty - len(base.payload.encode())
    exact = make(0, "x" * pad)
    planner = BatchPlanner(exclude_automations=False)
    assert planner.add(exact) is None
    batch = planner.flush()
    assert batch is not None and planner.last_body_size == BULK_MAX_BODY_BYTES
    assert len(encode_bulk_body([exact.payload], exclude_automations=False)) == BULK_MAX_BODY_BYTES
    assert planner.add(make(1, "x" * (pad + 1))) is None and planner.flush() is None
    assert [r.reason for r in planner.too_large] == [TOO_LARGE]


def test_a_contact_too_large_alone_is_rejected_and_the_open_batch_continues() -> None:
    seen: list[Rejection] = []
    planner = BatchPlanner(exclude_automations=True, on_too_large=seen.append)
    small, huge = make(1), make(2, "é" * 200_000)  # 400,000 bytes of UTF-8
    assert planner.add(small) is None
    assert planner.add(huge) is None
    assert planner.add(make(3)) is None
    batch = planner.flush()
    assert batch is not None and [c.row for c in batch.contacts] == [2, 4]
    assert len(seen) == 1 and planner.too_large == []
    assert (seen[0].row, seen[0].source, seen[0].reason) == (3, "s.csv", TOO_LARGE)
    assert "bytes" in seen[0].message


def test_flush_of_nothing_is_none() -> None:
    assert BatchPlanner(exclude_automations=False).flush() is None


def test_limits_cannot_exceed_activecampaign_limits() -> None:
    with pytest.raises(ValueError):
        BatchPlanner(exclude_automations=False, max_contacts=251)
    with pytest.raises(ValueError):
        BatchPlanner(exclude_automations=False, max_body_bytes=400_000)


@pytest.mark.parametrize("seed", range(6))
def test_columns_are_cut_into_the_batches_objects_are_cut_into(seed: int) -> None:
    """ContactColumns go into ColumnBatches with the same cuts, indices and body sizes as the
    same contacts as objects, also when objects and columns alternate (the open batch changes
    kind) and with a contact too large on its own among them."""
    from exporter.planning.chunks import encode_batch_line
    from exporter.planning.columns import ColumnBatch, ContactColumns

    rnd = random.Random(seed)
    contacts = []
    for i in range(900):
        c = make(i, "x" * rnd.choice([0, 10, 2_000, 30_000]))
        c.size = len(c.payload.encode())
        c.encoded = c.payload.encode()
        contacts.append(c)
    if seed % 2:
        big = make(10_000, "y" * 400_000)
        big.size = len(big.payload.encode())
        contacts.insert(rnd.randrange(900), big)
    cuts = sorted(rnd.sample(range(1, len(contacts)), 12))
    pieces = [contacts[a:b] for a, b in zip([0, *cuts], [*cuts, len(contacts)], strict=True)]

    kinds: set[type] = set()

    def run(as_columns: list[bool]) -> tuple[list[tuple[int, bytes, int]], list[int]]:
        kinds.clear()
        rejected: list[Rejection] = []
        planner = BatchPlanner(
            exclude_automations=False, max_body_bytes=120_000, on_too_large=rejected.append
        )
        out = []
        for piece, columns in zip(pieces, as_columns, strict=True):
            for batch in planner.add_all(ContactColumns.of(piece) if columns else piece):
                kinds.add(type(batch))
                out.append((batch.index, encode_batch_line(batch), planner.last_body_size))
        last = planner.flush()
        if last is not None:
            kinds.add(type(last))
            out.append((last.index, encode_batch_line(last), planner.last_body_size))
        return out, [r.row for r in rejected]

    reference = run([False] * len(pieces))
    assert kinds == {Batch}
    assert run([True] * len(pieces)) == reference
    if not seed % 2:  # (a contact too large on its own sends its piece through objects)
        assert kinds == {ColumnBatch}
    assert run([rnd.random() < 0.5 for _ in pieces]) == reference
