"""BlobStore against a real Azurite: ETag races, streaming, paging, errors, factories.

The shared Store contract runs in ``tests/test_store.py``; these are the blob-only behaviours.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from azure.core.credentials import AccessToken
from azure.core.pipeline import PipelineResponse
from azure.storage.blob import BlobServiceClient

from exporter.adapters.blob_store import BlobStore, _redact
from exporter.errors import ConfigError
from exporter.settings import FunctionSettings
from exporter.storage.runs import forget_export
from exporter.storage.store import CONTAINERS, ObjectNotFound, PreconditionFailed, Store, StoreError
from tests.azure.support import unique_prefix
from tests.azurite import ACCOUNT_KEY

pytestmark = pytest.mark.azurite


def _settings(**overrides: Any) -> FunctionSettings:
    values: dict[str, Any] = {
        "blob_service_uri": None,
        "storage_connection_string": None,
        "keyvault_url": None,
        "managed_identity_client_id": None,
    }
    values.update(overrides)
    return FunctionSettings(**values)


class _Recorder:
    """Records (method, range header, body length) of every response, via the SDK's hook."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str | None, int]] = []
        self.lock = threading.Lock()

    def __call__(self, response: PipelineResponse[Any, Any]) -> None:
        request = response.http_request
        length = int(response.http_response.headers.get("Content-Length") or 0)
        with self.lock:
            self.calls.append((request.method, request.headers.get("x-ms-range"), length))


@pytest.fixture
def recorded(azurite: str) -> Iterator[tuple[BlobStore, _Recorder]]:
    recorder = _Recorder()
    service = BlobServiceClient.from_connection_string(azurite, raw_response_hook=recorder)
    prefix = unique_prefix()
    store = BlobStore(service, container_prefix=prefix, list_page_size=7, read_chunk_size=1 << 20)
    yield store, recorder
    for container in CONTAINERS:
        if service.get_container_client(prefix + container).exists():
            service.delete_container(prefix + container)
    service.close()


def _race(n: int, attempt: Callable[[int], str]) -> tuple[list[int], list[int]]:
    """Run ``attempt(i)`` in ``n`` threads released together; (winners, losers)."""
    barrier = threading.Barrier(n)

    def run(i: int) -> bool:
        barrier.wait()
        try:
            attempt(i)
        except PreconditionFailed:
            return False
        return True

    with ThreadPoolExecutor(n) as pool:
        results = list(pool.map(run, range(n)))
    return [i for i, ok in enumerate(results) if ok], [i for i, ok in enumerate(results) if not ok]


def test_the_blob_store_is_a_store(blob_store: BlobStore) -> None:
    assert isinstance(blob_store, Store)


def test_a_stale_etag_is_refused_by_the_service(blob_store: BlobStore) -> None:
    stale = blob_store.write_bytes("state/e/state.bin", b"v1")
    _, current = blob_store.read_with_etag("state/e/state.bin")
    assert current == stale and stale.startswith('"')
    blob_store.write_bytes("state/e/state.bin", b"v2")  # someone else writes, unconditionally
    with pytest.raises(PreconditionFailed):
        blob_store.write_bytes("state/e/state.bin", b"v3", if_match=stale)
    assert blob_store.read_bytes("state/e/state.bin") == b"v2"


def test_if_match_on_a_deleted_object_loses(blob_store: BlobStore) -> None:
    etag = blob_store.write_bytes("state/e/gone", b"v1")
    blob_store.delete("state/e/gone")
    with pytest.raises(PreconditionFailed):
        blob_store.write_bytes("state/e/gone", b"v2", if_match=etag)
    assert not blob_store.exists("state/e/gone")


def test_concurrent_writers_from_the_same_read_exactly_one_wins(blob_store: BlobStore) -> None:
    blob_store.write_bytes("state/e/state.bin", b"base")
    _, etag = blob_store.read_with_etag("state/e/state.bin")

    def write(i: int) -> str:
        return blob_store.write_bytes("state/e/state.bin", f"writer {i}".encode(), if_match=etag)

    winners, losers = _race(8, write)
    assert len(winners) == 1 and len(losers) == 7
    assert blob_store.read_bytes("state/e/state.bin") == f"writer {winners[0]}".encode()


def test_concurrent_creates_exactly_one_wins(blob_store: BlobStore) -> None:
    # The container does not exist yet either: lazy creation must race safely too.
    def create(i: int) -> str:
        return blob_store.write_bytes("runs/r1/lock", f"owner {i}".encode(), if_none_match=True)

    winners, losers = _race(8, create)
    assert len(winners) == 1 and len(losers) == 7
    assert blob_store.read_bytes("runs/r1/lock") == f"owner {winners[0]}".encode()


