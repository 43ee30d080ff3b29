"""Stored records are typed and versioned, and a store written before that still works: its
runs are listed, a finished run re-finalizes to the very report it stored, and a prepared run
that stopped is resumed and completes."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from exporter.management.repository import ConfigRepository
from exporter.management.secrets import LocalSecretProvider
from exporter.reading.refs import SnapshotFile
from exporter.run.engine import Engine
from exporter.run.records import GROUP_SIZE, RunInput, RunRequest
from exporter.run.report import RunReport
from exporter.settings import HostPolicy
from exporter.storage import runs
from exporter.storage.records import (
    SCHEMA_VERSION,
    ActiveRun,
    CommitMarker,
    ConfirmedRecord,
    LastRun,
    Manifest,
    RecordError,
    SentRecord,
    read_record,
    write_record,
)
from exporter.storage.store import LocalStore
from sandbox import Field, Sandbox, SandboxConfig
from tests.integration.support import CONNECTION, EXPORT, KEY, KEY_VAR, LIST

FIXTURE = Path(__file__).parent / "fixtures" / "runs_v0"
FINISHED = "20261205T013228Z-e43d489d"
PREPARED = "20261205T013228Z-5cf9fe4b"


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    fields = [Field("1", "City"), Field("2", "Birthday", "date"), Field("3", "Tier", "dropdown")]
    config = SandboxConfig(
        api_key=KEY, lists={LIST: "Newsletter"}, fields=fields, time_scale=50.0, seed=1
    )
    with Sandbox(config) as sb:
        yield sb


@pytest.fixture
def old_store(tmp_path: Path, sandbox: Sandbox) -> LocalStore:
    home = tmp_path / "home"
    shutil.copytree(FIXTURE, home)
    store = LocalStore(home)
    repo = ConfigRepository(store)
    connection, etag = repo.get_connection(CONNECTION)
    moved = connection.model_copy(update={"hostname": f"127.0.0.1:{sandbox.port}"})
    repo.put_connection(moved, if_match=etag)  # the sandbox listens on another port today
    return store


def engine_over(store: LocalStore) -> Engine:
    return Engine(
        store,
        LocalSecretProvider({KEY_VAR: KEY}),
        host_policy=HostPolicy(allow_loopback_sandbox=True),
        time_scale=50.0,
        chunk_batches=1,
    )


def old_requests() -> dict[str, RunRequest]:
    data = json.loads((FIXTURE / "requests.json").read_text())
    return {k: RunRequest.from_dict(v) for k, v in data.items()}


def test_old_runs_are_listed(old_store: LocalStore) -> None:
    listed = {r.run_id: r.status for r in engine_over(old_store).list_runs(EXPORT)}
    assert listed == {FINISHED: "completed", PREPARED: "running"}


def test_an_old_finished_run_refinalizes_to_the_report_it_stored(old_store: LocalStore) -> None:
    engine = engine_over(old_store)
    stored = json.loads(old_store.read_bytes(runs.report_path(EXPORT, FINISHED)))
    old_store.delete(runs.report_path(EXPORT, FINISHED))
    again = engine.finalize(old_requests()["finished"]).to_dict()
    for key in ("status", "rows_read", "confirmed", "rejected", "failed", "sent", "batches"):
        assert again[key] == stored[key], key
    assert again["status"] == "completed"


def test_an_old_prepared_run_resumes_and_completes(old_store: LocalStore, sandbox: Sandbox) -> None:
    engine = engine_over(old_store)
    prepared = old_requests()["prepared"]
    resumed = engine.new_run(EXPORT, snapshot=engine.store_snapshot(prepared.snapshot.path))
    assert resumed.run_id == PREPARED  # found through the old active-run record
    report = engine.run(resumed)
    assert report.status == "completed", report.summary()
    assert report.reconciliation_problems() == []
    assert report.confirmed == 100
    assert sandbox.request_counts().get("POST /import/bulk_import", 0) >= 1


def test_an_old_report_loads_through_the_typed_report(old_store: LocalStore) -> None:
    path = runs.report_path(EXPORT, FINISHED)
    raw = json.loads(old_store.read_bytes(path))
    assert "schema_version" not in raw  # version 0 on disk, with the derived "reconciles"
    report = read_record(old_store, path, RunReport)
    assert report is not None and report.schema_version == SCHEMA_VERSION
    assert (report.status, report.rows_read, report.confirmed) == ("completed", 601, 600)
    assert [b.confirmed for b in report.batches] == [250, 250, 100]
    assert report.reconciles() and report.timings["total"] == 0.13
    # The same JSON comes out (callers of `runs --json` and the HTTP status see no change).
    assert report.to_dict() == {**raw, "schema_version": SCHEMA_VERSION}
    assert engine_over(old_store).get_run(EXPORT, FINISHED) == report


def test_an_old_run_request_loads_with_a_typed_snapshot() -> None:
    raw = json.loads((FIXTURE / "requests.json").read_text())["finished"]
    request = RunRequest.from_dict(raw)
    snapshot = request.snapshot
    assert (snapshot.kind, snapshot.location) == ("csv", runs.STORE)
    assert snapshot.path == "snapshots/newsletter/2026-11-01.csv"
    assert snapshot.files == (SnapshotFile(snapshot.path, 46585, '"6de1f6f6d001ff0a49ade0cd"'),)
    assert snapshot.ref.identity == request.snapshot_identity  # the very snapshot it named
    # Written back in the shape it was read (the orchestration history holds that shape).
    assert request.to_dict()["snapshot"] == raw["snapshot"]
    assert RunRequest.from_dict(request.to_dict()) == request


def test_a_snapshot_of_an_unknown_kind_or_location_is_refused() -> None:
    raw = json.loads((FIXTURE / "requests.json").read_text())["finished"]
    for key, value in (("kind", "parquet"), ("location", "https://elsewhere")):
        with pytest.raises(ValidationError, match=f"snapshot.{key}"):
            RunRequest.from_dict({**raw, "snapshot": {**raw["snapshot"], key: value}})


OLD_RUN_INPUT: dict[str, Any] = {
    # An export run orchestration's input as the code before RunInput was a record wrote it
    # (Durable keeps it in the instance's history: a run in flight across an upgrade replays
    # from it). The request inside is a version 0 request.
    "request": {
        "export": "newsletter",
        "run_id": "20261205T013228Z-e43d489d",
        "snapshot": {
            "kind": "csv",
            "path": "snapshots/newsletter/2026-11-01.csv",
            "files": [
                {
                    "path": "snapshots/newsletter/2026-11-01.csv",
                    "size": 46585,
                    "etag": '"6de1f6f6d001ff0a49ade0cd"',
                }
            ],
            "modified": "2026-12-05T01:32:28.157268+00:00",
            "entity": None,
            "location": "store",
        },
        "snapshot_identity": "e43d489d915a4de485abc846d6009cac",
        "options": {"dry_run": False, "full_resync": False, "allow_shrink": False},
        "requested_by": "timer",
        "requested_at": "2026-12-05T01:32:28.158320+00:00",
    },
    "wave_width": 9,
    "group_size": 50,
    "account": "acme.api-us1.com",
    "member": "newsletter-e43d489d915a4de485abc846d6009cac",
}


def test_an_orchestration_input_written_before_it_was_a_record_decodes() -> None:
    run = RunInput.from_dict(OLD_RUN_INPUT)
    assert (run.export, run.run_id) == ("newsletter", FINISHED)
    assert run.wave_width == 5  # clamped to the account's workers, as before
    assert (run.group_size, run.account) == (50, "acme.api-us1.com")
    assert run.member == OLD_RUN_INPUT["member"]
    assert run.request == old_requests()["finished"].model_copy(update={"requested_by": "timer"})
    assert RunInput.from_dict(run.to_dict()) == run
    # The one decoder of an instance's input: as the host lists it (data or JSON text), and a
    # run group's input ({"run": ..., "chunks": ...}) when asked for groups.
    assert RunInput.of_instance(json.dumps(OLD_RUN_INPUT)) == run
    group = {"run": OLD_RUN_INPUT, "chunks": ["runs/x/chunks/00000.jsonl"]}
    assert RunInput.of_instance(group, groups=True) == run
    assert RunInput.of_instance(group) is None


def test_the_oldest_orchestration_input_takes_the_defaults() -> None:
    oldest = {"request": OLD_RUN_INPUT["request"], "wave_width": 2}  # before groups and accounts
    run = RunInput.from_dict(oldest)
    assert (run.wave_width, run.group_size, run.account, run.member) == (2, GROUP_SIZE, "", "")


@pytest.mark.parametrize(
    "value",
    [
        {**OLD_RUN_INPUT, "group_size": 0},
        {**OLD_RUN_INPUT, "request": {"export": "newsletter"}},
        {**OLD_RUN_INPUT, "request": {**OLD_RUN_INPUT["request"], "run_id": "../x"}},
        {"chunks": []},
        "not json",
        None,
    ],
)
def test_what_is_not_a_run_input_is_none(value: object) -> None:
    assert RunInput.of_instance(value, groups=True) is None


# --- the codec ---------------------------------------------------------------------------------


def test_records_written_before_versioning_load_as_the_current_version() -> None:
    manifest = json.loads(
        (FIXTURE / "runs" / EXPORT / FINISHED / "prepared.json").read_text(encoding="utf-8")
    )
    assert "schema_version" not in manifest  # version 0 on disk
    loaded = Manifest.from_dict(manifest)
    assert loaded.schema_version == SCHEMA_VERSION
    assert loaded.counts.rows_read == 601 and loaded.chunks[0].kind == "contacts"
    assert Manifest.from_dict(loaded.to_dict()) == loaded


def test_a_record_from_a_newer_exporter_is_refused_with_its_file_named(
    old_store: LocalStore,
) -> None:
    path = runs.last_run_path(EXPORT)
    data = json.loads(old_store.read_bytes(path))
    old_store.write_bytes(path, json.dumps({**data, "schema_version": 99}).encode())
    with pytest.raises(RecordError, match=r"last_run\.json.*newer exporter"):
        read_record(old_store, path, LastRun)


def test_a_damaged_record_names_its_file_and_field(old_store: LocalStore) -> None:
    path = runs.sent_path(EXPORT, FINISHED, runs.chunk_path(EXPORT, FINISHED, 0))
    data = json.loads(old_store.read_bytes(path))
    del data["batches"][0]["batch_id"]
    old_store.write_bytes(path, json.dumps(data).encode())
    with pytest.raises(RecordError, match=r"00000\.json.*batches\.0\.batch_id"):
        read_record(old_store, path, SentRecord)


def test_every_stored_record_round_trips_with_its_version(old_store: LocalStore) -> None:
    kinds = {
        runs.manifest_path(EXPORT, FINISHED): Manifest,
        runs.report_path(EXPORT, FINISHED): RunReport,
        runs.last_run_path(EXPORT): LastRun,
        runs.active_run_path(EXPORT): ActiveRun,
        runs.commit_path(EXPORT, FINISHED): CommitMarker,
        runs.sent_path(EXPORT, FINISHED, runs.chunk_path(EXPORT, FINISHED, 1)): SentRecord,
        runs.confirmed_path(EXPORT, FINISHED, runs.chunk_path(EXPORT, FINISHED, 1)): (
            ConfirmedRecord
        ),
    }
    for path, kind in kinds.items():
        record = read_record(old_store, path, kind)
        assert record is not None, path
        write_record(old_store, path, record)
        again = json.loads(old_store.read_bytes(path))
        assert again["schema_version"] == SCHEMA_VERSION
        assert read_record(old_store, path, kind) == record
