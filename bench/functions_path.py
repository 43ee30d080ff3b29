"""The Functions path at the limit (issue #18 item 2): one export run driven through the real
orchestration — the registered ``export_run`` orchestrator replayed by the Durable SDK's own
engine (:mod:`bench.durable`), its account's budget entity, its activities on a thread pool —
against ``python -m sandbox`` in its own process over real HTTP, time compressed by
``time_scale``.

The Azure Storage backend picks an activity's message up from a queue some time after the
orchestrator scheduled it (polling with back-off): every activity call waits a dispatch delay
drawn uniformly from 50–500 ms of *platform* time (divided by the time scale, like every other
time here) before it runs. The figures are the sandbox's own: bulk imports accepted, their
first→last span in sandbox seconds, and that span against the floor the two budgets allow for
as many requests (:func:`bench.scenarios.floor_efficiency`)."""

from __future__ import annotations

import random
import shutil
import threading
import time
from pathlib import Path
from typing import Any

from bench import harness
from bench.durable.app import user_function
from bench.durable.driver import Driver, run_activity
from bench.durable.host import DurableHost, Pending
from bench.scenarios import Figures, Goal, Settings, floor_efficiency, floor_seconds
from blueprints import orchestration as orch
from blueprints.runtime import Runtime, use_runtime
from examples import synthetic
from exporter.management.config import Connection
from exporter.management.repository import ConfigRepository
from exporter.management.secrets import LocalSecretProvider
from exporter.management.service import ManagementService
from exporter.run.engine import Engine, instance_id
from exporter.run.report import RunReport
from exporter.settings import FunctionSettings, HostPolicy
from exporter.storage import runs
from exporter.storage.budget_ledger import store_ledgers
from exporter.storage.store import LocalStore

DISPATCH_SECONDS = (0.05, 0.5)
"""An activity's dispatch delay on the Azure Storage backend (platform seconds), drawn per call."""
WAVE_WIDTH = 5
"""``EXPORTER_PUSH_WAVE_WIDTH`` (the account's five workers)."""


class DelayedActivities:
    """Runs each activity after its dispatch delay (scaled), and counts the delays."""

    def __init__(self, time_scale: float, seed: int = 18) -> None:
        self.time_scale = time_scale
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self.calls = 0
        self.delay_seconds = 0.0
        """Sum of the delays drawn (platform seconds)."""
        self.timeline: list[tuple[str, float, float, float]] = []
        """Per call: (activity, dispatched, started, ended), monotonic real seconds."""

    def __call__(self, pending: Pending) -> Any:
        with self._lock:
            delay = self._random.uniform(*DISPATCH_SECONDS)
            self.calls += 1
            self.delay_seconds += delay
        dispatched = time.monotonic()
        time.sleep(delay / self.time_scale)
        started = time.monotonic()
        try:
            return run_activity(pending)
        finally:
            with self._lock:
                self.timeline.append((pending.name, dispatched, started, time.monotonic()))


def runtime_for(store: LocalStore, time_scale: float) -> Runtime:
    """A Functions runtime over ``store`` whose engine talks to the sandbox at ``time_scale``."""
    config = FunctionSettings(
        blob_service_uri=None,
        storage_connection_string=None,
        keyvault_url=None,
        managed_identity_client_id=None,
        push_wave_width=WAVE_WIDTH,
        hosts=HostPolicy(allow_loopback_sandbox=True),
    )
    secrets = LocalSecretProvider({harness.KEY_VARIABLE: harness.API_KEY})
    engine = Engine(
        store,
        secrets,
        host_policy=config.hosts,
        time_scale=time_scale,
        ledger_for=store_ledgers(store),  # as blueprints.runtime
    )

    def no_client(connection: Connection, key: str) -> Any:
        raise RuntimeError("the bench makes no management calls")

    management = ManagementService(ConfigRepository(store), secrets, no_client, config.hosts)
    return Runtime(config, store, secrets, engine, management)


