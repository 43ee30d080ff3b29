"""Application settings: every environment variable / app setting the exporter reads.

Settings are read once, at the edge (``function_app.py``'s blueprints, the CLI's ``main``), into
typed objects that are then passed down. Nothing below the edge reads the environment.
``APP_SETTING_NAMES`` is the single list the infrastructure tests check the Bicep against.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from exporter.reading.limits import ReadLimits

# --- Names of app settings (Functions app) and environment variables (CLI) -------------------
EXPORTER_HOME = "EXPORTER_HOME"
"""CLI: folder of the local store (default ``.exporter`` in the working directory)."""
STORAGE_BLOB_URI = "EXPORTER_STORAGE__blobServiceUri"
"""Functions: blob service URI of the exporter's storage account (identity-based access)."""
STORAGE_CONNECTION_STRING = "EXPORTER_STORAGE"
"""Functions, local only: a connection string (Azurite). Never set in Azure."""
SNAPSHOT_CONNECTION = "SnapshotStorage"
"""Functions: prefix of the snapshot storage's identity-based connection settings
(``SnapshotStorage__blobServiceUri``, ``SnapshotStorage__queueServiceUri``,
``SnapshotStorage__credential``, ``SnapshotStorage__clientId``). The snapshot trigger is an Event
Grid trigger now and binds no storage connection; the settings stay for a storage binding."""
KEYVAULT_URL = "EXPORTER_KEYVAULT_URL"
"""Functions: the Key Vault holding connections' API keys, ``https://NAME.vault.azure.net/``."""
AZURE_CLIENT_ID = "AZURE_CLIENT_ID"
"""Functions: client id of the app's user-assigned managed identity (DefaultAzureCredential)."""
SCHEDULE = "EXPORTER_TIMER_SCHEDULE"
"""Functions: NCRONTAB of the timer that looks for due exports (default every 5 minutes);
its interval is the finest schedule an export may have."""
HOSTNAME_ALLOWLIST = "EXPORTER_HOSTNAME_ALLOWLIST"
"""Extra ActiveCampaign API hostnames (comma-separated, ``*.`` wildcards) keys may be sent to."""
ALLOW_LOOPBACK_SANDBOX = "EXPORTER_ALLOW_LOOPBACK_SANDBOX"
"""``true`` lets connections point at a loopback sandbox (plain HTTP). Off in Azure."""
PUSH_WAVE_WIDTH = "EXPORTER_PUSH_WAVE_WIDTH"
"""Functions: how many push activities run at once; each gets 1/width of the account budget."""

PLATFORM_AUTH_ENABLED = "WEBSITE_AUTH_ENABLED"
"""Set by the platform (not by us) when App Service Authentication is on."""
PLATFORM_ENVIRONMENT = "AZURE_FUNCTIONS_ENVIRONMENT"
"""Set by the platform; ``Development`` under Core Tools on a laptop."""
PLATFORM_INSTANCE_ID = "WEBSITE_INSTANCE_ID"
"""Set by the platform on every instance in Azure (never by Core Tools on a laptop)."""

APP_SETTING_NAMES: tuple[str, ...] = (
    STORAGE_BLOB_URI,
    f"{SNAPSHOT_CONNECTION}__blobServiceUri",
    f"{SNAPSHOT_CONNECTION}__queueServiceUri",
    f"{SNAPSHOT_CONNECTION}__credential",
    f"{SNAPSHOT_CONNECTION}__clientId",
    KEYVAULT_URL,
    AZURE_CLIENT_ID,
    SCHEDULE,
    HOSTNAME_ALLOWLIST,
    ALLOW_LOOPBACK_SANDBOX,
    PUSH_WAVE_WIDTH,
)
"""Every setting the deployed app reads (the Bicep must set each; tests check it)."""

DEFAULT_SCHEDULE = "0 */5 * * * *"


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class HostPolicy:
    """Where a connection's API key may be sent."""

    allowlist: tuple[str, ...] = ()
    """Extra hostnames (``*.example.com`` wildcards allowed) besides ActiveCampaign's own."""
    allow_loopback_sandbox: bool = False
    """Allow ``127.0.0.1``/``localhost`` (plain HTTP) for the sandbox. CLI: on; Azure: off."""

    @classmethod
    def from_env(cls, env: Mapping[str, str], *, loopback_default: bool) -> HostPolicy:
        raw = env.get(HOSTNAME_ALLOWLIST, "")
        loop = env.get(ALLOW_LOOPBACK_SANDBOX)
        return cls(
            allowlist=tuple(h.strip().lower() for h in raw.split(",") if h.strip()),
            allow_loopback_sandbox=loopback_default if loop is None else _flag(loop),
        )


def _principal_header_trusted(env: Mapping[str, str]) -> bool:
    """App Service Authentication is on, or Core Tools runs the app on a laptop. In Azure
    (``WEBSITE_INSTANCE_ID`` set) only Easy Auth counts: a stray ``Development`` app setting
    must not make a forged header believable."""
    if _flag(env.get(PLATFORM_AUTH_ENABLED)):
        return True
    in_azure = bool((env.get(PLATFORM_INSTANCE_ID) or "").strip())
    return not in_azure and env.get(PLATFORM_ENVIRONMENT) == "Development"


@dataclass(frozen=True)
class FunctionSettings:
    """Settings of the deployed Functions app, resolved once per worker."""

    blob_service_uri: str | None
    """Identity-based blob endpoint; ``None`` when a connection string is used instead."""
    storage_connection_string: str | None
    """Local development (Azurite) only."""
    keyvault_url: str | None
    """Key Vault for API keys; ``None`` falls back to the local (environment) secret provider."""
    managed_identity_client_id: str | None
    schedule: str = DEFAULT_SCHEDULE
    push_wave_width: int = 4
    hosts: HostPolicy = field(default_factory=HostPolicy)
    principal_header_trusted: bool = True
    """Whether ``X-MS-CLIENT-PRINCIPAL`` can be believed: only when App Service Authentication
    is on (the platform sets ``WEBSITE_AUTH_ENABLED``) or under Core Tools locally
    (``AZURE_FUNCTIONS_ENVIRONMENT=Development`` without ``WEBSITE_INSTANCE_ID``). Without
    Easy Auth anyone holding a function key could forge the header, so the HTTP API then
    refuses every call with 401."""
    read_limits: ReadLimits = field(default_factory=ReadLimits)
    """What one snapshot may cost (line, field, columns, decompression, rejected rows): the
    ``EXPORTER_MAX_*`` app settings, defaults when absent — as on the command line."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> FunctionSettings:
        env = os.environ if env is None else env
        return cls(
            blob_service_uri=env.get(STORAGE_BLOB_URI) or None,
            storage_connection_string=env.get(STORAGE_CONNECTION_STRING) or None,
            keyvault_url=env.get(KEYVAULT_URL) or None,
            managed_identity_client_id=env.get(AZURE_CLIENT_ID) or None,
            schedule=env.get(SCHEDULE) or DEFAULT_SCHEDULE,
            push_wave_width=max(1, int(env.get(PUSH_WAVE_WIDTH) or 4)),
            hosts=HostPolicy.from_env(env, loopback_default=False),
            principal_header_trusted=_principal_header_trusted(env),
            read_limits=ReadLimits.from_env(env),
        )
