"""End to end without a Functions host: a snapshot blob lands in a real Azurite, the blob-trigger
function starts the run, and the orchestration is stepped through the SDK's replay engine with
the real activities (real engine, real blob store, the real ActiveCampaign client against the
in-process sandbox) until the contacts are on the list and the report is in blob storage."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest

from bench.durable.app import user_function
from bench.durable.driver import Driver
from bench.durable.host import DurableHost
from blueprints import orchestration as orch
from blueprints import triggers
from blueprints.runtime import use_runtime
from exporter.adapters.blob_store import BlobStore
from sandbox import Sandbox, SandboxConfig
from tests.azure.support import fresh_blob_store
from tests.functions.fake_durable import (
    API_KEY,
    FakeDurableClient,
    blob_event,
    make_runtime,
    seed,
    snapshot_csv,
)

pytestmark = pytest.mark.azurite

TIME_SCALE = 50.0
CONTACTS = 600
SNAPSHOT = "snapshots/high-value/2026-01-05.csv"


@pytest.fixture
def store(azurite: str) -> Iterator[BlobStore]:
    with fresh_blob_store(azurite) as blob_store:
        yield blob_store


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(
        SandboxConfig(api_key=API_KEY, lists={"1": "Newsletter"}, time_scale=TIME_SCALE)
    ) as sb:
        yield sb


def test_a_snapshot_blob_ends_up_on_the_list_with_a_report_in_blob_storage(
    store: BlobStore, sandbox: Sandbox
) -> None:
    seed(store, hostname=sandbox.base_url.removeprefix("http://"), list_id="1")
    # One batch per chunk, so 600 contacts make three chunks: two waves at width 2.
    runtime = make_runtime(store, width=2, time_scale=TIME_SCALE, chunk_batches=1)
    store.write_bytes(SNAPSHOT, snapshot_csv(CONTACTS))
    client = FakeDurableClient()

    with use_runtime(runtime):
        blob = blob_event(store.container_prefix + SNAPSHOT)
        asyncio.run(triggers.snapshot_blob_trigger(blob, client))
        [(name, iid, data)] = client.started()
        assert name == orch.RUN_ORCHESTRATOR

        host = DurableHost(user_function(orch.RUN_ORCHESTRATOR), data, instance_id=iid)
        driver = Driver([host])
        [replay] = driver.run(max_rounds=50)
        rounds = [names for [names] in driver.rounds if names]

    assert replay.failed is None, replay.failed
    assert replay.done
    assert rounds == [
        ["prepare_run"],
        ["read_list_members"],
        ["push_chunk", "push_chunk"],
        ["confirm_chunk", "confirm_chunk", "push_chunk"],
        ["confirm_chunk"],
        ["read_list_members"],
        ["finalize_run"],
    ]
    run_id = data["request"]["run_id"]
    assert replay.output["status"] == "completed"
    assert replay.custom_status["confirmed"] == CONTACTS

    expected = {f"person{i}@example.com" for i in range(CONTACTS)}
    assert sandbox.list_members("1") == expected

    report = json.loads(store.read_bytes(f"runs/weekly/{run_id}/report.json"))
    assert report["status"] == "completed"
    assert (report["rows_read"], report["confirmed"], report["failed"]) == (CONTACTS, CONTACTS, 0)
    assert report["reconciles"] is True

    # The blob event delivered again once the run is done starts nothing new.
    client.set(iid, "Completed", output=replay.output)
    with use_runtime(runtime):
        asyncio.run(triggers.snapshot_blob_trigger(blob, client))
    assert len(client.started()) == 1
