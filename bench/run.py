"""Run the benchmarks side by side and report medians against the goals.

    python -m bench.run [--smoke] [--write bench/RESULTS.md] [--runs 3] [--scenario NAME]

Scenarios (see :mod:`bench.scenarios`): ``prepare``, ``push`` (the full push, followed in the
same sandbox by the daily ``refresh``) and ``baseline``; ``shared_account`` and ``realtime``
(:mod:`bench.realtime`: time scale 1, one run only) in their own modules, and
``refresh_realtime`` (:mod:`bench.refresh_probe`: the daily refresh alone, measured end to
end at time scale 1; about a minute a run). Runs are
interleaved (run 1 of every scenario, then run 2, ...) so a burst of load on a shared machine
does not land on one scenario's every run. ``--smoke`` uses tiny sizes: it checks the
harness, not the goals.

With ``--write``, the report replaces the file, keeping whatever follows the notes marker
(hand-written profile findings) from the previous version.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bench import data, harness
from bench.functions_path import FunctionsScenario
from bench.realtime import RealtimeScenario
from bench.refresh_probe import RefreshScenario
from bench.scale import ScaleScenario
from bench.scenarios import (
    BaselineScenario,
    Figures,
    Goal,
    PrepareScenario,
    PushScenario,
    Settings,
)
from bench.shared_account import SharedAccountScenario

SCENARIOS = (
    "prepare",
    "push",
    "baseline",
    "shared_account",
    "realtime",
    "scale",
    "functions",
    "refresh_realtime",
)
ON_REQUEST = ("scale",)
"""Scenarios a full run leaves out unless named (``--scenario``): ``scale`` (10M contacts,
~10 minutes a run) is ``make bench-scale``. The smoke run includes them, at a small size."""
NOTES_MARKER = "<!-- notes: everything below this line is kept when the file is rewritten -->"


@dataclass
class Outcome:
    """One scenario's runs, medians and goal verdicts."""

    name: str
    runs: list[Figures]
    goals: Sequence[Goal]
    medians: Figures = field(default_factory=dict)
    verdicts: list[tuple[Goal, float | None, bool | None]] = field(default_factory=list)

    def settle(self) -> None:
        keys = list(dict.fromkeys(k for run in self.runs for k in run))
        self.medians = {k: statistics.median(run[k] for run in self.runs if k in run) for k in keys}
        self.verdicts = []
        for goal in self.goals:
            value = self.medians.get(goal.figure)
            self.verdicts.append((goal, value, None if value is None else goal.met(value)))


def settings_for(args: argparse.Namespace, work: Path) -> Settings:
    if args.smoke:
        s = Settings(
            rows=5_000,
            time_scale=20.0,
            baseline_contacts=50,
            shared_time_scale=20.0,
            realtime_rows=3_000,
            realtime_time_scale=20.0,
            work=work,
            scale_rows=20_000,
            functions_rows=5_000,
            functions_time_scale=20.0,
            refresh_time_scale=20.0,
        )
    else:
        s = Settings(work=work)
    if args.rows:
        s.rows = args.rows
    if args.time_scale:
        s.time_scale = args.time_scale
    if args.allowance is not None:
        s.allowance = args.allowance
    return s


def _fmt(value: float | None) -> str:
    if value is None:
        return "n/a"
    if value == int(value) and abs(value) >= 100:
        return f"{int(value):,}"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"


