"""The compiled speed-ups (``exporter/native/_speedups.c``) against the standard library they
stand in for: the scanner against ``csv.reader``, the common-row mapper against the row
function, BLAKE2b-64 against ``hashlib``. Each property is checked on Hypothesis-generated
input, so an accepted text or row that the C code reads differently fails here."""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import shutil
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter import native
from exporter.management.config import Export, FieldMap
from exporter.planning.blockmap import BlockMapper
from exporter.planning.contacts import PreparedContact
from exporter.planning.mapping import Mapper
from exporter.planning.preparer import mapping_spec
from exporter.reading.plain import PlainBlock

speedups = native.SPEEDUPS


def test_the_speedups_are_built_wherever_a_c_compiler_is() -> None:
    # `make setup` builds them; where it cannot, prepare runs in pure Python (same results).
    if shutil.which("cc") or shutil.which("gcc"):
        assert native.available(), "make native: see .venv/native-build.log"
    else:
        assert native.SPEEDUPS is None


needs_speedups = pytest.mark.skipif(speedups is None, reason="the C speed-ups are not built")


def _csv_rows(text: str, delimiter: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True))


def _starts(offsets: bytes) -> list[int]:
    return [int.from_bytes(offsets[i : i + 8], sys.byteorder) for i in range(0, len(offsets), 8)]


# --- the scanner ---------------------------------------------------------------------------

_CHARS = st.sampled_from(list('ab ,;"\r\n\t|é€😀x'))
_TEXTS = st.lists(_CHARS, max_size=60).map("".join)
_PLAINISH = st.lists(
    st.lists(
        st.one_of(
            st.text(st.sampled_from(list("ab é€😀 ;")), max_size=6),
            st.text(st.sampled_from(list('ab ,"\n;é')), max_size=6).map(
                lambda v: '"' + v.replace('"', '""') + '"'
            ),
        ),
        min_size=1,
        max_size=4,
    ),
    max_size=6,
).map(lambda rows: "".join(",".join(r) + ("\r\n" if len(r) % 2 else "\n") for r in rows))


@needs_speedups
@settings(max_examples=400)
@given(text=st.one_of(_TEXTS, _PLAINISH), delimiter=st.sampled_from([",", ";", "\t", "|"]))
def test_scanned_records_are_what_the_csv_module_reads(text: str, delimiter: str) -> None:
    assert speedups is not None
    offsets = speedups.scan_records(text, delimiter, 1 << 20, True)
    if offsets is None:  # not plain: the csv module reads it (or names its error)
        return
    starts = _starts(offsets)
    assert starts[0] == 0 and starts[-1] == len(text)
    records = [text[a:b] for a, b in itertools.pairwise(starts)]
    per_record = [next(csv.reader((r,), delimiter=delimiter, strict=True), []) for r in records]
    assert per_record == _csv_rows(text, delimiter)
    assert PlainBlock(text, offsets, delimiter).rows() == per_record
    assert list(PlainBlock(text, offsets, delimiter)) == per_record
    assert [PlainBlock(text, offsets, delimiter)[i] for i in range(len(records))] == per_record


@needs_speedups
@settings(max_examples=300)
@given(text=st.one_of(_TEXTS, _PLAINISH), cut=st.integers(0, 80))
def test_a_text_read_so_far_gives_only_its_finished_records(text: str, cut: int) -> None:
    assert speedups is not None
    whole = speedups.scan_records(text, ",", 1 << 20, True)
    head = speedups.scan_records(text[:cut], ",", 1 << 20, False)
    if whole is None or head is None:
        return
    # the records of the head are the first records of the whole text, the same
    assert _starts(head) == _starts(whole)[: len(_starts(head))]


@needs_speedups
def test_the_scanner_leaves_what_it_cannot_read_for_certain_to_the_csv_module() -> None:
    assert speedups is not None
    scan = speedups.scan_records
    assert scan("a,b\n", ",", 100, True) is not None
    for text in ['a,"b"c\n', 'a,b"\n', "a\rb\n", 'a,"b\rc"\n', "a,b\x00\n", '"open\n']:
        assert scan(text, ",", 100, True) is None, text
    assert scan("a," + "x" * 10 + "\n", ",", 10, True) is None  # csv's field limit names it
    assert _starts(scan('a,"b\nc"\nd,e', ",", 100, False)) == [0, 8]  # "d,e" may go on


# --- the common-row mapper ------------------------------------------------------------------

COLUMNS = ["Email", "First", "Phone", "Born", "Tier", "Pid"]
EXPORT = Export(
    name="native",
    display_name="Native",
    connection="conn",
    segment="snapshots/native/",
    list_id="7",
    email="Email",
    first_name="First",
    phone="Phone",
    fields=[
        FieldMap(column="Born", field="1", field_id="1", field_type="date"),
        FieldMap(column="Tier", field="2", field_id="2", field_type="dropdown"),
    ],
    tags=["vip", 'say "hi"'],
    profile_id_column="Pid",
)

