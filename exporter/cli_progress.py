"""What ``python -m exporter run`` tells people on stderr while it works and when it ends.

- :class:`ProgressView`: on a terminal with a width, one line redrawn in place (at most ten
  times a second, cleared when the run ends: no frame is left behind); otherwise (a pipe, a
  file, a terminal without a width) a plain line every 30 seconds. Rates are measured from the
  start of each phase, so the first event of a phase never reads as a burst.
- :class:`LogSummary`: without ``-v``, the run's retries and per-contact warnings from the
  ActiveCampaign client become at most one line a minute; other warnings pass through as they
  would without any handler. It counts retries either way (for the closing paragraph).
- :func:`summary_paragraph`: the report in words, written when a run ends (``--quiet`` skips it).

Everything takes its clock and its stream, so tests drive it without sleeping.
"""

from __future__ import annotations

import logging
import os
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import IO

from exporter.progress import ProgressEvent
from exporter.run.report import RunReport

Clock = Callable[[], float]

CLEAR = "\r\x1b[K"
"""Back to the start of the line and erase it."""


def terminal_width(stream: IO[str]) -> int | None:
    """The width of the terminal ``stream`` draws on; ``None`` for a pipe, a file, or a
    terminal that reports no width (then a redrawn line cannot be fitted)."""
    try:
        if not stream.isatty():
            return None
        columns = os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):
        return None
    return columns if columns > 0 else None


