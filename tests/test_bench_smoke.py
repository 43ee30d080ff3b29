"""The benchmark harness at tiny sizes, so it does not rot: every scenario runs for real (the
sandbox in its own process, prepare in a child process) and reports sane figures. Speed goals
are not checked here: they belong to ``make bench``."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bench import run as bench_run
from bench.scenarios import allowed_within, earliest_start

Smoke = tuple[dict[str, dict[str, Any]], str]
"""(figures by scenario: medians and runs, the markdown report)"""


def test_ideal_schedule_matches_both_budgets() -> None:
    assert [earliest_start(k) for k in (0, 4, 5, 99, 100, 199, 3999)] == [
        0.0,
        0.0,
        1.0,
        19.0,
        60.0,
        79.0,
        2359.0,
    ]
    assert allowed_within(0.0) == 5
    assert allowed_within(19.0) == 100
    assert allowed_within(60.0) == 105
    # every request k fits within the span from the first to its own start
    assert all(allowed_within(earliest_start(k)) >= k + 1 for k in range(0, 4000, 37))


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> Smoke:
    out = tmp_path_factory.mktemp("bench")
    figures, report = out / "figures.json", out / "RESULTS.md"
    assert bench_run.main(["--smoke", "--json", str(figures), "--write", str(report)]) == 0
    return json.loads(figures.read_text()), report.read_text()


def test_every_scenario_reports_its_figures(smoke: Smoke) -> None:
    figures, _ = smoke
    assert set(figures) == {
        "prepare",
        "push",
        "refresh",
        "baseline",
        "shared_account",
        "realtime",
        "scale",
        "functions",
        "refresh_realtime",
    }
    for name, data in figures.items():
        assert len(data["runs"]) == 1, name
        assert data["medians"], name


def test_prepare_figures_are_sane(smoke: Smoke) -> None:
    m = smoke[0]["prepare"]["medians"]
    for variant in ("csv_first", "cdm_first", "csv_diff"):
        assert m[f"{variant}.rows"] == 5000
        assert 0 < m[f"{variant}.cpu_seconds"] < 60
        assert m[f"{variant}.rows_per_cpu_second"] > 0
        assert 20 < m[f"{variant}.peak_rss_mb"] < 1024
    # 0.5% invalid and 0.2% duplicate rows are not sent; the diff sends only what moved
    assert m["csv_first.to_send"] == m["cdm_first.to_send"] == 4965
    assert 0 < m["csv_diff.to_send"] < 200
    assert m["csv_diff.leavers"] > 0


def test_push_figures_are_sane(smoke: Smoke) -> None:
    m = smoke[0]["push"]["medians"]
    assert m["completed"] == 1
    assert m["contacts_confirmed"] == 4965
    assert m["bulk_accepted"] == 20  # 4965 contacts / 250 per request
    assert 240 <= m["mean_contacts_per_request"] <= 250
    assert m["import_info_requests"] >= m["bulk_requests"]
    assert 0 < m["wire_efficiency_pct"] <= 100
    assert m["push_confirm_sandbox_min"] > 0
    assert m["throttled"] >= 0


def test_shared_account_figures_are_sane(smoke: Smoke) -> None:
    """Three exports (1,000, 100 and 10 contacts) at once on one account: every figure is
    there and consistent (the efficiency goal itself is for the full size)."""
    m = smoke[0]["shared_account"]["medians"]
    assert m["completed"] == 1 and m["throttled"] == 0
    assert m["bulk_accepted"] == 4 + 1 + 1  # ~993, ~99 and ~10 valid contacts
    assert m["peak_requests_per_second"] <= 5 and m["bulk_requests_per_minute_peak"] <= 100
    assert 0 < m["small_done_sandbox_min"] < 5
    assert 0 < m["combined_wire_efficiency_pct"] <= 100


def test_the_limiter_bound_is_the_floor_with_the_ledgers_margins() -> None:
    """400 bulk requests: the floor is 199 s; with 0.5% + 0.1 s per window the client can do
    no better than 202.2 s at time scale 1, and than 222 s at 10 (0.1 real s = 1 sandbox s)."""
    from bench.realtime import limiter_bound

    assert limiter_bound(400, 1.0) == pytest.approx(100 * 199 / (19 * 1.105 + 3 * 60.4))
    assert limiter_bound(400, 10.0) == pytest.approx(100 * 199 / (19 * 2.005 + 3 * 61.3))
    assert limiter_bound(1, 1.0) == 100.0


def test_realtime_figures_are_sane(smoke: Smoke) -> None:
    """``exports add`` then ``run`` as two command-line processes, at the realtime scale and
    at the push's (smoke: both compressed; 3,000 rows): every figure there, side by side."""
    m = smoke[0]["realtime"]["medians"]
    assert m["real.time_scale"] == m["compressed.time_scale"] == 20
    for label in ("real", "compressed"):
        assert m[f"{label}.completed"] == 1, label
        assert m[f"{label}.throttled"] == 0, label
        assert m[f"{label}.bulk_accepted"] == 12  # ~2,980 valid contacts / 250
        assert m[f"{label}.contacts_confirmed"] > 2_900
        assert m[f"{label}.import_info_requests"] >= 12
        assert m[f"{label}.floor_sandbox_s"] == 2.0  # 12 requests: five a second
        assert 0 < m[f"{label}.wire_efficiency_pct"] <= m[f"{label}.limiter_bound_pct"] + 1.0
        assert m[f"{label}.peak_requests_per_second"] <= 5
        assert 0 < m[f"{label}.exports_add_wall_s"] < m[f"{label}.wall_seconds"]


