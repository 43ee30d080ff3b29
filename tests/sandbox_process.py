"""``python -m sandbox`` in its own process, read through its admin routes.

Tests that run the exporter as several processes use this rather than the in-process
``Sandbox``: in its own process the sandbox keeps its collector tamed (``sandbox.__main__``)
and never shares a GIL with the test runner, so a pause in pytest cannot bunch arrivals that
the clients paced correctly into one burst the budget then refuses — as the real service
sits on its own machine.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class SandboxProcess:
    """A running ``python -m sandbox``."""

    process: subprocess.Popen[str]
    url: str
    api_key: str

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def get(self, path: str) -> dict[str, object]:
        """GET an admin route (``/_sandbox/...``) as JSON."""
        response = requests.get(self.url + path, headers={"Api-Token": self.api_key}, timeout=10)
        response.raise_for_status()
        data: dict[str, object] = response.json()
        return data

    def stats(self) -> dict[str, object]:
        """Every statistic (``Sandbox.stats``)."""
        return self.get("/_sandbox/stats")

    def members(self, list_id: str, status: int = 1) -> set[str]:
        emails = self.get(f"/_sandbox/lists/{list_id}/members?status={status}")["emails"]
        assert isinstance(emails, list)
        return set(emails)

    def bulk_requests(self) -> int:
        counts = self.stats()["request_counts"]
        assert isinstance(counts, dict)
        return int(counts.get("POST /import/bulk_import", 0))


@contextmanager
def started_sandbox_process(api_key: str, *args: str) -> Iterator[SandboxProcess]:
    """``python -m sandbox --api-key KEY ARGS...`` on a free port, stopped with SIGTERM after."""
    command: Sequence[str] = [sys.executable, "-m", "sandbox", "--api-key", api_key, *args]
    process = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("sandbox listening on "), line
        yield SandboxProcess(process, line.split()[-1], api_key)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
