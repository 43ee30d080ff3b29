"""ManagementService: the rules behind the CLI and the HTTP API.

The ActiveCampaign side is an in-test fake of the small ``ClientLike`` protocol (verify,
get_list, iter_fields): the real client and the sandbox are covered by their own tests.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from exporter.errors import (
    ApiNotFound,
    AuthenticationError,
    ConfigError,
    ConfigErrors,
    ConflictError,
    NotFoundError,
    PermissionDenied,
    SecretError,
)
from exporter.management.config import Connection, FieldMap
from exporter.management.permissions import ADMIN, CONTRIBUTOR, Caller
from exporter.management.repository import ConfigRepository
from exporter.management.secrets import LocalSecretProvider
from exporter.management.service import DeletedExport, ManagementService
from exporter.management.validation import resolve_fields
from exporter.settings import HostPolicy
from exporter.storage.store import LocalStore

KEY = "0123456789abcdef" * 4 + "deadbeef"
OWN_REF = "keyvault:ac-shop-ac-0a1b2c3d"
"""A Key Vault reference of the kind the app generates for connection shop-ac."""
NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)

ADMIN_CALLER = Caller("ada@example.com", frozenset({ADMIN}))
CONTRIB_CALLER = Caller("cy@example.com", frozenset({CONTRIBUTOR}))
NOBODY = Caller("nn@example.com", frozenset({"Some.Other.Role"}))


# --- fakes ---------------------------------------------------------------------------------


@dataclass
class Account:
    """One fake ActiveCampaign account: its key, lists and custom fields."""

    key: str = KEY
    lists: dict[str, str] = field(default_factory=lambda: {"3": "Newsletter"})
    fields: list[dict[str, str]] = field(
        default_factory=lambda: [
            {"id": "1", "title": "Tier", "perstag": "TIER", "type": "text"},
            {"id": "2", "title": "Customer since", "perstag": "SINCE", "type": "date"},
        ]
    )
    calls: list[str] = field(default_factory=list)


class FakeClient:
    def __init__(self, account: Account, connection: Connection, key: str) -> None:
        self.account, self.connection, self.key = account, connection, key

    def _check(self) -> None:
        if self.key != self.account.key:
            raise AuthenticationError("the API key was rejected", status=403)

    def verify(self) -> dict[str, Any]:
        self.account.calls.append("verify")
        self._check()
        return {"user": {"id": "1"}}

    def get_list(self, list_id: str) -> dict[str, Any]:
        self.account.calls.append(f"get_list {list_id}")
        self._check()
        if list_id not in self.account.lists:
            raise ApiNotFound(f"No Result found for _List with id {list_id}", status=404)
        return {"list": {"id": list_id, "name": self.account.lists[list_id]}}

    def iter_fields(self) -> Iterator[dict[str, str]]:
        self.account.calls.append("iter_fields")
        self._check()
        yield from self.account.fields


class MemorySecrets:
    """Stands in for Key Vault: set/get/delete by reference."""

    def __init__(self, values: dict[str, str] | None = None) -> None:
        self.values = dict(values or {})
        self.deleted: list[str] = []

    def get(self, ref: str) -> str:
        try:
            return self.values[ref]
        except KeyError:
            raise SecretError(f"no secret {ref}") from None

    def set(self, ref: str, value: str, *, owner: str) -> None:
        self.values[ref] = value

    def delete(self, ref: str, *, owner: str) -> None:
        self.deleted.append(ref)
        self.values.pop(ref, None)

    def invalidate(self, ref: str) -> None:
        pass


@dataclass
class World:
    service: ManagementService
    account: Account
    secrets: MemorySecrets
    store: LocalStore


def make_world(
    tmp_path: Path,
    *,
    policy: HostPolicy | None = None,
    secrets: Any = None,
    account: Account | None = None,
) -> World:
    store = LocalStore(tmp_path / "store")
    account = account or Account()
    memory = MemorySecrets({"keyvault:shop-key": KEY})
    service = ManagementService(
        ConfigRepository(store),
        secrets if secrets is not None else memory,
        lambda conn, key: FakeClient(account, conn, key),
        policy or HostPolicy(),
        clock=lambda: NOW,
    )
    return World(service, account, memory, store)


def conn_payload(name: str = "shop-ac", **kw: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": name,
        "display_name": "Shop ActiveCampaign",
        "hostname": "shop.api-us1.com",
        "api_key_ref": "keyvault:shop-key",
        "consent": True,
    }
    data.update(kw)
    return data


def export_payload(name: str = "high-value", **kw: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": name,
        "display_name": "High value",
        "connection": "shop-ac",
        "segment": "snapshots/high-value/",
        "list_id": "3",
        "email": "Email",
    }
    data.update(kw)
    return data


@pytest.fixture
def world(tmp_path: Path) -> World:
    return make_world(tmp_path)


def field_names(exc: ConfigErrors) -> set[str | None]:
    return {e.field for e in exc.errors}


# --- the permission matrix -----------------------------------------------------------------

Op = Callable[[ManagementService, Caller], object]

OPERATIONS: dict[str, tuple[Op, str]] = {
    # name: (operation, who may: "admin" | "users" (admin, contributor if allowed) | "listing")
    "create_connection": (lambda s, c: s.create_connection(c, conn_payload("new-ac")), "admin"),
    "get_connection": (lambda s, c: s.get_connection(c, "shop-ac"), "users"),
    "list_connections": (lambda s, c: s.list_connections(c), "listing"),
    "update_connection": (
        lambda s, c: s.update_connection(c, "shop-ac", {"display_name": "Renamed"}),
        "admin",
    ),
    "verify_connection": (lambda s, c: s.verify_connection(c, "shop-ac"), "admin"),
    "delete_connection": (lambda s, c: s.delete_connection(c, "shop-ac", force=True), "admin"),
    "create_export": (lambda s, c: s.create_export(c, export_payload("new-export")), "users"),
    "get_export": (lambda s, c: s.get_export(c, "high-value"), "users"),
    "list_exports": (lambda s, c: s.list_exports(c), "listing"),
    "update_export": (
        lambda s, c: s.update_export(c, "high-value", {"display_name": "Renamed"}),
        "users",
    ),
    "run_export": (lambda s, c: s.authorize_run(c, "high-value"), "users"),
    "delete_export": (lambda s, c: s.delete_export(c, "high-value"), "users"),
}
CALLERS = {"admin": ADMIN_CALLER, "contributor": CONTRIB_CALLER, "none": NOBODY}


def expected_allowed(rule: str, role: str, allow_contributors: bool) -> bool:
    if role == "admin":
        return True
    if role == "none":
        return False
    return rule == "listing" or (rule == "users" and allow_contributors)


@pytest.mark.parametrize("allow_contributors", [True, False])
@pytest.mark.parametrize("role", list(CALLERS))
@pytest.mark.parametrize("operation", list(OPERATIONS))
def test_permission_matrix(
    tmp_path: Path, operation: str, role: str, allow_contributors: bool
) -> None:
    w = make_world(tmp_path)
    w.service.create_connection(ADMIN_CALLER, conn_payload(allow_contributors=allow_contributors))
    w.service.create_export(ADMIN_CALLER, export_payload())
    op, rule = OPERATIONS[operation]
    if expected_allowed(rule, role, allow_contributors):
        result = op(w.service, CALLERS[role])
        if operation == "list_connections":
            assert len(result) == (1 if role == "admin" or allow_contributors else 0)  # type: ignore[arg-type]
        if operation == "list_exports":
            assert len(result) == (1 if role == "admin" or allow_contributors else 0)  # type: ignore[arg-type]
    else:
        before = sorted(i.path for i in w.store.list("config"))
        with pytest.raises(PermissionDenied):
            op(w.service, CALLERS[role])
        assert sorted(i.path for i in w.store.list("config")) == before  # nothing changed


# --- connections ---------------------------------------------------------------------------


def test_create_connection_normalises_the_host_and_records_consent(world: World) -> None:
    saved = world.service.create_connection(
        ADMIN_CALLER,
        conn_payload(
            hostname="https://shop.api-us1.com/api/3/",
            # Whatever a client claims, consent is recorded for the caller, now.
            consent={"agreed": True, "by": "someone-else", "at": "2000-01-01T00:00:00Z"},
            created_by="mallory",
        ),
    )
    assert saved.view["hostname"] == "shop.api-us1.com"
    assert len(saved.notes) == 2
    assert saved.view["consent"] == {
        "agreed": True,
        "by": "ada@example.com",
        "at": NOW.isoformat().replace("+00:00", "Z"),
    }
    assert saved.view["created_by"] == "ada@example.com"
    assert saved.view["allow_contributors"] is False
    assert world.service.get_connection(ADMIN_CALLER, "shop-ac").etag == saved.etag


@pytest.mark.parametrize("consent", [None, False, {"agreed": False}, "yes"])
def test_consent_is_required(world: World, consent: object) -> None:
    payload = conn_payload(consent=consent)
    if consent is None:
        del payload["consent"]
    with pytest.raises(ConfigErrors) as info:
        world.service.create_connection(ADMIN_CALLER, payload)
    assert field_names(info.value) == {"consent"}
    assert not world.store.exists("config/connections/shop-ac.json")


def test_all_connection_problems_are_reported_at_once(world: World) -> None:
    with pytest.raises(ConfigErrors) as info:
        world.service.create_connection(
            ADMIN_CALLER,
            conn_payload(hostname="10.0.0.1", api_key_ref=KEY, consent=False, colour="red"),
            api_key="has space",
        )
    assert field_names(info.value) == {"hostname", "api_key_ref", "consent", "colour", "api_key"}
    assert KEY not in str(info.value)


def test_hosts_outside_the_policy_are_refused(tmp_path: Path) -> None:
    strict = make_world(tmp_path / "a")
    with pytest.raises(ConfigErrors) as info:
        strict.service.create_connection(ADMIN_CALLER, conn_payload(hostname="127.0.0.1:8765"))
    assert field_names(info.value) == {"hostname"}
    sandbox = make_world(tmp_path / "b", policy=HostPolicy(allow_loopback_sandbox=True))
    saved = sandbox.service.create_connection(ADMIN_CALLER, conn_payload(hostname="127.0.0.1:8765"))
    assert saved.view["hostname"] == "127.0.0.1:8765"


def test_an_api_key_given_is_stored_by_reference_never_shown(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    other_key = "f" * 72
    with caplog.at_level(logging.DEBUG):
        saved = world.service.create_connection(
            ADMIN_CALLER, conn_payload(api_key_ref=OWN_REF), api_key=other_key, verify=False
        )
    assert world.secrets.values[OWN_REF] == other_key
    assert other_key not in repr(saved)
    assert other_key not in world.store.read_bytes("config/connections/shop-ac.json").decode()
    assert other_key not in caplog.text
    assert "ada@example.com" not in caplog.text  # principals are masked in logs


def test_a_local_key_cannot_be_stored_and_the_connection_is_not_left_behind(
    tmp_path: Path,
) -> None:
    w = make_world(tmp_path, secrets=LocalSecretProvider({}))
    with pytest.raises(SecretError, match="needs Key Vault") as info:
        w.service.create_connection(ADMIN_CALLER, conn_payload(api_key_ref=OWN_REF), KEY)
    assert KEY not in str(info.value)
    assert not w.store.exists("config/connections/shop-ac.json")


def test_verify_before_saving_saves_nothing_for_a_wrong_key(world: World) -> None:
    with pytest.raises(AuthenticationError):
        world.service.create_connection(
            ADMIN_CALLER, conn_payload(api_key_ref=OWN_REF), api_key="wrong", verify=True
        )
    assert not world.store.exists("config/connections/shop-ac.json")
    assert OWN_REF not in world.secrets.values
    assert world.secrets.values["keyvault:shop-key"] == KEY  # untouched
    world.service.create_connection(ADMIN_CALLER, conn_payload(), verify=True)
    assert world.account.calls == ["verify", "verify"]


def test_creating_an_existing_connection_is_a_conflict(world: World) -> None:
    world.service.create_connection(ADMIN_CALLER, conn_payload(api_key_ref=OWN_REF), verify=False)
    world.secrets.values[OWN_REF] = KEY
    with pytest.raises(ConflictError):
        world.service.create_connection(
            ADMIN_CALLER, conn_payload(api_key_ref=OWN_REF), api_key="x" * 72
        )
    assert world.secrets.values[OWN_REF] == KEY  # the existing key survives


def test_verify_connection_uses_the_stored_key(world: World) -> None:
    world.service.create_connection(ADMIN_CALLER, conn_payload())
    result = world.service.verify_connection(ADMIN_CALLER, "shop-ac")
    assert (result.name, result.hostname, result.verified_at) == (
        "shop-ac",
        "shop.api-us1.com",
        NOW,
    )
    world.secrets.values["keyvault:shop-key"] = "rotated"
    with pytest.raises(AuthenticationError):
        world.service.verify_connection(ADMIN_CALLER, "shop-ac")


def test_contributors_see_only_name_display_name_and_type(world: World) -> None:
    world.service.create_connection(ADMIN_CALLER, conn_payload(allow_contributors=True))
    world.service.create_connection(ADMIN_CALLER, conn_payload("admin-only"))
    expected = {"name": "shop-ac", "display_name": "Shop ActiveCampaign", "type": "activecampaign"}
    assert world.service.list_connections(CONTRIB_CALLER) == [expected]
    assert world.service.get_connection(CONTRIB_CALLER, "shop-ac").view == expected
    assert {c["name"] for c in world.service.list_connections(ADMIN_CALLER)} == {
        "admin-only",
        "shop-ac",
    }


def test_update_connection_merges_and_keeps_consent_on_a_round_trip(world: World) -> None:
    saved = world.service.create_connection(ADMIN_CALLER, conn_payload())
    later = Caller("bob@example.com", frozenset({ADMIN}))
    # The whole document sent back (as an HTTP PUT would) with one change.
    updated = world.service.update_connection(
        later, "shop-ac", saved.view | {"allow_contributors": True}, if_match=saved.etag
    )
    assert updated.view["allow_contributors"] is True
    assert updated.view["consent"]["by"] == "ada@example.com"
    assert updated.view["created_by"] == "ada@example.com"
    assert updated.view["updated_by"] == "bob@example.com"
    with pytest.raises(ConflictError):
        world.service.update_connection(
            later, "shop-ac", {"display_name": "x"}, if_match=saved.etag
        )


def test_a_new_destination_needs_consent_again(world: World) -> None:
    world.service.create_connection(ADMIN_CALLER, conn_payload())
    with pytest.raises(ConfigErrors) as info:
        world.service.update_connection(ADMIN_CALLER, "shop-ac", {"hostname": "other.api-us1.com"})
    assert field_names(info.value) == {"consent"}
    later = Caller("bob", frozenset({ADMIN}))
    saved = world.service.update_connection(
        later, "shop-ac", {"hostname": "https://other.api-us1.com", "consent": True}
    )
    assert saved.view["hostname"] == "other.api-us1.com" and saved.notes
    assert saved.view["consent"]["by"] == "bob"


def test_connections_cannot_be_renamed_or_consent_withdrawn(world: World) -> None:
    world.service.create_connection(ADMIN_CALLER, conn_payload())
    with pytest.raises(ConfigErrors) as info:
        world.service.update_connection(ADMIN_CALLER, "shop-ac", {"name": "other", "consent": None})
    assert field_names(info.value) == {"name", "consent"}


def test_delete_connection_refuses_while_used_and_deletes_an_unshared_key(world: World) -> None:
    world.service.create_connection(ADMIN_CALLER, conn_payload(api_key_ref=OWN_REF), verify=False)
    world.secrets.values[OWN_REF] = KEY
    world.service.create_export(ADMIN_CALLER, export_payload())
    with pytest.raises(ConflictError, match="high-value"):
        world.service.delete_connection(ADMIN_CALLER, "shop-ac", delete_secret=True)
    assert world.secrets.deleted == []
    result = world.service.delete_connection(
        ADMIN_CALLER, "shop-ac", delete_secret=True, force=True
    )
    assert result.orphaned_exports == ["high-value"] and result.secret_deleted
    assert world.secrets.deleted == [OWN_REF]


def test_a_key_shared_with_another_connection_is_kept(world: World) -> None:
    world.service.create_connection(ADMIN_CALLER, conn_payload(api_key_ref=OWN_REF), verify=False)
    world.service.create_connection(
        ADMIN_CALLER, conn_payload("shop-two", api_key_ref=OWN_REF), verify=False
    )
    result = world.service.delete_connection(ADMIN_CALLER, "shop-ac", delete_secret=True)
    assert not result.secret_deleted and world.secrets.deleted == []


def test_unknown_connection_is_not_found(world: World) -> None:
    with pytest.raises(NotFoundError):
        world.service.get_connection(ADMIN_CALLER, "nope")


# --- exports -------------------------------------------------------------------------------


def test_create_export_checks_the_list_and_resolves_fields_but_never_runs(world: World) -> None:
    world.service.create_connection(ADMIN_CALLER, conn_payload())
    saved = world.service.create_export(
        ADMIN_CALLER,
        export_payload(
            fields=[
                {"column": "Tier", "field": "%tier%"},  # personalisation tag
                {"column": "Since", "field": "customer SINCE", "field_id": "99"},  # title
            ]
        ),
    )
    assert [(f["field_id"], f["field_type"]) for f in saved.view["fields"]] == [
        ("1", "text"),
        ("2", "date"),
    ]
    assert world.account.calls == ["verify", "get_list 3", "iter_fields"]  # Connect checked
    assert [i.path for i in world.store.list("runs")] == []
    assert world.service.get_export(ADMIN_CALLER, "high-value").view == saved.view


def test_an_unknown_list_and_unknown_fields_are_reported_together(world: World) -> None:
    world.service.create_connection(ADMIN_CALLER, conn_payload())
    with pytest.raises(ConfigErrors) as info:
        world.service.create_export(
            ADMIN_CALLER,
            export_payload(
                list_id="42",
                fields=[{"column": "a", "field": "Tier"}, {"column": "b", "field": "Nope"}],
            ),
        )
    found = {e.field: e.detail for e in info.value.errors}
    assert set(found) == {"list_id", "fields.1.field"}
    assert "no list with ID 42" in found["list_id"]
    assert not world.store.exists("config/exports/high-value.json")


def test_field_resolution_reads_every_page() -> None:
    many = [
        {"id": str(i), "title": f"F{i}", "perstag": f"F{i}", "type": "text"} for i in range(1, 251)
    ]
    resolved = resolve_fields([FieldMap(column="c", field="F250")], iter(many))
    assert resolved[0].field_id == "250"


def test_ambiguous_and_duplicate_field_references() -> None:
    fields = [
        {"id": "1", "title": "Tier", "perstag": "TIER", "type": "text"},
        {"id": "2", "title": "Score", "perstag": "SCORE_A", "type": "text"},
        {"id": "3", "title": "score", "perstag": "SCORE_B", "type": "text"},
    ]
    with pytest.raises(ConfigErrors) as info:
        resolve_fields(
            [
                FieldMap(column="a", field="Score"),
                FieldMap(column="b", field="1"),
                FieldMap(column="c", field="TIER"),
            ],
            fields,
        )
    found = {e.field: e.detail for e in info.value.errors}
    assert "several fields (IDs 2, 3)" in found["fields.0.field"]
    assert "same field as fields.1" in found["fields.2.field"]


def test_an_export_on_a_missing_connection_names_the_field(world: World) -> None:
    with pytest.raises(ConfigError) as info:
        world.service.create_export(ADMIN_CALLER, export_payload(connection="nope"))
    assert info.value.field == "connection"


def test_creating_an_existing_export_is_a_conflict(world: World) -> None:
    world.service.create_connection(ADMIN_CALLER, conn_payload())
    world.service.create_export(ADMIN_CALLER, export_payload())
    with pytest.raises(ConflictError):
        world.service.create_export(ADMIN_CALLER, export_payload(display_name="Again"))


def test_update_export_rechecks_only_when_the_destination_changes(world: World) -> None:
    world.service.create_connection(ADMIN_CALLER, conn_payload())
    saved = world.service.create_export(ADMIN_CALLER, export_payload())
    world.account.calls.clear()
    world.service.update_export(
        ADMIN_CALLER, "high-value", {"schedule": "0 0 3 * * *", "enabled": False}
    )
    assert world.account.calls == []
    with pytest.raises(ConfigErrors) as info:
        world.service.update_export(ADMIN_CALLER, "high-value", {"list_id": "77"})
    assert field_names(info.value) == {"list_id"}
    with pytest.raises(ConflictError):
        world.service.update_export(
            ADMIN_CALLER, "high-value", {"tags": ["x"]}, if_match=saved.etag
        )
    with pytest.raises(ConfigErrors):
        world.service.update_export(ADMIN_CALLER, "high-value", {"name": "renamed"})


def test_a_contributor_cannot_move_an_export_to_an_admin_only_connection(world: World) -> None:
    world.service.create_connection(ADMIN_CALLER, conn_payload(allow_contributors=True))
    world.service.create_connection(ADMIN_CALLER, conn_payload("admin-only"))
    world.service.create_export(CONTRIB_CALLER, export_payload())
    with pytest.raises(PermissionDenied, match="admin-only"):
        world.service.update_export(CONTRIB_CALLER, "high-value", {"connection": "admin-only"})
    assert world.service.get_export(CONTRIB_CALLER, "high-value").view["connection"] == "shop-ac"


def test_contributors_list_only_exports_on_connections_that_allow_them(world: World) -> None:
    world.service.create_connection(ADMIN_CALLER, conn_payload(allow_contributors=True))
    world.service.create_connection(ADMIN_CALLER, conn_payload("admin-only"))
    world.service.create_export(ADMIN_CALLER, export_payload("open-one"))
    world.service.create_export(ADMIN_CALLER, export_payload("closed-one", connection="admin-only"))
    assert [e["name"] for e in world.service.list_exports(CONTRIB_CALLER)] == ["open-one"]
    assert [e["name"] for e in world.service.list_exports(ADMIN_CALLER)] == [
        "closed-one",
        "open-one",
    ]


def test_delete_export_keeps_history_and_tells_the_host_what_to_stop(world: World) -> None:
    world.service.create_connection(ADMIN_CALLER, conn_payload(allow_contributors=True))
    world.service.create_export(ADMIN_CALLER, export_payload())
    world.store.write_bytes("runs/high-value/r1/report.json", b"{}")
    assert world.service.delete_export(CONTRIB_CALLER, "high-value") == DeletedExport(
        "high-value", "shop-ac"
    )
    assert world.store.exists("runs/high-value/r1/report.json")
    with pytest.raises(NotFoundError):
        world.service.get_export(ADMIN_CALLER, "high-value")


PERSONAL = (
    "state/high-value/state.bin",
    "state/high-value/pending.json",
    "state/high-value/active_run.json",
    "state/high-value/last_run.json",
    "runs/high-value/r1/chunks/00000.jsonl",
    "runs/high-value/r1/sent/00000.json",
    "runs/high-value/r1/rejected.csv",
    "runs/high-value/r2/plan.csv",
)
"""What an export keeps about people (addresses, rows) between and during runs."""


def test_deleting_an_export_removes_its_personal_data(world: World) -> None:
    world.service.create_connection(ADMIN_CALLER, conn_payload(allow_contributors=True))
    world.service.create_export(ADMIN_CALLER, export_payload())
    for path in PERSONAL:
        world.store.write_bytes(path, b"ada@example.com")
    world.store.write_bytes("state/high-value-2/state.bin", b"another export's state")
    world.service.delete_export(CONTRIB_CALLER, "high-value")
    assert [p for p in PERSONAL if world.store.exists(p)] == []
    assert world.store.exists("state/high-value-2/state.bin"), "a prefix is not a folder"
    # A new export of the same name starts afresh: it does not inherit the old state.
    world.service.create_export(ADMIN_CALLER, export_payload())
    assert not world.store.exists("state/high-value/state.bin")


def test_forgetting_an_export_is_refused_while_it_exists(world: World) -> None:
    world.service.create_connection(ADMIN_CALLER, conn_payload())
    world.service.create_export(ADMIN_CALLER, export_payload())
    world.store.write_bytes("state/high-value/state.bin", b"x")
    with pytest.raises(ConflictError):
        world.service.forget_export("high-value")
    assert world.store.exists("state/high-value/state.bin")


def test_orphaned_exports_are_for_administrators_only(world: World) -> None:
    world.service.create_connection(ADMIN_CALLER, conn_payload(allow_contributors=True))
    world.service.create_export(ADMIN_CALLER, export_payload())
    world.service.delete_connection(ADMIN_CALLER, "shop-ac", force=True)
    with pytest.raises(PermissionDenied):
        world.service.get_export(CONTRIB_CALLER, "high-value")
    assert world.service.delete_export(ADMIN_CALLER, "high-value").name == "high-value"


def test_authorize_run_checks_enabled_consent_and_host(tmp_path: Path) -> None:
    w = make_world(tmp_path, policy=HostPolicy(allow_loopback_sandbox=True))
    w.service.create_connection(ADMIN_CALLER, conn_payload(hostname="127.0.0.1:8765"))
    w.service.create_export(ADMIN_CALLER, export_payload())
    export, connection = w.service.authorize_run(ADMIN_CALLER, "high-value")
    assert (export.name, connection.name) == ("high-value", "shop-ac")
    # The same store read by an app whose policy forbids the loopback sandbox.
    strict = ManagementService(
        w.service.repo, w.secrets, w.service.client_factory, HostPolicy(), clock=lambda: NOW
    )
    with pytest.raises(ConfigError) as info:
        strict.authorize_run(ADMIN_CALLER, "high-value")
    assert info.value.field == "hostname"
    w.service.update_export(ADMIN_CALLER, "high-value", {"enabled": False})
    with pytest.raises(ConfigError) as info:
        w.service.authorize_run(ADMIN_CALLER, "high-value")
    assert info.value.field == "enabled"


# --- over real HTTP: the sandbox, the real client, the local secret provider ----------------

SANDBOX_FIELDS = 230  # three pages of 100: the field we want is on the last one


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Any]:
    from sandbox import Field, Sandbox, SandboxConfig

    fields = [
        Field(id=str(i), title=f"Field {i}", type="text", perstag=f"F{i}")
        for i in range(1, SANDBOX_FIELDS)
    ]
    fields.append(Field(id=str(SANDBOX_FIELDS), title="Tier", type="dropdown", perstag="TIER"))
    sb = Sandbox(SandboxConfig(api_key="k", lists={"1": "Newsletter"}, fields=fields, port=0))
    sb.start()
    try:
        yield sb
    finally:
        sb.stop()


def test_against_the_sandbox_with_the_real_client(tmp_path: Path, sandbox: Any) -> None:
    from exporter.activecampaign.client import ActiveCampaignClient
    from exporter.management.hostnames import base_url

    service = ManagementService(
        ConfigRepository(LocalStore(tmp_path / "store")),
        LocalSecretProvider({"AC_KEY": "k", "WRONG_KEY": "nope"}),
        lambda conn, key: ActiveCampaignClient(base_url(conn.hostname), key),
        HostPolicy(allow_loopback_sandbox=True),
        clock=lambda: NOW,
    )
    saved = service.create_connection(
        ADMIN_CALLER, conn_payload(hostname=sandbox.base_url + "/api/3/", api_key_ref="env:AC_KEY")
    )
    assert saved.view["hostname"] == sandbox.base_url.removeprefix("http://")
    assert service.verify_connection(ADMIN_CALLER, "shop-ac").verified_at == NOW

    with pytest.raises(ConfigErrors) as info:
        service.create_export(ADMIN_CALLER, export_payload(list_id="9"))
    assert field_names(info.value) == {"list_id"}

    created = service.create_export(
        ADMIN_CALLER, export_payload(list_id="1", fields=[{"column": "Tier", "field": "%TIER%"}])
    )
    assert created.view["fields"][0]["field_id"] == str(SANDBOX_FIELDS)
    assert created.view["fields"][0]["field_type"] == "dropdown"

    service.update_connection(ADMIN_CALLER, "shop-ac", {"api_key_ref": "env:WRONG_KEY"})
    with pytest.raises(AuthenticationError):
        service.verify_connection(ADMIN_CALLER, "shop-ac")


def test_a_key_the_vault_refuses_leaves_the_connection_unchanged(world: World) -> None:
    world.service.create_connection(ADMIN_CALLER, conn_payload())
    before = world.store.read_bytes("config/connections/shop-ac.json")

    def refuse(ref: str, value: str, *, owner: str) -> None:
        raise SecretError("the identity may not write secrets")

    world.secrets.set = refuse  # type: ignore[method-assign]
    with pytest.raises(SecretError):
        world.service.update_connection(
            ADMIN_CALLER,
            "shop-ac",
            {"api_key_ref": OWN_REF, "display_name": "Changed"},
            api_key="e" * 72,
        )
    assert world.store.read_bytes("config/connections/shop-ac.json") == before


def test_a_stale_etag_is_refused_before_the_key_is_written(world: World) -> None:
    world.service.create_connection(ADMIN_CALLER, conn_payload(api_key_ref=OWN_REF), verify=False)
    world.secrets.values[OWN_REF] = KEY
    with pytest.raises(ConflictError):
        world.service.update_connection(
            ADMIN_CALLER, "shop-ac", {"display_name": "x"}, if_match='"stale"', api_key="e" * 72
        )
    assert world.secrets.values[OWN_REF] == KEY


def test_a_key_is_never_written_to_a_secret_the_app_did_not_make_for_the_connection(
    world: World,
) -> None:
    """An administrator cannot overwrite an operator's (or another connection's) secret by
    naming it as api_key_ref and sending api_key: refused naming the field, nothing written."""
    world.service.create_connection(ADMIN_CALLER, conn_payload(api_key_ref=OWN_REF), verify=False)
    for foreign in ("keyvault:shop-key", "keyvault:ac-other-0a1b2c3d"):
        with pytest.raises(ConfigErrors) as info:
            world.service.create_connection(
                ADMIN_CALLER, conn_payload("shop-two", api_key_ref=foreign), api_key="e" * 72
            )
        assert field_names(info.value) == {"api_key_ref"}
        with pytest.raises(ConfigErrors) as info:
            world.service.update_connection(
                ADMIN_CALLER, "shop-ac", {"api_key_ref": foreign}, api_key="e" * 72
            )
        assert field_names(info.value) == {"api_key_ref"}
    assert world.secrets.values["keyvault:shop-key"] == KEY
    assert "keyvault:ac-other-0a1b2c3d" not in world.secrets.values
    assert not world.store.exists("config/connections/shop-two.json")


def test_delete_secret_refuses_a_secret_the_app_did_not_make(world: World) -> None:
    world.service.create_connection(ADMIN_CALLER, conn_payload())  # an operator's secret
    with pytest.raises(ConfigError) as info:
        world.service.delete_connection(ADMIN_CALLER, "shop-ac", delete_secret=True)
    assert info.value.field == "delete_secret"
    assert world.secrets.deleted == []
    assert world.store.exists("config/connections/shop-ac.json"), "nothing was deleted"


def test_a_schedule_finer_than_the_timer_tick_is_refused_when_saved(world: World) -> None:
    world.service.create_connection(ADMIN_CALLER, conn_payload())
    with pytest.raises(ConfigErrors) as info:
        world.service.create_export(ADMIN_CALLER, export_payload(schedule="0 * * * * *"))
    assert field_names(info.value) == {"schedule"}
    assert "every 5 min" in str(info.value)
    world.service.create_export(ADMIN_CALLER, export_payload(schedule="0 */5 * * * *"))
    with pytest.raises(ConfigErrors) as info:
        world.service.update_export(ADMIN_CALLER, "high-value", {"schedule": "*/30 * * * * *"})
    assert field_names(info.value) == {"schedule"}