_ADDRESS = r"[A-Za-z0-9._%+!#-]{1,12}@[A-Za-z0-9-]{1,8}(\.[A-Za-z0-9-]{1,6}){1,2}"
_EMAILS = st.one_of(
    st.from_regex(_ADDRESS, fullmatch=True),
    st.sampled_from(["a@b.co", " A.B@Example.COM ", "x@y", "ü@x.de", "a@straße.de", ""]),
    st.sampled_from(["a..b@c.de", "a@b-.de", "a@-b.de", "a@b.c0m", "a@b." + "x" * 64]),
)
_VALUES = st.text(st.sampled_from(list('ab Zé€😀\t"\\\x01\u2028\u3000,')), max_size=8)
_DATES = st.one_of(
    st.sampled_from(["2024-02-29", "2023-02-29", "0000-01-01", "2024-13-01", "2024-W01-1"]),
    st.sampled_from(["01.02.2024", "20240102", " 2024-01-02 ", "", "1999-12-31"]),
    st.dates().map(str),
)
_ROWS = st.lists(
    st.tuples(_EMAILS, _VALUES, _VALUES, _DATES, _VALUES, _VALUES).map(list), max_size=25
)


@needs_speedups
@settings(max_examples=300)
@given(rows=_ROWS, quoting=st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL]))
def test_the_compiled_mapper_gives_the_row_functions_contact_for_each_common_row(
    rows: list[list[str]], quoting: int
) -> None:
    assert speedups is not None
    buf = io.StringIO()
    csv.writer(buf, quoting=quoting, lineterminator="\n").writerows(rows)
    text = buf.getvalue()
    offsets = speedups.scan_records(text, ",", 1 << 20, True)
    if offsets is None:
        return
    mapper = Mapper(mapping_spec(EXPORT), COLUMNS)
    spec = BlockMapper(mapper)._spec
    assert spec is not None
    fallback, keys, encoded, fps, pids = speedups.map_plain(text, offsets, ",", spec)
    block = PlainBlock(text, offsets, ",")
    common = [i for i in range(len(block)) if i not in set(fallback)]
    assert fallback == sorted(fallback)
    assert len(keys) == len(encoded) == len(fps) // 8 == len(common)
    assert pids is not None and len(pids) == len(common)
    for n, i in enumerate(common):
        want = mapper.map("s", i + 1, block[i])
        assert isinstance(want, PreparedContact), block[i]
        assert (keys[n], encoded[n], pids[n]) == (want.key, want.encoded, want.profile_id)
        assert int.from_bytes(fps[8 * n : 8 * n + 8], "little") == want.fingerprint


@needs_speedups
def test_the_compiled_mapper_takes_the_common_rows_and_leaves_the_rest() -> None:
    assert speedups is not None
    text = (
        "a@b.co,Ann,+1 5,2024-01-02,Gold,p1\n"  # common
        "A@B.CO,,,,,\n"  # common: empty values are left out
        "a@b.co,Ann,+1 5,02.01.2024,Gold,p1\n"  # a date to reformat: the row function
        'ü@b.de,Ann,"say ""x""",,,\n'  # a non-ASCII address and a quote: the row function
        "\n"  # blank: the row function
    )
    offsets = speedups.scan_records(text, ",", 100, True)
    assert offsets is not None
    spec = BlockMapper(Mapper(mapping_spec(EXPORT), COLUMNS))._spec
    assert spec is not None
    fallback, keys, encoded, _fps, pids = speedups.map_plain(text, offsets, ",", spec)
    assert fallback == [2, 3, 4]
    assert keys == ["a@b.co", "a@b.co"]
    assert pids == ["p1", None]
    assert encoded[1].startswith(b'{"email":"A@B.CO","tags":')


# --- BLAKE2b-64 -----------------------------------------------------------------------------


@needs_speedups
@given(st.lists(st.binary(max_size=400), max_size=20))
def test_blake2b64_is_hashlibs_blake2b_with_an_8_byte_digest(items: list[bytes]) -> None:
    assert speedups is not None
    want = b"".join(hashlib.blake2b(item, digest_size=8).digest() for item in items)
    assert speedups.blake2b64(items) == want


@needs_speedups
def test_blake2b64_hashes_every_block_boundary() -> None:
    assert speedups is not None
    items = [bytes(range(256))[:n] * 3 for n in (0, 1, 42, 127, 128, 129, 255, 256)]
    assert speedups.blake2b64(items) == b"".join(
        hashlib.blake2b(item, digest_size=8).digest() for item in items
    )


# --- KeySet ---------------------------------------------------------------------------------


@needs_speedups
@given(st.lists(st.lists(st.integers(-5, 3000), max_size=300), max_size=12))
def test_the_key_set_is_a_set_of_hashes(blocks: list[list[int]]) -> None:
    # ints hash to themselves (0 included, the table's empty mark): every path of the table
    assert speedups is not None
    table, reference = speedups.KeySet(), set()
    for block in blocks:
        expected = []
        for key in block:
            expected.append(hash(key) not in reference)
            reference.add(hash(key))
        assert list(table.first_seen(block)) == expected  # type: ignore[arg-type]
    assert len(table) == len(reference)


@needs_speedups
def test_the_key_set_knows_keys_by_hash_alone() -> None:
    assert speedups is not None
    same = [7, 7 + sys.hash_info.modulus]  # two ints, one hash: the second is a repeat
    assert speedups.KeySet().first_seen(same) == b"\x01\x00"  # type: ignore[arg-type]
