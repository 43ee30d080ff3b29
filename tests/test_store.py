"""Contract tests for the Store protocol, run against every implementation."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter.storage.store import LocalStore, ObjectNotFound, PreconditionFailed, Store, StoreError


@pytest.fixture(params=["local", pytest.param("blob", marks=pytest.mark.azurite)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "local":
        yield LocalStore(tmp_path / "store")
        return
    from tests.azure.support import fresh_blob_store

    with fresh_blob_store(request.getfixturevalue("azurite")) as blob_store:
        yield blob_store


def test_write_read_roundtrip_and_etag_changes(store: Store) -> None:
    etag1 = store.write_bytes("config/a.json", b"one")
    assert store.read_bytes("config/a.json") == b"one"
    data, etag = store.read_with_etag("config/a.json")
    assert (data, etag) == (b"one", etag1)
    etag2 = store.write_bytes("config/a.json", b"two")
    assert etag2 != etag1


def test_missing_object(store: Store) -> None:
    with pytest.raises(ObjectNotFound):
        store.read_bytes("config/missing.json")
    assert not store.exists("config/missing.json")
    store.delete("config/missing.json")  # missing_ok by default
    with pytest.raises(ObjectNotFound):
        store.delete("config/missing.json", missing_ok=False)


def test_if_none_match_creates_once(store: Store) -> None:
    store.write_bytes("runs/x/lock", b"1", if_none_match=True)
    with pytest.raises(PreconditionFailed):
        store.write_bytes("runs/x/lock", b"2", if_none_match=True)
    assert store.read_bytes("runs/x/lock") == b"1"


def test_if_match_detects_a_lost_race(store: Store) -> None:
    etag = store.write_bytes("state/e/state.bin", b"v1")
    store.write_bytes("state/e/state.bin", b"v2", if_match=etag)
    with pytest.raises(PreconditionFailed):
        store.write_bytes("state/e/state.bin", b"v3", if_match=etag)
    assert store.read_bytes("state/e/state.bin") == b"v2"


def test_list_by_prefix_sorted(store: Store) -> None:
    for name in ["runs/b/2", "runs/a/1", "runs/a/0", "config/z"]:
        store.write_bytes(name, name.encode())
    assert [o.path for o in store.list("runs/a/")] == ["runs/a/0", "runs/a/1"]
    infos = list(store.list("runs"))
    assert [o.path for o in infos] == ["runs/a/0", "runs/a/1", "runs/b/2"]
    assert infos[0].size == len(b"runs/a/0")


def test_streaming_read_and_file_upload(store: Store, tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * (3 << 20))
    etag = store.write_file("snapshots/seg/big.bin", big)
    assert store.info("snapshots/seg/big.bin").etag == etag
    with store.open_read("snapshots/seg/big.bin") as fh:
        assert len(fh.read()) == 3 << 20


def test_list_folder_is_one_level(store: Store) -> None:
    for path in (
        "runs/exp/r2/report.json",
        "runs/exp/r1/prepared.json",
        "runs/exp/r1/chunks/0.jsonl",
        "runs/exp/r1/chunks/1.jsonl",
        "runs/exp/notes.txt",
        "runs/other/r9/report.json",
    ):
        store.write_bytes(path, b"{}")
    assert list(store.list_folder("runs/exp/")) == ["notes.txt", "r1/", "r2/"]
    assert list(store.list_folder("runs/exp/r1/")) == ["chunks/", "prepared.json"]
    assert list(store.list_folder("runs/")) == ["exp/", "other/"]
    assert list(store.list_folder("runs/nothing/")) == []
    with pytest.raises(StoreError, match="must end with"):
        list(store.list_folder("runs/exp"))


def test_move_file_takes_the_file_over(store: Store, tmp_path: Path) -> None:
    data = os.urandom(3 << 20)
    staged = tmp_path / "chunk.jsonl"
    staged.write_bytes(data)
    store.write_bytes("runs/r/chunks/0.jsonl", b"old")
    store.move_file("runs/r/chunks/0.jsonl", staged)
    assert not staged.exists()  # taken over: nothing left behind to clean up
    assert store.read_bytes("runs/r/chunks/0.jsonl") == data


def test_move_file_across_file_systems_copies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A staging directory on another file system (``EXDEV``): copied, then removed."""
    store = LocalStore(tmp_path / "store")
    staged = tmp_path / "chunk.jsonl"
    staged.write_bytes(b"line\n")

    real_replace = os.replace
    calls: list[str] = []

    def replace_once_cross_device(src: str, dst: str) -> None:
        calls.append(str(src))
        if str(src) == str(staged):
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace_once_cross_device)
    store.move_file("runs/r/chunks/0.jsonl", staged)
    assert not staged.exists()
    assert store.read_bytes("runs/r/chunks/0.jsonl") == b"line\n"
    assert calls[0] == str(staged) and len(calls) == 2  # the rename failed, the copy renamed


@pytest.mark.parametrize("bad", ["", "/abs", "config/../x", "config//x", "other/x", "config/./x"])
def test_paths_are_validated(store: Store, bad: str) -> None:
    with pytest.raises(StoreError):
        store.write_bytes(bad, b"")
