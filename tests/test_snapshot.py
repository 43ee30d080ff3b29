"""Snapshot readers: the CSV dialect corpus, Customer Insights folders, discovery, bad input."""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import tracemalloc
from pathlib import Path

import pytest

from exporter.errors import ConfigError, InputError, NotFoundError
from exporter.reading.discovery import find_snapshots, newest_under
from exporter.reading.limits import ReadLimits
from exporter.reading.snapshot import (
    SnapshotRef,
    local_lister,
    local_opener,
    open_snapshot,
    sniff_delimiter,
    store_lister,
    store_opener,
)
from exporter.storage.store import LocalStore

DATA = Path(__file__).parent / "data" / "snapshots"
COLUMNS = ["Email", "First Name", "Last Name", "Phone"]
ROWS = [
    ["ada@example.com", "Ada", "Lovelace", "+44 20 7946 0000"],
    ["grace@example.org", "Grace", "Hopper, USN", ""],
    ["linus@example.net", "Linus", "Torvalds", "+358 9 000"],
]
CI_COLUMNS = ["CustomerId", "Email", "FirstName", "LastName"]
CI_ROWS = [
    ["c-1", "ada@example.com", "Ada", "Lovelace"],
    ["c-2", "grace@example.org", "Grace", "Hopper"],
    ["c-3", "linus@example.net", "Linus", "Torvalds"],
]
CI_MODEL = DATA / "ci" / "CustomerInsights_8f1c2d" / "segexport" / "model.json"
CI_HEADER_MODEL = DATA / "ci_header" / "CustomerInsights_8f1c2d" / "segexport2" / "model.json"


def read_all(
    ref: str | SnapshotRef, **kw: object
) -> tuple[list[str], list[tuple[str, int, list[str]]]]:
    kw.setdefault("opener", local_opener)
    with open_snapshot(ref, **kw) as reader:  # type: ignore[arg-type]
        return reader.columns, list(reader.rows())


def write(path: Path, data: bytes) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return str(path)


# --- dialects -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["comma.csv", "bom_crlf.csv", "semicolon.csv", "tab.tsv", "pipe.csv", "comma.csv.gz"]
)
def test_every_dialect_reads_the_same_rows(name: str) -> None:
    columns, rows = read_all(str(DATA / name))
    assert columns == COLUMNS
    assert [values for _s, _n, values in rows] == ROWS
    assert [n for _s, n, _v in rows] == [1, 2, 3]
    assert {s for s, _n, _v in rows} == {str(DATA / name)}


def test_gzip_is_detected_by_magic_not_by_name(tmp_path: Path) -> None:
    path = write(tmp_path / "export.csv", (DATA / "comma.csv.gz").read_bytes())
    columns, rows = read_all(path)
    assert columns == COLUMNS and [v for _s, _n, v in rows] == ROWS


def test_quoted_newlines_and_blank_lines_keep_spreadsheet_row_numbers() -> None:
    columns, rows = read_all(str(DATA / "quoted_newlines.csv"))
    assert columns == ["Email", "First Name", "Last Name", "Notes"]
    assert rows[0][1:] == (
        1,
        ["ada@example.com", "Ada", "Lovelace", 'first line\nsecond "quoted" line'],
    )
    # the blank line is row 2: counted, not yielded
    assert rows[1][1:] == (3, ["grace@example.org", "Grace", "Hopper", "a,b"])


def test_an_explicit_delimiter_overrides_detection(tmp_path: Path) -> None:
    # a header whose most frequent character is a comma inside names, but the file is ';'
    path = write(tmp_path / "x.csv", b"Email;Name, Full;Tags, a, b\nx@example.com;Doe, J;t\n")
    columns, rows = read_all(path, delimiter=";")
    assert columns == ["Email", "Name, Full", "Tags, a, b"]
    assert rows[0][2] == ["x@example.com", "Doe, J", "t"]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("a,b,c", ","),
        ("a;b;c", ";"),
        ("a\tb\tc", "\t"),
        ("a|b|c", "|"),
        ('"x;y",b,c', ","),  # delimiters inside quotes do not count
        ("single", ","),
        ("a;b,c;d\nx,y,z,w,v", ";"),  # only the first line is looked at
    ],
)
def test_sniff_delimiter(line: str, expected: str) -> None:
    assert sniff_delimiter(line) == expected


