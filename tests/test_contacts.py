"""The chunk line encoding: decoding gives back exactly what was encoded."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.planning.contacts import (
    Batch,
    PreparedContact,
    _decode_batch_line_fast,
    decode_batch_line,
    dumps,
    encode_batch_line,
    fingerprint,
)

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
    line = encode_batch_line(batch)
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
