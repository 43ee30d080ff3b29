"""The chunk line encoding: decoding gives back exactly what was encoded."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.planning.chunks import _decode_batch_line_fast, decode_batch_line, encode_batch_line
from exporter.planning.contacts import Batch, PreparedContact, dumps, fingerprint

tricky = st.text(
    alphabet=st.sampled_from(["a", "é", '"', "\\", "}", "{", ",", ":", "\n", "\t", "ü", "€", "]"])
    | st.characters(exclude_categories=("Cs",)),  # text read from UTF-8 has no surrogates
    max_size=12,
) | st.sampled_from(['},{"row":', '"row":', "}}]}", '"payload":'])

payloads = st.fixed_dictionaries(
    {"email": tricky},
    optional={
        "first_name": tricky,
        "fields": st.lists(st.fixed_dictionaries({"id": st.integers(1, 99), "value": tricky})),
        "tags": st.lists(tricky, max_size=3),
        "subscribe": st.just([{"listid": "1"}]),
    },
)

contacts = st.builds(
    lambda row, source, key, payload, pid: PreparedContact(
        row=row,
        source=source,
        key=key,
        payload=dumps(payload),
        fingerprint=fingerprint(dumps(payload)),
        profile_id=pid,
    ),
    st.integers(1, 10**7),
    tricky,
    tricky,
    payloads,
    st.none() | tricky,
)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 10**6), st.lists(contacts, max_size=6))
def test_a_batch_line_decodes_to_the_same_batch_by_the_fast_path(
    index: int, members: list[PreparedContact]
) -> None:
    batch = Batch(index=index, contacts=members)
    line = encode_batch_line(batch).decode().rstrip("\n")
    assert decode_batch_line(line) == batch
    assert decode_batch_line(line + "\n") == batch
    assert _decode_batch_line_fast(line) == batch  # the fast path is the one taken


def test_a_line_of_another_shape_still_decodes_through_json() -> None:
    line = (
        '{"batch": 3, "contacts": [{"row": 1, "source": "a.csv", "key": "x@y.z", "fp": 5,'
        ' "pid": null, "payload": {"email": "X@y.z"}}]}'
    )
    assert _decode_batch_line_fast(line) is None
    batch = decode_batch_line(line)
    assert batch.index == 3
    assert batch.contacts[0].payload == '{"email":"X@y.z"}'


def reference_line(batch: Batch) -> bytes:
    """The chunk line spelled out with ``dumps`` field by field: the oracle the production
    encoder (a single ``bytes %`` over per-field columns) must equal byte for byte."""
    parts = [
        f'{{"row":{c.row},"source":{dumps(c.source)},"key":{dumps(c.key)},'
        f'"fp":{c.fingerprint},"pid":{dumps(c.profile_id)},"payload":{c.payload}}}'
        for c in batch.contacts
    ]
    return f'{{"batch":{batch.index},"contacts":[{",".join(parts)}]}}\n'.encode()


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 10**6), st.lists(contacts, max_size=6), st.booleans())
def test_the_production_encoder_is_byte_identical_to_the_reference(
    index: int, members: list[PreparedContact], keep_bytes: bool
) -> None:
    if keep_bytes:  # as the mapper hands them over: the payload's UTF-8 bytes kept
        for c in members:
            c.encoded = c.payload.encode()
    batch = Batch(index=index, contacts=members)
    assert encode_batch_line(batch) == reference_line(batch)


def test_prepare_writes_chunks_with_the_tested_encoder() -> None:
    import exporter.planning.preparer as preparer

    # The preparer's chunk writer calls this very function (no private copy of the encoder).
    assert preparer.encode_batch_line is encode_batch_line
