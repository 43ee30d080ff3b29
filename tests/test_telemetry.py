"""Run telemetry through the real OpenTelemetry SDK with in-memory exporters: every run's log
records carry export, run, phase and connection (and the account) as attributes — what
Application Insights shows as customDimensions — and the run's metrics add up to its report.

Runs go over real HTTP to the ActiveCampaign sandbox, through the phases the Durable
orchestration's activities call (and, once, the command line's in-process pipeline).
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import metrics
from opentelemetry.instrumentation.logging.handler import LoggingHandler
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from blueprints import telemetry as edge
from exporter import telemetry
from exporter.run import sweep
from exporter.run.report import RunReport
from exporter.storage.runs import FINAL_STATUSES
from sandbox import Faults, Sandbox
from tests.integration.support import CONNECTION, EXPORT, World, contact_row, make_world
from tests.integration.support import sandbox_config as make_sandbox_config

ROOT = Path(__file__).resolve().parent.parent
SCALE = 50.0


@pytest.fixture(scope="module")
def metric_reader() -> InMemoryMetricReader:
    """The process's meter provider (OpenTelemetry allows one): an in-memory reader."""
    reader = InMemoryMetricReader()
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    assert isinstance(metrics.get_meter_provider(), MeterProvider), "a provider was set before"
    return reader


@pytest.fixture
def log_exporter() -> Iterator[InMemoryLogRecordExporter]:
    """The ``exporter`` logger's records through an OpenTelemetry handler, as the edge wires it."""
    exporter = InMemoryLogRecordExporter()
    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    handler = LoggingHandler(logger_provider=provider)
    logger = logging.getLogger(edge.LOGGER)
    level = logger.level
    logger.addHandler(handler)
    try:
        assert edge.attach_dimensions(logger) == 1
        yield exporter
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        provider.shutdown()


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(make_sandbox_config(SCALE, seed=3)) as sb:
        yield sb


def _world(tmp_path: Path, sb: Sandbox) -> World:
    return make_world(tmp_path, f"127.0.0.1:{sb.port}", time_scale=SCALE, chunk_batches=1)


def _records(exporter: InMemoryLogRecordExporter, run_id: str) -> list[Any]:
    found = [r.log_record for r in exporter.get_finished_logs()]
    return [r for r in found if (r.attributes or {}).get("run_id") == run_id]


def _points(reader: InMemoryMetricReader, run_id: str) -> dict[str, list[Any]]:
    """Data points of each metric whose attributes name the run."""
    out: dict[str, list[Any]] = {}
    data = reader.get_metrics_data()
    assert data is not None
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    if point.attributes.get("run_id") == run_id:
                        out.setdefault(metric.name, []).append(point)
    return out


def _sum(points: list[Any], **attrs: str) -> int:
    return sum(p.value for p in points if all(p.attributes.get(k) == v for k, v in attrs.items()))


