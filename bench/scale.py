"""The 10-million-contact benchmark: every phase of a first run and of a daily refresh, each in a
process of its own (:mod:`bench.scale_child`), without the wire, with its peak RSS.

    .venv/bin/python -m bench.scale --rows 10000000 [--work /tmp/scale] [--keep]

A first run of the full segment (prepare, the push's records, finalize), then what the
orchestration's activities that read the state pay (a state load, the members read), then the
daily refresh (prepare's diff, the records, finalize). Issue #18's goal: every phase at most
1.5 GB peak RSS (a Flex Consumption instance has 2 GB).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import data, harness

PEAK_RSS_GOAL_MB = 1536.0
"""Issue #18: peak RSS at most 1.5 GB in every phase."""

STEPS = (
    ("first.prepare", "prepare", "full"),
    ("first.wire", "wire", None),
    ("first.finalize", "finalize", None),
    ("state.load", "load", None),
    ("activity.members", "members", None),
    ("refresh.prepare", "prepare", "refresh"),
    ("refresh.wire", "wire", None),
    ("refresh.finalize", "finalize", None),
)
"""(name, phase, snapshot) in order; ``*.wire`` only writes the records a clean push would."""


def measure(rows: int, work: Path, *, log: bool = True) -> dict[str, dict[str, Any]]:
    """Run every step over a segment of ``rows`` contacts under ``work``; figures by step."""
    started = time.monotonic()
    folder, marker = work / "data", work / "data" / "rows.txt"
    if marker.exists() and marker.read_text() == str(rows):  # --keep'd from an earlier run
        full, refresh = folder / "segment.csv", folder / "segment-refresh.csv"
    else:
        full, refresh = data.generate_csv(folder, rows)
        marker.write_text(str(rows))
    if log:
        print(f"{rows:,} rows (CSV and refresh) ready in {time.monotonic() - started:.0f}s")
    home = work / "home"
    shutil.rmtree(home, ignore_errors=True)
    harness.configure_store(home, "127.0.0.1:9")  # no phase here connects
    snapshots = {"full": str(full), "refresh": str(refresh)}
    out: dict[str, dict[str, Any]] = {}
    for name, phase, snapshot in STEPS:
        args = [phase, str(home)] + ([snapshots[snapshot]] if snapshot else [])
        out[name] = harness.run_child("bench.scale_child", args)
        if log:
            print(f"{name:18} {out[name]}")
    return out


def table(results: dict[str, dict[str, Any]]) -> str:
    """A markdown table: step, contacts, peak RSS, wall and CPU seconds."""
    lines = [
        "| phase | contacts | peak RSS MB | wall s | CPU s |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, r in results.items():
        n = r.get("rows", r.get("contacts", r.get("confirmed", r.get("members_recorded", 0))))
        lines.append(
            f"| {name} | {int(n):,} | {r['peak_rss_mb']:,.0f} | {r['wall_seconds']:.1f} "
            f"| {r['cpu_seconds']:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--rows", type=int, default=10_000_000)
    p.add_argument("--work", help="folder for the data and the store (default: a temp folder)")
    p.add_argument("--keep", action="store_true", help="keep the work folder")
    args = p.parse_args(argv)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="exporter-scale-"))
    try:
        results = measure(args.rows, work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(table(results))
    worst = max(r["peak_rss_mb"] for r in results.values())
    print(f"worst peak RSS {worst:,.0f} MB (goal <= {PEAK_RSS_GOAL_MB:,.0f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