def run(args: argparse.Namespace) -> list[Outcome]:
    chosen = [args.scenario] if args.scenario else list(SCENARIOS)
    if not args.scenario and not args.smoke:
        chosen = [name for name in chosen if name not in ON_REQUEST]
    with tempfile.TemporaryDirectory(prefix="exporter-bench-") as tmp:
        work = Path(tmp)
        s = settings_for(args, work)
        started = time.monotonic()
        dataset = data.generate(work / "data", s.rows)
        print(f"generated {s.rows:,} rows (CSV, CDM, refresh) in {time.monotonic() - started:.1f}s")
        prepare = PrepareScenario(dataset, s) if "prepare" in chosen else None
        push = PushScenario(dataset, s) if "push" in chosen else None
        baseline = BaselineScenario(s) if "baseline" in chosen else None
        shared = SharedAccountScenario(s) if "shared_account" in chosen else None
        realtime = RealtimeScenario(s) if "realtime" in chosen else None
        scale = ScaleScenario(s) if "scale" in chosen else None
        functions = FunctionsScenario(s) if "functions" in chosen else None
        refresh = RefreshScenario(dataset, s) if "refresh_realtime" in chosen else None
        results: dict[str, list[Figures]] = {name: [] for name in chosen}
        for i in range(args.runs):
            for name, scenario in (
                ("prepare", prepare),
                ("push", push),
                ("baseline", baseline),
                ("shared_account", shared),
                ("realtime", realtime),
                ("scale", scale),
                ("functions", functions),
                ("refresh_realtime", refresh),
            ):
                if scenario is None or i >= getattr(scenario, "max_runs", args.runs):
                    continue
                t = time.monotonic()
                figures = scenario.run_once()
                results[name].append(figures)
                print(
                    f"[run {i + 1}/{args.runs}] {name} ({time.monotonic() - t:.0f}s): "
                    + json.dumps({k: round(v, 3) for k, v in figures.items()})
                )
                if name == "push" and push is not None:
                    print(
                        f"[run {i + 1}/{args.runs}] refresh: "
                        + json.dumps({k: round(v, 3) for k, v in push.refresh_runs[-1].items()})
                    )
    outcomes = []
    if prepare is not None:
        outcomes.append(Outcome("prepare", results["prepare"], PrepareScenario.goals))
    if push is not None:
        outcomes.append(Outcome("push", results["push"], PushScenario.goals))
        outcomes.append(Outcome("refresh", push.refresh_runs, PushScenario.refresh_goals))
    if shared is not None:
        outcomes.append(
            Outcome("shared_account", results["shared_account"], SharedAccountScenario.goals)
        )
    if realtime is not None:
        outcomes.append(Outcome("realtime", results["realtime"], RealtimeScenario.goals))
    if scale is not None:
        outcomes.append(Outcome("scale", results["scale"], ScaleScenario.goals))
    if functions is not None:
        outcomes.append(Outcome("functions", results["functions"], FunctionsScenario.goals))
    if refresh is not None:
        outcomes.append(
            Outcome("refresh_realtime", results["refresh_realtime"], RefreshScenario.goals)
        )
    for o in outcomes:
        o.settle()
    if baseline is not None:
        ours = next((o.medians for o in outcomes if o.name == "push"), None)
        runs_ = results["baseline"]
        for figures in runs_:
            if ours:
                figures["ours_requests_per_contact"] = ours["requests_per_contact"]
                figures["advantage"] = figures["requests_per_contact"] / max(
                    ours["requests_per_contact"], 1e-12
                )
        o = Outcome("baseline", runs_, BaselineScenario.goals)
        o.settle()
        outcomes.append(o)
    return outcomes


def summary(outcomes: Sequence[Outcome]) -> str:
    lines = []
    for o in outcomes:
        for goal, value, met in o.verdicts:
            mark = "n/a" if met is None else ("MET" if met else "MISSED")
            lines.append(f"{o.name:9} {goal.text:45} median {_fmt(value):>10}  {mark}")
    return "\n".join(lines)


