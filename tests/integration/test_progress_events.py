"""The run's progress events (issue #17 item 3): one per batch sent and per batch settled, the
counts matching the report, and a callback that stops the run (the console's cancel) stopping it
between chunks, never half-way through one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter.progress import ProgressEvent
from sandbox import Sandbox
from tests.integration.support import contact_row, make_world, sandbox_config

SCALE = 50.0


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(sandbox_config(SCALE, seed=1)) as sb:
        yield sb


def test_every_batch_is_an_event_and_the_last_counts_are_the_reports(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    world = make_world(tmp_path, f"127.0.0.1:{sandbox.port}", time_scale=SCALE, chunk_batches=4)
    events: list[ProgressEvent] = []
    rows = [contact_row(i) for i in range(1_900)]  # 8 batches in 2 chunks of 4
    report = world.engine.run(world.request(world.write_csv(rows)), progress=events.append)
    assert report.status == "completed" and report.confirmed == 1_900
    sent = [e.done for e in events if e.phase == "push"]
    settled = [e.done for e in events if e.phase == "confirm"]
    assert sorted(set(sent)) == [250 * n for n in range(1, 8)] + [1_900]  # one per batch
    assert sorted(set(settled)) == [250 * n for n in range(1, 8)] + [1_900]
    assert sent == sorted(sent) and settled == sorted(settled)  # never backwards


class Stop(Exception):
    pass


def test_a_callback_that_stops_the_run_stops_it_between_chunks(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    world = make_world(tmp_path, f"127.0.0.1:{sandbox.port}", time_scale=SCALE, chunk_batches=4)

    def cancel_at_first_batch(event: ProgressEvent) -> None:
        if event.phase == "push":
            raise Stop

    req = world.request(world.write_csv([contact_row(i) for i in range(1_900)]))
    with pytest.raises(Stop):
        world.engine.run(req, progress=cancel_at_first_batch)
    # The whole first chunk went out (4 imports), the second not at all.
    assert sandbox.request_counts().get("POST /import/bulk_import", 0) == 4
