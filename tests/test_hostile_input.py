"""A hostile-input corpus: every file is made here at test time and run through the real
``python -m exporter`` against the sandbox. Each must stop with exit code 2 (or a ``guarded``
run), a message naming the problem, nothing sent, and a peak RSS of at most 300 MB (the child's
``ru_maxrss`` from ``os.wait4``; Linux carries the forking pytest's RSS into it, so the figure
is an upper bound)."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest

from sandbox import Sandbox
from tests.test_cli import KEY, KEY_VAR, ROOT, SCALE, sandbox, setup_export

__all__ = ["sandbox"]  # the fixture, imported for this module's tests

MAX_RSS_BYTES = 300 * 1024 * 1024
HEADER = b"Email,FirstName,LastName,Phone,City,Birthday,Tier\n"


def run_cli(home: Path, snapshot: Path, env: dict[str, str] | None = None) -> tuple[int, str, int]:
    """(exit code, stderr, peak RSS in bytes) of ``python -m exporter run newsletter``."""
    out_path, err_path = home.parent / "out.txt", home.parent / "err.txt"
    full_env = {**os.environ, KEY_VAR: KEY, "PYTHONPATH": str(ROOT), **(env or {})}
    args = ["--home", str(home), "--time-scale", str(SCALE), "run", "newsletter"]
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "exporter", *args, "--snapshot", str(snapshot)],
            env=full_env,
            cwd=ROOT,
            stdout=out,
            stderr=err,
        )
        _pid, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    rss = usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    return proc.returncode, err_path.read_text(errors="replace"), rss


def _gzip_stream(path: Path, piece: bytes, times: int, head: bytes = HEADER) -> Path:
    """A gzip file of ``head`` + ``piece`` * ``times``, written without holding it whole."""
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)
    with open(path, "wb") as fh:
        fh.write(comp.compress(head))
        for _ in range(times):
            fh.write(comp.compress(piece))
        fh.write(comp.flush())
    return path


def long_line(d: Path) -> Path:
    path = d / "long.csv"
    with open(path, "wb") as fh:
        fh.write(HEADER + b"a@x.io,")
        for _ in range(30):
            fh.write(b"x" * (1 << 20))
    return path


def long_line_gz(d: Path) -> Path:
    return _gzip_stream(d / "long.csv.gz", b"x" * (1 << 20), 30, HEADER + b"a@x.io,")


def gzip_bomb(d: Path) -> Path:
    return _gzip_stream(d / "bomb.csv.gz", b"\n" * (1 << 20), 200)


def million_columns_header(d: Path) -> Path:
    path = d / "wide-header.csv"
    path.write_bytes(b"Email" + b",c" * 1_000_000 + b"\na@x.io\n")
    return path


def million_columns_row(d: Path) -> Path:
    path = d / "wide-row.csv"
    path.write_bytes(HEADER + b"a@x.io" + b"," * 1_000_000 + b"\n")
    return path


def deep_quoting(d: Path) -> Path:
    return _gzip_stream(d / "quote.csv.gz", b"x\n" * 4096, 1024, HEADER + b'a@x.io,"')


def nul_bytes(d: Path) -> Path:
    path = d / "nul.csv"
    path.write_bytes(HEADER + b"a@x.io,\x00\x00\x00\n")
    return path


def bad_utf8_header(d: Path) -> Path:
    path = d / "latin.csv"
    path.write_bytes(b"Email,Pr\xe9nom\na@x.io,Ann\n")
    return path


def _model(d: Path, locations: list[str]) -> Path:
    folder = d / "cdm"
    folder.mkdir()
    model = {
        "name": "seg",
        "entities": [
            {
                "$type": "LocalEntity",
                "name": "Segment",
                "attributes": [{"name": "Email"}, {"name": "FirstName"}],
                "partitions": [{"location": loc} for loc in locations],
            }
        ],
    }
    (folder / "model.json").write_text(json.dumps(model))
    (folder / "part.csv").write_bytes(b"a@x.io,Ann\n")
    return folder / "model.json"


def many_partitions(d: Path) -> Path:
    return _model(d, [f"https://acct.blob/x/cdm/p{i}.csv" for i in range(10_000)])


def partition_outside(d: Path) -> Path:
    (d / "secret.csv").write_bytes(b"a@x.io,Ann\n")
    return _model(d, ["https://acct.blob/x/cdm/../secret.csv"])


def partition_is_a_directory(d: Path) -> Path:
    model = _model(d, ["https://acct.blob/x/cdm/dir.csv"])
    (model.parent / "dir.csv").mkdir()
    (model.parent / "dir.csv" / "inner.csv").write_bytes(b"a@x.io,Ann\n")
    return model


CASES: list[tuple[str, Callable[[Path], Path], tuple[str, ...]]] = [
    ("long line", long_line, ("max_record_bytes",)),
    ("long line gzip", long_line_gz, ("max_record_bytes", "max_decompression_ratio")),
    ("gzip bomb", gzip_bomb, ("max_decompression_ratio",)),
    ("million columns in the header", million_columns_header, ("max_columns",)),
    ("million columns in a row", million_columns_row, ("max_columns",)),
    ("quote that never closes", deep_quoting, ("max_record_bytes", "max_field_chars")),
    ("NUL bytes", nul_bytes, ("NUL byte",)),
    ("invalid UTF-8 in the header", bad_utf8_header, ("not valid utf-8",)),
    ("10,000 partitions", many_partitions, ("max_partitions",)),
    ("a partition outside the folder", partition_outside, ("leaves the folder",)),
    ("a partition that is a directory", partition_is_a_directory, ("is a folder",)),
]


@pytest.fixture
def home(tmp_path: Path, sandbox: Sandbox) -> Path:
    home = tmp_path / "home"
    setup_export(home, sandbox)
    return home


@pytest.mark.parametrize(("name", "make", "fragments"), CASES, ids=[c[0] for c in CASES])
def test_hostile_file_exits_2_in_bounded_memory_sending_nothing(
    tmp_path: Path,
    home: Path,
    sandbox: Sandbox,
    name: str,
    make: Callable[[Path], Path],
    fragments: tuple[str, ...],
) -> None:
    snapshot = make(tmp_path)
    code, err, rss = run_cli(home, snapshot)
    assert code == 2, (name, err)
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert "Traceback" not in err and len(errors) == 1, err
    assert any(f in errors[0] for f in fragments), err
    print(f"{name}: peak RSS {rss / 2**20:.0f} MB: {errors[0]}")
    assert rss <= MAX_RSS_BYTES, f"{name}: peak RSS {rss / 2**20:.0f} MB"
    assert sandbox.api.account.count() == 0


def test_too_many_rejected_rows_guard_the_run(tmp_path: Path, home: Path, sandbox: Sandbox) -> None:
    snapshot = _gzip_stream(tmp_path / "junk.csv.gz", b"not-an-email,Ann\n", 2_500)
    code, err, rss = run_cli(home, snapshot, env={"EXPORTER_MAX_REJECTED_ROWS": "1000"})
    assert code == 1 and "more than 1000 rows were rejected" in err, err
    assert "EXPORTER_MAX_REJECTED_ROWS" in err
    assert rss <= MAX_RSS_BYTES
    assert sandbox.api.account.count() == 0
    runs = list((home / "runs" / "newsletter").iterdir())
    report = json.loads((runs[0] / "report.json").read_text())
    assert report["status"] == "guarded"
    with gzip.open(snapshot) as fh:  # the file really had more rejected rows than were kept
        assert sum(1 for _ in fh) > 2000
    rejected = (runs[0] / "rejected.csv").read_text(encoding="utf-8-sig").splitlines()
    assert len(rejected) == 1 + 1000


def test_a_bad_limit_setting_is_a_configuration_error(tmp_path: Path, home: Path) -> None:
    snapshot = nul_bytes(tmp_path)
    code, err, _rss = run_cli(home, snapshot, env={"EXPORTER_MAX_COLUMNS": "lots"})
    assert code == 2 and "EXPORTER_MAX_COLUMNS" in err and "whole number" in err


def test_more_than_half_the_rows_rejected_guard_the_run(
    tmp_path: Path, home: Path, sandbox: Sandbox
) -> None:
    rows = [f"p{i}@example.com,P\n" if i % 5 < 2 else f"bad{i},B\n" for i in range(10_000)]
    snapshot = tmp_path / "mostly-bad.csv"
    snapshot.write_text(HEADER.decode() + "".join(rows))  # short rows: the rest reads as empty
    code, err, _rss = run_cli(home, snapshot)
    assert code == 1 and "6000 of 10000 rows were rejected (more than half)" in err, err
    assert sandbox.api.account.count() == 0
