"""Adding up a run: the per-batch records a confirm writes, and the tally that turns a run's
chunk records into its report and the next state's changes.

Failure reasons are short, countable codes (``docs/guarantees.md`` lists them): what a
:class:`~exporter.activecampaign.ConfirmedBatch` ended as (:func:`failure_code`), or why a
contact was never confirmed (``run_stopped``, ``cancelled``, ``shrink_guard``).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import get_args

from exporter.activecampaign import UNAVAILABLE, ConfirmedBatch
from exporter.incremental import update as update_mod
from exporter.planning.contacts import Batch, PreparedContact
from exporter.planning.preparer import LEAVERS
from exporter.run.rejects import API_REJECTED
from exporter.run.report import BatchRecord, EndedStatus, ReportDraft
from exporter.storage.records import (
    ConfirmedBatchEntry,
    ConfirmedRecord,
    Manifest,
    ManifestChunk,
    SentBatchEntry,
    SentRecord,
)

logger = logging.getLogger(__name__)

RUN_STOPPED = "run_stopped"
"""Failure reason of contacts that were due to be sent when a fatal error stopped the run."""
CANCELLED = "cancelled"
ENDED = frozenset(get_args(EndedStatus))
"""Statuses of a run that stopped without finalizing itself (closed by someone else)."""
SHRINK_GUARD = "shrink_guard"

IMPORT_TIMEOUT = "import_timeout"
"""The batch was queued but did not become final before the poll deadline."""
API_UNAVAILABLE = "api_unavailable"
"""The batch could not be (re)queued: ActiveCampaign stayed unavailable beyond every retry."""
OUTCOME_UNKNOWN = frozenset({IMPORT_TIMEOUT, API_UNAVAILABLE})
"""Failure codes whose contacts may have landed anyway (a request that timed out may have been
accepted): remembered as possibly ours, and sent again next run."""


def failure_code(status: str) -> str:
    """Short, countable reason for contacts of a batch that ended ``status``."""
    if status == "completed":
        return "import_failure_list"
    if status == UNAVAILABLE:
        return API_UNAVAILABLE
    return f"import_{status}"


def confirmed_record(outcome: ConfirmedBatch, batches: Mapping[int, Batch]) -> ConfirmedBatchEntry:
    code = failure_code(outcome.status)
    return ConfirmedBatchEntry(
        index=outcome.batch_index,
        batch_id=outcome.batch_id,
        status=outcome.status,
        resubmits=outcome.resubmits,
        contacts=len(batches[outcome.batch_index].contacts),
        confirmed=len(outcome.confirmed),
        failed=[(c.key, code) for c, _reason in outcome.failed],
        rejected=[(c.key, reason) for c, reason in outcome.rejected],
    )


@dataclass
class RunTally:
    """Adds up a run's chunk records into its report."""

    report: ReportDraft
    manifest: Manifest
    cancelled: bool
    error: str | None
    ended: EndedStatus | None = None
    """``terminated`` or ``abandoned``: the run stopped without finalizing itself."""
    failed: Counter[str] = field(default_factory=Counter)
    api_rejections: list[tuple[PreparedContact, str]] = field(default_factory=list)
    update: update_mod.StateUpdate = field(init=False)
    """The next state's changes, recorded batch by batch (compact: no contacts are kept, so
    finalizing a million contacts stays small): confirmed sends and unsubscriptions, and sends
    whose outcome was never learnt — they may have landed, so they are remembered as ours (to
    be unsubscribed if they leave) and sent again next run."""
    bulk_requests: int = 0
    push_seconds: float = 0.0
    confirm_seconds: float = 0.0

    def __post_init__(self) -> None:
        r, m = self.report, self.manifest
        c = m.counts
        r.rows_read, r.valid, r.duplicates = c.rows_read, c.valid, c.duplicates
        r.new, r.changed, r.unchanged = c.new, c.changed, c.unchanged
        r.left, r.email_changes = c.left, c.email_changes
        r.add_rejections(dict(m.rejected_by_reason))
        r.timings["prepare"] = m.prepare_seconds
        r.artefacts.update(m.artefacts)
        self.stop_reason = self.ended or (CANCELLED if self.cancelled else RUN_STOPPED)
        self.update = update_mod.StateUpdate(snapshot_count=m.snapshot_count)

    def chunk(
        self,
        info: ManifestChunk,
        sent: SentRecord | None,
        confirmed: ConfirmedRecord | None,
        batches: Mapping[int, Batch],
    ) -> None:
        """Add one chunk. Its records may be partial (a push or confirm that stopped midway):
        batches with a final outcome count as such; acknowledged ones as not confirmed (their
        contacts possibly ours); after a push that stopped, the first batch without an entry
        may have been in flight, so its contacts are possibly ours too."""
        leavers = info.kind == LEAVERS
        if sent is None:
            n = info.contacts
            if leavers:
                self.report.leavers_failed += n
            else:
                self.failed[self.stop_reason] += n
            return
        self.push_seconds += sent.seconds
        self.report.sent += sent.sent
        final = {b.index: b for b in confirmed.batches} if confirmed is not None else {}
        if confirmed is not None:
            self.confirm_seconds += confirmed.seconds
        for s in sent.batches:
            if s.index in final:
                self._confirmed_batch(final[s.index], batches[s.index], leavers)
            else:
                self._unconfirmed_batch(s, batches[s.index], leavers)
        if not sent.complete:
            recorded = {s.index for s in sent.batches}
            unsent = [b for i, b in sorted(batches.items()) if i not in recorded]
            for position, batch in enumerate(unsent):
                self._unsent_batch(batch, leavers, in_flight=position == 0)

    def _confirmed_batch(self, b: ConfirmedBatchEntry, batch: Batch, leavers: bool) -> None:
        bad = {key for key, _ in b.failed} | {key for key, _ in b.rejected}
        ok = [c for c in batch.contacts if c.key not in bad] if b.status == "completed" else []
        if len(ok) != b.confirmed:
            logger.error("batch %d: record and chunk disagree", b.index)
        by_key = {c.key: c for c in batch.contacts}
        self.bulk_requests += (1 if b.batch_id else 0) + b.resubmits
        self.report.batches.append(
            BatchRecord(
                index=b.index,
                batch_id=b.batch_id,
                contacts=b.contacts,
                status=b.status,
                resubmits=b.resubmits,
                confirmed=len(ok),
                failed=len(b.failed),
            )
        )
        unknown = {key for key, code in b.failed if code in OUTCOME_UNKNOWN}
        if leavers:
            for c in ok:
                self.update.confirm_left(c.key)
            for key in unknown:
                self.update.mark_uncertain_left(key)
            self.report.leavers_unsubscribed += len(ok)
            self.report.leavers_failed += len(b.failed) + len(b.rejected)
            return
        for c in ok:
            self.update.confirm_sent(c)
        for key in unknown:
            self.update.mark_uncertain(by_key[key])
        self.report.confirmed += len(ok)
        for _key, code in b.failed:
            self.failed[code] += 1
        for key, reason in b.rejected:
            self.api_rejections.append((by_key[key], reason))

    def _unconfirmed_batch(self, b: SentBatchEntry, batch: Batch, leavers: bool) -> None:
        by_key = {c.key: c for c in batch.contacts}
        unsent = len(batch.contacts) - len(b.rejected)  # queued or not, none confirmed
        self.bulk_requests += 1 if b.batch_id else 0
        self.report.batches.append(
            BatchRecord(
                index=b.index,
                batch_id=b.batch_id,
                contacts=b.contacts,
                status="not_confirmed",
                failed=unsent,
            )
        )
        if b.batch_id or b.unavailable:  # outcome never learnt: it may have landed
            refused = {key for key, _ in b.rejected}
            queued = [c for c in batch.contacts if c.key not in refused]
            if leavers:
                for c in queued:
                    self.update.mark_uncertain_left(c.key)
            else:
                for c in queued:
                    self.update.mark_uncertain(c)
        if leavers:
            self.report.leavers_failed += len(batch.contacts)
            return
        self.failed[self.stop_reason] += unsent
        for key, reason in b.rejected:
            self.api_rejections.append((by_key[key], reason))

    def _unsent_batch(self, batch: Batch, leavers: bool, *, in_flight: bool) -> None:
        """A batch the stopped push has no answer for: never confirmed; possibly queued if it
        was the one in flight (sent, answer lost)."""
        self.report.batches.append(
            BatchRecord(
                index=batch.index,
                batch_id=None,
                contacts=len(batch.contacts),
                status="possibly_queued" if in_flight else "not_sent",
                failed=len(batch.contacts),
            )
        )
        if leavers:
            self.report.leavers_failed += len(batch.contacts)
            for c in batch.contacts if in_flight else ():
                self.update.mark_uncertain_left(c.key)
            return
        self.failed[self.stop_reason] += len(batch.contacts)
        for c in batch.contacts if in_flight else ():
            self.update.mark_uncertain(c)

    def finish(self) -> None:
        r, m = self.report, self.manifest
        c = m.counts
        if m.dry_run:
            r.planned = c.planned
            r.leavers_kept = c.kept
            r.leavers_failed = c.to_unsubscribe  # would be unsubscribed: nothing was sent
            r.status = "dry_run"
        elif m.guarded:
            unsent = c.new + c.changed - m.rejected_by_reason.get("too_large", 0)
            self.failed[SHRINK_GUARD] += unsent
            r.leavers_failed = r.left
            r.status = "guarded"
            r.error = m.guard_message
        else:
            r.leavers_kept = c.kept
        r.add_failures(self.failed)
        if self.api_rejections:
            r.add_rejections(Counter({API_REJECTED: len(self.api_rejections)}))
        r.timings["push"] = round(self.push_seconds, 3)
        r.timings["confirm"] = round(self.confirm_seconds, 3)
        r.requests = {"bulk_import": self.bulk_requests}
        if m.dry_run or m.guarded:
            return
        if self.ended is not None:
            r.status = self.ended
            r.error = self.error
        elif self.cancelled:
            r.status = "cancelled"
        elif self.error:
            r.status = "failed"
            r.error = self.error
        elif r.failed or r.leavers_failed:
            r.status = "completed_with_failures"
        else:
            r.status = "completed"
