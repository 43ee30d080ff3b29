"""The one seam that sends a batch and learns what became of it.

:meth:`BulkSender.send` posts a :class:`~exporter.planning.contacts.Batch` as one bulk import. When
ActiveCampaign's validation names contacts (one bad contact rejects the whole request), those
contacts are set aside with ActiveCampaign's reason and the rest is sent again, until the
request is queued or nothing is left.

A queued import is not an imported one. :meth:`BulkSender.confirm_many` polls ``import/info``
for every outstanding batch, round-robin, each on its own growing interval (all polls go
through the shared rate limiter), until each batch is final:

* ``completed``: its contacts are **confirmed**, except those whose email is in ``failure``;
* ``failed`` / ``interrupted``: the whole batch is resubmitted (ActiveCampaign says that is
  safe; a bulk import is an idempotent upsert) up to ``max_resubmits`` times, then its contacts
  are **failed**;
* no final status within the poll deadline: its contacts are **failed** (they may still land;
  the next run sends them again, which is harmless).

A request that still fails after the client's retries (ActiveCampaign briefly unavailable) does
not stop the run: a batch that could not be queued ends ``unavailable`` (its contacts are
**failed**, to be sent again next run), and a poll that could not be answered is repeated at the
batch's next turn (within the deadline). Only ``outage_after`` such requests **in a row** (no
request answered in between) mean ActiveCampaign is down: that error propagates and stops the
run.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from exporter.errors import ContactsRejected, FatalApiError, RetriableApiError
from exporter.masking import mask_email
from exporter.planning.contacts import Batch, PreparedContact

from .client import ActiveCampaignClient
from .status import mask_emails

logger = logging.getLogger(__name__)

FINAL_OK = "completed"
FINAL_FAILED = frozenset({"failed", "interrupted"})
UNAVAILABLE = "unavailable"


def _not_refused(
    contacts: list[PreparedContact], rejected: list[tuple[PreparedContact, str]]
) -> list[PreparedContact]:
    """``contacts`` without those in ``rejected`` (by identity: the very objects set aside)."""
    refused = {id(c) for c, _ in rejected}
    return [c for c in contacts if id(c) not in refused]


@dataclass
class SentBatch:
    """What :meth:`BulkSender.send` did with one batch."""

    batch_index: int
    """The batch's index in the run."""
    batch_id: str | None
    """ActiveCampaign's import id; ``None`` when every contact was rejected (nothing sent)."""
    sent: list[PreparedContact]
    """The contacts in the queued import."""
    rejected: list[tuple[PreparedContact, str]] = field(default_factory=list)
    """Contacts ActiveCampaign's validation refused, with its reason."""
    unavailable: str | None = None
    """Set when the batch could not be queued because ActiveCampaign stayed unavailable beyond
    every retry (the error). ``sent`` then holds the contacts that were not queued (a request
    that timed out may still have landed them)."""
    resubmits: int = 0
    """Resubmissions already made for this batch (by an earlier, interrupted confirm):
    ``batch_id`` is then the last resubmission's import."""


Resubmitted = Callable[["SentBatch", str | None, int, list[tuple[PreparedContact, str]]], None]
"""Told ``(batch, new import id, resubmits so far, every contact refused so far)`` right after a
resubmission was queued, before the next request: the caller records it durably."""


@dataclass
class ConfirmedBatch:
    """The final outcome of one batch."""

    batch_index: int
    batch_id: str | None
    """The import id that settled the batch (the last one, after resubmissions)."""
    status: str
    """``completed``, ``failed``, ``interrupted``, ``timeout``, ``unavailable`` (could not be
    queued) or ``empty`` (nothing sent)."""
    confirmed: list[PreparedContact] = field(default_factory=list)
    """Contacts in a completed import and not in its ``failure`` list."""
    failed: list[tuple[PreparedContact, str]] = field(default_factory=list)
    """Contacts that did not (provably) land, with the reason."""
    rejected: list[tuple[PreparedContact, str]] = field(default_factory=list)
    """Contacts refused at send time (carried over from :class:`SentBatch`), plus any refused
    when a failed batch was resubmitted."""
    resubmits: int = 0
    """How many times the whole batch was sent again after a failed import."""


@dataclass(frozen=True)
class PollPolicy:
    """How often and how long to poll ``import/info`` for one import."""

    initial_interval: float = 1.0
    """Seconds before the first poll (ActiveCampaign answers ``false`` for about a second)."""
    multiplier: float = 1.5
    """Growth of the interval after every non-final answer."""
    max_interval: float = 15.0
    """Cap on the interval between two polls of the same import."""
    deadline: float = 1800.0
    """Seconds an import may take to become final, counted from when confirming it starts
    (and again after a resubmission), before its contacts count as failed."""


