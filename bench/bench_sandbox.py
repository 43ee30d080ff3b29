"""Throughput of the sandbox itself, with every budget lifted.

Starts ``python -m sandbox --no-limits`` in its own process, then pushes bulk imports of 250
contacts from this process over keep-alive connections (one ``http.client`` connection per
client thread) and prints requests/s and contacts/s. Afterwards it waits until every batch has
been applied and reports how long that took and the sandbox's memory (RSS).

    .venv/bin/python -m bench.bench_sandbox --requests 2000 --connections 2

The goal is at least 100 requests/s of 250 contacts on loopback on a 2-core machine, so the
sandbox is never what limits a benchmark of the exporter.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

API_KEY = "bench-key"
ROOT = Path(__file__).resolve().parent.parent
_CONTACT = (
    '{"email":"Person.%d@Example.com","first_name":"First%d","last_name":"Last%d",'
    '"phone":"+1 555 %07d","fields":[{"id":1,"value":"tier-%d"},{"id":2,"value":"2024-05-%02d"}],'
    '"tags":["bench","cohort-%d"],"subscribe":[{"listid":"1"}]}'
)


@dataclass
class BenchResult:
    """What one run measured."""

    requests: int
    contacts: int
    connections: int
    seconds: float
    requests_per_second: float
    contacts_per_second: float
    errors: int
    largest_request_bytes: int
    apply_seconds: float
    """From the end of sending until every batch was applied."""
    stored_contacts: int
    sandbox_rss_mb: float
    sandbox_cpu_ms_per_request: float
    """Sandbox process CPU (user + system) per request, applying included: the load-independent
    measure (the server is one Python process, so 1000 / this is its requests/s on one free
    core)."""


def body_for(index: int, per_request: int) -> bytes:
    """A bulk-import body of ``per_request`` distinct contacts (the ``index``-th request)."""
    first = index * per_request
    parts = [
        _CONTACT % (n, n % 500, n % 700, n, n % 4, n % 28 + 1, n % 10)
        for n in range(first, first + per_request)
    ]
    return ('{"contacts":[' + ",".join(parts) + '],"exclude_automations":true}').encode()


def start_sandbox() -> tuple[subprocess.Popen[str], str, int]:
    """``python -m sandbox`` on a free port; returns (process, host, port)."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sandbox",
            "--no-limits",
            "--api-key",
            API_KEY,
            "--list",
            "1:Bench",
            "--field",
            "1:Tier",
            "--field",
            "2:Since:date",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if "listening on http://" not in line:
        proc.kill()
        raise RuntimeError(f"sandbox did not start: {line!r}")
    host, _, port = line.rsplit("http://", 1)[1].partition(":")
    return proc, host, int(port)


def _admin(host: str, port: int, path: str) -> dict[str, object]:
    conn = http.client.HTTPConnection(host, port, timeout=60)
    try:
        conn.request("GET", path, headers={"Api-Token": API_KEY})
        data: dict[str, object] = json.loads(conn.getresponse().read())
        return data
    finally:
        conn.close()


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def run(requests: int, connections: int, per_request: int = 250) -> BenchResult:
    """Start a sandbox, push ``requests`` bulk imports, wait for them to apply, stop it."""
    proc, host, port = start_sandbox()
    try:
        bodies = [body_for(i, per_request) for i in range(min(requests, 64))]
        next_index = iter(range(requests))
        lock = threading.Lock()
        errors = [0]

        def client() -> None:
            conn = http.client.HTTPConnection(host, port, timeout=60)
            headers = {"Api-Token": API_KEY, "Content-Type": "application/json"}
            while True:
                with lock:
                    i = next(next_index, None)
                if i is None:
                    break
                body = bodies[i] if i < len(bodies) else body_for(i, per_request)
                conn.request("POST", "/api/3/import/bulk_import", body, headers)
                response = conn.getresponse()
                response.read()
                if response.status != 200:
                    with lock:
                        errors[0] += 1
            conn.close()

        threads = [threading.Thread(target=client) for _ in range(connections)]
        cpu_before = _cpu_seconds(proc.pid)
        started = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        seconds = time.perf_counter() - started
        sent_at = time.perf_counter()
        while True:
            stats = _admin(host, port, "/_sandbox/stats")
            if stats["pending_batches"] == 0:
                break
            time.sleep(0.2)
        apply_seconds = time.perf_counter() - sent_at
        cpu = _cpu_seconds(proc.pid) - cpu_before
        return BenchResult(
            requests=requests,
            contacts=requests * per_request,
            connections=connections,
            seconds=round(seconds, 3),
            requests_per_second=round(requests / seconds, 1),
            contacts_per_second=round(requests * per_request / seconds),
            errors=errors[0],
            largest_request_bytes=int(str(stats["largest_request_bytes"])),
            apply_seconds=round(apply_seconds, 2),
            stored_contacts=int(str(stats["contacts"])),
            sandbox_rss_mb=round(_rss_mb(proc.pid), 1),
            sandbox_cpu_ms_per_request=round(cpu * 1000 / requests, 2),
        )
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: prints one line per measure and the JSON result."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--connections", type=int, default=2)
    p.add_argument("--per-request", type=int, default=250)
    args = p.parse_args(argv)
    result = run(args.requests, args.connections, args.per_request)
    print(f"bulk requests/s: {result.requests_per_second}  (goal >= 100)")
    print(f"contacts/s:      {result.contacts_per_second}")
    print(f"applied {result.stored_contacts} contacts {result.apply_seconds}s after sending")
    print(f"sandbox RSS:     {result.sandbox_rss_mb} MB")
    print(
        f"sandbox CPU:     {result.sandbox_cpu_ms_per_request} ms/request "
        f"(= {1000 / max(result.sandbox_cpu_ms_per_request, 0.001):.0f} requests/s on a free core)"
    )
    print(json.dumps(asdict(result)))
    return 0 if result.errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
