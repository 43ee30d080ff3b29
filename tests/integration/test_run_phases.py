"""The command line's run over real HTTP against the sandbox: the report says where the time
went (issue #18 item 5), polls do not wait for the limiter to see bulk idle once the pipeline
has sent its last import, and the list-members mark, moved beside finalize, is in place before
the run's lease is released."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter.activecampaign import ActiveCampaignClient, RateLimiter, RetryPolicy
from exporter.cli_progress import summary_paragraph
from exporter.management.config import Connection
from exporter.management.hostnames import base_url
from exporter.management.secrets import LocalSecretProvider
from exporter.run import finalize as finalize_mod
from exporter.run import members
from exporter.run.engine import Engine
from exporter.storage import runs
from exporter.storage.records import read_record
from sandbox import Sandbox
from tests.integration.support import EXPORT, World, contact_row, make_world, sandbox_config

SCALE = 10.0


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(sandbox_config(SCALE, seed=3)) as sb:
        yield sb


def _world(tmp_path: Path, sb: Sandbox, limiters: list[RateLimiter], chunks: int) -> World:
    world = make_world(tmp_path, f"127.0.0.1:{sb.port}", time_scale=SCALE, chunk_batches=chunks)

    def factory(connection: Connection, key: str) -> ActiveCampaignClient:
        limiter = RateLimiter(time_scale=SCALE)
        limiters.append(limiter)
        return ActiveCampaignClient(
            base_url(connection.hostname),
            key,
            transport=None,
            limiter=limiter,
            retry=RetryPolicy(initial_backoff=0.02, max_backoff=0.5),
        )

    world.engine = Engine(
        world.store,
        LocalSecretProvider(world.env),
        host_policy=world.engine.host_policy,
        client_factory=factory,
        time_scale=SCALE,
        chunk_batches=chunks,
    )
    return world


def test_the_report_says_where_the_time_went(tmp_path: Path, sandbox: Sandbox) -> None:
    limiters: list[RateLimiter] = []
    world = _world(tmp_path, sandbox, limiters, chunks=2)
    report = world.engine.run(world.request(world.write_csv([contact_row(i) for i in range(1100)])))
    assert report.status == "completed" and report.reconciles(), report.summary()
    t = report.timings
    assert {"prepare", "members", "push", "confirm", "sending", "finalize", "total"} <= set(t)
    assert "confirm_after_push" in t
    # Sending is the members read, the push and the confirmations, overlapped: it holds the
    # push's time and the confirmations made after the last import, and fits in the total.
    assert t["sending"] >= t["push"] > 0
    assert t["sending"] >= t["confirm_after_push"] > 0
    assert t["sending"] >= t["members"] >= 0
    assert t["finalize"] > 0
    assert t["prepare"] + t["sending"] + t["finalize"] <= t["total"] + 0.01
    stored = runs.read_json(world.store, runs.report_path(report.export, report.run_id))
    assert stored is not None and stored["timings"] == t
    words = summary_paragraph(report, exit_code=0, width=10_000)
    assert f"send and confirm {t['sending']:.1f} s" in words
    assert f"({t['confirm_after_push']:.1f} s of it after the last bulk import)" in words


def test_polls_are_not_held_back_once_the_last_import_is_sent(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    """One chunk of three imports: its confirmations start right after the push, within the
    limiter's ``bulk_idle`` of the last import, and none of its polls is held back for a push
    that is over (before, each waited for the limiter to see two idle per-second windows)."""
    limiters: list[RateLimiter] = []
    world = _world(tmp_path, sandbox, limiters, chunks=40)
    rows = [contact_row(i) for i in range(700)]
    report = world.engine.run(world.request(world.write_csv(rows)))
    assert report.status == "completed" and report.confirmed == 700, report.summary()
    (limiter,) = limiters
    assert sandbox.request_counts().get("POST /import/bulk_import", 0) == 3
    assert limiter.held_back == 0


def test_the_mark_is_moved_by_the_run(tmp_path: Path, sandbox: Sandbox) -> None:
    """The mark's request runs beside finalize and is waited for: when the run returns, the
    list-members record holds ActiveCampaign's clock and a contact id past the run's own."""
    limiters: list[RateLimiter] = []
    world = _world(tmp_path, sandbox, limiters, chunks=2)
    rows = [contact_row(i) for i in range(600)]
    report = world.engine.run(world.request(world.write_csv(rows)))
    assert report.status == "completed", report.summary()
    record = read_record(world.store, members.record_path(EXPORT), members.ListMembersRecord)
    assert record is not None and record.updated_mark is not None
    assert record.max_id >= sandbox.contacts_count() == 600


def test_finalize_calls_before_release_while_the_lease_is_held(tmp_path: Path) -> None:
    """``before_release`` (the command line waits there for its mark) runs after the report
    is written and before the run's lease goes."""
    world = make_world(tmp_path)
    req = world.request(world.write_csv([contact_row(i) for i in range(10)]))
    world.engine.prepare(req)
    seen: list[tuple[bool, bool]] = []

    def check() -> None:
        seen.append(
            (
                world.store.exists(runs.active_run_path(EXPORT)),
                world.store.exists(runs.report_path(EXPORT, req.run_id)),
            )
        )

    report = finalize_mod.finalize(world.engine, req, before_release=check, timings={"x": 1.5})
    assert seen == [(True, True)]
    assert not world.store.exists(runs.active_run_path(EXPORT))
    assert report.timings["x"] == 1.5 and report.timings["finalize"] >= 0
