"""Connections and exports as JSON documents in the store, with ETag concurrency."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from exporter.errors import ConfigError, ConfigErrors, ConflictError, NotFoundError
from exporter.management.config import Connection, Consent, Export
from exporter.management.repository import ConfigRepository
from exporter.storage.store import LocalStore

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def make_connection(name: str = "shop-ac", **kw: object) -> Connection:
    data: dict[str, object] = {
        "name": name,
        "display_name": "Shop",
        "hostname": "shop.api-us1.com",
        "api_key_ref": "env:AC_KEY",
        "consent": Consent(agreed=True, by="ada", at=NOW),
    }
    data.update(kw)
    return Connection.model_validate(data)


def make_export(name: str = "high-value", connection: str = "shop-ac") -> Export:
    return Export(
        name=name,
        display_name="High value",
        connection=connection,
        segment="snapshots/high-value/",
        list_id="3",
        email="Email",
    )


@pytest.fixture
def repo(local_store: LocalStore) -> ConfigRepository:
    return ConfigRepository(local_store)


def test_documents_live_at_their_documented_paths(
    repo: ConfigRepository, local_store: LocalStore
) -> None:
    repo.put(make_connection())
    repo.put(make_export())
    doc = json.loads(local_store.read_bytes("config/connections/shop-ac.json"))
    assert doc["hostname"] == "shop.api-us1.com" and doc["api_key_ref"] == "env:AC_KEY"
    assert json.loads(local_store.read_bytes("config/exports/high-value.json"))["list_id"] == "3"


def test_get_returns_what_was_put_with_its_etag(repo: ConfigRepository) -> None:
    etag = repo.put(make_connection())
    conn, got_etag = repo.get_connection("shop-ac")
    assert conn == make_connection() and got_etag == etag
    repo.put(make_export())
    assert repo.get_export("high-value")[0] == make_export()


def test_unknown_names_are_not_found(repo: ConfigRepository) -> None:
    with pytest.raises(NotFoundError, match="no connection named 'nope'"):
        repo.get_connection("nope")
    with pytest.raises(NotFoundError):
        repo.get_export("nope")
    with pytest.raises(NotFoundError):
        repo.delete_export("nope")


def test_names_that_would_escape_the_folder_are_refused(repo: ConfigRepository) -> None:
    for bad in ("../state/x", "a/b", ""):
        with pytest.raises(ConfigError) as info:
            repo.get_connection(bad)
        assert info.value.field == "name"


def test_listing_is_by_name(repo: ConfigRepository) -> None:
    for name in ("zeta", "alpha", "mid"):
        repo.put(make_connection(name))
    assert [c.name for c in repo.list_connections()] == ["alpha", "mid", "zeta"]
    assert repo.list_exports() == []


def test_create_only_refuses_an_existing_name(repo: ConfigRepository) -> None:
    repo.put(make_connection(), create_only=True)
    with pytest.raises(ConflictError, match="exists already"):
        repo.put(make_connection(display_name="Other"), create_only=True)
    assert repo.get_connection("shop-ac")[0].display_name == "Shop"


def test_if_match_stops_a_lost_update(repo: ConfigRepository) -> None:
    etag = repo.put(make_connection())
    new_etag = repo.put(make_connection(display_name="First"), if_match=etag)
    with pytest.raises(ConflictError, match="changed"):
        repo.put(make_connection(display_name="Second"), if_match=etag)
    assert repo.get_connection("shop-ac") == (make_connection(display_name="First"), new_etag)


def test_a_connection_without_consent_cannot_be_saved(repo: ConfigRepository) -> None:
    with pytest.raises(ConfigError) as info:
        repo.put(make_connection(consent=None))
    assert info.value.field == "consent"
    assert not repo.connection_exists("shop-ac")


def test_an_export_needs_its_connection(repo: ConfigRepository) -> None:
    with pytest.raises(ConfigError) as info:
        repo.put(make_export())
    assert info.value.field == "connection"


def test_deleting_a_connection_in_use_is_refused_naming_the_exports(
    repo: ConfigRepository,
) -> None:
    repo.put(make_connection())
    repo.put(make_export("b-export"))
    repo.put(make_export("a-export"))
    with pytest.raises(ConflictError, match="a-export, b-export"):
        repo.delete_connection("shop-ac")
    assert repo.connection_exists("shop-ac")
    repo.delete_connection("shop-ac", force=True)
    assert not repo.connection_exists("shop-ac")
    assert repo.exports_using("shop-ac") == ["a-export", "b-export"]  # left, to be moved


def test_delete_with_a_stale_etag_is_refused(repo: ConfigRepository) -> None:
    etag = repo.put(make_connection())
    repo.put(make_export())
    repo.put(make_connection(display_name="Changed"))
    with pytest.raises(ConflictError):
        repo.delete_connection("shop-ac", force=True, if_match=etag)
    export_etag = repo.get_export("high-value")[1]
    assert repo.delete_export("high-value", if_match=export_etag) == make_export()
    assert not repo.export_exists("high-value")


def test_deleting_an_export_leaves_its_run_history(
    repo: ConfigRepository, local_store: LocalStore
) -> None:
    repo.put(make_connection())
    repo.put(make_export())
    local_store.write_bytes("runs/high-value/r1/report.json", b"{}")
    repo.delete_export("high-value")
    assert local_store.exists("runs/high-value/r1/report.json")


def test_a_hand_edited_invalid_document_names_file_and_field(
    repo: ConfigRepository, local_store: LocalStore
) -> None:
    repo.put(make_connection())
    doc = json.loads(local_store.read_bytes("config/connections/shop-ac.json"))
    doc["api_key_ref"] = "plain"
    local_store.write_bytes("config/connections/shop-ac.json", json.dumps(doc).encode())
    with pytest.raises(ConfigErrors) as info:
        repo.get_connection("shop-ac")
    assert [e.field for e in info.value.errors] == ["config/connections/shop-ac.json:api_key_ref"]
