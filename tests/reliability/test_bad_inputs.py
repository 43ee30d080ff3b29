"""A corpus of bad input, run through the real command line (``exporter.cli.main`` in process,
a few through ``python -m exporter``) against a sandbox.

One case = one row of a table: the input, the documented exit code, and the message fragments
that must name the file, row and column (or the configuration field). Three kinds:

* **unreadable snapshots** (exit 2): the message names file, row and column where it can, and
  **nothing is sent** (the sandbox saw no bulk import at all);
* **bad rows in a readable snapshot** (exit 0): the run goes on, each bad row lands in
  ``rejected.csv`` with its row, reason and column, spreadsheet formulas neutralised;
* **bad configuration** (exit 2): the message names the field; nothing is saved.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from exporter.storage import runs
from sandbox import Sandbox
from tests.reliability import support

ROOT = Path(__file__).resolve().parents[2]
BULK = "POST /import/bulk_import"
HEADER = "Email,FirstName,LastName,City"
GOOD = ["ann@example.com,Ann,Lee,Berlin", "bob@example.com,Bob,Ray,Oslo"]


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    """A fresh account per case (starting one takes milliseconds)."""
    with support.running_sandbox(time_scale=100.0) as sb:
        yield sb


@pytest.fixture
def home(tmp_path: Path, sandbox: Sandbox) -> Path:
    """A store with the sandbox connection and the newsletter export (City mapped)."""
    path = tmp_path / "home"
    support.configure(path, sandbox.port)
    return path


# --- snapshot files -----------------------------------------------------------------------


def _text(*lines: str, newline: str = "\r\n") -> bytes:
    return (newline.join(lines) + newline).encode()


def _write(name: str, data: bytes) -> Callable[[Path], Path]:
    def build(folder: Path) -> Path:
        path = folder / name
        path.write_bytes(data)
        return path

    return build


def _gzip_truncated(folder: Path) -> Path:
    rows = [HEADER] + [f"p{i}@example.com,P,Q,Lyon" for i in range(5000)]
    data = gzip.compress(_text(*rows))
    path = folder / "segment.csv.gz"
    path.write_bytes(data[: len(data) // 2])
    return path


def _cdm(model: object, partitions: dict[str, bytes] | None = None) -> Callable[[Path], Path]:
    def build(folder: Path) -> Path:
        base = folder / "ci-export"
        (base / "Segment").mkdir(parents=True)
        for name, data in (partitions or {}).items():
            (base / "Segment" / name).write_bytes(data)
        raw = model if isinstance(model, bytes) else json.dumps(model).encode()
        (base / "model.json").write_bytes(raw)
        return base / "model.json"

    return build


def _model(*partitions: str) -> dict[str, object]:
    return {
        "name": "segment",
        "entities": [
            {
                "$type": "LocalEntity",
                "name": "Segment",
                "attributes": [{"name": c} for c in HEADER.split(",")],
                "partitions": [
                    {
                        "name": p,
                        "location": f"https://x.dfs.core.windows.net/ci/ci-export/Segment/{p}",
                        "fileFormatSettings": {"columnHeaders": False, "delimiter": ","},
                    }
                    for p in partitions
                ],
            }
        ],
    }


@dataclass(frozen=True)
class SnapshotCase:
    """A snapshot the run is given, and what the command line must answer."""

    id: str
    build: Callable[[Path], Path]
    code: int
    fragments: tuple[str, ...] = ()
    """Must appear in stderr; ``{file}`` stands for the snapshot's path."""
    rejected: tuple[tuple[int, str, str], ...] = ()
    """(row, reason, column) rows expected in rejected.csv."""
    members: frozenset[str] | None = None
    """The list's members afterwards (None: not checked)."""
    counts: dict[str, int] = field(default_factory=dict)
    """Report numbers expected (exit 0 cases)."""


UNREADABLE = 2
OK = 0