def test_header_only_is_an_empty_snapshot(tmp_path: Path) -> None:
    columns, rows = read_all(write(tmp_path / "h.csv", b"Email,Name\r\n"))
    assert columns == ["Email", "Name"] and rows == []


def test_ragged_rows_are_yielded_for_the_mapper_to_reject(tmp_path: Path) -> None:
    _cols, rows = read_all(write(tmp_path / "r.csv", b"Email,Name\na@x.io\nb@x.io,B,extra\n"))
    assert [v for _s, _n, v in rows] == [["a@x.io"], ["b@x.io", "B", "extra"]]


def test_a_one_megabyte_field_is_read(tmp_path: Path) -> None:
    big = "x" * 1_000_000
    _cols, rows = read_all(write(tmp_path / "big.csv", f"Email,Note\na@x.io,{big}\n".encode()))
    assert rows[0][2][1] == big


def test_latin1_can_be_read_when_asked_for_explicitly(tmp_path: Path) -> None:
    path = write(tmp_path / "l.csv", "Email,Name\na@x.io,José\n".encode("cp1252"))
    _cols, rows = read_all(path, encoding="cp1252")
    assert rows[0][2] == ["a@x.io", "José"]


def test_reading_streams_with_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "many.csv"
    with path.open("w") as fh:
        fh.write("Email,First,Last\n")
        for i in range(60_000):
            fh.write(f"person{i}@example.com,First{i},Last{i}\n")
    assert path.stat().st_size > 2_500_000
    tracemalloc.start()
    try:
        count = sum(1 for _ in open_snapshot(str(path), opener=local_opener).rows())
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 60_000
    assert peak < 1_000_000  # far less than the file: nothing accumulates


# --- Customer Insights ------------------------------------------------------------------------


def test_customer_insights_folder_without_headers_takes_columns_from_model_json() -> None:
    columns, rows = read_all(str(CI_MODEL), lister=local_lister)
    assert columns == CI_COLUMNS
    assert [v for _s, _n, v in rows] == CI_ROWS
    assert [n for _s, n, _v in rows] == [1, 2, 1]  # numbered per partition
    assert [Path(s).name for s, _n, _v in rows] == [
        "HighValueCustomers_1.csv",
        "HighValueCustomers_1.csv",
        "HighValueCustomers_2.csv",
    ]
    assert all("/2026/11/24/0200/" in s for s, _n, _v in rows)  # not the older run


def test_customer_insights_folder_with_header_rows_and_model_delimiter() -> None:
    columns, rows = read_all(str(CI_HEADER_MODEL), lister=local_lister)
    assert columns == CI_COLUMNS
    assert [v for _s, _n, v in rows] == CI_ROWS
    assert [n for _s, n, _v in rows] == [1, 1, 2]


def test_a_folder_prefix_with_model_json_is_read_as_customer_insights() -> None:
    prefix = str(CI_MODEL.parent) + "/"
    columns, rows = read_all(prefix, lister=local_lister)
    assert columns == CI_COLUMNS and len(rows) == 3


def test_partition_header_that_disagrees_with_model_json_is_an_error(tmp_path: Path) -> None:
    folder = tmp_path / "segexport2"
    shutil.copytree(CI_HEADER_MODEL.parent, folder)
    part = next(folder.rglob("HighValueCustomers_2.csv"))
    part.write_bytes(b'"CustomerId";"FirstName";"Email";"LastName"\r\n"c";"x";"a@x.io";"y"\r\n')
    with pytest.raises(InputError) as err:
        read_all(str(folder / "model.json"), lister=local_lister)
    assert err.value.file == part.as_posix() and "does not match" in str(err.value)


def test_model_json_naming_a_missing_partition(tmp_path: Path) -> None:
    folder = tmp_path / "segexport"
    shutil.copytree(CI_MODEL.parent, folder)
    next(folder.rglob("0200/HighValueCustomers_2.csv")).unlink()
    with pytest.raises(InputError) as err:
        read_all(str(folder / "model.json"), lister=local_lister)
    assert err.value.file == (folder / "model.json").as_posix()
    assert "HighValueCustomers_2.csv" in str(err.value) and "does not exist" in str(err.value)


def test_model_json_missing_partition_without_lister_fails_when_read(tmp_path: Path) -> None:
    folder = tmp_path / "segexport"
    shutil.copytree(CI_MODEL.parent, folder)
    gone = next(folder.rglob("0200/HighValueCustomers_2.csv"))
    gone.unlink()
    with pytest.raises(InputError) as err:
        read_all(str(folder / "model.json"))
    assert err.value.file == gone.as_posix() and "not found" in str(err.value)