def test_open_read_streams_in_bounded_ranges(
    recorded: tuple[BlobStore, _Recorder], tmp_path: Path
) -> None:
    store, recorder = recorded
    data = os.urandom((5 << 20) + 12345)
    source = tmp_path / "snapshot.csv"
    source.write_bytes(data)
    store.write_file("snapshots/seg/snapshot.csv", source)
    recorder.calls.clear()

    pieces = []
    with store.open_read("snapshots/seg/snapshot.csv") as fh:
        while piece := fh.read(8191):
            assert len(piece) <= 8191
            pieces.append(piece)
    assert b"".join(pieces) == data

    ranged = [c for c in recorder.calls if c[0] == "GET"]
    assert len(ranged) == 6  # ceil(5 MiB + 12345 B / 1 MiB): one bounded GET per chunk
    assert all(rng is not None and length <= 1 << 20 for _, rng, length in ranged)


def test_open_read_supports_readinto_readline_and_empty_blobs(blob_store: BlobStore) -> None:
    blob_store.write_bytes("snapshots/s/lines.csv", b"email\na@example.com\n")
    with blob_store.open_read("snapshots/s/lines.csv") as fh:
        assert fh.readline() == b"email\n"
        buffer = bytearray(5)
        assert fh.readinto(buffer) == 5 and bytes(buffer) == b"a@exa"
        assert fh.read() == b"mple.com\n"
        assert fh.read(10) == b""
    blob_store.write_bytes("snapshots/s/empty.csv", b"")
    with blob_store.open_read("snapshots/s/empty.csv") as fh:
        assert fh.read() == b""


def test_a_blob_replaced_mid_read_fails_instead_of_splicing(
    recorded: tuple[BlobStore, _Recorder],
) -> None:
    store, _ = recorded
    store.write_bytes("snapshots/s/big.csv", b"a" * (3 << 20))
    with store.open_read("snapshots/s/big.csv") as fh:
        assert fh.read(1 << 20) == b"a" * (1 << 20)
        store.write_bytes("snapshots/s/big.csv", b"b" * (3 << 20))
        with pytest.raises(StoreError, match="replaced or deleted"):
            fh.read()


def test_listing_follows_pages_in_path_order(recorded: tuple[BlobStore, _Recorder]) -> None:
    store, recorder = recorded
    names = [f"runs/exp/{i:03d}" for i in range(30)] + ["runs/exp/A", "runs/exp/a-b", "runs/x"]
    for name in reversed(names):
        store.write_bytes(name, name.encode())
    recorder.calls.clear()

    listed = [o.path for o in store.list("runs/exp/")]
    assert listed == sorted(n for n in names if n.startswith("runs/exp/"))
    assert len([c for c in recorder.calls if c[0] == "GET"]) == 5  # 32 blobs, 7 per page
    infos = list(store.list("runs"))
    assert [o.path for o in infos] == sorted(names)
    assert infos[0].size == len(infos[0].path) and infos[0].modified.tzinfo is not None


def test_a_missing_container_reads_as_empty(blob_store: BlobStore) -> None:
    with pytest.raises(ObjectNotFound):
        blob_store.read_bytes("config/connections/x.json")
    with pytest.raises(ObjectNotFound):
        blob_store.read_with_etag("config/x")
    with pytest.raises(ObjectNotFound):
        blob_store.open_read("snapshots/x.csv")
    with pytest.raises(ObjectNotFound):
        blob_store.info("state/x")
    with pytest.raises(ObjectNotFound):
        blob_store.delete("runs/x", missing_ok=False)
    blob_store.delete("runs/x")
    assert not blob_store.exists("config/x")
    assert list(blob_store.list("runs")) == []
    with pytest.raises(PreconditionFailed):
        blob_store.write_bytes("state/x", b"1", if_match='"0x8D000000000000"')


def test_containers_are_created_lazily_and_recreated(
    blob_store: BlobStore, blob_service: BlobServiceClient
) -> None:
    name = blob_store.container_prefix + "config"
    assert not blob_service.get_container_client(name).exists()
    blob_store.write_bytes("config/a.json", b"{}")
    assert blob_service.get_container_client(name).exists()
    blob_service.delete_container(name)
    blob_store.write_bytes("config/a.json", b"{}")  # heals a deleted container
    assert blob_store.read_bytes("config/a.json") == b"{}"


def test_ensure_containers_is_idempotent(
    blob_store: BlobStore, blob_service: BlobServiceClient
) -> None:
    blob_store.ensure_containers()
    blob_store.ensure_containers()
    names = {
        c.name for c in blob_service.list_containers(name_starts_with=blob_store.container_prefix)
    }
    assert names == {blob_store.container_prefix + c for c in CONTAINERS}