def report(
    outcomes: Sequence[Outcome],
    args: argparse.Namespace,
    argv: Sequence[str],
    load: tuple[tuple[float, float, float], tuple[float, float, float]],
    seconds: float,
) -> str:
    m = harness.machine()
    s = settings_for(args, Path("."))
    out = [
        "# Benchmark results",
        "",
        f"- date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- command: `python -m bench.run {shlex.join(argv)}` ({seconds / 60:.1f} min)",
        f"- machine: {m['cpu']}, {m['cores']} cores, {m['ram']} RAM, Python {m['python']}, "
        f"{m['os']}",
        "- load average (1/5/15 min) at start: "
        + " / ".join(f"{x:.2f}" for x in load[0])
        + ", at end: "
        + " / ".join(f"{x:.2f}" for x in load[1])
        + " (the machine is shared: CPU figures are noisy)",
        f"- {s.rows:,} rows; {args.runs} run(s) per scenario, interleaved; every figure is the "
        "median of the runs",
        f"- push and refresh: sandbox `--time-scale {s.time_scale:g}` in its own process, "
        f"client limiter at the same scale (allowance "
        f"{'default' if s.allowance is None else f'{s.allowance:g} s'}); "
        f"baseline at `--time-scale {s.baseline_time_scale:g}`; shared account at "
        f"`--time-scale {s.shared_time_scale:g}`; realtime: {s.realtime_rows:,} rows at "
        f"`--time-scale {s.realtime_time_scale:g}` (and at {s.time_scale:g}), one run; "
        f"functions ({s.functions_rows:,} contacts) at `--time-scale {s.functions_time_scale:g}`; "
        "times marked *sandbox* are "
        "times at ActiveCampaign's real limits",
        "",
        "## Goals",
        "",
        "| scenario | goal | median | verdict |",
        "| --- | --- | ---: | --- |",
    ]
    for o in outcomes:
        for goal, value, met in o.verdicts:
            verdict = "n/a" if met is None else ("met" if met else "**missed**")
            out.append(f"| {o.name} | {goal.text} | {_fmt(value)} | {verdict} |")
    for o in outcomes:
        out += ["", f"## {o.name}", ""]
        head = " | ".join(f"run {i + 1}" for i in range(len(o.runs)))
        out.append(f"| figure | median | {head} |")
        out.append("| --- | ---: |" + " ---: |" * len(o.runs))
        for k, v in o.medians.items():
            cells = " | ".join(_fmt(r.get(k)) for r in o.runs)
            out.append(f"| {k} | {_fmt(v)} | {cells} |")
    return "\n".join(out) + "\n"


def write(path: Path, text: str) -> None:
    notes = ""
    if path.exists():
        old = path.read_text(encoding="utf-8")
        if NOTES_MARKER in old:
            notes = old[old.index(NOTES_MARKER) + len(NOTES_MARKER) :]
    path.write_text(f"{text}\n{NOTES_MARKER}{notes}", encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    """Command line; exit status 0 when the benchmarks ran (missed goals are reported)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--smoke", action="store_true", help="tiny sizes: check the harness")
    p.add_argument("--write", metavar="PATH", help="write the report (markdown) here")
    p.add_argument("--json", metavar="PATH", help="write every figure as JSON here")
    p.add_argument("--runs", type=int, default=None, help="runs per scenario (3; smoke: 1)")
    p.add_argument("--scenario", choices=SCENARIOS)
    p.add_argument("--rows", type=int, help="segment size (1,000,000; smoke: 5,000)")
    p.add_argument("--time-scale", type=float, help="push/refresh sandbox time scale (10)")
    p.add_argument("--allowance", type=float, help="client limiter allowance, real seconds")
    args = p.parse_args(argv)
    if args.runs is None:
        args.runs = 1 if args.smoke else 3
    load_before = harness.load_average()
    started = time.monotonic()
    outcomes = run(args)
    seconds = time.monotonic() - started
    print(summary(outcomes))
    if args.write:
        text = report(outcomes, args, argv, (load_before, harness.load_average()), seconds)
        write(Path(args.write), text)
        print(f"wrote {args.write}")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {o.name: {"medians": o.medians, "runs": o.runs} for o in outcomes}, indent=2
            ),
            encoding="utf-8",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
