"""What every benchmark scenario needs: a sandbox in its own process, a store with a connection
and an export, an engine whose client records every request, and the machine's description.

The sandbox runs as ``python -m sandbox`` in a separate process so its request handling never
competes with the client for this process's GIL; its statistics are read over its admin routes.
"""

from __future__ import annotations

import http.client
import json
import os
import platform
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from exporter.activecampaign import ActiveCampaignClient, RateLimiter, RetryPolicy
from exporter.activecampaign.transport import RequestsTransport, Response
from exporter.management.config import Connection, Consent, Export, FieldMap
from exporter.management.hostnames import base_url
from exporter.management.repository import ConfigRepository
from exporter.management.secrets import LocalSecretProvider
from exporter.run.engine import Engine
from exporter.settings import HostPolicy
from exporter.storage.store import LocalStore

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "bench-sandbox-key"
KEY_VARIABLE = "BENCH_AC_KEY"
CONNECTION = "bench-ac"
EXPORT = "bench"
LIST_ID = "1"
BULK_PATH = "/api/3/import/bulk_import"

SANDBOX_FIELDS = ("1:City", "2:Birthday:date", "3:Tier:dropdown")
"""The sandbox's custom fields, matching the synthetic segment's three custom attributes."""


# --- the sandbox process ---------------------------------------------------------------------


class SandboxProcess:
    """``python -m sandbox`` with ActiveCampaign's real budgets at ``time_scale``."""

    def __init__(
        self, time_scale: float, *, limits: bool = True, lists: Sequence[str] = (LIST_ID,)
    ) -> None:
        self.time_scale = time_scale
        args = [sys.executable, "-m", "sandbox", "--api-key", API_KEY]
        for list_id in lists:
            args += ["--list", f"{list_id}:Bench {list_id}"]
        args += ["--time-scale", repr(time_scale)]
        for spec in SANDBOX_FIELDS:
            args += ["--field", spec]
        if not limits:
            args.append("--no-limits")
        self._proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, text=True)
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline().strip()
        if "listening on http://" not in line:
            self._proc.kill()
            self._proc.wait()
            raise RuntimeError(f"the sandbox did not start: {line!r}")
        self.hostname = line.rsplit("http://", 1)[1]
        host, _, port = self.hostname.partition(":")
        self._host, self._port = host, int(port)

    @property
    def pid(self) -> int:
        return self._proc.pid

    def admin(self, method: str, path: str) -> dict[str, Any]:
        """One admin request (``/_sandbox/...``); its JSON answer."""
        conn = http.client.HTTPConnection(self._host, self._port, timeout=120)
        try:
            conn.request(method, path, headers={"Api-Token": API_KEY})
            response = conn.getresponse()
            data: dict[str, Any] = json.loads(response.read())
            if response.status != 200:
                raise RuntimeError(f"sandbox admin {method} {path}: {response.status} {data}")
            return data
        finally:
            conn.close()

    def stats(self) -> dict[str, Any]:
        return self.admin("GET", "/_sandbox/stats")

    def reset_stats(self) -> None:
        self.admin("POST", "/_sandbox/reset_stats")

    def wait_idle(self, timeout: float = 600.0) -> None:
        """Until every queued batch has been applied."""
        deadline = time.monotonic() + timeout
        while self.stats()["pending_batches"]:
            if time.monotonic() > deadline:
                raise RuntimeError("the sandbox did not finish its batches")
            time.sleep(0.2)

    def members(self, status: int = 1) -> int:
        emails = self.admin("GET", f"/_sandbox/lists/{LIST_ID}/members?status={status}")["emails"]
        return len(emails)

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._proc.stdout is not None:
            self._proc.stdout.close()

    def __enter__(self) -> SandboxProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- a client that records what it sent ------------------------------------------------------


@dataclass
class Sent:
    """One request as the client saw it."""

    method: str
    path: str
    start: float
    """``time.monotonic()`` just before the transport sent it."""
    end: float
    status: int
    body_bytes: int
    contacts: int
    """Contacts in a bulk-import body (0 for other requests)."""


@dataclass
class Recorder:
    """Every request sent through :class:`RecordingTransport` (thread-safe append)."""

    requests: list[Sent] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def bulk(self) -> list[Sent]:
        return [r for r in self.requests if r.method == "POST" and r.path == BULK_PATH]

    def count(self, method: str, path: str) -> int:
        return sum(1 for r in self.requests if r.method == method and r.path == path)