def test_every_run_record_carries_the_run_dimensions_and_the_metrics_match_the_report(
    tmp_path: Path,
    sandbox: Sandbox,
    log_exporter: InMemoryLogRecordExporter,
    metric_reader: InMemoryMetricReader,
) -> None:
    sandbox.set_faults(Faults(http_429_rate=0.15, retry_after=0.2))
    world = _world(tmp_path, sandbox)
    rows = [contact_row(i) for i in range(600)] + [contact_row(900, email="broken@")]
    req = world.request(world.write_csv(rows))
    account = f"127.0.0.1:{sandbox.port}"
    log_exporter.clear()
    # The phases as the orchestration's activities call them, one worker at a time.
    engine = world.engine
    prep = engine.prepare(req)
    engine.read_list_members(req, share=0.5)
    for chunk in prep.chunks:
        engine.push_chunk(req, chunk, share=0.5)
    for chunk in prep.chunks:
        engine.confirm_chunk(req, chunk, share=0.5)
    engine.mark_list_sent(req)
    report = engine.finalize(req)
    assert report.status == "completed" and report.confirmed == 600, report.summary()
    throttles = sandbox.injected_fault_counts().get("http_429", 0)
    assert throttles > 0, sandbox.injected_fault_counts()

    records = [r.log_record for r in log_exporter.get_finished_logs()]
    assert records, "no record of the run reached the OpenTelemetry handler"
    for record in records:
        attrs = dict(record.attributes or {})
        assert attrs.get("run_id") == req.run_id, (record.body, attrs)
        assert attrs["export"] == EXPORT, record.body
        assert attrs["phase"] in {"prepare", "members", "push", "confirm", "finalize"}
        # Every phase learns its connection; only a run stopped before prepare has none.
        assert attrs["connection"] == CONNECTION, (record.body, attrs)
        assert attrs["account"] == account
        # No personal data: the snapshot's addresses appear nowhere (masked ones may).
        text = json.dumps([str(record.body), attrs], default=str)
        assert "example.com" not in text, text
    phases = {dict(r.attributes)["phase"] for r in records}
    assert {"prepare", "finalize"} <= phases
    started = [r for r in records if dict(r.attributes).get("event") == telemetry.RUN_STARTED]
    ended = [r for r in records if dict(r.attributes).get("event") == telemetry.RUN_ENDED]
    assert len(started) == 1 and len(ended) == 1
    end = dict(ended[0].attributes)
    assert end["status"] == "completed" and end["confirmed"] == 600 and end["rejected"] == 1
    assert ended[0].severity_text == "INFO"

    points = _points(metric_reader, req.run_id)
    contacts = points["exporter.contacts"]
    assert _sum(contacts, outcome="read") == report.rows_read == 601
    assert _sum(contacts, outcome="sent") == report.sent
    assert _sum(contacts, outcome="confirmed") == report.confirmed
    assert _sum(contacts, outcome="rejected") == report.rejected
    assert _sum(contacts, outcome="failed") == report.failed
    assert {p.attributes["account"] for p in contacts} == {account}
    assert _sum(points["exporter.bulk_requests"]) == report.requests["bulk_import"] >= 3
    assert _sum(points["exporter.runs"], status="completed") == 1
    # Every throttle the sandbox answered was counted for the account, as it arrived.
    assert _sum(points["exporter.throttled_answers"], account=account) == throttles
    (budget,) = points["exporter.budget_used"]
    assert budget.count == 1 and 0 < budget.sum == pytest.approx(telemetry.budget_used(report))
    durations = {p.attributes["phase"]: p for p in points["exporter.phase.duration"]}
    assert set(durations) == set(report.timings) >= {"prepare", "push", "confirm", "total"}
    assert durations["total"].sum == pytest.approx(report.timings["total"])


def test_the_command_line_pipeline_tags_records_in_both_of_its_threads(
    tmp_path: Path,
    sandbox: Sandbox,
    log_exporter: InMemoryLogRecordExporter,
    metric_reader: InMemoryMetricReader,
) -> None:
    sandbox.set_faults(Faults(http_429_rate=0.4, retry_after=0.2))
    world = _world(tmp_path, sandbox)
    req = world.request(world.write_csv([contact_row(i) for i in range(1000)]))
    log_exporter.clear()
    report = world.engine.run(req)
    assert report.status == "completed", report.summary()
    records = [r.log_record for r in log_exporter.get_finished_logs()]
    assert {dict(r.attributes).get("run_id") for r in records} == {req.run_id}
    assert {dict(r.attributes)["connection"] for r in records} == {CONNECTION}
    assert {"prepare", "finalize"} <= {dict(r.attributes)["phase"] for r in records}
    points = _points(metric_reader, req.run_id)
    throttles = sandbox.injected_fault_counts().get("http_429", 0)
    # Pushes (this thread) and confirmations (the other) are both counted for the run.
    assert throttles > 0 and _sum(points["exporter.throttled_answers"]) == throttles


def test_a_run_closed_by_the_sweep_ends_terminated_with_its_dimensions(
    tmp_path: Path, log_exporter: InMemoryLogRecordExporter, metric_reader: InMemoryMetricReader
) -> None:
    # Prepared, then its orchestration was terminated: the timer's sweep writes its report.
    world = make_world(tmp_path, "acme.api-us1.com")
    req = world.request(world.write_csv([contact_row(i) for i in range(10)]))
    world.engine.prepare(req)
    (active,) = sweep.unfinished_runs(world.engine)
    log_exporter.clear()
    report = sweep.close(world.engine, active, "terminated")
    assert report.status == "terminated"
    records = [r.log_record for r in log_exporter.get_finished_logs()]
    assert records and all(dict(r.attributes)["run_id"] == req.run_id for r in records)
    (ended,) = [r for r in records if dict(r.attributes).get("event") == telemetry.RUN_ENDED]
    attrs = dict(ended.attributes)
    assert attrs["status"] == "terminated" and ended.severity_text == "WARN"
    assert (attrs["connection"], attrs["account"]) == (CONNECTION, "acme.api-us1.com")
    runs_ended = _points(metric_reader, req.run_id)["exporter.runs"]
    assert _sum(runs_ended, status="terminated", account="acme.api-us1.com") == 1


