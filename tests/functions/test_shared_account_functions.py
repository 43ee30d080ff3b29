"""Many exports, one account, in the Functions path: three orchestrations started together,
driven side by side with the real activities on a thread pool against the sandbox (in its own
process, as the real service is). Their only coordination is the account's Durable Entity;
the sandbox must never throttle them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.durable.app import user_function
from bench.durable.driver import Driver
from bench.durable.host import DurableHost
from blueprints import orchestration as orch
from blueprints.runtime import use_runtime
from exporter.run.engine import instance_id
from exporter.run.report import RunReport
from exporter.storage import runs
from exporter.storage.records import read_record
from exporter.storage.store import LocalStore
from tests.functions.fake_durable import API_KEY, make_runtime, seed, snapshot_csv
from tests.sandbox_process import SandboxProcess, started_sandbox_process

SCALE = 5.0
CONTACTS = 20_000
EXPORTS = ("alpha", "beta", "gamma")


@pytest.fixture
def sandbox() -> Iterator[SandboxProcess]:
    with started_sandbox_process(
        API_KEY,
        *("--list", "1:Alpha", "--list", "2:Beta", "--list", "3:Gamma"),
        *("--time-scale", str(SCALE)),
    ) as sb:
        yield sb


@pytest.mark.serial
def test_three_orchestrations_on_one_account_are_never_throttled(
    tmp_path: Path, sandbox: SandboxProcess
) -> None:
    store = LocalStore(tmp_path / "store")
    hosts = []
    runtime = make_runtime(store, width=4, time_scale=SCALE, chunk_batches=10)
    for list_id, name in enumerate(EXPORTS, start=1):
        seed(
            store,
            hostname=f"127.0.0.1:{sandbox.port}",
            export=name,
            segment=f"snapshots/{name}/",
            list_id=str(list_id),
        )
        path = f"snapshots/{name}/a.csv"
        store.write_bytes(path, snapshot_csv(CONTACTS))
        request = runtime.engine.new_run(name, snapshot=runtime.engine.store_snapshot(path))
        data = orch.run_input(request, 4).to_dict()
        iid = instance_id(name, request.snapshot_identity)
        hosts.append(DurableHost(user_function(orch.RUN_ORCHESTRATOR), data, instance_id=iid))
    with use_runtime(runtime):
        replays = Driver(hosts).run()
    stats = sandbox.stats()
    assert stats["throttled"] == 0, stats
    assert stats["peak_requests_per_second"] <= 5
    assert stats["bulk_requests_per_minute_peak"] <= 100
    expected = {f"person{i}@example.com" for i in range(CONTACTS)}
    for list_id, (name, replay) in enumerate(zip(EXPORTS, replays, strict=True), start=1):
        assert replay.done and replay.failed is None, replay.failed
        report = read_record(store, runs.report_path(name, replay.output["run_id"]), RunReport)
        assert report is not None and report.status == "completed", report
        assert report.reconciles() is True
        assert sandbox.members(str(list_id)) == expected
