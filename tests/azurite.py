"""Start a real Azurite (the Azure Storage emulator) for tests, on free ports in a temp folder.

The binaries come from the project's ``node_modules/.bin`` (``make test`` runs ``npm ci``).
A missing binary is a failure, not a skip: tests that promise to exercise Azure Storage must
not turn green without it.

Each call starts its own process, so parallel pytest-xdist workers never share state.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / "node_modules" / ".bin"

ACCOUNT_NAME = "devstoreaccount1"
# The well-known, published Azurite development key: not a secret.
ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
START_TIMEOUT = 60.0
"""Seconds to wait for Azurite to answer (a loaded 2-core CI box can be slow to start node)."""
_ATTEMPTS = 3
"""Free ports are picked before the process binds them; another process may take one."""


@dataclass(frozen=True)
class Azurite:
    """A running Azurite: its endpoints and the connection string that reaches them."""

    location: Path
    blob_port: int
    queue_port: int | None = None
    table_port: int | None = None

    def endpoint(self, port: int) -> str:
        return f"http://127.0.0.1:{port}/{ACCOUNT_NAME}"

    @property
    def blob_endpoint(self) -> str:
        return self.endpoint(self.blob_port)

    @property
    def connection_string(self) -> str:
        """Connection string for every service this instance runs."""
        parts = [
            "DefaultEndpointsProtocol=http",
            f"AccountName={ACCOUNT_NAME}",
            f"AccountKey={ACCOUNT_KEY}",
            f"BlobEndpoint={self.blob_endpoint}",
        ]
        if self.queue_port is not None:
            parts.append(f"QueueEndpoint={self.endpoint(self.queue_port)}")
        if self.table_port is not None:
            parts.append(f"TableEndpoint={self.endpoint(self.table_port)}")
        return ";".join(parts) + ";"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _binary(name: str) -> Path:
    path = BIN / name
    if not path.exists():
        pytest.fail(
            f"Azurite is not installed ({path} is missing): run `make test`, "
            "which installs it with `npm ci`.",
            pytrace=False,
        )
    return path


def _answers(url: str) -> bool:
    """True once the HTTP server answers at all (any status: it is up)."""
    # No proxy: a CI proxy setting must not swallow loopback probes.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=2):
            return True
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, OSError):
        return False


def _command(location: Path, all_services: bool) -> tuple[list[str], Azurite]:
    common = ["--location", str(location), "--silent", "--skipApiVersionCheck"]
    common.append("--disableTelemetry")
    blob = _free_port()
    if not all_services:
        cmd = [str(_binary("azurite-blob")), "--blobHost", "127.0.0.1", "--blobPort", str(blob)]
        return cmd + common, Azurite(location=location, blob_port=blob)
    queue, table = _free_port(), _free_port()
    cmd = [
        str(_binary("azurite")),
        *("--blobHost", "127.0.0.1", "--blobPort", str(blob)),
        *("--queueHost", "127.0.0.1", "--queuePort", str(queue)),
        *("--tableHost", "127.0.0.1", "--tablePort", str(table)),
    ]
    return cmd + common, Azurite(location, blob, queue, table)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def _wait_until_up(proc: subprocess.Popen[bytes], azurite: Azurite) -> bool:
    """True when every started service answers; False if the process died (port taken?)."""
    ports = [p for p in (azurite.blob_port, azurite.queue_port, azurite.table_port) if p]
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if all(_answers(azurite.endpoint(p) + "?comp=list") for p in ports):
            return True
        time.sleep(0.05)
    return False


@contextlib.contextmanager
def running_azurite(location: Path, *, all_services: bool = False) -> Iterator[Azurite]:
    """Run Azurite with its data in ``location`` until the block ends.

    ``all_services`` runs the full ``azurite`` (blob, queue and table, each on a free port)
    instead of ``azurite-blob`` alone.
    """
    location.mkdir(parents=True, exist_ok=True)
    log_path = location / "azurite.log"
    for _attempt in range(_ATTEMPTS):
        cmd, azurite = _command(location, all_services)
        with log_path.open("ab") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=location)
        try:
            if _wait_until_up(proc, azurite):
                yield azurite
                return
        finally:
            _stop(proc)
    log_tail = log_path.read_text(errors="replace")[-2000:]
    pytest.fail(f"Azurite did not start after {_ATTEMPTS} attempts; log:\n{log_tail}")
