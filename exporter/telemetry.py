"""Run telemetry: the dimensions every run's log records carry, and the run's metrics.

The core only *produces* telemetry, through :mod:`logging` and the OpenTelemetry **API**; it
never configures an exporter. Without an SDK installed by the edge (``blueprints/telemetry.py``
in Azure, when ``APPLICATIONINSIGHTS_CONNECTION_STRING`` is set) the metrics are no-ops and the
log records go wherever the host's logging sends them — locally nothing leaves the machine.

**Dimensions.** A phase function decorated with :func:`phase` runs inside a *run scope* (a
:class:`~contextvars.ContextVar`, so threads and concurrent activities never mix them): the
export, the run id and the phase; :func:`bind` adds the connection and the ActiveCampaign
account (its API hostname) once the phase knows them. :class:`RunDimensions`, a
:class:`logging.Filter` the edge attaches to its exporting handler, copies them onto every log
record (Application Insights' ``customDimensions``). None of them is personal data: export and
connection names are configuration, the account is a company's API hostname.

**Events.** Two records mark a run's life, for alerts and the workbook (``infra/``):
``event=run_started`` when prepare takes the run on, ``event=run_ended`` with ``status`` and
the report's counts when finalize writes the report (a run closed by someone else —
``terminated``, ``abandoned`` — is finalized too, so it ends the same way). A run that started
and never ended is what the *stuck* alert looks for.

**Metrics** (OpenTelemetry instruments, attributes = the dimensions above):

=============================  =========  ===================================================
``exporter.runs``              counter    runs ended, by ``status``
``exporter.contacts``          counter    contacts by ``outcome``: read, sent, confirmed,
                                          rejected, failed
``exporter.bulk_requests``     counter    bulk-import requests the run made
``exporter.throttled_answers`` counter    429s and bulk "rate limit exceeded" answers, as
                                          they arrive
``exporter.budget_used``       histogram  share of the account's bulk-import budget (100 a
                                          minute) the run used while it was sending
``exporter.phase.duration``    histogram  seconds per ``phase`` (prepare, push, confirm,
                                          total)
=============================  =========  ===================================================
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

from opentelemetry import metrics

from exporter.storage.runs import FINAL_STATUSES

if TYPE_CHECKING:
    from exporter.run.records import RunRequest
    from exporter.run.report import RunReport

logger = logging.getLogger(__name__)

DIMENSIONS = ("export", "run_id", "phase", "connection", "account")
"""The run's dimensions, in the order they are documented."""

RUN_STARTED = "run_started"
RUN_ENDED = "run_ended"

GOOD_ENDINGS = frozenset({"completed", "dry_run", "cancelled"})
"""Final statuses nobody needs to be woken for (a cancel is someone's decision)."""
BAD_ENDINGS = FINAL_STATUSES - GOOD_ENDINGS
"""Final statuses that raise an alert in Azure (each has a rule in infra/core/monitoring.bicep)."""

CONTACT_OUTCOMES = ("read", "sent", "confirmed", "rejected", "failed")

_scope: ContextVar[Mapping[str, str]] = ContextVar("exporter_run_scope", default={})  # noqa: B039 - never mutated, replaced


def current() -> dict[str, str]:
    """The dimensions of the run scope this code runs in (empty outside a run)."""
    return dict(_scope.get())


@contextmanager
def run_scope(**dimensions: str | None) -> Iterator[None]:
    """Add ``dimensions`` (empty values are left out) for the duration of the block."""
    token = _scope.set({**_scope.get(), **{k: v for k, v in dimensions.items() if v}})
    try:
        yield
    finally:
        _scope.reset(token)


def bind(**dimensions: str | None) -> None:
    """Add ``dimensions`` to the current scope until it ends (a phase learning its connection)."""
    _scope.set({**_scope.get(), **{k: v for k, v in dimensions.items() if v}})


def bind_run(**dimensions: str | None) -> None:
    """:func:`bind`, but only inside a run's scope (never leaks into a caller's context)."""
    if "run_id" in _scope.get():
        bind(**dimensions)


P = ParamSpec("P")
R = TypeVar("R")


def phase(
    name: str,
) -> Callable[
    [Callable[Concatenate[Any, RunRequest, P], R]], Callable[Concatenate[Any, RunRequest, P], R]
]:
    """Run a phase function ``fn(ctx, req, ...)`` inside a run scope (export, run, phase)."""

    def decorate(
        fn: Callable[Concatenate[Any, RunRequest, P], R],
    ) -> Callable[Concatenate[Any, RunRequest, P], R]:
        @functools.wraps(fn)
        def wrapper(ctx: Any, req: RunRequest, /, *args: P.args, **kwargs: P.kwargs) -> R:
            with run_scope(export=req.export, run_id=req.run_id, phase=name):
                return fn(ctx, req, *args, **kwargs)

        return wrapper

    return decorate


