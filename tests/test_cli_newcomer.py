"""A newcomer's path through ``python -m exporter`` (issue #17 item 4): an export from a few
flags, a Windows-1252 snapshot read through the export's ``encoding`` setting or
``run --encoding`` (and refused, naming that setting, without it), the exit codes in --help."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter.cli import main
from sandbox import Sandbox, SandboxConfig

ROOT = Path(__file__).resolve().parent.parent
KEY = "newcomer-test-key-0123456789"
KEY_VAR = "NEWCOMER_AC_KEY"
SCALE = 50.0


@pytest.fixture
def sb() -> Iterator[Sandbox]:
    with Sandbox(SandboxConfig(api_key=KEY, lists={"1": "Newsletter"}, time_scale=SCALE)) as box:
        yield box


def cli(home: Path, *args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(
        ["--home", str(home), "--time-scale", str(SCALE), *args],
        env={KEY_VAR: KEY},
        out=out,
        err=err,
    )
    return code, out.getvalue(), err.getvalue()


def connect(home: Path, sb: Sandbox) -> None:
    code, _out, err = cli(
        home,
        "connections",
        "add",
        "--name",
        "acct",
        "--hostname",
        f"127.0.0.1:{sb.port}",
        "--api-key-ref",
        f"env:{KEY_VAR}",
        "--agree-to-privacy-statement",
    )
    assert code == 0, err
    code, out, _err = cli(home, "--json", "connections", "show", "acct")
    assert json.loads(out)["display_name"] == "acct"  # defaults to the name


def add_export(home: Path, name: str, *extra: str) -> tuple[int, str, str]:
    return cli(
        home,
        "exports",
        "add",
        "--name",
        name,
        "--connection",
        "acct",
        "--list-id",
        "1",
        "--email",
        "Email",
        "--first-name",
        "FirstName",
        *extra,
    )


def test_an_export_needs_neither_display_name_nor_segment(tmp_path: Path, sb: Sandbox) -> None:
    connect(tmp_path, sb)
    code, _out, err = add_export(tmp_path, "shop")
    assert code == 0, err
    assert "snapshots/shop/" in err  # the default segment is said out loud
    code, out, _err = cli(tmp_path, "--json", "exports", "show", "shop")
    saved = json.loads(out)
    assert (saved["display_name"], saved["segment"], saved["encoding"]) == (
        "shop",
        "snapshots/shop/",
        "utf-8",
    )


def test_a_cp1252_snapshot_reads_with_the_encoding_setting_and_is_refused_without_it(
    tmp_path: Path, sb: Sandbox
) -> None:
    connect(tmp_path, sb)
    assert add_export(tmp_path, "shop")[0] == 0
    snapshot = tmp_path / "segment.csv"
    snapshot.write_bytes("Email,FirstName\r\nrene@example.com,René\r\n".encode("cp1252"))

    code, _out, err = cli(tmp_path, "run", "shop", "--snapshot", str(snapshot))
    assert code == 2, err
    assert "byte 0xE9" in err
    assert '"encoding" to "cp1252"' in err and "run --encoding cp1252" in err
    assert sb.contact("rene@example.com") is None

    code, _out, err = cli(
        tmp_path, "run", "shop", "--snapshot", str(snapshot), "--encoding", "cp1252"
    )
    assert code == 0, err
    contact = sb.contact("rene@example.com")
    assert contact is not None and contact["first_name"] == "René"

    # The export's own setting, saved once, reads the next file the same way.
    code, _out, err = add_export(tmp_path, "shop-latin", "--encoding", "Windows-1252")
    assert code == 0, err
    code, out, _err = cli(tmp_path, "--json", "exports", "show", "shop-latin")
    assert json.loads(out)["encoding"] == "cp1252"
    other = tmp_path / "other.csv"
    other.write_bytes("Email,FirstName\nzoe@example.com,Zoë\n".encode("cp1252"))
    code, _out, err = cli(tmp_path, "run", "shop-latin", "--snapshot", str(other))
    assert code == 0, err
    contact = sb.contact("zoe@example.com")
    assert contact is not None and contact["first_name"] == "Zoë"


@pytest.mark.parametrize("encoding", ["utf-16", "no-such-codec", "rot13"])
def test_an_encoding_that_cannot_read_a_csv_is_refused(
    tmp_path: Path, sb: Sandbox, encoding: str
) -> None:
    connect(tmp_path, sb)
    code, _out, err = add_export(tmp_path, "shop", "--encoding", encoding)
    assert code == 2 and "encoding" in err, err
    assert add_export(tmp_path, "shop")[0] == 0
    snapshot = tmp_path / "segment.csv"
    snapshot.write_text("Email,FirstName\na@example.com,A\n", encoding="utf-8")
    code, _out, err = cli(
        tmp_path, "run", "shop", "--snapshot", str(snapshot), "--encoding", encoding
    )
    assert code == 2 and "--encoding" in err, err


def test_help_says_rejected_rows_still_exit_0_and_what_add_defaults() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def helptext(*args: str) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "exporter", *args, "--help"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
            env=env,
        )
        assert result.returncode == 0
        return " ".join(result.stdout.split())

    top = helptext()
    assert "rejected rows" in top and "still exit 0" in top
    add = helptext("exports", "add")
    assert "default: --name" in add and "default: snapshots/<export name>/" in add
    assert "--encoding" in helptext("run")
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    assert "rejected rows" in readme and "still exit `0`" in readme
    assert "EXPORTER_ALLOW_LOOPBACK_SANDBOX" in readme
