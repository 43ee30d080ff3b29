"""Telemetry of the Functions app: OpenTelemetry to Application Insights through the Azure
Monitor distro, configured once per worker, and only when the app has a connection string.

:func:`configure` is called by :func:`blueprints.runtime.get_runtime` when it builds the
worker's runtime (the one place that reads the environment); nothing happens at import time,
and without ``APPLICATIONINSIGHTS_CONNECTION_STRING`` (locally, in tests) nothing is set up and
nothing leaves the machine.

What it sets up:

- the ``exporter`` logger's records (the core's) go to Application Insights' ``traces`` with
  the run's dimensions as ``customDimensions`` (:class:`exporter.telemetry.RunDimensions` on the
  exporting handler), at level INFO and up: the run_started/run_ended records the alerts and
  the workbook read are INFO or above;
- the core's OpenTelemetry metrics (:mod:`exporter.telemetry`) go to ``customMetrics``;
- **no sampling**: ``sampling_ratio=1.0`` and logs never sampled with their traces — the alert
  records must all arrive (the OpenTelemetry counterpart of host.json's ``excludedTypes``);
- **no automatic HTTP instrumentation**: a request's URL can hold a contact's address
  (``contacts?email=``), so requests/urllib/urllib3/httpx dependencies are not recorded;
- Entra authentication (the component has ``DisableLocalAuth``): the app's user-assigned
  identity named by ``APPLICATIONINSIGHTS_AUTHENTICATION_STRING``
  (``ClientId=<id>;Authorization=AAD``, as the Functions host reads it).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any

from exporter.telemetry import RunDimensions

CONNECTION_STRING = "APPLICATIONINSIGHTS_CONNECTION_STRING"
AUTHENTICATION_STRING = "APPLICATIONINSIGHTS_AUTHENTICATION_STRING"
LOGGER = "exporter"
"""The logger whose records are exported (the core's; the host's own logs stay the host's)."""

DISABLED_INSTRUMENTATIONS = (
    "azure_sdk",
    "django",
    "fastapi",
    "flask",
    "httpx",
    "psycopg2",
    "requests",
    "urllib",
    "urllib3",
)
"""The distro's automatic instrumentations, all off: URLs may carry contacts' addresses, and
every blob read as a dependency would cost more than it tells."""

_lock = threading.Lock()
_configured = False


def settings(env: Mapping[str, str]) -> dict[str, Any] | None:
    """The arguments of ``configure_azure_monitor`` for this environment, or ``None`` when no
    connection string is set (then nothing is exported)."""
    connection_string = env.get(CONNECTION_STRING, "").strip()
    if not connection_string:
        return None
    options: dict[str, Any] = {
        "connection_string": connection_string,
        "logger_name": LOGGER,
        "sampling_ratio": 1.0,
        "enable_trace_based_sampling_for_logs": False,
        "enable_live_metrics": False,
        "instrumentation_options": {name: {"enabled": False} for name in DISABLED_INSTRUMENTATIONS},
    }
    client_id = entra_client_id(env.get(AUTHENTICATION_STRING, ""))
    if client_id is not None:
        from azure.identity import ManagedIdentityCredential

        options["credential"] = ManagedIdentityCredential(client_id=client_id or None)
    return options


def entra_client_id(authentication: str) -> str | None:
    """``ClientId=<id>;Authorization=AAD`` -> ``<id>`` (``""`` for the system identity);
    ``None`` when the string does not ask for Entra authentication."""
    parts = dict(
        (key.strip().lower(), value.strip())
        for key, sep, value in (item.partition("=") for item in authentication.split(";"))
        if sep
    )
    if parts.get("authorization", "").upper() != "AAD":
        return None
    return parts.get("clientid", "")


def configure(env: Mapping[str, str]) -> bool:
    """Set up the export to Application Insights once per process, if ``env`` has a connection
    string; returns whether telemetry is exported."""
    global _configured
    with _lock:
        if _configured:
            return True
        options = settings(env)
        if options is None:
            return False
        from azure.monitor.opentelemetry import configure_azure_monitor

        configure_azure_monitor(**options)
        attach_dimensions(logging.getLogger(LOGGER))
        _configured = True
        return True


def attach_dimensions(logger: logging.Logger) -> int:
    """Put :class:`RunDimensions` on the logger's OpenTelemetry handlers (once each), have them
    export INFO and up, and let INFO records through the logger; returns how many handlers
    carry it."""
    from opentelemetry.instrumentation.logging.handler import LoggingHandler

    count = 0
    for handler in logger.handlers:
        if not isinstance(handler, LoggingHandler):
            continue
        if not any(isinstance(f, RunDimensions) for f in handler.filters):
            handler.addFilter(RunDimensions())
        # Debug lines (one per API request) stay local even where the worker logs DEBUG.
        handler.setLevel(max(handler.level, logging.INFO))
        count += 1
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    return count
