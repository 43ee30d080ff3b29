"""Many exports, one ActiveCampaign account, from the command line: three ``python -m exporter
run`` processes on one store folder share the account's budget through its ledger, so the
sandbox never throttles and never sees more than 5 requests/s or 100 bulk imports a minute —
including the requests ``connections add --verify`` and ``exports add`` made just before."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from examples import synthetic
from exporter.cli import main
from tests.sandbox_process import SandboxProcess, started_sandbox_process

ROOT = Path(__file__).resolve().parent.parent.parent
KEY = "shared-account-key-0123456789"
KEY_VAR = "SHARED_AC_KEY"
SCALE = 2.0
CONTACTS = 20_000
EXPORTS = ("alpha", "beta", "gamma")


@pytest.fixture
def sandbox() -> Iterator[SandboxProcess]:
    """Out of process, as the real service is: a pause in the test runner must not bunch the
    runs' paced requests into one burst (see ``tests.sandbox_process``)."""
    with started_sandbox_process(
        KEY,
        *("--list", "1:Alpha", "--list", "2:Beta", "--list", "3:Gamma"),
        *("--field", "1:City", "--field", "2:Birthday:date:BIRTHDAY", "--field", "3:Tier:dropdown"),
        *("--time-scale", str(SCALE)),
    ) as sb:
        yield sb


def cli(home: Path, *args: str) -> None:
    code = main(["--home", str(home), "--time-scale", str(SCALE), *args], env={KEY_VAR: KEY})
    assert code == 0, args


def setup(home: Path, tmp: Path, sb: SandboxProcess) -> None:
    cli(
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
    base = json.loads((ROOT / "examples" / "export.json").read_text())
    for list_id, name in enumerate(EXPORTS, start=1):
        spec = tmp / f"{name}.json"
        segment = f"snapshots/{name}/"
        spec.write_text(
            json.dumps({**base, "name": name, "list_id": str(list_id), "segment": segment})
        )
        cli(home, "exports", "add", "--file", str(spec))


@pytest.mark.serial
def test_three_exports_on_one_account_at_once_are_never_throttled(
    tmp_path: Path, sandbox: SandboxProcess
) -> None:
    home = tmp_path / "home"
    setup(home, tmp_path, sandbox)  # verify + list checks: requests the runs must count
    snapshot = synthetic.write_csv(tmp_path / "segment.csv", CONTACTS)
    env = {**os.environ, KEY_VAR: KEY, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [
                *(sys.executable, "-m", "exporter", "--home", str(home)),
                *("--time-scale", str(SCALE), "--json", "run", name, "--snapshot", str(snapshot)),
            ],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in EXPORTS
    ]
    reports = []
    for proc in procs:
        out, err = proc.communicate(timeout=400)
        assert proc.returncode == 0, err
        reports.append(json.loads(out))
    stats = sandbox.stats()
    assert stats["throttled"] == 0, stats
    assert stats["peak_requests_per_second"] <= 5
    assert stats["bulk_requests_per_minute_peak"] <= 100
    expected = synthetic.expected_valid_emails(CONTACTS)
    for list_id, report in enumerate(reports, start=1):
        assert report["status"] == "completed" and report["reconciles"], report["export"]
        assert sandbox.members(str(list_id)) == expected
    # They ran side by side, not one after another: every run started before any finished.
    assert max(r["started_at"] for r in reports) < min(r["finished_at"] for r in reports)
