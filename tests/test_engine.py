"""The engine's phases without a network: prepare, the manifest, dry runs, the shrink guard,
finalize's accounting and state commit, resumption. (Sending is tested against the sandbox in
``tests/integration``.)"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from exporter.errors import ConflictError, GuardError, InputError, RunConflict
from exporter.incremental import state as state_mod
from exporter.incremental import update as update_mod
from exporter.planning.chunks import decode_batch_line
from exporter.planning.contacts import PreparedContact
from exporter.run.engine import (
    ChunkSummary,
    PrepareResult,
    RunOptions,
    RunRequest,
    instance_id,
)
from exporter.storage import runs
from exporter.storage.records import Manifest, read_record
from tests.integration.support import COLUMNS, EXPORT, World, contact_row, make_world


@pytest.fixture
def world(tmp_path: Path) -> World:
    return make_world(tmp_path)


def _csv_rows(world: World, path: str) -> list[dict[str, str]]:
    text = world.store.read_bytes(path).decode("utf-8-sig")
    return list(csv.DictReader(io.StringIO(text)))


def _chunk_contacts(world: World, chunks: list[str]) -> list[PreparedContact]:
    out = []
    for chunk in chunks:
        for line in world.store.read_bytes(chunk).decode().splitlines():
            out.extend(decode_batch_line(line).contacts)
    return out


def test_prepare_dedupes_case_insensitively_first_occurrence_wins(world: World) -> None:
    rows = [contact_row(1), contact_row(2, email="Person1@Example.COM"), contact_row(3)]
    req = world.request(world.write_csv(rows))
    result = world.engine.prepare(req)
    assert result.counts["duplicates"] == 1
    assert result.contacts_to_send == 2
    sent = _chunk_contacts(world, result.chunks)
    assert [c.row for c in sent] == [1, 3]  # row 2 repeated row 1's email
    rejected = _csv_rows(world, runs.rejected_path(EXPORT, req.run_id))
    assert [(r["row"], r["reason"]) for r in rejected] == [("2", "duplicate")]


def test_prepare_rejects_with_reasons(world: World) -> None:
    rows = [
        contact_row(1),
        contact_row(2, email="not-an-email"),
        contact_row(3, email=""),
        [*contact_row(4)[:5], "31.02.1980", "Gold"],
    ]
    req = world.request(world.write_csv(rows))
    result = world.engine.prepare(req)
    assert result.counts["rejected"] == 3
    manifest = read_record(world.store, runs.manifest_path(EXPORT, req.run_id), Manifest)
    assert manifest is not None
    assert manifest.rejected_by_reason == {
        "invalid_email": 1,
        "missing_email": 1,
        "invalid_field_value": 1,
    }
    rejected = _csv_rows(world, runs.rejected_path(EXPORT, req.run_id))
    assert {r["reason"] for r in rejected} == {
        "invalid_email",
        "missing_email",
        "invalid_field_value",
    }
    assert next(r for r in rejected if r["reason"] == "invalid_email")["Email"] == "not-an-email"


def test_prepare_writes_chunks_of_chunk_batches_batches(tmp_path: Path) -> None:
    world = make_world(tmp_path, chunk_batches=2)
    req = world.request(world.write_csv([contact_row(i) for i in range(600)]))
    result = world.engine.prepare(req)
    assert len(result.chunks) == 2
    lines = [world.store.read_bytes(c).decode().splitlines() for c in result.chunks]
    assert [len(x) for x in lines] == [2, 1]
    batches = [decode_batch_line(line) for chunk in lines for line in chunk]
    assert [len(b.contacts) for b in batches] == [250, 250, 100]
    assert [b.index for b in batches] == [0, 1, 2]
    assert result.contacts_to_send == 600


def test_prepare_is_idempotent_through_its_manifest(world: World) -> None:
    req = world.request(world.write_csv([contact_row(i) for i in range(10)]))
    first = world.engine.prepare(req)
    chunk_etag = world.store.info(first.chunks[0]).etag
    again = world.engine.prepare(req)
    assert again == first
    assert world.store.info(first.chunks[0]).etag == chunk_etag
    # Everything the other phases need is in JSON-serialisable shapes
    assert PrepareResult.from_dict(json.loads(json.dumps(first.to_dict()))) == first
    assert RunRequest.from_dict(json.loads(json.dumps(req.to_dict()))) == req


def test_dry_run_plans_and_sends_nothing(world: World) -> None:
    rows = [contact_row(1), contact_row(2, email="bad"), contact_row(1)]
    req = world.request(world.write_csv(rows), dry_run=True)
    result = world.engine.prepare(req)
    assert result.dry_run and result.chunks == []
    plan = _csv_rows(world, runs.plan_path(EXPORT, req.run_id))
    # rejections are written as they are found, sends a few thousand at a time
    assert sorted((p["row"], p["action"]) for p in plan) == [
        ("1", "add"),
        ("2", "reject"),
        ("3", "reject"),
    ]
    add = next(p for p in plan if p["action"] == "add")
    assert '"email":"person1@example.com"' in add["message"]
    report = world.engine.finalize(req)
    assert report.status == "dry_run" and report.planned == 1 and report.reconciles()
    assert state_mod.load(world.store, EXPORT)[1] is None  # no state written


def _confirm_everything(world: World, req: RunRequest, result: PrepareResult) -> None:
    """Write push/confirm records as if ActiveCampaign confirmed every batch."""
    for chunk in result.chunks:
        batches = [
            decode_batch_line(x) for x in world.store.read_bytes(chunk).decode().splitlines()
        ]
        sent = [
            {
                "index": b.index,
                "batch_id": f"b{b.index}",
                "contacts": len(b.contacts),
                "sent": len(b.contacts),
                "rejected": [],
            }
            for b in batches
        ]
        confirmed = [
            {
                "index": b.index,
                "batch_id": f"b{b.index}",
                "status": "completed",
                "resubmits": 0,
                "contacts": len(b.contacts),
                "confirmed": len(b.contacts),
                "failed": [],
                "rejected": [],
            }
            for b in batches
        ]
        n = sum(len(b.contacts) for b in batches)
        for path, items, confirmed_n in (
            (runs.sent_path(EXPORT, req.run_id, chunk), sent, 0),
            (runs.confirmed_path(EXPORT, req.run_id, chunk), confirmed, n),
        ):
            world.store.write_bytes(
                path,
                json.dumps(
                    {
                        "chunk": chunk,
                        "batches": items,
                        "sent": n,
                        "rejected": 0,
                        "confirmed": confirmed_n,
                        "failed": 0,
                    }
                ).encode(),
            )


def test_finalize_commits_state_only_for_confirmed_contacts(tmp_path: Path) -> None:
    world = make_world(tmp_path, chunk_batches=1)
    req = world.request(world.write_csv([contact_row(i) for i in range(300)]))
    result = world.engine.prepare(req)
    assert len(result.chunks) == 2
    _confirm_everything(
        world, req, PrepareResult(**{**result.__dict__, "chunks": result.chunks[:1]})
    )
    report = world.engine.finalize(req, error="API key rejected (test)")
    assert report.status == "failed"
    assert report.confirmed == 250 and report.failed == 50
    assert report.failed_by_reason == {"run_stopped": 50}
    assert report.reconciles()
    state, _etag = state_mod.load(world.store, EXPORT)
    assert len(state) == 250
    assert state.get("person0@example.com") is not None
    assert state.get("person299@example.com") is None
    # idempotent: the same report, the state untouched
    assert world.engine.finalize(req) == report
    assert len(state_mod.load(world.store, EXPORT)[0]) == 250
    # the next run of the same snapshot sends only what was not confirmed
    nxt = world.request(world.snapshots[0])
    assert nxt.run_id != req.run_id
    again = world.engine.prepare(nxt)
    assert again.contacts_to_send == 50 and again.counts["unchanged"] == 250


def test_finalize_recognises_its_own_commit_after_a_crash(world: World) -> None:
    req = world.request(world.write_csv([contact_row(i) for i in range(5)]))
    result = world.engine.prepare(req)
    _confirm_everything(world, req, result)
    world.engine.finalize(req)
    # A crash after the state was saved but before the report: finalize runs again.
    world.store.delete(runs.report_path(EXPORT, req.run_id))
    report = world.engine.finalize(req)
    assert report.status == "completed" and report.confirmed == 5


def test_finalize_refuses_a_state_moved_by_another_run(world: World) -> None:
    req = world.request(world.write_csv([contact_row(i) for i in range(5)]))
    result = world.engine.prepare(req)
    _confirm_everything(world, req, result)
    other = update_mod.StateUpdate(snapshot_count=1)
    other.confirm_sent(PreparedContact(1, "x", "someone@example.com", "{}", 1))
    state_mod.save(
        world.store, EXPORT, update_mod.apply(state_mod.ExportState.empty(), other), if_match=None
    )
    with pytest.raises(ConflictError, match="changed since"):
        world.engine.finalize(req)
    assert world.engine.get_run(EXPORT, req.run_id).status == "failed"


def test_shrink_guard_stops_before_anything_is_sent(world: World) -> None:
    req = world.request(world.write_csv([contact_row(i) for i in range(20)]))
    _confirm_everything(world, req, world.engine.prepare(req))
    world.engine.finalize(req)
    small = world.request(world.write_csv([contact_row(i) for i in range(5)]))
    with pytest.raises(GuardError, match="Shrink guard"):
        world.engine.prepare(small)
    report = world.engine.get_run(EXPORT, small.run_id)
    assert report.status == "guarded" and report.reconciles()
    assert report.left == 15 and report.leavers_failed == 15
    assert not list(world.store.list(f"runs/{EXPORT}/{small.run_id}/chunks/"))
    # the override lets it through, and the leavers are planned for unsubscription
    allowed = world.request(world.snapshots[-1], allow_shrink=True)
    result = world.engine.prepare(allowed)
    assert result.leavers_to_unsubscribe == 15 and result.contacts_to_send == 0


def test_a_broken_snapshot_is_an_input_error_before_anything_is_sent(world: World) -> None:
    path = world.tmp / "broken.csv"
    good = ",".join(contact_row(1))
    path.write_text(",".join(COLUMNS) + f'\r\n{good}\r\n"b@example.com,Bob\r\n')
    req = world.request(path)
    with pytest.raises(InputError, match="never closed"):
        world.engine.prepare(req)
    assert read_record(world.store, runs.manifest_path(EXPORT, req.run_id), Manifest) is None
    report = world.engine.finalize(req, error="unreadable")
    assert report.status == "failed" and report.reconciles()


def test_new_run_resumes_an_unfinished_run_and_not_a_finished_one(world: World) -> None:
    path = world.write_csv([contact_row(i) for i in range(3)])
    req = world.request(path)
    world.engine.prepare(req)
    assert world.request(path).run_id == req.run_id  # unfinished: resumed
    with pytest.raises(RunConflict) as other_options:  # one run per export at a time
        world.request(path, dry_run=True)
    assert other_options.value.run_id == req.run_id
    world.engine.finalize(req, error="stopped")
    assert world.request(path).run_id != req.run_id
    assert world.request(path, dry_run=True).run_id != req.run_id


def test_names_and_records_are_json_shapes() -> None:
    assert instance_id("news-letter", "ab/cd+ef") == "news-letter-abcdef"
    summary = ChunkSummary(
        chunk="runs/x/y/chunks/00000.jsonl",
        batches=2,
        sent=300,
        rejected=1,
        confirmed=298,
        failed=1,
    )
    assert ChunkSummary.from_dict(summary.to_dict()) == summary
    assert RunOptions.from_dict(RunOptions(dry_run=True).to_dict()) == RunOptions(dry_run=True)
    assert (
        runs.new_run_id(
            __import__("datetime").datetime(
                2026, 11, 25, 18, 30, tzinfo=__import__("datetime").UTC
            ),
            "1a2b3c4d5e",
        )
        == "20261125T183000Z-1a2b3c4d"
    )


def test_kept_leavers_are_forgotten_without_unsubscribing(tmp_path: Path) -> None:
    world = make_world(tmp_path, leaver_policy="keep")
    req = world.request(world.write_csv([contact_row(i) for i in range(10)]))
    _confirm_everything(world, req, world.engine.prepare(req))
    world.engine.finalize(req)
    nxt = world.request(world.write_csv([contact_row(i) for i in range(9)]))
    result = world.engine.prepare(nxt)
    assert result.leavers_to_unsubscribe == 0
    report = world.engine.finalize(nxt)
    assert report.left == 1 and report.leavers_kept == 1 and report.reconciles()
    assert state_mod.load(world.store, EXPORT)[0].get("person9@example.com") is None


def test_list_runs_reads_one_folder_level_newest_first(world: World) -> None:
    """A finished run, a run still in prepare's hands (manifest only) and a run folder holding
    only a stray chunk: the first two are listed, newest first; ``limit`` counts listed runs."""
    finished = world.request(world.write_csv([contact_row(i) for i in range(5)]), dry_run=True)
    world.engine.prepare(finished)
    world.engine.finalize(finished)
    running = world.request(world.write_csv([contact_row(i) for i in range(7)]))
    world.engine.prepare(running)
    world.store.write_bytes(f"runs/{EXPORT}/20991231T235959Z-0000beef/chunks/0.jsonl", b"")

    listed = world.engine.list_runs(EXPORT)
    # (both ids may share a second: the order is by run id, newest first)
    assert [r.run_id for r in listed] == sorted([running.run_id, finished.run_id], reverse=True)
    status = {r.run_id: (r.status, r.rows_read) for r in listed}
    assert status == {running.run_id: ("running", 7), finished.run_id: ("dry_run", 5)}
    assert [r.run_id for r in world.engine.list_runs(EXPORT, limit=1)] == [listed[0].run_id]
    assert world.engine.list_runs("no-such-export") == []


def test_last_run_says_whether_the_timer_should_run_the_snapshot_again(world: World) -> None:
    """A run that stops after prepare (ActiveCampaign unavailable) is worth another run over the
    same snapshot, counted; one that could not read its snapshot, or a dry run, is not."""
    snapshot = world.write_csv([contact_row(i) for i in range(5)])
    first = world.request(snapshot)
    world.engine.prepare(first)
    world.engine.finalize(first, error="ActiveCampaign temporarily unavailable (503)")
    last = runs.read_last_run(world.store, EXPORT)
    assert last is not None
    assert (last.run_id, last.status, last.retry, last.attempts) == (
        first.run_id,
        "failed",
        True,
        1,
    )

    second = world.request(snapshot)
    assert second.run_id != first.run_id  # a finished run is not resumed
    world.engine.prepare(second)
    world.engine.finalize(second, error="ActiveCampaign temporarily unavailable (503)")
    last = runs.read_last_run(world.store, EXPORT)
    assert last is not None and (last.retry, last.attempts) == (True, 2)

    broken = world.tmp / "broken.csv"
    broken.write_bytes(b"\x00\x01 not a csv")
    unreadable = world.request(broken)
    with pytest.raises(InputError):
        world.engine.run(unreadable)
    last = runs.read_last_run(world.store, EXPORT)
    assert last is not None
    assert (last.status, last.retry, last.attempts) == ("failed", False, 1)

    dry = world.request(world.write_csv([contact_row(i) for i in range(6)]), dry_run=True)
    world.engine.prepare(dry)
    world.engine.finalize(dry, error="stopped")
    last = runs.read_last_run(world.store, EXPORT)
    assert last is not None and last.retry is False