@pytest.mark.parametrize(
    ("text", "expect"),
    [
        (b'{"entities": [', "malformed model.json"),
        (b'{"name": "x"}', "no 'entities'"),
        (b'{"entities": [{"name": "E", "attributes": []}]}', "has no attributes"),
        (
            b'{"entities": [{"name": "E", "attributes": [{"name": "a"}],'
            b' "partitions": [{"name": "p"}]}]}',
            "without a location",
        ),
    ],
)
def test_malformed_model_json(tmp_path: Path, text: bytes, expect: str) -> None:
    path = write(tmp_path / "exp" / "model.json", text)
    with pytest.raises(InputError) as err:
        read_all(path)
    assert err.value.file == path and expect in str(err.value)


def test_model_json_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path / "exp" / "model.json", b'{\n  "entities": [\n    {,\n')
    with pytest.raises(InputError) as err:
        read_all(path)
    assert err.value.row == 3


# --- discovery --------------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    store = LocalStore(tmp_path / "store")
    seg = tmp_path / "store" / "snapshots" / "vip"
    shutil.copytree(DATA / "ci", seg)
    shutil.copy(DATA / "comma.csv", seg / "2026-11-20.csv")
    os.utime(seg / "2026-11-20.csv", (1_700_000_000, 1_700_000_000))
    (seg / "_SUCCESS").write_bytes(b"")
    return store


def test_find_snapshots_groups_customer_insights_partitions_and_plain_files(
    store: LocalStore,
) -> None:
    refs = find_snapshots(store, "snapshots/vip/")
    assert [r.kind for r in refs] == ["csv", "cdm"]  # oldest first
    plain, cdm = refs
    assert plain.path == "snapshots/vip/2026-11-20.csv"
    assert cdm.path == "snapshots/vip/CustomerInsights_8f1c2d/segexport/model.json"
    assert cdm.entity == "HighValueCustomers"
    assert [p.rsplit("/", 1)[1] for p in cdm.partitions] == [
        "HighValueCustomers_1.csv",
        "HighValueCustomers_2.csv",
    ]
    assert all("/2026/11/24/0200/" in p for p in cdm.partitions)
    assert newest_under(store, "snapshots/vip/") == cdm


def test_a_discovered_snapshot_opens_through_the_store(store: LocalStore) -> None:
    ref = newest_under(store, "snapshots/vip/")
    columns, rows = read_all(ref, opener=store_opener(store), lister=store_lister(store))
    assert columns == CI_COLUMNS and [v for _s, _n, v in rows] == CI_ROWS
    plain = find_snapshots(store, "snapshots/vip/")[0]
    assert read_all(plain, opener=store_opener(store))[1][0][2] == ROWS[0]


def test_snapshot_identity_is_stable_and_changes_with_content(store: LocalStore) -> None:
    first = newest_under(store, "snapshots/vip/")
    assert newest_under(store, "snapshots/vip/").identity == first.identity
    store.write_bytes(first.partitions[1], b'"c-3","linus@example.net","Linus","T."\r\n')
    assert newest_under(store, "snapshots/vip/").identity != first.identity


def test_no_snapshot_is_not_found(local_store: LocalStore) -> None:
    with pytest.raises(NotFoundError):
        newest_under(local_store, "snapshots/none/")


def test_discovery_reports_a_broken_newest_under(store: LocalStore) -> None:
    model = "snapshots/vip/CustomerInsights_8f1c2d/segexport/model.json"
    store.write_bytes(model, b"{not json")
    with pytest.raises(InputError) as err:
        find_snapshots(store, "snapshots/vip/")
    assert err.value.file == model


def test_partition_urls_of_another_account_resolve_by_path_tail(tmp_path: Path) -> None:
    folder = tmp_path / "anything" / "segexport"
    shutil.copytree(CI_MODEL.parent, folder)
    text = (folder / "model.json").read_text()
    text = text.replace("https://ciexportacct.blob.core.windows.net/exports/", "https://x.example/")
    (folder / "model.json").write_text(text)
    _cols, rows = read_all(str(folder / "model.json"), lister=local_lister)
    assert [v for _s, _n, v in rows] == CI_ROWS


# --- bad input --------------------------------------------------------------------------------


def _gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


BIG_GZ = _gz(b"Email,Name\n" + b"".join(b"p%d@example.com,N%d\n" % (i, i) for i in range(20000)))