def test_large_file_upload_is_staged_in_blocks(azurite: str, tmp_path: Path) -> None:
    service = BlobServiceClient.from_connection_string(
        azurite, max_single_put_size=1 << 20, max_block_size=512 << 10
    )
    store = BlobStore(service, container_prefix=unique_prefix())
    data = os.urandom(3 << 20)
    (tmp_path / "chunk.bin").write_bytes(data)
    etag = store.write_file("runs/r/chunk.bin", tmp_path / "chunk.bin")
    blob = service.get_blob_client(store.container_prefix + "runs", "r/chunk.bin")
    committed, _ = blob.get_block_list("committed")
    assert len(committed) == 6
    assert store.info("runs/r/chunk.bin").etag == etag
    assert store.read_bytes("runs/r/chunk.bin") == data
    service.delete_container(store.container_prefix + "runs")
    service.close()


def test_a_container_prefix_must_make_valid_names(blob_service: BlobServiceClient) -> None:
    with pytest.raises(ConfigError):
        BlobStore(blob_service, container_prefix="Bad_")
    with pytest.raises(StoreError):
        BlobStore(blob_service).write_bytes("config", b"a container is not an object")


def test_from_settings_with_a_connection_string(azurite: str) -> None:
    store = BlobStore.from_settings(
        _settings(storage_connection_string=azurite), container_prefix=unique_prefix()
    )
    etag = store.write_bytes("config/x.json", b"{}", if_none_match=True)
    assert store.read_with_etag("config/x.json") == (b"{}", etag)
    store.service.delete_container(store.container_prefix + "config")


def test_from_settings_understands_use_development_storage() -> None:
    for value in ("UseDevelopmentStorage=true", "usedevelopmentstorage=True;"):
        store = BlobStore.from_settings(_settings(storage_connection_string=value))
        assert store.service.url.rstrip("/") == "http://127.0.0.1:10000/devstoreaccount1"
        assert store.service.credential.account_name == "devstoreaccount1"


class _FixedToken:
    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken("token", 2**31)


def test_from_settings_with_an_identity() -> None:
    uri = "https://acct.blob.core.windows.net/"
    store = BlobStore.from_settings(_settings(blob_service_uri=uri), credential=_FixedToken())
    assert store.service.url == uri
    assert isinstance(store.service.credential, _FixedToken)


def test_from_settings_refuses_missing_or_bad_settings() -> None:
    with pytest.raises(ConfigError, match="blobServiceUri"):
        BlobStore.from_settings(_settings())
    bad = f"AccountName=x;AccountKey={ACCOUNT_KEY};nonsense"
    with pytest.raises(ConfigError) as info:
        BlobStore.from_settings(_settings(storage_connection_string=bad))
    assert ACCOUNT_KEY not in str(info.value)


def test_errors_name_no_keys_or_signatures(azurite: str) -> None:
    # Same account and key, but port 9 (discard): nothing listens, the connection is refused.
    dead = azurite.split("BlobEndpoint=")[0] + "BlobEndpoint=http://127.0.0.1:9/devstoreaccount1;"
    service = BlobServiceClient.from_connection_string(dead, retry_total=0, connection_timeout=2)
    store = BlobStore(service)
    with pytest.raises(StoreError) as info:
        store.write_bytes("config/a.json", b"{}")
    assert ACCOUNT_KEY not in str(info.value) and info.value.__cause__ is None
    text = "GET https://a.blob.core.windows.net/c/b?sv=2024&sig=abc%3D ... AccountKey=k3y=="
    assert "abc" not in _redact(text) and "k3y" not in _redact(text)


def test_forgetting_an_export_deletes_its_state_and_run_files_but_not_reports(
    blob_store: BlobStore,
) -> None:
    """The deletion path of a removed export, through Azurite's listing and deletes."""
    personal = [
        "state/weekly/state.bin",
        "state/weekly/pending.json",
        "runs/weekly/r1/chunks/00000.jsonl",
        "runs/weekly/r1/confirmed/00000.json",
        "runs/weekly/r1/rejected.csv",
    ]
    kept = ["runs/weekly/r1/report.json", "state/weekly-2/state.bin", "runs/weekly-2/r/x.csv"]
    for path in personal + kept:
        blob_store.write_bytes(path, b"ada@example.com")
    assert forget_export(blob_store, "weekly") == len(personal)
    assert [p for p in personal if blob_store.exists(p)] == []
    assert all(blob_store.exists(p) for p in kept)
    assert forget_export(blob_store, "weekly") == 0, "idempotent"
