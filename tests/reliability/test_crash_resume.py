"""Crash and resume: ``python -m exporter run`` killed with SIGKILL at ten points of a run, then
run again with the same command, ends with the same list, the same state and the same report
numbers as a run that was never interrupted; no JSON record is ever left torn and the state
always loads.

Everything is real and out of process: the sandbox runs as ``python -m sandbox``, the exporter
as ``python -m exporter``. Kill points are chosen by watching the store (the run's records
appearing) and the sandbox's request counter; the exporter has no test hooks.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from examples import synthetic
from tests.reliability import support
from tests.sandbox_process import SandboxProcess
from tests.sandbox_process import started_sandbox_process as sandbox_process_of

ROOT = Path(__file__).resolve().parents[2]
ROWS = 25_000
"""Three chunk files of 40 batches (the command line's chunk size)."""
TIME_SCALE = 100.0
EXPORTER_TIMEOUT = 120.0


@contextmanager
def started_sandbox_process() -> Iterator[SandboxProcess]:
    """The sandbox of these tests, in its own process."""
    with sandbox_process_of(
        support.KEY,
        *("--list", f"{support.LIST_ID}:Newsletter", "--list", "2:Other"),
        *("--field", "1:City:text:CITY", "--time-scale", str(TIME_SCALE), "--seed", "3"),
    ) as sb:
        yield sb


@pytest.fixture
def sandbox_process() -> Iterator[SandboxProcess]:
    with started_sandbox_process() as sb:
        yield sb


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic.write_csv(tmp_path_factory.mktemp("snapshot") / "segment.csv", ROWS)


def _command(home: Path, snapshot: Path) -> list[str]:
    return [
        sys.executable, "-m", "exporter", "--home", str(home), "--time-scale", str(TIME_SCALE),
        "--json", "run", support.EXPORT, "--snapshot", str(snapshot),
    ]  # fmt: skip


def _start(home: Path, snapshot: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            _command(home, snapshot),
            cwd=ROOT,
            env={**os.environ, **support.ENV},
            stdout=out,
            stderr=out,
        )


def _run_to_end(home: Path, snapshot: Path, log: Path) -> dict[str, object]:
    process = _start(home, snapshot, log)
    assert process.wait(timeout=EXPORTER_TIMEOUT) == 0, log.read_text(errors="replace")
    run_id = json.loads((home / "state" / support.EXPORT / "last_run.json").read_text())["run_id"]
    report: dict[str, object] = json.loads(
        (home / "runs" / support.EXPORT / run_id / "report.json").read_text()
    )
    return report


# --- kill points ----------------------------------------------------------------------------


def _run_dir(home: Path) -> Path | None:
    base = home / "runs" / support.EXPORT
    found = sorted(p for p in base.iterdir() if p.is_dir()) if base.is_dir() else []
    return found[-1] if found else None


def _has(*parts: str) -> Callable[[Path, SandboxProcess], bool]:
    """The newest run folder holds ``parts`` (a relative path)."""

    def check(home: Path, _sb: SandboxProcess) -> bool:
        run = _run_dir(home)
        return run is not None and (run / Path(*parts)).exists()

    return check


def _preparing(home: Path, _sb: SandboxProcess) -> bool:
    run = _run_dir(home)
    return (home / "state" / support.EXPORT / "active_run.json").exists() and (
        run is None or not (run / "prepared.json").exists()
    )


def _bulk_at_least(n: int) -> Callable[[Path, SandboxProcess], bool]:
    def check(_home: Path, sb: SandboxProcess) -> bool:
        return sb.bulk_requests() >= n

    return check


def _state_written(home: Path, _sb: SandboxProcess) -> bool:
    return (home / "state" / support.EXPORT / "state.bin").exists()


@dataclass(frozen=True)
class KillPoint:
    id: str
    reached: Callable[[Path, SandboxProcess], bool]
    phase_check: Callable[[Path], bool]
    """True when the store shows the run was killed in the intended phase."""


def _pushed(chunk: str) -> Callable[[Path, SandboxProcess], bool]:
    """The chunk's sent record is complete (push writes it from its first request on)."""

    def check(home: Path, _sb: SandboxProcess) -> bool:
        return _sent_complete(home, chunk)

    return check


def _not_pushed(chunk: str) -> Callable[[Path], bool]:
    return lambda home: not _sent_complete(home, chunk)


def _sent_complete(home: Path, chunk: str) -> bool:
    run = _run_dir(home)
    path = None if run is None else run / "sent" / f"{chunk}.json"
    if path is None or not path.exists():
        return False
    return bool(json.loads(path.read_text()).get("complete", True))


def _no(*parts: str) -> Callable[[Path], bool]:
    def check(home: Path) -> bool:
        run = _run_dir(home)
        return run is None or not (run / Path(*parts)).exists()

    return check


def _no_report(home: Path) -> bool:
    run = _run_dir(home)
    return run is None or not (run / "report.json").exists()


KILL_POINTS = [
    KillPoint("while-preparing", _preparing, _no("prepared.json")),
    KillPoint("prepared-before-push", _has("prepared.json"), _not_pushed("00000")),
    KillPoint("mid-push-first-chunk", _bulk_at_least(10), _not_pushed("00000")),
    KillPoint("first-chunk-pushed", _pushed("00000"), _no("confirmed", "00002.json")),
    KillPoint("mid-push-second-chunk", _bulk_at_least(60), _not_pushed("00001")),
    KillPoint("first-chunk-confirmed", _has("confirmed", "00000.json"), _no_report),
    KillPoint("all-pushed-confirming", _pushed("00002"), _no("confirmed", "00002.json")),
    KillPoint("second-chunk-confirmed", _has("confirmed", "00001.json"), _no_report),
    KillPoint("committing-state", _has("commit.json"), _no_report),
    KillPoint("state-written", _state_written, _no_report),
]


def _kill_at(point: KillPoint, home: Path, snapshot: Path, sb: SandboxProcess, log: Path) -> bool:
    """Start the run, SIGKILL it when ``point`` is reached; True if it was still running."""
    process = _start(home, snapshot, log)
    deadline = time.monotonic() + EXPORTER_TIMEOUT
    while time.monotonic() < deadline:
        if point.reached(home, sb):
            alive = process.poll() is None
            process.send_signal(signal.SIGKILL)
            process.wait()
            return alive
        if process.poll() is not None:
            return False
        time.sleep(0.001)
    process.kill()
    process.wait()
    raise AssertionError(f"kill point {point.id} never reached")


@dataclass(frozen=True)
class Outcome:
    members: set[str]
    unsubscribed: set[str]
    state: dict[str, tuple[int, bool]]
    report: dict[str, object]
    bulk: int
    """Bulk imports the uninterrupted run made."""


REPORT_NUMBERS = ("rows_read", "valid", "rejected", "duplicates", "new", "confirmed", "failed")


@pytest.fixture(scope="module")
def baseline(snapshot: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outcome]:
    """The uninterrupted run: what every interrupted one must end with."""
    with started_sandbox_process() as sb:
        home = tmp_path_factory.mktemp("baseline") / "home"
        support.configure(home, sb.port)
        report = _run_to_end(home, snapshot, home.parent / "run.log")
        assert report["status"] == "completed", report
        yield Outcome(
            sb.members(support.LIST_ID),
            sb.members(support.LIST_ID, 2),
            support.state_emails(home),
            report,
            sb.bulk_requests(),
        )


@pytest.mark.parametrize("point", KILL_POINTS, ids=[p.id for p in KILL_POINTS])
def test_killed_run_resumes_to_the_same_end(
    point: KillPoint,
    tmp_path: Path,
    snapshot: Path,
    sandbox_process: SandboxProcess,
    baseline: Outcome,
) -> None:
    home = tmp_path / "home"
    log = tmp_path / "run.log"
    support.configure(home, sandbox_process.port)

    killed = _kill_at(point, home, snapshot, sandbox_process, log)
    assert killed, f"the run finished before reaching {point.id}"
    assert point.phase_check(home), f"killed later than {point.id}"
    assert support.check_store_intact(home) == []

    report = _run_to_end(home, snapshot, log)
    assert report["status"] == "completed", report
    assert report["reconciles"] is True
    for name in REPORT_NUMBERS:
        assert report[name] == baseline.report[name], name
    assert sandbox_process.members(support.LIST_ID) == baseline.members
    assert sandbox_process.members(support.LIST_ID, 2) == baseline.unsubscribed
    assert support.state_emails(home) == baseline.state
    # Nothing acknowledged is sent again: at most the one import in flight at the kill.
    assert sandbox_process.bulk_requests() <= baseline.bulk + 1
    assert support.check_store_intact(home) == []
    assert not (home / "state" / support.EXPORT / "active_run.json").exists()


def test_killed_three_times_in_one_run(
    tmp_path: Path, snapshot: Path, sandbox_process: SandboxProcess, baseline: Outcome
) -> None:
    """Each restart resumes the same run id; three kills still end where one run ends."""
    home = tmp_path / "home"
    log = tmp_path / "run.log"
    support.configure(home, sandbox_process.port)
    run_ids = set()
    for point in (KILL_POINTS[2], KILL_POINTS[5], KILL_POINTS[8]):
        assert _kill_at(point, home, snapshot, sandbox_process, log), point.id
        run = _run_dir(home)
        assert run is not None
        run_ids.add(run.name)
        assert support.check_store_intact(home) == []
    report = _run_to_end(home, snapshot, log)
    assert {report["run_id"]} == run_ids
    assert report["status"] == "completed"
    for name in REPORT_NUMBERS:
        assert report[name] == baseline.report[name], name
    assert sandbox_process.members(support.LIST_ID) == baseline.members
    assert support.state_emails(home) == baseline.state
