"""One engine *prepare* in a process of its own, so its peak memory is prepare's alone.

    python -m bench.prepare_child HOME SNAPSHOT [--profile OUT]

``HOME`` is a local store configured by :func:`bench.harness.configure_store` (with the state
of a previous run, or none); ``SNAPSHOT`` a CSV or a Customer Insights ``model.json``. Prints
one JSON object: counts, CPU and wall seconds of ``Engine.prepare`` and the process's peak RSS
(``VmHWM``), before and after (imports included: that is what a worker pays).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import resource
import sys
import time
from pathlib import Path

from bench import harness
from exporter.run.engine import Engine
from exporter.storage import runs
from exporter.storage.store import LocalStore


def peak_rss_mb() -> float:
    """This process's peak resident set (``VmHWM``), in MB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> int:
    """Run prepare once and print its figures as JSON."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("home")
    p.add_argument("snapshot")
    p.add_argument("--profile", help="write a cProfile of prepare to this file")
    args = p.parse_args(argv)
    engine = harness.engine_for(LocalStore(Path(args.home)), time_scale=1.0)
    ref = Engine.local_snapshot(args.snapshot)
    req = engine.new_run(harness.EXPORT, snapshot=ref, snapshot_location=runs.LOCAL)
    baseline = peak_rss_mb()
    profiler = cProfile.Profile() if args.profile else None
    wall, cpu = time.perf_counter(), time.process_time()
    if profiler:
        profiler.enable()
    result = engine.prepare(req)
    if profiler:
        profiler.disable()
        profiler.dump_stats(args.profile)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    out = {
        "run_id": req.run_id,
        "counts": result.counts,
        "chunks": len(result.chunks),
        "contacts_to_send": result.contacts_to_send,
        "leavers_to_unsubscribe": result.leavers_to_unsubscribe,
        "cpu_seconds": round(cpu, 3),
        "wall_seconds": round(wall, 3),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "rss_before_mb": round(baseline, 1),
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
