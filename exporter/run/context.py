"""What every phase of a run needs: the store, secrets, host policy, clock and API sessions.

:class:`RunContext` is built once at the edge (the command line, the Functions worker) and
handed to the phase functions (:mod:`exporter.run.prepare`, :mod:`~exporter.run.push`,
:mod:`~exporter.run.confirm`, :mod:`~exporter.run.finalize`); :class:`~exporter.run.engine.Engine`
is the same object with the phases as methods.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from exporter import telemetry
from exporter.activecampaign import ActiveCampaignClient, PollPolicy, RateLimiter, RetryPolicy
from exporter.activecampaign.ledger import BudgetLedger
from exporter.activecampaign.session import ApiSession, ClientFactory
from exporter.errors import ConfigError, NotFoundError
from exporter.management.config import Connection, Export
from exporter.management.hostnames import base_url, check_hostname
from exporter.management.repository import ConfigRepository
from exporter.management.secrets import SecretProvider
from exporter.planning.chunks import decode_batch_line
from exporter.planning.contacts import Batch
from exporter.reading.limits import ReadLimits
from exporter.run.records import ChunkSummary, RunRequest
from exporter.settings import HostPolicy
from exporter.storage.store import Store


def _utcnow() -> datetime:
    return datetime.now(UTC)


class RunContext:
    """The injected parts of a run, and the small helpers every phase shares."""

    def __init__(
        self,
        store: Store,
        secrets: SecretProvider,
        *,
        host_policy: HostPolicy,
        client_factory: ClientFactory | None = None,
        clock: Callable[[], datetime] = _utcnow,
        chunk_batches: int = 40,
        time_scale: float = 1.0,
        ledger_for: Callable[[str], BudgetLedger] | None = None,
        read_limits: ReadLimits | None = None,
    ) -> None:
        """``ledger_for``: the budget ledger of the account at a hostname, shared with other
        processes (the command line: a file in the store folder; the Functions app: an object
        in the store); ``None`` keeps each client's budget in memory."""
        if chunk_batches < 1:
            raise ValueError("chunk_batches must be at least 1")
        if time_scale <= 0:
            raise ValueError("time_scale must be positive")
        self.store = store
        self.secrets = secrets
        self.host_policy = host_policy
        self.repo = ConfigRepository(store)
        self.client_factory = client_factory
        self.clock = clock
        self.chunk_batches = chunk_batches
        self.time_scale = time_scale
        self.ledger_for = ledger_for
        self.read_limits = read_limits or ReadLimits()
        """What reading one snapshot may cost; a rejected-rows cap stops a run as guarded."""
        self.poll = PollPolicy(
            initial_interval=1.0 / time_scale,
            max_interval=15.0 / time_scale,
            deadline=1800.0 / time_scale,
        )

    def now(self) -> datetime:
        now = self.clock()
        return now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)

    # --- configuration ------------------------------------------------------------------------

    def export_config(self, name: str) -> tuple[Export, Connection]:
        """The export and its connection, if it may run now (enabled, consent, host)."""
        export, _etag = self.repo.get_export(name)
        if not export.enabled:
            raise ConfigError(f"export {name!r} is disabled", field="enabled")
        try:
            connection, _etag = self.repo.get_connection(export.connection)
        except NotFoundError:
            raise ConfigError(
                f"export {name!r} uses connection {export.connection!r}, which does not exist",
                field="connection",
            ) from None
        connection.require_consent()
        check_hostname(connection.hostname, self.host_policy)
        telemetry.bind_run(connection=connection.name, account=connection.hostname.lower())
        return export, connection

    def default_client(
        self,
        connection: Connection,
        api_key: str,
        share: float = 1.0,
    ) -> Any:
        """The real client: the connection's host, a limiter with ``share`` of the account
        budget — or, with a ledger (``ledger_for``), the whole account's, shared through it:
        the command line's file, or the Functions app's
        :class:`~exporter.storage.budget_ledger.StoreLedger` in the store — and waits scaled
        by ``time_scale``."""
        ts = self.time_scale
        ledger = self.ledger_for(connection.hostname) if self.ledger_for else None
        limiter = (
            RateLimiter(time_scale=ts, ledger=ledger)
            if ledger
            else RateLimiter(share=share, time_scale=ts)
        )
        return ActiveCampaignClient(
            base_url(connection.hostname),
            api_key,
            limiter=limiter,
            retry=RetryPolicy(initial_backoff=1.0 / ts, max_backoff=30.0 / ts, deadline=600.0 / ts),
        )

    def session(
        self,
        export: Export,
        connection: Connection,
        share: float,
    ) -> ApiSession:
        def build(conn: Connection, key: str) -> ActiveCampaignClient:
            if self.client_factory is not None:
                return self.client_factory(conn, key)
            client: ActiveCampaignClient = self.default_client(conn, key, share)
            return client

        return ApiSession(export, connection, self.secrets, build, self.poll)

    def read_chunk(self, chunk: str) -> list[Batch]:
        with self.store.open_read(chunk) as fh:
            text = io.TextIOWrapper(fh, encoding="utf-8")
            return [decode_batch_line(line) for line in text if line.strip()]

    def in_session(
        self,
        req: RunRequest,
        chunk: str,
        share: float,
        done: Callable[[RunRequest, str], ChunkSummary | None],
        work: Callable[[RunRequest, str, ApiSession], ChunkSummary],
    ) -> ChunkSummary:
        """A phase's record if it exists (no session, no key read), else the work in a session
        holding ``share`` of the account's budget."""
        summary = done(req, chunk)
        if summary is not None:
            return summary
        export, connection = self.export_config(req.export)
        session = self.session(export, connection, share)
        try:
            return work(req, chunk, session)
        finally:
            session.close()
