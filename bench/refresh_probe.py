"""The daily refresh alone, end to end, at ActiveCampaign's real limits (issue #18 item 5).

    .venv/bin/python -m bench.refresh_probe [--rows 1000000] [--time-scale 1] [--runs 1]
                                            [--work /tmp/refresh-probe] [--timeline]
                                            [--allowance SECONDS]

What ``python -m bench.run --scenario push`` measures after its 1M push (~8 minutes), in about
a minute: the segment and its daily refresh (:mod:`bench.data`, kept under ``--work`` for the
next call), the state a clean first run leaves (prepared once and committed without sending,
:func:`bench.scenarios.commit_everything`), then the refresh run itself, ``Engine.run`` as the
command line calls it, against ``python -m sandbox`` at ``--time-scale``. At 1 (the real
limits) the wall time *is* the end-to-end time, prepare and finalize included, nothing
projected; at N > 1 ``end_to_end_seconds`` projects it as the push scenario does (the sending
part in sandbox time). The sandbox starts empty, so the run's members read finds nobody (the
push scenario's refresh makes the same one read and one mark).

Prints the run's figures: the wall time and where it went (the run report's timings, which
the command line prints too), the requests by kind, when the first and last bulk import and
poll started (seconds from the run's start), throttled answers; ``--timeline`` adds every
request's start (``B`` bulk, ``P`` poll, ``O`` other) in seconds from the first.

``bench.run``'s ``refresh_realtime`` scenario (:class:`RefreshScenario`) is the same
measurement over its own data set.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path

from bench import data, harness
from bench.data import Dataset
from bench.push_probe import _TimedLimiter
from bench.scenarios import INFO_PATH, Figures, Goal, Settings, _prepare_child, commit_everything
from exporter.incremental import state as state_mod
from exporter.run.engine import Engine
from exporter.storage import runs
from exporter.storage.store import LocalStore


def build_state(work: Path, full_csv: Path) -> Path:
    """The state file a clean first run of ``full_csv`` leaves (committed without sending)."""
    home = work / "first"
    shutil.rmtree(home, ignore_errors=True)
    harness.configure_store(home, "127.0.0.1:9")  # prepare never connects
    first = _prepare_child(home, full_csv)
    commit_everything(LocalStore(home), first["run_id"])
    state = work / "state" / "state.bin"
    state.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(home / state_mod.state_path(harness.EXPORT), state)
    shutil.rmtree(home, ignore_errors=True)
    return state


def _inputs(work: Path, rows: int) -> tuple[Path, Path]:
    """The refresh snapshot and the state after the full one (built once per ``rows``)."""
    folder, marker = work / "data", work / "data" / "rows.txt"
    refresh, state = folder / "segment-refresh.csv", work / "state" / "state.bin"
    if not (marker.exists() and marker.read_text() == str(rows) and state.exists()):
        shutil.rmtree(work, ignore_errors=True)
        full, refresh = data.generate_csv(folder, rows)
        state = build_state(work, full)
        marker.write_text(str(rows))
    return refresh, state


def _kind(path: str) -> str:
    if path == harness.BULK_PATH:
        return "B"
    return "P" if path == INFO_PATH else "O"


def refresh_once(
    work: Path, snapshot: Path, state: Path, time_scale: float, allowance: float | None = None
) -> tuple[Figures, str]:
    """One refresh run of ``snapshot`` over a copy of ``state``; its figures and its request
    timeline. ``allowance``: the limiter's margin in real seconds (None: its default)."""
    home = work / "home"
    shutil.rmtree(home, ignore_errors=True)
    _TimedLimiter.instances.clear()
    with harness.SandboxProcess(time_scale) as sandbox:
        store = harness.configure_store(home, sandbox.hostname)
        target = home / state_mod.state_path(harness.EXPORT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(state, target)
        recorder = harness.Recorder()
        engine = harness.engine_for(
            store,
            time_scale=time_scale,
            recorder=recorder,
            allowance=allowance,
            limiter_type=_TimedLimiter,
        )
        req = engine.new_run(
            harness.EXPORT, snapshot=Engine.local_snapshot(snapshot), snapshot_location=runs.LOCAL
        )
        started = time.monotonic()
        report = engine.run(req)
        wall = time.monotonic() - started
        stats = sandbox.stats()
    shutil.rmtree(home, ignore_errors=True)
    reqs = sorted(recorder.requests, key=lambda r: r.start)
    bulk = [r.start - started for r in reqs if _kind(r.path) == "B"]
    polls = [r.start - started for r in reqs if _kind(r.path) == "P"]
    first = reqs[0].start if reqs else started
    timeline = " ".join(f"{r.start - first:.2f}{_kind(r.path)}" for r in reqs)
    timings = report.timings
    sending = timings.get("sending", 0.0)
    figures: Figures = {
        "completed": 1.0 if report.status == "completed" and report.reconciles() else 0.0,
        "end_to_end_seconds": wall + sending * (time_scale - 1.0),
        "wall_seconds": wall,
        "requests": float(len(reqs)),
        "bulk_requests": float(len(bulk)),
        "import_info_requests": float(len(polls)),
        "other_requests": float(len(reqs) - len(bulk) - len(polls)),
        "throttled": float(stats["throttled"]),
        "contacts_confirmed": float(report.confirmed),
        "leavers_unsubscribed": float(report.leavers_unsubscribed),
        "first_request_s": first - started,
        "first_bulk_s": min(bulk, default=0.0),
        "last_bulk_s": max(bulk, default=0.0),
        "first_poll_s": min(polls, default=0.0),
        "last_poll_s": max(polls, default=0.0),
        "polls_held_back": float(sum(lim.held_back for lim in _TimedLimiter.instances)),
    }
    _TimedLimiter.instances.clear()
    for phase in ("prepare", "members", "sending", "confirm_after_push", "finalize", "total"):
        if phase in timings:
            figures[f"report.{phase}_s"] = float(timings[phase])
    return figures, timeline


class RefreshScenario:
    """``bench.run``'s ``refresh_realtime``: the daily refresh alone at ``refresh_time_scale``
    (1: measured at the real limits), over the state a clean run of the full segment leaves."""

    name = "refresh_realtime"
    goals = (
        Goal("end_to_end_seconds", "<=", 40.0, "daily refresh end to end ≤40 s (time scale 1)"),
        Goal("throttled", "==", 0.0, "zero throttled responses"),
        Goal("completed", "==", 1.0, "completed, and the report reconciles"),
    )

    def __init__(self, dataset: Dataset, settings: Settings) -> None:
        self.data = dataset
        self.settings = settings
        self.work = settings.work / "refresh-realtime"
        self._state: Path | None = None

    def run_once(self) -> Figures:
        if self._state is None:
            self._state = build_state(self.work, self.data.full_csv)
        ts = self.settings.refresh_time_scale
        return refresh_once(self.work, self.data.refresh_csv, self._state, ts)[0]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--time-scale", type=float, default=1.0)
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--work", type=Path, default=Path("/tmp/refresh-probe"))
    p.add_argument("--timeline", action="store_true", help="print every request's start")
    p.add_argument(
        "--allowance", type=float, help="the limiter's margin in real seconds (default: its own)"
    )
    p.add_argument("--json", type=Path, help="also write every run's figures here")
    args = p.parse_args(argv)
    snapshot, state = _inputs(args.work, args.rows)
    every: list[Figures] = []
    for i in range(args.runs):
        figures, timeline = refresh_once(
            args.work, snapshot, state, args.time_scale, args.allowance
        )
        every.append(figures)
        rounded = {k: round(v, 2) for k, v in figures.items()}
        print(f"[run {i + 1}/{args.runs}] " + json.dumps(rounded), flush=True)
        if args.timeline:
            print(timeline)
    if args.runs > 1:
        for name in every[0]:
            print(f"{name:30s} {statistics.median(r.get(name, 0.0) for r in every):12,.2f}")
    if args.json:
        args.json.write_text(json.dumps(every, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
