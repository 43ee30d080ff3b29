"""Two snapshots of one export arrive while a run is going: the second waits (pending) and runs
after the first, so the list and the state end exactly as if they had run one after the other
— a leaver of the second is unsubscribed and stays so, nobody is left half-committed."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter.errors import RunConflict
from exporter.incremental import state as state_mod
from exporter.storage import runs
from sandbox import Field, Sandbox, SandboxConfig
from tests.integration.support import COLUMNS, EXPORT, KEY, LIST, World, contact_row, make_world

SCALE = 50.0
SEGMENT = "snapshots/newsletter/"


@pytest.fixture
def sandboxes() -> Iterator[tuple[Sandbox, Sandbox]]:
    def config() -> SandboxConfig:
        fields = [
            Field("1", "City"),
            Field("2", "Birthday", "date"),
            Field("3", "Tier", "dropdown"),
        ]
        return SandboxConfig(
            api_key=KEY, lists={LIST: "Newsletter"}, fields=fields, time_scale=SCALE, seed=1
        )

    with Sandbox(config()) as racing, Sandbox(config()) as sequential:
        yield racing, sequential


def snapshot(world: World, name: str, ids: range) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(COLUMNS)
    writer.writerows(contact_row(i) for i in ids)
    path = f"{SEGMENT}{name}.csv"
    world.store.write_bytes(path, buf.getvalue().encode())
    return path


FIRST, SECOND = range(0, 300), range(50, 330)  # the second: 50 left, 30 joined


def test_a_snapshot_arriving_mid_run_waits_and_ends_as_if_run_in_turn(
    tmp_path: Path, sandboxes: tuple[Sandbox, Sandbox]
) -> None:
    racing, sequential = sandboxes
    world = make_world(tmp_path / "race", f"127.0.0.1:{racing.port}", time_scale=SCALE)
    engine = world.engine
    a = engine.new_run(EXPORT, snapshot=engine.store_snapshot(snapshot(world, "a", FIRST)))
    engine.prepare(a)  # run A is under way
    b_path = snapshot(world, "b", SECOND)
    assert engine.runs_for_blob(b_path) == []  # the blob trigger: B waits for A
    with pytest.raises(RunConflict):  # a person pressing "run now"
        engine.new_run(EXPORT, snapshot=engine.store_snapshot(b_path))
    assert engine.run(a).status == "completed"
    [b] = engine.due_runs(engine.now())  # the next tick runs the pending snapshot
    assert b.snapshot["path"] == b_path
    assert engine.run(b).status == "completed"

    alone = make_world(tmp_path / "seq", f"127.0.0.1:{sequential.port}", time_scale=SCALE)
    for name, ids in (("a", FIRST), ("b", SECOND)):
        req = alone.engine.new_run(
            EXPORT, snapshot=alone.engine.store_snapshot(snapshot(alone, name, ids))
        )
        assert alone.engine.run(req).status == "completed"

    expected = {f"person{i}@example.com" for i in SECOND}
    assert racing.list_members(LIST) == sequential.list_members(LIST) == expected
    raced, _ = state_mod.load(world.store, EXPORT)
    in_turn, _ = state_mod.load(alone.store, EXPORT)
    assert {e.email for e in raced.entries()} == {e.email for e in in_turn.entries()} == expected
    assert not world.store.exists(runs.pending_path(EXPORT))
