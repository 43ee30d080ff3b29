"""The whole run in-process (the command line): prepare, then push chunks in this thread
while a second thread confirms pushed chunks, over one API session; then finalize. A small
driver over the phase functions, not a second copy of them."""

from __future__ import annotations

import contextvars
import logging
import queue
import threading
import time
from collections.abc import Callable

from exporter import telemetry
from exporter.activecampaign.session import ApiSession
from exporter.errors import ApiError, ExporterError, InputError
from exporter.progress import ProgressCallback, ProgressEvent, ignore
from exporter.run import members
from exporter.run.confirm import confirm
from exporter.run.context import RunContext
from exporter.run.finalize import finalize
from exporter.run.prepare import prepare
from exporter.run.push import push
from exporter.run.records import PrepareResult, RunRequest
from exporter.run.report import RunReport

logger = logging.getLogger(__name__)


@telemetry.phase("run")
def run(ctx: RunContext, req: RunRequest, *, progress: ProgressCallback | None = None) -> RunReport:
    """The whole run in-process: prepare (the list's members read beside it), then push
    chunks in order in this thread while a second thread confirms pushed chunks (one shared
    limiter). Resumes an interrupted run with the same ``run_id``: finished phases are not
    repeated.

    Raises :class:`GuardError` (report written, status ``guarded``), :class:`InputError`
    (report written, status ``failed``), :class:`ConflictError` (state moved meanwhile).
    A fatal API error (a rejected key) ends the run with status ``failed``.
    """
    emit = progress or ignore
    early = None if req.options.dry_run else _EarlyRead(ctx, req)
    on_ready = early.start if early is not None else None
    settle = early.discard if early is not None else None  # a guarded run sends nothing
    try:
        prep = prepare(ctx, req, progress=emit, on_ready=on_ready, settle=settle)
    except InputError as exc:
        if early is not None:
            early.discard()
        finalize(ctx, req, error=str(exc))
        raise
    except BaseException:
        if early is not None:
            early.discard()
        raise
    if prep.dry_run or not prep.chunks:
        if early is not None:
            early.discard()
        return finalize(ctx, req)
    export, connection = ctx.export_config(req.export)
    session = early.take() if early is not None else None
    if session is None:
        try:
            session = ctx.session(export, connection, 1.0)
        except ExporterError as exc:  # e.g. the key reference does not resolve
            finalize(ctx, req, error=str(exc))
            raise
    timings: dict[str, float] = {}
    marking: threading.Thread | None = None
    try:
        started = time.monotonic()
        if early is not None and early.read:
            error, timings["members"] = early.error, early.seconds
        else:
            error = _read_members(ctx, req, session)
            timings["members"] = time.monotonic() - started
        if error is None:
            error, pushed_at = _pipeline(ctx, req, prep, session, emit)
            settled_at = time.monotonic()
            timings["sending"] = settled_at - started
            if pushed_at is not None:
                timings["confirm_after_push"] = settled_at - pushed_at
            # The mark's request waits for a per-second slot the last polls filled: it goes
            # while finalize works (which needs no answer from it), and ends before finalize
            # releases the run's lease, so no next run reads the record half-moved.
            marking = threading.Thread(
                target=contextvars.copy_context().run,
                args=(_mark_sent, ctx, req, session),
                name="exporter-mark",
                daemon=True,
            )
            marking.start()
        emit(ProgressEvent("finalize", 0, 1, "finalizing"))
        return finalize(
            ctx,
            req,
            error=error,
            timings={k: round(v, 3) for k, v in timings.items()},
            before_release=marking.join if marking is not None else None,
        )
    finally:
        if marking is not None:
            marking.join()
        session.close()


DISCARD_WAIT = 10.0
"""Seconds a run that stops before sending waits for its members read to stop."""


class _EarlyRead:
    """The list's members read (:func:`members.read_before_sending`), made while prepare reads
    the snapshot instead of after it: prepare calls :meth:`start` once it holds the run's
    lease and has loaded the members record it needs. The read sends nothing; the run's first
    bulk import still waits for it (:meth:`take`), and nothing waits for the read's answer
    otherwise. Its session (one limiter for the whole run) is handed to the push."""

    def __init__(self, ctx: RunContext, req: RunRequest) -> None:
        self._ctx, self._req = ctx, req
        self._thread: threading.Thread | None = None
        self._session: ApiSession | None = None
        self._raised: BaseException | None = None
        self._prepared = threading.Event()
        """Set once prepare is over: the read loads the state only then (memory)."""
        self._stop = threading.Event()
        """Set when the run stops before sending: the read stops, recording nothing."""
        self.read = False
        """Whether the read was made (its outcome in :attr:`error`)."""
        self.error: str | None = None
        self.seconds = 0.0

    def start(self) -> None:
        export, _connection = self._ctx.export_config(self._req.export)
        if export.leaver_policy != "unsubscribe":
            return  # no read to make: the run goes on as it always did
        self._thread = threading.Thread(  # in this run's telemetry scope
            target=contextvars.copy_context().run,
            args=(self._run,),
            name="exporter-members",
            daemon=True,
        )
        self._thread.start()

    def _run(self) -> None:
        began = time.monotonic()
        try:
            export, connection = self._ctx.export_config(self._req.export)
            try:
                self._session = self._ctx.session(export, connection, 1.0)
            except ExporterError:
                return  # the run makes its session after prepare and meets this error there
            self.error = _read_members(
                self._ctx, self._req, self._session, self._wait_prepared, self._stop.is_set
            )
            self.read = True
        except members.ReadStopped:
            pass  # the run stopped before sending: nothing of the read was recorded
        except BaseException as exc:  # noqa: BLE001 - raised again in the run's thread
            self._raised = exc
        finally:
            self.seconds = time.monotonic() - began

    def _wait_prepared(self) -> None:
        self._prepared.wait()

    def settle(self) -> None:
        """Wait for the read (before a report is written and the lease released)."""
        self._prepared.set()
        if self._thread is not None:
            self._thread.join()

    def take(self) -> ApiSession | None:
        """After the read: its session for the rest of the run (``None`` if it made none);
        whatever unexpected error it met is raised here, as if the run had met it."""
        self.settle()
        if self._raised is not None:
            if self._session is not None:
                self._session.close()
            raise self._raised
        session, self._session = self._session, None
        return session

    def discard(self) -> None:
        """The run stops before sending: stop the read (at its next contact, recording
        nothing), wait for it a while and close its session. A read stuck in a request's
        retries is left to notice the stop on its own (it records nothing after it)."""
        self._stop.set()
        self._prepared.set()
        if self._thread is not None:
            self._thread.join(DISCARD_WAIT)
            if self._thread.is_alive():
                logger.warning(
                    "run %s: the list's members read is still stopping", self._req.run_id
                )
                return  # its session is left to it (a daemon thread): never closed under it
        if self._raised is not None:
            logger.warning(
                "run %s: the list's members read failed",
                self._req.run_id,
                exc_info=self._raised,
            )
            self._raised = None
        if self._session is not None:
            self._session.close()
            self._session = None


