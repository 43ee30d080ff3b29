"""Two snapshots of one export arrive while a run is going: the second waits (pending) and runs
after the first, so the list and the state end exactly as if they had run one after the other
— a leaver of the second is unsubscribed and stays so, nobody is left half-committed."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter.cli import main
from exporter.errors import RunConflict
from exporter.incremental import state as state_mod
from exporter.storage import runs
from sandbox import Field, Sandbox, SandboxConfig
from tests.integration.support import (
    COLUMNS,
    EXPORT,
    KEY,
    KEY_VAR,
    LIST,
    World,
    contact_row,
    make_world,
)

ROOT = Path(__file__).resolve().parent.parent.parent
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
    assert b.snapshot.path == b_path
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


def test_two_starts_that_both_passed_the_check_still_run_one_at_a_time(
    tmp_path: Path, sandboxes: tuple[Sandbox, Sandbox]
) -> None:
    """The timer and the blob trigger fire in the same second: both requests are made before
    either run has begun. The lease, not the check, decides: the second prepare reads nothing,
    its snapshot waits as pending, and the end is the same as running them in turn."""
    racing, sequential = sandboxes
    world = make_world(tmp_path / "race", f"127.0.0.1:{racing.port}", time_scale=SCALE)
    engine = world.engine
    a_path, b_path = snapshot(world, "a", FIRST), snapshot(world, "b", SECOND)
    a = engine.new_run(EXPORT, snapshot=engine.store_snapshot(a_path), requested_by="timer")
    b = engine.new_run(EXPORT, snapshot=engine.store_snapshot(b_path), requested_by="blob")
    engine.prepare(a)
    with pytest.raises(RunConflict) as lost:
        engine.prepare(b)
    assert lost.value.run_id == a.run_id
    assert not world.store.exists(runs.manifest_path(EXPORT, b.run_id))  # B read nothing
    assert engine.finalize(b, error=str(lost.value)).status == "failed"  # as the orchestrator
    assert engine.run(a).status == "completed"
    [b_again] = engine.due_runs(engine.now())
    assert b_again.snapshot.path == b_path
    assert engine.run(b_again).status == "completed"

    alone = make_world(tmp_path / "seq", f"127.0.0.1:{sequential.port}", time_scale=SCALE)
    for name, ids in (("a", FIRST), ("b", SECOND)):
        req = alone.engine.new_run(
            EXPORT, snapshot=alone.engine.store_snapshot(snapshot(alone, name, ids))
        )
        assert alone.engine.run(req).status == "completed"
    assert racing.list_members(LIST) == sequential.list_members(LIST)
    raced, _ = state_mod.load(world.store, EXPORT)
    in_turn, _ = state_mod.load(alone.store, EXPORT)
    assert {e.email for e in raced.entries()} == {e.email for e in in_turn.entries()}
    assert not world.store.exists(runs.active_run_path(EXPORT))


def test_two_command_line_runs_of_one_export_never_overlap(
    tmp_path: Path, sandboxes: tuple[Sandbox, Sandbox]
) -> None:
    """Two terminals run the export over two snapshots at once: one runs, the other exits 1
    naming it (or, had the first already ended, runs after it). Run again, the loser ends the
    list and the state exactly as the two in turn."""
    racing, _ = sandboxes
    world = make_world(tmp_path, f"127.0.0.1:{racing.port}", time_scale=SCALE)
    big_first, big_second = range(0, 3000), range(500, 3300)
    paths = {"a": snapshot(world, "a", big_first), "b": snapshot(world, "b", big_second)}
    env = {**os.environ, KEY_VAR: KEY, "PYTHONPATH": str(ROOT)}
    procs = {
        name: subprocess.Popen(
            [
                *(sys.executable, "-m", "exporter", "--home", str(tmp_path / "home")),
                *("--time-scale", str(SCALE), "--json", "run", EXPORT, "--snapshot", path),
            ],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, path in paths.items()
    }
    outcomes = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=240)
        outcomes[name] = (proc.returncode, out, err)
    codes = sorted(code for code, _out, _err in outcomes.values())
    assert codes in ([0, 0], [0, 1]), outcomes
    reports = {name: json.loads(out) for name, (code, out, _err) in outcomes.items() if code == 0}
    if codes == [0, 1]:
        [loser] = [name for name, (code, _out, _err) in outcomes.items() if code == 1]
        _code, out, err = outcomes[loser]
        assert "already running run" in out + err, (out, err)
        home = str(tmp_path / "home")
        again = ["--home", home, "--time-scale", str(SCALE), "run", EXPORT]
        assert main([*again, "--snapshot", paths[loser]], env={KEY_VAR: KEY}) == 0
        last = loser
    else:  # one had ended before the other began: they ran in turn, never side by side
        first, last = sorted(reports, key=lambda name: reports[name]["started_at"])
        assert reports[first]["finished_at"] <= reports[last]["started_at"]
    expected = {f"person{i}@example.com" for i in (big_second if last == "b" else big_first)}
    assert racing.list_members(LIST) == expected
    state, _ = state_mod.load(world.store, EXPORT)
    assert {e.email for e in state.entries()} == expected
