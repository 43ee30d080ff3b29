"""``python -m exporter console``: the console on this machine, over the local store.

Bound to 127.0.0.1 only; the local user acts as administrator (as on the command line). Keys
typed into the console are kept beside the store (:mod:`exporter.management.local_keys`), runs
go in background threads of this process (:class:`~exporter.console.runner.LocalRunner`), and
the CSRF secret is made fresh for each start (forms open before a restart must be reloaded).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO

from starlette.requests import Request

from exporter.activecampaign.ledger import FileLedger
from exporter.console.app import ConsoleHost, create_app
from exporter.console.runner import LocalRunner, account_usage
from exporter.errors import ExporterError
from exporter.management.config import Connection
from exporter.management.local_keys import LocalKeyStore
from exporter.management.permissions import Caller
from exporter.management.repository import ConfigRepository
from exporter.management.service import ClientLike, ManagementService
from exporter.reading.limits import ReadLimits
from exporter.run.engine import Engine
from exporter.settings import HostPolicy
from exporter.storage.store import LocalStore

LOOPBACK = "127.0.0.1"


def local_host(
    home: str | Path,
    env: Mapping[str, str],
    principal: str,
    *,
    time_scale: float = 1.0,
) -> ConsoleHost:
    """The console host over the store in ``home``, acting as ``principal`` (administrator)."""
    store = LocalStore(home)
    keys = LocalKeyStore(env, store.root / "keys")
    hosts = HostPolicy.from_env(env, loopback_default=True)
    budget = store.root / "budget"

    def engine() -> Engine:
        return Engine(
            store,
            keys,
            host_policy=hosts,
            time_scale=time_scale,
            read_limits=ReadLimits.from_env(env),
            ledger_for=lambda hostname: FileLedger.for_account(budget, hostname),
        )

    shared = engine()

    def factory(connection: Connection, key: str) -> ClientLike:
        client: ClientLike = shared.default_client(connection, key)
        return client

    service = ManagementService(ConfigRepository(store), keys, factory, hosts)
    caller = Caller.local_admin(principal)

    def caller_of(_request: Request) -> Caller:
        return caller

    def usage(export: str) -> dict[str, float] | None:
        """The account's use by every run on this machine (its budget ledger)."""
        try:
            _config, connection = shared.export_config(export)
        except ExporterError:
            return None
        book = FileLedger.for_account(budget, connection.hostname).peek()
        return account_usage(book, time.time(), time_scale)

    return ConsoleHost(
        service=service,
        store=store,
        caller_of=caller_of,
        runner=LocalRunner(engine, usage=usage),
        secret=secrets.token_bytes(32),
        host_label="local",
    )


def serve(
    home: str | Path,
    env: Mapping[str, str],
    principal: str,
    port: int,
    err: IO[str],
    time_scale: float = 1.0,
    *,
    run: Callable[..., None] | None = None,
) -> int:
    """Serve the console on http://127.0.0.1:PORT until interrupted (uvicorn)."""
    import uvicorn

    app = create_app(local_host(home, env, principal, time_scale=time_scale))
    err.write(f"console for {Path(home).resolve()} on http://{LOOPBACK}:{port}/ (Ctrl+C stops)\n")
    (run or uvicorn.run)(app, host=LOOPBACK, port=port, log_level="warning")
    return 0
