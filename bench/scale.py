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
from bench.scenarios import Figures, Goal, Settings

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


class ScaleScenario:
    """``make bench-scale`` (and the smoke run at a small size): :func:`measure` as figures,
    ``<step>.peak_rss_mb`` / ``wall_seconds`` / ``cpu_seconds`` for every step, the state's
    size and load time, and the worst peak against issue #18's 1.5 GB."""

    name = "scale"
    goals = (Goal("worst_peak_rss_mb", "<=", PEAK_RSS_GOAL_MB, "every phase: peak RSS ≤1.5 GB"),)

    def __init__(self, settings: Settings) -> None:
        self.rows = settings.scale_rows
        self.work = settings.work / "scale"

    def run_once(self) -> Figures:
        results = measure(self.rows, self.work, log=False)
        shutil.rmtree(self.work / "home", ignore_errors=True)  # chunks: ~3 GB at 10M
        return figures(results)


def figures(results: dict[str, dict[str, Any]]) -> Figures:
    """The scenario's flat figures from :func:`measure`'s results."""
    out: Figures = {"rows": float(results["first.prepare"]["rows"])}
    for name, r in results.items():
        for key in ("peak_rss_mb", "wall_seconds", "cpu_seconds"):
            out[f"{name}.{key}"] = float(r[key])
    out["state_mb"] = results["state.load"]["state_bytes"] / 1e6
    out["state_in_memory_mb"] = float(results["state.load"]["in_memory_mb"])
    out["state_load_seconds"] = float(results["state.load"]["wall_seconds"])
    out["refresh.to_send"] = float(results["refresh.prepare"]["to_send"])
    out["refresh.leavers"] = float(results["refresh.prepare"]["leavers"])
    out["worst_peak_rss_mb"] = max(float(r["peak_rss_mb"]) for r in results.values())
    return out


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