class RunDimensions(logging.Filter):
    """Copies the run scope's dimensions onto each record it sees (never overriding a value the
    call passed in ``extra``). Attach it to a *handler*: a logger's filters do not see records
    propagated from its children."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _scope.get().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


# --- events -------------------------------------------------------------------------------------


def run_started(req: RunRequest) -> None:
    """Prepare took the run on (its lease is held): what the *stuck* alert waits to see end."""
    logger.info(
        "export run started: %s run %s",
        req.export,
        req.run_id,
        extra={"event": RUN_STARTED, "requested_by": _requester(req.requested_by)},
    )


def run_ended(report: RunReport) -> None:
    """The report was written: one record (error for ``failed``, warning for the other bad
    endings) and the run's metrics."""
    status = report.status
    level = (
        logging.ERROR
        if status == "failed"
        else logging.WARNING
        if status in BAD_ENDINGS
        else logging.INFO
    )
    budget = budget_used(report)
    # The message keeps the "export run <status>: <export> run <id>" form people search for.
    logger.log(
        level,
        "export run %s: %s run %s",
        status,
        report.export,
        report.run_id,
        extra={
            "event": RUN_ENDED,
            "status": status,
            "dry_run": report.dry_run,
            "rows_read": report.rows_read,
            "sent": report.sent,
            "confirmed": report.confirmed,
            "rejected": report.rejected,
            "failed": report.failed,
            "bulk_requests": _bulk_requests(report),
            "budget_used": round(budget, 4) if budget is not None else -1.0,
            "seconds": report.timings.get("total", 0.0),
        },
    )
    _record_metrics(report, budget)


def throttled(status: int) -> None:
    """ActiveCampaign answered a throttle (429 or the bulk rate limit): count it for the
    account (the run scope names it)."""
    _instruments().throttled.add(1, {**_metric_dimensions(), "http_status": str(status)})


# --- metrics ------------------------------------------------------------------------------------


def budget_used(report: RunReport) -> float | None:
    """Bulk requests ÷ what the account's bulk budget allowed while the run was sending (from
    the end of prepare to the report); ``None`` when it sent nothing."""
    from exporter.activecampaign.limiter import BULK_MULTI_BUDGET  # the client imports us

    bulk = _bulk_requests(report)
    seconds = report.timings.get("total", 0.0) - report.timings.get("prepare", 0.0)
    if bulk <= 0 or seconds <= 0:
        return None
    allowed = BULK_MULTI_BUDGET.limit * seconds / BULK_MULTI_BUDGET.period
    return bulk / allowed


@dataclass(frozen=True)
class _Instruments:
    runs: metrics.Counter
    contacts: metrics.Counter
    bulk_requests: metrics.Counter
    throttled: metrics.Counter
    budget_used: metrics.Histogram
    phase_duration: metrics.Histogram


@functools.cache
def _instruments() -> _Instruments:
    """Created on first use (not at import): a no-op proxy until the edge sets a provider."""
    meter = metrics.get_meter("exporter")
    return _Instruments(
        runs=meter.create_counter("exporter.runs", unit="{run}", description="Runs ended"),
        contacts=meter.create_counter(
            "exporter.contacts", unit="{contact}", description="Contacts by outcome"
        ),
        bulk_requests=meter.create_counter(
            "exporter.bulk_requests", unit="{request}", description="Bulk-import requests"
        ),
        throttled=meter.create_counter(
            "exporter.throttled_answers",
            unit="{answer}",
            description="Throttle answers from ActiveCampaign (429, bulk rate limit)",
        ),
        budget_used=meter.create_histogram(
            "exporter.budget_used",
            unit="1",
            description="Share of the account's bulk-import budget a run used while sending",
        ),
        phase_duration=meter.create_histogram(
            "exporter.phase.duration", unit="s", description="Seconds per run phase"
        ),
    )


def _metric_dimensions() -> dict[str, str]:
    scope = _scope.get()
    return {k: scope[k] for k in ("export", "run_id", "connection", "account") if k in scope}


def _record_metrics(report: RunReport, budget: float | None) -> None:
    dims = {**_metric_dimensions(), "export": report.export, "run_id": report.run_id}
    tools = _instruments()
    tools.runs.add(1, {**dims, "status": report.status})
    counts = {
        "read": report.rows_read,
        "sent": report.sent,
        "confirmed": report.confirmed,
        "rejected": report.rejected,
        "failed": report.failed,
    }
    for outcome in CONTACT_OUTCOMES:
        tools.contacts.add(counts[outcome], {**dims, "outcome": outcome})
    tools.bulk_requests.add(_bulk_requests(report), dims)
    if budget is not None:
        tools.budget_used.record(budget, dims)
    for name, seconds in report.timings.items():
        tools.phase_duration.record(seconds, {**dims, "phase": name})


def _bulk_requests(report: RunReport) -> int:
    return int(report.requests.get("bulk_import", 0))


def _requester(requested_by: str) -> str:
    """``cli``, ``timer``, ``blob`` or ``http`` — never the principal (it may be an address)."""
    return requested_by.split(":", 1)[0]
