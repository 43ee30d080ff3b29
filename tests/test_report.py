"""The run report's accounting equations."""

from __future__ import annotations

from collections import Counter

import pytest
from pydantic import ValidationError

from exporter.run.report import BatchRecord, ReportDraft, RunReport
from exporter.storage.records import SCHEMA_VERSION


def _report(**counts: int) -> ReportDraft:
    report = ReportDraft(export="e", run_id="r", snapshot="s", started_at="2026-11-25T00:00:00Z")
    for name, value in counts.items():
        setattr(report, name, value)
    return report


def test_a_balanced_report_reconciles() -> None:
    report = _report(rows_read=10, confirmed=5, unchanged=1, duplicates=1, left=2)
    report.add_rejections(Counter({"invalid_email": 2}))
    report.add_failures({"batch_failed": 1})
    report.leavers_unsubscribed, report.leavers_kept = 1, 1
    assert report.reconciliation_problems() == []
    assert "report reconciles" in report.summary()


def test_a_lost_row_is_reported() -> None:
    report = _report(rows_read=10, confirmed=9)
    problems = report.reconciliation_problems()
    assert len(problems) == 1 and "rows_read 10" in problems[0]
    assert "DOES NOT RECONCILE" in report.summary()


def test_reason_breakdowns_must_add_up() -> None:
    report = _report(rows_read=3, rejected=3)
    report.rejected_by_reason = {"invalid_email": 2}
    assert any("rejected_by_reason" in p for p in report.reconciliation_problems())


def test_leavers_must_add_up() -> None:
    report = _report(left=3, leavers_unsubscribed=1)
    assert any("left 3" in p for p in report.reconciliation_problems())


def test_json_roundtrip_keeps_batches() -> None:
    report = _report(rows_read=1, confirmed=1, sent=1)
    report.batches.append(BatchRecord(index=0, batch_id="b1", contacts=1, status="completed"))
    stored = report.freeze()
    again = RunReport.from_dict(stored.to_dict())
    assert again == stored
    assert stored.to_dict()["reconciles"] is True


def test_the_stored_report_is_frozen_and_versioned() -> None:
    stored = _report(rows_read=1, confirmed=1).freeze()
    with pytest.raises(ValidationError):
        stored.status = "failed"  # type: ignore[misc]
    assert stored.to_dict()["schema_version"] == SCHEMA_VERSION


def test_the_stored_report_shares_nothing_with_its_draft() -> None:
    draft = _report(rows_read=1, confirmed=1)
    stored = draft.freeze()
    draft.timings["total"] = 1.0
    draft.batches.append(BatchRecord(index=0, batch_id=None, contacts=1, status="not_sent"))
    assert stored.timings == {} and stored.batches == []