def test_functions_figures_are_sane(smoke: Smoke) -> None:
    """One run of 5,000 rows through the orchestration (replay engine, entity, activities on a
    thread pool after their dispatch delay) against the sandbox: every figure is there and
    consistent (the efficiency goal itself is for the full size)."""
    m = smoke[0]["functions"]["medians"]
    assert m["completed"] == 1 and m["throttled"] == 0
    assert m["contacts_confirmed"] == 4965
    assert m["bulk_accepted"] == 20  # 4965 contacts / 250 per request
    assert m["peak_requests_per_second"] <= 5 and m["bulk_requests_per_minute_peak"] <= 100
    assert m["floor_sandbox_s"] == 3.0  # 20 requests: bursts of 5 at 0, 1, 2 and 3 s
    assert 0 < m["wire_efficiency_pct"] <= 100
    # prepare, members, push, confirm, members, finalize: each waited 50-500 ms first
    assert m["activities"] >= 6
    assert 50 <= m["mean_dispatch_ms"] <= 500


def test_refresh_and_baseline_figures_are_sane(smoke: Smoke) -> None:
    refresh = smoke[0]["refresh"]["medians"]
    assert refresh["completed"] == 1
    assert refresh["new"] > 0 and refresh["changed"] > 0 and refresh["left"] > 0
    assert refresh["contacts_confirmed"] == refresh["new"] + refresh["changed"]
    assert refresh["leavers_unsubscribed"] == refresh["left"]
    assert 0 < refresh["projected_seconds"] < 600
    baseline = smoke[0]["baseline"]["medians"]
    assert baseline["requests"] == 2 * baseline["contacts"] == 100
    assert baseline["advantage"] > 10


def test_the_report_names_machine_command_and_verdicts(
    smoke: Smoke,
) -> None:
    text = smoke[1]
    for needle in ("cores", "Python", "load average", "--smoke", "## Goals", "median"):
        assert needle in text
    assert text.count("| push |") == 4


def test_push_probe_reports_pace_and_lateness() -> None:
    """``python -m bench.push_probe`` at a tiny size: a real push through the instrumented
    limiter; every figure is there and consistent with the requests sent."""
    from bench.push_probe import busiest_window, probe

    figures = probe(3_000, 20.0)
    assert figures["completed"] == 1.0
    assert figures["bulk_requests"] == figures["import_info_requests"] == 12  # ~2,980 valid
    assert figures["throttled"] == 0
    assert 0 < figures["max_sends_per_server_second"] <= 5
    assert 0 <= figures["late_ms_p50"] <= figures["late_ms_p99"] <= figures["late_ms_max"]
    assert busiest_window([0.0, 0.5, 0.9, 1.2], 1.0) == 3


def test_scale_figures_are_sane(smoke: Smoke) -> None:
    """The 10M benchmark's phases at 20,000 rows: every phase ran in its own process, the
    refresh finalize committed what its prepare planned, the worst peak is the phases' max."""
    m = smoke[0]["scale"]["medians"]
    steps = ("first.prepare", "first.finalize", "state.load", "activity.members")
    steps += ("refresh.prepare", "refresh.finalize")
    for step in steps:
        assert 20 < m[f"{step}.peak_rss_mb"] < 1024, step
        assert 0 <= m[f"{step}.cpu_seconds"] < 120, step
    assert m["rows"] == 20_000
    peaks = [v for k, v in m.items() if k.endswith(".peak_rss_mb")]
    assert len(peaks) == 8 and m["worst_peak_rss_mb"] == max(peaks)
    assert 0 < m["state_mb"] < 2 and m["state_load_seconds"] > 0
    assert m["refresh.to_send"] > 0 and m["refresh.leavers"] > 0


def test_refresh_realtime_figures_are_sane(smoke: Smoke) -> None:
    """The daily refresh alone (:mod:`bench.refresh_probe`): sends only what moved, every
    contact confirmed, the report's phases within the wall time."""
    m = smoke[0]["refresh_realtime"]["medians"]
    assert m["completed"] == 1 and m["throttled"] == 0
    assert 0 < m["bulk_requests"] <= m["import_info_requests"]
    assert 0 < m["contacts_confirmed"] < 200 and m["leavers_unsubscribed"] > 0
    assert m["first_bulk_s"] <= m["last_bulk_s"] <= m["last_poll_s"] <= m["wall_seconds"]
    assert m["report.prepare_s"] + m["report.sending_s"] <= m["wall_seconds"]
    assert m["end_to_end_seconds"] >= m["wall_seconds"]  # time scale 20: sending projected
