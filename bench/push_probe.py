"""Where does a push lose pace? One push, with the figures needed to tell client from server.

    .venv/bin/python -m bench.push_probe [--rows 200000] [--time-scale 10]

Runs one full push of a synthetic segment to the sandbox (its own process, real budgets at
``--time-scale``) and prints: the wire figures of ``make bench`` (efficiency, throttled
answers), how late the client's limiter woke up after each reserved slot (p50/p99/max), how
many late starts reserved again, and the most client *send times* that fell into one of the
server's per-second windows. Throttled answers with at most 5 sends per window mean the
server charged requests later than they were sent (its own pauses); more than 5 mean the
client crowded a window. ``bench/RESULTS.md`` (session 2) shows what this found.
"""

from __future__ import annotations

import argparse
import bisect
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, ClassVar

from bench import data, harness, scenarios
from exporter.activecampaign import RateLimiter, RequestKind
from exporter.run.engine import Engine
from exporter.storage import runs


class _TimedLimiter(RateLimiter):
    """The real limiter, noting how late each request started after its reserved slot
    (push and confirm share one limiter: the last reservation is kept per thread)."""

    instances: ClassVar[list[_TimedLimiter]] = []

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.lateness: list[float] = []
        self._slot = threading.local()
        _TimedLimiter.instances.append(self)

    def _reserve(
        self, kind: RequestKind, since: float | None, *, tentative: bool
    ) -> tuple[float, bool]:
        start, recorded = super()._reserve(kind, since, tentative=tentative)
        self._slot.start = start
        return start, recorded

    def acquire(self, kind: RequestKind = RequestKind.OTHER) -> float:
        waited = super().acquire(kind)
        self.lateness.append(max(self._clock() - self._slot.start, 0.0))
        return waited


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def busiest_window(starts: list[float], period: float) -> int:
    """The most ``starts`` within any window of ``period`` seconds."""
    ordered = sorted(starts)
    return max(
        (bisect.bisect_right(ordered, s + period) - i for i, s in enumerate(ordered)), default=0
    )


def probe(rows: int, time_scale: float) -> dict[str, float]:
    """One push of ``rows`` synthetic rows; the figures described in the module docstring."""
    _TimedLimiter.instances.clear()
    with tempfile.TemporaryDirectory(prefix="push-probe-") as tmp:
        work = Path(tmp)
        dataset = data.generate(work / "data", rows)
        with harness.SandboxProcess(time_scale) as sandbox:
            store = harness.configure_store(work / "home", sandbox.hostname)
            recorder = harness.Recorder()
            engine = harness.engine_for(
                store, time_scale=time_scale, recorder=recorder, limiter_type=_TimedLimiter
            )
            req = engine.new_run(
                harness.EXPORT,
                snapshot=Engine.local_snapshot(dataset.full_csv),
                snapshot_location=runs.LOCAL,
            )
            started = time.monotonic()
            report = engine.run(req)
            wall = time.monotonic() - started
            stats = sandbox.stats()
    figures = scenarios.wire_figures(recorder, time_scale)
    limiters = _TimedLimiter.instances
    late = [x for lim in limiters for x in lim.lateness]
    return {
        "completed": 1.0 if report.status == "completed" else 0.0,
        "throttled": float(stats["throttled"]),
        "wire_efficiency_pct": figures["wire_efficiency_pct"],
        "budget_fill_pct": figures["budget_fill_pct"],
        "bulk_span_sandbox_s": figures["bulk_span_sandbox_min"] * 60.0,
        "floor_sandbox_s": figures["floor_sandbox_min"] * 60.0,
        "bulk_requests": figures["bulk_requests"],
        "import_info_requests": figures["import_info_requests"],
        "wall_seconds": wall,
        "late_ms_p50": 1000 * _quantile(late, 0.5),
        "late_ms_p99": 1000 * _quantile(late, 0.99),
        "late_ms_max": 1000 * max(late, default=0.0),
        "rereserved": float(sum(lim.rereserved for lim in limiters)),
        "polls_held_back": float(sum(lim.held_back for lim in limiters)),
        "polls_yielded": float(sum(lim.yielded for lim in limiters)),
        "max_sends_per_server_second": float(
            busiest_window([r.start for r in recorder.requests], 1.0 / time_scale)
        ),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--rows", type=int, default=200_000)
    p.add_argument("--time-scale", type=float, default=10.0)
    args = p.parse_args(argv)
    for name, value in probe(args.rows, args.time_scale).items():
        print(f"{name:30s} {value:12,.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
