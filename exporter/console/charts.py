"""The run-history chart: stacked bars per run (confirmed, unchanged, rejected, failed) and a
line for each run's duration, as numbers the template draws as inline SVG (no script needed).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from exporter.run.report import RunReport

SERIES = ("confirmed", "unchanged", "rejected", "failed")
"""The outcome counts stacked in each bar, bottom first (CSS classes ``bar-<name>``)."""

WIDTH, HEIGHT, PAD_LEFT, PAD_BOTTOM, PAD_TOP = 720, 240, 56, 40, 16


@dataclass
class Bar:
    x: float
    width: float
    label: str
    run_id: str
    segments: list[tuple[str, float, float, int]] = field(default_factory=list)
    """``(series, y, height, value)`` per stacked part."""
    duration: float | None = None
    duration_y: float | None = None


@dataclass
class Chart:
    bars: list[Bar]
    max_count: int
    max_duration: float
    width: int = WIDTH
    height: int = HEIGHT
    plot_left: int = PAD_LEFT
    plot_bottom: float = HEIGHT - PAD_BOTTOM
    duration_points: str = ""
    """The ``points`` of the duration polyline."""


def _nice(value: float) -> int:
    """A round axis maximum at or above ``value``."""
    if value <= 0:
        return 1
    step = 10 ** max(len(str(int(value))) - 1, 0)
    return int(-(-value // step) * step)


def history_chart(reports: Sequence[RunReport]) -> Chart:
    """The chart of ``reports`` (newest first, as history lists them), oldest on the left."""
    ordered = list(reversed(reports))
    max_count = _nice(max((sum(getattr(r, s) for s in SERIES) for r in ordered), default=0))
    durations = [r.timings.get("total") for r in ordered]
    max_duration = float(max((d for d in durations if d is not None), default=0.0)) or 1.0
    plot_h = HEIGHT - PAD_BOTTOM - PAD_TOP
    slot = (WIDTH - PAD_LEFT - 8) / max(len(ordered), 1)
    bars, points = [], []
    for i, report in enumerate(ordered):
        x = PAD_LEFT + i * slot + slot * 0.15
        bar = Bar(x, slot * 0.7, report.started_at[5:16].replace("T", " "), report.run_id)
        base = float(HEIGHT - PAD_BOTTOM)
        for series in SERIES:
            value = int(getattr(report, series))
            h = plot_h * value / max_count
            base -= h
            bar.segments.append((series, round(base, 1), round(h, 1), value))
        duration = durations[i]
        if duration is not None:
            bar.duration = round(float(duration), 1)
            bar.duration_y = round(HEIGHT - PAD_BOTTOM - plot_h * duration / max_duration, 1)
            points.append(f"{x + slot * 0.35:.1f},{bar.duration_y}")
        bars.append(bar)
    return Chart(bars, max_count, round(max_duration, 1), duration_points=" ".join(points))