def duration(seconds: float) -> str:
    """``42s``, ``3m 05s``, ``1h 02m``."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {s % 3600 // 60:02d}m"


class ProgressView:
    """Progress events drawn on ``err`` (thread-safe: push and confirm report from two threads).

    ``width`` is the terminal's width, or ``None`` for plain periodic lines every ``every``
    seconds."""

    def __init__(
        self,
        err: IO[str],
        *,
        width: int | None,
        clock: Clock = time.monotonic,
        every: float = 30.0,
        redraw: float = 0.1,
    ) -> None:
        self._err = err
        self._width = width
        self._clock = clock
        self._every = every
        self._redraw = redraw
        self._lock = threading.Lock()
        now = clock()
        self._phase = "prepare"
        self._phase_started = now
        self._rows = 0
        self._sent = 0
        self._settled = 0
        self._total: int | None = None
        self._drawn = ""  # what the terminal line shows now ("" when nothing)
        self._last_draw = float("-inf")
        self._last_line = now  # the first plain line comes after ``every`` seconds
        self._closed = False
        self._stop = threading.Event()
        self._prepared = False

    # --- events -----------------------------------------------------------------------------

    def __call__(self, event: ProgressEvent) -> None:
        with self._lock:
            if self._closed:
                return
            now = self._clock()
            phase = "send" if event.phase in ("push", "confirm") else event.phase
            if phase != self._phase:
                self._phase, self._phase_started = phase, now
            if event.phase == "prepare":
                self._rows = max(self._rows, event.done)
                self._prepared = event.total is not None  # the last prepare event
            elif event.phase == "push":
                self._sent = max(self._sent, event.done)
            elif event.phase == "confirm":
                self._settled = max(self._settled, event.done)
            if event.total is not None and event.phase != "finalize":
                self._total = event.total
            if phase == "finalize":  # the counts are done: take the line away
                self._erase()
                return
            self._show(now)

    def text(self) -> str:
        """The progress line as it stands (without locking: for :meth:`_show` and tests)."""
        elapsed = self._clock() - self._phase_started
        if self._phase == "prepare" and self._prepared:
            return (
                f"{self._rows:,} rows read; reading the list before sending · {duration(elapsed)}"
            )
        if self._phase == "prepare":
            line = f"reading rows: {self._rows:,} read"
            if self._rows and elapsed >= 1.0:
                line += f" · {self._rows / elapsed:,.0f} rows/s"
            return line + f" · {duration(elapsed)}"
        total = self._total or 0
        line = f"sending contacts: {self._settled:,}/{total:,} settled"
        if total:
            line += f" ({100 * self._settled // total}%)"
        line += f", {self._sent:,} sent"
        done = self._settled or self._sent
        if done and elapsed >= 1.0:
            rate = done / elapsed
            line += f" · {rate:,.0f} contacts/s"
            if total > self._settled:
                line += f" · ETA {duration((total - self._settled) / rate)}"
        return line + f" · {duration(elapsed)}"

    # --- drawing ----------------------------------------------------------------------------

    def _show(self, now: float) -> None:
        if self._width is not None:
            if now - self._last_draw >= self._redraw:
                self._last_draw = now
                self._draw(self.text())
        elif now - self._last_line >= self._every:
            self._last_line = now
            self._err.write(self.text() + "\n")
            self._err.flush()

    def _draw(self, line: str) -> None:
        assert self._width is not None
        line = line[: max(1, self._width - 1)]
        self._err.write(CLEAR + line)
        self._err.flush()
        self._drawn = line

    def _erase(self) -> None:
        if self._drawn:
            self._err.write(CLEAR)
            self._err.flush()
            self._drawn = ""

    def message(self, text: str) -> None:
        """A line of its own (a log line), above the progress line on a terminal."""
        with self._lock:
            drawn = self._drawn
            self._erase()
            self._err.write(text + "\n")
            if drawn and not self._closed:
                self._draw(drawn)
            self._err.flush()

    def tick(self) -> None:
        """Time passed without an event (a throttled wait, a long poll): the terminal line's
        clock moves, and a plain line comes when it is due."""
        with self._lock:
            if self._closed or self._phase == "finalize":
                return
            now = self._clock()
            if self._width is not None:
                self._last_draw = now
                self._draw(self.text())
            else:
                self._show(now)

    def start_ticking(self, interval: float = 1.0) -> None:
        """:meth:`tick` every ``interval`` seconds on a daemon thread until :meth:`close`."""

        def loop() -> None:
            while not self._stop.wait(interval):
                self.tick()

        threading.Thread(target=loop, name="exporter-progress", daemon=True).start()

    def close(self) -> None:
        """Take the progress line away (idempotent)."""
        self._stop.set()
        with self._lock:
            self._erase()
            self._closed = True


class LineSink:
    """Where the command line's own log lines go: stderr, or above the progress line while
    one is drawn. A file-like ``write`` for :class:`logging.StreamHandler`."""

    def __init__(self, err: IO[str]) -> None:
        self.err = err
        self.view: ProgressView | None = None

    def write(self, text: str) -> int:
        view = self.view
        if view is None:
            self.err.write(text)
        else:
            for line in text.rstrip("\n").split("\n"):
                view.message(line)
        return len(text)

    def flush(self) -> None:
        self.err.flush()

    def line(self, text: str) -> None:
        self.write(text + "\n")


_RETRY_LOGGER = "exporter.activecampaign.retry"
_BULK_LOGGER = "exporter.activecampaign.bulk"


def _kind(record: logging.LogRecord) -> str | None:
    """Which summarised kind a record is, ``"error"`` for the exporter's own errors (the
    command writes its outcome itself: ``error: ...``), or ``None`` to pass it through."""
    if record.levelno >= logging.ERROR:
        return "errors" if record.name.startswith("exporter.") else None
    if record.name == _RETRY_LOGGER:
        return "requests retried"
    if record.name == _BULK_LOGGER:
        if "rejected" in str(record.msg):
            return "contacts rejected by ActiveCampaign"
        return "import problems"
    return None


_SINGULAR = {
    "requests retried": "request retried",
    "contacts rejected by ActiveCampaign": "contact rejected by ActiveCampaign",
    "import problems": "import problem",
}


class LogSummary(logging.Handler):
    """Warnings without ``-v``: retries and ActiveCampaign's per-contact answers counted and
    written at most once every ``every`` seconds (the first at once); anything else written
    as it comes (``passthrough``). With ``summarise=False`` (``-v`` prints each line,
    ``--quiet`` none) it only counts."""

    def __init__(
        self,
        sink: LineSink,
        *,
        clock: Clock = time.monotonic,
        every: float = 60.0,
        summarise: bool = True,
        passthrough: bool = True,
    ) -> None:
        super().__init__(logging.WARNING)
        self._sink = sink
        self._clock = clock
        self._every = every
        self._summarise = summarise
        self._passthrough = passthrough
        self._pending: Counter[str] = Counter()
        self._last = ""
        self._last_line = float("-inf")
        self.totals: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            kind = _kind(record)
            if kind is None:
                if self._passthrough:
                    self._sink.line(f"{record.levelname.lower()}: {record.getMessage()}")
                return
            self.totals[kind] += 1
            if not self._summarise or kind == "errors":
                return
            self._pending[kind] += 1
            self._last = record.getMessage()
            now = self._clock()
            if now - self._last_line >= self._every:
                self._flush_pending(now)
        except Exception:  # noqa: BLE001 - logging must never break the run
            self.handleError(record)

    def _flush_pending(self, now: float) -> None:
        if not self._pending:
            return
        first = self._last_line == float("-inf")
        counts = ", ".join(
            f"{n:,} {_SINGULAR.get(kind, kind) if n == 1 else kind}"
            for kind, n in self._pending.items()
        )
        last = self._last if len(self._last) <= 160 else self._last[:157] + "..."
        tail = "; more are summarised once a minute" if first else ""
        self._sink.line(f"ActiveCampaign: {counts} (last: {last}){tail}; -v shows each")
        self._pending.clear()
        self._last_line = now

    def flush(self) -> None:
        """Write what is pending (the end of a run)."""
        self.acquire()
        try:
            if self._summarise:
                self._flush_pending(self._clock())
        finally:
            self.release()


def _plural(n: int, one: str, many: str | None = None) -> str:
    return f"{n:,} {one if n == 1 else (many or one + 's')}"


_STATUS_WORDS = {
    "completed": "completed",
    "completed_with_failures": "completed with failures",
    "failed": "failed",
    "dry_run": "planned (a dry run: nothing was sent)",
    "guarded": "was stopped by a safety guard before sending",
    "cancelled": "was cancelled",
    "terminated": "was terminated",
    "abandoned": "was abandoned",
    "running": "is still running",
}


def summary_paragraph(
    report: RunReport, *, exit_code: int, retried: int = 0, width: int = 100
) -> str:
    """The report in words: one paragraph for people (no addresses, no secrets), and for a
    run that sent, a line saying where its time went."""
    took = report.timings.get("total")
    head = f"Run {report.run_id} of export {report.export} " + _STATUS_WORDS.get(
        report.status, report.status
    )
    if took is not None:
        head += f" in {took:.1f} s" if took < 60 else f" in {duration(took)}"
    parts = [head + (f": {report.error}" if report.error else "") + "."]
    read = f"It read {_plural(report.rows_read, 'row')}"
    if report.dry_run:
        read += f" and would send {_plural(report.planned, 'contact')}"
        if report.artefacts.get("plan"):
            read += f" (the plan is in {report.artefacts['plan']})"
    elif report.status != "guarded":
        moved = [f"{n:,} {w}" for n, w in ((report.new, "new"), (report.changed, "changed")) if n]
        if moved:
            read += f": {' and '.join(moved)}, of which ActiveCampaign confirmed"
            read += f" {report.confirmed:,}"
        else:
            read += ": nothing new or changed to send"
    if report.unchanged:
        read += f"; {report.unchanged:,} unchanged, not sent again"
    parts.append(read + ".")
    if report.rejected:
        reasons = ", ".join(f"{r} {n:,}" for r, n in sorted(report.rejected_by_reason.items()))
        where = report.artefacts.get("rejected")
        parts.append(
            f"{_plural(report.rejected, 'row was', 'rows were')} rejected ({reasons})"
            + (f", listed in {where}" if where else "")
            + "."
        )
    if report.duplicates:
        parts.append(f"{_plural(report.duplicates, 'duplicate')} counted once.")
    if report.failed:
        parts.append(
            f"{_plural(report.failed, 'contact was', 'contacts were')} not confirmed and "
            "will be sent again by the next run."
        )
    if report.left:
        parts.append(
            f"{_plural(report.left, 'person', 'people')} left the segment: "
            f"{report.leavers_unsubscribed:,} unsubscribed, {report.leavers_failed:,} failed, "
            f"{report.leavers_kept:,} kept."
        )
    if retried:
        parts.append(
            f"ActiveCampaign was busy: {_plural(retried, 'request was', 'requests were')} retried."
        )
    if not report.reconciles():
        parts.append("The report does not add up: " + "; ".join(report.reconciliation_problems()))
    ending = f"Exit code {exit_code}"
    if exit_code == 0 and report.rejected:
        ending += " (rejected rows do not change it)"
    parts.append(ending + ".")
    text = textwrap.fill(" ".join(parts), width=max(40, width))
    phases = _phases_line(report.timings)
    return text if phases is None else text + "\n" + textwrap.fill(phases, width=max(40, width))


def _phases_line(timings: dict[str, float]) -> str | None:
    """Where a run's time went, when the run sent anything (the command line's phases)."""
    if "sending" not in timings:
        return None
    sending = f"send and confirm {timings['sending']:.1f} s"
    tail = timings.get("confirm_after_push")
    if tail is not None:
        sending += f" ({tail:.1f} s of it after the last bulk import)"
    return (
        f"Time: prepare {timings.get('prepare', 0.0):.1f} s, {sending}, "
        f"finalize {timings.get('finalize', 0.0):.1f} s."
    )