def _read_members(
    ctx: RunContext,
    req: RunRequest,
    session: ApiSession,
    before_state: Callable[[], None] | None = None,
    stop: Callable[[], bool] | None = None,
) -> str | None:
    """The list's pre-existing members, read before the first bulk import; the error that
    stops the run if ActiveCampaign cannot be read (nothing was sent)."""
    try:
        members.read_before_sending(ctx, req, session, before_state=before_state, stop=stop)
    except ApiError as exc:
        logger.error("run %s of export %s stopped: %s", req.run_id, req.export, exc)
        return str(exc)
    return None


def _mark_sent(ctx: RunContext, req: RunRequest, session: ApiSession) -> None:
    """Move the list-members mark past what this run created (a failure only costs the next
    run a longer read). Runs beside finalize: nothing it raises may be lost or stop it."""
    try:
        members.mark_sent(ctx, req, session)
    except ExporterError as exc:
        logger.warning("run %s: the list's mark was not moved: %s", req.run_id, exc)
    except Exception:  # a thread's error would vanish: say it, as before
        logger.exception("run %s: the list's mark was not moved", req.run_id)


def _pipeline(
    ctx: RunContext,
    req: RunRequest,
    prep: PrepareResult,
    session: ApiSession,
    emit: ProgressCallback,
) -> tuple[str | None, float | None]:
    """Push in this thread, confirm in another; the first fatal error stops both. Returns
    the error that stopped the run (or ``None``) and when the last bulk import was sent."""
    total = prep.contacts_to_send + prep.leavers_to_unsubscribe
    pushed: queue.Queue[str | None] = queue.Queue()
    stop = threading.Event()
    errors: list[BaseException] = []
    settled = [0]

    def confirmer() -> None:
        while (chunk := pushed.get()) is not None:
            if stop.is_set():
                continue
            before = settled[0]

            def batch_settled(n: int) -> None:
                settled[0] += n
                emit(ProgressEvent("confirm", settled[0], total, "contacts settled"))

            try:
                s = confirm(ctx, req, chunk, session, batch_settled)
            except BaseException as exc:  # noqa: BLE001 - handed to the pushing thread
                errors.append(exc)
                stop.set()
                continue
            # The chunk's record is the count (a resumed chunk's earlier batches included).
            settled[0] = before + s.confirmed + s.failed + s.rejected
            emit(ProgressEvent("confirm", settled[0], total, "contacts settled"))

    thread = threading.Thread(  # in this run's telemetry scope (connection, account)
        target=contextvars.copy_context().run,
        args=(confirmer,),
        name="exporter-confirm",
        daemon=True,
    )
    thread.start()
    sent = [0]
    deferred: list[BaseException] = []
    pushed_at: float | None = None

    def batch_sent(n: int) -> None:
        sent[0] += n
        try:
            emit(ProgressEvent("push", sent[0], total, "contacts sent"))
        except BaseException as exc:  # noqa: BLE001 - raised at the chunk's end (see below)
            deferred.append(exc)

    try:
        for chunk in prep.chunks:
            if stop.is_set():
                break
            before = sent[0]
            s = push(ctx, req, chunk, session, batch_sent)
            sent[0] = before + s.sent + s.rejected
            # A callback that stops the run (the console's cancel) stops it between chunks, as
            # it always did: a batch's event never breaks off a chunk half-pushed.
            emit(ProgressEvent("push", sent[0], total, "contacts sent"))
            if deferred:
                raise deferred[0]
            pushed.put(chunk)
        # Every bulk import is sent: the confirmer's polls may take the per-second slots at
        # once instead of waiting for the limiter to see bulk idle (issue #18 item 5).
        session.client.limiter.push_over()
        pushed_at = time.monotonic()
    except ApiError as exc:  # fatal, or retriable but the retry policy gave up
        errors.append(exc)
        stop.set()
    except BaseException:
        stop.set()
        pushed.put(None)
        raise
    pushed.put(None)
    thread.join()
    for problem in errors:
        # ActiveCampaign refused or stayed unavailable beyond every retry: the run ends
        # with a report (what was not confirmed counts failed, and is sent next run).
        if isinstance(problem, ApiError):
            logger.error("run %s of export %s stopped: %s", req.run_id, req.export, problem)
            return str(problem), pushed_at
    if errors:
        raise errors[0]
    return None, pushed_at