BAD_INPUT = [
    # (name, bytes, expected message fragment, expected row or None)
    ("empty.csv", b"", "the file is empty", None),
    ("nul.csv", b"Email,Name\na@x.io,ok\nb@x.io,x\x00y\n", "NUL byte", 2),
    ("latin1.csv", "Email,Name\na@x.io,ok\nb@x.io,José\n".encode("latin-1"), "cp1252", 2),
    (
        "unterminated.csv",
        b'Email,Name\na@x.io,ok\nb@x.io,"never closed\nc@x.io,z\n',
        "never closed",
        2,
    ),
    ("after_quote.csv", b'Email,Name\na@x.io,"x"y\n', "malformed CSV", 1),
    (
        "huge_field.csv",
        b"Email,Name\na@x.io," + b"x" * (4 * 1024 * 1024 + 10) + b"\n",
        "longer than",
        1,
    ),
    ("truncated.csv.gz", BIG_GZ[: len(BIG_GZ) // 2], "truncated gzip", None),
    ("corrupt.csv.gz", _gz(b"Email\na@x.io\n")[:12] + b"\xff" * 40, "gzip", None),
]


@pytest.mark.parametrize(
    ("name", "data", "fragment", "row"), BAD_INPUT, ids=[b[0] for b in BAD_INPUT]
)
def test_bad_input_is_an_input_error_naming_file_and_row(
    tmp_path: Path, name: str, data: bytes, fragment: str, row: int | None
) -> None:
    path = write(tmp_path / name, data)
    with pytest.raises(InputError) as err:
        read_all(path)
    assert err.value.file == path
    assert fragment in str(err.value)
    assert str(err.value).startswith(path)
    if row is not None:
        assert err.value.row == row and f"row {row}" in str(err.value)
    elif "gzip" in name:
        assert err.value.row is not None and err.value.row >= 1


def test_invalid_utf8_names_the_byte_offset_and_line(tmp_path: Path) -> None:
    path = write(tmp_path / "l.csv", b"Email,Name\na@x.io,Jos\xe9\n")
    with pytest.raises(InputError) as err:
        read_all(path)
    assert (
        "0xE9" in str(err.value) and "offset ~21" in str(err.value) and "line 2" in str(err.value)
    )


def test_invalid_utf8_deep_in_a_large_file_is_placed_on_its_line(tmp_path: Path) -> None:
    lines = [b"Email,Name\n"] + [b"p%d@x.io,n\n" % i for i in range(30_000)]
    lines[25_000] = b"bad@x.io,\xff\n"
    path = write(tmp_path / "deep.csv", b"".join(lines))
    with pytest.raises(InputError) as err:
        read_all(path)
    assert err.value.row == 25_000 and "line 25001" in str(err.value)


def test_rows_before_an_error_are_yielded_first(tmp_path: Path) -> None:
    path = write(tmp_path / "u.csv", b'Email\na@x.io\nb@x.io\n"c@x.io\n')
    reader = open_snapshot(path, opener=local_opener)
    got = []
    with pytest.raises(InputError) as err:
        for _s, n, _v in reader.rows():
            got.append(n)
    assert got == [1, 2] and err.value.row == 3


def test_a_missing_file_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError) as err:
        read_all(str(tmp_path / "nope.csv"))
    assert "not found" in str(err.value)


def test_binary_file_is_rejected_on_its_header(tmp_path: Path) -> None:
    path = write(tmp_path / "photo.csv", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    with pytest.raises(InputError) as err:
        read_all(path)
    assert "binary" in str(err.value)


def test_opener_streams_are_closed(tmp_path: Path) -> None:
    opened: list[io.BufferedReader] = []

    def opener(p: str) -> io.BufferedReader:
        fh = open(p, "rb")  # noqa: SIM115
        opened.append(fh)
        return fh

    read_all(str(DATA / "comma.csv.gz"), opener=opener)
    read_all(str(CI_MODEL), opener=opener, lister=local_lister)
    assert opened and all(fh.closed for fh in opened)


def test_a_folder_prefix_with_one_csv_reads_it(tmp_path: Path) -> None:
    shutil.copy(DATA / "pipe.csv", tmp_path / "only.csv")
    columns, rows = read_all(f"{tmp_path.as_posix()}/", lister=local_lister)
    assert columns == COLUMNS and len(rows) == 3
    shutil.copy(DATA / "tab.tsv", tmp_path / "second.tsv")
    with pytest.raises(InputError, match="2 CSV files"):
        read_all(f"{tmp_path.as_posix()}/", lister=local_lister)


def test_several_entities_need_a_name(tmp_path: Path) -> None:
    folder = tmp_path / "segexport"
    shutil.copytree(CI_MODEL.parent, folder)
    model = json.loads((folder / "model.json").read_text())
    other = dict(model["entities"][0], name="Other", partitions=[])
    model["entities"].append(other)
    (folder / "model.json").write_text(json.dumps(model))
    path = str(folder / "model.json")
    with pytest.raises(InputError, match="several entities"):
        read_all(path, lister=local_lister)
    assert read_all(path, lister=local_lister, entity="Other")[1] == []
    assert len(read_all(path, lister=local_lister, entity="HighValueCustomers")[1]) == 3
    with pytest.raises(InputError, match="no entity 'Nope'"):
        read_all(path, lister=local_lister, entity="Nope")


# --- limits ---------------------------------------------------------------------------------


def test_quoted_line_breaks_across_many_reads_are_not_counted_as_one_record(
    tmp_path: Path,
) -> None:
    row = b'a@x.io,"line one\r\nline ""two"", ' + b"y" * 300 + b'\nend"\r\n'
    path = write(tmp_path / "q.csv", b"Email,Note\r\n" + row * 20_000)  # ~7 MB, 100+ reads
    limits = ReadLimits(max_record_bytes=64 * 1024, max_columns=3)
    _cols, rows = read_all(path, limits=limits)
    assert len(rows) == 20_000 and rows[-1][2][1].endswith("y\nend")


@pytest.mark.parametrize("gz", [False, True])
def test_a_record_over_the_limit_names_its_row_limit_and_setting(tmp_path: Path, gz: bool) -> None:
    body = b"Email,Note\n" + b"a@x.io,short\n" * 5_000 + b"b@x.io," + b"z" * 200_000 + b"\n"
    path = write(tmp_path / "r.csv", gzip.compress(body) if gz else body)
    with pytest.raises(InputError) as err:
        read_all(path, limits=ReadLimits(max_record_bytes=100_000))
    assert err.value.row is not None and 4_990 <= err.value.row <= 5_001
    assert "max_record_bytes=100000" in str(err.value)
    assert "EXPORTER_MAX_RECORD_BYTES" in str(err.value)


def test_a_row_with_too_many_delimiters_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "w.csv", b"Email,Name\n" + b"a@x.io" + b";" * 70_000 + b"\n")
    with pytest.raises(InputError, match="max_columns=50000"):
        read_all(path, delimiter=";", limits=ReadLimits(max_columns=50_000))


def test_a_header_with_too_many_columns_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "h.csv", b",".join(b"c%d" % i for i in range(30)) + b"\n")
    with pytest.raises(InputError, match=r"more than 20 columns.*EXPORTER_MAX_COLUMNS"):
        read_all(path, limits=ReadLimits(max_columns=20))


