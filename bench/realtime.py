"""At ActiveCampaign's real limits, as a user runs it: ``exports add`` followed at once by
``run`` (two ``python -m exporter`` processes on one store folder, sharing the account's
budget through its ledger), a push of ``realtime_rows`` contacts (100,000: 400 bulk requests,
four minutes of the bulk budget) against the sandbox at time scale 1.

The same push is then made at the compressed time scale of the ``push`` scenario (10), in a
fresh store and sandbox, so the report shows both side by side (``real.*`` at time scale 1
and ``compressed.*`` at 10; each with its ``time_scale``). They differ, and
``limiter_bound_pct`` says by how much they must: compressed time shrinks every wait but not
the margin processes sharing an account's ledger keep in each window (0.1 *real* seconds: a
tenth of a sandbox second at time scale 1, a whole one at 10, where the per-second window
becomes two sandbox seconds long). Only the time scale 1 figure is the wire at the real
limits.

This scenario runs once per ``make bench`` (its time scale 1 run alone takes ~4 minutes).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench import harness
from bench.scenarios import (
    BULK_LIMIT,
    RATE_LIMIT,
    Figures,
    Goal,
    Settings,
    floor_efficiency,
    floor_seconds,
)
from examples import synthetic
from exporter.activecampaign.limiter import default_allowance
from exporter.management.repository import ConfigRepository

NAME = "realtime"
"""The export ``exports add`` creates (on the bench connection and list)."""


class RealtimeScenario:
    """``exports add`` then ``run`` at time scale 1, and the same at the compressed scale."""

    name = "realtime"
    max_runs = 1
    goals = (
        Goal(
            "real.throttled", "==", 0.0, "zero throttled at time scale 1, right after exports add"
        ),
        Goal(
            "real.wire_efficiency_pct",
            ">=",
            97.0,
            "≥97% of the floor for that many bulk requests at time scale 1",
        ),
    )

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._n = 0

    def run_once(self) -> Figures:
        s = self.settings
        self._n += 1
        work = s.work / f"realtime-{self._n}"
        snapshot = synthetic.write_csv(work / "segment.csv", s.realtime_rows)
        figures: Figures = {}
        for label, ts in (("real", s.realtime_time_scale), ("compressed", s.time_scale)):
            one = add_then_run(work / label, snapshot, ts)
            figures.update({f"{label}.{k}": v for k, v in one.items()})
        shutil.rmtree(work, ignore_errors=True)
        return figures


def add_then_run(work: Path, snapshot: Path, time_scale: float) -> Figures:
    """A fresh sandbox and store; ``exports add`` and, as soon as it returns, ``run``."""
    with harness.SandboxProcess(time_scale) as sandbox:
        home = work / "home"
        store = harness.configure_store(home, sandbox.hostname)
        spec = work / "export.json"
        base, _etag = ConfigRepository(store).get_export(harness.EXPORT)
        data = base.to_public_dict()
        data.update(name=NAME, display_name="Realtime", segment="snapshots/realtime/")
        for key in ("created_by", "created_at", "updated_by", "updated_at"):
            data.pop(key, None)
        spec.write_text(json.dumps(data), encoding="utf-8")
        started = time.monotonic()
        _cli(home, time_scale, "exports", "add", "--file", str(spec))
        added = time.monotonic()
        report = json.loads(_cli(home, time_scale, "run", NAME, "--snapshot", str(snapshot)))
        wall = time.monotonic() - started
        stats = sandbox.stats()
    counts: dict[str, int] = stats["request_counts"]
    polls = sum(n for endpoint, n in counts.items() if "import/info" in endpoint)
    accepted = int(stats["bulk_accepted"])
    span = float(stats["bulk_span_seconds"])
    return {
        "time_scale": time_scale,
        "completed": float(report["status"] == "completed"),
        "contacts_confirmed": float(report["confirmed"]),
        "throttled": float(stats["throttled"]),
        "bulk_accepted": float(accepted),
        "import_info_requests": float(polls),
        "bulk_span_sandbox_s": span,
        "floor_sandbox_s": floor_seconds(accepted),
        "wire_efficiency_pct": floor_efficiency(accepted, span),
        "limiter_bound_pct": limiter_bound(accepted, time_scale),
        "peak_requests_per_second": float(stats["peak_requests_per_second"]),
        "exports_add_wall_s": added - started,
        "wall_seconds": wall,
    }


def limiter_bound(n: int, time_scale: float, slack: float = 0.005) -> float:
    """The efficiency the client's own margins allow ``n`` bulk requests at ``time_scale``:
    its windows are longer than ActiveCampaign's by ``slack`` and by the ledger's allowance
    in *real* seconds (0.1 s: a tenth of a sandbox second at time scale 1, a whole one at
    10). The measured figure can only approach this."""
    allowance = default_allowance(time_scale, shared=True) * time_scale  # sandbox seconds
    second, minute = 1.0 * (1 + slack) + allowance, 60.0 * (1 + slack) + allowance
    k = n - 1
    last = (k // BULK_LIMIT) * minute + ((k % BULK_LIMIT) // RATE_LIMIT) * second
    return floor_efficiency(n, last)


def _cli(home: Path, time_scale: float, *args: str) -> str:
    env = {**os.environ, harness.KEY_VARIABLE: harness.API_KEY, "PYTHONPATH": str(harness.ROOT)}
    command = [sys.executable, "-m", "exporter", "--home", str(home)]
    command += ["--time-scale", repr(time_scale), "--json", *args]
    done = subprocess.run(
        command, cwd=harness.ROOT, env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"exporter {' '.join(args[:2])} exited {done.returncode}: {done.stderr}")
    return done.stdout
