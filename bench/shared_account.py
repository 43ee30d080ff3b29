"""Many exports, one account: three exports of very different sizes started together from the
command line (three ``python -m exporter run`` processes on one store folder), against one
sandbox account. They share its budget through the store's ledger; the figures say whether
they were throttled, how much of the account's bulk budget they used together over their busy
span, and how soon the small one was done (it must not wait behind the big first push)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from bench import harness
from bench.scenarios import Figures, Goal, Settings, floor_efficiency
from examples import synthetic
from exporter.management.config import Export
from exporter.management.repository import ConfigRepository

SIZES = ("large", "medium", "small")
"""The three exports: 20%, 2% and 0.2% of the bench's segment size (200k, 20k, 2k at 1M)."""


def sizes(rows: int) -> dict[str, int]:
    return {"large": rows // 5, "medium": rows // 50, "small": max(rows // 500, 1)}


class SharedAccountScenario:
    """The three exports at once; one run = one fresh store and sandbox."""

    name = "shared_account"
    goals = (
        Goal("throttled", "==", 0.0, "zero throttled responses with three exports at once"),
        Goal(
            "combined_wire_efficiency_pct",
            ">=",
            95.0,
            "together ≥95% of the account's bulk budget over their busy span",
        ),
        Goal("small_done_sandbox_min", "<=", 2.0, "the small export done within 2 minutes"),
    )

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._n = 0

    def run_once(self) -> Figures:
        s = self.settings
        self._n += 1
        work = s.work / f"shared-{self._n}"
        counts = sizes(s.rows)
        snapshots = {
            name: synthetic.write_csv(work / f"{name}.csv", n) for name, n in counts.items()
        }
        ts = s.shared_time_scale
        with harness.SandboxProcess(ts, lists=("1", "2", "3")) as sandbox:
            home = work / "home"
            store = harness.configure_store(home, sandbox.hostname)
            _add_exports(ConfigRepository(store))
            reports = _run_together(home, snapshots, ts)
            stats = sandbox.stats()
        shutil.rmtree(work, ignore_errors=True)
        span = float(stats["bulk_span_seconds"])
        accepted = int(stats["bulk_accepted"])
        small = reports["small"]
        took = _seconds(small["started_at"], small["finished_at"]) * ts / 60.0
        return {
            "throttled": float(stats["throttled"]),
            "bulk_accepted": float(accepted),
            "busy_span_sandbox_min": span / 60.0,
            "combined_wire_efficiency_pct": floor_efficiency(accepted, span),
            "small_done_sandbox_min": took,
            "peak_requests_per_second": float(stats["peak_requests_per_second"]),
            "bulk_requests_per_minute_peak": float(stats["bulk_requests_per_minute_peak"]),
            "completed": float(all(r["status"] == "completed" for r in reports.values())),
        }


def _add_exports(repo: ConfigRepository) -> None:
    base, _etag = repo.get_export(harness.EXPORT)
    for list_id, name in enumerate(SIZES, start=1):
        export: Export = base.model_copy(
            update={
                "name": name,
                "display_name": name.title(),
                "segment": f"snapshots/{name}/",
                "list_id": str(list_id),
            }
        )
        repo.put_export(export, create_only=True)


def _run_together(home: Path, snapshots: dict[str, Path], time_scale: float) -> dict[str, Any]:
    env = {**os.environ, harness.KEY_VARIABLE: harness.API_KEY, "PYTHONPATH": str(harness.ROOT)}
    procs = {
        name: subprocess.Popen(
            [
                *(sys.executable, "-m", "exporter", "--home", str(home)),
                *("--time-scale", repr(time_scale), "--json", "run", name),
                *("--snapshot", str(path)),
            ],
            cwd=harness.ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        for name, path in snapshots.items()
    }
    reports = {}
    for name, proc in procs.items():
        out, _ = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"export {name} exited {proc.returncode}")
        reports[name] = json.loads(out)
    return reports


def _seconds(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()
