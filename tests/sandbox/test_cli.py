"""``python -m sandbox``: prints its URL when ready, serves, stops cleanly on SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import sys

import requests

from tests.conftest import ROOT


def test_cli_serves_and_stops_on_sigterm() -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sandbox",
            "--port",
            "0",
            "--api-key",
            "cli-key",
            "--list",
            "7:Seven",
            "--field",
            "3:Tier:text:TIER",
            "--tag",
            "vip",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("sandbox listening on http://127.0.0.1:")
        base = line.split(" on ", 1)[1].strip() + "/api/3"
        headers = {"Api-Token": "cli-key"}
        lists = requests.get(f"{base}/lists", headers=headers, timeout=10).json()["lists"]
        assert [(x["id"], x["name"]) for x in lists] == [("7", "Seven")]
        fields = requests.get(f"{base}/fields", headers=headers, timeout=10).json()["fields"]
        assert [(f["id"], f["perstag"]) for f in fields] == [("3", "TIER")]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cli_rejects_a_bad_list_spec() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "sandbox", "--api-key", "k", "--list", "oops"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2 and "ID:NAME" in done.stderr