def test_blocks_hold_at_most_the_block_budget_of_records() -> None:
    assert ReadLimits().block_rows(4096) == 16
    assert ReadLimits(max_record_bytes=1024).block_rows(4096) == 4096
    assert ReadLimits(max_record_bytes=1 << 30).block_rows(4096) == 16


def test_limits_from_settings() -> None:
    limits = ReadLimits.from_env(
        {"EXPORTER_MAX_RECORD_BYTES": " 2048 ", "EXPORTER_MAX_COLUMNS": ""}
    )
    assert (limits.max_record_bytes, limits.max_columns) == (2048, ReadLimits().max_columns)
    with pytest.raises(ConfigError, match="EXPORTER_MAX_PARTITIONS"):
        ReadLimits.from_env({"EXPORTER_MAX_PARTITIONS": "0"})


def test_a_partition_that_is_a_folder_is_named_as_such(tmp_path: Path) -> None:
    model = {
        "entities": [
            {
                "name": "S",
                "attributes": [{"name": "Email"}],
                "partitions": [{"location": "https://a.blob/x/seg/part.csv"}],
            }
        ]
    }
    path = write(tmp_path / "seg" / "model.json", json.dumps(model).encode())
    (tmp_path / "seg" / "part.csv").mkdir()
    with pytest.raises(InputError, match="is a folder, not a file"):
        read_all(path)  # no lister: the partition is opened as named