SNAPSHOT_CASES = [
    # --- files that cannot be read: exit 2, nothing sent --------------------------------------
    SnapshotCase("empty-file", _write("s.csv", b""), UNREADABLE, ("{file}", "the file is empty")),
    SnapshotCase(
        "blank-lines-only", _write("s.csv", b"\r\n\r\n\r\n"), UNREADABLE, ("{file}", "empty")
    ),
    SnapshotCase(
        "no-email-column",
        _write("s.csv", _text("Mail,FirstName,LastName,City", "a@example.com,A,B,C")),
        UNREADABLE,
        ("{file}", "column 'Email'", "does not exist", "'Mail'"),
    ),
    SnapshotCase(
        "mapped-column-missing",
        _write("s.csv", _text("Email,FirstName,LastName", "a@example.com,A,B")),
        UNREADABLE,
        ("{file}", "column 'City'", "does not exist"),
    ),
    SnapshotCase(
        "email-column-twice",
        _write("s.csv", _text("Email,FirstName,LastName,City,EMAIL", "a@x.com,A,B,C,d@x.com")),
        UNREADABLE,
        ("{file}", "column 'Email'", "matches several columns"),
    ),
    SnapshotCase(
        "binary-data",
        _write("s.csv", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x01\x00"),
        UNREADABLE,
        ("{file}", "binary data", "NUL byte"),
    ),
    SnapshotCase(
        "nul-byte-in-row-3",
        _write("s.csv", _text(HEADER, *GOOD, "c@example.com,C\x00,D,Rome")),
        UNREADABLE,
        ("{file}", "row 3", "NUL byte"),
    ),
    SnapshotCase(
        "latin-1-bytes",
        _write("s.csv", _text(HEADER, *GOOD) + "zoë@example.com,Zoë,M,Köln\r\n".encode("latin-1")),
        UNREADABLE,
        ("{file}", "row 3", "not valid utf-8", "0xEB", "cp1252"),
    ),
    SnapshotCase(
        "unterminated-quote",
        _write("s.csv", _text(HEADER, GOOD[0], 'c@example.com,"Carl,D,Rome', GOOD[1])),
        UNREADABLE,
        ("{file}", "row 2", "unterminated quote"),
    ),
    SnapshotCase(
        "record-over-1-mb",
        _write("s.csv", _text(HEADER, GOOD[0], "b@example.com,B," + "x" * 5_000_000 + ",Oslo")),
        UNREADABLE,
        ("{file}", "row 2", "longer than"),
    ),
    SnapshotCase(
        "truncated-gzip",
        _gzip_truncated,
        UNREADABLE,
        ("{file}", "corrupt or truncated gzip", "row "),
    ),
    SnapshotCase(
        "gzip-magic-then-garbage",
        _write("s.csv.gz", b"\x1f\x8b" + os.urandom(64)),
        UNREADABLE,
        ("{file}", "gzip"),
    ),
    SnapshotCase(
        "model-json-missing-partition",
        _cdm(_model("part-0.csv", "part-1.csv"), {"part-0.csv": _text(GOOD[0])}),
        UNREADABLE,
        ("{file}", "part-1.csv", "does not exist"),
    ),
    SnapshotCase(
        "model-json-malformed",
        _cdm(b'{"entities": [ {"name": "Segment", '),
        UNREADABLE,
        ("{file}", "malformed model.json", "row 1"),
    ),
    SnapshotCase(
        "model-json-no-entities",
        _cdm({"name": "segment"}),
        UNREADABLE,
        ("{file}", "no 'entities' list"),
    ),
    SnapshotCase(
        "model-json-not-utf8",
        _cdm(b'{"name": "\xff\xfe"}'),
        UNREADABLE,
        ("{file}", "not UTF-8"),
    ),
    SnapshotCase(
        "model-json-partition-unterminated-quote",
        _cdm(_model("part-0.csv"), {"part-0.csv": _text(GOOD[0], 'x@example.com,"X,Y,Z')}),
        UNREADABLE,
        ("part-0.csv", "row 2", "unterminated quote"),
    ),
    SnapshotCase(
        "file-not-found",
        lambda folder: folder / "nope" / "missing.csv",
        UNREADABLE,
        ("missing.csv", "file not found"),
    ),
    # --- readable files with bad rows: the run goes on, rows rejected with row and column ------
    SnapshotCase(
        "header-only",
        _write("s.csv", _text(HEADER)),
        OK,
        members=frozenset(),
        counts={"rows_read": 0, "confirmed": 0},
    ),
    SnapshotCase(
        "bom-and-crlf",
        _write("s.csv", b"\xef\xbb\xbf" + _text(HEADER, *GOOD)),
        OK,
        members=frozenset({"ann@example.com", "bob@example.com"}),
        counts={"rows_read": 2, "confirmed": 2},
    ),
    SnapshotCase(
        "lf-only-newlines",
        _write("s.csv", _text(HEADER, *GOOD, newline="\n")),
        OK,
        members=frozenset({"ann@example.com", "bob@example.com"}),
    ),
    SnapshotCase(
        "quoted-newlines",
        _write("s.csv", _text(HEADER, 'ann@example.com,"Ann\r\nMarie",Lee,"Ber\nlin"', GOOD[1])),
        OK,
        members=frozenset({"ann@example.com", "bob@example.com"}),
        counts={"rows_read": 2, "confirmed": 2},
    ),
    SnapshotCase(
        "short-rows-padded-long-rows-ragged",
        _write("s.csv", _text(HEADER, GOOD[0], "c@example.com,C", GOOD[1], "d@x.com,D,E,F,G")),
        OK,
        rejected=((4, "ragged_row", ""),),
        members=frozenset({"ann@example.com", "c@example.com", "bob@example.com"}),
    ),
    SnapshotCase(
        "one-mb-field",
        _write("s.csv", _text(HEADER, GOOD[0], "big@example.com,B," + "y" * 1_000_000 + ",Oslo")),
        OK,
        rejected=((2, "too_large", ""),),
        members=frozenset({"ann@example.com"}),
    ),
    SnapshotCase(
        "formula-like-names",
        _write("s.csv", _text(HEADER, 'not-an-email,=HYPERLINK("http://x"),+1+1,@SUM(A1)')),
        OK,
        rejected=((1, "invalid_email", "Email"),),
        members=frozenset(),
    ),
    SnapshotCase(
        "internationalised-emails",
        _write(
            "s.csv",
            _text(HEADER, "ann@bücher.example,Ann,Lee,Berlin", "josé@example.com,José,P,Porto"),
        ),
        OK,
        rejected=((2, "invalid_email", "Email"),),
        members=frozenset({"ann@xn--bcher-kva.example"}),
    ),
    SnapshotCase(
        "over-long-emails",
        _write(
            "s.csv",
            _text(
                HEADER,
                "a" * 65 + "@example.com,A,B,C",
                "b@" + "d" * 60 + "." + "e" * 60 + "." + "f" * 60 + "." + "g" * 70 + ".com,A,B,C",
                GOOD[0],
            ),
        ),
        OK,
        rejected=((1, "invalid_email", "Email"), (2, "invalid_email", "Email")),
        members=frozenset({"ann@example.com"}),
    ),
    SnapshotCase(
        "one-address-in-three-cases",
        _write(
            "s.csv",
            _text(
                HEADER, "Ann@Example.com,A,B,C", "ANN@EXAMPLE.COM,A,B,C", "ann@example.com,A,B,C"
            ),
        ),
        OK,
        rejected=((2, "duplicate", "Email"), (3, "duplicate", "Email")),
        members=frozenset({"ann@example.com"}),
        counts={"rows_read": 3, "duplicates": 2, "confirmed": 1},
    ),
    SnapshotCase(
        "missing-and-blank-emails",
        _write("s.csv", _text(HEADER, ",A,B,C", "   ,A,B,C", GOOD[0])),
        OK,
        rejected=((1, "missing_email", "Email"), (2, "missing_email", "Email")),
        members=frozenset({"ann@example.com"}),
    ),
    SnapshotCase(
        "email-with-spaces-around",
        _write("s.csv", _text(HEADER, "  ann@example.com  ,A,B,C")),
        OK,
        members=frozenset({"ann@example.com"}),
    ),
    SnapshotCase(
        "semicolon-delimited",
        _write("s.csv", _text(HEADER.replace(",", ";"), *(g.replace(",", ";") for g in GOOD))),
        OK,
        members=frozenset({"ann@example.com", "bob@example.com"}),
    ),
]


def _run_json(out: str) -> dict[str, object]:
    data: dict[str, object] = json.loads(out)
    return data


def _rejected_rows(home: Path) -> list[dict[str, str]]:
    (run_dir,) = [p for p in (home / "runs" / support.EXPORT).iterdir() if p.is_dir()]
    path = run_dir / "rejected.csv"
    if not path.exists():
        return []
    return list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8-sig"))))


@pytest.mark.parametrize("case", SNAPSHOT_CASES, ids=[c.id for c in SNAPSHOT_CASES])
def test_bad_snapshot(case: SnapshotCase, home: Path, tmp_path: Path, sandbox: Sandbox) -> None:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    snapshot = case.build(inputs)
    before = sandbox.request_counts().get(BULK, 0)
    members_before = sandbox.list_members(support.LIST_ID)
    code, out, err = support.cli(home, "--json", "run", support.EXPORT, "--snapshot", str(snapshot))
    assert code == case.code, err
    for fragment in case.fragments:
        assert fragment.replace("{file}", str(snapshot)) in err, err
    if case.code != OK:
        # Nothing was sent, nothing was committed, and the store is sound.
        assert sandbox.request_counts().get(BULK, 0) == before == 0
        assert sandbox.list_members(support.LIST_ID) == members_before == set()
        assert json.loads(out)["exit_code"] == case.code
        assert not (home / "state" / support.EXPORT / "state.bin").exists()
        assert support.check_store_intact(home) == []
        return
    report = _run_json(out)
    assert report["reconciles"] is True, report
    for name, value in case.counts.items():
        assert report[name] == value, (name, report)
    rows = _rejected_rows(home)
    got = {(int(r["row"]), r["reason"], r["column"]) for r in rows}
    assert got == set(case.rejected), rows
    assert all(r["source"] == str(snapshot) for r in rows), rows
    assert all(r["message"] for r in rows), rows
    if case.members is not None:
        assert sandbox.list_members(support.LIST_ID) == case.members


def test_rejected_csv_neutralises_formulas(home: Path, tmp_path: Path) -> None:
    """A rejected row's cells that a spreadsheet would run as formulas start with a quote."""
    snapshot = tmp_path / "s.csv"
    snapshot.write_bytes(_text(HEADER, 'not-an-email,=HYPERLINK("http://x"),+1+1,@SUM(A1)'))
    code, _out, err = support.cli(home, "run", support.EXPORT, "--snapshot", str(snapshot))
    assert code == OK, err
    (row,) = _rejected_rows(home)
    assert row["FirstName"] == '\'=HYPERLINK("http://x")'
    assert row["LastName"] == "'+1+1"
    assert row["City"] == "'@SUM(A1)"
    assert row["Email"] == "not-an-email"


# --- configuration ------------------------------------------------------------------------


@dataclass(frozen=True)
class ConfigCase:
    """A management command with bad arguments, and what it must answer."""

    id: str
    argv: Callable[[Path], list[str]]
    code: int
    fragments: tuple[str, ...]
    env: dict[str, str] | None = None


def _connection(*args: str) -> Callable[[Path], list[str]]:
    base = ["connections", "add", "--name", "other", "--display-name", "Other"]
    base += ["--api-key-ref", f"env:{support.KEY_VAR}", "--agree-to-privacy-statement"]
    return lambda _tmp: [*base, *args]


def _export(*args: str, file: dict[str, object] | None = None) -> Callable[[Path], list[str]]:
    def argv(tmp: Path) -> list[str]:
        base = ["exports", "add", "--name", "second", "--display-name", "Second"]
        base += ["--connection", support.CONNECTION, "--segment", support.SEGMENT]
        base += ["--email", "Email"]
        if "--list-id" not in args and not (file and "list_id" in file):
            base += ["--list-id", "1"]
        if file is not None:
            path = tmp / "export.json"
            path.write_text(json.dumps(file), encoding="utf-8")
            base += ["--file", str(path)]
        return [*base, *args]

    return argv


def _not_json(path: Path) -> list[str]:
    path.write_text("{nope", encoding="utf-8")
    return ["connections", "add", "--file", str(path)]


CONFIG_CASES = [
    ConfigCase(
        "hostname-ftp-scheme",
        _connection("--hostname", "ftp://acct.api-us1.com"),
        2,
        ("hostname", "only a hostname"),
    ),
    ConfigCase(
        "hostname-ip-literal",
        _connection("--hostname", "203.0.113.5"),
        2,
        ("hostname", "IP addresses are not accepted"),
    ),
    ConfigCase(
        "hostname-private-address",
        _connection("--hostname", "10.1.2.3"),
        2,
        ("hostname", "IP addresses are not accepted"),
    ),
    ConfigCase(
        "hostname-numeric-shorthand",
        _connection("--hostname", "127.1"),
        2,
        ("hostname", "IP addresses"),
    ),
    ConfigCase(
        "hostname-with-port",
        _connection("--hostname", "acct.api-us1.com:8443"),
        2,
        ("hostname", "must not include a port"),
    ),
    ConfigCase(
        "hostname-with-credentials",
        _connection("--hostname", "me@acct.api-us1.com"),
        2,
        ("hostname", "user name or password"),
    ),
    ConfigCase(
        "hostname-with-query",
        _connection("--hostname", "acct.api-us1.com?x=1"),
        2,
        ("hostname", "query string"),
    ),
    ConfigCase(
        "hostname-not-activecampaign",
        _connection("--hostname", "evil.example.com"),
        2,
        ("hostname", "is not an ActiveCampaign API host"),
    ),
    ConfigCase(
        "hostname-loopback-when-off",
        _connection("--hostname", "127.0.0.1:9"),
        2,
        ("hostname", "EXPORTER_ALLOW_LOOPBACK_SANDBOX is off"),
        env={support.KEY_VAR: support.KEY, "EXPORTER_ALLOW_LOOPBACK_SANDBOX": "false"},
    ),
    ConfigCase(
        "api-key-instead-of-reference",
        lambda _t: [
            "connections",
            "add",
            "--name",
            "other",
            "--display-name",
            "O",
            "--hostname",
            "acct.api-us1.com",
            "--api-key-ref",
            "abc123secretkey",
            "--agree-to-privacy-statement",
        ],
        2,
        ("api_key_ref",),
    ),
    ConfigCase(
        "connection-without-consent",
        lambda _t: [
            "connections",
            "add",
            "--name",
            "other",
            "--display-name",
            "O",
            "--hostname",
            "acct.api-us1.com",
            "--api-key-ref",
            "env:X",
        ],
        2,
        ("consent", "privacy"),
    ),
    ConfigCase(
        "connection-file-not-json",
        lambda t: _not_json(t / "c.json"),
        2,
        ("--file", "c.json", "not a readable JSON file"),
    ),
    ConfigCase("list-id-not-numeric", _export("--list-id", "news"), 2, ("list_id", "numeric ID")),
    ConfigCase("list-id-zero", _export("--list-id", "0"), 2, ("list_id",)),
    ConfigCase("list-id-unknown", _export("--list-id", "99"), 2, ("list_id", "99")),
    ConfigCase("schedule-invalid", _export("--schedule", "every day at 2"), 2, ("schedule",)),
    ConfigCase("schedule-five-fields", _export("--schedule", "0 2 * * *"), 2, ("schedule",)),
    ConfigCase(
        "export-unknown-keys",
        _export(file={"colour": "red", "lsit_id": "1"}),
        2,
        ("colour: unknown field", "lsit_id: unknown field"),
    ),
    ConfigCase("max-shrink-out-of-range", _export("--max-shrink", "1.5"), 2, ("max_shrink",)),
    ConfigCase(
        "segment-outside-snapshots",
        _export("--segment", "/etc/passwd"),
        2,
        ("segment", "under snapshots/"),
    ),
    ConfigCase(
        "segment-dot-dot", _export("--segment", "snapshots/../config/"), 2, ("segment", "'..'")
    ),
    ConfigCase("export-name-not-a-slug", _export("--name", "Bad Name!"), 2, ("name",)),
    ConfigCase(
        "unknown-custom-field",
        _export("--field", "City=Shoe size"),
        2,
        ("fields.0.field", "Shoe size"),
    ),
    ConfigCase("export-unknown-connection", _export("--connection", "nowhere"), 2, ("nowhere",)),
    ConfigCase("run-unknown-export", lambda _t: ["run", "no-such-export"], 2, ("no-such-export",)),
    ConfigCase(
        "run-snapshot-path-outside-store",
        lambda _t: ["run", support.EXPORT, "--snapshot", "elsewhere/segment.csv"],
        2,
        ("elsewhere/segment.csv", "file not found"),
    ),
]


@pytest.mark.parametrize("case", CONFIG_CASES, ids=[c.id for c in CONFIG_CASES])
def test_bad_configuration(case: ConfigCase, home: Path, tmp_path: Path) -> None:
    config_before = sorted(p.name for p in (home / "config").rglob("*.json"))
    code, _out, err = support.cli(home, *case.argv(tmp_path), env=case.env)
    assert code == case.code, err
    for fragment in case.fragments:
        assert fragment in err, err
    assert "Traceback" not in err
    assert support.KEY not in err
    assert sorted(p.name for p in (home / "config").rglob("*.json")) == config_before


def test_hostname_with_scheme_and_path_is_reduced_to_the_host(home: Path) -> None:
    """A pasted ``https://…/api/3/`` is saved as the bare host, with a note saying so."""
    code, out, err = support.cli(
        home, "--json", "connections", "add", "--name", "pasted", "--display-name", "Pasted",
        "--hostname", "https://acct.api-us1.com/api/3/", "--api-key-ref", "env:X",
        "--agree-to-privacy-statement", "--no-verify",  # the host is not reachable here
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["hostname"] == "acct.api-us1.com"


# --- the same through a real process --------------------------------------------------------


@pytest.mark.parametrize(
    ("case_id", "code"),
    [
        ("empty-file", 2),
        ("unterminated-quote", 2),
        ("truncated-gzip", 2),
        ("short-rows-padded-long-rows-ragged", 0),
    ],
)
def test_subprocess_exit_codes(
    case_id: str, code: int, home: Path, tmp_path: Path, sandbox: Sandbox
) -> None:
    """``python -m exporter run`` exits with the documented code and says where the problem
    is on stderr; an unreadable file sends nothing."""
    case = next(c for c in SNAPSHOT_CASES if c.id == case_id)
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    snapshot = case.build(inputs)
    before = sandbox.request_counts().get(BULK, 0)
    done = subprocess.run(
        [sys.executable, "-m", "exporter", "--home", str(home), "run", support.EXPORT,
         "--snapshot", str(snapshot)],
        cwd=ROOT, env={**os.environ, **support.ENV}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == code, done.stderr
    for fragment in case.fragments:
        assert fragment.replace("{file}", str(snapshot)) in done.stderr, done.stderr
    if code:
        assert sandbox.request_counts().get(BULK, 0) == before
        assert "Traceback" not in done.stderr
    else:
        run_id = json.loads((home / "state" / support.EXPORT / "last_run.json").read_text())[
            "run_id"
        ]
        report = json.loads((home / runs.report_path(support.EXPORT, run_id)).read_text())
        assert report["rejected_by_reason"] == {"ragged_row": 1}  # the short row is padded


# --- the shrink guard -----------------------------------------------------------------------


def test_shrink_guard_sends_nothing(tmp_path: Path, sandbox: Sandbox) -> None:
    """A snapshot that lost most of the segment (a half-written upstream file) stops the run
    before anything is sent: exit 1, status ``guarded``, list unchanged."""
    home = tmp_path / "home"
    support.configure(home, sandbox.port, max_shrink=0.2)
    people = [support.Person(f"g{i}@example.com") for i in range(10)]
    full = support.write_people(tmp_path / "full.csv", people)
    code, _out, err = support.cli(home, "run", support.EXPORT, "--snapshot", str(full))
    assert code == OK, err
    members = sandbox.list_members(support.LIST_ID)
    assert len(members) == 10
    bulk = sandbox.request_counts().get(BULK, 0)

    half = support.write_people(tmp_path / "half.csv", people[:3])
    code, out, err = support.cli(home, "--json", "run", support.EXPORT, "--snapshot", str(half))
    assert code == 1, err
    assert "Shrink guard" in err and "--allow-shrink" in err
    assert json.loads(out)["status"] == "guarded"
    assert sandbox.request_counts().get(BULK, 0) == bulk
    assert sandbox.list_members(support.LIST_ID) == members
