"""The dependencies every function shares, built once per worker from the app settings.

This is the only place in the Functions app that reads the environment: the settings are
resolved here into :class:`~exporter.settings.FunctionSettings` and everything else receives
objects. Tests inject a ready :class:`Runtime` with :func:`use_runtime` (or :func:`set_runtime`)
instead of setting environment variables.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from blueprints import telemetry
from exporter.activecampaign.client import ActiveCampaignClient
from exporter.adapters.blob_store import BlobStore
from exporter.adapters.keyvault import KeyVaultSecretProvider
from exporter.management.config import Connection
from exporter.management.hostnames import base_url
from exporter.management.repository import ConfigRepository
from exporter.management.schedule import shortest_interval
from exporter.management.secrets import LocalSecretProvider, SecretProvider
from exporter.management.service import ManagementService
from exporter.run.engine import Engine
from exporter.settings import FunctionSettings
from exporter.storage.budget_ledger import store_ledgers
from exporter.storage.store import Store


@dataclass(frozen=True)
class Runtime:
    """What the functions of one worker share (all of it thread-safe)."""

    settings: FunctionSettings
    """The app settings, resolved once."""
    store: Store
    """Configuration, snapshots, runs and state (blob storage in Azure, Azurite locally)."""
    secrets: SecretProvider
    """Connections' API keys: Key Vault in Azure, the environment locally."""
    engine: Engine
    """Runs exports (the activities call its phases)."""
    management: ManagementService
    """Connections and exports with the permission rules (the HTTP API's service)."""


def client_factory(connection: Connection, api_key: str) -> ActiveCampaignClient:
    """A client for a connection (the hostname was checked against the policy by the caller)."""
    return ActiveCampaignClient(base_url(connection.hostname), api_key)


def build_runtime(settings: FunctionSettings, env: Mapping[str, str]) -> Runtime:
    """The runtime for ``settings``; ``env`` backs the local secret provider (no Key Vault)."""
    store = BlobStore.from_settings(settings)
    secrets: SecretProvider = (
        KeyVaultSecretProvider.from_settings(settings)
        if settings.keyvault_url
        else LocalSecretProvider(env)
    )
    engine = Engine(
        store,
        secrets,
        host_policy=settings.hosts,
        read_limits=settings.read_limits,
        # Every worker of an account, on any instance, draws on one budget in the store.
        ledger_for=store_ledgers(store),
    )
    management = ManagementService(
        ConfigRepository(store),
        secrets,
        client_factory,
        settings.hosts,
        schedule_tick=shortest_interval(settings.schedule),
    )
    return Runtime(settings, store, secrets, engine, management)


_lock = threading.Lock()
_runtime: Runtime | None = None


def get_runtime() -> Runtime:
    """The worker's runtime, built from the environment on first use."""
    global _runtime
    with _lock:
        if _runtime is None:
            telemetry.configure(os.environ)  # once per worker; nothing without a connection string
            _runtime = build_runtime(FunctionSettings.from_env(os.environ), os.environ)
        return _runtime


def set_runtime(runtime: Runtime | None) -> None:
    """Replace the worker's runtime (tests); ``None`` rebuilds it from the environment."""
    global _runtime
    with _lock:
        _runtime = runtime


@contextmanager
def use_runtime(runtime: Runtime) -> Iterator[Runtime]:
    """Use ``runtime`` inside the block, then restore the previous one."""
    global _runtime
    with _lock:
        previous, _runtime = _runtime, runtime
    try:
        yield runtime
    finally:
        with _lock:
            _runtime = previous
