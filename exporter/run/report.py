"""The run report: every input row accounted for, in numbers that add up.

Row accounting (one equation, checked by :meth:`RunReport.reconciliation_problems`)::

    rows_read = confirmed + unchanged + rejected + duplicates + failed + planned

- ``confirmed``: sent, and ActiveCampaign confirmed it (batch completed, email not in failure)
- ``unchanged``: identical to what the last run confirmed, so not sent (incremental sync)
- ``rejected``: never sent, or refused by ActiveCampaign's validation; each with a reason
- ``duplicates``: the same email (case-insensitively) appeared earlier; sent once
- ``failed``: sent (or due to be sent) but not confirmed; the next run sends it again
- ``planned``: a dry run's would-be sends (zero in a real run)

Leavers (contacts in the last snapshot, not in this one) are accounted separately::

    left = leavers_unsubscribed + leavers_failed + leavers_kept
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from exporter.storage.records import Record, Value

# One list of statuses, kept with the store layout that records them (storage may not import
# run); re-exported here, where reports are made.
from exporter.storage.runs import EndedStatus as EndedStatus
from exporter.storage.runs import RunStatus as RunStatus


class BatchRecord(Value):
    """What happened to one bulk-import request."""

    index: int
    batch_id: str | None
    contacts: int
    status: str
    """Final ActiveCampaign status (``completed``, ``failed``, ``interrupted``) or ``not_sent``."""
    resubmits: int = 0
    confirmed: int = 0
    failed: int = 0


class ReportFields(BaseModel):
    """What a run report says, and the accounting over it (shared by the stored
    :class:`RunReport` and the :class:`ReportDraft` finalize fills in)."""

    model_config = ConfigDict(extra="ignore")

    export: str
    run_id: str
    snapshot: str
    """The snapshot's identity (paths and versions)."""
    started_at: str
    finished_at: str | None = None
    status: RunStatus = "running"
    error: str | None = None
    """Why the run stopped, when it did (never holds secrets or addresses)."""
    dry_run: bool = False
    full_resync: bool = False

    rows_read: int = 0
    valid: int = 0
    rejected: int = 0
    rejected_by_reason: dict[str, int] = Field(default_factory=dict)
    duplicates: int = 0
    new: int = 0
    changed: int = 0
    unchanged: int = 0
    planned: int = 0
    sent: int = 0
    confirmed: int = 0
    failed: int = 0
    failed_by_reason: dict[str, int] = Field(default_factory=dict)

    left: int = 0
    leavers_unsubscribed: int = 0
    leavers_failed: int = 0
    leavers_kept: int = 0
    email_changes: int = 0

    batches: list[BatchRecord] = Field(default_factory=list)
    timings: dict[str, float] = Field(default_factory=dict)
    """Seconds per phase: ``prepare``, ``push``, ``confirm``, ``finalize``, ``total``."""
    requests: dict[str, int] = Field(default_factory=dict)
    """API requests made, by kind."""
    artefacts: dict[str, str] = Field(default_factory=dict)
    """Store paths of the rejected-rows CSV, the dry-run plan and so on."""

    def reconciliation_problems(self) -> list[str]:
        """Empty when every row and every leaver is accounted for exactly once."""
        problems = []
        rows = (
            self.confirmed
            + self.unchanged
            + self.rejected
            + self.duplicates
            + self.failed
            + self.planned
        )
        if rows != self.rows_read:
            problems.append(
                f"rows_read {self.rows_read} != confirmed {self.confirmed} + unchanged "
                f"{self.unchanged} + rejected {self.rejected} + duplicates {self.duplicates}"
                f" + failed {self.failed} + planned {self.planned} (= {rows})"
            )
        if sum(self.rejected_by_reason.values()) != self.rejected:
            problems.append("rejected_by_reason does not add up to rejected")
        if sum(self.failed_by_reason.values()) != self.failed:
            problems.append("failed_by_reason does not add up to failed")
        leavers = self.leavers_unsubscribed + self.leavers_failed + self.leavers_kept
        if leavers != self.left:
            problems.append(
                f"left {self.left} != unsubscribed {self.leavers_unsubscribed} + failed "
                f"{self.leavers_failed} + kept {self.leavers_kept}"
            )
        return problems

    def reconciles(self) -> bool:
        return not self.reconciliation_problems()

    def summary(self) -> str:
        """A few lines for people."""
        lines = [
            f"Export {self.export} run {self.run_id}: {self.status}"
            + (" (dry run)" if self.dry_run else ""),
            f"  rows read {self.rows_read:,}: valid {self.valid:,}, rejected {self.rejected:,},"
            f" duplicates {self.duplicates:,}",
            f"  new {self.new:,}, changed {self.changed:,}, unchanged {self.unchanged:,},"
            f" left {self.left:,}",
        ]
        if self.dry_run:
            lines.append(f"  would send {self.planned:,} contacts (nothing was sent)")
        else:
            lines.append(
                f"  sent {self.sent:,} in {len(self.batches):,} batches: confirmed"
                f" {self.confirmed:,}, failed {self.failed:,}"
            )
        if self.left:
            lines.append(
                f"  leavers: unsubscribed {self.leavers_unsubscribed:,}, failed"
                f" {self.leavers_failed:,}, kept {self.leavers_kept:,}"
            )
        if self.rejected_by_reason:
            reasons = ", ".join(f"{k} {v:,}" for k, v in sorted(self.rejected_by_reason.items()))
            lines.append(f"  rejected by reason: {reasons}")
        if self.failed_by_reason:
            reasons = ", ".join(f"{k} {v:,}" for k, v in sorted(self.failed_by_reason.items()))
            lines.append(f"  failed by reason: {reasons}")
        if self.error:
            lines.append(f"  error: {self.error}")
        if "total" in self.timings:
            lines.append(f"  took {self.timings['total']:.1f} s")
        problems = self.reconciliation_problems()
        lines.append(
            "  report reconciles"
            if not problems
            else "  DOES NOT RECONCILE: " + "; ".join(problems)
        )
        return "\n".join(lines)


class RunReport(Record, ReportFields):
    """Everything a run did, as stored in ``runs/<export>/<run>/report.json`` (versioned, read
    and written through :func:`~exporter.storage.records.read_record` /
    :func:`~exporter.storage.records.write_record`). JSON for machines (:meth:`to_dict`, with
    the derived ``reconciles``), :meth:`summary` for people."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data, with ``reconciles`` (derived: ignored when read)."""
        return {**super().to_dict(), "reconciles": self.reconciles()}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)


class ReportDraft(ReportFields):
    """A report while finalize adds a run up (mutable); :meth:`freeze` makes the
    :class:`RunReport` that is stored."""

    def add_rejections(self, reasons: Counter[str] | dict[str, int]) -> None:
        for reason, n in reasons.items():
            self.rejected += n
            self.rejected_by_reason[reason] = self.rejected_by_reason.get(reason, 0) + n

    def add_failures(self, reasons: Counter[str] | dict[str, int]) -> None:
        for reason, n in reasons.items():
            self.failed += n
            self.failed_by_reason[reason] = self.failed_by_reason.get(reason, 0) + n

    def freeze(self) -> RunReport:
        """The stored report: a copy (its lists and maps too, not shared with this draft)."""
        return RunReport.model_validate(
            {k: v.copy() if isinstance(v, list | dict) else v for k, v in self}
        )