@pytest.mark.parametrize("status", sorted(FINAL_STATUSES))
def test_a_run_ending_badly_logs_a_warning_or_an_error(
    status: str, log_exporter: InMemoryLogRecordExporter
) -> None:
    report = RunReport(
        export=EXPORT, run_id=f"r-{status}", snapshot="s", started_at="", status=status
    )
    with telemetry.run_scope(export=EXPORT, run_id=report.run_id, phase="finalize"):
        telemetry.run_ended(report)
    (record,) = _records(log_exporter, report.run_id)
    attrs = dict(record.attributes)
    assert attrs["event"] == telemetry.RUN_ENDED and attrs["status"] == status
    expected = "ERROR" if status == "failed" else "INFO"
    if status in telemetry.BAD_ENDINGS and status != "failed":
        expected = "WARN"
    assert record.severity_text == expected
    assert str(record.body) == f"export run {status}: {EXPORT} run {report.run_id}"


def test_the_bad_endings_are_every_final_status_nobody_chose() -> None:
    assert {
        "failed",
        "completed_with_failures",
        "guarded",
        "terminated",
        "abandoned",
    } == telemetry.BAD_ENDINGS
    assert telemetry.GOOD_ENDINGS <= FINAL_STATUSES


def test_the_scope_is_per_context_and_never_overrides_extra() -> None:
    assert telemetry.current() == {}
    telemetry.bind_run(connection="c")  # outside a run: nothing leaks
    assert telemetry.current() == {}
    record = logging.LogRecord("exporter.x", logging.INFO, "f", 1, "m", None, None)
    record.export = "explicit"
    with telemetry.run_scope(export="e", run_id="r", phase="push"):
        telemetry.bind_run(connection="c")
        assert telemetry.current() == {
            "export": "e",
            "run_id": "r",
            "phase": "push",
            "connection": "c",
        }
        assert telemetry.RunDimensions().filter(record)
    assert telemetry.current() == {}
    assert (record.export, record.run_id, record.connection) == ("explicit", "r", "c")  # type: ignore[attr-defined]


# --- the Functions edge ---------------------------------------------------------------------


def test_without_a_connection_string_nothing_is_configured() -> None:
    logger = logging.getLogger(edge.LOGGER)
    before = list(logger.handlers)
    assert edge.settings({}) is None
    assert edge.settings({edge.CONNECTION_STRING: "  "}) is None
    assert edge.configure({"AZURE_CLIENT_ID": "x"}) is False
    assert logger.handlers == before


CLIENT_ID = "11111111-2222-3333-4444-555555555555"


def test_settings_turn_sampling_and_url_instrumentation_off_and_use_the_app_identity() -> None:
    env = {
        edge.CONNECTION_STRING: "InstrumentationKey=00000000-0000-0000-0000-000000000000",
        edge.AUTHENTICATION_STRING: f"ClientId={CLIENT_ID};Authorization=AAD",
    }
    options = edge.settings(env)
    assert options is not None
    assert options["sampling_ratio"] == 1.0
    assert options["enable_trace_based_sampling_for_logs"] is False
    assert options["logger_name"] == "exporter"
    disabled = options["instrumentation_options"]
    assert all(disabled[name] == {"enabled": False} for name in ("requests", "urllib3", "httpx"))
    assert type(options["credential"]).__name__ == "ManagedIdentityCredential"
    assert edge.entra_client_id("Authorization=AAD") == ""
    assert edge.entra_client_id("") is None
    assert "credential" not in (edge.settings({edge.CONNECTION_STRING: "x=y"}) or {})


