"""``python -m exporter``: exit codes, output, and the management commands, against the sandbox.

Most tests call :func:`exporter.cli.main` in-process (fast); the exit-code, ``--json`` and
crash tests run the real ``python -m exporter`` as a subprocess.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from examples import synthetic
from exporter.cli import main
from sandbox import Field, Sandbox, SandboxConfig

ROOT = Path(__file__).resolve().parent.parent
KEY = "cli-test-key-0123456789"
KEY_VAR = "CLI_TEST_AC_KEY"
SCALE = 50.0


def sandbox_config() -> SandboxConfig:
    """The account the command-line tests talk to: list 1 and the example export's fields."""
    return SandboxConfig(
        api_key=KEY,
        lists={"1": "Newsletter"},
        fields=[
            Field("1", "City"),
            Field("2", "Birthday", "date", "BIRTHDAY"),
            Field("3", "Tier", "dropdown"),
        ],
        time_scale=SCALE,
    )


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(sandbox_config()) as sb:
        yield sb


def cli(home: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(
        ["--home", str(home), "--time-scale", str(SCALE), *args],
        env={KEY_VAR: KEY} if env is None else env,
        out=out,
        err=err,
    )
    return code, out.getvalue(), err.getvalue()


def subprocess_cli(
    home: Path, *args: str, key: str = KEY, scale: float = SCALE
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, KEY_VAR: key, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "exporter", "--home", str(home), "--time-scale", str(scale), *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def setup_export(home: Path, sb: Sandbox) -> None:
    code, _out, err = cli(
        home,
        "connections",
        "add",
        "--file",
        str(ROOT / "examples" / "connection.json"),
        "--hostname",
        f"127.0.0.1:{sb.port}",
        "--api-key-ref",
        f"env:{KEY_VAR}",
        "--agree-to-privacy-statement",
        "--verify",
    )
    assert code == 0, err
    code, _out, err = cli(home, "exports", "add", "--file", str(ROOT / "examples" / "export.json"))
    assert code == 0, err


def test_help_documents_the_exit_codes() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "exporter", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0
    assert "exit codes:" in result.stdout and "130" in result.stdout


def test_a_connection_needs_explicit_consent(tmp_path: Path) -> None:
    code, _out, err = cli(
        tmp_path,
        "connections",
        "add",
        "--name",
        "acct",
        "--display-name",
        "Account",
        "--hostname",
        "acct.api-us1.com",
        "--api-key-ref",
        f"env:{KEY_VAR}",
    )
    assert code == 2
    assert "Data privacy and compliance statement" in err
    assert "--agree-to-privacy-statement" in err
    assert "error: " in err and "Traceback" not in err
    code, out, _err = cli(tmp_path, "--json", "connections", "list")
    assert code == 0 and json.loads(out) == []


@pytest.mark.parametrize(
    ("hostname_of", "key", "expected"),
    [
        (lambda sb: f"127.0.0.1:{sb.port}", "wrong-key", "API key rejected by ActiveCampaign (403"),
        (lambda sb: "no-such-account.invalid", KEY, "host name not found (DNS)"),
    ],
    ids=["wrong key", "wrong host"],
)
def test_connect_checks_the_key_and_host_first_and_no_verify_saves_offline(
    tmp_path: Path, sandbox: Sandbox, hostname_of: Any, key: str, expected: str
) -> None:
    """As Customer Insights' Connect: a wrong key or host is refused with the reason and
    nothing is saved; ``--no-verify`` saves without asking ActiveCampaign."""
    args = ["connections", "add", "--name", "acct", "--display-name", "A"]
    args += ["--hostname", hostname_of(sandbox), "--api-key-ref", f"env:{KEY_VAR}"]
    args += ["--agree-to-privacy-statement"]
    env = {KEY_VAR: key, "EXPORTER_ALLOW_LOOPBACK_SANDBOX": "true"}
    env["EXPORTER_HOSTNAME_ALLOWLIST"] = "no-such-account.invalid"  # resolves nowhere
    code, _out, err = cli(tmp_path, *args, env=env)
    assert code != 0 and expected in err and "Traceback" not in err
    assert err.count("retry") <= 1  # someone is waiting: one quick retry at most
    assert json.loads(cli(tmp_path, "--json", "connections", "list", env=env)[1]) == []
    code, _out, err = cli(tmp_path, *args, "--no-verify", env=env)
    assert code == 0, err
    assert len(json.loads(cli(tmp_path, "--json", "connections", "list", env=env)[1])) == 1


def test_a_key_is_never_accepted_as_a_reference(tmp_path: Path) -> None:
    key = "a" * 72
    code, out, err = cli(
        tmp_path,
        "connections",
        "add",
        "--name",
        "acct",
        "--display-name",
        "A",
        "--hostname",
        "acct.api-us1.com",
        "--api-key-ref",
        key,
        "--agree-to-privacy-statement",
    )
    assert code == 2
    assert key not in out + err


def test_manage_run_and_read_reports_in_process(tmp_path: Path, sandbox: Sandbox) -> None:
    home = tmp_path / "home"
    setup_export(home, sandbox)
    code, out, _err = cli(home, "--json", "exports", "show", "newsletter")
    assert code == 0
    assert [f["field_id"] for f in json.loads(out)["fields"]] == ["1", "2", "3"]
    segment = synthetic.write_csv(tmp_path / "segment.csv", 600)
    code, out, err = cli(home, "run", "newsletter", "--snapshot", str(segment))
    assert code == 0, err
    assert "completed" in out and "report reconciles" in out
    assert sandbox.list_members("1") == synthetic.expected_valid_emails(600)
    code, out, _err = cli(home, "--json", "runs", "list", "newsletter")
    reports = json.loads(out)
    assert code == 0 and len(reports) == 1 and reports[0]["reconciles"]
    code, out, _err = cli(home, "runs", "show", "newsletter", reports[0]["run_id"])
    assert code == 0 and reports[0]["run_id"] in out
    # a dry run of the next version plans the changes and sends nothing
    changed = synthetic.write_csv(tmp_path / "segment-2.csv", 600, version=1)
    before = sandbox.request_counts().get("POST /import/bulk_import", 0)
    code, out, _err = cli(
        home, "--json", "run", "newsletter", "--snapshot", str(changed), "--dry-run"
    )
    report = json.loads(out)
    assert code == 0 and report["status"] == "dry_run" and report["planned"] > 0
    assert sandbox.request_counts().get("POST /import/bulk_import", 0) == before


def test_bad_input_exits_2_with_one_line(tmp_path: Path, sandbox: Sandbox) -> None:
    home = tmp_path / "home"
    setup_export(home, sandbox)
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"Email,FirstName\r\n\x00\x01binary\r\n")
    code, _out, err = cli(home, "run", "newsletter", "--snapshot", str(bad))
    assert code == 2
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "NUL byte" in errors[0] and "Traceback" not in err
    code, _out, err = cli(home, "run", "newsletter", "--snapshot", str(tmp_path / "missing.csv"))
    assert code == 2 and "not found" in err
    code, _out, err = cli(home, "run", "no-such-export")
    assert code == 2 and "no export named" in err
    # A store snapshot outside the export's segment is refused for everyone, the CLI included.
    code, _out, err = cli(home, "run", "newsletter", "--snapshot", "snapshots/other-team/vip.csv")
    assert code == 2 and "segment" in err and "other-team" not in err


def test_json_run_and_exit_codes_as_a_subprocess(tmp_path: Path, sandbox: Sandbox) -> None:
    home = tmp_path / "home"
    setup_export(home, sandbox)
    segment = synthetic.write_csv(tmp_path / "segment.csv", 300)
    ok = subprocess_cli(home, "--json", "run", "newsletter", "--snapshot", str(segment))
    assert ok.returncode == 0, ok.stderr
    report = json.loads(ok.stdout)
    assert report["status"] == "completed" and report["reconciles"]
    assert ok.stderr == ""  # no progress bar without a terminal, nothing else either
    changed = synthetic.write_csv(tmp_path / "segment-2.csv", 300, version=1)
    rejected = subprocess_cli(home, "run", "newsletter", "--snapshot", str(changed), key="wrong")
    assert rejected.returncode == 1
    assert "API key rejected" in rejected.stderr
    assert "wrong" not in rejected.stdout + rejected.stderr.replace("wrong-", "")
    assert "Traceback" not in rejected.stderr


def test_a_killed_run_converges_when_run_again(tmp_path: Path) -> None:
    config = SandboxConfig(api_key=KEY, lists={"1": "Newsletter"}, time_scale=5.0)
    with Sandbox(config) as sb:
        home = tmp_path / "home"
        code, _o, err = cli(
            home,
            "connections",
            "add",
            "--name",
            "demo",
            "--display-name",
            "Demo",
            "--hostname",
            f"127.0.0.1:{sb.port}",
            "--api-key-ref",
            f"env:{KEY_VAR}",
            "--agree-to-privacy-statement",
        )
        assert code == 0, err
        code, _o, err = cli(
            home,
            "exports",
            "add",
            "--name",
            "news",
            "--display-name",
            "News",
            "--connection",
            "demo",
            "--segment",
            "snapshots/news/",
            "--list-id",
            "1",
            "--email",
            "Email",
        )
        assert code == 0, err
        segment = synthetic.write_csv(tmp_path / "segment.csv", 2500)
        env = {**os.environ, KEY_VAR: KEY, "PYTHONPATH": str(ROOT)}
        cmd = [sys.executable, "-m", "exporter", "--home", str(home), "--time-scale", "5"]
        proc = subprocess.Popen(
            [*cmd, "run", "news", "--snapshot", str(segment)],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not list((home / "runs").rglob("sent/*.json")):
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        first_run = next((home / "runs" / "news").iterdir()).name
        # killed after something was sent and before the run finished
        assert not (home / "runs" / "news" / first_run / "report.json").exists()
        again = subprocess_cli(home, "--json", "run", "news", "--snapshot", str(segment), scale=5)
        assert again.returncode == 0, again.stderr
        report = json.loads(again.stdout)
        assert report["reconciles"]
        assert report["run_id"] == first_run  # resumed, not started over
        assert sb.list_members("1") == synthetic.expected_valid_emails(2500)
