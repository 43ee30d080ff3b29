"""The run body, the snapshot-path rule, the instance vocabulary and the secret names: policy
that lives in the core, whatever host (HTTP API, console, CLI, blob trigger) calls it."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter.errors import ConfigError, ConfigErrors
from exporter.management.config import Export, check_snapshot_path, snapshot_path
from exporter.management.secret_names import is_generated_key_ref, new_key_ref, ref_for_new_key
from exporter.reading import discovery
from exporter.reading.discovery import blob_snapshot_path
from exporter.run.instances import (
    ACTIVE_INSTANCE_STATUSES,
    FINISHED_INSTANCE_STATUSES,
    instance_id,
    instance_prefix,
)
from exporter.run.run_body import MAX_SNAPSHOT_PATH, parse_run_body, resolve_in_segment
from exporter.storage.store import LocalStore


def test_an_empty_body_is_the_default_run() -> None:
    body = parse_run_body({})
    assert body.snapshot is None
    assert body.options().to_dict() == {
        "dry_run": False,
        "full_resync": False,
        "allow_shrink": False,
        "encoding": None,  # the export's own encoding
    }


def test_a_snapshot_is_held_to_the_segment_rule_and_trimmed() -> None:
    body = parse_run_body({"snapshot": " snapshots/vip/2026-01-01.csv ", "dry_run": True})
    assert body.snapshot == "snapshots/vip/2026-01-01.csv"
    assert body.options().dry_run


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"snapshot": "snapshots/.."}, {"snapshot"}),
        ({"snapshot": "snapshots/../config/x.csv"}, {"snapshot"}),
        ({"snapshot": "config/exports/x.json"}, {"snapshot"}),
        ({"snapshot": "snapshots/" + "a" * MAX_SNAPSHOT_PATH}, {"snapshot"}),
        ({"snapshot": 7}, {"snapshot"}),
        ({"dry_run": "yes"}, {"dry_run"}),
        ({"full_resync": 1}, {"full_resync"}),
        ({"colour": True}, {"colour"}),
        ({"<script>": True}, {None}),
    ],
)
def test_bad_bodies_name_their_fields(body: dict[str, object], fields: set[str | None]) -> None:
    with pytest.raises(ConfigErrors) as caught:
        parse_run_body(body)
    assert {e.field for e in caught.value.errors} == fields


def test_a_body_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(ConfigErrors):
        parse_run_body([1, 2])


def test_continued_as_new_is_a_live_instance() -> None:
    assert "ContinuedAsNew" in ACTIVE_INSTANCE_STATUSES
    assert not ACTIVE_INSTANCE_STATUSES & FINISHED_INSTANCE_STATUSES


def test_instance_ids_are_deterministic_and_safe() -> None:
    assert instance_id("weekly news", "ab:cd") == instance_id("weekly news", "ab:cd")
    assert instance_id("weekly news", "ab:cd") == "weekly-news-abcd"


def test_every_run_of_an_export_shares_its_instance_prefix() -> None:
    assert instance_id("weekly news", "snap-1").startswith(instance_prefix("weekly news"))
    assert not instance_id("daily", "snap-1").startswith(instance_prefix("weekly"))
    # Only a candidate: a longer name shares the prefix, so listers check the input too.
    assert instance_id("weekly-extra", "x").startswith(instance_prefix("weekly"))


def test_only_names_made_for_a_connection_are_its_own() -> None:
    ref = new_key_ref("shop")
    assert is_generated_key_ref(ref, "shop")
    assert not is_generated_key_ref(ref, "shop2")
    assert not is_generated_key_ref("keyvault:operator-key", "shop")
    assert new_key_ref("shop") != ref  # a fresh suffix every time


READABLE = [
    "snapshots/vip/2026-01-01.csv",
    "snapshots/vip/",
    "snapshots/vip/*.csv",
    "snapshots/vip/Export (2).csv",
    "snapshots/clients été/2026-01-01T00:00:00Z/model.json",
]
UNREADABLE = [
    "snapshots/",
    "snapshots",
    "snapshot/vip/a.csv",
    "config/exports/x.json",
    "snapshots//vip/a.csv",
    "snapshots/vip/./a.csv",
    "snapshots/vip/..",
    "snapshots/../config/x.json",
    "snapshots/vip\\a.csv",
    "snapshots/vip/a\n.csv",
    "snapshots/vip/a\x00.csv",
]


@pytest.mark.parametrize("path", READABLE)
def test_every_host_accepts_a_path_the_store_can_read(path: str) -> None:
    assert snapshot_path(path) == path
    assert check_snapshot_path(path) == path
    assert blob_snapshot_path(path) == path
    assert parse_run_body({"snapshot": path}).snapshot == path


@pytest.mark.parametrize("path", UNREADABLE)
def test_every_host_refuses_the_same_paths(path: str) -> None:
    with pytest.raises(ValueError):
        snapshot_path(path)
    with pytest.raises(ConfigError) as checked:
        check_snapshot_path(path, field="--snapshot")
    assert checked.value.field == "--snapshot"
    with pytest.raises(ConfigError):
        blob_snapshot_path(path)
    with pytest.raises(ConfigErrors) as body:
        parse_run_body({"snapshot": path})
    assert {e.field for e in body.value.errors} == {"snapshot"}


def test_a_blob_name_loses_the_store_container_prefix_only() -> None:
    assert blob_snapshot_path("/t1-snapshots/vip/a.csv", "t1-") == "snapshots/vip/a.csv"
    with pytest.raises(ConfigError, match="t2-snapshots"):
        blob_snapshot_path("t2-snapshots/vip/a.csv", "t1-")


def test_only_names_made_for_a_connection_are_reused_for_a_new_key() -> None:
    own = new_key_ref("shop")
    assert ref_for_new_key("shop", own) == own, "a new version of the connection's own secret"
    for foreign in (None, "keyvault:operator-key", new_key_ref("shop2"), "env:AC_KEY", 7):
        fresh = ref_for_new_key("shop", foreign)
        assert fresh != foreign and is_generated_key_ref(fresh, "shop")


# --- a requested snapshot, held to the export's segment (CLI --snapshot, HTTP and console) ------


def _vip(segment: str) -> Export:
    return Export(
        name="vip",
        display_name="VIP",
        connection="shop-ac",
        segment=segment,
        list_id="3",
        email="Email",
    )


@pytest.fixture
def snapshots(tmp_path: Path) -> LocalStore:
    store = LocalStore(tmp_path)
    for path in (
        "snapshots/vip/2026-01-01.csv",
        "snapshots/vip/2026-01-02.csv",
        "snapshots/vip/2026/late.csv",
        "snapshots/other/2026-01-03.csv",
    ):
        store.write_bytes(path, b"Email\na@example.com\n")
    return store


def test_a_snapshot_in_the_segment_resolves(snapshots: LocalStore) -> None:
    def resolve(path: str) -> discovery.SnapshotRef:
        return discovery.store_snapshot(snapshots, path)

    file = resolve_in_segment(_vip("snapshots/vip/"), "snapshots/vip/2026-01-01.csv", resolve)
    assert file.path == "snapshots/vip/2026-01-01.csv"
    newest = resolve_in_segment(_vip("snapshots/vip/"), "snapshots/vip", resolve)  # a folder
    assert newest == discovery.store_snapshot(snapshots, "snapshots/vip/")
    assert newest.path.startswith("snapshots/vip/")


def test_a_snapshot_outside_the_segment_is_refused_before_the_store_is_asked() -> None:
    asked: list[str] = []

    def resolve(path: str) -> discovery.SnapshotRef:
        asked.append(path)
        raise AssertionError("the store must not be asked")

    with pytest.raises(ConfigErrors) as caught:
        resolve_in_segment(_vip("snapshots/vip/"), "snapshots/other/2026-01-03.csv", resolve)
    assert [e.field for e in caught.value.errors] == ["snapshot"]
    assert "other" not in str(caught.value)  # the message never repeats the path
    assert asked == []


def test_a_folder_whose_newest_snapshot_leaves_the_segment_is_refused_once_resolved(
    snapshots: LocalStore,
) -> None:
    asked: list[str] = []

    def resolve(path: str) -> discovery.SnapshotRef:
        asked.append(path)
        return discovery.store_snapshot(snapshots, path)

    # "snapshots/vip/2026" matches the segment's pattern; its newest snapshot does not.
    with pytest.raises(ConfigErrors):
        resolve_in_segment(_vip("snapshots/vip/*"), "snapshots/vip/2026", resolve)
    assert asked == ["snapshots/vip/2026"]