CONFIGURE = """
import json, logging
from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from blueprints import telemetry
from exporter.telemetry import RunDimensions
env = {"APPLICATIONINSIGHTS_CONNECTION_STRING":
       "InstrumentationKey=00000000-0000-0000-0000-000000000000;"
       "IngestionEndpoint=http://127.0.0.1:9/"}
first = telemetry.configure(env)
second = telemetry.configure(env)
logger = logging.getLogger("exporter")
handlers = [h for h in logger.handlers if any(isinstance(f, RunDimensions) for f in h.filters)]
print(json.dumps({"first": first, "second": second, "handlers": len(handlers),
                  "handler_levels": [h.level for h in handlers],
                  "total": len(logger.handlers), "level": logger.getEffectiveLevel(),
                  "sdk_meter": isinstance(metrics.get_meter_provider(), MeterProvider)}))
"""


def test_with_a_connection_string_the_distro_exports_the_core_with_its_dimensions(
    tmp_path: Path,
) -> None:
    # In a child process: the distro sets process-wide providers.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("APPLICATIONINSIGHTS", "OTEL"))}
    env["TMPDIR"] = str(tmp_path)  # the distro's offline retry storage
    done = subprocess.run(
        [sys.executable, "-c", CONFIGURE],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {
        "first": True,
        "second": True,
        "handlers": 1,
        "handler_levels": [logging.INFO],
        "total": 1,
        "level": logging.INFO,
        "sdk_meter": True,
    }


def _requirement_names(path: Path) -> set[str]:
    names = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            names.add(re.split(r"[<>=!~\[; ]", line, maxsplit=1)[0].lower())
    return names


def test_the_functions_app_deploys_what_telemetry_imports() -> None:
    # requirements.txt is the Functions app's (deployed); the SDK's test exporters are dev-only.
    runtime = _requirement_names(ROOT / "requirements.txt")
    assert {"azure-monitor-opentelemetry", "opentelemetry-api"} <= runtime
    assert "opentelemetry-sdk" in _requirement_names(ROOT / "requirements-dev.txt")


@pytest.mark.azurite
def test_a_run_driven_through_the_real_orchestration_tags_every_activitys_records(
    azurite: str,
    log_exporter: InMemoryLogRecordExporter,
    metric_reader: InMemoryMetricReader,
) -> None:
    """As Azure drives a run: the blob trigger starts it, the Durable SDK's replay engine steps
    the orchestration, and the real activities run against Azurite and the sandbox."""
    import asyncio

    from bench.durable.app import user_function
    from bench.durable.driver import Driver
    from bench.durable.host import DurableHost
    from blueprints import orchestration as orch
    from blueprints import triggers
    from blueprints.runtime import use_runtime
    from sandbox import SandboxConfig
    from tests.azure.support import fresh_blob_store
    from tests.functions.fake_durable import (
        API_KEY,
        FakeDurableClient,
        blob_event,
        make_runtime,
        seed,
        snapshot_csv,
    )

    snapshot = "snapshots/high-value/2026-02-01.csv"
    config = SandboxConfig(api_key=API_KEY, lists={"1": "Newsletter"}, time_scale=SCALE)
    with fresh_blob_store(azurite) as store, Sandbox(config) as sb:
        account = sb.base_url.removeprefix("http://")
        seed(store, hostname=account, list_id="1")
        runtime = make_runtime(store, width=2, time_scale=SCALE, chunk_batches=1)
        store.write_bytes(snapshot, snapshot_csv(300))
        client = FakeDurableClient()
        log_exporter.clear()
        with use_runtime(runtime):
            blob = blob_event(store.container_prefix + snapshot)
            asyncio.run(triggers.snapshot_blob_trigger(blob, client))
            [(_name, iid, data)] = client.started()
            host = DurableHost(user_function(orch.RUN_ORCHESTRATOR), data, instance_id=iid)
            [replay] = Driver([host]).run(max_rounds=50)
    assert replay.failed is None and replay.done, replay.failed
    run_id = data["request"]["run_id"]
    records = _records(log_exporter, run_id)
    phases = {dict(r.attributes)["phase"] for r in records}
    assert {"prepare", "push", "confirm", "finalize"} <= phases, phases
    for record in records:
        attrs = dict(record.attributes or {})
        if attrs["phase"] in ("push", "confirm"):
            assert (attrs["connection"], attrs["account"]) == ("shop", account), attrs
    ended = [r for r in records if dict(r.attributes).get("event") == telemetry.RUN_ENDED]
    assert [dict(r.attributes)["status"] for r in ended] == ["completed"]
    points = _points(metric_reader, run_id)
    assert _sum(points["exporter.contacts"], outcome="confirmed", account=account) == 300