@dataclass
class _Outstanding:
    sent: SentBatch
    contacts: list[PreparedContact]
    rejected: list[tuple[PreparedContact, str]]
    batch_id: str
    started: float
    interval: float
    resubmits: int = 0
    last_status: str | None = None


class BulkSender:
    """Sends batches as bulk imports and confirms them; safe to use from two threads (one
    sending, one confirming): the client and its rate limiter are thread-safe."""

    def __init__(
        self,
        client: ActiveCampaignClient,
        *,
        exclude_automations: bool,
        max_resubmits: int = 1,
        poll: PollPolicy = PollPolicy(),
        outage_after: int = 3,
    ) -> None:
        if max_resubmits < 0:
            raise ValueError("max_resubmits must not be negative")
        if outage_after < 1:
            raise ValueError("outage_after must be at least 1")
        self._client = client
        self._exclude_automations = exclude_automations
        self._max_resubmits = max_resubmits
        self._poll = poll
        self._outage_after = outage_after
        self._unanswered = 0  # requests in a row that exhausted their retries
        self._lock = threading.Lock()

    # --- outage detection ---------------------------------------------------------------

    def _answered(self) -> None:
        with self._lock:
            self._unanswered = 0

    def _unanswered_request(self, error: RetriableApiError) -> None:
        """Count a request that exhausted its retries; re-raise it once ActiveCampaign looks
        down rather than flaky (``outage_after`` in a row)."""
        with self._lock:
            self._unanswered += 1
            down = self._unanswered >= self._outage_after
        if down:
            raise error

    # --- send ---------------------------------------------------------------------------

    def send(self, batch: Batch) -> SentBatch:
        """Post ``batch``; contacts ActiveCampaign's validation names are moved to
        ``rejected`` and the rest resent. Retriable failures are retried by the client's
        policy; a batch that still cannot be queued comes back ``unavailable`` (see the module
        docstring); fatal errors propagate."""
        rejected: list[tuple[PreparedContact, str]] = []
        contacts = list(batch.contacts)
        try:
            batch_id, sent = self._submit(batch.index, contacts, rejected)
        except RetriableApiError as error:
            self._unanswered_request(error)
            unsent = _not_refused(contacts, rejected)
            logger.warning(
                "batch %d: not queued, ActiveCampaign unavailable: %s", batch.index, error
            )
            return SentBatch(batch.index, None, unsent, rejected, unavailable=str(error))
        return SentBatch(batch.index, batch_id, sent, rejected)

    def _submit(
        self,
        index: int,
        contacts: list[PreparedContact],
        rejected: list[tuple[PreparedContact, str]],
    ) -> tuple[str | None, list[PreparedContact]]:
        """Queue ``contacts`` (appending what validation refuses to ``rejected``, which the
        caller keeps should a retriable error propagate)."""
        while contacts:
            try:
                accepted = self._client.bulk_import(
                    [c.payload for c in contacts], exclude_automations=self._exclude_automations
                )
            except ContactsRejected as error:
                self._answered()  # a validation answer is an answer: not an outage
                named = {r.index: r.reason for r in error.rejected}
                if any(i >= len(contacts) for i in named):
                    raise FatalApiError(
                        f"batch {index}: ActiveCampaign rejected a contact position beyond the "
                        f"{len(contacts)} sent",
                        status=400,
                    ) from None
                for i, reason in sorted(named.items()):
                    logger.warning(
                        "batch %d: ActiveCampaign rejected %s: %s",
                        index,
                        mask_email(contacts[i].key),
                        mask_emails(reason),
                    )
                    rejected.append((contacts[i], reason or "rejected by ActiveCampaign"))
                contacts = [c for i, c in enumerate(contacts) if i not in named]
                continue
            self._answered()
            logger.info(
                "batch %d: import %s queued (%d contacts)", index, accepted.batch_id, len(contacts)
            )
            return accepted.batch_id, contacts
        return None, []

    # --- confirm ------------------------------------------------------------------------

    def confirm(self, sent: SentBatch) -> ConfirmedBatch:
        """Poll until ``sent`` is final; see :meth:`confirm_many`."""
        return next(self.confirm_many([sent]))

    def confirm_many(
        self, sent: Iterable[SentBatch], *, on_resubmit: Resubmitted | None = None
    ) -> Iterator[ConfirmedBatch]:
        """Yield each batch's :class:`ConfirmedBatch` as soon as it is final.

        Outstanding imports are polled round-robin, each when its own interval has passed
        (the earliest due first), so many outstanding batches share the rate budget fairly.
        ``on_resubmit`` hears of every resubmission before the next request is made.
        """
        clock = self._client.clock
        order = itertools.count()
        due: list[tuple[float, int, _Outstanding]] = []
        for item in sent:
            if item.unavailable is not None:
                reason = f"not queued: {item.unavailable}"
                failed = [(c, reason) for c in item.sent]
                yield ConfirmedBatch(
                    item.batch_index, None, UNAVAILABLE, failed=failed, rejected=list(item.rejected)
                )
                continue
            if item.batch_id is None:
                yield ConfirmedBatch(item.batch_index, None, "empty", rejected=list(item.rejected))
                continue
            now = clock()
            job = _Outstanding(
                sent=item,
                contacts=list(item.sent),
                rejected=list(item.rejected),
                batch_id=item.batch_id,
                started=now,
                interval=self._poll.initial_interval,
                resubmits=item.resubmits,
            )
            heapq.heappush(due, (now + job.interval, next(order), job))
        while due:
            when, _, job = heapq.heappop(due)
            wait = when - clock()
            if wait > 0:
                self._client.sleep(wait)
            outcome = self._poll_once(job, on_resubmit)
            if outcome is not None:
                yield outcome
                continue
            job.interval = min(job.interval * self._poll.multiplier, self._poll.max_interval)
            heapq.heappush(due, (clock() + job.interval, next(order), job))

    def _poll_once(
        self, job: _Outstanding, on_resubmit: Resubmitted | None = None
    ) -> ConfirmedBatch | None:
        """One poll of ``job``: its final outcome, or ``None`` to poll again later."""
        index = job.sent.batch_index
        try:
            info = self._client.import_info(job.batch_id)
        except RetriableApiError as error:
            self._unanswered_request(error)
            logger.warning("batch %d: import %s not polled: %s", index, job.batch_id, error)
            return self._past_deadline(job)
        self._answered()
        job.last_status = info.status
        if info.status == FINAL_OK:
            failures = {email.strip().casefold() for email in info.failure}
            confirmed = [c for c in job.contacts if c.key.casefold() not in failures]
            failed = [
                (c, "listed in the import's failures by ActiveCampaign")
                for c in job.contacts
                if c.key.casefold() in failures
            ]
            logger.info(
                "batch %d: import %s completed: %d confirmed, %d failed",
                index,
                job.batch_id,
                len(confirmed),
                len(failed),
            )
            return self._outcome(job, FINAL_OK, confirmed, failed)
        if info.status in FINAL_FAILED:
            if job.resubmits < self._max_resubmits:
                return self._resubmit(job, info.status, on_resubmit)
            reason = f"import {info.status} (after {job.resubmits} resubmission(s))"
            logger.warning("batch %d: import %s %s", index, job.batch_id, reason)
            return self._outcome(job, info.status, [], [(c, reason) for c in job.contacts])
        return self._past_deadline(job)

    def _past_deadline(self, job: _Outstanding) -> ConfirmedBatch | None:
        """``job``'s ``timeout`` outcome once its deadline has passed, else ``None``."""
        index = job.sent.batch_index
        if self._client.clock() - job.started >= self._poll.deadline:
            reason = (
                f"import not final within {self._poll.deadline:g}s "
                f"(last status: {job.last_status or 'not started'})"
            )
            logger.warning("batch %d: import %s %s", index, job.batch_id, reason)
            return self._outcome(job, "timeout", [], [(c, reason) for c in job.contacts])
        return None

    def _resubmit(
        self, job: _Outstanding, status: str, on_resubmit: Resubmitted | None
    ) -> ConfirmedBatch | None:
        index = job.sent.batch_index
        logger.warning(
            "batch %d: import %s %s; resubmitting the batch", index, job.batch_id, status
        )
        job.resubmits += 1
        try:
            batch_id, contacts = self._submit(index, job.contacts, job.rejected)
        except RetriableApiError as error:
            self._unanswered_request(error)
            job.contacts = _not_refused(job.contacts, job.rejected)
            reason = f"not resubmitted: {error}"
            logger.warning("batch %d: import %s %s", index, job.batch_id, reason)
            return self._outcome(job, UNAVAILABLE, [], [(c, reason) for c in job.contacts])
        job.contacts = contacts
        if on_resubmit is not None:
            on_resubmit(job.sent, batch_id, job.resubmits, list(job.rejected))
        if batch_id is None:
            return self._outcome(job, "empty", [], [])
        job.batch_id = batch_id
        job.started = self._client.clock()
        job.interval = self._poll.initial_interval / self._poll.multiplier  # grown on return
        return None

    @staticmethod
    def _outcome(
        job: _Outstanding,
        status: str,
        confirmed: list[PreparedContact],
        failed: list[tuple[PreparedContact, str]],
    ) -> ConfirmedBatch:
        return ConfirmedBatch(
            batch_index=job.sent.batch_index,
            batch_id=job.batch_id,
            status=status,
            confirmed=confirmed,
            failed=failed,
            rejected=job.rejected,
            resubmits=job.resubmits,
        )
