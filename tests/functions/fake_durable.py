"""A fake Durable client (the seam: the real one needs the Functions host) and a test runtime.

``create_check_status_response`` is the SDK's own, from a real ``DurableOrchestrationClient``
built with the binding payload the host would pass; the rest keeps instances in a dict and
behaves like the extension: ``start_new`` refuses an instance that is Pending or Running.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import azure.functions as func
from azure.durable_functions.models.DurableOrchestrationClient import DurableOrchestrationClient
from azure.durable_functions.models.DurableOrchestrationStatus import (
    DurableOrchestrationStatus,
)

from blueprints.runtime import Runtime
from exporter.management.config import Connection, Consent, Export
from exporter.management.repository import ConfigRepository
from exporter.management.secrets import LocalSecretProvider
from exporter.management.service import ManagementService
from exporter.run.engine import Engine
from exporter.settings import FunctionSettings, HostPolicy
from exporter.storage.budget_ledger import store_ledgers
from exporter.storage.store import Store

SYSTEM_KEY = "durable-system-key"
BASE = "http://localhost:7071/runtime/webhooks/durabletask/instances/INSTANCEID"
QUERY = f"taskHub=ExporterHub&connection=Storage&code={SYSTEM_KEY}"
BINDING = {
    "taskHubName": "ExporterHub",
    "creationUrls": {},
    "managementUrls": {
        "id": "INSTANCEID",
        "statusQueryGetUri": f"{BASE}?{QUERY}",
        "sendEventPostUri": f"{BASE}/raiseEvent/{{eventName}}?{QUERY}",
        "terminatePostUri": f"{BASE}/terminate?reason={{text}}&{QUERY}",
        "rewindPostUri": f"{BASE}/rewind?reason={{text}}&{QUERY}",
        "purgeHistoryDeleteUri": f"{BASE}?{QUERY}",
        "restartPostUri": f"{BASE}/restart?{QUERY}",
        "suspendPostUri": f"{BASE}/suspend?reason={{text}}&{QUERY}",
        "resumePostUri": f"{BASE}/resume?reason={{text}}&{QUERY}",
    },
    "rpcBaseUrl": "http://127.0.0.1:17071/durabletask/",
}
NOW = datetime(2026, 1, 5, 2, 0, tzinfo=UTC)


@dataclass
class FakeDurableClient:
    """Instances by id; every call is recorded in ``calls``."""

    instances: dict[str, dict[str, Any]] = field(default_factory=dict)
    calls: list[tuple[str, Any]] = field(default_factory=list)
    real: DurableOrchestrationClient = field(
        default_factory=lambda: DurableOrchestrationClient(json.dumps(BINDING))
    )

    def set(self, iid: str, status: str, **fields: Any) -> None:
        """Put an instance in a state (as the host would after running it)."""
        record = self.instances.setdefault(iid, {"instanceId": iid, "createdTime": NOW.isoformat()})
        record.update({"runtimeStatus": status, "lastUpdatedTime": NOW.isoformat(), **fields})

    async def start_new(
        self, name: str, instance_id: str | None = None, client_input: Any = None
    ) -> str:
        self.calls.append(("start_new", (name, instance_id, client_input)))
        assert instance_id is not None
        current = self.instances.get(instance_id, {}).get("runtimeStatus")
        if current in ("Pending", "Running"):
            raise Exception(f"An instance with ID '{instance_id}' already exists.")
        self.instances[instance_id] = {
            "name": name,
            "instanceId": instance_id,
            "createdTime": NOW.isoformat(),
            "lastUpdatedTime": NOW.isoformat(),
            "runtimeStatus": "Pending",
            "input": json.dumps(client_input),
        }
        return instance_id

    async def get_status(
        self,
        instance_id: str,
        show_history: bool = False,
        show_history_output: bool = False,
        show_input: bool = False,
    ) -> DurableOrchestrationStatus:
        self.calls.append(("get_status", instance_id))
        record = self.instances.get(instance_id)
        if record is None:
            return DurableOrchestrationStatus.from_json(f"instance {instance_id} not found")
        shown = dict(record) if show_input else {k: v for k, v in record.items() if k != "input"}
        return DurableOrchestrationStatus.from_json(shown)

    async def terminate(self, instance_id: str, reason: str) -> None:
        self.calls.append(("terminate", (instance_id, reason)))
        if instance_id not in self.instances:
            raise Exception(f"No instance with ID '{instance_id}' found.")
        self.instances[instance_id]["runtimeStatus"] = "Terminated"

    async def signal_entity(self, entity_id: Any, operation_name: str, input_: Any = None) -> None:
        self.calls.append(("signal_entity", (str(entity_id), operation_name, input_)))

    async def raise_event(self, instance_id: str, event_name: str, event_data: Any = None) -> None:
        self.calls.append(("raise_event", (instance_id, event_name, event_data)))
        if self.instances.get(instance_id, {}).get("runtimeStatus") not in ("Pending", "Running"):
            raise Exception(f"instance {instance_id} is not running")

    def create_check_status_response(
        self, request: func.HttpRequest, instance_id: str
    ) -> func.HttpResponse:
        return self.real.create_check_status_response(request, instance_id)

    def started(self) -> list[tuple[str, str, dict[str, Any]]]:
        return [args for name, args in self.calls if name == "start_new"]


# --- a runtime over a given store ---------------------------------------------------------------

API_KEY = "sandbox-key"


def settings(width: int = 4) -> FunctionSettings:
    return FunctionSettings(
        blob_service_uri=None,
        storage_connection_string=None,
        keyvault_url=None,
        managed_identity_client_id=None,
        push_wave_width=width,
        hosts=HostPolicy(allow_loopback_sandbox=True),
    )


def make_runtime(store: Store, *, width: int = 4, **engine_options: Any) -> Runtime:
    """A runtime like :func:`blueprints.runtime.build_runtime` builds, over ``store``."""
    config = settings(width)
    secrets = LocalSecretProvider({"AC_KEY": API_KEY})
    engine_options.setdefault("ledger_for", store_ledgers(store))  # the account's, as there
    engine = Engine(store, secrets, host_policy=config.hosts, **engine_options)

    def no_client(connection: Connection, key: str) -> Any:
        raise AssertionError("management is not expected to call ActiveCampaign here")

    management = ManagementService(ConfigRepository(store), secrets, no_client, config.hosts)
    return Runtime(config, store, secrets, engine, management)


def seed(
    store: Store,
    *,
    hostname: str = "shop.api-us1.com",
    export: str = "weekly",
    segment: str = "snapshots/high-value/",
    list_id: str = "1",
    schedule: str | None = None,
    allow_contributors: bool = False,
) -> Export:
    """A connection ``shop`` (key in ``env:AC_KEY``) and an export on it."""
    repo = ConfigRepository(store)
    if not repo.connection_exists("shop"):
        repo.put_connection(
            Connection(
                name="shop",
                display_name="Shop",
                hostname=hostname,
                api_key_ref="env:AC_KEY",
                allow_contributors=allow_contributors,
                consent=Consent(agreed=True, by="ada@example.com", at=NOW),
                created_by="ada@example.com",
                created_at=NOW,
            ),
            create_only=True,
        )
    item = Export(
        name=export,
        display_name=export.title(),
        connection="shop",
        segment=segment,
        list_id=list_id,
        email="Email",
        first_name="First",
        schedule=schedule,
        created_by="ada@example.com",
        created_at=NOW,
    )
    repo.put_export(item, create_only=True)
    return item


def snapshot_csv(rows: int, *, start: int = 0) -> bytes:
    lines = ["Email,First"] + [f"person{i}@example.com,P{i}" for i in range(start, start + rows)]
    return ("\r\n".join(lines) + "\r\n").encode()


def blob_event(name: str, event_type: str = "Microsoft.Storage.BlobCreated") -> func.EventGridEvent:
    """The Event Grid event the storage account sends when blob ``name`` (container/path) is
    created: a name, never the blob's content."""
    container, _, path = name.partition("/")
    return func.EventGridEvent(
        id="evt-1",
        data={"api": "PutBlob", "url": f"https://acct.blob.core.windows.net/{name}"},
        topic="/subscriptions/x/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/acct",
        subject=f"/blobServices/default/containers/{container}/blobs/{path}",
        event_type=event_type,
        event_time=None,
        data_version="",
    )