class FunctionsScenario:
    """One run of ``settings.functions_rows`` contacts through the orchestration."""

    name = "functions"
    goals = (
        Goal("throttled", "==", 0.0, "zero throttled responses through the orchestration"),
        Goal("wire_efficiency_pct", ">=", 95.0, "≥95% of the floor for its bulk requests"),
    )

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._n = 0
        self.timeline: list[tuple[str, float, float, float]] = []
        """The last run's activities (see :attr:`DelayedActivities.timeline`)."""

    def run_once(self) -> Figures:
        s = self.settings
        self._n += 1
        work = s.work / f"functions-{self._n}"
        ts = s.functions_time_scale
        started = time.monotonic()
        with harness.SandboxProcess(ts) as sandbox:
            store = harness.configure_store(work / "store", sandbox.hostname)
            path = "snapshots/bench/segment.csv"
            csv = synthetic.write_csv(work / "segment.csv", s.functions_rows)
            store.write_bytes(path, csv.read_bytes())
            runtime = runtime_for(store, ts)
            request = runtime.engine.new_run(
                harness.EXPORT, snapshot=runtime.engine.store_snapshot(path)
            )
            data = orch.run_input(request, WAVE_WIDTH).to_dict()
            iid = instance_id(harness.EXPORT, request.snapshot_identity)
            host = DurableHost(user_function(orch.RUN_ORCHESTRATOR), data, instance_id=iid)
            activities = DelayedActivities(ts)
            driver = Driver([host], activity=activities)
            with use_runtime(runtime):
                [replay] = driver.run(max_rounds=100_000)
            stats = sandbox.stats()
            self.timeline = sorted(activities.timeline, key=lambda t: t[1])
            stored = runs.report_path(harness.EXPORT, request.run_id)
            report = (
                RunReport.model_validate_json(store.read_bytes(stored))
                if store.exists(stored)
                else None
            )
        wall = time.monotonic() - started
        shutil.rmtree(work, ignore_errors=True)
        accepted = int(stats["bulk_accepted"])
        span = float(stats["bulk_span_seconds"])
        done = replay.done and replay.failed is None and report is not None
        return {
            "contacts": float(s.functions_rows),
            "contacts_confirmed": float(report.confirmed) if report else 0.0,
            "completed": float(done and report is not None and report.status == "completed"),
            "throttled": float(stats["throttled"]),
            "throttled_per_second": float(stats["throttled_by_budget"].get("per_second", 0)),
            "bulk_accepted": float(accepted),
            "bulk_span_sandbox_s": span,
            "floor_sandbox_s": floor_seconds(accepted),
            "wire_efficiency_pct": floor_efficiency(accepted, span),
            "peak_requests_per_second": float(stats["peak_requests_per_second"]),
            "bulk_requests_per_minute_peak": float(stats["bulk_requests_per_minute_peak"]),
            "rounds": float(len(driver.rounds)),
            "activities": float(activities.calls),
            "mean_dispatch_ms": 1000.0 * activities.delay_seconds / max(activities.calls, 1),
            "wall_seconds": wall,
            "time_scale": ts,
        }


def figures_text(figures: Figures) -> str:
    """One line for a person."""
    return (
        f"{figures['contacts']:,.0f} contacts, {figures['bulk_accepted']:,.0f} bulk requests, "
        f"span {figures['bulk_span_sandbox_s']:.1f} s, floor {figures['floor_sandbox_s']:.1f} s, "
        f"efficiency {figures['wire_efficiency_pct']:.1f}%, throttled "
        f"{figures['throttled']:.0f}, wall {figures['wall_seconds']:.0f} s at time scale "
        f"{figures['time_scale']:g}"
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.functions_path [ROWS] [TIME_SCALE]``: one run, its figures."""
    import json
    import sys
    import tempfile

    args = sys.argv[1:] if argv is None else argv
    rows = int(args[0]) if args else 200_000
    ts = float(args[1]) if len(args) > 1 else 10.0
    with tempfile.TemporaryDirectory(prefix="exporter-fbench-") as tmp:
        s = Settings(work=Path(tmp), functions_rows=rows, functions_time_scale=ts)
        scenario = FunctionsScenario(s)
        figures = scenario.run_once()
    origin = scenario.timeline[0][1] if scenario.timeline else 0.0
    for name, dispatched, started, ended in scenario.timeline:  # in sandbox seconds
        print(
            f"{name:18} dispatched {(dispatched - origin) * ts:8.1f}  started "
            f"{(started - origin) * ts:8.1f}  ended {(ended - origin) * ts:8.1f}"
        )
    print(json.dumps(figures, indent=2))
    print(figures_text(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