class RecordingTransport:
    """The real :class:`RequestsTransport`, noting each request's start, end and size."""

    def __init__(self, recorder: Recorder) -> None:
        self._inner = RequestsTransport()
        self._recorder = recorder

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        params: Mapping[str, str] | None,
        body: bytes | None,
        timeout: float,
    ) -> Response:
        path = url.split("://", 1)[1].partition("/")[2]
        path = "/" + path.partition("?")[0]
        contacts = body.count(b'"email":') if body and path == BULK_PATH else 0
        start = time.monotonic()
        answer = self._inner.request(
            method, url, headers=headers, params=params, body=body, timeout=timeout
        )
        end = time.monotonic()
        with self._recorder.lock:
            self._recorder.requests.append(
                Sent(method, path, start, end, answer.status, len(body or b""), contacts)
            )
        return answer

    def close(self) -> None:
        self._inner.close()


def recording_client(
    connection: Connection,
    key: str,
    recorder: Recorder,
    time_scale: float,
    allowance: float | None = None,
    limiter_type: type[RateLimiter] = RateLimiter,
) -> ActiveCampaignClient:
    """What :meth:`Engine.default_client` builds (same limiter, same scaled retry policy),
    over a recording transport; ``allowance`` None keeps the limiter's default margin;
    ``limiter_type`` may be an instrumented subclass."""
    ts = time_scale
    return ActiveCampaignClient(
        base_url(connection.hostname),
        key,
        transport=RecordingTransport(recorder),
        limiter=limiter_type(time_scale=ts, allowance=allowance),
        retry=RetryPolicy(initial_backoff=1.0 / ts, max_backoff=30.0 / ts, deadline=600.0 / ts),
    )


# --- a store with a connection and an export -------------------------------------------------


def configure_store(home: Path, hostname: str) -> LocalStore:
    """A local store holding the bench connection (to ``hostname``) and export."""
    store = LocalStore(home)
    repo = ConfigRepository(store)
    now = datetime.now(UTC)
    repo.put_connection(
        Connection(
            name=CONNECTION,
            display_name="Bench sandbox",
            hostname=hostname,
            api_key_ref=f"env:{KEY_VARIABLE}",
            consent=Consent(agreed=True, by="bench", at=now),
        )
    )
    repo.put_export(
        Export(
            name=EXPORT,
            display_name="Bench segment",
            connection=CONNECTION,
            segment="snapshots/bench/",
            list_id=LIST_ID,
            email="Email",
            first_name="FirstName",
            last_name="LastName",
            phone="Phone",
            fields=[
                FieldMap(column="City", field="1", field_id="1", field_type="text"),
                FieldMap(column="Birthday", field="2", field_id="2", field_type="date"),
                FieldMap(column="Tier", field="3", field_id="3", field_type="dropdown"),
            ],
        )
    )
    return store


def engine_for(
    store: LocalStore,
    *,
    time_scale: float,
    recorder: Recorder | None = None,
    allowance: float | None = None,
    limiter_type: type[RateLimiter] = RateLimiter,
) -> Engine:
    """An engine over ``store`` whose client talks to the sandbox at ``time_scale``."""
    secrets = LocalSecretProvider({KEY_VARIABLE: API_KEY})
    factory = None
    if recorder is not None:
        rec = recorder

        def factory(connection: Connection, key: str) -> ActiveCampaignClient:
            return recording_client(connection, key, rec, time_scale, allowance, limiter_type)

    return Engine(
        store,
        secrets,
        host_policy=HostPolicy(allow_loopback_sandbox=True),
        client_factory=factory,
        time_scale=time_scale,
    )


# --- the machine -----------------------------------------------------------------------------


def machine() -> dict[str, str]:
    """CPU model, cores, RAM, Python version, OS, load average."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = "unknown"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count() or 0),
        "ram": ram,
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
    }


def load_average() -> tuple[float, float, float]:
    """The 1, 5 and 15 minute load averages (0s where unavailable)."""
    try:
        return os.getloadavg()
    except OSError:
        return (0.0, 0.0, 0.0)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_child(module: str, args: Sequence[str]) -> dict[str, Any]:
    """Run ``python -m module args`` and parse the JSON object on its last stdout line."""
    done = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{module} failed ({done.returncode}): {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result
