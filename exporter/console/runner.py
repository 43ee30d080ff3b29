"""Runs started from the local console: the engine's whole run in a background thread, with
its progress kept for the run page to poll, and a cancel that stops after the current chunk.

The engine is the command line's (:meth:`exporter.run.engine.Engine.run`): the console adds no
second way of running. Cancelling makes the run's progress callback raise on the next "contacts
sent" event, which the pipeline answers by stopping both threads; the run is then finalized as
``cancelled`` (what was not confirmed counts as not sent and goes next run). In the Functions
host runs go through Durable Functions (``POST /api/exports/{name}/runs``), not through this.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from exporter.activecampaign.ledger import Book
from exporter.activecampaign.limiter import ACCOUNT_BUDGET, BULK_MULTI_BUDGET
from exporter.errors import ConflictError, ExporterError, NotFoundError
from exporter.management.permissions import Caller
from exporter.management.service import ManagementService
from exporter.progress import ProgressEvent
from exporter.run.engine import Engine, RunOptions

log = logging.getLogger(__name__)


BUDGET = (
    f"account budget {ACCOUNT_BUDGET.limit:g} requests/s, "
    f"{BULK_MULTI_BUDGET.limit:g} bulk imports/min (250 contacts each), shared by its runs"
)


RATE_WINDOW = 10.0
"""Seconds (of the account's time) over which the live request rate is averaged."""

Usage = Callable[[str], dict[str, float] | None]
"""The export's account use now (:func:`account_usage`), or ``None`` when unknown."""


def pace(moved: int, total: int | None, elapsed: float) -> tuple[float | None, float | None]:
    """Contacts per second so far and the seconds left at that pace (``None``: not yet known)."""
    rate = moved / elapsed if moved and elapsed > 0 else None
    left = max(total - moved, 0) / rate if rate and total is not None else None
    return rate, left


def account_usage(book: Book, now: float, time_scale: float = 1.0) -> dict[str, float]:
    """What every run on this machine used of the account's budget lately, from its ledger:
    requests per second over the last :data:`RATE_WINDOW` seconds and bulk imports in the last
    minute (both in the account's own time: a sandbox at a time scale runs faster)."""
    second = 1.0 / time_scale
    requests = [t for t in book.starts.get("account", []) if now - RATE_WINDOW * second < t <= now]
    bulk = [
        t
        for name in ("bulk_multi", "bulk_single")
        for t in book.starts.get(name, [])
        if now - 60 * second < t <= now
    ]
    return {
        "requests_per_second": round(len(requests) / RATE_WINDOW, 1),
        "requests_limit": ACCOUNT_BUDGET.limit,
        "bulk_last_minute": len(bulk),
        "bulk_limit": BULK_MULTI_BUDGET.limit,
    }


class _Cancelled(Exception):
    """Raised from the progress callback to stop a run the user cancelled."""


@dataclass
class LiveRun:
    """What the run page shows while a run goes on (updated from the run's threads)."""

    export: str
    run_id: str
    dry_run: bool
    started: float
    phase: str = "prepare"
    rows_read: int = 0
    sent: int = 0
    settled: int = 0
    total: int | None = None
    status: str = "running"
    error: str | None = None
    cancel_requested: bool = False
    push_started: float | None = None
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def on_event(self, event: ProgressEvent) -> None:
        with self.lock:
            self.phase = event.phase
            if event.phase == "prepare":
                self.rows_read = event.done
            elif event.phase == "push":
                self.sent = event.done
                self.push_started = self.push_started or time.monotonic()
            elif event.phase == "confirm":
                self.settled = event.done
            if event.phase in ("push", "confirm") and event.total is not None:
                self.total = event.total
            cancel = self.cancel_requested and event.phase == "push"
        if cancel:
            raise _Cancelled

    def snapshot(self, now: float, usage: dict[str, float] | None = None) -> dict[str, Any]:
        """The progress as JSON for the run page (counts only, never personal data)."""
        with self.lock:
            elapsed = now - (self.push_started or self.started)
            moved = self.settled or self.sent  # confirmed, or sent while nothing is yet
            rate, left = pace(moved if self.push_started else 0, self.total, elapsed)
            return {
                "export": self.export,
                "run_id": self.run_id,
                "status": self.status,
                "phase": self.phase,
                "dry_run": self.dry_run,
                "rows_read": self.rows_read,
                "sent": self.sent,
                "confirmed": self.settled,
                "total": self.total,
                "rate_per_second": round(rate, 1) if rate else None,
                "budget": BUDGET,
                "usage": usage if self.status == "running" else None,
                "seconds_left": round(left) if left is not None else None,
                "elapsed_seconds": round(now - self.started, 1),
                "cancel_requested": self.cancel_requested,
                "error": self.error,
                "finished": self.status != "running",
            }


class LocalRunner:
    """Starts runs in background threads of this process (the local console)."""

    def __init__(
        self,
        engine: Callable[[], Engine],
        clock: Callable[[], float] = time.monotonic,
        usage: Usage | None = None,
    ):
        self._engine = engine
        self._clock = clock
        self._usage = usage
        self._live: dict[tuple[str, str], LiveRun] = {}
        self._lock = threading.Lock()

    def start(
        self, caller: Caller, service: ManagementService, export: str, *, dry_run: bool
    ) -> str:
        """Start a run of ``export`` (the service decides whether the caller may); its id."""
        service.authorize_run(caller, export)
        with self._lock:
            if any(r.export == export and r.status == "running" for r in self._live.values()):
                raise ConflictError(f"export {export!r} is running already", field="name")
        engine = self._engine()
        req = engine.new_run(
            export,
            options=RunOptions(dry_run=dry_run),
            requested_by=f"console:{caller.principal}",
        )
        live = LiveRun(export, req.run_id, dry_run, self._clock())
        with self._lock:
            self._live[(export, req.run_id)] = live

        def work() -> None:
            try:
                report = engine.run(req, progress=live.on_event)
                status, error = report.status, report.error
            except _Cancelled:
                status = engine.finalize(req, cancelled=True).status
                error = "cancelled from the console"
            except ExporterError as exc:  # the report is written; say why it stopped
                status, error = "failed", str(exc)
            except Exception as exc:
                log.exception("console run %s of %s crashed", req.run_id, export)
                status, error = "failed", f"unexpected error ({type(exc).__name__})"
            with live.lock:
                live.status, live.error = status, error

        threading.Thread(target=work, name=f"console-run-{export}", daemon=True).start()
        return req.run_id

    def progress(self, export: str, run_id: str) -> dict[str, Any] | None:
        """The live progress of a run started here, or ``None``."""
        live = self._live.get((export, run_id))
        if live is None:
            return None
        return live.snapshot(self._clock(), self._usage(export) if self._usage else None)

    def cancel(self, export: str, run_id: str) -> None:
        """Ask a running run to stop after the chunk it is sending."""
        live = self._live.get((export, run_id))
        if live is None or live.status != "running":
            raise NotFoundError(f"run {run_id} of {export!r} is not running in this console")
        with live.lock:
            live.cancel_requested = True

    def wait(self, export: str, run_id: str, timeout: float) -> str:
        """Block until the run ends (tests); its status."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            live = self._live.get((export, run_id))
            if live is None or live.status != "running":
                return live.status if live else "unknown"
            time.sleep(0.05)
        return "running"
