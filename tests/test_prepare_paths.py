"""Differential test of prepare's block path against the row-by-row loop it replaced.

:class:`RowByRowPreparer` is the loop ``Preparer._stream`` had before the block path (a
Python ``set`` of key hashes, one row at a time), kept here verbatim as the reference, and it
reads the snapshot with the csv module alone (:func:`exporter.native.disabled`). The block
path runs twice: with the compiled scanner and mapper (when built) and without. All three
prepare the same snapshot against the same state; the chunk files, rejected rows, dry-run plan,
kept-leavers file, manifest, progress events and the state a clean push of the chunks would
leave must be byte-identical. Inputs: the test corpus, and Hypothesis-generated CSVs
(delimiters, quoting, line endings, BOM, blank lines, ragged rows, duplicates in any case,
invalid and odd values), with tiny classify batches and blocks so every boundary is crossed.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest.mock import patch

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter import native
from exporter.errors import InputError
from exporter.incremental import update as update_mod
from exporter.incremental.diff import Change
from exporter.incremental.state import ExportState
from exporter.management.config import Export, FieldMap
from exporter.planning import preparer as preparer_mod
from exporter.planning.batching import BatchPlanner
from exporter.planning.blockmap import BlockMapper
from exporter.planning.chunks import decode_batch_line
from exporter.planning.contacts import PreparedContact, Rejection
from exporter.planning.dedup import SeenKeys
from exporter.planning.mapping import Mapper
from exporter.planning.preparer import CONTACTS, Preparer
from exporter.progress import ProgressEvent
from exporter.reading import snapshot as snapshot_mod
from exporter.reading.snapshot import local_lister, local_opener, open_snapshot
from exporter.storage import runs
from exporter.storage.store import LocalStore

CORPUS = Path(__file__).parent / "data" / "snapshots"


class RowByRowPreparer(Preparer):
    """The reference: prepare's loop as it was before the block path (contacts mapped and
    de-duplicated one by one, classified as objects by ``Differ.classify_batch``, batched one
    by one)."""

    def _stream(self, blocks: Iterator[tuple[str, int, list[list[str]]]], mapper: Mapper) -> None:
        map_row = mapper.map
        seen: set[int] = set()
        seen_add = seen.add
        contact_type = PreparedContact
        buffer: list[PreparedContact] = []
        append = buffer.append
        raw: list[list[str]] = []
        dry = self.dry_run
        n = 0
        next_progress = preparer_mod.PROGRESS_EVERY
        for source, first, block in blocks:
            for row_no, values in enumerate(block, first):
                got = map_row(source, row_no, values)
                if got.__class__ is contact_type:
                    key = hash(got.key)
                    if key in seen:
                        self._duplicate(got, mapper, values)  # type: ignore[arg-type]
                        continue
                    seen_add(key)
                    append(got)  # type: ignore[arg-type]
                    if dry:
                        raw.append(values)
                    if len(buffer) >= preparer_mod.CLASSIFY_BATCH:
                        self._flush(buffer, raw, mapper)
                        buffer, raw = [], []
                        append = buffer.append
                elif values:
                    self._reject(got)  # type: ignore[arg-type]
                else:
                    n -= 1
            n += len(block)
            if self.rejects.count >= self.max_rejected_rows:
                break
            while n >= next_progress:
                self.progress(ProgressEvent("prepare", next_progress, None, "rows read"))
                next_progress += preparer_mod.PROGRESS_EVERY
        self._flush(buffer, raw, mapper)
        self.rows_read = n
        self.unique_keys = len(seen)
        self.progress(ProgressEvent("prepare", n, n, "rows read"))
        last = self.planner.flush()
        if last is not None:
            self._write(last, CONTACTS)
        self.chunks.close_chunk()

    def _flush(self, buffer: list[PreparedContact], raw: list[list[str]], mapper: Mapper) -> None:
        if not buffer:
            return
        kinds = self.differ.classify_batch(buffer)
        if self.plan is not None:
            self._plan_rows(buffer, raw, kinds, mapper)
        unchanged = Change.UNCHANGED
        sent = [c for c, kind in zip(buffer, kinds, strict=True) if kind is not unchanged]
        write = self._write
        for batch in self.planner._add_one_by_one(sent):
            write(batch, CONTACTS)

    def _plan_rows(
        self,
        buffer: list[PreparedContact],
        raw: list[list[str]],
        kinds: list[Change],
        mapper: Mapper,
    ) -> None:
        assert self.plan is not None
        for contact, values, kind in zip(buffer, raw, kinds, strict=True):
            if kind is Change.UNCHANGED:
                continue
            self.plan.write_row(
                row=contact.row,
                source=contact.source,
                reason="new" if kind is Change.NEW else "changed",
                message=contact.payload,
                values=self._values(values),
                action="add" if kind is Change.NEW else "update",
            )


def _export(email: str = "Email", **kw: Any) -> Export:
    return Export(
        name="diff",
        display_name="Differential",
        connection="conn",
        segment="snapshots/diff/",
        list_id="7",
        email=email,
        **kw,
    )


GENERATED = _export(
    first_name="First",
    last_name="Last",
    fields=[
        FieldMap(column="Birthday", field="2", field_id="2", field_type="date"),
        FieldMap(column="Colors", field="3", field_id="3", field_type="multiselect"),
    ],
    tags=["segment"],
    tag_column="Tags",
    profile_id_column="Pid",
)
GENERATED_COLUMNS = ["Email", "First", "Last", "Birthday", "Colors", "Tags", "Pid"]
COLUMNAR = _export(
    first_name="First",
    last_name="Last",
    phone="Tags",
    fields=[
        FieldMap(column="Birthday", field="2", field_id="2", field_type="date"),
        FieldMap(column="Colors", field="3", field_id="3", field_type="dropdown"),
    ],
    tags=["segment"],
    profile_id_column="Pid",
)
"""The same columns mapped so the block mapper maps common rows column by column."""


def _prepare(
    cls: type[Preparer],
    home: Path,
    snapshot: str,
    export: Export,
    state: bytes | None,
    **options: Any,
) -> dict[str, Any]:
    """Everything one prepare leaves behind: files, manifest, progress, errors, next state."""
    store = LocalStore(home)
    events: list[ProgressEvent] = []
    previous = ExportState.from_bytes(state) if state is not None else ExportState.empty()
    p = cls(
        store,
        export,
        "run-1",
        state=previous,
        full_resync=options.pop("full_resync", False),
        allow_shrink=True,
        dry_run=options.pop("dry_run", False),
        chunk_batches=2,
        progress=events.append,
        **options,
    )
    out: dict[str, Any] = {"events": events}
    try:
        reader = open_snapshot(snapshot, opener=local_opener, lister=local_lister)
        manifest = p.run(reader, snapshot)
    except InputError as exc:
        out["error"] = (str(exc), exc.file, exc.row, exc.column)
        return out
    out["manifest"] = manifest.model_dump(exclude={"prepare_seconds"})
    out["files"] = {
        str(f.relative_to(home)): f.read_bytes() for f in sorted(home.rglob("*")) if f.is_file()
    }
    update = update_mod.StateUpdate(snapshot_count=manifest.snapshot_count)
    for chunk in manifest.chunks:
        if chunk.kind != CONTACTS:
            continue
        with store.open_read(chunk.path) as fh:
            for line in io.TextIOWrapper(fh, encoding="utf-8"):
                for contact in decode_batch_line(line).contacts:
                    update.confirm_sent(contact)
    out["state"] = update_mod.apply(previous, update).to_bytes()
    return out


def _both(
    tmp: Path, snapshot: str, export: Export, state: bytes | None = None, **options: Any
) -> dict[str, Any]:
    new = _prepare(Preparer, tmp / "block", snapshot, export, state, **dict(options))
    with native.disabled():
        python = _prepare(Preparer, tmp / "python", snapshot, export, state, **dict(options))
        ref = _prepare(RowByRowPreparer, tmp / "row", snapshot, export, state, **dict(options))
    for got in (new, python):
        assert got.keys() == ref.keys()
        for key in ref:
            assert got[key] == ref[key], key
    return new


# --- the corpus ----------------------------------------------------------------------------

CORPUS_CASES = [
    ("comma.csv", _export(first_name="First Name", last_name="Last Name", phone="Phone")),
    ("comma.csv.gz", _export(first_name="First Name", phone="Phone")),
    ("semicolon.csv", _export(last_name="Last Name")),
    ("pipe.csv", _export(first_name="First Name")),
    ("tab.tsv", _export(phone="Phone")),
    ("bom_crlf.csv", _export(first_name="First Name", last_name="Last Name", phone="Phone")),
    ("quoted_newlines.csv", _export(first_name="First Name", last_name="Last Name")),
    ("ci/CustomerInsights_8f1c2d/segexport/model.json", _export(profile_id_column="CustomerId")),
    ("ci_header/CustomerInsights_8f1c2d/segexport2/model.json", _export(first_name="FirstName")),
]


@pytest.mark.parametrize("dry_run", [False, True])
@pytest.mark.parametrize(("name", "export"), CORPUS_CASES, ids=[c[0] for c in CORPUS_CASES])
def test_the_corpus_prepares_identically(
    tmp_path: Path, name: str, export: Export, dry_run: bool
) -> None:
    with (
        patch.object(preparer_mod, "CLASSIFY_BATCH", 2),
        patch.object(preparer_mod, "READ_BLOCK", 3),
    ):
        out = _both(tmp_path, str(CORPUS / name), export, dry_run=dry_run)
    assert "error" in out or out["manifest"]["counts"]["rows_read"] > 0


# --- generated CSVs ------------------------------------------------------------------------

_VALID = ["ada@example.com", "grace@example.org", "x.y+z@sub.example.co", "o'neil@example.ie"]
_email = st.one_of(
    st.sampled_from(_VALID),
    st.sampled_from(_VALID).map(str.upper),  # a duplicate in another case
    st.sampled_from(_VALID).map(lambda e: f"  {e}\t"),
    st.sampled_from(["", " ", "no-at-sign", "a@b", "ü@example.com", "jörg@bücher.de"]),
    st.sampled_from(["user@straße.de", "a..b@example.com", "x" * 65 + "@example.com"]),
    st.from_regex(r"[a-z]{1,8}@[a-z]{1,8}\.(com|de|xn--p1ai)", fullmatch=True),
)
_text = st.one_of(
    st.sampled_from(["", " ", "Ada", "Hopper, USN", 'say "hi"', "a\nb", "tab\there", "ß€😀"]),
    st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00\r"), max_size=8),
)
_date = st.sampled_from(
    ["", "2024-02-29", "2023-02-29", "2024/03/01", "01.02.2024", "x", " 2024-1-2"]
)
_multi = st.sampled_from(["", "red", "red,blue", "a;;b", ",", " x | y ", "a||b"])
_row = st.tuples(_email, _text, _text, _date, _multi, _text, _text).map(list)
_common = st.tuples(  # a row the block mapper maps column by column
    st.one_of(st.sampled_from(_VALID), st.sampled_from(_VALID).map(str.upper)),
    *[st.sampled_from(["Ada", "Hopper, USN", "ß€😀", "O'Neil", "x;y|z", "  pad "])] * 2,
    st.sampled_from(["2024-02-29", "1999-12-31", "2000-01-01"]),
    *[st.sampled_from(["Gold", "a b", "ä", "1"])] * 3,
).map(list)
_rows = st.lists(
    st.one_of(
        _row,
        _common,
        _common,
        _row.map(lambda r: r[:3]),  # short: padded with empty values
        _row.map(lambda r: [*r, "extra"]),  # long: ragged_row
        st.just([]),  # a blank line
    ),
    max_size=30,
)


@st.composite
def _csv_bytes(draw: st.DrawFn, rows: list[list[str]]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(
        buf,
        delimiter=draw(st.sampled_from([",", ";", "\t", "|"])),
        quoting=draw(st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL])),
        lineterminator=draw(st.sampled_from(["\r\n", "\n"])),
    )
    writer.writerow(GENERATED_COLUMNS)
    for r in rows:
        writer.writerow(r)  # [] writes a blank line
    bom = draw(st.sampled_from(["", "\ufeff"]))
    return (bom + buf.getvalue()).encode()


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@pytest.mark.parametrize("export", [GENERATED, COLUMNAR], ids=["by-row", "columnar"])
@given(
    data=st.data(),
    before=_rows,
    after=_rows,
    batch=st.integers(1, 5),
    block=st.integers(1, 7),
    chars=st.integers(1, 60),
)
def test_generated_csvs_prepare_identically(
    tmp_path_factory: pytest.TempPathFactory,
    export: Export,
    data: st.DataObject,
    before: list[list[str]],
    after: list[list[str]],
    batch: int,
    block: int,
    chars: int,
) -> None:
    tmp = tmp_path_factory.mktemp("gen")
    first, second = tmp / "before.csv", tmp / "after.csv"
    first.write_bytes(data.draw(_csv_bytes(before)))
    second.write_bytes(data.draw(_csv_bytes(before[::2] + after)))  # some rows unchanged
    dry = data.draw(st.booleans())
    with (
        patch.object(preparer_mod, "CLASSIFY_BATCH", batch),
        patch.object(preparer_mod, "READ_BLOCK", block),
        # plain text read a few characters at a time: records cross every read
        patch.object(snapshot_mod, "_PLAIN_FIRST_CHARS", chars),
        patch.object(snapshot_mod, "_PLAIN_MIN_CHARS", chars),
        patch.object(snapshot_mod, "_PLAIN_MAX_CHARS", chars),
    ):
        out = _both(tmp / "1", str(first), export)
        state = out.get("state")
        _both(tmp / "2", str(second), export, state, dry_run=dry)


# --- the edges -----------------------------------------------------------------------------


def _write(path: Path, rows: list[list[str]]) -> str:
    with path.open("w", encoding="utf-8", newline="") as fh:
        csv.writer(fh).writerows([["Email", "Note"], *rows])
    return str(path)


def test_a_too_large_contact_is_rejected_where_the_row_loop_rejected_it(tmp_path: Path) -> None:
    """A contact too large for a request is rejected when its classify batch is flushed,
    after rows read later: the rejected rows keep that interleaving."""
    big = "x" * 400_000
    rows = [[f"a{i}@example.com", big if i == 6 else "n"] for i in range(12)]
    rows[3][0] = "bad"
    rows[9][0] = "A1@EXAMPLE.COM"
    export = _export(fields=[FieldMap(column="Note", field="1", field_id="1", field_type="text")])
    with patch.object(preparer_mod, "CLASSIFY_BATCH", 5):
        out = _both(tmp_path, _write(tmp_path / "s.csv", rows), export)
    assert out["manifest"]["rejected_by_reason"] == {"too_large": 1, "invalid_email": 1}
    assert out["manifest"]["counts"]["duplicates"] == 1
    rejected = out["files"][runs.rejected_path("diff", "run-1")].decode().splitlines()
    # row 7 (too large) is reported when its batch of five is flushed, after row 12: so
    # after the duplicate on row 10
    assert [line.split(",")[0] for line in rejected[1:]] == ["4", "10", "7"]


def test_the_rejected_rows_guard_stops_both_at_the_same_row(tmp_path: Path) -> None:
    rows = [["bad" if i % 2 else f"u{i}@example.com", ""] for i in range(40)]
    with patch.object(preparer_mod, "READ_BLOCK", 4):
        out = _both(tmp_path, _write(tmp_path / "s.csv", rows), _export(), max_rejected_rows=5)
    assert out["manifest"]["guarded"]


# --- the block mapper -----------------------------------------------------------------------


def _mapper(export: Export, columns: list[str]) -> Mapper:
    return Mapper(preparer_mod.mapping_spec(export), columns, source="s.csv")


def test_the_block_mapper_maps_common_rows_column_by_column() -> None:
    assert BlockMapper(_mapper(COLUMNAR, GENERATED_COLUMNS)).columnar
    assert not BlockMapper(_mapper(GENERATED, GENERATED_COLUMNS)).columnar  # a tag column


_cell = st.one_of(
    st.sampled_from(["", " ", "Ada", "2024-02-29", "2023-02-29", "2024-1-02", "20240229"]),
    st.sampled_from(["a\x00b", 'q"', "b\\s", "t\tx", "\x7f", "\xa0", " 2024-02-29", "\x85"]),
    st.sampled_from(_VALID),
    _email,
    st.text(max_size=6),
)


_gappy_value = st.sampled_from(["", "", " ", "Ada", "x"])
_gappy = st.tuples(  # a common row but for some empty values (left out of the payload)
    st.sampled_from(_VALID),
    _gappy_value,
    _gappy_value,
    st.sampled_from(["", "2024-02-29"]),
    _gappy_value,
    _gappy_value,
    _gappy_value,
).map(list)


@given(
    st.lists(
        st.lists(_cell, min_size=7, max_size=7)
        | st.lists(_cell, max_size=9)
        | st.lists(st.sampled_from(_VALID), min_size=7, max_size=7)
        | _gappy,
        max_size=40,
    ),
    st.integers(1, 1000),
)
def test_the_block_mapper_gives_what_the_row_function_gives(
    block: list[list[str]], first: int
) -> None:
    """Row for row, the payload bytes and size included (NULs too: the reader never yields
    one, but the mapper does not rely on it)."""
    _check_block_mapper(_mapper(COLUMNAR, GENERATED_COLUMNS), block, first)


WIDE_COLUMNS = [f"Extra{i}" for i in range(10)] + GENERATED_COLUMNS[::-1]
"""Wider than the mapper unpacks whole, the mapped columns last and in another order."""


@given(
    st.lists(
        st.lists(_cell, min_size=17, max_size=17)
        | st.lists(st.sampled_from([*_VALID, "Ada", "2024-02-29"]), min_size=17, max_size=17),
        max_size=20,
    ),
)
def test_the_block_mapper_picks_the_mapped_cells_of_wide_rows(block: list[list[str]]) -> None:
    _check_block_mapper(_mapper(COLUMNAR, WIDE_COLUMNS), block, 1)


def _check_block_mapper(mapper: Mapper, block: list[list[str]], first: int) -> None:
    blocks = BlockMapper(mapper)
    got = blocks.map_block("s.csv", first, block)
    want = [mapper.map("s.csv", n, values) for n, values in enumerate(block, first)]
    assert got == want
    for g, w in zip(got, want, strict=True):
        if isinstance(w, PreparedContact):
            assert isinstance(g, PreparedContact)
            assert (g.encoded, g.size) == (w.encoded, w.size)
    columns, at, rejected = blocks.map_columns("s.csv", first, block)
    assert columns.contacts() == [w for w in want if isinstance(w, PreparedContact)]
    assert [block[i] for i in at] == [
        values for values, w in zip(block, want, strict=True) if isinstance(w, PreparedContact)
    ]
    assert rejected == [(i, w) for i, w in enumerate(want) if isinstance(w, Rejection)]


# --- batches cut by running sums ----------------------------------------------------------


_odd_size = st.sampled_from([-1, 10_000])  # unknown (the loop measures it), too large


@given(
    st.lists(
        (
            st.lists(st.integers(1, 60), max_size=8) | st.lists(st.integers(1, 60), min_size=64)
        ).flatmap(lambda sizes: st.lists(_odd_size, max_size=1).map(lambda odd: odd + sizes)),
        min_size=1,
        max_size=4,
    ),
    st.integers(1, 30),
    st.integers(100, 600),
    st.booleans(),
)
def test_batches_cut_by_running_sums_are_those_cut_one_by_one(
    calls: list[list[int]], most: int, limit: int, exclude: bool
) -> None:
    """Sizes up to what a request holds, an unknown size or a too-large contact now and then
    (those calls take the loop), several calls in a row (an open batch carried over)."""

    def contact(n: int, size: int) -> PreparedContact:
        payload = "p" * abs(size)
        return PreparedContact(n, "s.csv", f"k{n}", payload, n, None, size)

    planners = [
        BatchPlanner(exclude_automations=exclude, max_contacts=most, max_body_bytes=limit)
        for _ in range(2)
    ]
    n = 0
    for sizes in calls:
        contacts = [contact(n + i, size) for i, size in enumerate(sizes)]
        n += len(sizes)
        got = planners[0].add_all(contacts)
        want = planners[1]._add_one_by_one(contacts)
        assert [(b.index, b.contacts) for b in got] == [(b.index, b.contacts) for b in want]
        assert planners[0].last_body_size == planners[1].last_body_size
        assert (planners[0]._contacts, planners[0]._size) == (
            planners[1]._contacts,
            planners[1]._size,
        )
        assert planners[0].too_large == planners[1].too_large
    last = [p.flush() for p in planners]
    assert [(b.index, b.contacts) if b else None for b in last] == [
        (b.index, b.contacts) if b else None for b in last[::-1]
    ]


# --- SeenKeys ------------------------------------------------------------------------------


def _seen_keys_both() -> list[SeenKeys]:
    """A compiled (when built) and a pure-Python :class:`SeenKeys`."""
    with native.disabled():
        python = SeenKeys()
    return [SeenKeys(), python]


@given(st.lists(st.lists(st.sampled_from("abcdefghij"), max_size=12), max_size=40))
def test_seen_keys_marks_each_first_occurrence_like_a_set(blocks: list[list[str]]) -> None:
    for seen in _seen_keys_both():
        reference: set[str] = set()
        for keys in blocks:
            expected = []
            for k in keys:
                expected.append(k not in reference)
                reference.add(k)
            assert seen.first_seen(keys).tolist() == expected
        assert len(seen) == len(reference)
        if seen._table is None:
            assert seen.nbytes == 8 * len(reference) + (1 << 16) // 8  # the hashes and the filter
        else:
            assert seen.nbytes == 8 * 1024  # the table's first size


def test_seen_keys_stays_exact_while_its_filter_grows() -> None:
    """Enough keys to rebuild the Bloom filter (grow the table) several times, with repeats
    across blocks."""
    for seen in _seen_keys_both():
        reference: set[str] = set()
        for lo in range(0, 60_000, 1_000):
            keys = [f"k{i}@example.com" for i in range(lo, lo + 1_000)]
            keys += [f"k{i}@example.com" for i in range(lo // 2, lo // 2 + 50)]  # seen before
            expected = []
            for k in keys:
                expected.append(k not in reference)
                reference.add(k)
            assert seen.first_seen(keys).tolist() == expected
        assert len(seen) == len(reference) == 60_000
        assert seen.nbytes < 22 * len(reference)  # a set of hashes costs ~65 bytes a key
