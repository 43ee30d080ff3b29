"""Fault soak: a whole export against a sandbox that misbehaves the way ActiveCampaign does.

Per API request: 10% 503 pages, 5% 429s with ``Retry-After``, 2% connection resets, 5% answers
slower than the client's timeout; per queued bulk import: 1% end ``failed``. The guarantee under
test (``docs/guarantees.md``): after the first run plus **at most one** follow-up run over the same
snapshot, every valid contact is on the list, every report reconciles exactly, the state holds
exactly the confirmed contacts, and the exporter never causes throttling beyond what was injected.

A follow-up run is needed only when the first run reports contacts ``failed``: a batch whose
import failed twice, or whose bulk import exhausted its retries (at these rates one request in
~10,000 fails six times in a row; that batch fails and the run goes on).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from examples import synthetic
from exporter.errors import RetriableApiError
from exporter.run.report import RunReport
from sandbox import Faults
from tests.reliability import support

TIME_SCALE = 100.0
CLIENT_TIMEOUT = 0.25
"""Real seconds: well below the sandbox's slow answers (0.6 s), well above a normal answer."""

SOAK_FAULTS = Faults(
    http_503_rate=0.10,
    http_429_rate=0.05,
    retry_after=1.0,
    reset_rate=0.02,
    slow_rate=0.05,
    slow_seconds=0.6,
    batch_failed_rate=0.01,
)


def _soak(tmp_path: Path, rows: int, seed: int) -> None:
    csv_path = synthetic.write_csv(tmp_path / "segment.csv", rows)
    expected = synthetic.expected_valid_emails(rows)
    home = tmp_path / "home"
    with support.running_sandbox(time_scale=TIME_SCALE, seed=seed) as sb:
        support.configure(home, sb.port)
        sb.set_faults(SOAK_FAULTS)
        sb.reset_stats()
        engine = support.engine(home, time_scale=TIME_SCALE, timeout=CLIENT_TIMEOUT)

        reports: list[RunReport] = []
        interrupted = 0
        runs = 0
        while runs < 2:
            runs += 1
            try:
                report = support.run_csv(engine, csv_path)
            except RetriableApiError:
                # Requests exhausting their retries three times in a row (p ~ 1e-12 here) mean
                # an outage: the run stops and the next run resumes it.
                interrupted += 1
                continue
            reports.append(report)
            if report.status == "completed":
                break
        assert reports, "no run finished"
        final = reports[-1]
        assert final.status == "completed", final.summary()

        # Every valid contact is on the list, and nothing else is.
        members = sb.list_members(support.LIST_ID)
        assert len(members) == len(expected)
        assert members == expected

        # Every report reconciles exactly; the first run saw every row.
        for report in reports:
            assert report.reconciliation_problems() == [], report.summary()
            assert report.rows_read == rows
        first = reports[0]
        assert first.valid == len(expected)
        assert first.duplicates == rows - len(expected) - first.rejected
        assert first.rejected_by_reason == {"invalid_email": first.rejected}
        confirmed_total = sum(r.confirmed for r in reports)
        assert confirmed_total >= len(expected)  # a resumed run re-counts nothing lost
        assert final.confirmed + final.unchanged == len(expected)

        # The state holds exactly the confirmed contacts, all subscribed by this export.
        state = support.state_emails(home)
        assert set(state) == expected
        assert all(subscribed for _fp, subscribed in state.values())
        assert support.check_store_intact(home) == []

        # Faults were really injected, and retries did not storm.
        injected = sb.injected_fault_counts()
        for kind in ("http_503", "http_429", "reset", "slow"):
            assert injected.get(kind, 0) > 0, injected
        assert sb.throttled_count() <= injected.get("http_429", 0)
        counts = sb.request_counts()
        batches = -(-len(expected) // 250)
        resubmits = sum(b.resubmits for r in reports for b in r.batches)
        # 22% of requests fail: ~1.28 attempts per request on average.
        assert counts["POST /import/bulk_import"] <= 1.6 * (batches + resubmits) + 10, counts
    assert runs - interrupted <= 2


def test_soak_20k(tmp_path: Path) -> None:
    """20,000 contacts through every kind of fault (always run)."""
    _soak(tmp_path, 20_000, seed=20)


@pytest.mark.slow
def test_soak_200k(tmp_path: Path) -> None:
    """200,000 contacts through every kind of fault (in ``make test`` too)."""
    _soak(tmp_path, 200_000, seed=200)
